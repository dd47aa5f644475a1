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
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rexc

from .base import StorageError
from .cluster import Handler, HeldEntry
from .redis import _bytes, _glob_escape, _mapped

log = logging.getLogger("sipwake.cluster")

_RECONNECT_MAX = 5.0  # seconds between Pub/Sub reconnect attempts at most


Op = Callable[[Any], object]  # queues one command on a redis-py pipeline


class _Batch:
    __slots__ = ("done", "ops")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ops: list[Op] = []
        self.done: asyncio.Future[None] = loop.create_future()


class RedisCluster:
    shared = True

    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._r = client
        self._prefix = prefix
        self._nodes = prefix + "nodes"
        self._channel = prefix + "events"
        self._batch: _Batch | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def _submit(self, op: Op) -> None:
        """Run ``op`` in one pipeline with every other write submitted in the same event
        loop turn. Every held call costs a SET and a DEL and every wake-up a PUBLISH; one
        round trip per turn instead of one each cuts the client's CPU per call (the
        commands are independent: no transaction is needed)."""
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self._batch = _Batch(loop)
            loop.call_soon(self._flush_soon)
        batch = self._batch
        batch.ops.append(op)
        await asyncio.shield(batch.done)

    def _flush_soon(self) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: _Batch) -> None:
        try:
            with _mapped("batch"):
                async with self._r.pipeline(transaction=False) as pipe:
                    for op in batch.ops:
                        op(pipe)
                    await pipe.execute()
        except StorageError as exc:
            batch.done.set_exception(exc)
        else:
            batch.done.set_result(None)

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
        channel = self._channel
        await self._submit(lambda pipe: pipe.publish(channel, message))

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
                            try:
                                handler(_bytes(msg["data"]))
                            except Exception:
                                # One bad message must not end the subscription: every
                                # later wake-up would be lost with it.
                                log.exception("cluster message handler failed")
            except (rexc.RedisError, OSError) as exc:
                # Redis is away: keep trying; messages sent meanwhile are lost (see above).
                log.warning("cluster bus disconnected (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, _RECONNECT_MAX)

    def _held_key(self, call_id: str) -> str:
        return f"{self._prefix}held:{call_id}"

    async def put_held(self, entry: HeldEntry, ttl: float) -> None:
        key, blob, px = self._held_key(entry.call_id), msgspec.msgpack.encode(entry), ttl
        await self._submit(lambda pipe: pipe.set(key, blob, px=max(1, math.ceil(px * 1000))))

    async def get_held(self, call_id: str) -> HeldEntry | None:
        with _mapped("get_held"):
            data = await self._r.get(self._held_key(call_id))
        return None if data is None else _held(_bytes(data))

    async def drop_held(self, call_id: str) -> None:
        key = self._held_key(call_id)
        await self._submit(lambda pipe: pipe.delete(key))

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
