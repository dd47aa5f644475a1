"""The cluster of one node on a SQLite file: a ``LocalCluster`` (the bus loops back
in-process, the node registry is in memory) whose held-call registry lives in the file
(table ``held_calls``, migration 3 in sqlite.py), so a held call survives the process
being killed and the restarted server resumes it (issue 11).

Shares the bindings store's connection and its group commit, as the message inboxes do
(sqlite_inbox.py): ``put_held`` returns once its COMMIT is done (WAL, see sqlite.py on
what that survives). Rows are not cached: reads are by primary key or index and happen
when a call is resumed or listed, not per message. Expiry is wall clock
(``time.time()``), the only clock that means the same after a restart; an expired row is
never returned and is deleted at the next ``put_held`` (at most one sweep a second) or
``list_held``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .cluster import HeldEntry, LocalCluster, decode_held, encode_held
from .errors import StorageError
from .sqlite import SQLiteStore

_COLUMNS = "node_id, data"


class SQLiteCluster(LocalCluster):
    def __init__(self, db: SQLiteStore, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._db = db

    async def put_held(self, entry: HeldEntry, ttl: float) -> None:
        now = self._clock()
        waits = [
            self._db.execute_in_batch(
                "INSERT INTO held_calls (call_id, aor, node_id, invite_key, expires_at, data) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (call_id) DO UPDATE SET "
                "aor = excluded.aor, node_id = excluded.node_id, "
                "invite_key = excluded.invite_key, expires_at = excluded.expires_at, "
                "data = excluded.data",
                (
                    entry.call_id,
                    entry.aor,
                    entry.node_id,
                    entry.invite_key,
                    now + ttl,
                    encode_held(entry),
                ),
            )
        ]
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            waits.append(self._sweep(now))
        await asyncio.gather(*waits)

    def _sweep(self, now: float) -> asyncio.Future[None]:
        return self._db.execute_in_batch("DELETE FROM held_calls WHERE expires_at <= ?", (now,))

    async def get_held(self, call_id: str) -> HeldEntry | None:
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM held_calls WHERE call_id = ? AND expires_at > ?",
            (call_id, self._clock()),
        )
        return _entry(rows[0]) if rows else None

    async def held_by_invite(self, invite_key: str) -> HeldEntry | None:
        if not invite_key:
            return None
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM held_calls WHERE invite_key = ? AND expires_at > ? "
            "ORDER BY expires_at DESC LIMIT 1",
            (invite_key, self._clock()),
        )
        return _entry(rows[0]) if rows else None

    async def claim_held(self, call_id: str, from_node: str, to_node: str) -> HeldEntry | None:
        # The UPDATE is the compare-and-set (under the batch's write lock, BEGIN
        # IMMEDIATE), the SELECT on the same connection sees it; no await in between.
        now = self._clock()
        changed, done = self._db.change_in_batch(
            "UPDATE held_calls SET node_id = ? "
            "WHERE call_id = ? AND node_id = ? AND expires_at > ?",
            (to_node, call_id, from_node, now),
        )
        rows = (
            self._db.query(f"SELECT {_COLUMNS} FROM held_calls WHERE call_id = ?", (call_id,))
            if changed
            else []
        )
        await done
        return _entry(rows[0]) if rows else None

    async def drop_held(self, call_id: str) -> None:
        await self._db.execute_in_batch("DELETE FROM held_calls WHERE call_id = ?", (call_id,))

    async def list_held(self, limit: int = 1000) -> list[HeldEntry]:
        now = self._clock()
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM held_calls WHERE expires_at > ? ORDER BY call_id LIMIT ?",
            (now, limit),
        )
        await self._sweep(now)
        return [_entry(r) for r in rows]


def _entry(row: tuple[object, ...]) -> HeldEntry:
    node_id, data = row
    if not isinstance(node_id, str) or not isinstance(data, bytes):
        raise StorageError(
            f"corrupt held_calls row: {type(node_id).__name__}, {type(data).__name__}"
        )
    return decode_held(data, node_id)
