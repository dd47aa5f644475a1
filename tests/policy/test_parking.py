"""Held-call bookkeeping with a fake clock."""

from __future__ import annotations

from sipwake.policy.parking import (
    DeliverAndCancel,
    DeviceState,
    HeldCall,
    HeldState,
    Ignore,
    Join,
)


def held(*devices: str) -> HeldCall:
    call = HeldCall("uuid-1", "sip:bob@example.com", created_at=0, deadline=30, grace=30)
    for d in devices:
        call.pushing(d)
    return call


def test_woken_device_joins_once() -> None:
    call = held("iphone")
    assert call.on_register("iphone", 1) == Join()
    assert call.state is HeldState.RESUMED
    assert isinstance(call.on_register("iphone", 2), Ignore)  # the REGISTER after a 401
    assert call.waiting() == 0


def test_unpushed_new_device_joins_a_live_call() -> None:
    call = held("iphone")
    assert call.on_register("ipad", 1) == Join()
    assert call.waiting() == 1  # the iPhone is still awaited


def test_rejected_token_stops_waiting() -> None:
    call = held("a", "b")
    assert call.push_result("a", DeviceState.REJECTED)
    assert not call.push_result("a", DeviceState.FAILED)  # only once
    assert call.push_result("b", DeviceState.PUSHED) is False
    assert call.waiting() == 1


def test_late_wake_after_cancel_gets_invite_and_cancel_within_grace() -> None:
    call = held("iphone", "ipad")
    call.end(HeldState.CANCELLED, 10)
    decision = call.on_register("iphone", 20)
    assert isinstance(decision, DeliverAndCancel)
    assert "487" in decision.reason
    assert isinstance(call.on_register("iphone", 21), Ignore)  # only once
    assert isinstance(call.on_register("ipad", 41), Ignore)  # grace over
    assert isinstance(call.on_register("stranger", 11), Ignore)  # never pushed


def test_answered_elsewhere_reason() -> None:
    call = held("iphone")
    call.end(HeldState.ANSWERED, 5)
    decision = call.on_register("iphone", 6)
    assert isinstance(decision, DeliverAndCancel)
    assert "Call completed elsewhere" in decision.reason


def test_decline_only_for_awaited_devices() -> None:
    call = held("iphone")
    assert call.declined("iphone")
    assert not call.declined("iphone")
    assert not call.declined("stranger")
    assert isinstance(call.on_register("iphone", 1), Ignore)


def test_forgettable() -> None:
    call = held("iphone")
    assert not call.forgettable(100)
    call.end(HeldState.EXPIRED, 30)
    assert not call.forgettable(40)
    assert call.forgettable(61)
