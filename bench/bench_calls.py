"""Calls/s proxied by `sipwake serve` over UDP: INVITE/100/180/200/ACK/BYE/200 via SIPp.

    python3 bench/bench_calls.py [--users 10000] [--storage sqlite|memory]
                                 [--seconds 4] [--rates ...] [--quick]

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
SIPp (both ends) shares the machine's cores with the server: say so next to any figure."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import SippResult, keys, run_sipp, serve, start_uas

from bench.bench_register import CONFIG, DOMAIN, write_users
from bench.sipp_rate import Step, step_search

SCENARIOS = Path(__file__).parent / "scenarios"
RESULTS = Path(__file__).parent / "results"
REGISTER_RATE = 1000  # well under the clean REGISTER rate: set-up must not fail


def sustained_best(steps: list[Step], *, allow_retrans: bool, ratio: float = 0.85) -> int:
    """The highest rate, climbing from the lowest step, that was clean AND actually
    achieved: step_search's "clean" only means nothing failed, and a server that falls
    behind can still finish every call late (SIPp's -l cap then throttles the senders),
    which is not that rate. The 15 % slack covers SIPp's start-up and last responses,
    counted in the elapsed time."""
    best = 0
    for st in steps:
        if not st.clean or (st.retransmissions and not allow_retrans):
            break
        if st.achieved < ratio * st.rate:
            break
        best = st.rate
    return best


def write_callees(path: Path, users: int) -> None:
    """SIPp injection file: each call picks one registered user at random."""
    path.write_text("RANDOM\n" + "".join(f"user{i};\n" for i in range(users)))


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--storage", choices=["sqlite", "memory"], default="sqlite")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each step")
    ap.add_argument("--rates", default="100,200,300,400,500,600,800,1000,1200,1500,2000")
    ap.add_argument("--quick", action="store_true", help="1000 users, 1 s steps, 3 rates")
    args = ap.parse_args()
    users = 1000 if args.quick else args.users
    seconds = 1.0 if args.quick else args.seconds
    rates = [100, 200, 400] if args.quick else [int(r) for r in args.rates.split(",")]

    with tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmpdir:
        tmp = Path(tmpdir)
        url = f"sqlite:///{tmp / 'calls.db'}" if args.storage == "sqlite" else "memory://"
        # -m: far more calls than any run makes; -timeout: the UAS outlives the whole run
        # (it is stopped below), so its global timeout must not end it first.
        uas = start_uas(
            SCENARIOS / "uas_answer_fast.xml",
            calls=100_000_000,
            timeout=3600,
            extra=["-trace_stat", "-stf", str(tmp / "uas.csv"), "-fd", "1"],
        )
        try:
            with serve(CONFIG.format(domain=DOMAIN, url=url), tmp) as server:
                target = server.addr("udp")
                reg_csv = tmp / "register.csv"
                write_users(reg_csv, 0, users, push=False)
                t0 = time.perf_counter()
                reg = run_sipp(
                    SCENARIOS / "register_inf.xml",
                    target,
                    calls=users,
                    rate=REGISTER_RATE,
                    limit=REGISTER_RATE,
                    timeout=users / REGISTER_RATE * 3 + 10,
                    workdir=tmp,
                    extra=["-inf", str(reg_csv), *keys(domain=DOMAIN, contact_port=uas.port)],
                )
                if reg.successful != users:
                    print(reg.output[-3000:])
                    raise SystemExit(f"set-up: {reg.successful}/{users} REGISTERs succeeded")
                print(
                    f"{users} users registered in {time.perf_counter() - t0:.1f} s, contacts "
                    f"at the SIPp UAS on 127.0.0.1:{uas.port}; calls over UDP to sipwake at "
                    f"{target[0]}:{target[1]}, storage {args.storage}"
                )
                callees = tmp / "callees.csv"
                write_callees(callees, users)

                def run(rate: int, calls: int) -> SippResult:
                    # -l at 2 s worth of calls: a call takes milliseconds when the proxy
                    # keeps up, so the cap only bites (and the achieved rate drops) when
                    # it does not.
                    return run_sipp(
                        SCENARIOS / "uac_call_inf.xml",
                        target,
                        calls=calls,
                        rate=rate,
                        limit=rate * 2,
                        timeout=seconds * 4 + 20,
                        workdir=tmp,
                        extra=["-inf", str(callees), *keys(domain=DOMAIN)],
                    )

                _, steps = step_search(run, rates, seconds, allow_retrans=True)
                alive = server.alive()
        finally:
            stop(uas.proc)
        uas_failed = uas_failures(tmp / "uas.csv")

    best = sustained_best(steps, allow_retrans=True)
    strict = sustained_best(steps, allow_retrans=False)
    print(
        f"highest clean rate: {best} calls/s (zero failed calls, >= 85 % of the rate achieved);"
        f" with zero retransmissions too: {strict} calls/s; server alive: {alive}; "
        f"failed calls seen by the UAS: {uas_failed}"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"calls_{args.storage}.json").write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "quick": args.quick,
                "storage": args.storage,
                "users": users,
                "seconds_per_step": seconds,
                "best": best,
                "best_no_retrans": strict,
                "uas_failed": uas_failed,
                "steps": [s.__dict__ for s in steps],
            },
            indent=2,
        )
    )
    return 0


def uas_failures(stat_file: Path) -> int | None:
    """FailedCall(C) from the UAS's last statistics row (-trace_stat -fd 1), if any."""
    if not stat_file.exists():
        return None
    rows = stat_file.read_text().splitlines()
    if len(rows) < 2:
        return None
    col = dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False))
    return int(col.get("FailedCall(C)", 0) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
