"""Binding-refresh pushes (RFC 8599 §5.5): wake a sleeping app before its push binding
expires so it REGISTERs again, and retry while it does not (policy/refresh.py decides
when and to whom).

Driven by the registrar hook: every REGISTER that adds or refreshes a push binding
(re)plans that device's pushes; each due push first re-reads the binding and does nothing
if a REGISTER came since (a newer ``registered_at``) or the binding is gone. One second
before the expiry, a binding still unrefreshed is counted as expiring anyway.

Plans live in this process's memory: after a restart, a binding gets its refresh pushes
again once it next REGISTERs (docs/push-payload.md "Binding refresh").

Timers: the service is a timer source of the engine (``get_timer``/``handle_timer``): one
heap of every plan's next moment on the engine's monotonic clock, fired through the
engine's one ``call_at``. Plans are made in wall-clock time (binding expiry) and converted
when armed."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from sipwake.app.engine import Engine
from sipwake.app.ports import MetricsPort, NullMetrics
from sipwake.app.tasks import Tasks
from sipwake.config import PushConfig
from sipwake.policy.bindings import Binding
from sipwake.policy.pushparams import provider_family
from sipwake.policy.refresh import refresh_times, refreshable
from sipwake.push.base import Delivered, Permanent, PushRequest, TokenRejected, Transient
from sipwake.push.dispatcher import PushDispatcher
from sipwake.sip.deadlines import Deadlines
from sipwake.storage.base import BindingStore, StorageError

log = logging.getLogger("sipwake.refresh")

_OUTCOME: dict[type, str] = {
    Delivered: "delivered",
    TokenRejected: "token_rejected",
    Transient: "transient",
    Permanent: "permanent",
}
_LAST_LOOK = 1.0  # seconds before the expiry at which an unrefreshed binding is counted


@dataclass(slots=True)
class _Plan:
    aor: str
    device: str
    registered_at: float
    expires_at: float
    times: list[float]  # pushes still to send (wall clock)


class RefreshService:
    def __init__(
        self,
        *,
        dispatcher: PushDispatcher,
        store: BindingStore,
        cfg: PushConfig,
        sip_address: tuple[str, int, str],
        engine: Engine,
    ) -> None:
        self.engine = engine
        self.clock = engine.clock
        self._due_at: Deadlines[tuple[str, str]] = Deadlines()
        self.dispatcher = dispatcher
        self.store = store
        self.cfg = cfg
        self.sip_address = sip_address
        self.metrics: MetricsPort = NullMetrics()
        self.plans: dict[tuple[str, str], _Plan] = {}
        self._tasks = Tasks()
        self.stats = {"sent": 0, "failed": 0, "expired_unrefreshed": 0}

    def on_registered(self, aor: str, added: tuple[Binding, ...]) -> None:
        """Registrar hook: (re)plan the refresh pushes of each added push binding."""
        now = self.clock.wall()
        cfg = self.cfg
        for b in added:
            key = (aor, b.device_key)
            if self.plans.pop(key, None) is not None:
                self._due_at.cancel(key)
            if b.push is None or not refreshable(b.push):
                continue
            times = refresh_times(
                b.expires_at,
                now,
                before=cfg.refresh_before,
                retries=cfg.refresh_retries,
                backoff=cfg.refresh_backoff,
            )
            if not times:
                continue
            plan = _Plan(aor, b.device_key, b.registered_at, b.expires_at, times)
            self.plans[key] = plan
            self._arm(plan, now)

    def _arm(self, plan: _Plan, now: float) -> None:
        """Arm the plan's next moment (``now``: wall clock) on the monotonic clock."""
        at = plan.times[0] if plan.times else plan.expires_at - _LAST_LOOK
        self._due_at.set((plan.aor, plan.device), self.clock.now() + max(0.0, at - now))
        self.engine.rearm()

    # -- the timer source ---------------------------------------------------------------
    def get_timer(self) -> float | None:
        return self._due_at.earliest()

    def handle_timer(self, now: float) -> None:
        for key in self._due_at.pop_due(now):
            plan = self.plans.get(key)
            if plan is not None:
                self._tasks.spawn(self._due(plan))

    async def _due(self, plan: _Plan) -> None:
        if self.plans.get((plan.aor, plan.device)) is not plan:
            return  # re-planned by a REGISTER meanwhile
        now = self.clock.wall()
        try:
            current = await self.store.lookup(plan.aor, now)
        except StorageError as exc:
            log.warning("%s: refresh skipped, store unavailable: %s", plan.aor, exc)
            current = None
        if self.plans.get((plan.aor, plan.device)) is not plan:
            return  # a REGISTER re-planned it while we looked
        b = self._same(current, plan) if current is not None else None
        if current is not None and b is None:
            self._drop(plan)  # refreshed (a newer REGISTER re-planned it) or removed
            return
        if not plan.times:
            self._drop(plan)
            if b is not None:
                self.stats["expired_unrefreshed"] += 1
                self.metrics.binding_expired_unrefreshed()
                log.info("%s: push binding %s expires without a refresh", plan.aor, plan.device)
            return
        plan.times.pop(0)
        if b is not None and not await self._push(b, now):
            self._drop(plan)  # the token is dead: nothing more to try
            return
        if self.plans.get((plan.aor, plan.device)) is plan:
            self._arm(plan, self.clock.wall())

    @staticmethod
    def _same(current: list[Binding], plan: _Plan) -> Binding | None:
        for b in current:
            if b.device_key == plan.device and b.registered_at == plan.registered_at:
                return b
        return None

    def _drop(self, plan: _Plan) -> None:
        key = (plan.aor, plan.device)
        if self.plans.get(key) is plan:
            del self.plans[key]
            self._due_at.cancel(key)

    async def _push(self, b: Binding, now: float) -> bool:
        """One refresh push; False when the token was rejected."""
        assert b.push is not None
        host, port, transport = self.sip_address
        # docs/push-payload.md "Binding refresh": no call fields, only what to REGISTER to.
        payload = {
            "type": "refresh",
            "callee": b.aor,
            "sent_at": now,
            "expires_at": b.expires_at,
            "sip": {"host": host, "port": port, "transport": transport.lower()},
        }
        # The same id for every refresh of this binding, so a queued one is replaced.
        collapse = hashlib.blake2s(f"{b.aor}|{b.device_key}".encode(), digest_size=16)
        request = PushRequest(
            target=b.push,
            payload=payload,
            kind="refresh",
            expires_at=b.expires_at,
            collapse_id=collapse.hexdigest(),
        )
        outcome = await self.dispatcher.send(request)
        family = provider_family(b.push.provider)
        ok = isinstance(outcome, Delivered)
        self.stats["sent" if ok else "failed"] += 1
        self.metrics.refresh_push(family, _OUTCOME[type(outcome)])
        if not ok:
            log.info("%s: refresh push to %s failed: %s", b.aor, b.device_key, outcome)
        return not isinstance(outcome, TokenRejected)

    async def close(self) -> None:
        for key in self.plans:
            self._due_at.cancel(key)
        self.plans.clear()
        await self._tasks.close()
