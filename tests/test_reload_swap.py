"""SIGHUP's dispatcher swap (reload.py) reaches every part that pushes or checks push
providers: the call pushes, the binding-refresh pushes, the registrar and edge mode."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from sipwake.config import Config
from sipwake.policy.registrar import RegistrarPolicy
from sipwake.reload import _swap_dispatcher


class FakeDispatcher:
    metrics: object = None
    vapid_public_key = ""

    def supported(self) -> frozenset[str]:
        return frozenset({"apns", "acme"})

    async def close(self) -> None:
        return None


def test_swap_reaches_refresh_and_edge() -> None:
    async def run() -> Any:
        policy = RegistrarPolicy()
        old, new = FakeDispatcher(), FakeDispatcher()
        server = SimpleNamespace(
            dispatcher=old,
            metrics=object(),
            pusher=SimpleNamespace(dispatcher=old, cfg=None),
            calls=None,
            refresh=SimpleNamespace(dispatcher=old),
            edge=SimpleNamespace(policy=policy),
            registrar=SimpleNamespace(policy=policy),
            background=set(),
        )
        _swap_dispatcher(cast(Any, server), cast(Any, new), Config())
        for task in list(server.background):
            task.cancel()
        return server, new

    server, new = asyncio.run(run())
    assert server.pusher.dispatcher is new and server.refresh.dispatcher is new
    assert server.registrar.policy.supported_providers == frozenset({"apns", "acme"})
    assert server.edge.policy is server.registrar.policy
