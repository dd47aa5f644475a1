"""The cluster contract (storage/cluster.py), the same for every backend: node registry
with expiry, the bus, the held-call registry and the shared secret. Memory gets a
LocalCluster (one node), SQLite a SQLiteCluster (one node, held calls in the file), Redis
the shared RedisCluster."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from pathlib import Path

import pytest

from sipwake.storage.base import Stores
from sipwake.storage.cluster import HeldEntry
from sipwake.storage.factory import open_stores

from .conftest import REDIS_HOST, REDIS_PORT

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.7:5060;branch=z9hG4bK-\xc3\xa9-1\r\n"
    b"Call-ID: abc@192.0.2.7\r\nContent-Length: 0\r\n\r\n"
)


def entry(call_id: str, node: str = "n1") -> HeldEntry:
    return HeldEntry(call_id, "sip:bob@example.com", node, time.time() + 30, ("dev-a", "dev-b"))


def full(call_id: str, node: str = "n1", branch: str = "z9hG4bK-1") -> HeldEntry:
    """An entry with every field set to something other than its default."""
    return HeldEntry(
        call_id,
        "sip:bob@example.com",
        node,
        time.time() + 30,
        ("dev-a", "dev-b"),
        invite_key=f"abc@192.0.2.7 {branch}",
        invite=INVITE + b"\x00\xff",  # bytes stay bytes, whatever they hold
        caller=("TCP", "10.0.0.1", 5060, "192.0.2.7", 40123),
        states=(("dev-a", "pushed"), ("dev-b", "ringing")),
        created=time.time() - 2.5,
    )


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


async def test_held_round_trips_every_field(stores: Stores) -> None:
    c = stores.cluster
    e = full("call-rt")
    assert e != dataclasses.replace(e, caller=HeldEntry.__dataclass_fields__["caller"].default)
    await c.put_held(e, 30)
    assert await c.get_held("call-rt") == e
    assert await c.held_by_invite(e.invite_key) == e
    assert await c.list_held() == [e]
    # An entry built the old way keeps every new field's default.
    old = entry("call-old")
    await c.put_held(old, 30)
    assert await c.get_held("call-old") == old
    assert (old.invite_key, old.invite, old.states, old.created) == ("", b"", (), 0.0)


async def test_put_held_replaces(stores: Stores) -> None:
    c = stores.cluster
    e = full("call-up")
    await c.put_held(e, 30)
    later = dataclasses.replace(e, states=(("dev-a", "gone"),), devices=("dev-a",))
    await c.put_held(later, 30)
    assert await c.get_held("call-up") == later
    assert await c.held_by_invite(e.invite_key) == later
    assert await c.list_held() == [later]


async def test_held_by_invite_finds_and_forgets(stores: Stores) -> None:
    c = stores.cluster
    a, b = full("call-a", branch="z9hG4bK-a"), full("call-b", branch="z9hG4bK-b")
    await c.put_held(a, 30)
    await c.put_held(b, 30)
    assert await c.held_by_invite(a.invite_key) == a
    assert await c.held_by_invite(b.invite_key) == b
    assert await c.held_by_invite("abc@192.0.2.7 z9hG4bK-other") is None
    assert await c.held_by_invite("") is None
    await c.put_held(entry("call-noinv"), 30)  # no invite key: not indexed under ""
    assert await c.held_by_invite("") is None
    # Replaced with another invite key: the old key no longer finds it.
    moved = dataclasses.replace(a, invite_key="abc@192.0.2.7 z9hG4bK-moved")
    await c.put_held(moved, 30)
    assert await c.held_by_invite(a.invite_key) is None
    assert await c.held_by_invite(moved.invite_key) == moved
    # Dropped: gone by id and by invite, the other call untouched.
    await c.drop_held("call-a")
    assert await c.held_by_invite(moved.invite_key) is None
    assert await c.get_held("call-a") is None
    assert await c.held_by_invite(b.invite_key) == b
    await c.drop_held("call-a")  # dropping twice is no error


async def test_claim_held(stores: Stores) -> None:
    c = stores.cluster
    e = full("call-c", node="dead")
    await c.put_held(e, 30)
    # Owned by someone else, or missing: nothing changes.
    assert await c.claim_held("call-c", "alive", "n2") is None
    assert await c.claim_held("no-such-call", "dead", "n2") is None
    assert (await c.get_held("call-c")) == e
    won = await c.claim_held("call-c", "dead", "n2")
    assert won == dataclasses.replace(e, node_id="n2")
    assert await c.get_held("call-c") == won
    assert await c.held_by_invite(e.invite_key) == won
    assert await c.list_held() == [won]
    # The old owner can no longer claim it back; the new one can hand it on.
    assert await c.claim_held("call-c", "dead", "n3") is None
    assert await c.claim_held("call-c", "n2", "n3") == dataclasses.replace(e, node_id="n3")


async def test_concurrent_claims_have_one_winner(stores: Stores) -> None:
    c = stores.cluster
    calls = [f"race-{i}" for i in range(20)]
    for call_id in calls:
        await c.put_held(entry(call_id, node="dead"), 30)
    results = await asyncio.gather(
        *(c.claim_held(call_id, "dead", node) for call_id in calls for node in ("n2", "n3"))
    )
    for i, call_id in enumerate(calls):
        first, second = results[2 * i], results[2 * i + 1]
        assert (first is None) != (second is None), call_id
        winner = first or second
        assert winner is not None
        assert await c.get_held(call_id) == winner


async def test_claim_keeps_the_expiry(stores: Stores) -> None:
    c = stores.cluster
    await c.put_held(entry("short-c", node="dead"), 0.2)
    assert await c.claim_held("short-c", "dead", "n2") is not None
    await asyncio.sleep(0.3)
    assert await c.get_held("short-c") is None
    assert await c.claim_held("short-c", "n2", "n3") is None


async def test_expired_entries_are_not_found_or_claimed(stores: Stores) -> None:
    c = stores.cluster
    e = full("gone", node="dead")
    await c.put_held(e, 0.05)
    await c.put_held(full("stays", branch="z9hG4bK-stays"), 30)
    await asyncio.sleep(0.15)
    assert await c.get_held("gone") is None
    assert await c.held_by_invite(e.invite_key) is None
    assert await c.claim_held("gone", "dead", "n2") is None
    assert [x.call_id for x in await c.list_held()] == ["stays"]
    # A new put after expiry works as a first one.
    await c.put_held(e, 30)
    assert await c.held_by_invite(e.invite_key) == e


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


@pytest.mark.parametrize("stores", ["redis"], indirect=True)
async def test_redis_two_nodes_race_for_a_call(stores: Stores, redis_prefix: str) -> None:
    # Two clients, as two nodes would have: each claim is its own connection's EVALSHA.
    c = stores.cluster
    other = await open_stores(
        f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={redis_prefix}", node_id="other"
    )
    try:
        calls = [f"race2-{i}" for i in range(30)]
        for call_id in calls:
            await c.put_held(full(call_id, node="dead", branch=call_id), 30)
        mine = await asyncio.gather(*(c.claim_held(x, "dead", "n2") for x in calls))
        theirs = await asyncio.gather(*(other.cluster.claim_held(x, "dead", "n3") for x in calls))
        for call_id, a, b in zip(calls, mine, theirs, strict=True):
            assert (a is None) != (b is None), call_id
        # The other node sees the same owner for every call.
        for call_id, a, b in zip(calls, mine, theirs, strict=True):
            assert await other.cluster.get_held(call_id) == (a or b)
    finally:
        await other.close()


@pytest.mark.parametrize("stores", ["redis"], indirect=True)
async def test_redis_held_keys_carry_the_ttl(stores: Stores, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    e = full("ttl-call")
    await stores.cluster.put_held(e, 30)
    assert await stores.cluster.claim_held("ttl-call", "n1", "n2") is not None
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        for key in (f"{redis_prefix}held:ttl-call", f"{redis_prefix}heldinv:{e.invite_key}"):
            assert 0 < await client.pttl(key) <= 30_000, key
        await stores.cluster.drop_held("ttl-call")
        assert await client.exists(f"{redis_prefix}heldinv:{e.invite_key}") == 0
    finally:
        await client.aclose()


async def test_sqlite_held_calls_survive_reopening(tmp_path: Path) -> None:
    """The point of the SQLite registry: a held call outlives its process."""
    url = f"sqlite://{tmp_path}/held.db"
    first = await open_stores(url, node_id="n1")
    e, short = full("survivor"), full("short", branch="z9hG4bK-short")
    await first.cluster.put_held(e, 30)
    await first.cluster.put_held(short, 0.05)
    await first.close()
    await asyncio.sleep(0.1)

    second = await open_stores(url, node_id="n1")
    try:
        c = second.cluster
        assert await c.get_held("survivor") == e
        assert await c.held_by_invite(e.invite_key) == e
        assert await c.list_held() == [e]  # the expired one is not resumed
        assert await c.claim_held("survivor", "n1", "n1-restarted") == dataclasses.replace(
            e, node_id="n1-restarted"
        )
    finally:
        await second.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "held.db")) as db:
        # The expired row was deleted, not just skipped.
        assert db.execute("SELECT call_id FROM held_calls").fetchall() == [("survivor",)]
    third = await open_stores(url, node_id="n1")
    try:
        got = await third.cluster.get_held("survivor")
        assert got is not None and got.node_id == "n1-restarted"  # the claim was committed
        await third.cluster.drop_held("survivor")
    finally:
        await third.close()
    fourth = await open_stores(url, node_id="n1")
    try:
        assert await fourth.cluster.list_held() == []
        assert await fourth.cluster.held_by_invite(e.invite_key) is None
    finally:
        await fourth.close()
