"""Latency probe: a low-rate UDP SIP client timing three transactions to microseconds.

    python3 bench/probe.py --server 127.0.0.1:5060 --uas-port 5070 --rate 20 --seconds 10
                           --call-users 1000:100 --push-users 0:200

The probe is both ends: a caller (UAC) on an ephemeral port and the callee (UAS) on
``--uas-port``, where the registered users' Contacts point (and the wake relay's
``--contact-port``). The callee answers every INVITE with 200 at once, in the same
process -- a SIPp UAS would add about 1 ms of its own scheduling to every INVITE -> 200.
Per period (1/rate s) the caller starts, a third of a period apart so they never overlap:

* ``register``: a REGISTER for a new AoR (``lat<run>x<i>``) -> its 200;
* ``invite``: an INVITE to a registered user -> the callee's 200 relayed back; then ACK
  and BYE through the Record-Route path (RFC 3261 §12.1.2, §13.2.2.4) so every call ends;
* ``push``: the same to a user with a push binding only (each user called once): INVITE
  -> 200 includes the push, the wake relay's fixed delay before the wake REGISTER, and
  the hand-over of the held call (RFC 8599 §5.3.2).

How it is timed: ``time.perf_counter_ns()`` right before ``sendto()`` of the request and
right after ``recv()`` of the response, in this process only. The interval includes the
loopback kernel path, this process's event-loop wake-ups and, for INVITE, the callee's
turn-around (``uas_ns``: INVITE received -> 200 sent, a few µs of Python). ``floor``
measures one loopback hop plus one loop wake-up (a datagram sent to the probe's own
socket, 100 times before the run). Messages are preformatted, responses are matched by
Call-ID and parsed only as far as needed; nothing else runs in this process. The same
probe is used for every system. No retransmissions: a transaction without a final answer
within ``--drain`` seconds of the last send is counted as lost.

Prints one JSON object: latencies in ns per kind, errors (non-2xx finals by code) and lost
counts per kind, the floor and the callee's turn-around in ns."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import socket
import sys
import time
import zlib
from dataclasses import dataclass, field

_CALL_ID = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)")
_CSEQ = re.compile(rb"(?im)^cseq[ \t]*:[ \t]*\d+[ \t]+(\w+)")
_TO = re.compile(rb"(?im)^(?:to|t)[ \t]*:[ \t]*(.+?)\r?$")
_CONTACT = re.compile(rb"(?im)^(?:contact|m)[ \t]*:[^<\r\n]*<([^>]+)>")
_RECORD_ROUTE = re.compile(rb"(?im)^record-route[ \t]*:[ \t]*(.+?)\r?$")
_ROUTE_URI = re.compile(rb"<[^>]+>")
_HOSTPORT = re.compile(rb"sips?:(?:[^@;>]+@)?([^:;>]+)(?::(\d+))?")
_SDP = (
    "v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@dataclass
class Call:
    kind: str  # "register", "invite" or "push"
    sent_ns: int
    invite: bytes = b""
    ack: bytes = b""  # the ACK for a 2xx, resent for every retransmitted 2xx
    ack_to: tuple[str, int] | None = None
    done: bool = False


@dataclass
class Probe:
    server: tuple[str, int]
    domain: str
    sock: socket.socket
    local: tuple[str, int]
    uas: socket.socket
    uas_port: int
    run: str = field(default_factory=lambda: secrets.token_hex(3))
    calls: dict[bytes, Call] = field(default_factory=dict)
    latency: dict[str, list[int]] = field(
        default_factory=lambda: {"register": [], "invite": [], "push": []}
    )
    errors: dict[str, dict[int, int]] = field(
        default_factory=lambda: {"register": {}, "invite": {}, "push": {}}
    )
    floor: list[int] = field(default_factory=list)
    floor_sent: int = 0
    uas_ns: list[int] = field(default_factory=list)

    def via(self, branch: str) -> str:
        return f"Via: SIP/2.0/UDP {self.local[0]}:{self.local[1]};branch=z9hG4bK{branch};rport\r\n"

    def register(self, i: int) -> None:
        user = f"lat{self.run}x{i}"
        call_id = f"r{i}-{self.run}@probe"
        msg = (
            f"REGISTER sip:{self.domain} SIP/2.0\r\n{self.via(f'r{i}{self.run}')}"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{self.domain}>;tag=r{i}\r\n"
            f"To: <sip:{user}@{self.domain}>\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:5999;transport=udp>\r\nExpires: 3600\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        self._send(call_id.encode(), Call("register", 0), msg)

    def invite(self, kind: str, user: str, i: int) -> None:
        call_id = f"{kind[0]}{i}-{self.run}@probe"
        msg = (
            f"INVITE sip:{user}@{self.domain} SIP/2.0\r\n{self.via(f'{kind[0]}{i}{self.run}')}"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@{self.domain}>;tag={kind[0]}{i}\r\n"
            f"To: <sip:{user}@{self.domain}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:probe@{self.local[0]}:{self.local[1]};transport=udp>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(_SDP)}\r\n\r\n{_SDP}"
        ).encode()
        self._send(call_id.encode(), Call(kind, 0, invite=msg), msg)

    def _send(self, call_id: bytes, call: Call, msg: bytes) -> None:
        self.calls[call_id] = call
        call.sent_ns = time.perf_counter_ns()
        self.sock.sendto(msg, self.server)

    def on_readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            now = time.perf_counter_ns()
            if data == b"floor":
                self.floor.append(now - self.floor_sent)
                continue
            if data.startswith(b"SIP/2.0 "):
                self.on_response(data, now)

    def on_response(self, data: bytes, now: int) -> None:
        status = int(data[8:11])
        m, c = _CALL_ID.search(data), _CSEQ.search(data)
        call = self.calls.get(m.group(1)) if m else None
        if call is None or c is None or status < 200:
            return
        method = c.group(1)
        if method == b"BYE":
            call.done = True
            return
        if call.ack:  # a retransmitted 2xx: our ACK was lost or late (RFC 3261 §13.2.2.4)
            assert call.ack_to is not None
            self.sock.sendto(call.ack, call.ack_to)
            return
        if call.done:
            return
        if status >= 300:
            errs = self.errors[call.kind]
            errs[status] = errs.get(status, 0) + 1
            call.done = True
            if method == b"INVITE":  # the ACK of a non-2xx is hop-by-hop (§17.1.1.3)
                self.sock.sendto(self._non2xx_ack(call.invite, data), self.server)
            return
        self.latency[call.kind].append(now - call.sent_ns)
        if method == b"REGISTER":
            call.done = True
        else:
            self._ack_and_bye(call, data)

    def on_uas_readable(self) -> None:
        """The callee: 200 to every INVITE (with SDP) and BYE, nothing to an ACK. Sent to
        the source address, which is the proxy's top Via here (RFC 3261 §18.2.2)."""
        while True:
            try:
                data, addr = self.uas.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            t0 = time.perf_counter_ns()
            if data.startswith(b"INVITE "):
                self.uas.sendto(self._answer(data, invite=True), addr)
                self.uas_ns.append(time.perf_counter_ns() - t0)
            elif data.startswith(b"BYE "):
                self.uas.sendto(self._answer(data, invite=False), addr)

    def _answer(self, req: bytes, *, invite: bool) -> bytes:
        """200 OK copying Via, From, Call-ID, CSeq (and for INVITE the Record-Route, which
        the proxy's dialog needs, §12.1.1), To with a tag derived from the Call-ID (so a
        retransmitted INVITE gets the same answer)."""
        lines = [b"SIP/2.0 200 OK"]
        for line in req.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            name = line.split(b":", 1)[0].strip().lower()
            if name in (b"via", b"v", b"from", b"f", b"call-id", b"i", b"cseq") or (
                invite and name == b"record-route"
            ):
                lines.append(line)
            elif name in (b"to", b"t"):
                tag = b"" if b";tag=" in line.lower() else b";tag=%08x" % zlib.crc32(line)
                lines.append(line + tag)
        lines.append(b"Contact: <sip:callee@127.0.0.1:%d;transport=udp>" % self.uas_port)
        body = _SDP.encode() if invite else b""
        if invite:
            lines.append(b"Content-Type: application/sdp")
        lines += [b"Content-Length: %d" % len(body), b"", body]
        return b"\r\n".join(lines)

    def _non2xx_ack(self, invite: bytes, resp: bytes) -> bytes:
        head = invite.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        to = _TO.search(resp)
        lines = [head[0].replace(b"INVITE", b"ACK", 1)]
        for line in head[1:]:
            low = line.lower()
            if low.startswith(b"to:") and to:
                line = b"To: " + to.group(1)
            elif low.startswith(b"cseq:"):
                line = b"CSeq: 1 ACK"
            elif low.startswith((b"content-", b"contact:")):
                continue
            lines.append(line)
        return b"\r\n".join([*lines, b"Content-Length: 0", b"", b""])

    def _ack_and_bye(self, call: Call, resp: bytes) -> None:
        """The UAC's ACK and BYE for a 2xx: Request-URI the callee's Contact, Route the
        Record-Route set reversed (§12.1.2), sent to the first Route (loose routing,
        §16.12) or to the Contact if nothing was record-routed."""
        to, contact = _TO.search(resp), _CONTACT.search(resp)
        assert to and contact, resp
        routes = [u for v in _RECORD_ROUTE.findall(resp) for u in _ROUTE_URI.findall(v)]
        routes.reverse()
        hop = _HOSTPORT.search(routes[0] if routes else contact.group(1))
        assert hop, resp
        call.ack_to = (hop.group(1).decode(), int(hop.group(2) or 5060))
        head = call.invite.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [
            line
            for line in head[1:]
            if line.lower().startswith((b"from:", b"call-id:", b"max-forwards:"))
        ]
        route = [b"Route: " + b", ".join(routes)] if routes else []
        msgs = []
        for cseq, method in ((1, b"ACK"), (2, b"BYE")):
            branch = self.via(f"{method.decode()}{secrets.token_hex(4)}").encode()[:-2]
            msgs.append(
                b"\r\n".join(
                    [
                        method + b" " + contact.group(1) + b" SIP/2.0",
                        branch,
                        *keep,
                        b"To: " + to.group(1),
                        b"CSeq: %d %s" % (cseq, method),
                        *route,
                        b"Content-Length: 0",
                        b"",
                        b"",
                    ]
                )
            )
        call.ack = msgs[0]
        self.sock.sendto(msgs[0], call.ack_to)
        self.sock.sendto(msgs[1], call.ack_to)


async def run(args: argparse.Namespace) -> dict[str, object]:
    host, _, port = args.server.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uas.setblocking(False)
    uas.bind(("127.0.0.1", args.uas_port))
    loop = asyncio.get_running_loop()
    probe = Probe((host, int(port)), args.domain, sock, sock.getsockname(), uas, args.uas_port)
    loop.add_reader(sock.fileno(), probe.on_readable)
    loop.add_reader(uas.fileno(), probe.on_uas_readable)
    try:
        for _ in range(100):  # the probe's own floor: loopback + event-loop wake-up
            probe.floor_sent = time.perf_counter_ns()
            sock.sendto(b"floor", probe.local)
            await asyncio.sleep(0.002)
        call_first, call_count = (int(x) for x in args.call_users.split(":"))
        push_first, push_count = (int(x) for x in args.push_users.split(":"))
        n = int(args.rate * args.seconds)
        if n > push_count:
            raise SystemExit(f"{n} push calls need as many push users, got {push_count}")
        period = 1.0 / args.rate
        t0 = loop.time() + 0.05
        for i in range(n):
            user = f"user{call_first + i % call_count}"
            loop.call_at(t0 + i * period, probe.register, i)
            loop.call_at(t0 + (i + 1 / 3) * period, probe.invite, "invite", user, i)
            loop.call_at(
                t0 + (i + 2 / 3) * period, probe.invite, "push", f"user{push_first + i}", i
            )
        end = t0 + n * period + args.drain
        while loop.time() < end and (
            len(probe.calls) < 3 * n or not all(c.done for c in probe.calls.values())
        ):
            await asyncio.sleep(0.05)
    finally:
        for s in (sock, uas):
            loop.remove_reader(s.fileno())
            s.close()
    lost = dict.fromkeys(probe.latency, 0)
    for c in probe.calls.values():
        lost[c.kind] += not c.done
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        "latency_ns": probe.latency,
        "errors": {k: {str(code): n for code, n in v.items()} for k, v in probe.errors.items()},
        "lost": lost,
        "floor_ns": probe.floor,
        "uas_ns": probe.uas_ns,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", required=True, help="HOST:PORT of the system under test")
    ap.add_argument("--uas-port", type=int, required=True, help="the callee's UDP port")
    ap.add_argument("--domain", default="127.0.0.1")
    ap.add_argument("--rate", type=float, default=20.0, help="transactions/s of each kind")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--call-users", required=True, help="FIRST:COUNT registered, answering")
    ap.add_argument("--push-users", required=True, help="FIRST:COUNT push-only, one call each")
    ap.add_argument("--drain", type=float, default=3.0, help="wait for answers after the run")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
