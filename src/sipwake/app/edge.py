"""Edge mode: sipwake in front of a registrar/SBC that stays as it is (docs/edge-mode.md).

REGISTERs from devices are relayed upstream (their credentials pass through; the
upstream's answer is what the device sees) unless they may be answered here
(throttling); a binding is stored only on the upstream's 2xx and lives as long as the
upstream registration. The upstream then sends its calls to us: an INVITE for a binding
id goes down the same hold/push/wake path as in registrar mode (``SipApp.fork``).
Requests from devices with a live binding go upstream, Record-Routed; anything else is
refused. The rules are pure (``policy/edge.py``); this module runs the transactions and
the de-REGISTERs when a binding ends here first. The refresh pushes before the upstream
lifetime ends are app/refresh.py's, planned from the stored expiry (the upstream's).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from sipwake.app.calls import Calls
from sipwake.app.engine import Engine, Incoming
from sipwake.app.ports import MetricsPort, NullMetrics
from sipwake.app.proxy import Proxy
from sipwake.app.register import RegisteredHook, _http_date
from sipwake.app.targets import Target
from sipwake.app.tasks import Tasks
from sipwake.config import EdgeConfig
from sipwake.policy import edge as rules
from sipwake.policy.bindings import Binding, FlowRef
from sipwake.policy.proxying import Me, make_branch
from sipwake.policy.registrar import (
    RegisterOutcome,
    RegistrarPolicy,
    aor_of,
    contact_header_values,
    decide_register,
)
from sipwake.sip.message import Request, Response
from sipwake.sip.uri import URI
from sipwake.storage.base import BindingStore
from sipwake.transport.flow import Flow

log = logging.getLogger("sipwake.edge")

# How the call path is entered (SipApp.fork): the request, its loop hash, the AoR and
# the bindings to ring or wake.
ForkFn = Callable[[Incoming, str, str, list[Binding]], Awaitable[None]]


class EdgeService:
    def __init__(
        self,
        *,
        cfg: EdgeConfig,
        engine: Engine,
        proxy: Proxy,
        calls: Calls,
        store: BindingStore,
        policy: RegistrarPolicy,
        me: Me,
        domains: set[str],
        secret: bytes,
        node_id: str,
        hooks: list[RegisteredHook],
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.proxy = proxy
        self.calls = calls
        self.store = store
        self.policy = policy
        self.me = me
        self.domains = domains
        self.secret = secret
        self.node_id = node_id
        # The registrar's hooks: the wake-up path and the refresh pushes (app/refresh.py,
        # planned from each stored binding's expiry, which here is the upstream's).
        self.hooks = hooks
        self.fork: ForkFn | None = None
        uri = URI.parse(cfg.upstream)
        self.upstream_transport = (uri.transport or "udp").upper()
        self.upstream_host = uri.host.strip("[]")
        self.upstream_ips: set[str] = set()
        self._pending: dict[str, asyncio.Future[Response | None]] = {}
        self._tasks = Tasks()
        self.metrics: MetricsPort = NullMetrics()
        self.stats: dict[str, int] = {
            "register_received": 0, "register_forwarded": 0, "register_throttled": 0,
            "deregistered": 0, "refused": 0,
        }  # fmt: skip

    async def start(self) -> None:
        """Resolve the upstream once: requests from its addresses are the upstream's."""
        flow = await self.proxy.flows.flow_for(None, self.cfg.upstream)
        self.upstream_ips.add(flow.remote[0])

    # -- REGISTER -----------------------------------------------------------------------------
    async def register(self, incoming: Incoming) -> None:
        self.stats["register_received"] += 1
        request = incoming.request
        aor = aor_of(request)
        if request.to.uri.host.lower() not in self.domains:
            incoming.respond(403, "Not Our Domain")  # §10.3 step 3
            return
        flow = incoming.flow
        ref = FlowRef(
            flow.transport, flow.remote[0], flow.remote[1], flow.local[0], flow.local[1],
            flow.conn_id, self.node_id,
        )  # fmt: skip
        now = self.engine.wall()
        # The local checks first (malformed, push parameters, Min-Expires): what the
        # device would get from us whatever the upstream says, so it never goes there.
        _, trial = decide_register(
            self.policy, await self.store.lookup(aor, now), request, aor, ref, now
        )
        if not trial.ok:
            incoming.respond(trial.status, trial.reason, extra=list(trial.headers))
            return
        cfg = self.cfg
        old = rules.throttled(trial, request, ref, now, cfg.refresh_before, use_path=cfg.use_path)
        if old is not None:
            outcome = await self._store(aor, request, ref, now, {old.device_key: old.expires_at})
            if outcome is not None and outcome.added:
                self.stats["register_throttled"] += 1
                self.metrics.edge_register("throttled")
                self._answer(incoming, outcome, trial, now)
                return
        await self._relay(incoming, aor, ref, trial, now)

    async def _relay(
        self, incoming: Incoming, aor: str, ref: FlowRef, trial: RegisterOutcome, now: float
    ) -> None:
        cfg = self.cfg
        self.stats["register_forwarded"] += 1
        self.metrics.edge_register("forwarded")
        request = incoming.request
        try:
            flow = await self.proxy.flows.flow_for(None, cfg.upstream)
        except (OSError, ValueError) as exc:
            log.warning("upstream %s unreachable: %s", cfg.upstream, exc)
            incoming.respond(503, "Upstream Unreachable", extra=[("Retry-After", "30")])
            return
        us = self._us(flow)
        contacts = rules.upstream_contacts(
            self.secret, aor, trial, us=us, expires=cfg.upstream_expires, use_path=cfg.use_path
        )
        path: tuple[str, ...] = ()
        if cfg.use_path and contacts:
            path = (f"<{rules.our_uri(contacts[0].user, *us, lr=True)}>",)
        relayed = rules.upstream_register(
            request,
            target=str(request.uri),
            via=self.proxy.via_for(flow, make_branch(uuid.uuid4().hex[:16], "reg")),
            contacts=[c.value for c in contacts],
            path=path,
        )
        response = await self._transact(relayed, flow)
        if response is None:
            incoming.respond(408, "Upstream Did Not Answer")  # §16.7 step 6 by analogy
            return
        if not 200 <= response.status < 300:
            # The upstream's answer is the device's (challenge, 403, 423, 5xx): nothing
            # is stored, so an unauthenticated REGISTER never moves a binding.
            incoming.respond(response.status, response.reason, extra=rules.relayed_back(response))
            return
        added = {b.device_key for b in trial.added}
        expiry = rules.upstream_expiries(
            response, [c for c in contacts if c.device_key in added], now, cfg.upstream_expires
        )
        outcome = await self._store(aor, request, ref, now, expiry)
        if outcome is None:
            incoming.respond(500, "Bindings Changed Meanwhile")
            return
        self._answer(incoming, outcome, trial, now)
        for b in outcome.evicted:
            self._tasks.spawn(self.deregister(b))

    async def _store(
        self, aor: str, request: Request, ref: FlowRef, now: float, expiry: dict[str, float]
    ) -> RegisterOutcome | None:
        policy = self.policy

        def update(current: list[Binding]) -> tuple[list[Binding], RegisterOutcome | None]:
            new, outcome = decide_register(policy, current, request, aor, ref, now)
            if not outcome.ok:
                return current, None
            return rules.with_upstream_expiry(new, outcome, expiry)

        return await self.store.update(aor, update, now)

    def _answer(
        self, incoming: Incoming, outcome: RegisterOutcome, trial: RegisterOutcome, now: float
    ) -> None:
        asked = {b.device_key: b for b in trial.added}
        shown = [
            rules.shown_expiry(asked[b.device_key], b) if b.device_key in asked else b
            for b in outcome.bindings
        ]
        extra = [("Contact", v) for v in contact_header_values(shown, now)]
        extra.append(("Date", _http_date(now)))
        incoming.respond(200, extra=extra)
        if outcome.added:
            for hook in self.hooks:
                hook(outcome.bindings[0].aor, outcome.added)

    def _us(self, flow: Flow) -> tuple[str, int, str]:
        host, port = self.proxy.advertised.get(flow.transport, flow.local)
        return host, port, flow.transport

    # -- client transactions towards the upstream ---------------------------------------------
    async def _transact(self, request: Request, flow: Flow) -> Response | None:
        """Send ``request`` statefully (RFC 3261 §17.1.2) and wait for its final answer;
        None when it times out (Timer F) or the transport fails."""
        future: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
        txn_id = self.engine.send_request(request, flow)
        self._pending[txn_id] = future
        try:
            return await future
        finally:
            self._pending.pop(txn_id, None)

    def on_response(self, response: Response, txn_id: str) -> bool:
        future = self._pending.get(txn_id)
        if future is None:
            return False
        if response.status >= 200 and not future.done():
            future.set_result(response)
        return True

    def on_timeout(self, txn_id: str) -> bool:
        future = self._pending.get(txn_id)
        if future is None:
            return False
        if not future.done():
            future.set_result(None)
        return True

    async def deregister(self, b: Binding) -> None:
        """Remove ``b``'s Contact upstream: the binding ended here first (push token
        rejected, evicted), and the upstream must not route calls to it any longer. We
        hold no credentials: the upstream must accept a de-REGISTER from our address
        (docs/edge-mode.md); if it challenges, the Contact lapses at its expiry."""
        try:
            flow = await self.proxy.flows.flow_for(None, self.cfg.upstream)
        except (OSError, ValueError) as exc:
            log.warning("de-REGISTER of %s: upstream unreachable: %s", b.aor, exc)
            return
        user = rules.binding_id(self.secret, b.aor, b.device_key)
        contact = b.contact if self.cfg.use_path else rules.our_uri(user, *self._us(flow))
        request = rules.deregister_request(
            b,
            target="sip:" + URI.parse(b.aor).host,
            via=self.proxy.via_for(flow, make_branch(uuid.uuid4().hex[:16], "dereg")),
            contact=contact,
            from_tag=uuid.uuid4().hex[:12],
        )
        response = await self._transact(request, flow)
        status = response.status if response is not None else 408
        if 200 <= status < 300:
            self.stats["deregistered"] += 1
            self.metrics.edge_register("deregistered")
            log.info("%s: de-REGISTERed a binding upstream", b.aor)
        else:
            log.warning("%s: upstream refused our de-REGISTER: %d", b.aor, status)

    def binding_removed(self, b: Binding) -> None:
        """A binding ended here (its push token was rejected): end it upstream too."""
        self._tasks.spawn(self.deregister(b))

    # -- other requests -----------------------------------------------------------------------
    def route(self, incoming: Incoming, lhash: str) -> Awaitable[None] | None:
        """An initial request other than REGISTER: for a binding id from the upstream,
        from a device towards the upstream, or refused (not an open relay)."""
        request = incoming.request
        user = request.ruri.user if self.me.is_me(request.ruri) else None
        routes = request.routes
        if routes and self.me.is_me(routes[0].uri):
            user = routes[0].uri.user or user  # Path mode: the id is in our Route entry
        ids = rules.parse_binding_id(self.secret, user)
        if ids is not None:
            if incoming.flow.remote[0] not in self.upstream_ips:
                self.stats["refused"] += 1
                incoming.respond(403, "Not From The Upstream")
                return None
            return self._to_device(incoming, lhash, *ids)
        return self._from_device(incoming, lhash)

    def _pop_our_routes(self, request: Request) -> None:
        while (routes := request.routes) and self.me.is_me(routes[0].uri):
            request.headers.pop_first_value("route")

    async def _to_device(self, incoming: Incoming, lhash: str, aor: str, device: str) -> None:
        self._pop_our_routes(incoming.request)
        b = rules.binding_of(await self.store.lookup(aor, self.engine.wall()), device)
        if b is None or self.fork is None:
            incoming.respond(404)  # unknown or expired binding id
            return
        await self.fork(incoming, lhash, aor, [b])

    async def _from_device(self, incoming: Incoming, lhash: str) -> None:
        request = incoming.request
        flow = incoming.flow
        known = False
        if request.from_.uri.host.lower() in self.domains:
            for b in await self.store.lookup(request.from_.uri.aor(), self.engine.wall()):
                ref = b.flow
                if ref is None or ref.transport != flow.transport:
                    continue
                if (ref.conn_id and ref.conn_id == flow.conn_id) or (
                    not ref.conn_id and (ref.remote_host, ref.remote_port) == flow.remote
                ):
                    known = True
                    break
        if not known:
            self.stats["refused"] += 1
            incoming.respond(403, "Relaying Denied")
            return
        self._pop_our_routes(request)
        try:
            upstream = await self.proxy.flows.flow_for(None, self.cfg.upstream)
        except (OSError, ValueError) as exc:
            log.warning("upstream %s unreachable: %s", self.cfg.upstream, exc)
            incoming.respond(503, "Upstream Unreachable")
            return
        target = Target(uri=request.uri, device="upstream", flow=upstream)
        if not self.calls.forward(incoming, lhash, target, upstream, record_route=True):
            incoming.respond(502)

    # -- housekeeping -------------------------------------------------------------------------

    async def close(self) -> None:
        await self._tasks.close()
