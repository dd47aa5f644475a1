"""Memory and disk per stored binding in the embedded SQLite store.

    python3 bench/bench_bindings_memory.py [--sizes 100000,1000000] [--quick]

For each size N: write N realistic push bindings (one AoR each: RFC 8599 APNs target,
+sip.instance with reg-id, a TCP flow, a 7-day expiry) straight into a fresh database,
then open it with ``SQLiteStore.open`` in a fresh subprocess -- the store loads every
binding into a dict at open (storage/sqlite.py) -- and read that process's VmRSS from
/proc. Reports the RSS growth per binding (the interpreter and imports are measured
before the open and subtracted) and the database file size per binding.

Also the fast way to pre-fill a store for other benchmarks: ``fill_sqlite()`` writes
bindings in one transaction with ``executemany`` in the exact row format the store
uses (``encode_bindings``), about 1 M bindings in well under a minute.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipwake.policy.bindings import Binding, FlowRef, PushTarget
from sipwake.storage.codec import encode_bindings
from sipwake.storage.sqlite import SQLiteStore

RESULTS = Path(__file__).parent / "results"
WEEK = 7 * 86400.0


def push_binding(aor: str, i: int, now: float) -> Binding:
    """A binding as the registrar stores it for an iOS app registering over TCP with
    RFC 8599 parameters in the Contact URI, +sip.instance and reg-id (RFC 5626)."""
    host = f"198.51.{(i >> 8) % 256}.{i % 256}"
    port = 1024 + i % 60000
    token = f"{i * 2654435761 % (1 << 64):016x}" * 4  # 64 hex digits, like an APNs token
    user = aor[4 : aor.index("@")]
    return Binding(
        aor=aor,
        contact=(
            f"sip:{user}@{host}:{port};transport=tcp;ob;pn-provider=apns"
            f";pn-param=ABCDE12345.com.example.app.voip;pn-prid={token}"
        ),
        expires_at=now + WEEK,
        call_id=f"{i:08x}-4f2a-9b1c-reg@{host}",
        cseq=1 + i % 50,
        instance=f"urn:uuid:{i:08x}-7dec-11d0-a765-00a0c91e6bf6",
        reg_id=1,
        flow=FlowRef("TCP", host, port, "10.0.0.1", 5060, i + 1, ""),
        push=PushTarget("apns", token, "ABCDE12345.com.example.app.voip"),
        user_agent="ExampleApp/2.3 iOS/17.4",
        registered_at=now,
    )


def fill_sqlite(
    path: Path, n: int, *, now: float, domain: str = "example.com", prefix: str = "user"
) -> float:
    """Create (or extend) the database at ``path`` with ``n`` AoRs
    ``sip:{prefix}{i}@{domain}``, one push binding each; returns the seconds taken.

    The schema comes from ``SQLiteStore.open`` (its migrations), then rows go in through a
    plain connection: one transaction, ``synchronous=OFF`` (a half-written benchmark file
    is simply rebuilt), ``executemany`` over a generator so nothing is held in memory.
    The WAL is checkpointed at the end so the file size is the steady-state one."""
    t0 = time.perf_counter()
    SQLiteStore.open(path)._conn.close()  # create + migrate, nothing to load yet

    def rows() -> Iterator[tuple[str, bytes, float]]:
        for i in range(n):
            aor = f"sip:{prefix}{i}@{domain}"
            b = push_binding(aor, i, now)
            yield aor, encode_bindings([b]), b.expires_at

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO bindings (aor, data, expires_at) VALUES (?, ?, ?)", rows())
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - t0


def vm_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(path: str) -> None:
    """Subprocess mode: print JSON with the RSS before and after loading the store."""
    before = vm_rss_kib()  # interpreter + sipwake imports: not the bindings' cost
    t0 = time.perf_counter()
    store = SQLiteStore.open(path)
    load = time.perf_counter() - t0
    after = vm_rss_kib()
    count = len(store._bindings)
    print(
        json.dumps({"rss_before_kib": before, "rss_after_kib": after, "aors": count, "load": load})
    )


def measure(n: int, tmp: Path) -> dict[str, float]:
    path = tmp / f"bindings-{n}.db"
    fill = fill_sqlite(path, n, now=time.time())
    size = path.stat().st_size
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    r = json.loads(out)
    if r["aors"] != n:
        raise RuntimeError(f"loaded {r['aors']} AoRs, wrote {n}")
    grown = (r["rss_after_kib"] - r["rss_before_kib"]) * 1024
    path.unlink()
    return {
        "bindings": n,
        "fill_s": round(fill, 2),
        "load_s": round(r["load"], 2),
        "rss_total_mib": round(r["rss_after_kib"] / 1024, 1),
        "rss_bytes_per_binding": round(grown / n),
        "file_mb": round(size / 1e6, 1),
        "file_bytes_per_binding": round(size / n),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated binding counts")
    ap.add_argument("--quick", action="store_true", help="sizes 10000,50000 (a few seconds)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return 0
    sizes = [10_000, 50_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    print(f"SQLite store, one RFC 8599 push binding per AoR, Python {sys.version.split()[0]}")
    header = (
        f"{'bindings':>10} {'fill s':>7} {'load s':>7} {'RSS MiB':>8} {'RSS B/bind':>11}"
        f" {'file MB':>8} {'file B/bind':>12}"
    )
    print(header)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmp:
        for n in sizes:
            r = measure(n, Path(tmp))
            rows.append(r)
            print(
                f"{r['bindings']:>10} {r['fill_s']:>7.1f} {r['load_s']:>7.1f}"
                f" {r['rss_total_mib']:>8.1f} {r['rss_bytes_per_binding']:>11}"
                f" {r['file_mb']:>8.1f} {r['file_bytes_per_binding']:>12}"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bindings_memory.json").write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "quick": args.quick,
                "python": sys.version.split()[0],
                "rows": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
