"""Location store throughput and footprint (memory and SQLite backends).

    python3 bench/bench_store.py [-n 100000] [--synchronous normal]

Reports, per backend: inserts/s (new AoR, one push binding each), refresh upserts/s
(replace the binding of an existing AoR, the REGISTER refresh path), lookups/s; for
SQLite also the file size per binding and the RSS a process needs per binding once the
store is loaded (measured in a fresh subprocess so earlier allocations do not count).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sipwake.policy.bindings import Binding, FlowRef, PushTarget
from sipwake.storage.base import BindingStore
from sipwake.storage.memory import MemoryStore
from sipwake.storage.sqlite import SQLiteStore

NOW = 1_700_000_000.0


def make(i: int) -> Binding:
    """A realistic iOS push binding (~330 bytes encoded)."""
    aor = f"sip:user{i}@example.com"
    return Binding(
        aor=aor,
        contact=f"sip:user{i}@198.51.100.{i % 250}:{40000 + i % 20000};transport=tls;ob",
        expires_at=NOW + 7 * 86400,
        call_id=f"{i:016x}-reg@phone",
        cseq=1,
        instance=f"urn:uuid:{i:08x}-7dec-11d0-a765-00a0c91e6bf6",
        reg_id=1,
        flow=FlowRef("TLS", f"198.51.100.{i % 250}", 40000 + i % 20000, "10.0.0.1", 5061, i),
        push=PushTarget("apns", f"{i:064x}", "ABCDE12345.com.example.app.voip"),
        user_agent="ExampleApp/2.3 iOS/17.4",
        registered_at=NOW,
    )


def put(b: Binding) -> Callable[[list[Binding]], tuple[list[Binding], None]]:
    """Update callback replacing the AoR's bindings with ``b`` (a first REGISTER or a
    refresh from the same device)."""
    return lambda current: ([b], None)


async def run(store: BindingStore, n: int) -> dict[str, float]:
    bindings = [make(i) for i in range(n)]
    t = time.perf_counter()
    for b in bindings:
        await store.update(b.aor, put(b), NOW)
    insert = n / (time.perf_counter() - t)

    m = min(n, 20_000)
    fresh = [
        dataclasses.replace(b, cseq=b.cseq + 1, expires_at=NOW + 8 * 86400)
        for b in random.sample(bindings, m)
    ]
    t = time.perf_counter()
    for f in fresh:
        await store.update(f.aor, put(f), NOW)
    refresh = m / (time.perf_counter() - t)

    aors = [b.aor for b in random.choices(bindings, k=n)]
    t = time.perf_counter()
    for aor in aors:
        await store.lookup(aor, NOW)
    lookup = n / (time.perf_counter() - t)
    return {"insert/s": insert, "refresh/s": refresh, "lookup/s": lookup}


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def child_rss(path: str) -> None:
    """Subprocess mode: RSS growth from opening (loading) the database."""
    before = rss_kib()
    store = SQLiteStore.open(path)
    after = rss_kib()
    print(after - before, len(store._bindings))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--synchronous", default="normal")
    ap.add_argument("--child-rss", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_rss:
        child_rss(args.child_rss)
        return
    n: int = args.n

    print(f"n = {n} AoRs, one push binding each, Python {sys.version.split()[0]}")
    res = asyncio.run(run(MemoryStore(), n))
    print("memory :", "  ".join(f"{k} {v:,.0f}" for k, v in res.items()))

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")

        async def sqlite_run() -> dict[str, float]:
            store = SQLiteStore.open(path, synchronous=args.synchronous)
            try:
                return await run(store, n)
            finally:
                # Fold the WAL into the main file so the size below is the steady state.
                store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                await store.close()

        res = asyncio.run(sqlite_run())
        print(
            f"sqlite ({args.synchronous}):",
            "  ".join(f"{k} {v:,.0f}" for k, v in res.items()),
        )
        size = Path(path).stat().st_size
        print(f"sqlite file: {size / 1e6:.1f} MB = {size / n:.0f} bytes per binding")
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--child-rss", path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        took = time.perf_counter() - t
        kib, loaded = int(out[0]), int(out[1])
        print(
            f"sqlite open: {loaded} AoRs loaded in {took:.2f} s (incl. interpreter start), "
            f"RSS +{kib / 1024:.1f} MiB = {kib * 1024 / loaded:.0f} bytes per binding"
        )


if __name__ == "__main__":
    main()
