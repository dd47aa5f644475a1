"""A held call outlives its process (issue 11 step 3), without sockets, on a fake clock:
the first Rig holds the call and dies; a second Rig on the same binding store and
held-call registry is the restarted process (tests/app/harness.py)."""

from __future__ import annotations

import asyncio
import time

from sipwake.policy.parking import DeviceState
from sipwake.storage.cluster import HeldEntry, LocalCluster
from tests.app.harness import CALLER, Device, Rig, request_bytes, settle


async def held_then_died(**kw: object) -> tuple[Rig, Device, HeldEntry]:
    """A phone asleep, a call held for it and pushed; then the process is gone."""
    first = Rig()
    phone = await first.register("iphone")
    await first.call()
    await settle()
    assert first.caller_got() == [100, 110]
    [entry] = await first.registry.list_held()
    return first, phone, entry


async def test_restarted_process_resumes_the_call_and_delivers_it_on_wake() -> None:
    first, phone, entry = await held_then_died()
    [push] = first.push.to(phone.token)
    assert entry.invite_key.startswith("call-1 ")
    assert dict(entry.states) == {phone_key(first): DeviceState.PUSHED.value}
    assert entry.caller == ("UDP", *CALLER.local, *CALLER.remote)

    second = Rig(store=first.store, registry=first.registry, wall_ahead=2)
    assert await second.resumer.start() == 1
    # The caller, who stopped retransmitting at 110, hears from the new process first.
    assert second.caller_got() == [100, 110]
    assert second.push.sent == []  # the app has its push for this call already
    [rec] = second.calls.by_id.values()
    assert rec.call.call_id == entry.call_id  # the UUID the app reports to CallKit
    await second.clock.advance(1)
    await second.register("iphone", dev=phone)
    [invite] = second.invites(phone)
    await second.answer(phone, invite, 200)
    assert second.caller_got() == [100, 110, 200]
    await settle()
    assert await first.registry.list_held() == []  # answered: nothing left to resume
    assert push.collapse_id == entry.call_id


async def test_phone_that_woke_while_nobody_held_the_call_gets_it_at_resume() -> None:
    first, phone, _ = await held_then_died()
    # The app woke and registered while the process was down (on the same store).
    second = Rig(store=first.store, registry=first.registry, wall_ahead=3)
    await second.register("iphone", dev=phone)
    assert await second.resumer.start() == 1
    await settle()
    [invite] = second.invites(phone)
    await second.answer(phone, invite, 200)
    assert second.caller_got() == [100, 110, 200]


async def test_hold_window_over_during_the_outage_480_then_invite_and_cancel() -> None:
    first, phone, _ = await held_then_died()
    second = Rig(store=first.store, registry=first.registry, wall_ahead=45)
    assert await second.resumer.start() == 1
    assert second.caller_got() == [100, 110, 480]
    # The woken app still gets the call it was pushed for, and its CANCEL (PushKit rule).
    await second.register("iphone", dev=phone)
    [invite] = second.invites(phone)
    await second.answer(phone, invite, 180)
    [cancel] = second.cancels(phone)
    assert "No answer" in (cancel.headers.get("reason") or "")


async def test_caller_cancel_after_resume_gets_487() -> None:
    first, phone, _ = await held_then_died()
    second = Rig(store=first.store, registry=first.registry, wall_ahead=1)
    await second.resumer.start()
    invite = request_bytes("INVITE", "sip:bob@example.com", CALLER, call_id="call-1", cseq=1)
    cancel = invite.replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(
        b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL"
    )
    second.engine.on_message(cancel, CALLER)
    await settle()
    assert second.caller_got() == [100, 110, 487]
    await second.register("iphone", dev=phone)
    [invite_out] = second.invites(phone)
    await second.answer(phone, invite_out, 180)
    assert len(second.cancels(phone)) == 1


async def test_a_second_start_does_not_resume_a_call_twice() -> None:
    first, _, _ = await held_then_died()
    second = Rig(store=first.store, registry=first.registry, wall_ahead=1)
    assert await second.resumer.start() == 1
    assert await second.resumer.sweep() == 0  # it is ours and running
    assert second.caller_got().count(110) == 1


def phone_key(rig: Rig) -> str:
    [key] = {d for r in rig.calls.by_id.values() for d in r.call.devices.states}
    return key


class StalledRegistry(LocalCluster):
    """A held-call registry whose writes never complete."""

    async def put_held(self, entry: HeldEntry, ttl: float) -> None:
        await asyncio.Event().wait()


async def test_the_push_leaves_before_the_held_calls_row_is_written() -> None:
    rig = Rig(registry=StalledRegistry(time.time))
    phone = await rig.register("iphone")
    await rig.call()  # a few loop turns, no time: the row is still being written
    assert len(rig.push.to(phone.token)) == 1
    assert rig.caller_got() == [100, 110]
