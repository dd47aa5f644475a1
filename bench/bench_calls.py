"""Calls/s proxied by `sipwake serve` over UDP: INVITE/100/180/200/ACK/BYE/200 via SIPp.

    python3 bench/bench_calls.py [--users 10000] [--storage sqlite|memory|redis://...]
                                 [--workers N] [--seconds 4] [--rates ...] [--quick]

Set-up: one SIPp UAS in server mode (bench/scenarios/uas_answer_fast.xml: 180 and 200 at
once, then ACK, BYE/200) and ``--users`` AoRs registered through the server, all with
their Contact at that UAS's port. Then a SIPp UAC calls a RANDOM registered user per call
(-inf CSV) at stepped rates: each call is a lookup, a forked INVITE client transaction,
Record-Route (so ACK and BYE come through the proxy too, RFC 3261 §16.6 step 4, §16.12)
and a BYE transaction -- 7 messages in and 7 out per call at the proxy.

The search stops at the first step with a failed or unfinished call. Reported: the
highest rate with zero failed calls that was also achieved (>= 85 %: a proxy that falls
behind finishes calls late rather than failing them), the same with zero
retransmissions too, and per step the retransmissions and the achieved rate.
The set-up (bench/rig.py) is shared with the other SIPp benchmarks and compare.py.
SIPp (both ends) shares the machine's cores with the server: say so next to any figure."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import rig
from bench.sipp_rate import step_search

RESULTS = rig.RESULTS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--storage", default="sqlite", help="sqlite, memory or a redis:// URL")
    ap.add_argument("--workers", type=int, default=1, help="sipwake serve --workers N")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each step")
    ap.add_argument("--rates", default="100,200,300,400,500,600,800,1000,1200,1500,2000")
    ap.add_argument("--quick", action="store_true", help="1000 users, 1 s steps, 3 rates")
    args = ap.parse_args()
    users = 1000 if args.quick else args.users
    seconds = 1.0 if args.quick else args.seconds
    rates = [100, 200, 400] if args.quick else [int(r) for r in args.rates.split(",")]
    label = rig.storage_label(args.storage)

    with (
        tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmpdir,
        rig.storage(args.storage, Path(tmpdir) / "calls.db") as url,
    ):
        tmp = Path(tmpdir)
        with (
            rig.uas(tmp) as uas,
            rig.sipwake(
                tmp,
                rig.sipwake_config(url, workers=args.workers),
                workers=args.workers,
            ) as server,
        ):
            target = server.addr("udp")
            took = rig.register_users(
                tmp, target, start=0, count=users, contact_port=uas.port, push=False
            )
            print(
                f"{users} users registered in {took:.1f} s, contacts at the SIPp UAS on "
                f"127.0.0.1:{uas.port}; calls over UDP to sipwake at {target[0]}:{target[1]} "
                f"({args.workers} process(es)), storage {label}"
            )
            callees = tmp / "callees.csv"
            rig.write_callees(callees, 0, users)
            run = rig.call_steps(
                "uac_call_inf.xml",
                target,
                callees,
                seconds,
                tmp,
                transport=rig.sipp_transport(args.workers),
            )
            _, steps = step_search(run, rates, seconds, allow_retrans=True)
            alive = server.alive()
        uas_failed = rig.uas_failures(tmp)

    best = rig.sustained_best(steps, allow_retrans=True)
    strict = rig.sustained_best(steps, allow_retrans=False)
    print(
        f"highest clean rate: {best} calls/s (zero failed calls, >= 85 % of the rate achieved);"
        f" with zero retransmissions too: {strict} calls/s; server alive: {alive}; "
        f"failed calls seen by the UAS: {uas_failed}"
    )
    rig.write_result(
        f"calls_{label}",
        {
            "quick": args.quick,
            "storage": label,
            "workers": args.workers,
            "users": users,
            "seconds_per_step": seconds,
            "best": best,
            "best_no_retrans": strict,
            "uas_failed": uas_failed,
            "steps": [s.__dict__ for s in steps],
        },
        workers=args.workers,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
