"""OPTIONS/s answered by `sipwake serve` over UDP, driven by SIPp on loopback.

    python3 bench/bench_options.py [--seconds 5] [--rates 2000,4000,...]

Prints the highest SIPp rate with zero failed transactions and zero retransmissions.
SIPp shares the machine's cores with the server: say so next to the figure."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import run_sipp, serve

from bench.sipp_rate import step_search

CONFIG = """
[server]
log_level = "warning"
[[listen]]
transport = "udp"
host = "127.0.0.1"
port = 0
[api]
port = 0
[storage]
url = "memory://"
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rates", default="2000,4000,6000,8000,10000,12000,14000,16000,20000")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp, serve(CONFIG, Path(tmp)) as server:
        target = server.addr("udp")
        print(f"OPTIONS over UDP to sipwake at {target[0]}:{target[1]}")

        def run(rate: int, calls: int):  # type: ignore[no-untyped-def]
            return run_sipp(
                "options.xml",
                target,
                calls=calls,
                rate=rate,
                limit=rate,
                timeout=args.seconds * 4 + 10,
                workdir=Path(tmp),
            )

        best, steps = step_search(run, rates, args.seconds, allow_retrans=False)
    print(f"highest clean rate: {best} OPTIONS/s")
    out = Path(__file__).parent / "results" / "options.json"
    out.write_text(
        json.dumps(
            {"date": time.strftime("%Y-%m-%d"), "best": best, "steps": [s.__dict__ for s in steps]},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
