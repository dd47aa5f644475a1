"""The device table of a held call, and why a call ended as a late device is told."""

from __future__ import annotations

import pytest

from sipwake.policy.parking import (
    DeviceState,
    DeviceTable,
    HeldState,
    end_reason,
    ended_state,
)


def table(*devices: str) -> DeviceTable:
    t = DeviceTable()
    for d in devices:
        t.pushing(d)
    return t


def test_push_outcomes_stop_the_wait_once() -> None:
    t = table("a", "b")
    assert t.push_result("a", DeviceState.REJECTED)
    assert not t.push_result("a", DeviceState.FAILED)  # only once
    assert t.push_result("b", DeviceState.PUSHED) is False  # delivered: still awaited
    assert t.waiting() == 1


def test_decline_only_by_a_device_still_awaited() -> None:
    t = table("a")
    assert not t.decline("stranger")
    assert t.decline("a")
    assert not t.decline("a")
    assert t.get("a") is DeviceState.DECLINED


@pytest.mark.parametrize(
    ("state", "owed"),
    [
        (DeviceState.PUSHING, True),
        (DeviceState.PUSHED, True),
        (DeviceState.FAILED, False),
        (DeviceState.REJECTED, False),
        (DeviceState.JOINED, False),
        (DeviceState.DECLINED, False),
    ],
)
def test_owed_the_ended_call(state: DeviceState, owed: bool) -> None:
    t = table("a")
    t.states["a"] = state
    assert t.owed("a") is owed
    assert not t.owed("never-pushed")


@pytest.mark.parametrize(
    ("status", "state", "reason"),
    [
        (200, HeldState.ANSWERED, 'SIP;cause=200;text="Call completed elsewhere"'),
        (487, HeldState.CANCELLED, 'SIP;cause=487;text="Caller cancelled"'),
        (480, HeldState.EXPIRED, 'SIP;cause=480;text="No answer"'),
        (486, HeldState.BUSY, 'SIP;cause=486;text="Busy Here"'),
        (600, HeldState.BUSY, 'SIP;cause=600;text="Busy Everywhere"'),
        (603, HeldState.DECLINED, 'SIP;cause=603;text="Declined"'),
        (500, HeldState.FAILED, 'SIP;cause=480;text="Call failed"'),
    ],
)
def test_why_the_call_ended(status: int, state: HeldState, reason: str) -> None:
    assert ended_state(status, unanswered=480) is state
    assert end_reason(state, status) == reason


def test_configured_unanswered_status_is_expiry() -> None:
    assert ended_state(404, unanswered=404) is HeldState.EXPIRED
    assert end_reason(HeldState.EXPIRED, 404) == 'SIP;cause=404;text="No answer"'
