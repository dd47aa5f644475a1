"""Memory per held call: RSS growth of a running server per INVITE parked for a sleeping
device (RFC 8599 §5.3.2), at 10 k and 100 k held calls.

    python3 bench/bench_held_memory.py [--sizes 10000,100000] [--no-uvloop] [--quick]

Each size runs in a fresh subprocess: N callees with one push binding each are written
straight into a SQLite store (bench_bindings_memory.fill_sqlite: APNs token, +sip.instance,
reg-id, a TCP flow that is not connected, so every device counts as asleep), and the real
``Server`` is started on it in-process with ``hold_window`` and ``timer_c`` at their
maximum (3600 s), so nothing expires while we measure. The APNs emulator, its own process,
accepts every push at once: what is measured is a held call in the state it spends its
life in -- push delivered, waiting for the device to register.

A Python UDP sender then sends N preformatted INVITEs, one per callee, keeping at most a
few hundred unanswered (it waits for the server's 110 Push sent), until
``wake.stats["held"]`` and ``["pushed"]`` reach N. VmRSS (/proc/self/status) is read after
a warm-up (the HTTP/2 connection, JWT, caches) and after the N calls, each after
``gc.collect()``. Reported: RSS growth per held call, Python heap blocks per held call
(``sys.getallocatedblocks``), and the wall time to park N calls. The stored bindings are
loaded before the first reading, so they are not counted (bench_bindings_memory.py
measures them). Per held call the server keeps the INVITE server transaction, the proxy's
call context, the held-call record, its hold timer and the finished push task."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import ApnsEmulator, apns_emulator

from bench.bench_bindings_memory import fill_sqlite, vm_rss_kib
from bench.bench_push_calls import BUNDLE_ID
from bench.bench_register import DOMAIN
from sipwake.config import loads_config
from sipwake.process import tune_gc
from sipwake.server import Server

RESULTS = Path(__file__).parent / "results"
WARMUP = 200
WINDOW = 200  # INVITEs sent but not yet answered with 110

CONFIG = """
[server]
domains = ["{domain}"]
log_level = "warning"
[[listen]]
transport = "udp"
host = "127.0.0.1"
port = 0
[api]
port = 0
[storage]
url = "sqlite:///{db}"
[auth]
enabled = false
[sip]
timer_c = 3600.0
[push]
hold_window = 3600.0
max_per_device = 0.0  # one caller address holds every call: the push budget off
max_per_source = 0.0
{apns}
"""


def invite(i: int, local: tuple[str, int]) -> bytes:
    return (
        f"INVITE sip:user{i}@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bKheld{i};rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "Caller {i}" <sip:caller{i}@{DOMAIN}>;tag=h{i}\r\n'
        f"To: <sip:user{i}@{DOMAIN}>\r\n"
        f"Call-ID: held-{i}@bench-memory\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller{i}@{local[0]}:{local[1]};transport=udp>\r\n"
        "Content-Type: application/sdp\r\n"
        "Content-Length: 129\r\n\r\n"
        "v=0\r\no=caller 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
        "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def rss_now() -> tuple[int, int]:
    gc.collect()
    return vm_rss_kib(), sys.getallocatedblocks()


async def park(n: int, config_text: str) -> dict[str, Any]:
    server = Server(loads_config(config_text))
    t0 = time.perf_counter()
    await server.start()
    startup = time.perf_counter() - t0
    tune_gc()
    wake = server.calls
    pusher = server.pusher
    assert wake is not None and pusher is not None
    loop = asyncio.get_running_loop()
    target = server.address("udp")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    local = sock.getsockname()
    answered = 0

    def on_readable() -> None:
        nonlocal answered
        while True:
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            if data.startswith(b"SIP/2.0 110"):
                answered += 1

    loop.add_reader(sock.fileno(), on_readable)

    async def send(first: int, count: int) -> None:
        base = answered
        for k in range(count):
            while k - (answered - base) >= WINDOW:
                await asyncio.sleep(0.001)
            sock.sendto(invite(first + k, local), target)
        want = first + count
        deadline = loop.time() + 60 + count / 200
        while (wake.stats["held"] < want or pusher.stats["pushed"] < want) and (
            loop.time() < deadline
        ):
            await asyncio.sleep(0.01)

    try:
        await send(0, WARMUP)
        rss0, blocks0 = rss_now()
        t1 = time.perf_counter()
        await send(WARMUP, n)
        park_s = time.perf_counter() - t1
        await asyncio.sleep(0.2)  # let the last push tasks finish and be released
        rss1, blocks1 = rss_now()
        held = wake.stats["held"] - WARMUP
        return {
            "n": n,
            "held": held,
            "pushed": pusher.stats["pushed"] - WARMUP,
            "live_held_records": len(wake.by_id) - WARMUP,
            "rss_before_kib": rss0,
            "rss_after_kib": rss1,
            "bytes_per_held_call": (rss1 - rss0) * 1024 / max(held, 1),
            "heap_blocks_per_held_call": (blocks1 - blocks0) / max(held, 1),
            "park_s": park_s,
            "server_start_s": startup,
        }
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
        await server.stop()


def child(n: int, use_uvloop: bool) -> None:
    """Subprocess mode: one size, JSON on the last line of stdout."""
    with tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmpdir:
        db = Path(tmpdir) / "held.db"
        fill_sqlite(db, n + WARMUP, now=time.time(), domain=DOMAIN, prefix="user")
        emu: ApnsEmulator
        with apns_emulator() as emu:
            text = CONFIG.format(domain=DOMAIN, db=db, apns=emu.config(BUNDLE_ID))
            if use_uvloop:
                import uvloop

                result = uvloop.run(park(n, text))
            else:
                result = asyncio.run(park(n, text))
    result["loop"] = "uvloop" if use_uvloop else "asyncio"
    print(json.dumps(result), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--no-uvloop", action="store_true", help="the stdlib event loop")
    ap.add_argument("--quick", action="store_true", help="2 000 and 10 000 held calls")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, not args.no_uvloop)
        return 0
    sizes = [2000, 10_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--child", str(n)]
        if args.no_uvloop:
            cmd.append("--no-uvloop")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
        if out.returncode != 0:
            print(out.stdout[-2000:], out.stderr[-3000:])
            raise SystemExit(f"size {n}: child failed")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  {n} held: {r['bytes_per_held_call']:.0f} B each, parked in {r['park_s']:.1f} s")
    print(
        f"\n{'held calls':>10} {'B/held call':>11} {'blocks/call':>11} {'RSS after MiB':>13} "
        f"{'pushed':>7} {'park s':>7}"
    )
    for r in rows:
        print(
            f"{r['held']:>10} {r['bytes_per_held_call']:>11.0f} "
            f"{r['heap_blocks_per_held_call']:>11.0f} {r['rss_after_kib'] / 1024:>13.1f} "
            f"{r['pushed']:>7} {r['park_s']:>7.1f}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "held_memory.json").write_text(
        json.dumps(
            {"date": time.strftime("%Y-%m-%d"), "quick": args.quick, "sizes": rows}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
