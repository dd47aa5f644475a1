"""Message inboxes on Redis, shared by every node (issue 13: stored in Redis, delivered by
the node that owns the device's new connection).

Keys, under the store's prefix:

``{p}inbox:{aor}``   string: the AoR's inbox (storage/inbox.py codec), with a TTL equal
                     to its latest message expiry, so Redis drops a dead inbox by itself.
``{p}inboxes``       sorted set, scores 0: lexicographic index of AoRs with an inbox.
``{p}inbox-due``     sorted set scored by each inbox's earliest expiry (purge).

Every change is a GET, the pure rules in Python, then the bindings store's Lua
compare-and-set (redis.py ``_CAS``), retried with jitter when another node wrote in between.
"""

from __future__ import annotations

import asyncio
import math
import random

import redis.asyncio as aioredis

from sipwake.policy import inbox as rules
from sipwake.policy.inbox import Inbox

from .base import StorageError
from .inbox import InboxFn, InboxStore, R, decode_inbox, encode_inbox
from .redis import _CAS, MAX_RETRIES, _bytes, _mapped

EXPIRED_KEPT = 3600.0  # seconds an inbox key outlives its last message


class RedisMessageStore(InboxStore):
    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self._r = client
        self._prefix = prefix
        self._index = prefix + "inboxes"
        self._due_key = prefix + "inbox-due"
        self._cas = client.register_script(_CAS)

    def _key(self, aor: str) -> str:
        return f"{self._prefix}inbox:{aor}"

    async def _read(self, aor: str) -> Inbox:
        with _mapped("inbox read"):
            data = await self._r.get(self._key(aor))
        return () if data is None else decode_inbox(aor, _bytes(data))

    async def _update(self, aor: str, fn: InboxFn[R], now: float) -> R:
        key = self._key(aor)
        keys = [key, self._index, self._due_key]
        for attempt in range(MAX_RETRIES):
            with _mapped("inbox update"):
                data = await self._r.get(key)
            read = b"" if data is None else _bytes(data)
            new, result = fn(decode_inbox(aor, read) if read else ())
            if new:
                last = rules.last_expiry(new) or now
                earliest = rules.next_expiry(new) or now
                # Kept an hour past its last expiry, so a purge still finds (and counts)
                # what expired; Redis drops a forgotten inbox by itself after that.
                px = max(1, math.ceil((last - now + EXPIRED_KEPT) * 1000))
                args: list[bytes | int | float | str] = [
                    read, encode_inbox(new), px, aor, earliest
                ]  # fmt: skip
            else:
                args = [read, b"", 0, aor, 0]
            with _mapped("inbox update"):
                done = await self._cas(keys=keys, args=args)
            if done:
                return result
            await asyncio.sleep(random.uniform(0, 0.0005 * (2 ** min(attempt, 6))))
        raise StorageError(f"redis inbox update of {aor!r}: still conflicting")

    async def _aors(self, limit: int) -> list[str]:
        with _mapped("inbox list"):
            members = await self._r.zrangebylex(self._index, b"-", b"+", start=0, num=limit)
        return [_bytes(m).decode() for m in members]

    async def _due(self, now: float) -> list[str]:
        with _mapped("inbox purge"):
            members = await self._r.zrangebyscore(self._due_key, "-inf", now)
        return [_bytes(m).decode() for m in members]
