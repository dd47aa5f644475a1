"""SIP MESSAGE to a sleeping phone, whole, without sockets, on a fake clock
(tests/app/harness.py): stored, alert-pushed, 202, delivered on the next REGISTER, in
order, retried after a transient failure, expired, and the sender's bounded wait."""

from __future__ import annotations

from sipwake.app import messages as messages_module
from sipwake.app.router import SipApp
from sipwake.config import MessageConfig
from sipwake.policy.pushbudget import PushBudget
from sipwake.sip.message import Request, Response
from sipwake.transport.flow import Flow
from tests.app.harness import AOR, DOMAIN, US, Device, Rig, settle

ALICE = Flow("UDP", US, ("198.51.100.9", 5080))


async def send(rig: Rig, text: str, n: int) -> None:
    body = text.encode()
    head = (
        f"MESSAGE {AOR} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {ALICE.remote[0]}:{ALICE.remote[1]};branch=z9hG4bKm{n};rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "Alice" <sip:alice@{DOMAIN}>;tag=a{n}\r\n'
        f"To: <{AOR}>\r\nCall-ID: msg-{n}\r\nCSeq: 1 MESSAGE\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    rig.engine.on_message(head.encode() + body, ALICE)
    await settle()


def alice_got(rig: Rig) -> list[int]:
    return [
        m.status
        for f, m in rig.net.sent
        if f.remote == ALICE.remote and isinstance(m, Response) and m.status >= 200
    ]


def delivered(rig: Rig, dev: Device) -> list[Request]:
    return rig.net.requests(dev.flow, "MESSAGE")


async def answer(rig: Rig, dev: Device, request: Request, status: int) -> None:
    await rig.answer(dev, request, status)


async def test_stored_pushed_202_then_delivered_in_order_on_register() -> None:
    rig = Rig(messages=MessageConfig())
    phone = await rig.register("iphone")  # UDP with a push target: asleep
    await send(rig, "one", 1)
    await send(rig, "two", 2)
    assert alice_got(rig) == [202, 202]
    pushes = rig.push.sent
    assert [p.kind for p in pushes] == ["alert", "alert"] and all(p.urgent for p in pushes)
    assert [p.payload["sip_call_id"] for p in pushes] == ["msg-1", "msg-2"]
    assert all(p.payload["type"] == "message" and p.payload["preview"] == "" for p in pushes)
    await rig.register("iphone", dev=phone)  # woken: a new port
    [first] = delivered(rig, phone)  # one at a time
    assert first.body == b"one" and first.call_id == "msg-1"
    assert first.headers.get_all("via")[0].startswith(f"SIP/2.0/UDP {US[0]}")
    assert len(first.headers.get_all("via")) == 1  # ours alone: a new request
    await answer(rig, phone, first, 200)
    second = delivered(rig, phone)[-1]
    assert second.body == b"two"
    await answer(rig, phone, second, 200)
    assert await rig.inbox.users(rig.clock.wall()) == {}


async def test_transient_failure_keeps_it_for_the_next_register() -> None:
    rig = Rig(messages=MessageConfig())
    phone = await rig.register("iphone")
    await send(rig, "one", 1)
    await send(rig, "two", 2)
    await rig.register("iphone", dev=phone)
    [first] = delivered(rig, phone)
    await answer(rig, phone, first, 503)
    assert len(delivered(rig, phone)) == 1  # "two" not sent past a failed "one"
    assert await rig.inbox.users(rig.clock.wall()) == {AOR: 2}
    await rig.register("iphone", dev=phone)
    again = delivered(rig, phone)
    assert [m.body for m in again] == [b"one"]
    await answer(rig, phone, again[0], 200)
    await answer(rig, phone, delivered(rig, phone)[-1], 200)
    assert await rig.inbox.users(rig.clock.wall()) == {}


async def test_no_answer_at_all_is_transient_too() -> None:
    rig = Rig(messages=MessageConfig())
    phone = await rig.register("iphone")
    await send(rig, "hello", 1)
    await rig.register("iphone", dev=phone)
    assert len(delivered(rig, phone)) == 1
    await rig.clock.advance(33)  # Timer F (64*T1) fires: as a 408
    assert await rig.inbox.users(rig.clock.wall()) == {AOR: 1}


async def test_expired_message_is_not_delivered() -> None:
    rig = Rig(messages=MessageConfig(store_for=60))
    phone = await rig.register("iphone")
    await send(rig, "old", 1)
    await rig.clock.advance(61)
    await rig.register("iphone", dev=phone)
    assert delivered(rig, phone) == []


async def test_silent_live_device_sender_gets_202_when_the_bound_passes() -> None:
    rig = Rig(messages=MessageConfig())
    await rig.register("ipad", "TCP")  # live: its connection is open, it never answers
    await rig.register("iphone")  # asleep
    await send(rig, "anyone?", 1)
    assert alice_got(rig) == []  # waiting for the live device's 2xx
    await rig.clock.advance(messages_module.ANSWER_WITHIN - 0.1)
    assert alice_got(rig) == []
    await rig.clock.advance(0.2)  # the engine's one timer fires the bound
    assert alice_got(rig) == [202]


async def test_live_device_2xx_makes_it_200() -> None:
    rig = Rig(messages=MessageConfig())
    ipad = await rig.register("ipad", "TCP")
    await rig.register("iphone")
    await send(rig, "hi", 1)
    [got] = delivered(rig, ipad)
    await answer(rig, ipad, got, 200)
    assert alice_got(rig) == [200]
    assert len(rig.push.sent) == 1  # only the sleeping iphone was pushed


async def test_all_live_is_an_ordinary_fork() -> None:
    rig = Rig(messages=MessageConfig())
    ipad = await rig.register("ipad", "TCP")
    await send(rig, "hi", 1)
    [got] = delivered(rig, ipad)
    assert len(got.headers.get_all("via")) == 2  # forwarded by the proxy, not ours alone
    assert rig.push.sent == [] and await rig.inbox.users(rig.clock.wall()) == {}


async def test_over_the_message_push_budget_stored_without_a_push() -> None:
    """A burst of messages pushes the device ``device_burst`` times; the rest are stored
    without a push and come with the others when it registers. Calls keep their own
    budget: the burst does not stop a call from ringing the device."""
    rig = Rig(messages=MessageConfig())
    app = rig.engine.app
    assert isinstance(app, SipApp)
    app.message_budget = PushBudget(per_device=1, device_burst=2, per_source=0, source_burst=1)
    app.push_budget = PushBudget(per_device=1, device_burst=1, per_source=0, source_burst=1)
    phone = await rig.register("iphone")
    for n in (1, 2, 3):
        await send(rig, f"m{n}", n)
    assert alice_got(rig) == [202, 202, 202]
    assert len(rig.push.sent) == 2
    await rig.call()
    assert [p.kind for p in rig.push.sent] == ["alert", "alert", "voip"]
    await rig.register("iphone", dev=phone)
    for n in (1, 2, 3):
        got = delivered(rig, phone)[-1]
        assert got.body == f"m{n}".encode()
        await answer(rig, phone, got, 200)
