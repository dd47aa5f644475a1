"""Calls that outlive their process (issue 11 step 3): taking over a held call from the
store.

``app/calls.py`` writes every held call to the cluster's held-call registry (SQLite file
or Redis; storage/cluster.py): the INVITE as held, the caller's flow, the devices' states,
the hold window, the call UUID. This module reads it back and hands it to
``Calls.resume`` with a new server transaction (``Engine.adopt``), so a call whose node
died is still delivered when its device wakes, with the same UUID and no second push:

* at start-up (``start``): a restarted node takes back the calls it held (on SQLite every
  call in the file is its own). The caller that got ``110 Push sent`` does not retransmit
  (RFC 3261 §17.1.1.2: a provisional stops Timer A), so the node must act first;
* when a peer node is gone (``sweep``, from the cluster heartbeat): its calls are claimed,
  one node winning each (``claim_held`` is atomic);
* at once, when the caller's retransmitted INVITE (``retransmitted``) or its CANCEL
  (``cancelled``) reaches a node other than the dead owner: found by Call-ID and Via
  branch (``invite_key``). A CANCEL for a call a live node holds (one that took it over
  already) is passed on to that node over the bus.

The caller is answered over the flow it used: on UDP from our socket to its address
(§18.2.2, RFC 3581); over TCP/TLS a new connection to its Via's sent-by (§18.2.2), and if
none can be opened the call ends (devices that wake get INVITE + CANCEL, the grace rule).
"""

from __future__ import annotations

import asyncio
import logging

from sipwake.app.calls import Calls
from sipwake.app.cluster import ClusterNode, node_answers
from sipwake.app.engine import Engine, Incoming
from sipwake.app.targets import Flows
from sipwake.policy.call import invite_key
from sipwake.sip.codec import Limits, parse_message
from sipwake.sip.errors import ParseError
from sipwake.sip.flows import DEFAULT_PORTS
from sipwake.sip.message import Request, Response
from sipwake.storage.base import BindingStore, StorageError
from sipwake.storage.cluster import Cluster, HeldEntry
from sipwake.transport.flow import Flow

log = logging.getLogger("sipwake.resume")

CONNECT_TIMEOUT = 2.0  # seconds to reach a TCP/TLS caller again


class Resumer:
    def __init__(
        self,
        *,
        engine: Engine,
        calls: Calls,
        registry: Cluster,
        node: ClusterNode,
        bindings: BindingStore,
        flows: Flows,
        limits: Limits,
    ) -> None:
        self.engine = engine
        self.calls = calls
        self.registry = registry
        self.node = node
        self.bindings = bindings
        self.flows = flows
        self.limits = limits
        self._sweeping: asyncio.Task[int] | None = None

    async def start(self) -> int:
        """Take over the calls held here before a restart, and those of dead nodes."""
        return await self.sweep()

    def on_peers_lost(self) -> None:
        """Cluster heartbeat hook: a node disappeared; adopt its calls (one sweep at a time)."""
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = asyncio.get_running_loop().create_task(self.sweep())

    async def sweep(self) -> int:
        """Adopt every held call whose owner is gone (or is this node, restarted)."""
        try:
            entries = await self.registry.list_held()
        except StorageError as exc:
            log.warning("held calls not read: %s", exc)
            return 0
        adopted = 0
        for entry in entries:
            if entry.call_id in self.calls.by_id or not self._orphan(entry):
                continue
            try:
                adopted += await self.adopt(entry)
            except StorageError as exc:
                log.warning("held call %s not taken over: %s", entry.call_id, exc)
        if adopted:
            log.info("took over %d held call(s)", adopted)
        return adopted

    def _orphan(self, entry: HeldEntry) -> bool:
        node = self.node
        if not node.shared or entry.node_id == node.node_id:
            return True  # one process owns the store, or our own previous life
        return entry.node_id not in node.peers

    async def retransmitted(self, incoming: Incoming) -> bool:
        """An initial INVITE: is it the retransmission of a call a dead node held? Then it
        is resumed on this new server transaction (True)."""
        if not self.node.shared:
            return False  # one process: a restart took its calls back at start-up
        entry = await self._dead_owners(invite_key(incoming.request))
        return entry is not None and await self.adopt(entry, incoming=incoming)

    async def cancelled(self, cancel: Incoming) -> None:
        """A CANCEL that matches no transaction here (§9.2). For a call a dead node held:
        take it over and cancel it (200 to the CANCEL, 487 to the INVITE). For a call
        another live node holds (a survivor that took it over from the dead node the
        caller sent its INVITE to, or a CANCEL that took another path): 200 here, and
        the cancel goes on over the bus to that node (``ClusterNode.forward_cancel``),
        which answers the INVITE 487. Else 481."""
        entry = None
        if self.node.shared:
            entry = await self.registry.held_by_invite(invite_key(cancel.request))
        if entry is not None and entry.call_id not in self.calls.by_id:
            if await self._owner_alive(entry):
                self.node.forward_cancel(entry.call_id)
                cancel.respond(200)
                return
            if await self.adopt(entry, flow=cancel.flow):
                rec = self.calls.by_id.get(entry.call_id)
                txn_id = rec.incoming.txn_id if rec is not None else None
                if self.calls.on_cancel(cancel, txn_id):
                    return
        cancel.respond(481)

    async def _dead_owners(self, key: str) -> HeldEntry | None:
        entry = await self.registry.held_by_invite(key)
        if entry is None or entry.call_id in self.calls.by_id or await self._owner_alive(entry):
            return None
        return entry

    async def _owner_alive(self, entry: HeldEntry) -> bool:
        """Does another node, alive, hold ``entry``? (Its own retransmission timers and
        its transactions apply then.)"""
        node = self.node
        if entry.node_id == node.node_id:
            return False  # our own previous life: a restart
        route = node.peers.get(entry.node_id)
        # Killed within NODE_TTL it still looks alive in the registry: ask its port.
        return route is not None and await node_answers(route)

    async def adopt(
        self, entry: HeldEntry, *, incoming: Incoming | None = None, flow: Flow | None = None
    ) -> bool:
        """Claim ``entry`` for this node and resume it; False if another node won it or
        it cannot be resumed (then it is dropped)."""
        node_id = self.node.node_id
        if entry.node_id != node_id:
            claimed = await self.registry.claim_held(entry.call_id, entry.node_id, node_id)
            if claimed is None:
                return False
            log.info("call %s taken over from %s", entry.call_id, entry.node_id)
            entry = claimed
        try:
            request: Request | Response | None = parse_message(entry.invite, self.limits)
        except ParseError:
            request = None
        if not isinstance(request, Request) or request.method != "INVITE":
            log.warning("held call %s: stored INVITE unusable; dropped", entry.call_id)
            await self.registry.drop_held(entry.call_id)
            return False
        bindings = await self.bindings.lookup(entry.aor, self.engine.wall())
        reachable = True
        if incoming is None:
            if flow is None:
                flow, reachable = await self._caller_flow(entry, request)
            incoming = self.engine.adopt(request, flow)
            if incoming is None:
                return False
        else:
            incoming.request = request  # as held: our own Routes already taken off
        self.calls.resume(incoming, entry, bindings, reachable=reachable)
        return True

    async def _caller_flow(self, entry: HeldEntry, request: Request) -> tuple[Flow, bool]:
        """Where the caller is answered, and whether it can be."""
        transport, local_host, local_port, remote_host, remote_port = entry.caller
        stored = Flow(transport, (local_host, local_port), (remote_host, remote_port))
        if transport == "UDP":
            # From the socket it used, or (not bound here: another node, new ports) from
            # any of ours: the transport picks one of the address family.
            return stored, True
        # §18.2.2: the connection is gone; open one to the address in "received" (else
        # sent-by) and the sent-by port.
        via = request.top_via
        host = (via.params.get("received") or via.host).strip("[]")
        port = via.port if via.port is not None else DEFAULT_PORTS.get(transport, 5060)
        try:
            connect = self.flows.connector.connect(transport, host, port)
            return await asyncio.wait_for(connect, CONNECT_TIMEOUT), True
        except (OSError, TimeoutError, ValueError) as exc:
            log.info("held call %s: caller %s:%d unreachable: %s", entry.call_id, host, port, exc)
            return stored, False
