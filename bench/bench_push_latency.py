"""Proxy-added latency on the push path, timed at the server's own socket edges.

    python3 bench/bench_push_latency.py [--rate 200] [--seconds 10] [--delay 0.05]
                                        [--storage sqlite|memory] [--no-uvloop] [--quick]

One process runs the real ``Server`` (built from a config, as `sipwake serve` does, GC
tuned the same way), a Python caller, a Python callee and the wake relay
(bench/wake_relay.py, in-process); the APNs emulator runs as its own process (it stands
for a remote service). Nothing is added to src/: this script wraps, for its own run only,

* ``TransportContext.deliver`` -- a SIP datagram handed from the UDP socket to the engine,
* ``UdpEndpoint.sendto`` -- a SIP datagram written to the UDP socket,
* ``push.http2._Connection.request`` / ``._flush`` -- an APNs request's HTTP/2 frames
  written to the TLS transport (encrypted and on the socket when ``_flush`` returns),

each stamped with ``time.perf_counter_ns()``. Reported, p50/p90/p99/max in µs:

(a) INVITE in -> push request sent: parse, INVITE server transaction, location lookup,
    hold (100 and 110 out), payload with its signed decline link, HTTP/2 request;
(b) wake REGISTER in -> INVITE out: registrar and store write, the wake hook, the new
    branch (RFC 8599 §5.3.2) and its INVITE client transaction.

Calls go to distinct users at ``--rate`` for ``--seconds`` (each user registered first
with push parameters, asleep: UDP push bindings are always pushed); ``--delay`` after its
push the device's wake REGISTER is sent; the callee answers 486 at once and the caller
ACKs, so every call ends and nothing piles up. Everything shares one event loop (that is
the server's real situation: other traffic interleaves) and the machine's cores with the
emulator: say so next to any figure. Aim (issue): p99 under 1 ms for both."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import apns_emulator

from bench.bench_push_calls import server_config
from bench.bench_register import DOMAIN
from bench.wake_relay import WakeRelay
from sipwake.config import loads_config
from sipwake.process import tune_gc
from sipwake.push import http2
from sipwake.server import Server
from sipwake.transport.connections import TransportContext
from sipwake.transport.flow import Flow
from sipwake.transport.udp import UdpEndpoint

RESULTS = Path(__file__).parent / "results"
WARMUP = 20  # first calls: TLS handshake and JWT signing to the emulator, caches
_USER = re.compile(rb"sip:user(\d+)@")
_TOKEN = re.compile(r"/3/device/([0-9a-f]+)")
_FINAL = re.compile(rb"^SIP/2\.0 [3-6]\d\d ")


class Stamps:
    """perf_counter_ns() per user at the four edges."""

    def __init__(self) -> None:
        self.invite_in: dict[int, int] = {}
        self.push_out: dict[int, int] = {}
        self.register_in: dict[int, int] = {}
        self.invite_out: dict[int, int] = {}
        self.on_push: Callable[[int], None] = lambda i: None
        self.token_user: dict[str, int] = {}

    def clear(self) -> None:
        for d in (self.invite_in, self.push_out, self.register_in, self.invite_out):
            d.clear()


def instrument(stamps: Stamps) -> None:
    """Wrap the socket edges (class attributes, this process only)."""
    now = time.perf_counter_ns
    deliver = TransportContext.deliver
    sendto = UdpEndpoint.sendto
    request = http2._Connection.request
    flush = http2._Connection._flush
    queued: list[str] = []

    def deliver_stamped(self: TransportContext, data: bytes, flow: Flow) -> None:
        t = now()
        if data.startswith((b"INVITE ", b"REGISTER ")):
            m = _USER.search(data, 0, 600)
            if m is not None:
                table = stamps.invite_in if data[0] == ord("I") else stamps.register_in
                table.setdefault(int(m.group(1)), t)  # the first copy, not a retransmission
        deliver(self, data, flow)

    def sendto_stamped(self: UdpEndpoint, data: bytes, remote: tuple[str, int]) -> bool:
        ok = sendto(self, data, remote)
        if data.startswith(b"INVITE "):
            t = now()
            m = _USER.search(data, 0, 200)
            if m is not None:
                stamps.invite_out.setdefault(int(m.group(1)), t)
        return ok

    def request_noted(
        self: http2._Connection,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Coroutine[Any, Any, http2.H2Response]:
        # Called synchronously by the client before its frames are queued; _flush (next
        # loop iteration, call_soon) writes them.
        queued.append(path)
        return request(self, method, path, headers, body)

    def flush_stamped(self: http2._Connection) -> None:
        flush(self)
        t = now()
        for path in queued:
            m = _TOKEN.search(path)
            i = stamps.token_user.get(m.group(1)) if m else None
            if i is not None and i not in stamps.push_out:
                stamps.push_out[i] = t
                stamps.on_push(i)
        queued.clear()

    TransportContext.deliver = deliver_stamped  # type: ignore[method-assign]
    UdpEndpoint.sendto = sendto_stamped  # type: ignore[method-assign]
    http2._Connection.request = request_noted  # type: ignore[method-assign]
    http2._Connection._flush = flush_stamped  # type: ignore[method-assign]


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    return sock


def drain(sock: socket.socket, handle: Callable[[bytes, tuple[str, int]], None]) -> None:
    while True:
        try:
            data, addr = sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue
        handle(data, addr)


def invite(i: int, local: tuple[str, int]) -> bytes:
    return (
        f"INVITE sip:user{i}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bKcall{i};rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "Caller" <sip:caller@{DOMAIN}>;tag=c{i}\r\n'
        f"To: <sip:user{i}@{DOMAIN}>\r\n"
        f"Call-ID: call-{i}@bench-latency\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@{local[0]}:{local[1]};transport=udp>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def ack_for(final: bytes, local: tuple[str, int]) -> bytes | None:
    """RFC 3261 §17.1.1.3: the ACK for a non-2xx final answer, same branch, the To tag
    of the response."""
    m = re.search(rb"\r\nCall-ID: call-(\d+)@", final)
    to = re.search(rb"\r\n(?:To|t):([^\r\n]*)", final)
    if m is None or to is None:
        return None
    i = int(m.group(1))
    return (
        f"ACK sip:user{i}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bKcall{i};rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "Caller" <sip:caller@{DOMAIN}>;tag=c{i}\r\n'
        f"To:{to.group(1).decode()}\r\n"
        f"Call-ID: call-{i}@bench-latency\r\n"
        "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def busy_for(request: bytes) -> bytes:
    """486 Busy Here for a delivered INVITE: its Via, From, To (+tag), Call-ID, CSeq."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep = []
    for line in head:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"v", b"from", b"f", b"call-id", b"i", b"cseq"):
            keep.append(line)
        elif name in (b"to", b"t"):
            keep.append(line + b";tag=busy")
    return b"\r\n".join([b"SIP/2.0 486 Busy Here", *keep, b"Content-Length: 0", b"", b""])


def quantiles(samples: list[int]) -> dict[str, float]:
    """p50/p90/p99/max in microseconds (nearest rank)."""
    if not samples:
        return {"n": 0}
    s = sorted(samples)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))] / 1000

    return {"n": len(s), "p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": s[-1] / 1000}


async def run(args: argparse.Namespace, config_text: str, users: int) -> dict[str, Any]:
    stamps = Stamps()
    instrument(stamps)
    server = Server(loads_config(config_text))
    await server.start()
    tune_gc()
    loop = asyncio.get_running_loop()
    target = server.address("udp")
    callee, caller = udp_socket(), udp_socket()
    caller_addr = caller.getsockname()
    relay = WakeRelay(target, users, callee.getsockname()[1], delay=args.delay, domain=DOMAIN)
    stamps.token_user = {tok.decode(): i for tok, i in relay.index.items()}

    def on_push(i: int) -> None:
        loop.call_later(args.delay, relay.wake, i)

    stamps.on_push = on_push
    ended = 0

    def on_callee(data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"INVITE "):
            callee.sendto(busy_for(data), addr)

    def on_caller(data: bytes, addr: tuple[str, int]) -> None:
        nonlocal ended
        if _FINAL.match(data):
            ack = ack_for(data, caller_addr)
            if ack is not None:
                caller.sendto(ack, addr)
                ended += 1

    loop.add_reader(callee.fileno(), drain, callee, on_callee)
    loop.add_reader(caller.fileno(), drain, caller, on_caller)
    try:
        # Register every user as a sleeping app, 200 at a time (RFC 8599 Contact params).
        for start in range(0, users, 200):
            for i in range(start, min(users, start + 200)):
                relay.wake(i)
            while relay.stats["ok"] < min(users, start + 200):
                await asyncio.sleep(0.002)
        print(f"{users} push users registered; calls at {args.rate}/s for {args.seconds} s")

        async def calls(first: int, count: int, rate: float) -> None:
            t0 = loop.time()
            for k in range(count):
                delay = t0 + k / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                caller.sendto(invite(first + k, caller_addr), target)
            deadline = loop.time() + 5 + args.delay * 4
            while ended < first + count and loop.time() < deadline:
                await asyncio.sleep(0.01)

        await calls(0, WARMUP, 50)
        stamps.clear()
        measured = users - WARMUP
        await calls(WARMUP, measured, args.rate)
        a = [stamps.push_out[i] - t for i, t in stamps.invite_in.items() if i in stamps.push_out]
        b = [
            stamps.invite_out[i] - t
            for i, t in stamps.register_in.items()
            if i in stamps.invite_out
        ]
        assert server.calls is not None and server.pusher is not None
        return {
            "calls": measured,
            "ended": ended - WARMUP,
            "invite_to_push_us": quantiles(a),
            "register_to_invite_us": quantiles(b),
            "wake_stats": dict(server.calls.stats) | dict(server.pusher.stats),
            "relay": dict(relay.stats),
        }
    finally:
        for sock in (callee, caller):
            loop.remove_reader(sock.fileno())
            sock.close()
        relay.close()
        await server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="held calls per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--delay", type=float, default=0.05, help="push -> wake REGISTER, s")
    ap.add_argument("--storage", choices=["sqlite", "memory"], default="sqlite")
    ap.add_argument("--no-uvloop", action="store_true", help="the stdlib event loop")
    ap.add_argument("--quick", action="store_true", help="100 calls/s for 3 s")
    args = ap.parse_args()
    if args.quick:
        args.rate, args.seconds = 100.0, 3.0
    users = WARMUP + int(args.rate * args.seconds)
    with (
        tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmpdir,
        apns_emulator() as emu,
    ):
        tmp = Path(tmpdir)
        url = f"sqlite:///{tmp / 'latency.db'}" if args.storage == "sqlite" else "memory://"
        coro = run(args, server_config(emu, url), users)
        if args.no_uvloop:
            result = asyncio.run(coro)
        else:
            import uvloop

            result = uvloop.run(coro)
    loop_name = "asyncio" if args.no_uvloop else "uvloop"
    print(f"\n{'path':<36} {'n':>6} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8} {'max µs':>8}")
    for label, key in (
        ("(a) INVITE in -> push request sent", "invite_to_push_us"),
        ("(b) wake REGISTER in -> INVITE out", "register_to_invite_us"),
    ):
        q = result[key]
        print(
            f"{label:<36} {q['n']:>6} {q.get('p50', 0):>8.0f} {q.get('p90', 0):>8.0f} "
            f"{q.get('p99', 0):>8.0f} {q.get('max', 0):>8.0f}"
        )
    print(
        f"calls {result['calls']}, ended {result['ended']}, {loop_name}, storage "
        f"{args.storage}; server wake stats {result['wake_stats']}"
    )
    RESULTS.mkdir(exist_ok=True)
    result |= {
        "date": time.strftime("%Y-%m-%d"),
        "quick": args.quick,
        "rate": args.rate,
        "seconds": args.seconds,
        "wake_delay_s": args.delay,
        "storage": args.storage,
        "loop": loop_name,
    }
    (RESULTS / f"push_latency_{args.storage}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
