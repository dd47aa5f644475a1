"""This node's part in a cluster of nodes (or worker processes) sharing one store.

* Heartbeat: the node announces where peers reach it, and keeps a local copy of the live
  nodes so the call path never waits for Redis to route.
* Routing to a device whose connection another node owns (``target``): through that node,
  with a Route whose user part is a signed owner token naming the flow (RFC 3327 §5.2 /
  RFC 5626 §5.3 style: the owner forwards over that very connection, Record-Routing so the
  dialog keeps crossing it).
* The bus: "a device registered" (a held call on another node may be waiting for it), "a
  call was declined" (the decline link landed on a node that does not hold the call) and
  "a call was cancelled" (the caller's CANCEL reached a node that does not hold it:
  app/resume.py ``cancelled``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from sipwake.app.targets import Target, binding_flow, binding_target, ref_flow
from sipwake.app.tasks import Tasks
from sipwake.policy.bindings import Binding, FlowRef
from sipwake.policy.flowtoken import encode_owner
from sipwake.storage.base import StorageError
from sipwake.storage.cluster import Cluster, HeldEntry
from sipwake.storage.codec import decode_bindings, encode_bindings

log = logging.getLogger("sipwake.cluster")

HEARTBEAT = 3.0  # seconds between announcements
NODE_TTL = 10.0  # a node silent this long is gone: its connections are not usable


class _Event(msgspec.Struct, array_like=True):
    kind: str  # "reg" | "decline" | "cancel"
    origin: str  # node id of the sender
    route: str  # and how it is reached: a node that joined since our last refresh is known
    aor: str = ""
    blob: bytes = b""  # "reg": the bindings added, storage/codec.py format
    call_id: str = ""  # "decline", "cancel"
    token: str = ""
    reason: str = ""


RegisteredHandler = Callable[[str, tuple[Binding, ...]], None]
DeclineHandler = Callable[[str, str, str], object]
CancelHandler = Callable[[str], object]


class ClusterNode:
    def __init__(
        self,
        cluster: Cluster,
        *,
        node_id: str,
        route: str,
        secret: bytes,
        is_alive: Callable[[FlowRef], bool],
        wall: Callable[[], float] = time.time,
    ) -> None:
        # Node liveness is compared across machines: the wall clock (the engine's).
        self.wall = wall
        self.cluster = cluster
        self.shared = cluster.shared
        self.node_id = node_id
        self.route = route  # how peers reach us: "host:port;transport=tcp"
        self.secret = secret
        self._local_alive = is_alive
        self.peers: dict[str, str] = {node_id: route}
        self.on_registered: RegisteredHandler | None = None
        self.on_decline: DeclineHandler | None = None
        self.on_cancel: CancelHandler | None = None
        self.on_peers_lost: Callable[[], None] | None = None  # their held calls are orphans
        self._tasks = Tasks()
        # Held-call registry writes, one call's in order and the last one winning:
        # call UUID -> the latest snapshot (entry, ttl), or None to drop it.
        self._latest: dict[str, tuple[HeldEntry, float] | None] = {}
        self._writing: set[str] = set()

    async def start(self) -> None:
        """Announce ourselves and learn the peers; refuses a node id another live node
        already uses with a different route (two nodes would steal each other's devices)."""
        now = self.wall()
        peers = await self.cluster.nodes(now)
        other = peers.get(self.node_id)
        if other is not None and other != self.route and await node_answers(other):
            raise ValueError(
                f"server.node_id {self.node_id!r} is already used by the live node at {other}; "
                "give every node (and worker) its own node_id"
            )
        # Otherwise the entry is our own predecessor's (a restart within NODE_TTL, e.g. a
        # worker the supervisor restarted): take its place.
        await self.cluster.announce(self.node_id, self.route, now + NODE_TTL)
        self.peers = await self.cluster.nodes(now)
        for coro in (self._heartbeat(), self.cluster.listen(self._on_message)):
            self._tasks.spawn(coro)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            now = self.wall()
            try:
                await self.cluster.announce(self.node_id, self.route, now + NODE_TTL)
                before = self.peers
                self.peers = await self.cluster.nodes(now)
                if self.on_peers_lost is not None and before.keys() - self.peers.keys():
                    self.on_peers_lost()
            except StorageError as exc:
                # Keep the last known peers: during a store outage the nodes themselves
                # are most likely fine, and calls in progress still need routing.
                log.warning("cluster heartbeat failed: %s", exc)
            except Exception:
                # Never let the heartbeat die: peers would take us for dead in 10 s.
                log.exception("cluster heartbeat failed")

    async def close(self) -> None:
        # Let the last held-call writes land (a drained call must not be resumed by the
        # next start), for a moment; then stop everything.
        for _ in range(40):
            if not self._writing:
                break
            await asyncio.sleep(0.05)
        await self._tasks.close()
        if not self.shared:
            return
        try:
            await self.cluster.leave(self.node_id)
        except StorageError as exc:
            log.warning("could not leave the cluster registry: %s", exc)

    # -- where a binding is reached -----------------------------------------------------------
    def foreign(self, ref: FlowRef | None) -> bool:
        """Does another node own this binding's connection?"""
        return self.shared and ref is not None and bool(ref.node_id) and ref.node_id != self.node_id

    def flow_alive(self, ref: FlowRef) -> bool:
        """Can ``ref`` still carry a request? Ours: ask the transport. Another node's: it
        is if that node is alive, since an owner clears a binding's flow when the
        connection closes (Registrar.flow_closed)."""
        if self.foreign(ref):
            return ref.node_id in self.peers
        return self._local_alive(ref)

    def target(self, b: Binding) -> Target:
        """The branch target for ``b``: as on a single node, except that a flow another
        node owns is reached through that node."""
        ref = b.flow
        if ref is None or not self.foreign(ref) or binding_flow(b) is None:
            # Ours, or the Contact is reachable directly from anywhere.
            return binding_target(b)
        route = self.peers.get(ref.node_id)
        if route is None:
            # The owner is gone and its connections with it; try the Contact.
            return Target(uri=b.contact, device=b.device_key, flow=None, path=b.path)
        hop = f"<sip:{encode_owner(self.secret, ref_flow(ref))}@{route};lr>"
        return Target(uri=b.contact, device=b.device_key, flow=None, path=(hop, *b.path))

    # -- the bus ------------------------------------------------------------------------------
    def registered(self, aor: str, added: tuple[Binding, ...]) -> None:
        """Registrar hook: tell the other nodes when a device that can be pushed registers
        (a call for it may be held elsewhere). Others' registrations wake nothing."""
        if not self.shared or not any(b.push is not None for b in added):
            return
        self._publish(
            _Event("reg", self.node_id, self.route, aor=aor, blob=encode_bindings(list(added)))
        )

    def held(self, entry: HeldEntry, ttl: float) -> None:
        """The held-call registry (a Bus duty): what another process resumes the call
        from (app/resume.py), and what every node lists, until ``ttl``."""
        self._queue(entry.call_id, (entry, ttl))

    def dropped(self, call_id: str) -> None:
        self._queue(call_id, None)

    def _queue(self, call_id: str, op: tuple[HeldEntry, float] | None) -> None:
        self._latest[call_id] = op
        if call_id not in self._writing:
            self._writing.add(call_id)
            self._tasks.spawn(self._write(call_id))

    async def _write(self, call_id: str) -> None:
        try:
            while call_id in self._latest:
                op = self._latest.pop(call_id)
                try:
                    if op is None:
                        await self.cluster.drop_held(call_id)
                    else:
                        await self.cluster.put_held(*op)
                except StorageError as exc:
                    # The call goes on here; only a takeover after our death would miss it.
                    log.warning("held-call registry not updated: %s", exc)
        finally:
            self._writing.discard(call_id)

    def forward_decline(self, call_id: str, token: str, reason: str) -> None:
        self._publish(
            _Event("decline", self.node_id, self.route, call_id=call_id, token=token, reason=reason)
        )

    def forward_cancel(self, call_id: str) -> None:
        """Pass the caller's CANCEL on to the node holding the call (by its UUID): the
        caller sends it where it sent the INVITE (RFC 3261 §9.1), and when the node that
        got the INVITE died, whichever survivor then gets that traffic may not be the
        one that took the call over."""
        self._publish(_Event("cancel", self.node_id, self.route, call_id=call_id))

    def _publish(self, event: _Event) -> None:
        self._tasks.spawn(self._send(msgspec.msgpack.encode(event)))

    async def _send(self, data: bytes) -> None:
        try:
            await self.cluster.publish(data)
        except StorageError as exc:
            log.warning("cluster publish failed: %s", exc)

    def _on_message(self, data: bytes) -> None:
        try:
            event = msgspec.msgpack.decode(data, type=_Event)
        except msgspec.DecodeError:
            log.warning("undecodable cluster message dropped (%d bytes)", len(data))
            return
        if event.origin == self.node_id:
            return  # handled locally already
        self.peers[event.origin] = event.route
        if event.kind == "reg" and self.on_registered is not None:
            try:
                bindings = tuple(decode_bindings(event.aor, event.blob))
            except StorageError as exc:
                log.warning("bad bindings in a cluster message: %s", exc)
                return
            self.on_registered(event.aor, bindings)
        elif event.kind == "decline" and self.on_decline is not None:
            self.on_decline(event.call_id, event.token, event.reason)
        elif event.kind == "cancel" and self.on_cancel is not None:
            self.on_cancel(event.call_id)


async def node_answers(route: str) -> bool:
    """Does something accept connections at ``route`` (``host:port;transport=tcp``)? A
    node that died leaves its registry entry behind for up to NODE_TTL; its port is
    closed. UDP cannot be probed: assume the node is there."""
    hostport, _, params = route.partition(";")
    if "transport=tcp" not in params:
        return True
    host, _, port = hostport.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), timeout=1.0
        )
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    return True
