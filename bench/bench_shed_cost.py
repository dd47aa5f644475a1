"""What overload shedding costs, without sockets: a REGISTER through the whole app ring with
shedding off or on (and not overloaded), and a new INVITE refused 503 while overloaded.

    python3 bench/bench_shed_cost.py register off 2000
    python3 bench/bench_shed_cost.py register on 2000
    python3 bench/bench_shed_cost.py shed on 20000
    python3 bench/bench_shed_cost.py shed-register on 20000
    python3 bench/bench_shed_cost.py shed-register held 20000

The app ring is tests/app/harness.py's Rig (the real engine, transaction layer, registrar
and memory store on a fake clock), with the server's own counters (api/metrics.py) and
tags (sipwake/ids.py); a REGISTER is for a new AoR each time. ``shed-register``
refuses such REGISTERs; ``held``: while a call is held for another user, so each one is
also checked for being the wake REGISTER of a held call (its AoR read from the To bytes,
app/engine.py ``_wake_register``). Prints µs per
request (wall clock: noisy on a shared machine). For an A/B immune to other load, count
instructions instead and take the difference between two sizes, which cancels start-up:

    valgrind --tool=callgrind python3 bench/bench_shed_cost.py register on 1000
    valgrind --tool=callgrind python3 bench/bench_shed_cost.py register on 2000
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.app.harness import AOR, DOMAIN, US, Rig, request_bytes, settle

from sipwake.api.metrics import Metrics
from sipwake.ids import new_id
from sipwake.policy.overload import OverloadLimits
from sipwake.transport.flow import Flow


def registers(n: int) -> list[tuple[bytes, Flow]]:
    out = []
    for i in range(n):
        flow = Flow("UDP", US, (f"10.1.{i // 250}.{i % 250 + 1}", 5060))
        data = request_bytes(
            "REGISTER",
            f"sip:{DOMAIN}",
            flow,
            call_id=f"r{i}",
            cseq=1,
            extra=[("Contact", f"<sip:u{i}@{flow.remote[0]}:5060>"), ("Expires", "3600")],
        )
        out.append((data.replace(b"sip:bob@", f"sip:u{i}@".encode()), flow))
    return out


def invites(n: int) -> list[tuple[bytes, Flow]]:
    flow = Flow("UDP", US, ("198.51.100.7", 5070))
    return [(request_bytes("INVITE", AOR, flow, call_id=f"c{i}", cseq=1), flow) for i in range(n)]


class Discard:
    """A sender that only counts."""

    sent = 0

    def send(self, flow: Flow, data: bytes) -> bool:
        self.sent += 1
        return True


async def main(kind: str, mode: str, n: int) -> None:
    rig = Rig()
    if mode == "held":
        await rig.register("iphone")
        await rig.call()  # held: bob's phone pushed
    if mode in ("on", "held"):
        rig.engine.overload = OverloadLimits()
        rig.engine.start()
    # What the server pays per request for its counters and tags (the Rig counts nothing
    # and draws tags from a counter): the real Metrics and sipwake.ids.
    rig.engine.metrics = Metrics()
    rig.engine.tag_source = new_id
    if kind.startswith("shed"):
        rig.engine.udp_delay = lambda: 1.0  # as the transport reports a long queue
        rig.engine.backlog = lambda: 1.0  # (main before the delay signal: the fill)
        rig.engine.sender = Discard()  # the test network parses what it is sent: not here
    msgs = invites(n) if kind == "shed" else registers(n)
    t0 = time.perf_counter()
    for i, (data, flow) in enumerate(msgs):
        rig.engine.on_message(data, flow)
        if i % 50 == 0:
            await asyncio.sleep(0)  # let the handlers' tasks run
    await settle()
    dt = time.perf_counter() - t0
    print(f"{kind} shedding {mode}: {dt / n * 1e6:.1f} us a request, {rig.engine.stats}")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("register", "shed", "shed-register"):
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
