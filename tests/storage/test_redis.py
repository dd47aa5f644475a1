"""Redis specifics: outage mapping, key TTLs, the WATCH retry bound, Sentinel."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from sipwake.policy.bindings import Binding
from sipwake.storage import redis as redis_store
from sipwake.storage.base import StorageError, StorageUnavailable, User
from sipwake.storage.codec import encode_bindings
from sipwake.storage.factory import open_stores
from sipwake.storage.redis import RedisStore

from .conftest import REDIS_HOST, REDIS_PORT, delete_prefix
from .util import NOW, append, binding


@pytest.fixture
async def store(redis_prefix: str) -> AsyncIterator[RedisStore]:
    stores = await open_stores(
        f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={redis_prefix}", node_id="t"
    )
    assert isinstance(stores.bindings, RedisStore)
    try:
        yield stores.bindings
    finally:
        await stores.close()
        await delete_prefix(redis_prefix)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_redis_is_unavailable_fast() -> None:
    stores = await open_stores(f"redis://127.0.0.1:{_closed_port()}/0?timeout=0.5", node_id="t")
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await stores.bindings.lookup("sip:a@b", NOW)
        with pytest.raises(StorageUnavailable):
            await stores.bindings.update("sip:a@b", append(binding("sip:a@b")), NOW)
        with pytest.raises(StorageUnavailable):
            await stores.users.get_user("a", "b")
        assert time.monotonic() - started < 2.0
    finally:
        await stores.close()


async def test_key_ttl_follows_latest_expiry(store: RedisStore, redis_prefix: str) -> None:
    aor = "sip:alice@example.com"
    await store.update(aor, append(binding(aor, 0, expires_at=NOW + 300)), NOW)
    await store.update(aor, append(binding(aor, 1, expires_at=NOW + 60)), NOW)
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        key = f"{redis_prefix}aor:{aor}"
        assert 299_000 < await client.pttl(key) <= 300_000
        # Clearing a push target keeps the TTL (KEEPTTL), it changes no expiry.
        await store.remove_push_target(aor, binding(aor, 1).device_key)
        assert 299_000 < await client.pttl(key) <= 300_000
        assert await client.exists(f"{redis_prefix}user:example.com:alice") == 0
        await store.put_user(User("alice", "example.com", "a" * 32, "b" * 64))
        assert await client.hget(f"{redis_prefix}user:example.com:alice", "md5") == b"a" * 32
    finally:
        await client.aclose()


async def test_aor_expired_by_redis_is_dropped_from_index_by_purge(store: RedisStore) -> None:
    aor = "sip:alice@example.com"
    now = time.time()
    await store.update(aor, append(binding(aor, expires_at=now + 0.05)), now)
    await asyncio.sleep(0.1)  # Redis deletes the key by TTL
    assert await store.lookup(aor, now) == []  # gone even at the old clock
    assert await store.count() == 1  # still indexed until a purge
    assert await store.purge_expired(time.time()) == 0  # nothing left to count
    assert await store.count() == 0


async def test_endless_conflict_gives_storage_error(
    store: RedisStore, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A callback whose key is rewritten by someone else before every EXEC can never
    commit: the retry loop must stop and say so, and the callback ran once per try."""
    monkeypatch.setattr(redis_store, "MAX_RETRIES", 3)
    aor = "sip:alice@example.com"
    key = f"{redis_prefix}aor:{aor}"
    rival = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    calls = 0

    def fn(current: list[Binding]) -> tuple[list[Binding], None]:
        nonlocal calls
        calls += 1
        rival.set(key, encode_bindings([binding(aor, calls)]))  # between WATCH and EXEC
        return [binding(aor)], None

    try:
        with pytest.raises(StorageError, match="conflicting"):
            await store.update(aor, fn, NOW)
        assert calls == 3
    finally:
        rival.close()


@pytest.fixture
def sentinel_port(tmp_path: Path, redis_prefix: str) -> Iterator[int]:
    """A real Sentinel (redis-server --sentinel) watching the test Redis."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server binary not installed")
    port = _closed_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {tmp_path}\n"
        f"sentinel monitor svc {REDIS_HOST} {REDIS_PORT} 1\n"
    )
    proc = subprocess.Popen(
        [server, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("sentinel did not start")
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_sentinel_url_finds_the_master(sentinel_port: int, redis_prefix: str) -> None:
    stores = await open_stores(
        f"redis+sentinel://127.0.0.1:{sentinel_port}/svc/0?prefix={redis_prefix}", node_id="s"
    )
    try:
        b = binding()
        await stores.bindings.update(b.aor, append(b), NOW)
        assert await stores.bindings.lookup(b.aor, NOW) == [b]
    finally:
        await stores.close()
        await delete_prefix(redis_prefix)
