"""Embedded default store on stdlib ``sqlite3``, called in-loop.

Why this shape (DEPENDENCIES.md, "embedded store"):

* Stdlib ``sqlite3`` called directly on the event loop, not aiosqlite: a write costs tens
  of microseconds, a thread hop ~460 µs. Every call here is short and bounded.
* All bindings are loaded into a dict at open (packed: tuples the cyclic GC does not
  walk, packed.py) and every read is served from it; every update is written to SQLite
  in the event-loop turn's group commit (``_stage``), its caller returns only once that
  COMMIT succeeded, and a failed batch rolls the dict back, so no answer ever rests on
  state the file lacks. The price: one process per database file. A second process
  writing the same file's bindings would not be seen (users are the exception, see
  below).
* One row per AoR holding the msgpack list of its bindings (codec.py), not one row per
  binding: the registrar replaces an AoR's binding set as a unit (RFC 3261 §10.3 steps
  6-8), so the atomic update is a single upsert statement, and a lookup is one key.
  AoRs rarely hold more than a handful of bindings, so rewriting the whole row is cheap.
* WAL journal with ``synchronous=NORMAL`` by default: a commit is appended to the WAL
  without an fsync. Committed data survives the process being killed (kill -9, OOM, a
  crash: the WAL is in the OS page cache and is replayed at the next open) but the last
  commits may be lost on a power cut or kernel crash (the database itself stays
  consistent). ``?synchronous=full`` fsyncs the WAL on every commit and survives power
  loss too, at the cost of one fsync per REGISTER (on the event loop).
* Checkpoints (copying the WAL into the database file, with an fdatasync of each) run on
  a thread of their own with its own connection, never inside our COMMIT
  (checkpoint.py): one on the loop stalled every request for 11-17 ms.
* Users (digest credentials) are read from the database on every ``get_user`` rather
  than cached: a primary-key read costs a few microseconds, and this way ``sipwake user
  add`` run against the file while the server runs takes effect at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sipwake.policy.bindings import Binding

from .base import (
    Decided,
    StorageError,
    StorageUnavailable,
    T,
    UpdateFn,
    User,
    clear_push,
    new_list,
)
from .checkpoint import CHECKPOINT_INTERVAL, WalCheckpointer
from .codec import decode_bindings, encode_bindings
from .packed import Stored, expired, pack, unpack

SYNCHRONOUS_MODES = ("normal", "full", "extra")

# A writer from another process (the CLI editing users) holds the lock for microseconds;
# waiting longer than this would stall the whole event loop, so give up with a 503.
BUSY_TIMEOUT_MS = 50

# Numbered migrations: entry i takes the schema from version i to i+1. Append only;
# never edit a migration that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # A rowid table with a separate key index rather than WITHOUT ROWID: rows hold a
        # few hundred bytes to a few KB, above the ~1/20 page size where SQLite
        # recommends WITHOUT ROWID. ``expires_at`` is the latest binding expiry, kept
        # so the file can be inspected with the sqlite3 shell.
        """CREATE TABLE bindings (
            aor TEXT PRIMARY KEY NOT NULL,
            data BLOB NOT NULL,
            expires_at REAL NOT NULL
        )""",
        """CREATE TABLE users (
            realm TEXT NOT NULL,
            username TEXT NOT NULL,
            ha1_md5 TEXT NOT NULL,
            ha1_sha256 TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (realm, username)
        )""",
    ),
    (
        # Message inboxes (storage/inbox.py): one row per AoR holding its msgpack inbox,
        # for the same reason bindings are one row per AoR (the rules change an inbox as a
        # unit). ``earliest`` lets a purge find rows with an expired message by index.
        """CREATE TABLE inboxes (
            aor TEXT PRIMARY KEY NOT NULL,
            data BLOB NOT NULL,
            earliest REAL NOT NULL
        )""",
        "CREATE INDEX inboxes_earliest ON inboxes (earliest)",
    ),
    (
        # The held-call registry (storage/sqlite_cluster.py): one row per held call, so
        # a call survives a restart. ``node_id`` beside the blob is the owner a claim
        # compares and changes; ``expires_at`` is wall clock.
        """CREATE TABLE held_calls (
            call_id TEXT PRIMARY KEY NOT NULL,
            aor TEXT NOT NULL,
            node_id TEXT NOT NULL,
            invite_key TEXT NOT NULL,
            expires_at REAL NOT NULL,
            data BLOB NOT NULL
        )""",
        "CREATE INDEX held_calls_invite ON held_calls (invite_key)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Turn sqlite3 errors into the storage error set (ARCHITECTURE.md "Errors")."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        # Locked/busy, disk full, I/O error, read-only file: transient from our view.
        raise StorageUnavailable(f"sqlite {what}: {exc}") from exc
    except sqlite3.Error as exc:
        raise StorageError(f"sqlite {what}: {exc}") from exc


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; returns the version found before.

    Each migration runs in its own ``BEGIN IMMEDIATE`` transaction (SQLite DDL is
    transactional), and the version is re-read under the write lock so two processes
    opening a fresh file at once do not both apply it."""
    found = -1
    for target in range(1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = 0
            else:
                version = int(row[0])
            if found < 0:
                found = version
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"database schema version {version} is newer than this sipwake "
                    f"supports ({SCHEMA_VERSION}); refusing to open it"
                )
            if version < target:
                for statement in MIGRATIONS[target - 1]:
                    conn.execute(statement)
                conn.execute("UPDATE schema_version SET version = ?", (target,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return max(found, 0)


class SQLiteStore:
    """Implements both ``BindingStore`` and ``UserStore`` over one SQLite file."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        bindings: dict[str, Stored],
        checkpointer: WalCheckpointer,
    ):
        self._conn = conn
        self._bindings = bindings
        self._checkpointer = checkpointer
        # Group commit (see _stage): the AoRs written in the open batch with their values
        # before it, and the callers waiting for its COMMIT.
        self._batch: dict[str, Stored | None] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        # The loop of the open batch: each write waits on a future of its own (a
        # cancelled waiter cancels only its own), made without asking for the running
        # loop each time (on 3.11 that asks the OS for the pid: 1.5 % of a REGISTER).
        self._loop: asyncio.AbstractEventLoop | None = None
        # The binding rows of the open batch, written at its COMMIT (see _stage): per AoR
        # the encoded row, or None to delete it.
        self._rows: dict[str, tuple[str, bytes, float] | None] = {}

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        synchronous: str = "normal",
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
    ) -> SQLiteStore:
        """Open (creating the file and its parent directories) and load all bindings.

        Synchronous on purpose: called once at start-up, before the server serves."""
        if synchronous.lower() not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"sqlite synchronous={synchronous!r}: expected one of {SYNCHRONOUS_MODES}"
            )
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _mapped("open"):
            # The file holds password hashes and push tokens: owner only. SQLite gives its
            # -wal and -shm files the main file's mode, so creating it 0600 covers them.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            # isolation_level=None: no implicit transactions; we issue BEGIN ourselves,
            # and a single statement outside one is its own atomic transaction.
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StorageError(f"sqlite {path}: cannot enable WAL (got {mode!r})")
                conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
                # Checkpoints (and their fdatasync calls) off the event loop: checkpoint.py.
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                migrate(conn)
                bindings = {
                    aor: pack(decode_bindings(aor, data))
                    for aor, data in conn.execute("SELECT aor, data FROM bindings")
                }
            except BaseException:
                conn.close()
                raise
        return cls(conn, bindings, WalCheckpointer(path, interval=checkpoint_interval))

    # BindingStore

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        return unpack(aor, self._bindings.get(aor, ()), now)

    async def update(
        self, aor: str, fn: UpdateFn[T], now: float, decided: Decided[T] | None = None
    ) -> T:
        # No await between read, callback and staging the write: the update is one atomic
        # step on the event loop. The caller then waits for the batch's COMMIT.
        new, result = fn(unpack(aor, self._bindings.get(aor, ()), now))
        committed = self._stage(aor, new_list(aor, new, now))
        if decided is not None:
            decided(result)  # final now: the COMMIT can only fail the batch as a whole
        await committed
        return result

    async def remove_push_target(self, aor: str, device_key: str) -> bool:
        new = clear_push(unpack(aor, self._bindings.get(aor, ())), device_key)
        if new is None:
            return False
        await self._stage(aor, new)
        return True

    async def purge_expired(self, now: float) -> int:
        waits: list[asyncio.Future[None]] = []
        removed = 0
        for aor, stored in list(self._bindings.items()):
            gone = expired(stored, now)
            if gone:
                waits.append(self._stage(aor, unpack(aor, stored, now)))
                removed += gone
        if waits:
            await asyncio.gather(*waits)
        return removed

    def _stage(self, aor: str, bindings: list[Binding]) -> asyncio.Future[None]:
        """Write ``aor``'s row in the open batch (opening one if needed) and return a
        future that resolves once the batch is committed.

        Group commit: every write staged during one turn of the event loop shares one
        COMMIT, run by ``call_soon`` at the end of that turn. A REGISTER is answered only
        after its COMMIT, so an accepted binding is durable (WAL) as before; under load
        the commit cost is shared by a whole UDP read batch instead of paid per request.
        The in-memory view changes at once (atomic per AoR for later updates in the same
        batch) and is rolled back with the batch if the COMMIT fails.

        The row is encoded here, once, and written at the COMMIT: one ``executemany`` per
        batch for the upserts (and one for the deletes) instead of a statement per
        update, and an AoR written twice in one turn is written once. A write that fails
        then fails the whole batch, as a failed COMMIT does."""
        batch = self._open_batch()
        if aor not in batch:
            batch[aor] = self._bindings.get(aor)
        self._rows[aor] = (
            (aor, encode_bindings(bindings), max(b.expires_at for b in bindings))
            if bindings
            else None
        )
        self._remember(aor, bindings)
        return self._wait_commit()

    def execute_in_batch(self, sql: str, params: tuple[object, ...]) -> asyncio.Future[None]:
        """Run one write statement on another table (the message inboxes, sqlite_inbox.py;
        held calls, sqlite_cluster.py) in the open group-commit batch; the future
        resolves once it is committed."""
        return self.change_in_batch(sql, params)[1]

    def change_in_batch(
        self, sql: str, params: tuple[object, ...]
    ) -> tuple[int, asyncio.Future[None]]:
        """``execute_in_batch`` that also says how many rows the statement changed (a
        compare-and-set: ``UPDATE ... WHERE`` the old value)."""
        self._open_batch()
        with _mapped("update"):
            changed = self._conn.execute(sql, params).rowcount
        return changed, self._wait_commit()

    def query(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        """A read on the same connection: it sees writes of the open batch."""
        with _mapped("query"):
            return self._conn.execute(sql, params).fetchall()

    def _open_batch(self) -> dict[str, Stored | None]:
        batch = self._batch
        if batch is None:
            with _mapped("update"):
                self._conn.execute("BEGIN IMMEDIATE")
            batch = self._batch = {}
            loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._commit)
        return batch

    def _wait_commit(self) -> asyncio.Future[None]:
        """A future for the open batch's COMMIT (``_open_batch`` came first)."""
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(fut)
        return fut

    def _commit(self) -> None:
        batch, waiters, rows = self._batch, self._waiters, self._rows
        self._batch, self._waiters, self._rows = None, [], {}
        if batch is None:
            return
        try:
            with _mapped("commit"):
                self._write(rows)
                self._conn.execute("COMMIT")
        except StorageError as exc:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            for aor, old in batch.items():
                if old:
                    self._bindings[aor] = old
                else:
                    self._bindings.pop(aor, None)
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self._checkpointer.wrote()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def count(self) -> int:
        return len(self._bindings)

    async def aors(self, prefix: str = "", limit: int = 1000) -> list[str]:
        # The dict is authoritative and complete; a sort over matching keys is fine for
        # an admin listing.
        return sorted(a for a in self._bindings if a.startswith(prefix))[:limit]

    async def close(self) -> None:
        self._commit()  # a batch staged in this very turn still lands
        # First, so that ours is the last connection: closing it checkpoints what is left
        # and removes the WAL (https://www.sqlite.org/wal.html).
        self._checkpointer.close()
        with _mapped("close"):
            self._conn.close()

    def _write(self, rows: dict[str, tuple[str, bytes, float] | None]) -> None:
        """The batch's binding rows, in the open transaction."""
        upserts = [row for row in rows.values() if row is not None]
        if upserts:
            self._conn.executemany(
                "INSERT INTO bindings (aor, data, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (aor) DO UPDATE SET data = excluded.data, "
                "expires_at = excluded.expires_at",
                upserts,
            )
        if len(upserts) < len(rows):
            self._conn.executemany(
                "DELETE FROM bindings WHERE aor = ?",
                [(aor,) for aor, row in rows.items() if row is None],
            )

    def _remember(self, aor: str, bindings: list[Binding]) -> None:
        if bindings:
            self._bindings[aor] = pack(bindings)
        else:
            self._bindings.pop(aor, None)

    # UserStore

    async def get_user(self, username: str, realm: str) -> User | None:
        with _mapped("get_user"):
            row = self._conn.execute(
                "SELECT username, realm, ha1_md5, ha1_sha256, disabled FROM users "
                "WHERE realm = ? AND username = ?",
                (realm, username),
            ).fetchone()
        return None if row is None else _user(row)

    async def put_user(self, user: User) -> None:
        with _mapped("put_user"):
            self._conn.execute(
                "INSERT OR REPLACE INTO users (realm, username, ha1_md5, ha1_sha256, disabled) "
                "VALUES (?, ?, ?, ?, ?)",
                (user.realm, user.username, user.ha1_md5, user.ha1_sha256, int(user.disabled)),
            )

    async def remove_user(self, username: str, realm: str) -> bool:
        with _mapped("remove_user"):
            cur = self._conn.execute(
                "DELETE FROM users WHERE realm = ? AND username = ?", (realm, username)
            )
        return cur.rowcount > 0

    async def list_users(self, realm: str | None = None) -> list[User]:
        query = "SELECT username, realm, ha1_md5, ha1_sha256, disabled FROM users"
        params: tuple[str, ...] = ()
        if realm is not None:
            query += " WHERE realm = ?"
            params = (realm,)
        with _mapped("list_users"):
            rows = self._conn.execute(query + " ORDER BY realm, username", params).fetchall()
        return [_user(r) for r in rows]


def _user(row: tuple[str, str, str, str, int]) -> User:
    return User(
        username=row[0], realm=row[1], ha1_md5=row[2], ha1_sha256=row[3], disabled=bool(row[4])
    )
