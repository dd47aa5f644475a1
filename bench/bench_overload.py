"""Goodput under overload: calls/s completed at 1x, 2x and 4x the clean capacity.

    python3 bench/bench_overload.py [--capacity N] [--start 200] [--seconds 40] [--users 1000]

Set-up as bench_calls.py (bench/rig.py: one SIPp UAS answering at once, ``--users``
registered AoRs, digest auth off, memory store), but the caller scenario accepts a 503
(tests/e2e/scenarios/uac_call_shed_inf.xml) and SIPp runs open-loop (-l at 10 s worth of
calls), so the offered load really is the multiple. The clean capacity is measured first
unless ``--capacity`` gives it: a stepped search from ``--start``, each step a load of
``--seconds``. Each load runs ``--seconds`` (bounded), then the server gets 3 s of quiet.
For the steady state, give loads longer than 64*T1 (32 s): a server keeps each finished
transaction that long (RFC 3261 Timers J, L, M), so a shorter step is measured with less
state than a server running at that rate for good holds.

Per load: answered calls/s during the run (from sipwake_calls_total{result="answered"}),
shed INVITEs (sipwake_refused_total{reason="overload"}), and the server's RSS before and
after. Goal (issue 15): at 4x, goodput >= 80 % of the clean capacity. SIPp (both ends)
shares the cores with the server: at 4x it needs a good part of one core itself."""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import RunningServer, keys, run_sipp

from bench import cpu, rig

# The capacity search's rates, calls/s.
LADDER = (200, 400, 600, 800, 1000, 1200, 1400, 1600, 1800, 2000, 2200, 2400, 2600, 2800, 3200)
SHED_SCENARIO = Path(__file__).resolve().parents[1] / "tests/e2e/scenarios/uac_call_shed_inf.xml"


def counters(server: RunningServer) -> tuple[float, float]:
    host, port = server.addr("api")
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()

    def value(name: str) -> float:
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    return (
        value('sipwake_calls_total{result="answered"}'),
        value('sipwake_refused_total{reason="overload"}'),
    )


def rss_mb(server: RunningServer) -> float:
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def offer(
    server: RunningServer,
    uas_pid: int,
    target: tuple[str, int],
    callees: Path,
    tmp: Path,
    *,
    rate: int,
    seconds: float,
) -> dict[str, Any]:
    """Offer ``rate`` calls/s for ``seconds`` (open loop), after 3 s of quiet."""
    time.sleep(3.0)
    log0 = len(server.output)
    answered0, shed0 = counters(server)
    rss0 = rss_mb(server)
    groups: dict[str, cpu.Group] = {
        "server": lambda: [server.proc.pid],
        "uas": lambda: [uas_pid],
    }
    cpu0, caller0, wall0 = cpu.snapshot(groups), cpu.children_cpu(), time.monotonic()
    res = run_sipp(
        SHED_SCENARIO,
        target,
        calls=int(rate * seconds),
        rate=rate,
        limit=rate * 10,
        timeout=seconds + 40,
        workdir=tmp,
        extra=["-inf", str(callees), *keys(domain=rig.DOMAIN)],
    )
    answered1, shed1 = counters(server)
    used = cpu.delta(cpu0, cpu.snapshot(groups))
    wall = time.monotonic() - wall0
    # Where the two cores went, in % of one core over the whole SIPp run (its tail
    # included): the caller SIPp is this process's child, counted once it has exited.
    share = {
        "server": used["server"] / wall,
        "uas": used["uas"] / wall,
        "caller": (cpu.children_cpu() - caller0) / wall,
    }
    return {
        "offered_per_s": rate,
        "answered": answered1 - answered0,
        "goodput_per_s": round((answered1 - answered0) / seconds),
        "shed_503": shed1 - shed0,
        "sipp_failed": res.failed,
        "sipp_retransmissions": res.retransmissions,
        "rss_mb_before": round(rss0, 1),
        "rss_mb_after": round(rss_mb(server), 1),
        "cpu_pct": {k: round(100 * v) for k, v in share.items()},
        # The first reason of each 10 s (app/engine.py _count_shed logs at most that):
        # which signal shed tells a real overload from a noisy one.
        "why": [
            line.split("503: ", 1)[1]
            for line in server.output[log0:]
            if "answering new requests 503: " in line
        ],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--capacity", type=int, default=0, help="clean calls/s; 0: measure it")
    ap.add_argument(
        "--seconds", type=float, default=40.0, help="length of each load (and search step)"
    )
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument(
        "--start",
        type=int,
        default=200,
        help="first rate of the capacity search (skip the steps known to be clean)",
    )
    ap.add_argument("--multiples", default="1,2,4")
    ap.add_argument("--config", default="", help="TOML appended, e.g. '[overload]\\n...'")
    args = ap.parse_args()
    multiples = [float(m) for m in args.multiples.split(",")]

    with tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmpdir:
        tmp = Path(tmpdir)
        config = rig.sipwake_config("memory://") + "[api]\nport = 0\n"
        config += args.config.replace("\\n", "\n") + "\n"
        with rig.uas(tmp) as uas, rig.sipwake(tmp, config) as server:
            target = server.addr("udp")
            rig.register_users(
                tmp, target, start=0, count=args.users, contact_port=uas.port, push=False
            )
            callees = tmp / "callees.csv"
            rig.write_callees(callees, 0, args.users)
            capacity = args.capacity
            search: list[dict[str, Any]] = []
            if not capacity:
                # The highest stepped rate that is clean: no call refused 503, none
                # failed (until 2026-12-03: >= 95 % answered, which let a rate whose
                # 1x load then refused 16 % pass as the capacity).
                for rate in [r for r in LADDER if r >= args.start]:
                    row = offer(
                        server, uas.proc.pid, target, callees, tmp, rate=rate, seconds=args.seconds
                    )
                    search.append(row)
                    print(f"  capacity search: {rate}/s -> {row['goodput_per_s']}/s")
                    for why in row["why"]:
                        print(f"      shed: {why}")
                    if row["shed_503"] or row["sipp_failed"]:
                        break
                    capacity = rate
                print(f"clean capacity: {capacity} calls/s")
            rows = []
            for m in multiples:
                row = offer(
                    server,
                    uas.proc.pid,
                    target,
                    callees,
                    tmp,
                    rate=int(capacity * m),
                    seconds=args.seconds,
                )
                row["multiple"] = m
                row["goodput_of_capacity"] = round(row["goodput_per_s"] / capacity, 3)
                rows.append(row)
                print(
                    f"  {m:g}x  offered {row['offered_per_s']:>6}/s  goodput "
                    f"{row['goodput_per_s']:>6}/s ({row['goodput_of_capacity']:.0%} of capacity)"
                    f"  503s {row['shed_503']:>7.0f}  SIPp failed {row['sipp_failed']:>6}  "
                    f"retransmitted {row['sipp_retransmissions']:>6}  "
                    f"RSS {row['rss_mb_before']:.0f} -> {row['rss_mb_after']:.0f} MB"
                )
                print(
                    "      CPU % of a core: "
                    + ", ".join(f"{k} {v}" for k, v in row["cpu_pct"].items())
                )
                for why in row["why"]:
                    print(f"      shed: {why}")
            alive = server.alive()
    path = rig.write_result(
        "overload",
        {
            "capacity": capacity,
            "seconds": args.seconds,
            "alive": alive,
            "search": search,
            "loads": rows,
        },
    )
    print(f"server alive: {alive}; written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
