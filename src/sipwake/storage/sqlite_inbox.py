"""Message inboxes in the SQLite file (table ``inboxes``, migration 2 in sqlite.py).

Shares the bindings store's connection and its group commit: a change is read, computed
and staged with no ``await`` in between (atomic on the event loop), and the caller waits
for the batch's COMMIT, so a message is on disk (WAL) before the sender is told 202.
Inboxes are not cached in memory: messages are rare next to REGISTERs, and a primary-key
read costs microseconds.
"""

from __future__ import annotations

from sipwake.policy import inbox as rules
from sipwake.policy.inbox import Inbox

from .inbox import InboxFn, InboxStore, R, decode_inbox, encode_inbox
from .sqlite import SQLiteStore


class SQLiteMessageStore(InboxStore):
    def __init__(self, db: SQLiteStore) -> None:
        self._db = db

    async def _read(self, aor: str) -> Inbox:
        rows = self._db.query("SELECT data FROM inboxes WHERE aor = ?", (aor,))
        return decode_inbox(aor, _blob(rows[0][0])) if rows else ()

    async def _update(self, aor: str, fn: InboxFn[R], now: float) -> R:
        new, result = fn(await self._read(aor))  # _read does not yield: still atomic
        if new:
            earliest = rules.next_expiry(new)
            done = self._db.execute_in_batch(
                "INSERT INTO inboxes (aor, data, earliest) VALUES (?, ?, ?) "
                "ON CONFLICT (aor) DO UPDATE SET data = excluded.data, "
                "earliest = excluded.earliest",
                (aor, encode_inbox(new), earliest),
            )
        else:
            done = self._db.execute_in_batch("DELETE FROM inboxes WHERE aor = ?", (aor,))
        await done
        return result

    async def _aors(self, limit: int) -> list[str]:
        rows = self._db.query("SELECT aor FROM inboxes ORDER BY aor LIMIT ?", (limit,))
        return [str(r[0]) for r in rows]

    async def _due(self, now: float) -> list[str]:
        rows = self._db.query("SELECT aor FROM inboxes WHERE earliest <= ? ORDER BY aor", (now,))
        return [str(r[0]) for r in rows]


def _blob(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"inbox row holds {type(value).__name__}, not bytes")
    return value
