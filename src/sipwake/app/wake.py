"""Push wake-up: hold the INVITE, push every sleeping device, hand the call to each device
the moment it registers again (RFC 8599 §5.3.2), and end cleanly whatever happens.

The rules are pure (policy/parking.py for the held call, policy/fork.py for the answers);
this module runs the pushes, the hold timer and the registrar hook."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sipwake.app.ports import MetricsPort, NullMetrics
from sipwake.app.proxy import CallContext, Proxy, Target
from sipwake.config import PushConfig
from sipwake.policy import decline as tokens
from sipwake.policy.bindings import Binding, FlowRef
from sipwake.policy.fork import Respond
from sipwake.policy.parking import DeliverAndCancel, DeviceState, HeldCall, HeldState, Join
from sipwake.push.base import (
    Delivered,
    Permanent,
    PushOutcome,
    PushRequest,
    TokenRejected,
)
from sipwake.push.dispatcher import PushDispatcher
from sipwake.push.payload import build_payload
from sipwake.storage.base import BindingStore, StorageError
from sipwake.storage.cluster import HeldEntry

if TYPE_CHECKING:  # app/cluster.py imports the router, which imports us
    from sipwake.app.cluster import ClusterNode

log = logging.getLogger("sipwake.wake")


@dataclass(eq=False, slots=True)
class Held:
    call: HeldCall
    ctx: CallContext
    bindings: dict[str, Binding]  # device -> the binding that was pushed
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


class WakeService:
    def __init__(
        self,
        *,
        proxy: Proxy,
        dispatcher: PushDispatcher,
        store: BindingStore,
        cfg: PushConfig,
        flow_alive: Callable[[FlowRef], bool],
        target_of: Callable[[Binding], Target],
        sip_address: tuple[str, int, str],
        secret: bytes,
        decline_base: str = "",
        cluster: ClusterNode | None = None,
    ) -> None:
        self.cluster = cluster
        self.proxy = proxy
        self.dispatcher = dispatcher
        self.store = store
        self.cfg = cfg
        self.flow_alive = flow_alive
        self.target_of = target_of
        self.sip_address = sip_address
        self.secret = secret
        self.decline_base = decline_base.rstrip("/")
        self.used_tokens = tokens.UsedTokens(100_000)
        self.by_aor: dict[str, list[Held]] = {}
        self.by_id: dict[str, Held] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics: MetricsPort = NullMetrics()
        # Called with a binding removed because its push token was rejected (edge mode
        # de-REGISTERs it upstream).
        self.on_binding_removed: list[Callable[[Binding], None]] = []
        self.stats: dict[str, int] = {
            "held": 0, "pushed": 0, "push_failed": 0, "tokens_rejected": 0, "joined": 0,
            "late_deliveries": 0, "declined": 0,
        }  # fmt: skip

    def held_count(self) -> int:
        """Calls held here now (overload shedding bounds them)."""
        return len(self.by_id)

    # -- which bindings sleep ---------------------------------------------------------------
    def sleeping(self, b: Binding) -> bool:
        """A binding with a push target and no connection we know to be alive: push it.
        UDP gives no such knowledge, so a UDP push binding is always pushed (RFC 8599
        §5.3.2 leaves this to the proxy; a foreground app just re-registers sooner)."""
        if b.push is None:
            return False
        ref = b.flow
        if ref is None or ref.transport == "UDP":
            return True
        return not self.flow_alive(ref)

    # -- holding ----------------------------------------------------------------------------
    def hold(self, ctx: CallContext, aor: str, sleeping: list[Binding]) -> None:
        """Park the call for ``sleeping`` devices: 110 (and 180) upstream, one push per
        device now, and the hold timer."""
        now = time.time()
        cfg = self.cfg
        call = HeldCall(str(uuid.uuid4()), aor, now, now + cfg.hold_window, cfg.cancel_grace)
        headers = (("Retry-After", str(cfg.retry_after)),) if cfg.retry_after else ()
        ctx.fork.unanswered = Respond(cfg.unanswered_status, headers)
        held = Held(call, ctx, {})
        for b in sleeping:
            if b.device_key in held.bindings:
                continue
            held.bindings[b.device_key] = b
            call.pushing(b.device_key)
        ctx.fork.waiting += len(held.bindings)
        self.by_aor.setdefault(aor, []).append(held)
        self.by_id[call.call_id] = held
        self.stats["held"] += 1
        self.metrics.held_calls.inc()
        ctx.on_final.append(lambda c: self._ended(held))
        ctx.incoming.respond(110, "Push sent")
        if cfg.send_180:
            ctx.incoming.respond(180)
        loop = asyncio.get_running_loop()
        for b in held.bindings.values():
            task = loop.create_task(self._push(held, b))
            held.tasks.add(task)
            task.add_done_callback(held.tasks.discard)
        held.timer = loop.call_later(cfg.hold_window, self._expire, held)
        if self.cluster is not None and self.cluster.shared:
            # Visible to every node (admin, decline links) until the grace period is over
            # even if this node dies (issue 5 "Faults").
            entry = HeldEntry(
                call.call_id, aor, self.cluster.node_id, call.deadline, tuple(held.bindings)
            )
            ttl = cfg.hold_window + cfg.cancel_grace + 1
            self._spawn(self._registry(self.cluster.cluster.put_held(entry, ttl)))

    def _payload_request(self, held: Held, b: Binding) -> PushRequest:
        assert b.push is not None
        call = held.call
        request = held.ctx.incoming.request
        caller = request.from_
        host, port, transport = self.sip_address
        payload = build_payload(
            type="call",
            call_id=call.call_id,
            caller_uri=str(caller.uri),
            caller_display=caller.display or "",
            callee=call.aor,
            sent_at=time.time(),
            expires_at=call.deadline,
            sip_host=host,
            sip_port=port,
            sip_transport=transport,
            sip_call_id=request.call_id,
            decline_url=self.decline_url(call, b.device_key),
        )
        return PushRequest(
            target=b.push,
            payload=payload,
            kind="voip",
            expires_at=call.deadline,
            collapse_id=call.call_id,
        )

    def decline_url(self, call: HeldCall, device: str) -> str:
        if not self.decline_base:
            return ""
        token = tokens.make_token(
            self.secret, call.call_id, device, call.deadline, os.urandom(6).hex()
        )
        return self.decline_base + tokens.decline_path(call.call_id, token)

    async def _push(self, held: Held, b: Binding) -> None:
        device = b.device_key
        assert b.push is not None
        try:
            outcome: PushOutcome = await self.dispatcher.send(self._payload_request(held, b))
        except (ValueError, OSError) as exc:
            # A payload that cannot be built (PayloadTooLarge) or a provider bug: this
            # device cannot be pushed, so stop waiting for it rather than for the window.
            outcome = Permanent(f"{type(exc).__name__}: {exc}")
        call = held.call
        if isinstance(outcome, Delivered):
            self.stats["pushed"] += 1
            call.push_result(device, DeviceState.PUSHED)
            return
        if isinstance(outcome, TokenRejected):
            # The app is gone from that device (APNs 410, FCM UNREGISTERED...). The binding
            # was pushed because it had no live connection, so with its token dead nothing
            # can reach it: remove the binding itself, not just its push target.
            self.stats["tokens_rejected"] += 1
            log.info("%s: push token rejected (%s), removing the binding", call.aor, outcome.reason)
            stopped = call.push_result(device, DeviceState.REJECTED)
            try:
                await self.store.update(
                    call.aor,
                    lambda cur: ([x for x in cur if x.device_key != device], None),
                    time.time(),
                )
            except StorageError as exc:
                log.warning("could not remove a binding with a dead push token: %s", exc)
            for hook in self.on_binding_removed:
                hook(b)
        else:
            self.stats["push_failed"] += 1
            log.warning("%s: push failed for good: %s", call.aor, outcome)
            stopped = call.push_result(device, DeviceState.FAILED)
        if stopped and not held.ctx.fork.finished:
            self.proxy.apply(held.ctx, held.ctx.fork.stop_waiting(1))

    def _expire(self, held: Held) -> None:
        """The hold window is over: stop waiting for devices that did not wake. Branches
        already ringing go on (Timer C bounds them)."""
        held.timer = None
        call = held.call
        waiting = [
            d for d, s in call.devices.items() if s in (DeviceState.PUSHING, DeviceState.PUSHED)
        ]
        for d in waiting:
            call.push_result(d, DeviceState.FAILED)
        if waiting and not held.ctx.fork.finished:
            self.proxy.apply(held.ctx, held.ctx.fork.stop_waiting(len(waiting)))

    def _ended(self, held: Held) -> None:
        """The caller got its final answer: record why, stop pushes, keep the record for
        the grace period (late wakers get INVITE + CANCEL)."""
        status = held.ctx.incoming.answered
        state = (
            HeldState.ANSWERED if 200 <= status < 300
            else HeldState.CANCELLED if status == 487
            else HeldState.DECLINED if status in (603, 600, 486) and held.ctx.fork.devices
            else HeldState.EXPIRED if status == self.cfg.unanswered_status
            else HeldState.FAILED
        )  # fmt: skip
        now = time.time()
        held.call.end(state, now)
        self.metrics.held_calls.dec()
        if held.timer is not None:
            held.timer.cancel()
            held.timer = None
        for task in list(held.tasks):
            task.cancel()
        if self.cfg.missed_call_alert and state in (HeldState.EXPIRED, HeldState.CANCELLED):
            self._spawn(self._missed_call(held))
        asyncio.get_running_loop().call_later(self.cfg.cancel_grace + 1, self._forget, held)

    def _forget(self, held: Held) -> None:
        self.by_id.pop(held.call.call_id, None)
        if self.cluster is not None and self.cluster.shared:
            self._spawn(self._registry(self.cluster.cluster.drop_held(held.call.call_id)))
        entries = self.by_aor.get(held.call.aor)
        if entries is not None:
            entries[:] = [h for h in entries if h is not held]
            if not entries:
                del self.by_aor[held.call.aor]

    async def _missed_call(self, held: Held) -> None:
        request = held.ctx.incoming.request
        who = request.from_.display or str(request.from_.uri)
        for b in held.bindings.values():
            if b.push is None or not b.push.alert_prid:
                continue
            payload = self._payload_request(held, b).payload | {"type": "missed"}
            await self.dispatcher.send(
                PushRequest(
                    target=b.push,
                    payload=payload,
                    kind="alert",
                    expires_at=time.time() + 86400,
                    collapse_id=held.call.call_id,
                    alert_text=f"Missed call from {who}",
                )
            )

    # -- waking -----------------------------------------------------------------------------
    def on_registered(self, aor: str, added: tuple[Binding, ...]) -> None:
        """Registrar hook: a binding of ``aor`` was added or refreshed."""
        entries = self.by_aor.get(aor)
        if not entries:
            return
        now = time.time()
        for held in list(entries):
            for b in added:
                awaited = held.call.devices.get(b.device_key) in (
                    DeviceState.PUSHING,
                    DeviceState.PUSHED,
                )
                decision = held.call.on_register(b.device_key, now)
                if isinstance(decision, Join):
                    self._spawn(self._join(held, b, awaited))
                elif isinstance(decision, DeliverAndCancel):
                    self.stats["late_deliveries"] += 1
                    target = self.target_of(b)
                    self._spawn(self.proxy.deliver_and_cancel(held.ctx, target, decision.reason))

    @staticmethod
    async def _registry(op: Awaitable[None]) -> None:
        try:
            await op
        except StorageError as exc:
            # The held-call registry is for visibility; the call itself is in memory here.
            log.warning("held-call registry not updated: %s", exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _join(self, held: Held, b: Binding, awaited: bool) -> None:
        ctx = held.ctx
        if await self.proxy.add_target(ctx, self.target_of(b)):
            self.stats["joined"] += 1
        if awaited and not ctx.fork.finished:
            self.proxy.apply(ctx, ctx.fork.stop_waiting(1))

    # -- the decline link (api/) ------------------------------------------------------------
    def decline(
        self, call_id: str, token: str, reason: str, *, forwarded: bool = False
    ) -> tokens.DeclineResult:
        """The app declined the call from its push (the decline link). ``forwarded``:
        another node received the link and passed it on over the cluster bus."""
        now = time.time()
        try:
            claim = tokens.check_token(self.secret, token, call_id, now)
        except tokens.DeclineError as exc:
            return tokens.DeclineResult(exc.status, exc.reason)
        if not self.used_tokens.use(claim, now):
            return tokens.DeclineResult(403, tokens.REPLAYED)
        held = self.by_id.get(call_id)
        if held is None and not forwarded and self.cluster is not None and self.cluster.shared:
            # Held on another node (or worker): the token is good, pass it on; that node
            # checks it again and applies it once.
            self.cluster.forward_decline(call_id, token, reason)
            return tokens.DeclineResult(202, "forwarded to the node holding the call")
        if held is None or held.call.ended or not held.call.declined(claim.device):
            return tokens.DeclineResult(404, "no such call waiting for this device")
        self.stats["declined"] += 1
        status = 486 if reason == "busy" else 603
        ctx = held.ctx
        self.proxy.apply(ctx, ctx.fork.device_answered(claim.device, status))
        return tokens.DeclineResult(200, "declined")

    def held_calls(self) -> list[dict[str, object]]:
        return [
            {
                "call_id": h.call.call_id,
                "aor": h.call.aor,
                "state": h.call.state.value,
                "deadline": h.call.deadline,
                "devices": {d: s.value for d, s in h.call.devices.items()},
            }
            for h in self.by_id.values()
        ]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for held in list(self.by_id.values()):
            for task in list(held.tasks):
                task.cancel()
            if held.timer is not None:
                held.timer.cancel()
        await self.dispatcher.close()
