"""The forwarder of a stateful proxy (RFC 3261 §16.6): build and send the forwarded copy of
a request, its CANCEL, and route in-dialog requests back over the flows they belong to.

It knows no fork and keeps no call: ``app/calls.py`` decides what to send (from the pure
``policy.call.Call``) and this module sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sipwake.app.engine import Engine, Incoming
from sipwake.app.targets import Flows, Target
from sipwake.policy.flowtoken import decode_pair, encode_pair, other_side
from sipwake.policy.proxying import ForwardPlan, Me, forward_copy, make_branch
from sipwake.sip.message import Request, Response
from sipwake.sip.transactions.layer import TransactionGone
from sipwake.transport.flow import Flow

log = logging.getLogger("sipwake.proxy")

# Pair tokens this process issued or verified, with their flows. Every in-dialog request
# carries its dialog's token (our Record-Route user part, policy/flowtoken.py), so the ACK
# and the BYE of each call paid a base64 decode and an HMAC to learn what forwarding the
# INVITE already knew: 3.9 % of the server's CPU at its call capacity (perf). What is kept
# was signed or checked under this process's secret, so it needs no check again. Bounded
# as the UDP flow cache is (transport/udp.py): emptied when full; a token no longer here
# is verified as before. An entry costs ~0.3 KB (a token issued here: the key and a tuple
# of flows held anyway) to ~1 KB (a token decoded: its own flows), so 8,192 of them stay
# under 10 MB; at 1,000 calls/s that covers each call's ACK, and its BYE within ~8 s.
PAIR_CACHE = 8_192


class Proxy:
    def __init__(
        self,
        engine: Engine,
        flows: Flows,
        me: Me,
        *,
        secret: bytes,
        id_source: Callable[[], str],
    ) -> None:
        self.engine = engine
        self.flows = flows
        self.me = me
        self.advertised = flows.advertised  # transport -> (host, port) in Via / RR
        self.secret = secret
        self.id_source = id_source
        self._pairs: dict[str, tuple[Flow, Flow]] = {}  # token -> flows (PAIR_CACHE)

    # -- sending ----------------------------------------------------------------------------
    def send_branch(
        self, incoming: Incoming, lhash: str, target: Target, flow: Flow, record_route: bool
    ) -> str:
        """Forward a copy of the caller's request to ``target`` over ``flow`` (§16.6);
        returns the client transaction id."""
        plan = ForwardPlan(
            target=target.uri,
            via=self.via_for(flow, make_branch(self.id_source(), lhash)),
            record_route=self.record_route_for(incoming.flow, flow) if record_route else (),
            path=target.path,
        )
        return self.engine.send_request(forward_copy(incoming.request, plan), flow)

    def send_cancel(self, key: str, flow: Flow, reason: str | None) -> None:
        """CANCEL the branch ``key`` (§9.1, with RFC 3326 Reason when given)."""
        try:
            cancel = self.engine.txn.make_cancel(key, reason)
        except TransactionGone:
            return
        self.engine.send_request(cancel, flow)

    def forward_ack(self, incoming: Incoming, lhash: str, flow: Flow) -> None:
        """The ACK for a 2xx: its own transaction, forwarded statelessly (§16.11, RFC 6026)."""
        plan = ForwardPlan(target="", via=self.via_for(flow, make_branch("ack", lhash)))
        self.engine.send_stateless(forward_copy(incoming.request, plan).serialise(), flow)

    def hang_up(self, flow: Flow, response: Response) -> None:
        """ACK a 2xx nobody upstream wants, then BYE it (RFC 3261 §13.2.2.4, §15)."""
        contacts = response.contacts
        if not contacts:
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

    # -- in-dialog requests -----------------------------------------------------------------
    def dialog_flow(self, incoming: Incoming) -> Flow | None:
        """Loose routing (§16.4, §16.12): pop our Route entries; the flow our token names
        (the other side of the dialog) when it is still usable, else None (resolve the next
        Route or the Request-URI)."""
        request = incoming.request
        pair = None
        while True:
            routes = request.routes
            if not routes or not self.me.is_me(routes[0].uri):
                break
            pair = pair or self.pair_of(routes[0].uri.user)
            request.headers.pop_first_value("route")
        if pair is not None:
            flow = other_side(pair, incoming.flow)
            if flow is not None and self.flows.usable(flow):
                return flow
        return None

    def pair_of(self, user: str | None) -> tuple[Flow, Flow] | None:
        """The two flows a pair token names (``decode_pair``), from PAIR_CACHE when this
        process issued or checked it already."""
        if user is None:
            return None
        pair = self._pairs.get(user)
        if pair is None:
            pair = decode_pair(self.secret, user)
            if pair is not None:
                self._keep(user, pair)
        return pair

    def _keep(self, user: str, pair: tuple[Flow, Flow]) -> None:
        pairs = self._pairs
        if len(pairs) >= PAIR_CACHE:
            pairs.clear()
        pairs[user] = pair

    def next_hop(self, incoming: Incoming) -> str:
        request = incoming.request
        routes = request.routes
        return str(routes[0].uri) if routes else request.uri

    # -- Via and Record-Route ---------------------------------------------------------------
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
        user = encode_pair(self.secret, inbound, outbound)
        self._keep(user, (inbound, outbound))
        if inbound.transport == outbound.transport:
            return (self._rr(outbound.transport, user),)
        return (self._rr(outbound.transport, user), self._rr(inbound.transport, user))
