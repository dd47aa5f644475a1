"""Push-woken calls/s through `sipwake serve` over UDP, end to end: SIPp caller -> sipwake
holds the INVITE and pushes -> APNs emulator -> wake relay -> wake REGISTER -> sipwake
delivers the held INVITE -> SIPp UAS answers.

    python3 bench/bench_push_calls.py [--users 10000] [--storage sqlite|memory|redis://...]
                                      [--workers N] [--seconds 4] [--rates ...]
                                      [--delay 0.05] [--quick]

Set-up: ``--users`` AoRs registered through the server by SIPp the way a sleeping iOS app
registers (bench/scenarios/register_push_inf.xml: RFC 8599 pn-provider/pn-param/pn-prid
in the Contact URI, a unique 64-hex token per user, +sip.instance, reg-id, 7-day
expiry), their Contacts at one SIPp UAS (scenarios/uas_answer_fast.xml). UDP bindings
are always pushed (app/wake.py ``sleeping``), so every call is held and pushed.
`sipwake emulate apns` checks each push (HTTP/2, ES256 JWT) and forwards it to
bench/wake_relay.py, which ``--delay`` later sends that device's wake REGISTER (same
instance and push parameters, Contact at the UAS) -- RFC 8599 §5.3.2's wake-up.

Then a SIPp UAC (scenarios/uac_push_call_inf.xml) calls a RANDOM user per call at
stepped rates: INVITE, 100, 110 Push sent, 180, 200, ACK, BYE, 200. Per call the server
handles the caller's 3 requests, one push over HTTP/2, one REGISTER (a store write) and
the forwarded INVITE/ACK/BYE with their responses.

Reported: the highest rate with zero failed calls that was also achieved (>= 85 %, see
rig.sustained_best), the same with zero retransmissions, per step the retransmissions
and achieved rate, the relay's counters (pushes in, REGISTERs out, 200s back) and the
failed calls seen by the UAS. The set-up is bench/rig.py's, shared with the other SIPp
benchmarks. The emulator, the relay and both SIPps share the machine's cores with the
server: say so next to any figure."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import ApnsEmulator, SippResult, apns_emulator, free_port

from bench import rig
from bench.rig import BUNDLE_ID
from bench.sipp_rate import step_search
from bench.wake_relay import get_stats

RESULTS = rig.RESULTS


def server_config(emu: ApnsEmulator, url: str, *, workers: int = 1) -> str:
    """One UDP listener, no digest auth (the push path, not the challenge round trip),
    the API on (push payloads carry a signed decline link, as in production), and one
    [[push.apns]] entry pointing at the emulator."""
    return rig.sipwake_config(url, workers=workers, push=emu.config(BUNDLE_ID))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--storage", default="sqlite", help="sqlite, memory or a redis:// URL")
    ap.add_argument("--workers", type=int, default=1, help="sipwake serve --workers N")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each step")
    ap.add_argument("--rates", default="100,200,300,400,500,600,800,1000,1200,1500,2000")
    ap.add_argument("--delay", type=float, default=0.05, help="push -> wake REGISTER, s")
    ap.add_argument("--quick", action="store_true", help="1000 users, 1 s steps, 3 rates")
    args = ap.parse_args()
    users = 1000 if args.quick else args.users
    seconds = 1.0 if args.quick else args.seconds
    rates = [50, 100, 200] if args.quick else [int(r) for r in args.rates.split(",")]
    label = rig.storage_label(args.storage)

    relay_stats: list[dict[str, int]] = []
    relay_port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmpdir,
        rig.storage(args.storage, Path(tmpdir) / "push.db") as url,
    ):
        tmp = Path(tmpdir)
        with (
            rig.uas(tmp) as uas,
            apns_emulator("--forward-url", f"http://127.0.0.1:{relay_port}/") as emu,
            rig.sipwake(
                tmp,
                server_config(emu, url, workers=args.workers),
                workers=args.workers,
            ) as server,
            rig.relay(
                server.addr("udp"),
                users,
                uas.port,
                delay=args.delay,
                port=relay_port,
                sockets=rig.relay_sockets(args.workers),
            ),
        ):
            target = server.addr("udp")
            rig.register_users(tmp, target, start=0, count=users, contact_port=uas.port, push=True)
            print(
                f"{users} push users registered (APNs tokens, asleep), contacts at the "
                f"SIPp UAS on 127.0.0.1:{uas.port}; calls over UDP to sipwake at "
                f"{target[0]}:{target[1]} ({args.workers} process(es)), storage {label}, "
                f"wake REGISTER {args.delay * 1000:.0f} ms after each push"
            )
            callees = tmp / "callees.csv"
            rig.write_callees(callees, 0, users)
            call = rig.call_steps(
                "uac_push_call_inf.xml",
                target,
                callees,
                seconds,
                tmp,
                transport=rig.sipp_transport(args.workers),
            )

            def run(rate: int, calls: int) -> SippResult:
                res = call(rate, calls)
                relay_stats.append(get_stats(relay_port))
                print(f"    relay so far: {relay_stats[-1]}")
                return res

            _, steps = step_search(run, rates, seconds, allow_retrans=True)
            alive = server.alive()
        uas_failed = rig.uas_failures(tmp)

    best = rig.sustained_best(steps, allow_retrans=True)
    strict = rig.sustained_best(steps, allow_retrans=False)
    print()
    print(f"{'rate/s':>7} {'calls':>7} {'ok':>7} {'failed':>6} {'retrans':>7} {'achieved/s':>10}")
    for s in steps:
        print(
            f"{s.rate:>7} {s.calls:>7} {s.successful:>7} {s.failed:>6} "
            f"{s.retransmissions:>7} {s.achieved:>10.0f}"
        )
    print(
        f"highest clean rate: {best} push-woken calls/s (zero failed calls, >= 85 % of the "
        f"rate achieved); with zero retransmissions too: {strict} calls/s; server alive: "
        f"{alive}; failed calls seen by the UAS: {uas_failed}; relay: "
        f"{relay_stats[-1] if relay_stats else {}}"
    )
    rig.write_result(
        f"push_calls_{label}",
        {
            "quick": args.quick,
            "storage": label,
            "workers": args.workers,
            "users": users,
            "wake_delay_s": args.delay,
            "seconds_per_step": seconds,
            "best": best,
            "best_no_retrans": strict,
            "uas_failed": uas_failed,
            "steps": [s.__dict__ for s in steps],
            "relay_after_step": relay_stats,
        },
        workers=args.workers,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
