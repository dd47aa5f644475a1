"""A held call outlives its process (issue 11 step 3), without sockets, on a fake clock:
the first Rig holds the call and dies; a second Rig on the same binding store and
held-call registry is the restarted process (tests/app/harness.py), or, with another
node id on a shared registry, another node alive beside the first."""

from __future__ import annotations

import asyncio
import time

from sipwake.policy.parking import DeviceState
from sipwake.sip.message import Response
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


class SharedRegistry(LocalCluster):
    shared = True  # stands in for Redis: the held calls and the bus span the nodes


async def test_cancel_on_a_node_that_does_not_hold_the_call_goes_to_the_live_holder() -> None:
    """Node 1 holds the call and is alive (it took the call over from a node that died,
    say); the caller's CANCEL reaches node 2. Node 2 finds the call in the shared
    registry, answers the CANCEL 200 and passes it on over the bus; node 1 answers the
    INVITE 487, and the phone, woken by its push, gets INVITE + CANCEL. (481 before:
    node 2 only looked for calls of dead nodes.)"""
    registry = SharedRegistry()
    holder = Rig(registry=registry)
    phone = await holder.register("iphone")
    invite = await holder.call()
    await holder.resumer.node.start()  # announced, and listening on the bus
    other = Rig(store=holder.store, registry=registry, node_id="node2")
    # Node 1 as node 2's heartbeat knows it; a route without transport=tcp is not probed.
    other.resumer.node.peers["node1"] = "192.0.2.10:5060"
    try:
        await other.cancel(invite)
        await settle()
        sent = [m for _, m in other.net.sent if isinstance(m, Response)]
        assert [(m.status, m.cseq.method) for m in sent] == [(200, "CANCEL")]
        assert holder.caller_got() == [100, 110, 487]
        assert other.calls.by_id == {}  # passed on, not taken over
        await holder.register("iphone", dev=phone)
        [invite_out] = holder.invites(phone)
        await holder.answer(phone, invite_out, 180)
        assert len(holder.cancels(phone)) == 1
    finally:
        await holder.resumer.node.close()


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
