"""Server CPU per request on a fixed in-process workload: for A/B of a code change.

    python3 bench/bench_inproc.py [--kind register|refresh|call] [--contact plain|push]
                                  [-n 20000] [--batch 16] [--instructions]

The real ``Server`` (config as bench/rig.py's: UDP, SQLite in a temporary directory,
digest auth off) is started in this process, and REGISTERs for new AoRs (``register``)
or refreshes of one binding each (``refresh``), with the Contact of
bench/scenarios/register_inf.xml (``plain``, bench/run's REGISTER scenario) or of
register_push_inf.xml (``push``: RFC 8599 parameters, instance, reg-id), are handed to
the engine's transport sink ``batch`` at a time per event loop turn, as one UDP wake-up
hands over what it drained; the responses go to a sink that counts them. ``call`` is
bench/run's call: INVITE (with SDP) to one of 100 registered users, the callee's 200, ACK,
BYE and its 200, each phase of ``batch`` calls in one turn, the callee's answers built from
what sipwake forwarded to it. No sockets and
no other process: the figure is the server's own work (parse, transaction, registrar,
store, group commit, response), immune to the load of the machine's other processes when
counted in instructions.

Prints CPU µs per REGISTER or call (``time.process_time``) over the measured part, after
a warm-up of ``n / 2``. ``--instructions`` instead runs the workload under
``valgrind --tool=callgrind`` twice, with ``n`` and ``3 n``, and prints the instructions
per REGISTER (or call) from the difference, which cancels start-up and imports: a count
that other processes on the machine do not disturb, for A/B of small changes (1-3 min a
run). Under callgrind, overload shedding is off and T1 is 60 s, so that nothing paced by
the clock (the lag tick, retransmissions) runs more or less often with the machine's load;
the hash seed is fixed. What remains varies by about 1 % between runs of the same code.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.rig import BUNDLE_ID, sipwake_config
from sipwake.buildinfo import describe
from sipwake.config import loads_config
from sipwake.process import tune_gc
from sipwake.server import Server
from sipwake.transport.flow import Flow

CLIENT = ("127.0.0.1", 5999)
# Overload shedding stays on (its check is part of each request's cost) but never fires.
OVERLOAD = "[overload]\nmax_loop_lag = 3600.0\n"
# Under callgrind the loop runs ~50x slower: what is paced by the clock would then run a
# varying number of times, and the counts with it. So no overload shedding (its lag tick
# every 50 ms) and T1 = T2 = 60 s (no retransmission, Timer A/E, fires during a run).
STEADY = "[overload]\nenabled = false\n[sip]\nt1 = 60.0\nt2 = 60.0\n"


def register(i: int, cseq: int, call_id: str, push: bool) -> bytes:
    user = f"user{i}"
    if push:
        contact = (
            f"<sip:{user}@127.0.0.1:5999;transport=udp;ob;pn-provider=apns;"
            f"pn-param=ABCDE12345.com.example.app.voip;pn-prid={i:064x}>"
            f';+sip.instance="<urn:uuid:{uuid.UUID(int=i)}>";reg-id=1'
        )
        expires, extra = 604800, "Supported: outbound, path\r\n"
    else:
        contact, expires, extra = f"<sip:{user}@127.0.0.1:5999;transport=udp>", 3600, ""
    return (
        f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{i}-{cseq};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag={i}SIPpTag{cseq}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"{extra}"
        f"Contact: {contact}\r\n"
        f"Expires: {expires}\r\n"
        f"User-Agent: ExampleApp/2.3 iOS/17.4\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class CountingSink:
    """The transport, as the engine sees it: counts what would have been sent, and keeps
    it (``out``) when asked to."""

    def __init__(self) -> None:
        self.sent = 0
        self.ok = 0
        self.keep = False
        self.out: list[tuple[tuple[str, int], bytes]] = []

    def send(self, flow: Flow, data: bytes) -> bool:
        self.sent += 1
        if data.startswith(b"SIP/2.0 200 "):
            self.ok += 1
        if self.keep:
            self.out.append((flow.remote, data))
        return True


async def _feed(server: Server, sink: CountingSink, messages: list[bytes], batch: int) -> None:
    engine = server.engine
    local = server.address("udp")
    flow = Flow("UDP", local, CLIENT)
    for start in range(0, len(messages), batch):
        want = sink.sent + len(messages[start : start + batch])
        for data in messages[start : start + batch]:
            engine.on_message(data, flow)
        turns = 0
        while sink.sent < want:
            await asyncio.sleep(0)
            turns += 1
            if turns > 1000:
                raise SystemExit(f"no answer after 1000 loop turns at request {start}")


CALLER = ("127.0.0.1", 5070)
CALLEES = 100  # users called round-robin: the same set-up whatever n is


def _head(data: bytes) -> list[str]:
    return data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")


def _named(lines: list[str], *names: str) -> list[str]:
    return [line for line in lines if line.split(":", 1)[0].strip().lower() in names]


def _answer(request: bytes, extra: list[str]) -> bytes:
    """The callee's 200 to a request sipwake forwarded to it (RFC 3261 §8.2.6)."""
    lines = _head(request)
    out = ["SIP/2.0 200 OK", *_named(lines, "via", "record-route", "from", "call-id", "cseq")]
    [to] = _named(lines, "to")
    out.append(to if ";tag=" in to else to + ";tag=callee")
    out += [*extra, "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode()


SDP = (
    "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _invite(i: int) -> bytes:
    user = f"user{i % CALLEES}"
    return (
        f"INVITE sip:{user}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-{i};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:caller@127.0.0.1>;tag=caller-{i}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: call-{i}@bench\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@127.0.0.1:5070>\r\n"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


def _in_dialog(method: str, cseq: int, i: int, answer: bytes) -> bytes:
    """The caller's ACK or BYE in the dialog the 200 ``answer`` set up (§12.2.1.1)."""
    lines = _head(answer)
    routes = [line.split(":", 1)[1].strip() for line in _named(lines, "record-route")]
    [to] = _named(lines, "to")
    [contact] = _named(lines, "contact")
    target = contact.split("<", 1)[1].split(">", 1)[0]
    route = f"Route: {', '.join(routes)}\r\n" if routes else ""
    return (
        f"{method} {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{method}-{i};rport\r\n"
        f"Max-Forwards: 70\r\n{route}"
        f"From: <sip:caller@127.0.0.1>;tag=caller-{i}\r\n{to}\r\n"
        f"Call-ID: call-{i}@bench\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def _phase(
    server: Server, sink: CountingSink, sends: list[tuple[tuple[str, int], bytes]], want: int
) -> list[tuple[tuple[str, int], bytes]]:
    """Hand ``sends`` (source address, bytes) to the engine in one turn; wait until it has
    sent ``want`` messages; return them."""
    engine = server.engine
    local = server.address("udp")
    sink.out = []
    for source, data in sends:
        engine.on_message(data, Flow("UDP", local, source))
    turns = 0
    while len(sink.out) < want:
        await asyncio.sleep(0)
        turns += 1
        if turns > 1000:
            raise SystemExit(f"{len(sink.out)} of {want} messages sent after 1000 turns")
    return sink.out


def _to(
    out: list[tuple[tuple[str, int], bytes]], who: tuple[str, int], start: bytes
) -> list[bytes]:
    return [data for remote, data in out if remote == who and data.startswith(start)]


async def _calls(server: Server, sink: CountingSink, first: int, count: int, batch: int) -> None:
    """``count`` calls, ``batch`` at a time, each phase of a batch in one loop turn:
    INVITE (-> 100 to the caller, INVITE to the callee), the callee's 200 (-> to the
    caller), ACK and BYE (-> to the callee), the callee's 200 to BYE (-> to the caller)."""
    for start in range(first, first + count, batch):
        ids = range(start, min(start + batch, first + count))
        out = await _phase(server, sink, [(CALLER, _invite(i)) for i in ids], 2 * len(ids))
        invites = _to(out, CLIENT, b"INVITE ")
        contact = ["Contact: <sip:callee@127.0.0.1:5999>"]
        out = await _phase(server, sink, [(CLIENT, _answer(m, contact)) for m in invites], len(ids))
        answers = {m.split(b"Call-ID: call-", 1)[1].split(b"@", 1)[0]: m for _, m in out}
        dialog = []
        for i in ids:
            answer = answers[str(i).encode()]
            dialog += [(CALLER, _in_dialog("ACK", 1, i, answer))]
            dialog += [(CALLER, _in_dialog("BYE", 2, i, answer))]
        out = await _phase(server, sink, dialog, 2 * len(ids))
        byes = _to(out, CLIENT, b"BYE ")
        out = await _phase(server, sink, [(CLIENT, _answer(m, [])) for m in byes], len(ids))
        if len(_to(out, CALLER, b"SIP/2.0 200 ")) != len(ids):
            raise SystemExit(f"calls {ids}: not every BYE was answered 200")


def apns_config(tmp: Path) -> str:
    """An [[push.apns]] entry with a fresh signing key, so push Contacts are accepted; no
    push is sent in this workload, so its base_url is never connected to."""
    key = ec.generate_private_key(ec.SECP256R1())
    p8 = tmp / "apns.p8"
    p8.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return (
        f'[[push.apns]]\nbundle_id = "{BUNDLE_ID}"\nteam_id = "BENCHTEAM1"\n'
        f'key_id = "BENCHKEY01"\nkey_file = "{p8}"\nbase_url = "https://127.0.0.1:9"\n'
    )


async def run(kind: str, n: int, batch: int, push: bool, callgrind: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url = f"sqlite:///{tmp / 'sipwake.db'}"
        # Without push, rig's config leaves the API on its default port: take a free one.
        api = "" if push else "[api]\nport = 0\n"
        text = sipwake_config(url, push=apns_config(tmp) if push else "") + api
        text += STEADY if callgrind else OVERLOAD
        config = loads_config(text)
        server = Server(config)
        await server.start()
        tune_gc()  # as `sipwake serve` does once started; fewer, steadier collections
        sink = CountingSink()
        server.engine.sender = sink
        try:
            if kind == "call":
                users = [register(i, 1, f"{i:08x}-reg@bench", push) for i in range(CALLEES)]
                await _feed(server, sink, users, batch)
                sink.keep = True
                await _calls(server, sink, 0, n // 2, batch)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                await _calls(server, sink, n, n, batch)
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                if not callgrind:
                    print(
                        f"{describe()}: call n={n} batch={batch}: {cpu / n * 1e6:.1f} µs CPU "
                        f"per call ({wall / n * 1e6:.1f} µs wall)"
                    )
                return
            call_ids = [f"{i:08x}-reg@bench" for i in range(2 * n)]
            if kind == "refresh":
                # Every AoR registered first; the measured part refreshes them.
                first = [register(i, 1, call_ids[i], push) for i in range(n)]
                await _feed(server, sink, first, batch)
                warm = [register(i, 2, call_ids[i], push) for i in range(n // 2)]
                measured = [register(i, 3, call_ids[i], push) for i in range(n)]
            else:
                warm = [register(i, 1, call_ids[i], push) for i in range(n // 2)]
                measured = [register(i, 1, call_ids[i], push) for i in range(n, 2 * n)]
            await _feed(server, sink, warm, batch)
            ok0 = sink.ok
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await _feed(server, sink, measured, batch)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            if sink.ok - ok0 != len(measured):
                raise SystemExit(f"{sink.ok - ok0} of {len(measured)} REGISTERs got 200")
            if not callgrind:
                print(
                    f"{describe()}: {kind} ({'push' if push else 'plain'} contact) n={n} "
                    f"batch={batch}: "
                    f"{cpu / n * 1e6:.1f} µs CPU per REGISTER ({wall / n * 1e6:.1f} µs wall)"
                )
        finally:
            await server.stop()


def _callgrind_total(argv: list[str]) -> int:
    """Instructions executed by one run of this script under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        subprocess.run(
            [*cmd, sys.executable, __file__, "--callgrind", *argv],
            check=True,
            # One string hash for every run: dict layouts, and so the counts, repeat.
            env={**os.environ, "PYTHONHASHSEED": "0"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit("no instruction total in callgrind's output")


def instructions(args: argparse.Namespace) -> int:
    common = ["--kind", args.kind, "--contact", args.contact, "--batch", str(args.batch)]
    if args.no_uvloop:
        common.append("--no-uvloop")
    small, large = args.n, 3 * args.n
    per_run = 2.5 if args.kind == "refresh" else 1.5  # REGISTERs handled per n
    a = _callgrind_total([*common, "-n", str(small)])
    b = _callgrind_total([*common, "-n", str(large)])
    per = (b - a) / ((large - small) * per_run)
    print(
        f"{describe()}: {args.kind} ({args.contact} contact) batch={args.batch}: "
        f"{per:,.0f} instructions per {'call' if args.kind == 'call' else 'REGISTER'} "
        f"(callgrind, n={small} and {large})"
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=["register", "refresh", "call"], default="register")
    ap.add_argument("-n", type=int, default=20000, help="requests measured")
    ap.add_argument("--batch", type=int, default=16, help="requests per event loop turn")
    ap.add_argument("--contact", choices=["plain", "push"], default="plain")
    ap.add_argument("--instructions", action="store_true", help="count under callgrind")
    ap.add_argument("--callgrind", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    if args.instructions:
        return instructions(args)
    push = args.contact == "push"
    coro = run(args.kind, args.n, args.batch, push, args.callgrind)
    if args.no_uvloop:
        asyncio.run(coro)
    else:
        import uvloop

        uvloop.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
