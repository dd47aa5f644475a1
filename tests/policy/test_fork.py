"""Forking response context (RFC 3261 §16.7, §16.8, §16.10), with a fake clock."""

from __future__ import annotations

import pytest

from sipwake.policy.fork import (
    COMPLETED_ELSEWHERE,
    CancelBranch,
    Fork,
    Forward,
    Respond,
)
from sipwake.sip.message import Response


def resp(status: int, *headers: tuple[str, str]) -> Response:
    r = Response(status)
    for name, value in headers:
        r.headers.add(name, value)
    return r


def fork_with(*keys: str, now: float = 0.0, **kw: object) -> Fork:
    f = Fork(is_invite=True, timer_c=180.0, **kw)  # type: ignore[arg-type]
    for k in keys:
        assert f.add_branch(k, "dev-" + k, now)
    return f


def test_one_branch_per_device() -> None:
    f = Fork(is_invite=True)
    assert f.add_branch("b1", "phone", 0)
    assert not f.add_branch("b2", "phone", 0)
    assert list(f.branches) == ["b1"]


def test_provisional_forwarded_100_not() -> None:
    f = fork_with("a")
    assert f.on_response("a", resp(100), 1) == []
    r180 = resp(180)
    assert f.on_response("a", r180, 1) == [Forward(r180)]


def test_2xx_wins_and_cancels_others_with_reason() -> None:
    f = fork_with("a", "b")
    f.on_response("a", resp(180), 1)
    f.on_response("b", resp(180), 1)
    ok = resp(200)
    actions = f.on_response("a", ok, 2)
    assert CancelBranch("b", COMPLETED_ELSEWHERE) in actions
    assert actions[-1] == Forward(ok)
    assert f.final_sent == 200
    # The cancelled branch's 487 is absorbed.
    assert f.on_response("b", resp(487), 3) == []
    assert not f.add_branch("c", "late", 4)


def test_cancel_held_back_until_provisional() -> None:
    f = fork_with("a", "b")
    f.on_response("a", resp(180), 1)
    actions = f.on_response("a", resp(200), 2)
    assert not any(isinstance(a, CancelBranch) and a.key == "b" for a in actions)
    # §9.1: the CANCEL for b goes out once b answers provisionally.
    assert f.on_response("b", resp(100), 3) == [CancelBranch("b", COMPLETED_ELSEWHERE)]


def test_best_response_after_all_finals() -> None:
    f = fork_with("a", "b", "c")
    assert f.on_response("a", resp(486), 1) == []
    assert f.on_response("b", resp(404), 1) == []
    r = resp(480)
    actions = f.on_response("c", r, 1)
    assert len(actions) == 1 and isinstance(actions[0], Forward)
    assert actions[0].response.status in (486, 404, 480)


def test_6xx_ends_fork_and_cancels() -> None:
    f = fork_with("a", "b")
    f.on_response("b", resp(180), 1)
    decline = resp(603)
    actions = f.on_response("a", decline, 2)
    assert any(isinstance(a, CancelBranch) and a.key == "b" for a in actions)
    assert actions[-1] == Forward(decline)


def test_603_can_be_configured_not_to_end_the_call() -> None:
    f = fork_with("a", "b", decline_ends_all=False)
    assert f.on_response("a", resp(603), 1) == []
    ok = resp(200)
    assert f.on_response("b", ok, 2)[-1] == Forward(ok)


def test_6xx_preferred_over_lower_classes_at_the_end() -> None:
    f = fork_with("a", "b", decline_ends_all=False)
    f.on_response("a", resp(603), 1)
    actions = f.on_response("b", resp(486), 1)
    assert isinstance(actions[0], Forward) and actions[0].response.status == 603


def test_503_becomes_500() -> None:
    f = fork_with("a")
    assert f.on_response("a", resp(503), 1) == [Respond(500)]


def test_challenges_aggregated() -> None:
    f = fork_with("a", "b")
    f.on_response("a", resp(401, ("WWW-Authenticate", 'Digest realm="a"')), 1)
    actions = f.on_response("b", resp(407, ("Proxy-Authenticate", 'Digest realm="b"')), 1)
    assert actions == [
        Respond(
            401,
            (("WWW-Authenticate", 'Digest realm="a"'), ("Proxy-Authenticate", 'Digest realm="b"')),
        )
    ]


def test_timeout_is_408_and_never_preferred() -> None:
    f = fork_with("a", "b")
    assert f.on_timeout("a") == []
    r = resp(486)
    assert f.on_response("b", r, 1) == [Forward(r)]
    g = fork_with("a")
    assert g.on_timeout("a") == [Respond(408)]


def test_caller_cancel_cancels_branches_then_487() -> None:
    f = fork_with("a")
    f.on_response("a", resp(180), 1)
    assert f.on_cancel() == [CancelBranch("a", None)]
    assert f.on_response("a", resp(487), 2)[0].response.status == 487  # type: ignore[union-attr]


def test_cancel_with_no_branch_answers_487_at_once() -> None:
    f = Fork(is_invite=True)
    assert f.on_cancel() == [Respond(487)]


def test_waiting_devices_hold_the_final_answer() -> None:
    f = fork_with("a")
    assert f.on_response("a", resp(486), 1, awaited=True) == []
    assert f.settle(awaited=True) == []
    actions = f.settle(awaited=False)
    assert len(actions) == 1 and isinstance(actions[0], Forward)
    assert actions[0].response.status == 486


def test_timer_c_cancels_proceeding_and_times_out_calling() -> None:
    f = fork_with("a", "b", now=0)
    f.on_response("a", resp(180), 10)  # resets a's Timer C to 190
    assert f.next_deadline() == 180
    assert f.on_timer(180) == []  # b: treated as 408, a still running
    assert f.next_deadline() == 190
    assert f.on_timer(190) == [CancelBranch("a")]
    assert f.on_response("a", resp(487), 191)[0].response.status == 487  # type: ignore[union-attr]


@pytest.mark.parametrize("late", [200, 202])
def test_2xx_after_final_still_forwarded(late: int) -> None:
    f = fork_with("a", "b")
    f.on_response("a", resp(180), 1)
    f.on_response("b", resp(180), 1)
    f.on_response("a", resp(200), 2)
    r = resp(late)
    assert f.on_response("b", r, 3) == [Forward(r)]


def test_nobody_woke_gives_the_configured_answer() -> None:
    f = Fork(is_invite=True, unanswered=Respond(480, (("Retry-After", "60"),)))
    assert f.settle(awaited=True) == []
    assert f.settle(awaited=False) == [Respond(480, (("Retry-After", "60"),))]


def test_decline_link_603_ends_the_call() -> None:
    f = fork_with("a")
    f.on_response("a", resp(180), 1)
    actions = f.device_answered("sleeper", 603, awaited=True)
    assert CancelBranch("a", 'SIP;cause=603;text="Declined"') in actions
    assert actions[-1] == Respond(603)


def test_decline_link_busy_counts_as_that_devices_answer() -> None:
    f = Fork(is_invite=True)
    assert f.device_answered("one", 486, awaited=True) == []
    assert f.device_answered("one", 486) == []  # once per device
    assert f.settle(awaited=False) == [Respond(486)]


def test_real_answer_beats_virtual_busy_only_by_rank() -> None:
    f = fork_with("a")
    assert f.device_answered("sleeper", 486, awaited=False) == []
    r = resp(404)
    assert f.on_response("a", r, 1) == [Forward(r)]  # 404 and 486 same class: first best kept


def test_superseded_branch_no_longer_holds_the_answer() -> None:
    f = fork_with("a", "b")
    f.supersede("a")  # its device is back over a new connection
    assert not f.has_device(f.branches["a"].device)
    r = resp(486)
    assert f.on_response("b", r, 1) == [Forward(r)]  # "a" is not waited for
    # A provisional that still comes on the old branch gets its CANCEL (§9.1)...
    assert f.on_response("a", resp(180), 2) == [CancelBranch("a", None)]
    assert f.on_response("a", resp(180), 3) == []  # ...once


def test_superseded_branch_2xx_is_the_calls_answer() -> None:
    f = fork_with("a", "b")
    f.on_response("b", resp(180), 1)
    f.supersede("a")
    ok = resp(200)
    assert f.on_response("a", ok, 2) == [
        CancelBranch("b", 'SIP;cause=200;text="Call completed elsewhere"'),
        Forward(ok),
    ]
    assert f.finished
