"""Password guessing against digest auth: what an attacker with many addresses gets
through, and whether unknown users answer as fast as known ones.

    python3 bench/bench_guessing.py [--addresses 30] [--seconds 20]

1. ``--addresses`` loopback addresses (127.0.1.1 ...) guess one account's 4-digit
   password as fast as they can for ``--seconds``, each guess a full digest exchange
   (REGISTER, 401, REGISTER with credentials), with the defaults max_failures = 10 per
   failure_window = 60 s. Reported: attempts/s made, and guesses/s *checked* (answered
   403 Forbidden rather than 403 Too Many Failed Attempts, or 200).
2. The time to the 403 for a wrong password, known user vs unknown user (budgets raised
   so nothing is refused unchecked), median of ``--samples`` each: unknown users must not
   answer faster (the server checks a decoy digest for them).
Bounded in time; loopback only."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import loopback_config, serve, write_config
from tests.e2e.probe import Prober, add_user

from bench import rig


def server_config(tmp: Path, extra: str = "") -> str:
    return loopback_config(
        domains=(rig.DOMAIN,),
        log_level="warning",
        storage=f"sqlite:///{tmp}/users.db",
        extra=f'[auth]\nalgorithms = ["MD5"]\n{extra}',
    )


def guessing(addresses: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmpdir:
        tmp = Path(tmpdir)
        text = server_config(tmp)
        add_user(write_config(tmp / "sipwake.toml", text), "alice", "7391")
        with serve(text, tmp) as server:
            counts = {"attempts": 0, "checked": 0, "found": 0}
            lock = threading.Lock()
            stop = time.monotonic() + seconds

            def attacker(i: int) -> None:
                with Prober(server.addr("udp"), f"127.0.1.{i + 1}") as p:
                    n = i
                    while time.monotonic() < stop:
                        a = p.register("alice", rig.DOMAIN, password=f"{n % 10000:04d}")
                        n += addresses
                        with lock:
                            counts["attempts"] += 1
                            if a.status == 200:
                                counts["found"] += 1
                            if a.reason != "Too Many Failed Attempts":
                                counts["checked"] += 1

            threads = [threading.Thread(target=attacker, args=(i,)) for i in range(addresses)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    return {
        "addresses": addresses,
        "seconds": seconds,
        "attempts_per_s": round(counts["attempts"] / seconds, 1),
        "checked": counts["checked"],
        "checked_per_s": round(counts["checked"] / seconds, 3),
        "found": counts["found"],
    }


def timing(samples: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="sipwake-bench-") as tmpdir:
        tmp = Path(tmpdir)
        text = server_config(tmp, "max_failures = 1000000\n")
        add_user(write_config(tmp / "sipwake.toml", text), "alice", "7391")
        with serve(text, tmp) as server, Prober(server.addr("udp")) as p:
            times: dict[str, list[float]] = {"known": [], "unknown": []}
            for i in range(samples):
                for kind, user in (("known", "alice"), ("unknown", f"ghost{i}")):
                    nonce = p.register(user, rig.DOMAIN).nonce()
                    t0 = time.perf_counter()
                    a = p.register(user, rig.DOMAIN, password="0000", nonce=nonce)
                    times[kind].append(time.perf_counter() - t0)
                    assert a.status == 403, a.status
    known = statistics.median(times["known"]) * 1e6
    unknown = statistics.median(times["unknown"]) * 1e6
    return {"samples": samples, "known_us": round(known), "unknown_us": round(unknown)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addresses", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--samples", type=int, default=500)
    args = ap.parse_args()
    g = guessing(args.addresses, args.seconds)
    print(
        f"{g['addresses']} addresses, {g['seconds']:.0f} s: {g['attempts_per_s']} attempts/s, "
        f"{g['checked']} guesses checked ({g['checked_per_s']}/s), password found: "
        f"{bool(g['found'])}"
    )
    t = timing(args.samples)
    print(
        f"403 for a wrong password, median of {t['samples']}: known user {t['known_us']} µs, "
        f"unknown user {t['unknown_us']} µs (round trip over loopback)"
    )
    rig.write_result("guessing", {"guessing": g, "timing": t})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
