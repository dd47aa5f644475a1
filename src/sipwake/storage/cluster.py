"""What nodes sharing one store need from each other (scale-out, ARCHITECTURE.md "The
wake-up flow"): a registry of live nodes and the address each is reached at, a bus to tell
every node that a device registered or a call was declined, a registry of held calls, and
one shared secret for the tokens a node issues and another one checks.

The held-call registry is the state a held call resumes from (issue 11, "calls that
outlive their process"): the owner writes a snapshot of each call it holds (``put_held``,
an upsert by call id), and after a restart, or when the owner died, a node finds it again
by its id or by the caller's INVITE (``held_by_invite``: a retransmission or a CANCEL),
takes it over with ``claim_held`` (compare-and-set of the owner: of two nodes racing to
adopt a dead node's call exactly one wins) and resumes it. Contract, every backend:

* An entry lives ``ttl`` seconds of wall clock (``time.time()``) from its last
  ``put_held``; past that no read returns it. ``claim_held`` keeps the expiry.
* ``node_id`` as stored by ``put_held`` or ``claim_held`` is the owner; the last write wins.
* Entries are frozen values: a change is a new ``put_held``.

``LocalCluster`` is the single-node implementation (memory and SQLite stores: one process
owns the data, so there is nobody else to tell); ``redis_cluster.RedisCluster`` is the
shared one. Both pass the same contract suite (tests/storage/test_cluster_contract.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import msgspec

from .errors import StorageError

# A bus message handler. Called on the event loop, once per message, for messages of
# every node including our own (the handler skips its own by the origin it put inside).
Handler = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class HeldEntry:
    """A call held for sleeping devices: what other nodes and the admin API see of it,
    and what its owner ``node_id`` (or a node adopting it) resumes it from. Stored
    msgpack-encoded as a map by field name, so an entry written before a field existed
    decodes with that field's default."""

    call_id: str  # the call UUID in the push payload
    aor: str
    node_id: str  # the owner: holds the server transaction (ARCHITECTURE.md)
    deadline: float  # absolute wall clock: the end of the hold window
    devices: tuple[str, ...]  # device keys pushed
    # "<Call-ID> <top Via branch>" of the caller's INVITE: finds the call from a
    # retransmitted INVITE or a CANCEL (RFC 3261 §17.2.3, §9.2). "" = not indexed.
    invite_key: str = ""
    invite: bytes = b""  # the INVITE as received
    # The caller's flow: transport, local host, local port, remote host, remote port.
    caller: tuple[str, str, int, str, int] = ("", "", 0, "", 0)
    states: tuple[tuple[str, str], ...] = ()  # device key -> device state value
    created: float = 0.0  # wall clock when first held


def encode_held(entry: HeldEntry) -> bytes:
    return msgspec.msgpack.encode(entry)


def decode_held(data: bytes, node_id: str | None = None) -> HeldEntry:
    """Decode a stored entry; ``node_id``, when given, is the owner kept beside the blob
    (Redis, SQLite: a claim changes only that, so it needs no decoding)."""
    try:
        entry = msgspec.msgpack.decode(data, type=HeldEntry)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"corrupt held-call record: {exc}") from exc
    if node_id is not None and node_id != entry.node_id:
        entry = replace(entry, node_id=node_id)
    return entry


class Cluster(Protocol):
    # True when several nodes share the data (Redis): node ids in bindings then name the
    # node that owns each connection. False: every binding is ours.
    shared: bool

    async def announce(self, node_id: str, route: str, expires_at: float) -> None:
        """Say that ``node_id`` is alive until ``expires_at`` and reached at ``route``
        (``host:port;transport=tcp``)."""
        ...

    async def nodes(self, now: float) -> dict[str, str]:
        """Live nodes: node id -> route."""
        ...

    async def leave(self, node_id: str) -> None:
        """Remove ``node_id`` from the registry (clean shutdown)."""
        ...

    async def publish(self, message: bytes) -> None:
        """Send ``message`` to every node's handler (fire and forget; no history)."""
        ...

    async def listen(self, handler: Handler) -> None:
        """Deliver bus messages to ``handler`` until cancelled, reconnecting on errors."""
        ...

    async def put_held(self, entry: HeldEntry, ttl: float) -> None:
        """Store ``entry`` for ``ttl`` seconds, replacing any entry of its ``call_id``,
        and index it by ``invite_key`` when that is not empty."""
        ...

    async def get_held(self, call_id: str) -> HeldEntry | None: ...

    async def held_by_invite(self, invite_key: str) -> HeldEntry | None:
        """The live entry whose ``invite_key`` is ``invite_key`` (never for "")."""
        ...

    async def claim_held(self, call_id: str, from_node: str, to_node: str) -> HeldEntry | None:
        """Make ``to_node`` the owner if ``from_node`` still is, atomically; the updated
        entry, or None when it is missing, expired or owned by another node."""
        ...

    async def drop_held(self, call_id: str) -> None:
        """Remove the entry and its invite index (no error if absent)."""
        ...

    async def list_held(self, limit: int = 1000) -> list[HeldEntry]:
        """Live entries, sorted by call id, at most ``limit``."""
        ...

    async def shared_secret(self, proposed: bytes) -> bytes:
        """The cluster's secret: ``proposed`` if none was set yet, else the one that was
        (first writer wins), so every node signs and checks tokens with the same key."""
        ...


class LocalCluster:
    """One node, in-process. The bus loops back to this process's handlers, so code on
    top behaves the same with one node as with many."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._nodes: dict[str, tuple[str, float]] = {}
        # Held calls: call id -> (entry, expiry on ``clock``), and invite key -> call id.
        # Wall clock, as the stored backends use, so expiry means the same everywhere.
        self._clock = clock
        self._held: dict[str, tuple[HeldEntry, float]] = {}
        self._by_invite: dict[str, str] = {}
        self._next_sweep = 0.0
        self._handlers: list[Handler] = []
        self._secret: bytes | None = None

    async def announce(self, node_id: str, route: str, expires_at: float) -> None:
        self._nodes[node_id] = (route, expires_at)

    async def nodes(self, now: float) -> dict[str, str]:
        return {n: r for n, (r, exp) in self._nodes.items() if exp > now}

    async def leave(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    async def publish(self, message: bytes) -> None:
        loop = asyncio.get_running_loop()
        for handler in list(self._handlers):
            loop.call_soon(handler, message)

    async def listen(self, handler: Handler) -> None:
        self._handlers.append(handler)
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            self._handlers.remove(handler)

    async def put_held(self, entry: HeldEntry, ttl: float) -> None:
        now = self._clock()
        if now >= self._next_sweep:  # expired entries go at most once a second
            self._next_sweep = now + 1.0
            for call_id in [c for c, (_, until) in self._held.items() if until <= now]:
                self._forget(call_id)
        self._forget(entry.call_id)
        self._held[entry.call_id] = (entry, now + ttl)
        if entry.invite_key:
            self._by_invite[entry.invite_key] = entry.call_id

    def _forget(self, call_id: str) -> None:
        found = self._held.pop(call_id, None)
        if found is not None and self._by_invite.get(found[0].invite_key) == call_id:
            del self._by_invite[found[0].invite_key]

    def _live(self, call_id: str) -> HeldEntry | None:
        found = self._held.get(call_id)
        if found is None:
            return None
        if found[1] <= self._clock():
            self._forget(call_id)
            return None
        return found[0]

    async def get_held(self, call_id: str) -> HeldEntry | None:
        return self._live(call_id)

    async def held_by_invite(self, invite_key: str) -> HeldEntry | None:
        call_id = self._by_invite.get(invite_key) if invite_key else None
        return None if call_id is None else self._live(call_id)

    async def claim_held(self, call_id: str, from_node: str, to_node: str) -> HeldEntry | None:
        entry = self._live(call_id)
        if entry is None or entry.node_id != from_node:
            return None
        claimed = replace(entry, node_id=to_node)
        self._held[call_id] = (claimed, self._held[call_id][1])
        return claimed

    async def drop_held(self, call_id: str) -> None:
        self._forget(call_id)

    async def list_held(self, limit: int = 1000) -> list[HeldEntry]:
        now = self._clock()
        alive = [e for e, until in self._held.values() if until > now]
        return sorted(alive, key=lambda e: e.call_id)[:limit]

    async def shared_secret(self, proposed: bytes) -> bytes:
        if self._secret is None:
            self._secret = proposed or os.urandom(32)
        return self._secret
