"""REGISTER handling (RFC 3261 §10.3): authorise, let the pure registrar decide, store
atomically per AoR, answer with the current bindings."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from email.utils import formatdate

from sipwake.app.auth import TRUSTED, Authenticator
from sipwake.app.engine import Incoming
from sipwake.app.ports import MetricsPort, NullMetrics
from sipwake.policy.bindings import Binding, FlowRef, evolve
from sipwake.policy.registrar import (
    RegisterOutcome,
    RegistrarPolicy,
    aor_of,
    contact_header_values,
    decide_register,
)
from sipwake.storage.base import BindingStore, StorageError, StorageUnavailable
from sipwake.transport.flow import Flow

log = logging.getLogger("sipwake.registrar")

# Called after a successful REGISTER with the AoR and the bindings it added or refreshed
# (the wake-up path listens here: a woken phone's REGISTER releases its held call).
RegisteredHook = Callable[[str, tuple[Binding, ...]], None]


_date_cache: tuple[int, str] = (0, "")


def _http_date(now: float) -> str:
    """RFC 1123 date for the Date header, formatted once per second."""
    global _date_cache
    second = int(now)
    if _date_cache[0] != second:
        _date_cache = (second, formatdate(second, usegmt=True))
    return _date_cache[1]


class Registrar:
    def __init__(
        self,
        store: BindingStore,
        policy: RegistrarPolicy,
        auth: Authenticator | None,
        domains: set[str],
        node_id: str = "",
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        # Binding expiry outlives the process: the wall clock (the engine's, so a test
        # moves it: tests/app/harness.py).
        self.wall = wall
        self.store = store
        self.policy = policy
        self.auth = auth
        self.domains = domains
        self.node_id = node_id
        self.hooks: list[RegisteredHook] = []
        self.metrics: MetricsPort = NullMetrics()
        # Shared store only: the AoRs registered over each of our connections, so that
        # when one closes the bindings stop naming it and other nodes push the device
        # instead of routing a call to a dead connection (flow_closed).
        self.track_flows = False
        self._by_conn: dict[int, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, incoming: Incoming) -> None:
        request = incoming.request
        aor = aor_of(request)
        to_uri = request.to.uri
        if to_uri.host not in self.domains:
            # §10.3 step 3: we are not the registrar for that domain.
            incoming.respond(403, "Not Our Domain")
            return
        if self.auth is not None:
            user = await self.auth.check(incoming, proxy=False)
            if user is None:
                self.metrics.registration("unauthorized")
                return
            if user not in (TRUSTED, to_uri.user):
                # §10.3 step 4: the authenticated user may only change its own bindings.
                incoming.respond(403, "Not Authorised For This AoR")
                return
        flow = incoming.flow
        ref = FlowRef(
            transport=flow.transport,
            remote_host=flow.remote[0],
            remote_port=flow.remote[1],
            local_host=flow.local[0],
            local_port=flow.local[1],
            conn_id=flow.conn_id,
            node_id=self.node_id,
        )
        now = self.wall()
        policy = self.policy
        told = False

        def decided(outcome: RegisterOutcome) -> None:
            # The hooks hear of the binding once it is decided, before it is durable: a
            # call held for this device is forwarded now, ahead of the REGISTER's 200
            # (RFC 8599 §5.6.2: a proxy that authorised the REGISTER itself need not wait
            # for the 2xx), not after the COMMIT and a loop turn (bench/README.md, "The
            # push before the row").
            nonlocal told
            told = True
            if outcome.ok and outcome.added:
                self._tell(aor, outcome.added)

        try:
            outcome: RegisterOutcome = await self.store.update(
                aor,
                lambda current: decide_register(policy, current, request, aor, ref, now),
                now,
                decided,
            )
        except StorageUnavailable:
            # The REGISTER gets 503 (engine.py), but a call held in this process for this
            # device can still be delivered over the flow it just came on: the device was
            # woken for that call (issue 5: held calls in memory still complete).
            if not told:
                _, alone = decide_register(policy, [], request, aor, ref, now)
                if alone.ok and alone.added:
                    self._tell(aor, alone.added)
            raise
        if self.track_flows and flow.conn_id and outcome.ok and outcome.added:
            self._by_conn.setdefault(flow.conn_id, set()).add(aor)
        extra = list(outcome.headers)
        if outcome.ok:
            extra += [("Contact", v) for v in contact_header_values(outcome.bindings, now)]
            extra.append(("Date", _http_date(now)))  # §10.3 step 8
        incoming.respond(outcome.status, outcome.reason, extra=extra)
        if not outcome.ok:
            self.metrics.registration("rejected")
        elif outcome.added:
            self.metrics.registration("ok")
        elif outcome.removed:
            self.metrics.registration("unregistered")
        if outcome.evicted:
            log.info("%s: evicted %d bindings over the cap", aor, len(outcome.evicted))

    def _tell(self, aor: str, added: tuple[Binding, ...]) -> None:
        """Run every hook; one that fails is logged, and neither stops the others nor
        changes the REGISTER's answer."""
        for hook in self.hooks:
            try:
                hook(aor, added)
            except Exception:
                log.exception("%s: registration hook failed", aor)

    def flow_closed(self, flow: Flow) -> None:
        """Transport hook: one of our connections closed. Bindings that name it get their
        flow cleared, so every node sees the device as asleep (push it) rather than
        reachable through us (RFC 5626 §5.3: a failed flow is not used again)."""
        aors = self._by_conn.pop(flow.conn_id, None)
        if not aors:
            return
        for aor in aors:
            task = asyncio.get_running_loop().create_task(self._clear_flow(aor, flow.conn_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _clear_flow(self, aor: str, conn_id: int) -> None:
        node = self.node_id

        def clear(current: list[Binding]) -> tuple[list[Binding], None]:
            return [
                evolve(b, flow=None)
                if b.flow is not None and b.flow.conn_id == conn_id and b.flow.node_id == node
                else b
                for b in current
            ], None

        try:
            await self.store.update(aor, clear, self.wall())
        except StorageError as exc:
            log.warning("%s: could not clear a closed flow from its bindings: %s", aor, exc)
