"""Wake relay for the push benchmarks: stands in for APNs' delivery to devices and for the
woken apps themselves.

    python3 bench/wake_relay.py --server 127.0.0.1:5060 --users 10000 --contact-port 5070
                                [--delay 0.05] [--port 0] [--provider apns]

Pushes arrive here as HTTP POSTs: from the APNs emulator (``sipwake emulate apns
--forward-url``, ``{"token": ...}``), from Kamailio's http_client (the same), or straight
from sipwake's webhook provider (its signed JSON, the token as ``"prid"``), the like-for-like
of Kamailio's plain POST (bench/compare.py ``--sipwake-push``).
``--delay`` seconds later the relay sends, over one raw UDP socket, the wake REGISTER of
the device the push token belongs to -- what an iOS app does once PushKit has woken it
(RFC 8599 §5.3.2) -- with the Contact at ``--contact-port`` (one SIPp UAS answering for
every user) and the same ``+sip.instance`` and pn-* parameters as the device's first
registration (bench/scenarios/register_push_inf.xml, CSV from
bench_register.write_users; ``--provider`` is the ``pn-provider`` both use), so the
registrar sees the same device and the held call is handed to that Contact.

The relay shares the CPU with the server, so it is built to be cheap: per user one
preformatted REGISTER (``%d`` slots for the Via branch and CSeq only), the token is the
only thing read from a push, and nothing is parsed from the responses but their status.

Why no ``reg-id`` in the wake REGISTER: with reg-id the proxy sends over the registration's
flow (RFC 5626 §5.3, app/router.py binding_flow), i.e. back to this relay's socket; without
it the Contact URI is used (RFC 3261 §16.5), which is the SIPp UAS. The registrar keeps
one binding per instance either way.

``GET /stats`` answers the counters as JSON; SIGTERM prints them as one JSON line and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import socket
import sys

PN_PARAM = "ABCDE12345.com.example.app.voip"  # as in bench/scenarios/register_push_inf.xml
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
# Where the token is in a push: json.dumps' default separators, as the emulator and
# Kamailio's push.cfg write it; sipwake's webhook body is compact, the token its "prid".
_TOKEN_KEYS = (b'"token": "', b'"prid":"')
_CLOSE = re.compile(rb"(?i)\r\nconnection:[ \t]*close")
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
_OK_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def token_of(i: int) -> str:
    """User i's 64-hex APNs token (bench_register.write_users)."""
    return f"{i:064x}"


def instance_of(i: int) -> str:
    return f"{i:08x}-7dec-11d0-a765-00a0c91e6bf6"


def register_template(
    i: int,
    *,
    domain: str,
    local: tuple[str, int],
    contact_port: int,
    contact_host: str,
    provider: str = "apns",
) -> bytes:
    """User i's wake REGISTER with two ``%d`` slots: the Via branch suffix and the CSeq.
    A fresh branch per send makes each one a new transaction (RFC 3261 §17.2.3: the same
    branch would be answered from the server transaction's cache); a rising CSeq within
    one Call-ID is what §10.3 step 7 asks of a refresh."""
    user = f"user{i}"
    contact = (
        f"sip:{user}@{contact_host}:{contact_port};transport=udp;ob;pn-provider={provider}"
        f";pn-param={PN_PARAM};pn-prid={token_of(i)}"
    )
    text = (
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bKwake{i}x%d;rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{domain}>;tag=wake{i}\r\n"
        f"To: <sip:{user}@{domain}>\r\n"
        f"Call-ID: wake-{i}@bench-relay\r\n"
        "CSeq: %d REGISTER\r\n"
        f'Contact: <{contact}>;+sip.instance="<urn:uuid:{instance_of(i)}>"\r\n'
        "Expires: 604800\r\n"
        "User-Agent: ExampleApp/2.3 iOS/17.4 (woken)\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return text.encode()


class WakeRelay:
    """Push in (by token) -> ``delay`` later, that user's wake REGISTER out over UDP."""

    def __init__(
        self,
        server: tuple[str, int],
        users: int,
        contact_port: int,
        *,
        delay: float = 0.05,
        domain: str = "127.0.0.1",
        contact_host: str = "127.0.0.1",
        sockets: int = 1,
        provider: str = "apns",
    ) -> None:
        self.server = server
        self.delay = delay
        self.loop = asyncio.get_running_loop()
        # Several sockets (``--sockets``) stand for many phones: a server with
        # SO_REUSEPORT workers spreads clients by source address, so one socket would
        # pin every wake-up to one worker. User i always sends from socket i % N.
        self.socks: list[socket.socket] = []
        for _ in range(sockets):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(("127.0.0.1", 0))
            self.socks.append(sock)
        self.index: dict[bytes, int] = {token_of(i).encode(): i for i in range(users)}
        self.templates = [
            register_template(
                i,
                domain=domain,
                local=self.socks[i % sockets].getsockname(),
                contact_port=contact_port,
                contact_host=contact_host,
                provider=provider,
            )
            for i in range(users)
        ]
        self.seq = 0
        self.stats = {"pushes": 0, "unknown_tokens": 0, "registers": 0, "ok": 0, "other": 0}
        for sock in self.socks:
            self.loop.add_reader(sock.fileno(), self._on_readable, sock)
        self._http: asyncio.Server | None = None

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._http = await self.loop.create_server(lambda: _Http(self), host, port)
        bound: int = self._http.sockets[0].getsockname()[1]
        return bound

    def on_push(self, body: bytes) -> None:
        for key in _TOKEN_KEYS:
            start = body.find(key)
            if start >= 0:
                break
        else:
            self.stats["unknown_tokens"] += 1
            return
        start += len(key)
        i = self.index.get(body[start : body.find(b'"', start)].lower())
        if i is None:
            self.stats["unknown_tokens"] += 1
            return
        self.stats["pushes"] += 1
        self.loop.call_later(self.delay, self.wake, i)

    def wake(self, i: int) -> None:
        self.seq += 1
        try:
            sock = self.socks[i % len(self.socks)]
            sock.sendto(self.templates[i] % (self.seq, self.seq), self.server)
        except OSError:
            return  # a full socket buffer: the benchmark sees the call fail, as it should
        self.stats["registers"] += 1

    def _on_readable(self, sock: socket.socket) -> None:
        stats = self.stats
        while True:
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP errors from earlier sends
            if data.startswith(b"SIP/2.0 200"):
                stats["ok"] += 1
            else:
                stats["other"] += 1

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        for sock in self.socks:
            self.loop.remove_reader(sock.fileno())
            sock.close()


class _Http(asyncio.Protocol):
    """Minimal HTTP/1.1: requests one after another on a connection, which stays open
    (RFC 9112 §9.3) unless the client sends ``Connection: close`` (the emulator and
    Kamailio's http_client do; sipwake's webhook provider keeps its connections)."""

    def __init__(self, relay: WakeRelay) -> None:
        self.relay = relay
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = _CONTENT_LENGTH.search(self.buf, 0, end + 2)
            need = end + 4 + (int(length.group(1)) if length else 0)
            if len(self.buf) < need:
                return
            request, self.buf = self.buf[:need], self.buf[need:]
            close = _CLOSE.search(request, 0, end + 2) is not None
            if request.startswith(b"GET"):
                body = json.dumps(self.relay.stats).encode()
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                self.transport.write(head.encode() + body)
                close = True
            else:
                self.relay.on_push(request[end + 4 :])
                self.transport.write(_OK_CLOSE if close else _OK)
            if close:
                self.transport.close()


def get_stats(port: int) -> dict[str, int]:
    """The relay's counters (for the benchmark scripts, synchronous)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as resp:
        stats: dict[str, int] = json.loads(resp.read())
        return stats


async def _main(args: argparse.Namespace) -> None:
    host, _, port = args.server.rpartition(":")
    relay = WakeRelay(
        (host, int(port)),
        args.users,
        args.contact_port,
        delay=args.delay,
        domain=args.domain,
        sockets=args.sockets,
        provider=args.provider,
    )
    bound = await relay.listen("127.0.0.1", args.port)
    print(f"wake relay on http://127.0.0.1:{bound}/ ({args.users} users)", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        relay.loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(json.dumps(relay.stats), flush=True)
    relay.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", required=True, help="sipwake's UDP address, HOST:PORT")
    ap.add_argument("--users", type=int, required=True, help="user0 .. user<N-1>")
    ap.add_argument("--contact-port", type=int, required=True, help="the SIPp UAS's port")
    ap.add_argument("--delay", type=float, default=0.05, help="push -> REGISTER, seconds")
    ap.add_argument("--domain", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="HTTP port for forwarded pushes")
    ap.add_argument("--sockets", type=int, default=1, help="UDP sockets to send from")
    ap.add_argument("--provider", default="apns", help="pn-provider of the wake REGISTER")
    args = ap.parse_args(argv)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
