"""The cluster registry and bus on Redis (storage/cluster.py's contract).

Keys, under the same prefix as the RedisStore (default ``sipwake:``):

``{p}nodes``          hash: node id -> msgpack [route, expires_at]. Nodes re-announce every
                      few seconds; readers ignore entries past their expiry and the next
                      announce of any node deletes them, so a crashed node disappears
                      within one expiry without anyone cleaning up after it.
``{p}held:{call}``    hash: ``node`` the owner node id, ``blob`` the msgpack HeldEntry,
                      ``inv`` its invite key; with the TTL ``put_held`` gives (the hold
                      window plus the grace), so a call nobody resumes leaves nothing
                      behind for long (issue 5 "Faults"). ``node`` beside the blob lets
                      the claim script compare and change the owner without decoding
                      msgpack; it overrides the blob's ``node_id`` when read.
``{p}heldinv:{key}``  string: invite key -> call id, same TTL, written in the same
                      pipeline. Readers check the entry's own ``invite_key``, so a
                      stale index (the entry was replaced with another key) finds nothing.
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
from .cluster import Handler, HeldEntry, decode_held, encode_held
from .redis import _bytes, _glob_escape, _mapped

log = logging.getLogger("sipwake.cluster")

_RECONNECT_MAX = 5.0  # seconds between Pub/Sub reconnect attempts at most

# KEYS: the held key. ARGV: from node, to node. The blob, or nil when the key is gone
# (expired) or owned by another node. HSET keeps the key's TTL.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then return false end
redis.call('HSET', KEYS[1], 'node', ARGV[2])
return redis.call('HGET', KEYS[1], 'blob')
"""

# KEYS: the held key. ARGV: the invite index prefix, the call id. Deletes the entry and
# its invite index if that still names this call.
_DROP = """
local inv = redis.call('HGET', KEYS[1], 'inv')
redis.call('DEL', KEYS[1])
if inv and inv ~= '' then
  local key = ARGV[1] .. inv
  if redis.call('GET', key) == ARGV[2] then redis.call('DEL', key) end
end
return 1
"""


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
        self._claim = client.register_script(_CLAIM)  # EVALSHA, loaded on first use
        self._drop = client.register_script(_DROP)

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
        key, px = self._held_key(entry.call_id), max(1, math.ceil(ttl * 1000))
        fields = {"node": entry.node_id, "blob": encode_held(entry), "inv": entry.invite_key}
        inv = self._prefix + "heldinv:" + entry.invite_key if entry.invite_key else ""
        call_id = entry.call_id

        def op(pipe: Any) -> None:
            # Replaces all three fields; the pipeline sends these back to back. Between
            # them a reader sees the new entry without its TTL or index for a moment.
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, px)
            if inv:
                pipe.set(inv, call_id, px=px)

        await self._submit(op)

    async def get_held(self, call_id: str) -> HeldEntry | None:
        with _mapped("get_held"):
            node, blob = await self._r.hmget(self._held_key(call_id), ["node", "blob"])
        return None if node is None or blob is None else decode_held(_bytes(blob), _str(node))

    async def held_by_invite(self, invite_key: str) -> HeldEntry | None:
        if not invite_key:
            return None
        with _mapped("held_by_invite"):
            call_id = await self._r.get(self._prefix + "heldinv:" + invite_key)
        if call_id is None:
            return None
        entry = await self.get_held(_str(call_id))
        return entry if entry is not None and entry.invite_key == invite_key else None

    async def claim_held(self, call_id: str, from_node: str, to_node: str) -> HeldEntry | None:
        with _mapped("claim_held"):
            blob = await self._claim(keys=[self._held_key(call_id)], args=[from_node, to_node])
        return None if blob is None else decode_held(_bytes(blob), to_node)

    async def drop_held(self, call_id: str) -> None:
        # One script, not the write batch: the invite index is known only from the entry.
        with _mapped("drop_held"):
            await self._drop(
                keys=[self._held_key(call_id)], args=[self._prefix + "heldinv:", call_id]
            )

    async def list_held(self, limit: int = 1000) -> list[HeldEntry]:
        pattern = _glob_escape(self._prefix + "held:") + "*"
        with _mapped("list_held"):
            keys = []
            async for k in self._r.scan_iter(match=pattern, count=500):
                keys.append(k)
                if len(keys) >= limit:
                    break
            async with self._r.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.hmget(k, ["node", "blob"])
                # An error for one key (a string left by an older sipwake) skips that key.
                values = await pipe.execute(raise_on_error=False) if keys else []
        entries = [
            decode_held(_bytes(blob), _str(node))
            for node, blob in (v for v in values if isinstance(v, list))
            if node is not None and blob is not None
        ]
        return sorted(entries, key=lambda e: e.call_id)

    async def shared_secret(self, proposed: bytes) -> bytes:
        key = self._prefix + "secret"
        with _mapped("shared_secret"):
            await self._r.set(key, proposed, nx=True)
            value = await self._r.get(key)
        if value is None:
            raise StorageError("redis: cluster secret vanished right after it was set")
        return _bytes(value)


def _str(value: object) -> str:
    return _bytes(value).decode()
