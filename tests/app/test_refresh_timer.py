"""Binding-refresh pushes (app/refresh.py) fire through the engine's one timer, on its
clock: planned in wall-clock time from the binding's expiry, armed on the monotonic one."""

from __future__ import annotations

from sipwake.app.refresh import RefreshService
from sipwake.config import PushConfig
from sipwake.push.dispatcher import PushDispatcher, Route
from tests.app.harness import US, Rig


async def test_refresh_push_goes_out_through_the_engine_timer() -> None:
    rig = Rig()
    refresh = RefreshService(
        dispatcher=PushDispatcher([Route("apns", "", rig.push)]),
        store=rig.store,
        cfg=PushConfig(refresh_before=120, refresh_retries=1, refresh_backoff=15),
        sip_address=(US[0], US[1], "UDP"),
        engine=rig.engine,
    )
    rig.engine.timers.append(refresh)
    registrar = rig.engine.app.registrar  # type: ignore[union-attr]
    registrar.hooks.append(refresh.on_registered)
    alert = "ab" * 32
    phone = await rig.register("iphone", prid=f"{'01' * 32}:voip&{alert}:remote")
    assert refresh.get_timer() is not None
    assert rig.clock.pending() == 1  # the engine's one timer covers it too
    await rig.clock.advance(3600 - 120 - 1)
    assert not rig.push.sent
    await rig.clock.advance(2)
    [push] = rig.push.sent
    assert push.kind == "refresh" and push.payload["type"] == "refresh"
    # The app registers again: the plan is replaced, the retry never goes.
    await rig.register("iphone", dev=phone, prid=f"{'01' * 32}:voip&{alert}:remote")
    await rig.clock.advance(30)
    assert len(rig.push.sent) == 1
    await refresh.close()
