"""Redis store (redis-py asyncio) for multi-node deployments.

Key layout, all under a configurable prefix (default ``sipwake:``):

``{p}aor:{aor}``                string: the AoR's binding list (codec.py), with a TTL
                                equal to its latest binding expiry, so Redis drops a dead
                                AoR by itself even if no node ever purges.
``{p}aors``                     sorted set, all scores 0: lexicographic index of stored
                                AoRs for ``count`` (ZCARD) and ``aors`` (ZRANGE BYLEX).
``{p}due``                      sorted set scored by each AoR's *earliest* binding expiry:
                                ``purge_expired`` finds partly expired AoRs in O(log n).
``{p}user:{realm}:{username}``  hash: u, r, md5, sha256, disabled.

Every write of an AoR goes through ``_rmw``: GET the AoR key, compute in Python (the
registrar's pure callback), then a small Lua script that writes the key and both index
sets only if the key still holds what was read (compare-and-set, atomic in Redis); if
another node wrote it in between we retry with a short jittered backoff. Two round trips
per write, where WATCH/MULTI/EXEC took three and pinned a pooled connection across them.
The index sets are only written by that script, so they stay consistent with the key
(except that a key Redis expired by TTL stays indexed until the next purge, which is what
the contract says of expired AoRs anyway).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.typing import EncodableT, FieldT

from sipwake.policy.bindings import Binding

from .base import (
    Decided,
    StorageError,
    StorageUnavailable,
    T,
    UpdateFn,
    User,
    clear_push,
    live,
    new_list,
)
from .codec import decode_bindings, encode_bindings

R = TypeVar("R")

DEFAULT_PREFIX = "sipwake:"
# 20 concurrent writers of one AoR need up to 19 retries for the unluckiest; real
# registrations of one AoR are far rarer. Past this we report contention, not loop.
MAX_RETRIES = 64
_PURGE_BATCH = 500

# KEYS: the AoR key, the AoR index, the due index. ARGV: the value read ("" when the key
# was absent; an encoded binding list is never empty), the new value ("" deletes the
# AoR), PX in ms ("0": keep the key's TTL), the AoR, its earliest expiry.
_CAS = """
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[4])
  return 1
end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
redis.call('ZADD', KEYS[2], 0, ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
return 1
"""


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """redis-py errors -> the storage error set (ARCHITECTURE.md "Errors")."""
    try:
        yield
    except (rexc.ConnectionError, rexc.TimeoutError, rexc.ReadOnlyError, OSError) as exc:
        # Refused/reset/timeout, Sentinel has no master, the server is loading, or we
        # are talking to a replica mid-failover: all transient, answer 503.
        raise StorageUnavailable(f"redis {what}: {exc}") from exc
    except rexc.RedisError as exc:
        raise StorageError(f"redis {what}: {exc}") from exc


def _glob_escape(text: str) -> str:
    """Escape SCAN MATCH metacharacters so a prefix or realm matches literally."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _bytes(value: object) -> bytes:
    # The client is built with decode_responses=False, so replies are bytes; redis-py's
    # annotations say ``bytes | str`` because they cover both settings.
    if not isinstance(value, bytes):
        raise StorageError(f"redis: expected bytes, got {type(value).__name__}")
    return value


def _ttl_ms(bindings: list[Binding], now: float) -> int:
    # At least 1 ms: PEXPIRE with 0 would delete the key at once, and ``new_list`` has
    # already guaranteed every binding expires after ``now``.
    return max(1, math.ceil((max(b.expires_at for b in bindings) - now) * 1000))


class RedisStore:
    """Implements both ``BindingStore`` and ``UserStore``."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._r = client
        self._prefix = prefix
        # The cluster registry (redis_cluster.py) shares this client and key prefix.
        self.client = client
        self.prefix = prefix
        self._index = prefix + "aors"
        self._due = prefix + "due"
        self._on_close = on_close
        self._cas = client.register_script(_CAS)  # EVALSHA, loaded on first use

    def _key(self, aor: str) -> str:
        return f"{self._prefix}aor:{aor}"

    def _user_key(self, username: str, realm: str) -> str:
        return f"{self._prefix}user:{realm}:{username}"

    # BindingStore

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        with _mapped("lookup"):
            data = await self._r.get(self._key(aor))
        return [] if data is None else live(decode_bindings(aor, _bytes(data)), now)

    async def update(
        self, aor: str, fn: UpdateFn[T], now: float, decided: Decided[T] | None = None
    ) -> T:
        def step(stored: list[Binding]) -> tuple[list[Binding] | None, T]:
            new, result = fn(live(stored, now))
            return new_list(aor, new, now), result

        # Final only once the compare-and-set won: ``fn`` may run again until then.
        result = await self._rmw(aor, step, now)
        if decided is not None:
            decided(result)
        return result

    async def remove_push_target(self, aor: str, device_key: str) -> bool:
        def step(stored: list[Binding]) -> tuple[list[Binding] | None, bool]:
            new = clear_push(stored, device_key)
            return new, new is not None

        # now=None: keep the key's TTL, the expiries did not change.
        return await self._rmw(aor, step, None)

    async def purge_expired(self, now: float) -> int:
        def step(stored: list[Binding]) -> tuple[list[Binding] | None, int]:
            kept = live(stored, now)
            return kept, len(stored) - len(kept)

        removed = 0
        while True:
            with _mapped("purge"):
                due = await self._r.zrangebyscore(self._due, "-inf", now, start=0, num=_PURGE_BATCH)
            for member in due:
                removed += await self._rmw(_bytes(member).decode(), step, now)
            if len(due) < _PURGE_BATCH:
                return removed

    async def count(self) -> int:
        with _mapped("count"):
            return int(await self._r.zcard(self._index))

    async def aors(self, prefix: str = "", limit: int = 1000) -> list[str]:
        lo = b"[" + prefix.encode() if prefix else b"-"
        # Every string starting with prefix sorts below prefix + U+10FFFF (UTF-8
        # F4 8F BF BF), and Redis compares members bytewise, like memcmp.
        hi = b"(" + prefix.encode() + b"\xf4\x8f\xbf\xbf" if prefix else b"+"
        with _mapped("aors"):
            members = await self._r.zrangebylex(self._index, lo, hi, start=0, num=limit)
        return [_bytes(m).decode() for m in members]

    async def close(self) -> None:
        with _mapped("close"):
            await self._r.aclose()
            if self._on_close is not None:
                await self._on_close()

    async def _rmw(
        self,
        aor: str,
        step: Callable[[list[Binding]], tuple[list[Binding] | None, R]],
        now: float | None,
    ) -> R:
        """Optimistic read-modify-write of one AoR key (GET, then compare-and-set in Lua).
        ``step`` gets every stored binding (expired included) and returns the new list, or
        None to write nothing, plus a result. ``now`` None keeps the key's current TTL."""
        key = self._key(aor)
        keys = [key, self._index, self._due]
        for attempt in range(MAX_RETRIES):
            with _mapped("update"):
                data = await self._r.get(key)
            read = b"" if data is None else _bytes(data)
            stored = decode_bindings(aor, read) if read else []
            new, result = step(stored)
            if new is None:
                return result
            with _mapped("update"):
                done = await self._cas(keys=keys, args=[read, *self._write_args(aor, new, now)])
            if done:
                return result
            # Another writer won the race. Back off a random, growing amount so a herd
            # of writers spreads out instead of colliding again in lockstep.
            await asyncio.sleep(random.uniform(0, 0.0005 * (2 ** min(attempt, 6))))
        raise StorageError(f"redis update of {aor!r}: still conflicting after {MAX_RETRIES} tries")

    @staticmethod
    def _write_args(aor: str, bindings: list[Binding], now: float | None) -> list[EncodableT]:
        if not bindings:
            return [b"", 0, aor, 0]
        px = 0 if now is None else _ttl_ms(bindings, now)
        return [encode_bindings(bindings), px, aor, min(b.expires_at for b in bindings)]

    # UserStore

    async def get_user(self, username: str, realm: str) -> User | None:
        with _mapped("get_user"):
            fields = await self._r.hgetall(self._user_key(username, realm))
        return _user({_bytes(k): _bytes(v) for k, v in fields.items()}) if fields else None

    async def put_user(self, user: User) -> None:
        mapping: dict[FieldT, EncodableT] = {
            "u": user.username,
            "r": user.realm,
            "md5": user.ha1_md5,
            "sha256": user.ha1_sha256,
            "disabled": int(user.disabled),
        }
        with _mapped("put_user"):
            await self._r.hset(self._user_key(user.username, user.realm), mapping=mapping)

    async def remove_user(self, username: str, realm: str) -> bool:
        with _mapped("remove_user"):
            return int(await self._r.delete(self._user_key(username, realm))) > 0

    async def list_users(self, realm: str | None = None) -> list[User]:
        # SCAN is O(keyspace): fine for the admin/CLI listing this serves. The realm is
        # checked against the stored field, since ':' may occur in realms and usernames.
        pattern = _glob_escape(self._prefix + "user:" + (realm + ":" if realm else "")) + "*"
        users: list[User] = []
        with _mapped("list_users"):
            keys = [k async for k in self._r.scan_iter(match=pattern, count=500)]
            if keys:
                async with self._r.pipeline(transaction=False) as pipe:
                    for k in keys:
                        pipe.hgetall(k)
                    rows = await pipe.execute()
                users = [_user(r) for r in rows if r]  # pipeline replies are untyped
        if realm is not None:
            users = [u for u in users if u.realm == realm]
        return sorted(users, key=lambda u: (u.realm, u.username))


def _user(fields: dict[bytes, bytes]) -> User:
    try:
        return User(
            username=fields[b"u"].decode(),
            realm=fields[b"r"].decode(),
            ha1_md5=fields[b"md5"].decode(),
            ha1_sha256=fields[b"sha256"].decode(),
            disabled=fields.get(b"disabled", b"0") == b"1",
        )
    except (KeyError, UnicodeDecodeError) as exc:
        raise StorageError(f"corrupt user record: {exc!r}") from exc
