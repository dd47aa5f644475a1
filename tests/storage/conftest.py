"""Fixtures giving every storage backend: memory, SQLite (tmp file), Redis (the real
server on 127.0.0.1:6379 under a unique key prefix, deleted afterwards).

Redis tests skip only when nothing listens on 127.0.0.1:6379."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sipwake.storage.base import Stores
from sipwake.storage.factory import open_stores

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
BACKENDS = ("memory", "sqlite", "redis")


def redis_reachable() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5):
            return True
    except OSError:
        return False


async def delete_prefix(prefix: str) -> None:
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def redis_prefix() -> str:
    if not redis_reachable():
        pytest.skip(f"no Redis server on {REDIS_HOST}:{REDIS_PORT}")
    return f"sipwake-test-{uuid.uuid4().hex}:"


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    backend: str = request.param
    prefix = ""
    if backend == "memory":
        url = "memory://"
    elif backend == "sqlite":
        url = f"sqlite://{tmp_path}/sub/dir/sipwake.db"
    else:
        prefix = request.getfixturevalue("redis_prefix")
        url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={prefix}"
    opened = await open_stores(url, node_id="test node")
    try:
        yield opened
    finally:
        await opened.close()
        if prefix:
            await delete_prefix(prefix)
