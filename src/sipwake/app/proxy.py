"""Stateful forking proxy (RFC 3261 §16): forward to targets, relay the best response,
CANCEL, Timer C, and route in-dialog requests back over the flows they belong to.

The decisions are the pure ``policy.fork.Fork``; this module is the asyncio side: it opens
flows, builds the forwarded copies and applies the fork's actions.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from sipwake.app.engine import Engine, Incoming
from sipwake.policy.bindings import FlowRef
from sipwake.policy.flowtoken import FlowKey, decode_pair, encode_pair, other_side
from sipwake.policy.fork import Action, CancelBranch, Fork, Forward, Respond
from sipwake.policy.proxying import ForwardPlan, Me, forward_copy, make_branch
from sipwake.sip.flows import DEFAULT_PORTS
from sipwake.sip.message import Request, Response
from sipwake.sip.transactions.layer import TransactionGone
from sipwake.sip.uri import URI
from sipwake.transport.flow import Flow

log = logging.getLogger("sipwake.proxy")


class Connector(Protocol):
    """What the proxy needs of the transport layer."""

    def is_alive(self, flow: Flow) -> bool: ...

    async def connect(self, transport: str, host: str, port: int) -> Flow: ...


@dataclass(frozen=True, slots=True)
class Target:
    """Where one branch goes: the Request-URI, the device it reaches, and the flow it
    registered over (None: resolve the URI)."""

    uri: str
    device: str
    flow: Flow | None = None
    path: tuple[str, ...] = ()
    # False: when ``flow`` is closed do not open a new one to ``uri`` (a push binding:
    # it is pushed instead, app/router.py binding_target).
    contact_fallback: bool = True


@dataclass(eq=False, slots=True)
class CallContext:
    """One forwarded request: the caller's server transaction and its fork."""

    incoming: Incoming
    fork: Fork
    lhash: str
    record_route: bool = True
    branches: dict[str, Flow] = field(default_factory=dict)
    reserved: set[str] = field(default_factory=set)  # devices with a branch being opened
    timer: asyncio.TimerHandle | None = None
    on_final: list[Callable[[CallContext], None]] = field(default_factory=list)
    # A ghost delivers a call that already ended to a device woken for it, then cancels
    # it (the iOS-safe path): nothing it produces goes to the caller.
    ghost: bool = False


def ref_flow(ref: FlowRef) -> Flow:
    """The transport flow a stored binding names."""
    return Flow(
        ref.transport,
        (ref.local_host, ref.local_port),
        (ref.remote_host, ref.remote_port),
        ref.conn_id,
    )


def flow_key(flow: Flow) -> FlowKey:
    return FlowKey(flow.transport, flow.local, flow.remote, flow.conn_id)


class Proxy:
    def __init__(
        self,
        engine: Engine,
        connector: Connector,
        me: Me,
        *,
        advertised: dict[str, tuple[str, int]],
        secret: bytes,
        id_source: Callable[[], str],
        timer_c: float = 180.0,
        decline_ends_all: bool = True,
    ) -> None:
        self.engine = engine
        self.connector = connector
        self.me = me
        self.advertised = advertised  # transport -> (host, port) we put in Via / RR
        self.secret = secret
        self.id_source = id_source
        self.timer_c = timer_c
        self.decline_ends_all = decline_ends_all
        self.by_server: dict[str, CallContext] = {}
        self.by_client: dict[str, CallContext] = {}

    # -- initial requests -------------------------------------------------------------------
    def new_context(
        self, incoming: Incoming, lhash: str, *, record_route: bool = True, ghost: bool = False
    ) -> CallContext:
        fork = Fork(
            is_invite=incoming.request.method == "INVITE",
            timer_c=self.timer_c,
            decline_ends_all=self.decline_ends_all,
        )
        ctx = CallContext(incoming, fork, lhash, record_route, ghost=ghost)
        if incoming.txn_id is not None and not ghost:
            self.by_server[incoming.txn_id] = ctx
        return ctx

    async def deliver_and_cancel(self, ctx: CallContext, target: Target, reason: str) -> None:
        """Send the (ended) call to a device woken for it and CANCEL it at once, with
        ``reason``; the CANCEL waits for the device's first provisional answer (§9.1)."""
        ghost = self.new_context(ctx.incoming, ctx.lhash, ghost=True)
        if await self.add_target(ghost, target):
            self._apply(ghost, ghost.fork.cancel_all(reason))

    async def add_target(self, ctx: CallContext, target: Target) -> bool:
        """Open one branch towards ``target``; False if that device already has one, the
        call is over, or the target cannot be reached."""
        fork = ctx.fork
        if fork.finished or fork.cancelled or fork.has_device(target.device):
            return False
        if target.device in ctx.reserved:
            return False
        ctx.reserved.add(target.device)
        try:
            try:
                flow = await self.flow_for(
                    target.flow,
                    target.path[0] if target.path else target.uri,
                    fallback=target.contact_fallback,
                )
            except (OSError, ValueError) as exc:
                log.info("target %s unreachable: %s", target.uri, exc)
                return False
            return self.open_branch(ctx, target, flow)
        finally:
            ctx.reserved.discard(target.device)

    def open_branch(self, ctx: CallContext, target: Target, flow: Flow) -> bool:
        """Send the branch for ``target`` over ``flow`` now (no lookup, no await)."""
        fork = ctx.fork
        if fork.finished or fork.cancelled or fork.has_device(target.device):
            return False
        plan = ForwardPlan(
            target=target.uri,
            via=self.via_for(flow, make_branch(self.id_source(), ctx.lhash)),
            record_route=self.record_route_for(ctx.incoming.flow, flow) if ctx.record_route else (),
            path=target.path,
        )
        txn_id = self.engine.send_request(forward_copy(ctx.incoming.request, plan), flow)
        fork.add_branch(txn_id, target.device, self.engine.now())
        ctx.branches[txn_id] = flow
        self.by_client[txn_id] = ctx
        self._arm(ctx)
        return True

    def discard(self, ctx: CallContext) -> None:
        """Forget a context that never got a branch (the caller answers the request)."""
        self._drop(ctx)

    def relay_owned(self, incoming: Incoming, lhash: str, owned: FlowKey) -> None:
        """A peer node sends a request for a device whose connection we own (the Route it
        carried held an owner token): forward it over that connection, Record-Routing so
        the dialog keeps crossing us (RFC 3327 §5.2, RFC 5626 §5.3)."""
        flow = Flow(owned.transport, owned.local, owned.remote, owned.conn_id)
        if flow.transport != "UDP" and not self.connector.is_alive(flow):
            incoming.respond(430)  # RFC 5626 §11.5 Flow Failed: the peer may try another
            return
        ctx = self.new_context(incoming, lhash)
        target = Target(uri=incoming.request.uri, device="owned", flow=flow)
        if not self.open_branch(ctx, target, flow):
            self.discard(ctx)
            incoming.respond(480)

    # -- flows ------------------------------------------------------------------------------
    async def flow_for(self, flow: Flow | None, uri_text: str, *, fallback: bool = True) -> Flow:
        """The registered flow when it still works, else a flow to the URI (§18.1.1),
        unless ``fallback`` is False (ValueError: the registered connection is gone)."""
        if flow is not None and (flow.transport == "UDP" or self.connector.is_alive(flow)):
            return flow
        if flow is not None and not fallback:
            raise ValueError("its connection is closed")
        uri = URI.parse(
            uri_text.strip("<>").split(">")[0] if uri_text.startswith("<") else uri_text
        )
        transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).upper()
        host = uri.host.strip("[]")
        port = uri.port or DEFAULT_PORTS.get(transport, 5060)
        ip = await self._resolve(host, port)
        if transport == "UDP":
            local = self.advertised_local("UDP")
            return Flow("UDP", local, (ip, port))
        return await self.connector.connect(transport, ip, port)

    def advertised_local(self, transport: str) -> tuple[str, int]:
        try:
            return self.advertised[transport]
        except KeyError:
            raise ValueError(f"no {transport} listener to send from") from None

    @staticmethod
    async def _resolve(host: str, port: int) -> str:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            return host
        except OSError:
            pass
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {host}")
        return str(infos[0][4][0])

    def via_for(self, flow: Flow, branch: str) -> str:
        host, port = self.advertised.get(flow.transport, flow.local)
        host = f"[{host}]" if ":" in host else host
        return f"SIP/2.0/{flow.transport} {host}:{port};branch={branch}"

    def _rr(self, transport: str, user: str) -> str:
        host, port = self.advertised.get(transport, ("127.0.0.1", 5060))
        host = f"[{host}]" if ":" in host else host
        tparam = "" if transport == "UDP" else f";transport={transport.lower()}"
        return f"<sip:{user}@{host}:{port}{tparam};lr>"

    def record_route_for(self, inbound: Flow, outbound: Flow) -> tuple[str, ...]:
        """Our Record-Route (§16.6 step 4) carrying both flows; two entries when the
        transport changes, the one facing the callee on top (RFC 5658 §3.4)."""
        user = encode_pair(self.secret, flow_key(inbound), flow_key(outbound))
        if inbound.transport == outbound.transport:
            return (self._rr(outbound.transport, user),)
        return (self._rr(outbound.transport, user), self._rr(inbound.transport, user))

    # -- in-dialog requests -----------------------------------------------------------------
    def route_in_dialog(self, incoming: Incoming, lhash: str) -> Awaitable[None] | None:
        """Loose routing (§16.4, §16.12): pop our Route entries; forward over the flow the
        token names (the other side of the dialog), else to the next Route or the
        Request-URI. Synchronous when the token names a usable flow (the common case:
        ACK and BYE of our own calls); a coroutine when a next hop must be resolved."""
        request = incoming.request
        pair = None
        while True:
            routes = request.routes
            if not routes or not self.me.is_me(routes[0].uri):
                break
            pair = pair or decode_pair(self.secret, routes[0].uri.user)
            request.headers.pop_first_value("route")
        if pair is not None:
            fk = other_side(pair, flow_key(incoming.flow))
            if fk is not None:
                flow = Flow(fk.transport, fk.local, fk.remote, fk.conn_id)
                if flow.transport == "UDP" or self.connector.is_alive(flow):
                    self._forward_in_dialog(incoming, lhash, flow)
                    return None
        return self._resolve_in_dialog(incoming, lhash)

    async def _resolve_in_dialog(self, incoming: Incoming, lhash: str) -> None:
        request = incoming.request
        routes = request.routes
        try:
            flow = await self.flow_for(None, str(routes[0].uri) if routes else request.uri)
        except (OSError, ValueError) as exc:
            log.info("in-dialog next hop unreachable: %s", exc)
            if request.method != "ACK":
                incoming.respond(480)
            return
        self._forward_in_dialog(incoming, lhash, flow)

    def _forward_in_dialog(self, incoming: Incoming, lhash: str, flow: Flow) -> None:
        request = incoming.request
        if request.method == "ACK":
            # ACK for a 2xx: its own transaction, forwarded statelessly (§16.11, RFC 6026).
            plan = ForwardPlan(target="", via=self.via_for(flow, make_branch("ack", lhash)))
            self.engine.send_stateless(forward_copy(request, plan).serialise(), flow)
            return None
        ctx = self.new_context(incoming, lhash, record_route=False)
        device = f"dialog:{flow.transport}:{flow.remote}"
        if not self.open_branch(ctx, Target(uri=request.uri, device=device, flow=flow), flow):
            self.discard(ctx)
            incoming.respond(480)
        return None

    # -- events from the transaction layer --------------------------------------------------
    def on_response(self, response: Response, txn_id: str) -> None:
        ctx = self.by_client.get(txn_id)
        if ctx is None:
            return
        response.headers.pop_first_value("via")  # ours (§16.7 step 3)
        if ctx.ghost and 200 <= response.status < 300:
            # The device answered a call that had already ended (its 200 crossed our
            # CANCEL): complete and end that dialog ourselves so it does not hang.
            self._hang_up(ctx, txn_id, response)
            return
        if "via" not in response.headers:
            return  # it was addressed to us alone: nothing to relay
        self._apply(ctx, ctx.fork.on_response(txn_id, response, self.engine.now()))

    def on_timeout(self, txn_id: str) -> None:
        ctx = self.by_client.get(txn_id)
        if ctx is not None:
            self._apply(ctx, ctx.fork.on_timeout(txn_id))

    def on_terminated(self, txn_id: str) -> None:
        ctx = self.by_client.pop(txn_id, None)
        if ctx is not None:
            ctx.branches.pop(txn_id, None)
            if not ctx.branches and ctx.fork.finished:
                self._drop(ctx)
            return
        ctx = self.by_server.get(txn_id)
        if ctx is not None and ctx.fork.finished and not ctx.branches:
            self._drop(ctx)

    def on_cancel(self, cancel: Incoming, invite_txn_id: str | None) -> bool:
        """A CANCEL from the caller (§16.10). False when it matches no call of ours."""
        ctx = self.by_server.get(invite_txn_id) if invite_txn_id else None
        if ctx is None:
            return False
        cancel.respond(200)
        self._apply(ctx, ctx.fork.on_cancel())
        return True

    # -- applying the fork's decisions ------------------------------------------------------
    def apply(self, ctx: CallContext, actions: list[Action]) -> None:
        self._apply(ctx, actions)

    def _apply(self, ctx: CallContext, actions: list[Action]) -> None:
        was_final = ctx.incoming.answered >= 200
        for action in actions:
            if isinstance(action, CancelBranch):
                self._send_cancel(ctx, action.key, action.reason)
            elif ctx.ghost:
                continue  # the caller is long gone
            elif isinstance(action, Forward):
                ctx.incoming.respond(0, response=action.response)
            elif isinstance(action, Respond):
                ctx.incoming.respond(action.status, extra=list(action.headers))
        if not was_final and ctx.incoming.answered >= 200 and not ctx.ghost:
            # Run once, then drop: hooks usually close a cycle back to the context
            # (context -> hook -> held call -> context), and reference counting should
            # free a finished call without the cycle collector (server.tune_gc).
            hooks, ctx.on_final = ctx.on_final, []
            for hook in hooks:
                hook(ctx)
        self._arm(ctx)

    def _hang_up(self, ctx: CallContext, txn_id: str, response: Response) -> None:
        """ACK a 2xx nobody upstream wants, then BYE it (RFC 3261 §13.2.2.4, §15)."""
        flow = ctx.branches.get(txn_id)
        contacts = response.contacts
        if flow is None or not contacts:
            return
        target = str(contacts[0].uri)
        cseq = response.cseq.seq
        host, port = self.advertised.get(flow.transport, flow.local)
        host = f"[{host}]" if ":" in host else host
        for method, seq in (("ACK", cseq), ("BYE", cseq + 1)):
            request = Request(method, target)
            h = request.headers
            h.add("Via", f"SIP/2.0/{flow.transport} {host}:{port};branch=z9hG4bK{self.id_source()}")
            h.add("Max-Forwards", "70")
            h.add("From", response.headers.get("from") or "")
            h.add("To", response.headers.get("to") or "")
            h.add("Call-ID", response.call_id)
            h.add("CSeq", f"{seq} {method}")
            h.add("Reason", 'SIP;cause=487;text="Call already ended"')
            h.add("Content-Length", "0")
            if method == "ACK":
                self.engine.send_stateless(request.serialise(), flow)
            else:
                self.engine.send_request(request, flow)

    def _send_cancel(self, ctx: CallContext, key: str, reason: str | None) -> None:
        flow = ctx.branches.get(key)
        if flow is None:
            return
        try:
            cancel = self.engine.txn.make_cancel(key, reason)
        except TransactionGone:
            return
        self.engine.send_request(cancel, flow)

    def _arm(self, ctx: CallContext) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None
        when = ctx.fork.next_deadline()
        if when is not None:
            ctx.timer = self.engine.loop.call_at(when, self._on_timer_c, ctx)

    def _on_timer_c(self, ctx: CallContext) -> None:
        ctx.timer = None
        self._apply(ctx, ctx.fork.on_timer(self.engine.now()))

    def _drop(self, ctx: CallContext) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None
        txn_id = ctx.incoming.txn_id
        if txn_id is not None and self.by_server.get(txn_id) is ctx:
            del self.by_server[txn_id]
