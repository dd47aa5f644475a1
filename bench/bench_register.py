"""REGISTER/s accepted by `sipwake serve` over UDP, each one a new AoR, driven by SIPp.

    python3 bench/bench_register.py [--storage sqlite|memory|redis://...] [--workers N]
                                    [--preload N] [--contact plain|push] [--seconds 4]
                                    [--rates ...] [--quick]

Every step runs SIPp at a fixed rate for ``--seconds`` with an ``-inf`` CSV of fresh
users (``SEQUENTIAL``, a new range per step), so every REGISTER creates a binding
(RFC 3261 §10.3 step 8 on an empty AoR), never a refresh. Digest auth is off: this
measures the registrar and the store, not the challenge round trip. The result is the
highest rate with zero failed REGISTERs and zero retransmissions (SIPp resends after
500 ms without a response, RFC 3261 §17.1.2.2 Timer E, so a retransmission means the
server fell behind).

``--preload N`` first writes N push bindings straight into the SQLite file (the same rows
the store writes; bench_bindings_memory.fill_sqlite), so the server starts with them
loaded: "REGISTER/s with 1 M bindings stored". ``--storage redis://...`` runs under a
fresh key prefix, deleted afterwards; ``--workers N`` is `sipwake serve --workers N`.
The set-up is bench/rig.py's, shared with the other SIPp benchmarks.

SIPp shares the machine's cores with the server: say so next to any figure."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import SippResult

from bench import rig
from bench.bench_bindings_memory import fill_sqlite
from bench.rig import DOMAIN
from bench.sipp_rate import step_search

RESULTS = rig.RESULTS


def stored_aors(db: Path) -> int:
    """Rows in the bindings table, read after the server has stopped (a cross-check
    that every 200 really left a binding behind)."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM bindings").fetchone()[0])
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--storage", default="sqlite", help="sqlite, memory or a redis:// URL")
    ap.add_argument("--workers", type=int, default=1, help="sipwake serve --workers N")
    ap.add_argument("--preload", type=int, default=0, help="bindings stored before the run")
    ap.add_argument("--contact", choices=["plain", "push"], default="plain")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each step")
    ap.add_argument("--rates", default="1000,1500,2000,2500,3000,4000,5000,6000,8000,10000,12000")
    ap.add_argument("--quick", action="store_true", help="1 s steps, rates 500,1000,2000")
    ap.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="REGISTERs sent at 500/s before the first step, not counted: once, a server "
        "just loaded with 1 M bindings retransmitted on its first step and not after (cause "
        "not found), which ended the ladder at 0",
    )
    ap.add_argument(
        "--config", default="", help="TOML appended to the server's, e.g. '[overload]\\n...'"
    )
    args = ap.parse_args()
    if args.preload and args.storage != "sqlite":
        ap.error("--preload needs --storage sqlite")
    seconds = 1.0 if args.quick else args.seconds
    rates = [500, 1000, 2000] if args.quick else [int(r) for r in args.rates.split(",")]
    label = rig.storage_label(args.storage)

    with (
        tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmpdir,
        rig.storage(args.storage, Path(tmpdir) / "register.db") as url,
    ):
        tmp = Path(tmpdir)
        db = tmp / "register.db"
        fill = 0.0
        if args.preload:
            print(f"preloading {args.preload} push bindings ...", flush=True)
            # Other AoRs than the measured ones (prefix "pre"), same domain, live for a week.
            fill = fill_sqlite(db, args.preload, now=time.time(), domain=DOMAIN, prefix="pre")
            print(f"  written in {fill:.1f} s", flush=True)
        t0 = time.perf_counter()
        # Start-up loads every stored binding (storage/sqlite.py): ~15 s per million.
        with rig.sipwake(
            tmp,
            rig.sipwake_config(url, workers=args.workers) + "\n" + args.config.replace("\\n", "\n"),
            workers=args.workers,
            ready_timeout=30 + args.preload / 20_000,
        ) as server:
            startup = time.perf_counter() - t0
            target = server.addr("udp")
            print(
                f"REGISTER ({args.contact} contact, new AoR each) over UDP to sipwake at "
                f"{target[0]}:{target[1]} ({args.workers} process(es)), storage {label}, "
                f"{args.preload} preloaded, ready in {startup:.1f} s"
            )
            steps_run = rig.register_steps(
                target,
                tmp,
                seconds,
                push=args.contact == "push",
                transport=rig.sipp_transport(args.workers),
            )
            last: list[SippResult] = []
            warm = steps_run(500, args.warmup) if args.warmup else None
            if warm is not None:
                print(
                    f"  warm-up: {warm.successful}/{args.warmup} at 500/s, "
                    f"{warm.retransmissions} retransmissions (not counted)"
                )

            def run(rate: int, calls: int) -> SippResult:
                res = steps_run(rate, calls)
                last[:] = [res]
                return res

            best, steps = step_search(run, rates, seconds, allow_retrans=False)
            alive = server.alive()
        if last and last[0].successful == 0:
            # Nothing registered at all: a set-up problem, not a rate limit. Show why.
            print(last[0].output[-2000:])
        registered = sum(s.successful for s in steps) + (warm.successful if warm else 0)
        stored = stored_aors(db) if args.storage == "sqlite" else None

    print(f"highest clean rate: {best} REGISTER/s (new AoRs; server alive: {alive})")
    if stored is not None:
        expect = args.preload + registered
        print(f"AoRs in the database after the run: {stored} (expected {expect})")
    rig.write_result(
        f"register_{label}_{args.contact}" + (f"_pre{args.preload}" if args.preload else ""),
        {
            "quick": args.quick,
            "storage": label,
            "workers": args.workers,
            "contact": args.contact,
            "preload": args.preload,
            "preload_fill_s": round(fill, 1),
            "startup_s": round(startup, 1),
            "seconds_per_step": seconds,
            "best": best,
            "stored_aors_after": stored,
            "steps": [s.__dict__ for s in steps],
        },
        workers=args.workers,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
