"""Smoke test of the Kamailio side of the side-by-side benchmarks (bench/kamailio_sut.py):
each scenario of bench_calls.py and bench_push_calls.py, run against Kamailio with SIPp.

    python3 bench/kamailio_check.py [--users 100] [--calls 50] [--children 4]
                                    [--rates 200,500,1000,2000 --seconds 3]

registrar mode (bench/kamailio/registrar.cfg): ``--users`` AoRs registered through Kamailio
(scenarios/register_inf.xml), their Contacts at one SIPp UAS (scenarios/uas_answer_fast.xml),
then ``--calls`` calls to RANDOM users (scenarios/uac_call_inf.xml: INVITE..BYE, ACK and BYE
through Kamailio's Record-Route).

push mode (bench/kamailio/push.cfg): the users registered as sleeping iOS apps
(scenarios/register_push_inf.xml, RFC 8599 pn-* Contact parameters), bench/wake_relay.py as
in bench_push_calls.py but POSTed to by Kamailio's http_client directly (no APNs emulator:
Kamailio has no HTTP/2 APNs client), and ``--calls`` push-woken calls
(scenarios/uac_push_call_inf.xml): every INVITE is held, pushed, and delivered to the
device's new Contact after its wake REGISTER.

Checked per mode: every REGISTER and every call succeeded; the UAS saw exactly one call per
call made and no failed one (a second branch of a call reaching it would be an unexpected
INVITE there, i.e. a failed call); push mode: one push per call, answered by one wake
REGISTER with its 200; no ERROR in Kamailio's log. Exits 1 if any check fails.

``--rates`` then runs sipp_rate.step_search in each mode (calls to RANDOM registered users,
``--seconds`` per step) and prints the clean rates as the benchmarks define them
(rig.sustained_best). Indicative only: SIPp, the relay and Kamailio share the machine."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import SippResult, free_port

from bench import rig
from bench.kamailio_sut import CHILDREN, installed, kamailio, version
from bench.sipp_rate import Step, step_search
from bench.wake_relay import get_stats

SCENARIO = {"registrar": "uac_call_inf.xml", "push": "uac_push_call_inf.xml"}
WAKE_DELAY = 0.05  # s from push to wake REGISTER, as bench_push_calls.py's default
CALL_RATE = 50  # calls/s of the smoke test: far below any limit


def uas_created(tmp: Path) -> int:
    """TotalCallCreated from the UAS's last statistics row (rig.uas writes tmp/uas.csv):
    the number of distinct calls (Call-IDs) that reached it."""
    rows = (tmp / "uas.csv").read_text().splitlines()
    col = dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False))
    return int(col["TotalCallCreated"])


def log_errors(log: Path) -> list[str]:
    """Lines of Kamailio's log at error level or worse (debug=-1 logs nothing else once
    it runs)."""
    bad = (" ERROR: ", " CRITICAL: ", " BUG: ", " ALERT: ")
    return [line for line in log.read_text().splitlines() if any(b in line for b in bad)]


def run_mode(
    mode: str, *, users: int, calls: int, children: int, rates: list[int], seconds: float
) -> tuple[list[str], list[Step]]:
    """One Kamailio in ``mode``: set-up, the smoke calls, then the rate steps. Returns the
    failed checks and the steps."""
    failures: list[str] = []
    steps: list[Step] = []
    push = mode == "push"
    port = free_port()
    relay_port = free_port()
    target = ("127.0.0.1", port)
    with tempfile.TemporaryDirectory(prefix="kamailio-check-") as tmpdir:
        tmp = Path(tmpdir)
        with contextlib.ExitStack() as stack:
            uas = stack.enter_context(rig.uas(tmp))
            k = stack.enter_context(
                kamailio(
                    "push" if push else "registrar",
                    port=port,
                    push_url=f"http://127.0.0.1:{relay_port}/" if push else "",
                    children=children,
                )
            )
            if push:
                stack.enter_context(
                    rig.relay(target, users, uas.port, delay=WAKE_DELAY, port=relay_port)
                )
            took = rig.register_users(
                tmp, target, start=0, count=users, contact_port=uas.port, push=push
            )
            print(
                f"{mode}: Kamailio on udp 127.0.0.1:{port}, {len(k.pids())} processes "
                f"({children} UDP workers); {users} {'push ' if push else ''}REGISTERs ok "
                f"in {took:.1f} s, Contacts at the SIPp UAS on 127.0.0.1:{uas.port}"
            )
            callees = tmp / "callees.csv"
            rig.write_callees(callees, 0, users)
            run = rig.call_steps(SCENARIO[mode], target, callees, calls / CALL_RATE, tmp)
            res = run(CALL_RATE, calls)
            print(
                f"  {calls} calls at {CALL_RATE}/s: {res.successful} successful, "
                f"{res.failed} failed, {res.retransmissions} retransmissions"
            )
            if res.successful != calls or res.failed:
                failures.append(f"{mode}: {res.successful}/{calls} calls succeeded")
                print(res.output[-2000:])
            if push:
                stats = get_stats(relay_port)
                print(f"  relay: {stats}")
                if not (
                    stats["pushes"] == stats["registers"] == stats["ok"] == calls
                    and stats["unknown_tokens"] == stats["other"] == 0
                ):
                    failures.append(f"{mode}: relay counters {stats}, expected {calls} each")
            # The UAS writes its statistics once a second (-fd 1): let the last row cover
            # the last call before reading it.
            time.sleep(1.5)
            created, failed = uas_created(tmp), rig.uas_failures(tmp)
            print(f"  UAS: {created} calls reached it, {failed} failed")
            if created != calls or failed:
                failures.append(f"{mode}: UAS saw {created} calls ({failed} failed), not {calls}")
            errors = log_errors(k.log)
            if errors:
                failures.append(f"{mode}: {len(errors)} errors in Kamailio's log")
                print("\n".join(errors[:20]))

            if rates:
                print(f"  stepped rates, {seconds:g} s each:")

                run_rates = rig.call_steps(SCENARIO[mode], target, callees, seconds, tmp)

                def step(rate: int, n: int) -> SippResult:
                    out = run_rates(rate, n)
                    if push:
                        print(f"    relay so far: {get_stats(relay_port)}")
                    return out

                _, steps = step_search(step, rates, seconds, allow_retrans=True)
                print(
                    f"  {mode}: clean rate {rig.sustained_best(steps, allow_retrans=True)}"
                    f" calls/s (zero failed calls, >= 85 % achieved), with zero "
                    f"retransmissions too: {rig.sustained_best(steps, allow_retrans=False)}"
                    f" calls/s; Kamailio alive: {k.alive()}; UAS failed calls so far: "
                    f"{rig.uas_failures(tmp)}"
                )
    return failures, steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--children", type=int, default=CHILDREN, help="Kamailio UDP workers")
    ap.add_argument("--modes", default="registrar,push")
    ap.add_argument("--rates", default="", help="e.g. 200,500,1000,2000 (calls/s)")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each rate step")
    args = ap.parse_args()
    if not installed():
        print("Kamailio is not installed: python3 -c 'import bench.kamailio_sut as k; k.install()'")
        return 2
    rates = [int(r) for r in args.rates.split(",")] if args.rates else []
    print(version())
    failures: list[str] = []
    for mode in args.modes.split(","):
        failed, _ = run_mode(
            mode,
            users=args.users,
            calls=args.calls,
            children=args.children,
            rates=rates,
            seconds=args.seconds,
        )
        failures += failed
    print("\n".join(["FAILED:", *failures]) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
