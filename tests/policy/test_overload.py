"""When to shed load: the bounds and which requests may be refused."""

from __future__ import annotations

import pytest

from sipwake.policy.overload import (
    SHED_TAG_PREFIX,
    OverloadLimits,
    StandingLag,
    shed_ack,
    sheddable,
)


@pytest.mark.parametrize("method", ["INVITE", "REGISTER", "MESSAGE", "SUBSCRIBE", "PUBLISH"])
def test_new_work_is_sheddable(method: str) -> None:
    assert sheddable(method, None)
    assert not sheddable(method, "abc")  # in-dialog: its call is already paid for


@pytest.mark.parametrize("method", ["ACK", "CANCEL", "BYE", "OPTIONS", "PRACK", "UPDATE"])
def test_the_rest_keeps_flowing(method: str) -> None:
    assert not sheddable(method, None)


def test_bounds() -> None:
    limits = OverloadLimits(max_pending=10, max_held=5, max_lag=0.2)
    assert limits.reason(pending=9, held=0, lag=0.0) is None
    assert "max_pending" in str(limits.reason(pending=10, held=0, lag=0.0))
    # held calls count in their own bound, not in max_pending
    assert limits.reason(pending=13, held=4, lag=0.0) is None
    assert "max_held_calls" in str(limits.reason(pending=13, held=5, lag=0.0))
    assert "late" in str(limits.reason(pending=0, held=0, lag=0.21))
    assert limits.reason(pending=0, held=0, lag=0.2) is None


def test_udp_backlog_bound() -> None:
    limits = OverloadLimits(max_backlog=0.05)
    assert limits.reason(pending=0, held=0, lag=0.0, backlog=0.05) is None
    assert "receive queue" in str(limits.reason(pending=0, held=0, lag=0.0, backlog=0.06))


def test_udp_delay_bound() -> None:
    limits = OverloadLimits(max_delay=0.1)
    assert limits.reason(pending=0, held=0, lag=0.0, delay=0.1) is None
    why = str(limits.reason(pending=0, held=0, lag=0.0, delay=0.12))
    assert "waited 120 ms" in why and "max_udp_delay" in why


@pytest.mark.parametrize(
    ("method", "to_tag", "ack"),
    [
        ("ACK", SHED_TAG_PREFIX + "abc", True),
        ("ACK", "abc", False),  # the ACK of a dialog: routed
        ("ACK", None, False),
        ("INVITE", SHED_TAG_PREFIX + "abc", False),
    ],
)
def test_the_ack_of_a_503_we_shed(method: str, to_tag: str | None, ack: bool) -> None:
    assert shed_ack(method, to_tag) is ack


def test_one_stall_is_not_a_standing_lag() -> None:
    # A single late tick (a GC pause, the process descheduled) must not shed the next
    # REGISTER; a loop late on every recent tick is saturated.
    lag = StandingLag(window=4)
    assert lag.sample(2.0) == 0.0  # too soon to tell: the first tick measures start-up
    assert [lag.sample(x) for x in (0.0, 0.3, 0.3, 0.3)] == [0.0, 0.0, 0.0, 0.0]
    assert lag.sample(0.4) == 0.3  # four late ticks in a row: standing
