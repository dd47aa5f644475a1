"""What nodes sharing one store need from each other (scale-out, ARCHITECTURE.md "The
wake-up flow"): a registry of live nodes and the address each is reached at, a bus to tell
every node that a device registered or a call was declined, a registry of held calls, and
one shared secret for the tokens a node issues and another one checks.

``LocalCluster`` is the single-node implementation (memory and SQLite stores: one process
owns the data, so there is nobody else to tell); ``redis_cluster.RedisCluster`` is the
shared one. Both pass the same contract suite (tests/storage/test_cluster_contract.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# A bus message handler. Called on the event loop, once per message, for messages of
# every node including our own (the handler skips its own by the origin it put inside).
Handler = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class HeldEntry:
    """A call held for sleeping devices, as other nodes and the admin API see it. The
    server transaction itself stays on ``node_id`` (ARCHITECTURE.md)."""

    call_id: str  # the call UUID in the push payload
    aor: str
    node_id: str
    deadline: float  # absolute: the end of the hold window
    devices: tuple[str, ...]  # device keys pushed


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

    async def put_held(self, entry: HeldEntry, ttl: float) -> None: ...

    async def get_held(self, call_id: str) -> HeldEntry | None: ...

    async def drop_held(self, call_id: str) -> None: ...

    async def list_held(self, limit: int = 1000) -> list[HeldEntry]: ...

    async def shared_secret(self, proposed: bytes) -> bytes:
        """The cluster's secret: ``proposed`` if none was set yet, else the one that was
        (first writer wins), so every node signs and checks tokens with the same key."""
        ...


class LocalCluster:
    """One node, in-process. The bus loops back to this process's handlers, so code on
    top behaves the same with one node as with many."""

    shared = False

    def __init__(self) -> None:
        self._nodes: dict[str, tuple[str, float]] = {}
        self._held: dict[str, tuple[HeldEntry, float]] = {}
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
        self._held[entry.call_id] = (entry, asyncio.get_running_loop().time() + ttl)

    async def get_held(self, call_id: str) -> HeldEntry | None:
        found = self._held.get(call_id)
        if found is None or found[1] <= asyncio.get_running_loop().time():
            return None
        return found[0]

    async def drop_held(self, call_id: str) -> None:
        self._held.pop(call_id, None)

    async def list_held(self, limit: int = 1000) -> list[HeldEntry]:
        now = asyncio.get_running_loop().time()
        alive = [e for e, until in self._held.values() if until > now]
        return sorted(alive, key=lambda e: e.call_id)[:limit]

    async def shared_secret(self, proposed: bytes) -> bytes:
        if self._secret is None:
            self._secret = proposed or os.urandom(32)
        return self._secret
