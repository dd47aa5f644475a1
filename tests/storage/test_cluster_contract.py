"""The cluster contract (storage/cluster.py), the same for every backend: node registry
with expiry, the bus, the held-call registry and the shared secret. Memory and SQLite get
a LocalCluster (one node); Redis the shared RedisCluster."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from sipwake.storage.base import Stores
from sipwake.storage.cluster import HeldEntry


def entry(call_id: str, node: str = "n1") -> HeldEntry:
    return HeldEntry(call_id, "sip:bob@example.com", node, time.time() + 30, ("dev-a", "dev-b"))


async def test_shared_only_on_redis(stores: Stores) -> None:
    assert stores.cluster.shared == (type(stores.cluster).__name__ == "RedisCluster")


async def test_nodes_announce_and_expire(stores: Stores) -> None:
    c = stores.cluster
    now = time.time()
    await c.announce("n1", "127.0.0.1:5070;transport=tcp", now + 10)
    await c.announce("n2", "127.0.0.1:5080;transport=tcp", now - 1)  # already expired
    assert await c.nodes(now) == {"n1": "127.0.0.1:5070;transport=tcp"}
    # A later announce replaces the route and the expiry.
    await c.announce("n1", "127.0.0.1:5071;transport=tcp", now + 10)
    assert await c.nodes(now) == {"n1": "127.0.0.1:5071;transport=tcp"}
    assert await c.nodes(now + 11) == {}
    await c.leave("n1")
    assert await c.nodes(now) == {}


async def test_held_registry(stores: Stores) -> None:
    c = stores.cluster
    e1, e2 = entry("call-1"), entry("call-2", "n2")
    await c.put_held(e1, 30)
    await c.put_held(e2, 30)
    assert await c.get_held("call-1") == e1
    assert await c.list_held() == [e1, e2]
    await c.drop_held("call-1")
    assert await c.get_held("call-1") is None
    assert await c.list_held() == [e2]


async def test_held_entries_expire(stores: Stores) -> None:
    c = stores.cluster
    await c.put_held(entry("short"), 0.05)
    await asyncio.sleep(0.15)
    assert await c.get_held("short") is None
    assert await c.list_held() == []


async def test_first_secret_wins(stores: Stores) -> None:
    c = stores.cluster
    first = await c.shared_secret(b"a" * 32)
    assert first == b"a" * 32
    assert await c.shared_secret(b"b" * 32) == first


async def test_bus_delivers_to_listeners(stores: Stores) -> None:
    c = stores.cluster
    got: list[bytes] = []
    arrived = asyncio.Event()

    def handler(data: bytes) -> None:
        got.append(data)
        arrived.set()

    task = asyncio.get_running_loop().create_task(c.listen(handler))
    try:
        # Pub/Sub only delivers to subscribers present at publish time: retry until the
        # subscription is in place.
        for _ in range(50):
            await c.publish(b"\x00hello")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 0.1)
            if arrived.is_set():
                break
        assert got and set(got) == {b"\x00hello"}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("stores", ["redis"], indirect=True)
async def test_redis_outage_maps_to_unavailable(stores: Stores) -> None:
    from sipwake.storage.base import StorageUnavailable
    from sipwake.storage.factory import open_stores

    dead = await open_stores("redis://127.0.0.1:1/0?timeout=0.2", node_id="x")
    try:
        with pytest.raises(StorageUnavailable):
            await dead.cluster.nodes(time.time())
        with pytest.raises(StorageUnavailable):
            await dead.cluster.put_held(entry("c"), 5)
    finally:
        with contextlib.suppress(Exception):
            await dead.close()
