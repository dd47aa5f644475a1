"""The cluster registry and bus on Redis (storage/cluster.py's contract).

Keys, under the same prefix as the RedisStore (default ``sipwake:``):

``{p}nodes``          hash: node id -> msgpack [route, expires_at]. Nodes re-announce every
                      few seconds; readers ignore entries past their expiry and the next
                      announce of any node deletes them, so a crashed node disappears
                      within one expiry without anyone cleaning up after it.
``{p}held:{call}``    msgpack HeldEntry, with a TTL of the hold window plus the grace, so a
                      node that dies leaves nothing behind for long (issue 5 "Faults").
``{p}secret``         the cluster's token secret, set once (SET NX).
``{p}events``         Pub/Sub channel: at-most-once delivery to the nodes subscribed at that
                      moment. Enough here: a lost "device registered" message costs one
                      device on one call (the hold window then ends it with 480), never a
                      wrong branch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rexc

from .base import StorageError
from .cluster import Handler, HeldEntry
from .redis import _bytes, _glob_escape, _mapped

log = logging.getLogger("sipwake.cluster")

_RECONNECT_MAX = 5.0  # seconds between Pub/Sub reconnect attempts at most


class RedisCluster:
    shared = True

    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._r = client
        self._prefix = prefix
        self._nodes = prefix + "nodes"
        self._channel = prefix + "events"

    async def announce(self, node_id: str, route: str, expires_at: float) -> None:
        with _mapped("announce"):
            await self._r.hset(self._nodes, node_id, msgspec.msgpack.encode([route, expires_at]))

    async def nodes(self, now: float) -> dict[str, str]:
        with _mapped("nodes"):
            raw = await self._r.hgetall(self._nodes)
        live: dict[str, str] = {}
        stale: list[bytes] = []
        for key, value in raw.items():
            try:
                route, expires_at = msgspec.msgpack.decode(_bytes(value))
            except (msgspec.DecodeError, ValueError, TypeError):
                stale.append(_bytes(key))
                continue
            if expires_at > now:
                live[_bytes(key).decode()] = str(route)
            else:
                stale.append(_bytes(key))
        if stale:
            with _mapped("nodes"):
                await self._r.hdel(self._nodes, *stale)
        return live

    async def leave(self, node_id: str) -> None:
        with _mapped("leave"):
            await self._r.hdel(self._nodes, node_id)

    async def publish(self, message: bytes) -> None:
        with _mapped("publish"):
            await self._r.publish(self._channel, message)

    async def listen(self, handler: Handler) -> None:
        delay = 0.1
        while True:
            try:
                async with self._r.pubsub(ignore_subscribe_messages=True) as ps:
                    await ps.subscribe(self._channel)
                    delay = 0.1
                    while True:
                        msg = await ps.get_message(timeout=1.0)
                        if msg is not None and msg.get("type") == "message":
                            handler(_bytes(msg["data"]))
            except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
                # Redis is away: keep trying; messages sent meanwhile are lost (see above).
                log.warning("cluster bus disconnected (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, _RECONNECT_MAX)

    def _held_key(self, call_id: str) -> str:
        return f"{self._prefix}held:{call_id}"

    async def put_held(self, entry: HeldEntry, ttl: float) -> None:
        with _mapped("put_held"):
            await self._r.set(
                self._held_key(entry.call_id),
                msgspec.msgpack.encode(entry),
                px=max(1, math.ceil(ttl * 1000)),
            )

    async def get_held(self, call_id: str) -> HeldEntry | None:
        with _mapped("get_held"):
            data = await self._r.get(self._held_key(call_id))
        return None if data is None else _held(_bytes(data))

    async def drop_held(self, call_id: str) -> None:
        with _mapped("drop_held"):
            await self._r.delete(self._held_key(call_id))

    async def list_held(self, limit: int = 1000) -> list[HeldEntry]:
        pattern = _glob_escape(self._prefix + "held:") + "*"
        with _mapped("list_held"):
            keys = []
            async for k in self._r.scan_iter(match=pattern, count=500):
                keys.append(k)
                if len(keys) >= limit:
                    break
            values = await self._r.mget(keys) if keys else []
        entries = [_held(_bytes(v)) for v in values if v is not None]
        return sorted(entries, key=lambda e: e.call_id)

    async def shared_secret(self, proposed: bytes) -> bytes:
        key = self._prefix + "secret"
        with _mapped("shared_secret"):
            await self._r.set(key, proposed, nx=True)
            value = await self._r.get(key)
        if value is None:
            raise StorageError("redis: cluster secret vanished right after it was set")
        return _bytes(value)


def _held(data: bytes) -> HeldEntry:
    try:
        return msgspec.msgpack.decode(data, type=HeldEntry)
    except msgspec.DecodeError as exc:
        raise StorageError(f"corrupt held-call record: {exc}") from exc
