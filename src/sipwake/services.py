"""What the HTTP API (api/server.py) asks of the running server: decline links and the
admin listings. Kept apart from server.py, which builds it with ``ApiServices(self)``; it
sees the server through ``ServerView``, the few attributes it reads."""

from __future__ import annotations

import time
from typing import Any, Protocol

from sipwake.app.admin import AdminService
from sipwake.app.calls import Calls
from sipwake.app.declines import Declines
from sipwake.app.timeline import Timelines
from sipwake.app.wake import Pusher
from sipwake.config import Config
from sipwake.policy.decline import DeclineResult
from sipwake.push.dispatcher import PushDispatcher
from sipwake.storage import Stores
from sipwake.storage.inbox import admin_view


class ServerView(Protocol):
    """The parts of server.Server read here (set once it has started)."""

    config: Config
    node_id: str
    stores: Stores | None
    calls: Calls | None
    declines: Declines | None
    pusher: Pusher | None
    dispatcher: PushDispatcher | None
    timelines: Timelines


class ApiServices:
    """The API's view of the server: decline links and read-only admin listings."""

    def __init__(self, server: ServerView) -> None:
        self.server = server
        self._ops: AdminService | None = None

    def decline(self, call_id: str, token: str, reason: str) -> DeclineResult:
        declines = self.server.declines
        if declines is None or self.server.pusher is None:
            return DeclineResult(404, "push is not configured")
        return declines.decline(call_id, token, reason)

    @property
    def ops(self) -> AdminService:
        if self._ops is None:
            server = self.server
            assert server.stores is not None
            self._ops = AdminService(
                store=server.stores.bindings,
                dispatcher=lambda: server.dispatcher,
                domain=server.config.server.domains[0],
            )
        return self._ops

    async def bindings(self, aor: str) -> dict[str, Any]:
        return await self.ops.bindings(aor)

    async def all_bindings(self, offset: int, limit: int) -> dict[str, Any]:
        return await self.ops.bindings("", offset, limit)

    async def remove_bindings(self, aor: str, instance: str) -> dict[str, Any]:
        return await self.ops.remove_bindings(aor, instance)

    async def push_test(self, aor: str) -> dict[str, Any]:
        return await self.ops.push_test(aor)

    def recent_calls(self) -> list[dict[str, Any]]:
        return self.server.timelines.recent()

    def call(self, call_id: str) -> dict[str, Any] | None:
        return self.server.timelines.get(call_id)

    async def messages(self, aor: str | None) -> dict[str, object]:
        assert self.server.stores is not None
        return await admin_view(self.server.stores.messages, aor, time.time())

    async def held_calls(self) -> list[dict[str, Any]]:
        """This node's held calls with their live state; with a shared store, also those
        other nodes hold, from the cluster's registry."""
        calls = self.server.calls
        local = calls.held_calls() if calls is not None else []
        stores = self.server.stores
        if stores is None or not stores.cluster.shared:
            return local
        node = self.server.node_id
        mine = {c["call_id"] for c in local}
        for c in local:
            c["node"] = node
        others = [
            {
                "call_id": e.call_id,
                "aor": e.aor,
                "node": e.node_id,
                "deadline": e.deadline,
                "devices": list(e.devices),
            }
            for e in await stores.cluster.list_held()
            if e.call_id not in mine
        ]
        return local + others
