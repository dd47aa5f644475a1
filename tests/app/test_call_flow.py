"""The push-woken call, whole, without sockets, on a fake clock: INVITE -> push -> wake
REGISTER -> branch -> answer, and every way it ends (tests/app/harness.py)."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import pytest

from sipwake.app import events as ev
from sipwake.policy.call import CallRules
from sipwake.push.base import PushOutcome, PushRequest, TokenRejected
from sipwake.sip.message import Request, Response, make_response
from sipwake.transport.flow import Flow
from tests.app.harness import AOR, CALLER, US, Device, Rig, request_bytes, settle

LATE_CALLER = Flow("UDP", US, ("198.51.100.8", 5070))


async def asleep(rig: Rig, name: str) -> Device:
    """A phone that registered over UDP with a push target (so it is pushed)."""
    return await rig.register(name)


async def late_wake_gets_invite_then_cancel(rig: Rig, dev: Device, cause: str) -> None:
    """A phone woken for a call that already ended: INVITE, and once it rings, CANCEL."""
    await rig.register(dev.name, dev=dev)
    invites = rig.invites(dev)
    assert len(invites) == 1
    assert not rig.cancels(dev)  # §9.1: not before a provisional
    await rig.answer(dev, invites[0], 180)
    cancels = rig.cancels(dev)
    assert len(cancels) == 1
    assert cause in (cancels[0].headers.get("reason") or "")
    await rig.answer(dev, invites[0], 487)


async def test_woken_phone_takes_the_call() -> None:
    rig = Rig()
    phone = await asleep(rig, "iphone")
    await rig.call()
    assert rig.caller_got() == [100, 110]
    [push] = rig.push.to(phone.token)
    assert push.kind == "voip"
    assert push.expires_at == pytest.approx(rig.clock.wall() + 30)
    assert not rig.invites(phone)  # asleep: nothing sent to the old flow
    await rig.clock.advance(0.8)  # the app launches
    await rig.register("iphone", dev=phone)
    [invite] = rig.invites(phone)
    assert invite.headers.get("record-route")  # the dialog keeps crossing us
    await rig.answer(phone, invite, 180)
    await rig.answer(phone, invite, 200)
    assert rig.caller_got() == [100, 110, 180, 200]
    assert rig.kinds() == [
        "CallStarted",
        "PushSent",
        # The recording provider answers within the push's first step, and the 110 goes
        # once that step is over: the push's request first.
        "PushAnswered",
        "ProvisionalSent",
        "WakeRegister",
        "BranchOpened",
        "BranchResponse",
        "ProvisionalSent",
        "BranchResponse",
        "FinalAnswer",
        "CallEnded",  # the one pushed device answered: nobody is owed a late INVITE
    ]
    call_id = rig.events[0].call_id
    assert all(e.call_id == call_id for e in rig.events)
    assert push.payload["call_id"] == call_id
    assert isinstance(rig.events[-1], ev.CallEnded) and rig.events[-1].state == "answered"
    assert not (rig.calls.by_id or rig.calls.by_aor or rig.calls.by_server or rig.calls.by_client)


async def test_woken_phone_gets_the_invite_ahead_of_its_register_200() -> None:
    """The held INVITE leaves as soon as the wake REGISTER is decided, ahead of its 200
    (RFC 8599 §5.6.2), not after the binding's COMMIT and a loop turn: the branch is
    opened in the registrar's hook when the device's flow needs no wait
    (bench/push_legs.py: the wake leg was 1.1-1.3 ms against Kamailio's 0.4)."""
    rig = Rig()
    phone = await asleep(rig, "iphone")
    await rig.call()
    await rig.clock.advance(0.8)
    await rig.register("iphone", dev=phone, until_answered=True)
    [invite] = rig.invites(phone)
    sent = [m for f, m in rig.net.sent if f == phone.flow]
    assert sent[-2] is invite
    assert isinstance(sent[-1], Response) and sent[-1].status == 200  # the REGISTER's
    await rig.answer(phone, invite, 200)
    assert rig.caller_got() == [100, 110, 200]


async def test_engine_keeps_one_timer_for_transactions_and_calls() -> None:
    rig = Rig()
    phone = await asleep(rig, "iphone")
    await rig.call()
    assert rig.clock.pending() == 1
    await rig.clock.advance(5)
    assert rig.clock.pending() == 1
    await rig.register("iphone", dev=phone)
    assert rig.clock.pending() == 1


async def test_nobody_wakes_480_then_late_wake_gets_invite_and_cancel() -> None:
    rig = Rig()
    phone = await asleep(rig, "iphone")
    await rig.call()
    await rig.clock.advance(29.9)
    assert rig.caller_got() == [100, 110]
    await rig.clock.advance(0.2)
    assert rig.caller_got() == [100, 110, 480]
    await rig.clock.advance(5)
    await late_wake_gets_invite_then_cancel(rig, phone, 'cause=480;text="No answer"')


async def test_late_wake_after_the_grace_period_gets_nothing() -> None:
    rig = Rig()
    phone = await asleep(rig, "iphone")
    await rig.call()
    await rig.clock.advance(30.1 + 31)
    await rig.register("iphone", dev=phone)
    assert not rig.invites(phone)


async def test_caller_cancel_then_late_wake() -> None:
    rig = Rig()
    phone = await asleep(rig, "iphone")
    invite = await rig.call()
    await rig.clock.advance(1)
    await rig.cancel(invite)
    assert rig.caller_got()[-1] == 487
    await late_wake_gets_invite_then_cancel(rig, phone, "cause=487")


async def test_decline_link_then_the_other_device_wakes_late() -> None:
    rig = Rig()
    iphone = await asleep(rig, "iphone")
    ipad = await asleep(rig, "ipad")
    await rig.call()
    url = urlsplit(str(rig.push.to(iphone.token)[0].payload["decline_url"]))
    call_id = url.path.split("/")[3]
    token = parse_qs(url.query)["t"][0]
    result = rig.declines.decline(call_id, token, "decline")
    assert result.status == 200
    assert rig.caller_got()[-1] == 603
    assert rig.declines.decline(call_id, token, "decline").status == 403  # once
    await late_wake_gets_invite_then_cancel(rig, ipad, 'cause=603;text="Declined"')


async def test_woken_phone_busy_then_the_other_wakes_late() -> None:
    rig = Rig()
    first = await asleep(rig, "iphone")
    second = await asleep(rig, "ipad")
    await rig.call()
    await rig.register("iphone", dev=first)
    await rig.clock.advance(30)  # the ipad sleeps through the window
    [invite] = rig.invites(first)
    await rig.answer(first, invite, 486)
    assert rig.caller_got()[-1] == 486
    await late_wake_gets_invite_then_cancel(rig, second, 'cause=486;text="Busy Here"')


async def test_two_devices_one_answers_the_other_is_cancelled_then_a_third_wakes() -> None:
    rig = Rig()
    a = await asleep(rig, "a")
    b = await asleep(rig, "b")
    c = await asleep(rig, "c")
    await rig.call()
    assert len(rig.push.sent) == 3
    await rig.register("a", dev=a)
    await rig.register("b", dev=b)
    [inv_a], [inv_b] = rig.invites(a), rig.invites(b)
    await rig.answer(a, inv_a, 180)
    await rig.answer(b, inv_b, 180)
    await rig.answer(a, inv_a, 200)
    assert rig.caller_got()[-1] == 200
    [cancel] = rig.cancels(b)
    assert "Call completed elsewhere" in (cancel.headers.get("reason") or "")
    await late_wake_gets_invite_then_cancel(rig, c, "cause=200")


async def test_the_push_leaves_before_the_callers_110() -> None:
    """The caller's "110 Push sent" waits for the push's request: its datagram (and the
    wake-up of the caller's host) does not stand before the push."""
    rig = Rig()
    await asleep(rig, "iphone")
    seen: list[list[int]] = []
    send = rig.push.send

    async def spy(request: PushRequest, now: float) -> PushOutcome:
        seen.append(rig.caller_got())
        return await send(request, now)

    rig.push.send = spy  # type: ignore[method-assign]
    await rig.call()
    assert seen == [[100]]
    assert rig.caller_got() == [100, 110]


async def test_dead_token_removes_the_binding_and_answers_at_once() -> None:
    rig = Rig()
    phone = await asleep(rig, "iphone")
    rig.push.outcomes[phone.token] = TokenRejected("Unregistered")
    await rig.call()
    assert rig.caller_got() == [100, 480]  # no "110 Push sent" for a push refused at once
    assert await rig.store.lookup("sip:bob@example.com", rig.clock.wall()) == []


async def test_live_phone_rings_at_once_without_push() -> None:
    rig = Rig()
    desk = await rig.register("desk", "TCP", push=False)
    sent = await rig.call()
    [invite] = rig.invites(desk)
    assert not rig.push.sent
    await rig.clock.advance(5)  # silent, but it has no push target: Timer C only
    assert not rig.push.sent
    await rig.answer(desk, invite, 200)
    assert rig.caller_got() == [100, 200]
    # Nobody was pushed, so nobody can wake late: the call ends with its answer and its
    # record goes at once; a 2xx retransmitted by the phone still reaches the caller
    # (§16.7 step 5), and once the transactions' timers ran out (64*T1) nothing is kept.
    assert isinstance(rig.events[-1], ev.CallEnded) and rig.events[-1].state == "answered"
    assert not (rig.calls.by_id or rig.calls.by_server or rig.calls.by_client)

    def to_caller(method: str) -> list[int]:
        return [
            m.status
            for f, m in rig.net.sent
            if isinstance(m, Response) and f.remote == CALLER.remote and m.cseq.method == method
        ]

    oks = to_caller("INVITE").count(200)
    await rig.answer(desk, invite, 200)
    assert to_caller("INVITE").count(200) == oks + 1
    # A CANCEL crossing the answer: 200, no effect (§9.2); not 481, its INVITE lives on.
    await rig.cancel(sent)
    assert to_caller("CANCEL") == [200] and 487 not in to_caller("INVITE")
    await rig.clock.advance(40)
    assert not (rig.calls.by_id or rig.calls.by_server or rig.calls.by_client or rig.calls.late)


async def test_silent_live_connection_is_pushed_and_the_woken_phone_answers() -> None:
    """Issue 10.7: open but silent (app frozen, NAT binding gone without a FIN)."""
    rig = Rig()
    phone = await rig.register("iphone", "TCP")
    await rig.call()
    [stale] = rig.invites(phone)  # awake by its connection: the INVITE goes at once
    assert not rig.push.sent
    await rig.clock.advance(1.9)
    assert not rig.push.sent
    await rig.clock.advance(0.2)
    assert len(rig.push.to(phone.token)) == 1
    assert rig.caller_got() == [100, 110]
    old = phone.flow
    await rig.register("iphone", "TCP", dev=phone)  # a new connection
    assert phone.flow != old
    [invite] = rig.invites(phone)
    await rig.answer(phone, invite, 200)
    assert rig.caller_got()[-1] == 200
    assert stale.call_id == invite.call_id


async def test_live_connection_that_answers_is_not_pushed() -> None:
    rig = Rig()
    phone = await rig.register("iphone", "TCP")
    await rig.call()
    [invite] = rig.invites(phone)
    await rig.answer(phone, invite, 180)
    await rig.clock.advance(10)
    assert not rig.push.sent


async def test_live_timeout_zero_never_pushes_a_live_phone() -> None:
    rig = Rig(CallRules(hold_window=30, live_timeout=0))
    await rig.register("iphone", "TCP")
    await rig.call()
    await rig.clock.advance(10)
    assert not rig.push.sent


async def test_drain_refuses_new_calls_lets_held_ones_finish_then_answers_the_rest() -> None:
    rig = Rig()
    phone = await asleep(rig, "iphone")
    await rig.call()
    idle = asyncio.ensure_future(rig.calls.idle())  # SIGTERM: draining from now on
    await settle()
    assert rig.calls.draining and not idle.done()
    # A new INVITE is refused with 503 + Retry-After; the held call goes on.
    data = request_bytes("INVITE", AOR, LATE_CALLER, call_id="call-2", cseq=1)
    rig.engine.on_message(data, LATE_CALLER)
    await settle()
    [refused] = [m for f, m in rig.net.sent if f == LATE_CALLER and m.status >= 200]
    assert refused.status == 503 and refused.headers.get("retry-after")
    await rig.register("iphone", dev=phone)
    [invite] = rig.invites(phone)
    await rig.answer(phone, invite, 200)
    await settle()
    assert idle.done()  # every caller has its answer
    assert rig.caller_got()[-1] == 200
    assert rig.calls.shutdown(5) == 0


async def test_drain_timeout_gives_every_waiting_caller_503() -> None:
    rig = Rig()
    await asleep(rig, "iphone")
    await rig.call()
    assert rig.calls.shutdown(5) == 1
    assert rig.caller_got() == [100, 110, 503]
    await rig.clock.advance(60)  # nothing else is sent to the caller
    assert rig.caller_got() == [100, 110, 503]


@pytest.mark.parametrize("transport", ["TCP", "TLS"])
async def test_woken_app_gets_the_call_over_its_connection_not_its_contact(
    transport: str,
) -> None:
    # Issue 10 item 1: linphone over TLS names its listening port (5071) in the Contact
    # and registers from another; a woken app serves nothing there. The INVITE goes over
    # the connection the wake REGISTER came on (RFC 5923, RFC 5626 §5.3), never to a new
    # connection to the Contact (the test network refuses those).
    rig = Rig()
    phone = await rig.register("iphone", transport, contact_port=5071)
    rig.net.open.discard(phone.flow.conn_id)  # the app is suspended: its connection closes
    await rig.call()
    assert rig.caller_got() == [100, 110]
    await rig.register("iphone", transport, dev=phone, contact_port=5071)
    [invite] = rig.invites(phone)
    assert invite.uri.startswith("sip:bob@") and ":5071;" in invite.uri
    await rig.answer(phone, invite, 200)
    assert rig.caller_got() == [100, 110, 200]


async def test_relayed_bye_keeps_no_record_once_answered() -> None:
    """A non-INVITE's late responses are absorbed by its client transaction (§17.1.2.2)
    and retransmissions of it answered by its server transaction (§17.2.2): its record
    goes with the answer, not 64*T1 later (a lingering record is work for every full
    pass of the garbage collector)."""
    rig = Rig()
    bye = request_bytes("BYE", "sip:alice@203.0.113.5:5060", CALLER, call_id="d1", cseq=2)
    bye = bye.replace(f"To: <{AOR}>".encode(), f"To: <{AOR}>;tag=abc".encode())
    rig.engine.on_message(bye, CALLER)
    await settle()
    (flow, forwarded) = rig.net.sent[-1]
    assert isinstance(forwarded, Request) and forwarded.method == "BYE"
    assert rig.calls.by_server and rig.calls.by_client  # in progress
    ok = make_response(forwarded, 200).serialise()
    rig.engine.on_message(ok, flow)
    await settle()
    assert not rig.calls.by_server and not rig.calls.by_client
    answers = [m for f, m in rig.net.sent if isinstance(m, Response) and f.remote == CALLER.remote]
    assert [m.status for m in answers] == [200]
    rig.engine.on_message(ok, flow)  # the callee's 200 again: absorbed
    rig.engine.on_message(bye, CALLER)  # the caller's BYE again: its transaction answers
    await settle()
    answers = [m for f, m in rig.net.sent if isinstance(m, Response) and f.remote == CALLER.remote]
    assert [m.status for m in answers] == [200, 200]


async def test_cancel_of_an_invite_we_answered_ourselves_gets_200() -> None:
    """Nobody to call: sipwake answers 480 itself and forwards nothing. A CANCEL crossing
    that answer matches the INVITE's transaction, which lives on: 200, no effect (RFC 3261
    §9.2), not 481."""
    rig = Rig()
    sent = await rig.call()
    assert rig.caller_got() == [100, 480]
    mark = len(rig.net.sent)
    await rig.cancel(sent)
    answers = [(m.status, m.cseq.method) for _, m in rig.net.sent[mark:] if isinstance(m, Response)]
    assert answers == [(200, "CANCEL")]
