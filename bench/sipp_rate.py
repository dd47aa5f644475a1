"""Shared stepped-rate search for SIPp benchmarks: the highest rate with zero failed calls
(and, optionally, zero retransmissions)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.harness import SippResult


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    achieved: float  # successful calls / elapsed seconds

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.successful == self.calls


def step_search(
    run: Callable[[int, int], SippResult],
    rates: list[int],
    seconds: float,
    *,
    allow_retrans: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[int, list[Step]]:
    """Run ``run(rate, calls)`` at each rate until the first unclean step."""
    best = 0
    steps: list[Step] = []
    for rate in rates:
        calls = int(rate * seconds)
        res = run(rate, calls)
        st = Step(
            rate,
            calls,
            res.successful,
            res.failed,
            res.retransmissions,
            res.successful / res.elapsed if res.elapsed else 0.0,
        )
        steps.append(st)
        ok = st.clean and (allow_retrans or st.retransmissions == 0)
        log(
            f"  rate {rate:>6}/s  calls {calls:>7}  ok {st.successful:>7}  failed {st.failed:>5}"
            f"  retrans {st.retransmissions:>5}  achieved {st.achieved:8.0f}/s  "
            f"{'clean' if ok else 'NOT CLEAN'}"
        )
        if not ok:
            break
        best = rate
    return best, steps
