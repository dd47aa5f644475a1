"""The pure call: inputs on a fake clock -> actions, and who is awaited, from the device
table alone. Each test is one story; times are seconds on the call's monotonic clock."""

from __future__ import annotations

import pytest

from sipwake.policy.call import (
    Call,
    CallRules,
    CancelBranch,
    DeliverAndCancel,
    Ended,
    Forget,
    Forward,
    OpenBranch,
    Respond,
    SendPush,
)
from sipwake.policy.parking import DeviceState, HeldState
from sipwake.sip.message import Response

RULES = CallRules(hold_window=30, cancel_grace=10, live_timeout=2, timer_c=180)
PUSH_SENT = Respond(110, reason="Push sent")


def resp(status: int) -> Response:
    return Response(status)


def held(*devices: str, rules: CallRules = RULES) -> Call:
    call = Call.new("uuid-1", "sip:bob@example.com", rules)
    actions = call.start(0.0, devices)
    assert actions == [PUSH_SENT, *(SendPush(d) for d in devices)]
    return call


def woken(call: Call, device: str, key: str, now: float) -> None:
    assert call.registered(device, now) == [OpenBranch(device)]
    assert call.branch_opened(key, device, now)


def test_push_sent_then_180_when_configured() -> None:
    call = Call.new("u", "aor", CallRules(send_180=True))
    assert call.start(0, ["a"]) == [PUSH_SENT, Respond(180), SendPush("a")]
    assert call.start(1, ["a"]) == []  # pushed once per call


def test_woken_device_answers() -> None:
    call = held("iphone")
    assert call.push_result("iphone", DeviceState.PUSHED, 0.3) == []
    assert call.state is HeldState.WAITING
    woken(call, "iphone", "k1", 1.0)
    assert call.state is HeldState.RESUMED
    assert call.registered("iphone", 1.1) == []  # the REGISTER after a 401, a refresh
    ringing, ok = resp(180), resp(200)
    assert call.response("k1", ringing, 1.2) == [Forward(ringing)]
    # The one pushed device answered: nobody is owed a late INVITE, no grace to wait.
    assert call.response("k1", ok, 2.0) == [Forward(ok), Ended(HeldState.ANSWERED, 200), Forget()]
    assert call.next_deadline() is None
    assert call.timer(12.0) == []


def test_hold_window_ends_with_480_and_late_device_gets_invite_and_cancel() -> None:
    call = held("iphone", "ipad")
    call.push_result("iphone", DeviceState.PUSHED, 0.2)
    assert call.next_deadline() == 30.0
    assert call.timer(29.9) == []
    assert call.timer(30.0) == [Respond(480), Ended(HeldState.EXPIRED, 480)]
    # Issue 10.4: the devices were not marked failed; a late one is owed the call.
    assert call.registered("iphone", 35) == [
        DeliverAndCancel("iphone", 'SIP;cause=480;text="No answer"')
    ]
    assert call.registered("iphone", 36) == []  # once
    assert call.registered("ipad", 40.5) == []  # grace over
    assert call.registered("stranger", 31) == []  # never pushed


def test_every_push_failing_ends_the_call_at_once() -> None:
    call = held("a", "b")
    assert call.push_result("a", DeviceState.REJECTED, 0.1) == []
    assert call.push_result("b", DeviceState.FAILED, 0.2) == [
        Respond(480),
        Ended(HeldState.EXPIRED, 480),
        Forget(),  # no push arrived: nobody can wake for it
    ]
    assert call.registered("a", 1) == []  # its push never arrived: owed nothing


def test_caller_cancel_while_held() -> None:
    call = held("iphone")
    assert call.cancel(3) == [Respond(487), Ended(HeldState.CANCELLED, 487)]
    assert call.registered("iphone", 5) == [
        DeliverAndCancel("iphone", 'SIP;cause=487;text="Caller cancelled"')
    ]


def test_cancel_with_a_ringing_branch_waits_for_its_487() -> None:
    call = held("a", "b")
    woken(call, "a", "k1", 1)
    call.response("k1", resp(180), 1.1)
    assert call.cancel(2) == [CancelBranch("k1", None)]
    # b wakes before the 487 came back: it gets INVITE + CANCEL, not a branch.
    assert call.registered("b", 2.1) == [
        DeliverAndCancel("b", 'SIP;cause=487;text="Caller cancelled"')
    ]
    r = resp(487)
    assert call.response("k1", r, 2.2) == [
        Forward(r),
        Ended(HeldState.CANCELLED, 487),
        Forget(),
    ]


@pytest.mark.parametrize(
    ("status", "state", "reason"),
    [
        (603, HeldState.DECLINED, 'SIP;cause=603;text="Declined"'),
        (486, HeldState.BUSY, 'SIP;cause=486;text="Busy Here"'),
    ],
)
def test_decline_link_then_the_other_device_wakes(
    status: int, state: HeldState, reason: str
) -> None:
    call = held("iphone")
    second = held("iphone", "ipad")
    assert call.declined("stranger", status, 1) is None
    assert call.declined("iphone", status, 1) == [
        Respond(status),
        Ended(state, status),
        Forget(),
    ]
    assert call.declined("iphone", status, 1.5) is None  # over
    # With two devices a busy link waits for the other; a 603 ends it (decline_ends_all).
    first = second.declined("iphone", status, 1)
    if status == 603:
        assert first == [Respond(603), Ended(state, 603)]
        assert second.registered("ipad", 4) == [DeliverAndCancel("ipad", reason)]
    else:
        assert first == []
        woken(second, "ipad", "k2", 2)
        busy = resp(486)
        assert second.response("k2", busy, 3) == [Forward(busy), Ended(state, 486), Forget()]


def test_busy_over_sip_from_one_device_late_wake_of_the_other() -> None:
    call = held("a", "b")
    woken(call, "a", "k1", 1)
    call.timer(30)  # the window ends: only the ringing branch remains
    busy = resp(486)
    assert call.response("k1", busy, 31) == [Forward(busy), Ended(HeldState.BUSY, 486)]
    assert call.registered("b", 32) == [DeliverAndCancel("b", 'SIP;cause=486;text="Busy Here"')]


def test_answered_elsewhere_cancels_and_owes_the_others() -> None:
    call = held("a", "b", "c")
    woken(call, "a", "k1", 1)
    woken(call, "b", "k2", 1)
    call.response("k1", resp(180), 1.1)
    call.response("k2", resp(180), 1.1)
    ok = resp(200)
    assert call.response("k1", ok, 2) == [
        CancelBranch("k2", 'SIP;cause=200;text="Call completed elsewhere"'),
        Forward(ok),
        Ended(HeldState.ANSWERED, 200),
    ]
    assert call.registered("c", 3) == [
        DeliverAndCancel("c", 'SIP;cause=200;text="Call completed elsewhere"')
    ]


def test_a_device_being_joined_is_awaited() -> None:
    call = held("a", "b")
    assert call.registered("a", 1) == [OpenBranch("a")]
    # b's push fails while a's branch is still being opened: the call goes on.
    assert call.push_result("b", DeviceState.FAILED, 1.1) == []
    assert call.branch_opened("k1", "a", 1.2)
    ok = resp(200)
    assert call.response("k1", ok, 2)[-2:] == [Ended(HeldState.ANSWERED, 200), Forget()]


def test_a_device_that_cannot_be_reached_after_waking() -> None:
    call = held("a")
    call.registered("a", 1)
    assert call.branch_failed("a", 1.1) == [
        Respond(480),
        Ended(HeldState.EXPIRED, 480),
        Forget(),
    ]


def test_silent_live_branch_is_pushed_and_replaced_when_the_device_wakes() -> None:
    """Issue 10.7: a live connection that answers nothing in live_timeout."""
    call = Call.new("u", "aor", RULES)
    assert call.start(0, [], ["phone"]) == []
    call.will_open("phone")
    assert call.branch_opened("k1", "phone", 0.1)
    assert call.next_deadline() == pytest.approx(2.1)
    assert call.timer(2.1) == [PUSH_SENT, SendPush("phone")]
    assert call.held and call.hold_end == pytest.approx(32.1)
    assert call.registered("phone", 3) == [OpenBranch("phone")]  # back, new connection
    assert call.branch_opened("k2", "phone", 3.1)
    ok = resp(200)
    assert call.response("k2", ok, 4) == [Forward(ok), Ended(HeldState.ANSWERED, 200), Forget()]
    # The old branch wakes up after all: a provisional gets its CANCEL.
    assert call.response("k1", resp(180), 5) == [CancelBranch("k1", None)]


@pytest.mark.parametrize("first", [100, 180])
def test_live_branch_that_answers_anything_is_not_pushed(first: int) -> None:
    call = Call.new("u", "aor", RULES)
    call.start(0, [], ["phone"])
    call.branch_opened("k1", "phone", 0)
    call.response("k1", resp(first), 0.5)
    assert call.timer(2.0) == []
    assert not call.held


def test_live_branch_without_push_target_is_never_pushed() -> None:
    call = Call.new("u", "aor", RULES)
    call.start(0, [], [])
    call.branch_opened("k1", "desk", 0)
    assert call.next_deadline() == 180  # Timer C only
    assert call.timer(2.0) == []


def test_timer_c_on_a_ringing_woken_branch() -> None:
    call = held("a")
    woken(call, "a", "k1", 1)
    call.response("k1", resp(180), 2)
    assert call.timer(30) == []  # the hold window ends, the branch rings on
    assert call.next_deadline() == 182
    assert call.timer(182) == [CancelBranch("k1")]
    r = resp(487)
    assert call.response("k1", r, 183) == [
        Forward(r),
        Ended(HeldState.CANCELLED, 487),
        Forget(),
    ]


def test_a_call_never_held_ignores_registrations() -> None:
    call = Call.new("u", "aor", RULES)
    call.start(0, [], [])
    assert call.registered("a", 1) == []


def test_ghost_cancels_its_branch_after_the_first_provisional() -> None:
    ghost = Call.new("u", "aor", RULES)
    ghost.ghost = True
    assert ghost.branch_opened("k1", "late", 0)
    reason = 'SIP;cause=480;text="No answer"'
    assert ghost.deliver_and_cancel(reason) == []  # §9.1: not before a provisional
    assert ghost.response("k1", resp(180), 0.1) == [CancelBranch("k1", reason)]


def test_shutdown_answers_the_caller_and_cancels_ringing_branches() -> None:
    call = held("a", "b")
    woken(call, "a", "k1", 1)
    call.response("k1", resp(180), 1.1)
    reason = 'SIP;cause=503;text="Server shutting down"'
    assert call.shutdown(5, retry_after=5) == [
        CancelBranch("k1", reason),
        Respond(503, (("Retry-After", "5"),)),
        Ended(HeldState.FAILED, 503),
    ]
    assert call.shutdown(6, retry_after=5) == []  # once
    # b, pushed and never reached, is still owed the call it was woken for.
    assert call.registered("b", 7) == [DeliverAndCancel("b", 'SIP;cause=480;text="Call failed"')]


# -- resuming a call another process held (issue 11 step 3) -----------------------------------
def resumed(states: dict[str, DeviceState], now: float = 100.0, hold_end: float = 120.0,
            woke: tuple[str, ...] = ()) -> tuple[Call, list[object]]:  # fmt: skip
    call = Call.new("uuid-1", "sip:bob@example.com", RULES)
    return call, list(call.resume(now, hold_end, states, woke))


def test_resume_pushes_nobody_again_and_delivers_when_the_device_wakes() -> None:
    call, actions = resumed({"iphone": DeviceState.PUSHED, "ipad": DeviceState.PUSHING})
    assert actions == [PUSH_SENT]  # to the new server transaction; no SendPush
    assert call.held and call.next_deadline() == 120.0
    assert call.devices.states == {"iphone": DeviceState.PUSHED, "ipad": DeviceState.PUSHED}
    woken(call, "iphone", "k1", 101)
    ok = resp(200)
    assert call.response("k1", ok, 102) == [Forward(ok), Ended(HeldState.ANSWERED, 200)]
    # ipad, still asleep, is owed the call it was woken for.
    assert call.registered("ipad", 103) == [
        DeliverAndCancel("ipad", 'SIP;cause=200;text="Call completed elsewhere"')
    ]


def test_resume_lets_a_device_that_woke_meanwhile_in_at_once() -> None:
    # It registered while nobody held the call: its branch opens now.
    call, actions = resumed({"iphone": DeviceState.PUSHED}, woke=("iphone",))
    assert actions == [PUSH_SENT, OpenBranch("iphone")]
    assert call.awaited(100.5)  # its branch is being opened


def test_resume_a_device_that_had_joined_waits_for_it_again() -> None:
    # Its branch went with the old process's connection: it must register again.
    call, actions = resumed({"iphone": DeviceState.JOINED})
    assert actions == [PUSH_SENT]
    assert call.registered("iphone", 101) == [OpenBranch("iphone")]


def test_resume_after_the_hold_window_answers_480_at_once() -> None:
    call, actions = resumed({"iphone": DeviceState.PUSHED}, now=100, hold_end=90)
    assert actions == [PUSH_SENT, Respond(480), Ended(HeldState.EXPIRED, 480)]
    # The device that wakes within the grace period still gets INVITE + CANCEL.
    assert call.registered("iphone", 101) == [
        DeliverAndCancel("iphone", 'SIP;cause=480;text="No answer"')
    ]


def test_resume_with_only_failed_or_declined_devices_ends_the_call() -> None:
    call, actions = resumed({"a": DeviceState.REJECTED, "b": DeviceState.DECLINED})
    assert actions == [PUSH_SENT, Respond(480), Ended(HeldState.EXPIRED, 480), Forget()]
    assert call.registered("a", 101) == []  # not owed: its push never reached it


def test_abandon_for_an_unreachable_caller_cancels_and_owes_the_woken_devices() -> None:
    call, _ = resumed({"iphone": DeviceState.PUSHED, "ipad": DeviceState.PUSHED})
    woken(call, "ipad", "k1", 101)
    call.response("k1", resp(180), 101.5)
    reason = 'SIP;cause=480;text="Caller unreachable"'
    assert call.abandon(102, 480, "Caller unreachable") == [
        CancelBranch("k1", reason),
        Respond(480),
        Ended(HeldState.EXPIRED, 480),
    ]
    assert call.registered("iphone", 103) == [
        DeliverAndCancel("iphone", 'SIP;cause=480;text="No answer"')
    ]


def test_flow_failed_on_a_live_push_device_pushes_it_instead_of_failing_the_call() -> None:
    """RFC 5626 §11.5: the owner node answers 430 when the device's connection closed just
    before the call reached it; the device sleeps, it is pushed (seen on three nodes)."""
    call = Call.new("u", "aor", RULES)
    assert call.start(0, [], ["phone"]) == []
    call.will_open("phone")
    assert call.branch_opened("k1", "phone", 0.1)
    assert call.settle(0.1) == []
    assert call.response("k1", resp(430), 0.2) == [PUSH_SENT, SendPush("phone")]
    assert not call.fork.finished and call.held
    assert call.registered("phone", 2) == [OpenBranch("phone")]
    assert call.branch_opened("k2", "phone", 2.1)
    ok = resp(200)
    assert call.response("k2", ok, 3) == [Forward(ok), Ended(HeldState.ANSWERED, 200), Forget()]


def test_flow_failed_on_a_device_without_push_target_is_its_final_answer() -> None:
    call = Call.new("u", "aor", RULES)
    call.start(0, [], [])
    call.will_open("desk")
    call.branch_opened("k1", "desk", 0)
    call.settle(0)
    failed = resp(430)
    actions = call.response("k1", failed, 0.5)
    assert SendPush("desk") not in actions and call.fork.finished


def test_flow_failed_then_the_push_fails_answers_the_caller() -> None:
    call = Call.new("u", "aor", RULES)
    call.start(0, [], ["phone"])
    call.branch_opened("k1", "phone", 0)
    call.response("k1", resp(430), 0.2)
    assert call.push_result("phone", DeviceState.REJECTED, 0.3) == [
        Respond(480),
        Ended(HeldState.EXPIRED, 480),
        Forget(),
    ]
