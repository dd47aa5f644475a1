"""Server RSS with many TCP connections open: ``--connections`` clients (default 10,000),
each sending one OPTIONS and reading its 200, then staying connected (idle, as a phone
with its registration flow).

    python3 bench/bench_connections.py [--connections 10000]

The clients come from 100 loopback addresses (127.0.1.1 ...) so that
sip.max_connections_per_ip (default 500) is not what is measured; sip.max_connections is
raised above the count. Reported: RSS before, with all open, the increase per connection,
and how long opening them took. Needs a file-descriptor limit above the count in both
processes (ulimit -n)."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import RunningServer, loopback_config, serve

from bench import rig

ADDRESSES = 100


def rss_mb(server: RunningServer) -> float:
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def options(n: int, local: tuple[str, int]) -> bytes:
    return (
        f"OPTIONS sip:{rig.DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {local[0]}:{local[1]};branch=z9hG4bKconn{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:c{n}@{rig.DOMAIN}>;tag={n}\r\n"
        f"To: <sip:{rig.DOMAIN}>\r\n"
        f"Call-ID: conn-{n}@bench\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def open_all(
    target: tuple[str, int], count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    sem = asyncio.Semaphore(200)  # dial in waves: the listen backlog is finite

    async def one(n: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        source = f"127.0.1.{1 + n % ADDRESSES}"
        async with sem:
            reader, writer = await asyncio.open_connection(*target, local_addr=(source, 0))
            writer.write(options(n, writer.get_extra_info("sockname")))
            line = await asyncio.wait_for(reader.readline(), 30)
            if not line.startswith(b"SIP/2.0 200"):
                raise RuntimeError(f"connection {n}: {line!r}")
            return reader, writer

    return list(await asyncio.gather(*(one(n) for n in range(count))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=10_000)
    args = ap.parse_args()
    config = loopback_config(
        domains=(rig.DOMAIN,),
        log_level="warning",
        extra=f"[auth]\nenabled = false\n[sip]\nmax_connections = {args.connections + 100}\n",
    )
    with (
        tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmpdir,
        serve(config, Path(tmpdir)) as server,
    ):
        target = server.addr("tcp")
        time.sleep(1.0)
        before = rss_mb(server)

        async def run() -> tuple[float, float]:
            t0 = time.monotonic()
            conns = await open_all(target, args.connections)
            took = time.monotonic() - t0
            await asyncio.sleep(2.0)
            during = rss_mb(server)
            for _, writer in conns:
                writer.close()
            return took, during

        took, during = asyncio.run(run())
        alive = server.alive()
    per_conn_kb = (during - before) * 1024 / args.connections
    print(
        f"{args.connections} TCP connections open (each sent one OPTIONS, got 200) in "
        f"{took:.1f} s; RSS {before:.1f} MB before, {during:.1f} MB with all open "
        f"(+{per_conn_kb:.1f} KB per connection); server alive: {alive}"
    )
    rig.write_result(
        "connections",
        {
            "connections": args.connections,
            "rss_mb_before": round(before, 1),
            "rss_mb_open": round(during, 1),
            "kb_per_connection": round(per_conn_kb, 2),
            "open_seconds": round(took, 1),
            "alive": alive,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
