"""The SIP user-agent plumbing of the simulated phone: one socket or connection to the
server, the sans-I/O transaction layer driven by the event loop, and client-side digest.

The phone is a UA, not a proxy, but RFC 3261 §17 transactions are the same on both sides,
so :class:`UserAgentCore` reuses :class:`~sipwake.sip.transactions.layer.TransactionLayer`:
it retransmits REGISTER/BYE over UDP (Timers E/F), absorbs INVITE retransmissions (the
server transaction re-sends the last provisional) and matches CANCEL to its INVITE (§9.2).
What a UA core adds on top (the 2xx retransmissions of §13.3.1.4, dialogs) is the phone's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from sipwake.sip.codec import PING, PONG, StreamFramer, parse_message
from sipwake.sip.errors import ParseError
from sipwake.sip.events import (
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    TransactionTimeout,
)
from sipwake.sip.message import Request, Response
from sipwake.sip.timers import TimerConfig
from sipwake.sip.transactions.layer import TransactionGone, TransactionLayer

log = logging.getLogger(__name__)

TRANSPORTS = ("udp", "tcp", "tls")


def new_id(nbytes: int = 8) -> str:
    return secrets.token_hex(nbytes)


# --- links: the one socket or connection the phone has at a time ------------------------


@dataclass(frozen=True, slots=True)
class Flow:
    """A ``Dest`` for the transaction layer: the link and, on UDP, the peer address
    (responses go back to where the request came from, RFC 3261 §18.2.2 with rport)."""

    link: Link
    addr: tuple[str, int] | None
    reliable: bool


OnMessage = Callable[[bytes, "Link", "tuple[str, int] | None"], None]


class Link:
    """A UDP socket, or a TCP/TLS connection the phone opened (so the server can send
    INVITEs back over it, RFC 5626 §3.5.1 style)."""

    def __init__(self, transport: str, server: tuple[str, int], on_message: OnMessage) -> None:
        self.transport = transport
        self.server = server
        self.reliable = transport != "udp"
        self.local: tuple[str, int] = ("0.0.0.0", 0)
        self.closed = False
        self.on_message = on_message
        self.on_close: Callable[[Link], None] | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._udp_lost = asyncio.Event()

    @property
    def server_flow(self) -> Flow:
        return Flow(self, None if self.reliable else self.server, self.reliable)

    async def open(self, ca_file: str = "", tls_name: str = "") -> None:
        loop = asyncio.get_running_loop()
        host, port = self.server
        if self.transport == "udp":
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((_local_ip_towards(self.server, family), 0))
                sock.setblocking(False)
                proto = _UdpProtocol(self)
                transport, _ = await loop.create_datagram_endpoint(lambda: proto, sock=sock)
            except BaseException:
                sock.close()
                raise
            self._udp = transport
            self.local = sock.getsockname()[:2]
            return
        ctx: ssl.SSLContext | None = None
        if self.transport == "tls":
            ctx = ssl.create_default_context(cafile=ca_file or None)
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ctx, server_hostname=(tls_name or host) if ctx else None
        )
        self._writer = writer
        self.local = writer.get_extra_info("sockname")[:2]
        self._reader_task = loop.create_task(self._read(reader, writer))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = StreamFramer()
        try:
            while data := await reader.read(65536):
                for item in framer.feed(data):
                    if item is PING:
                        writer.write(PONG)  # RFC 5626 §4.4.1: answer a CRLFCRLF ping
                    elif isinstance(item, bytes):
                        self.on_message(item, self, None)
        except (OSError, ParseError) as exc:
            # A framing error leaves the stream unsynchronisable (RFC 3261 §18.3): drop it.
            log.info("phone connection %s closed: %s", self.local, exc)
        finally:
            self.close()

    def send(self, data: bytes, addr: tuple[str, int] | None) -> None:
        if self.closed:
            return  # asleep: the message is lost, as it would be on a dead phone
        if self._udp is not None:
            self._udp.sendto(data, addr or self.server)
        elif self._writer is not None:
            self._writer.write(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if self.on_close is not None:
            self.on_close(self)

    async def wait_closed(self) -> None:
        """Return once the socket is really closed (asyncio closes it a loop turn later)."""
        if self._udp is not None:
            await self._udp_lost.wait()
        elif self._writer is not None:
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, link: Link) -> None:
        self.link = link

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.strip(b"\r\n"):  # a bare CRLF is a keep-alive (RFC 5626 §4.4.2 is STUN)
            self.link.on_message(data, self.link, addr[:2])

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._udp_lost.set()

    def error_received(self, exc: Exception) -> None:
        log.debug("phone UDP error: %s", exc)


def _local_ip_towards(server: tuple[str, int], family: int) -> str:
    """The address the kernel would send from: a Contact must carry a reachable IP, never
    the wildcard (RFC 3261 §10.2.1: the Contact is where the UA can be reached)."""
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect(server)
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1" if family == socket.AF_INET else "::1"
    finally:
        probe.close()


# --- the transaction layer, driven by the loop ------------------------------------------

OnRequest = Callable[[Request, str, Flow], None]
OnCancel = Callable[[Request, str, "str | None"], None]
OnAck = Callable[[Request], None]


class UserAgentCore:
    """Feeds the transaction layer with messages and ``loop.time()``, sends its outbox and
    hands requests to the phone. Requests the phone sends complete as awaitables."""

    def __init__(
        self,
        timers: TimerConfig,
        on_request: OnRequest,
        on_cancel: OnCancel,
        on_ack: OnAck,
    ) -> None:
        self.timers = timers
        self.layer = TransactionLayer(timers, new_id)
        self.on_request = on_request
        self.on_cancel = on_cancel
        self.on_ack = on_ack
        self._pending: dict[str, tuple[asyncio.Future[Response], Link]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def receive(self, data: bytes, link: Link, addr: tuple[str, int] | None) -> None:
        try:
            msg = parse_message(data, stream=link.reliable)
            msg.validate()
        except ParseError as exc:
            log.info("phone dropped a malformed message: %s", exc)
            return
        if isinstance(msg, Request) and msg.method == "ACK":
            # Seen here, before the layer: the ACK for a non-2xx is absorbed by the
            # server transaction (§17.2.1) and would never reach the phone otherwise.
            self.on_ack(msg)
        try:
            self.layer.receive(msg, Flow(link, addr, link.reliable), self._now())
        except ParseError as exc:
            log.info("phone dropped an unmatchable message: %s", exc)
        self._pump()

    async def request(self, request: Request, flow: Flow) -> Response:
        """Send ``request`` in a client transaction; its final response (a 408 made here
        on Timer F/B, RFC 3261 §8.1.3.1; a 503 when the link closes first)."""
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        txn_id = self.layer.send_request(request, flow, self._now())
        self._pending[txn_id] = (fut, flow.link)
        self._pump()
        try:
            return await fut
        finally:
            self._pending.pop(txn_id, None)

    def respond(self, txn_id: str, response: Response, flow: Flow | None) -> None:
        try:
            self.layer.send_response(txn_id, response, self._now())
        except TransactionGone:
            # A 2xx retransmission after Timer L: the UA core owns it (§13.3.1.4).
            if 200 <= response.status < 300 and flow is not None:
                self.layer.send_stateless(response, flow)
        self._pump()

    def link_closed(self, link: Link) -> None:
        for fut, pending_link in self._pending.values():
            if pending_link is link and not fut.done():
                fut.set_result(Response(503, "Connection lost"))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.cancel()

    def _fire(self) -> None:
        self._timer = None
        self.layer.handle_timer(self._now())
        self._pump()

    def _pump(self) -> None:
        layer = self.layer
        for data, dest in layer.outbox():
            assert isinstance(dest, Flow)
            dest.link.send(data, dest.addr)
        while (event := layer.next_event()) is not None:
            if isinstance(event, ResponseReceived):
                entry = self._pending.get(event.txn_id)
                if entry is not None and event.response.status >= 200 and not entry[0].done():
                    entry[0].set_result(event.response)
            elif isinstance(event, TransactionTimeout):
                entry = self._pending.get(event.txn_id)
                if entry is not None and not entry[0].done():
                    entry[0].set_result(Response(408, "Request Timeout (no response)"))
            elif isinstance(event, RequestReceived):
                if event.txn_id is not None:  # ACKs went to on_ack already
                    assert isinstance(event.flow, Flow)
                    self.on_request(event.request, event.txn_id, event.flow)
            elif isinstance(event, CancelReceived):
                self.on_cancel(event.cancel, event.txn_id, event.invite_txn_id)
        # Handlers may have sent responses: flush again, then re-arm the one timer.
        for data, dest in layer.outbox():
            assert isinstance(dest, Flow)
            dest.link.send(data, dest.addr)
        when = layer.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._fire)


# --- digest, client side (RFC 3261 §22.2, RFC 7616 §3.4, RFC 8760) ------------------------

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')
_SCHEME_RE = re.compile(r"(?:^|,)\s*Digest\s+", re.IGNORECASE)


def parse_challenges(values: list[str]) -> list[dict[str, str]]:
    """Every ``Digest`` challenge in these WWW-/Proxy-Authenticate values, in order; names
    lower-cased. A line may hold several challenges separated by commas."""
    out: list[dict[str, str]] = []
    for value in values:
        for chunk in _SCHEME_RE.split(value)[1:]:
            params: dict[str, str] = {}
            for m in _PARAM_RE.finditer(chunk):
                raw = m.group(2)
                text = re.sub(r"\\(.)", r"\1", raw) if raw is not None else m.group(3)
                params[m.group(1).lower()] = text
            if "nonce" in params and "realm" in params:
                out.append(params)
    return out


def authorization(
    challenge_values: list[str],
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
) -> tuple[str, dict[str, str]] | None:
    """The credentials answering the first challenge whose algorithm we support (the
    server lists its preference first, RFC 8760 §2.4), and that challenge; None if none."""
    for ch in parse_challenges(challenge_values):
        algorithm = ch.get("algorithm", "MD5")  # absent means MD5 (RFC 2617 §3.2.1)
        base = algorithm.upper().removesuffix("-SESS")
        h = _HASHES.get(base)
        if h is None:
            continue
        realm, nonce = ch["realm"], ch["nonce"]
        ha1 = h(f"{username}:{realm}:{password}".encode())
        if algorithm.upper().endswith("-SESS"):
            ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())  # RFC 7616 §3.4.2
        ha2 = h(f"{method}:{uri}".encode())
        qops = [q.strip().lower() for q in ch.get("qop", "").split(",") if q.strip()]
        parts = [
            f"Digest username={_q(username)}",
            f"realm={_q(realm)}",
            f"nonce={_q(nonce)}",
            f"uri={_q(uri)}",
        ]
        if "auth" in qops:
            nc_text = f"{nc:08x}"
            response = h(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}".encode())
            parts += [f'response="{response}"', f"algorithm={algorithm}", "qop=auth"]
            parts += [f"nc={nc_text}", f"cnonce={_q(cnonce)}"]
        elif not qops:  # RFC 2069 compatibility form
            response = h(f"{ha1}:{nonce}:{ha2}".encode())
            parts += [f'response="{response}"', f"algorithm={algorithm}"]
        else:
            continue  # only auth-int offered: not supported
        if "opaque" in ch:
            parts.append(f"opaque={_q(ch['opaque'])}")
        return ", ".join(parts), ch
    return None


def _q(value: str) -> str:
    """A quoted-string (RFC 3261 §25.1): a challenge's values go back as they came."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
