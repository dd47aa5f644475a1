"""The SIP application: what to do with each request the engine hands over.

OPTIONS pings to us are answered here; REGISTER goes to the registrar; requests inside a
dialog are routed by their Route set (§16.12); initial requests for our domains are
authenticated and forked to the callee's bindings (§16.5); everything else is refused
with the answer that fits (RFC 3261 §8.2.1, §21.4)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

from sipwake.app.auth import TRUSTED, Authenticator
from sipwake.app.calls import Calls
from sipwake.app.edge import EdgeService
from sipwake.app.engine import Incoming
from sipwake.app.messages import MessageService
from sipwake.app.ports import MetricsPort, NullMetrics
from sipwake.app.proxy import Proxy
from sipwake.app.register import Registrar
from sipwake.app.resume import Resumer
from sipwake.app.targets import Target, binding_target
from sipwake.policy.bindings import Binding
from sipwake.policy.flowtoken import decode_owner
from sipwake.policy.proxying import BadExtension, Me, loop_hash, validate_request
from sipwake.policy.pushbudget import PushBudget
from sipwake.sip.message import Request, Response
from sipwake.storage.base import BindingStore, UserStore
from sipwake.transport.flow import Flow

log = logging.getLogger("sipwake.router")

# RFC 3261 §27.4 and the later method RFCs.
KNOWN_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER "
    "MESSAGE UPDATE".split()
)
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, PRACK, MESSAGE, REFER, NOTIFY"
DRAIN_RETRY_AFTER = 5  # seconds, on 503s while the server drains (a restart's length)
# Requests that are never challenged: they belong to a transaction or dialog already
# authorised (RFC 3261 §22.1: CANCEL and ACK cannot be challenged).
UNCHALLENGED = frozenset({"ACK", "CANCEL", "PRACK", "BYE", "NOTIFY", "UPDATE", "INFO"})


class SipApp:
    def __init__(
        self,
        *,
        me: Me,
        domains: set[str],
        registrar: Registrar,
        proxy: Proxy,
        calls: Calls,
        bindings: BindingStore,
        users: UserStore,
        auth: Authenticator | None,
        relay_foreign: bool = False,
        reveal_unknown_users: bool = True,
        push_budget: PushBudget | None = None,
        message_budget: PushBudget | None = None,
        messages: MessageService | None = None,
        target_of: Callable[[Binding], Target] = binding_target,
        edge: EdgeService | None = None,
        resumer: Resumer | None = None,
    ) -> None:
        # Edge mode (docs/edge-mode.md): REGISTERs and initial requests go through it.
        self.edge = edge
        if edge is not None:
            edge.fork = self.fork_from_upstream
        self.target_of = target_of
        # Takes over a dead node's held call when its INVITE or CANCEL reaches us.
        self.resumer = resumer
        self.me = me
        self.domains = domains
        self.registrar = registrar
        self.proxy = proxy
        self.calls = calls
        self.bindings = bindings
        self.users = users
        self.auth = auth
        self.relay_foreign = relay_foreign
        self.reveal_unknown_users = reveal_unknown_users
        self.push_budget = push_budget
        # Message alert pushes have buckets of their own: a chat burst must not use up the
        # budget a call needs to ring the device (same limits, [push] max_per_*).
        self.message_budget = message_budget
        self.messages = messages
        self.metrics: MetricsPort = NullMetrics()
        self.stray_responses = 0

    def is_local_domain(self, host: str) -> bool:
        host = host.strip("[]").lower()
        return host in self.domains or host in self.me.hosts

    # -- requests ---------------------------------------------------------------------------
    def on_request(self, incoming: Incoming) -> Awaitable[None] | None:
        req = incoming.request
        method = req.method
        if method == "ACK":
            if incoming.txn_id is None and req.to.tag:
                # The ACK for a 2xx: end to end, routed like any in-dialog request.
                return self.route_in_dialog(incoming, loop_hash(req))
            return None
        if method not in KNOWN_METHODS:
            incoming.respond(501, extra=[("Allow", ALLOW)])  # §21.5.2
            return None
        uri = req.ruri
        if uri.scheme not in ("sip", "sips"):
            incoming.respond(416)  # §21.4.16 Unsupported URI Scheme
            return None
        if method == "OPTIONS" and uri.user is None and self.me.is_me(uri) and not req.to.tag:
            incoming.respond(
                200,
                extra=[
                    ("Allow", ALLOW),
                    ("Accept", "application/sdp"),
                    ("Supported", "path, outbound, gruu"),
                ],
            )
            return None
        if method == "INVITE" and self.calls.draining and not req.to.tag:
            # Shutting down (SIGTERM): a new call goes elsewhere or comes back later
            # (RFC 3261 §21.5.4); calls in progress go on.
            incoming.respond(503, extra=[("Retry-After", str(DRAIN_RETRY_AFTER))])
            return None
        if method == "REGISTER" and self._strip_own_routes(req):
            # For us as registrar (§10.3), not proxied: no loop or hop checks apply.
            if not self.is_local_domain(req.ruri.host):
                incoming.respond(403, "Not Our Domain")
                return None
            if self.edge is not None:
                return self.edge.register(incoming)
            return self.registrar.handle(incoming)
        lhash = loop_hash(req)
        try:
            validate_request(req, self.me, lhash)
        except BadExtension as err:
            incoming.respond(420, extra=[("Unsupported", ", ".join(err.unsupported))])
            return None
        if req.to.tag:
            return self.route_in_dialog(incoming, lhash)
        if self.edge is not None:
            return self.edge.route(incoming, lhash)
        # Initial request: strip Route entries that point at us (a preloaded outbound proxy
        # route, §16.4); anything left names the next hop.
        while (routes := req.routes) and self.me.is_me(routes[0].uri):
            owned = decode_owner(self.proxy.secret, routes[0].uri.user)
            req.headers.pop_first_value("route")
            if owned is not None:
                # From a peer node: a device whose connection we own (app/cluster.py).
                self._relay_owned(incoming, lhash, owned)
                return None
        if req.routes:
            return self.route_in_dialog(incoming, lhash)
        if self.is_local_domain(uri.host):
            return self._call(incoming, lhash)
        if self.relay_foreign:
            return self._relay(incoming, lhash)
        incoming.respond(403, "Relaying Denied")
        return None

    def _strip_own_routes(self, req: Request) -> bool:
        """Remove the Route entries that name us from a REGISTER; True when none is left.

        A UA configured with us as its outbound proxy pre-loads a Route to us (RFC 3261
        §8.1.2), baresip's ``outbound=`` among them. Loose routing puts our URI first in
        Route; a strict-routing UA puts it in the Request-URI and the real Request-URI
        last in Route, which §16.4 tells us to restore. Any of our hosts and ports counts
        (Me: listeners, advertised names, domains)."""
        routes = req.routes
        if not routes:
            return True
        last = routes[-1].uri
        if self.me.is_me(req.ruri) and "lr" not in req.ruri.params and "lr" not in last.params:
            # §16.4: a strict-routed request; the last Route value is the Request-URI.
            req.set_uri(last)
            req.headers.remove("route")
            for r in routes[:-1]:
                req.headers.add("Route", str(r))
        while (routes := req.routes) and self.me.is_me(routes[0].uri):
            req.headers.pop_first_value("route")
        return not req.routes

    async def _call(self, incoming: Incoming, lhash: str) -> None:
        """A request for one of our users: authenticate a local caller, look the callee
        up and fork to every binding in parallel (§16.5, §16.6)."""
        req = incoming.request
        resumer = self.resumer
        if resumer is not None and req.method == "INVITE" and await resumer.retransmitted(incoming):
            return  # a held call of a node that died: this is its caller again
        # Who the caller is: TRUSTED (auth off, or a trusted peer), the user it proved to
        # be, or None: a caller from another domain is never challenged, so it has proved
        # nothing and must not learn which of our users exist.
        caller: str | None = TRUSTED
        if self.auth is not None and not self.auth.skips(incoming):
            if req.method in UNCHALLENGED or not self.is_local_domain(req.from_.uri.host):
                caller = None
            else:
                caller = await self.auth.check(incoming, proxy=True)
                if caller is None:
                    return
                if caller not in (TRUSTED, req.from_.uri.user):
                    incoming.respond(403, "From Does Not Match The Authenticated User")
                    return
        aor = req.ruri.aor()
        # StorageUnavailable -> 503 with Retry-After (engine.py).
        bindings = await self.bindings.lookup(aor, self.calls.engine.wall())
        if not bindings:
            incoming.respond(await self._no_binding_status(req.ruri.user, caller))
            return
        await self.fork(incoming, lhash, aor, bindings, caller)

    async def fork_from_upstream(
        self, incoming: Incoming, lhash: str, aor: str, bindings: list[Binding]
    ) -> None:
        """Edge mode: a call the upstream registrar sent for one of its bindings here. The
        upstream relays every caller, so it is a peer without a source push budget."""
        await self.fork(incoming, lhash, aor, bindings, TRUSTED, from_upstream=True)

    async def fork(
        self,
        incoming: Incoming,
        lhash: str,
        aor: str,
        bindings: list[Binding],
        caller: str | None,
        *,
        from_upstream: bool = False,
    ) -> None:
        """Ring the live bindings and hold the call for the sleeping ones (push first);
        the one call path of registrar and edge mode."""
        req = incoming.request
        bindings.sort(key=lambda b: -b.q)
        # MESSAGE while a device sleeps: stored, alert-pushed, delivered on registration.
        messages = self.messages
        if req.method == "MESSAGE" and messages is not None:
            admit = partial(
                self._push_allowed, incoming, caller, peer=from_upstream, budget=self.message_budget
            )
            if await messages.handle(incoming, aor, bindings, admit):
                return
        if req.method == "INVITE":
            admit = partial(self._push_allowed, incoming, caller, peer=from_upstream)
            await self.calls.invite(incoming, lhash, aor, bindings, admit)
        else:
            await self.calls.fork(incoming, lhash, [self.target_of(b) for b in bindings])

    def _push_allowed(
        self,
        incoming: Incoming,
        caller: str | None,
        sleeping: list[Binding],
        peer: bool,
        *,
        budget: PushBudget | None = None,
    ) -> list[Binding]:
        """The sleeping bindings this call (or message: ``budget``) may push
        (policy/pushbudget.py); the source is the authenticated user, else the address;
        trusted peers have no source budget."""
        budget = budget if budget is not None else self.push_budget
        if budget is None:
            return sleeping
        ip = incoming.flow.remote[0]
        if peer or (self.auth is not None and self.auth.trusted.contains(ip)):
            source = None
        elif caller is None or caller == TRUSTED:
            source = "ip:" + ip
        else:
            source = "user:" + caller
        devices = [b.device_key for b in sleeping]
        now = self.calls.engine.now()
        verdict = budget.admit(devices, source, now, anonymous=caller is None)
        for _, why in verdict.refused:
            self.metrics.refused(why.value)
        return [b for b in sleeping if b.device_key in verdict.push]

    async def _no_binding_status(self, user: str | None, caller: str | None) -> int:
        """404 for a user that does not exist, but only to a caller who authenticated (or
        a trusted peer) and only if config allows it; otherwise 480 for everyone, so an
        outsider cannot probe which users exist."""
        if not (self.reveal_unknown_users and self.auth is not None and self.auth.cfg.enabled):
            return 480
        if caller is None or user is None:
            return 480
        known = await self.users.get_user(user, self.auth.realm)
        return 480 if known is not None else 404

    async def _relay(self, incoming: Incoming, lhash: str) -> None:
        target = Target(uri=incoming.request.uri, device="relay")
        if not await self.calls.relay(incoming, lhash, target):
            incoming.respond(502)

    def _relay_owned(self, incoming: Incoming, lhash: str, flow: Flow) -> None:
        """A peer node sends a request for a device whose connection we own (the Route it
        carried held an owner token): forward it over that connection, Record-Routing so
        the dialog keeps crossing us (RFC 3327 §5.2, RFC 5626 §5.3)."""
        if not self.proxy.flows.usable(flow):
            incoming.respond(430)  # RFC 5626 §11.5 Flow Failed: the peer may try another
            return
        target = Target(uri=incoming.request.uri, device="owned", flow=flow)
        if not self.calls.forward(incoming, lhash, target, flow, record_route=True):
            incoming.respond(480)

    # -- in-dialog requests -----------------------------------------------------------------
    def route_in_dialog(self, incoming: Incoming, lhash: str) -> Awaitable[None] | None:
        """Loose routing (§16.4, §16.12): forward over the flow our Route token names (the
        other side of the dialog), else to the next Route or the Request-URI. Synchronous
        when the token names a usable flow (the common case: ACK and BYE of our own
        calls); a coroutine when a next hop must be resolved."""
        flow = self.proxy.dialog_flow(incoming)
        if flow is not None:
            self._forward_in_dialog(incoming, lhash, flow)
            return None
        return self._resolve_in_dialog(incoming, lhash)

    async def _resolve_in_dialog(self, incoming: Incoming, lhash: str) -> None:
        try:
            flow = await self.proxy.flows.flow_for(None, self.proxy.next_hop(incoming))
        except (OSError, ValueError) as exc:
            log.info("in-dialog next hop unreachable: %s", exc)
            if incoming.request.method != "ACK":
                incoming.respond(480)
            return
        self._forward_in_dialog(incoming, lhash, flow)

    def _forward_in_dialog(self, incoming: Incoming, lhash: str, flow: Flow) -> None:
        request = incoming.request
        if request.method == "ACK":
            self.proxy.forward_ack(incoming, lhash, flow)
            return
        device = f"dialog:{flow.transport}:{flow.remote}"
        target = Target(uri=request.uri, device=device, flow=flow)
        if not self.calls.forward(incoming, lhash, target, flow, record_route=False):
            incoming.respond(480)

    def on_cancel(self, incoming: Incoming, invite_txn_id: str | None) -> Awaitable[None] | None:
        if self.calls.on_cancel(incoming, invite_txn_id):
            return None
        if self.resumer is not None and invite_txn_id is None:
            return self.resumer.cancelled(incoming)  # 481 unless a dead node held it
        incoming.respond(481)  # §9.2: nothing to cancel
        return None

    # -- transaction events -----------------------------------------------------------------
    def on_response(self, response: Response, txn_id: str) -> None:
        if self.edge is not None and self.edge.on_response(response, txn_id):
            return
        if self.messages is not None and self.messages.on_response(response, txn_id):
            return  # a stored MESSAGE delivered by us, not a forwarded branch
        self.calls.on_response(response, txn_id)

    def on_stray_response(self, response: Response, flow: Flow) -> None:
        # RFC 6026 §8.4: a stateful proxy discards responses that match no transaction.
        self.stray_responses += 1

    def on_timeout(self, txn_id: str) -> None:
        if self.edge is not None and self.edge.on_timeout(txn_id):
            return
        if self.messages is None or not self.messages.on_timeout(txn_id):
            self.calls.on_timeout(txn_id)

    def on_terminated(self, txn_id: str) -> None:
        if self.messages is None or not self.messages.on_terminated(txn_id):
            self.calls.on_terminated(txn_id)
