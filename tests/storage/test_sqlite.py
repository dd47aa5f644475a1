"""SQLite specifics: persistence across reopen and kill -9, pragmas, migrations."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from sipwake.storage.base import StorageError, StorageUnavailable, User
from sipwake.storage.factory import open_stores
from sipwake.storage.sqlite import SCHEMA_VERSION, SQLiteStore

from .util import NOW, append, binding, replace_all


async def test_reopen_keeps_bindings_users_and_purges(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "s.db"
    store = SQLiteStore.open(path)
    bindings = {f"sip:u{i}@example.com": binding(f"sip:u{i}@example.com", i) for i in range(5)}
    for aor, b in bindings.items():
        await store.update(aor, append(b), NOW)
    await store.update("sip:u0@example.com", replace_all([]), NOW)  # deleted row
    short = binding("sip:short@example.com", 9, expires_at=NOW + 1)
    await store.update(short.aor, append(short), NOW)
    assert await store.purge_expired(NOW + 2) == 1
    await store.remove_push_target("sip:u1@example.com", bindings["sip:u1@example.com"].device_key)
    user = User("alice", "example.com", "a" * 32, "b" * 64)
    await store.put_user(user)
    await store.close()

    store = SQLiteStore.open(path)
    try:
        assert await store.aors() == [f"sip:u{i}@example.com" for i in range(1, 5)]
        for i in range(2, 5):
            aor = f"sip:u{i}@example.com"
            assert await store.lookup(aor, NOW) == [bindings[aor]]
        (u1,) = await store.lookup("sip:u1@example.com", NOW)
        assert u1.push is None
        assert await store.get_user("alice", "example.com") == user
    finally:
        await store.close()


KILL_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    from sipwake.storage.sqlite import SQLiteStore
    sys.path.insert(0, sys.argv[3])
    from tests.storage.util import NOW, append, binding

    async def main() -> None:
        store = SQLiteStore.open(sys.argv[1])
        for i in range(int(sys.argv[2])):
            aor = f"sip:u{i}@example.com"
            await store.update(aor, append(binding(aor, i)), NOW)
        print("done", flush=True)
        time.sleep(60)  # never closes: the parent SIGKILLs us here

    asyncio.run(main())
    """
)


async def test_bindings_survive_kill_9(tmp_path: Path) -> None:
    """synchronous=NORMAL: every committed update is in the WAL (OS page cache) when
    ``update`` returns, so killing the process loses nothing."""
    path = tmp_path / "kill.db"
    n = 200
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(path), str(n), root],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "child did not finish writing in 30 s"
        assert proc.stdout.readline().strip() == "done"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert Path(str(path) + "-wal").exists()  # not checkpointed: recovery reads the WAL

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM bindings").fetchone()[0] == n
    finally:
        conn.close()
    store = SQLiteStore.open(path)
    try:
        assert await store.count() == n
        for i in range(n):
            aor = f"sip:u{i}@example.com"
            assert await store.lookup(aor, NOW) == [binding(aor, i)]
    finally:
        await store.close()


@pytest.mark.parametrize(("query", "expected"), [("", 1), ("?synchronous=full", 2)])
async def test_wal_and_synchronous_from_url(tmp_path: Path, query: str, expected: int) -> None:
    stores = await open_stores(f"sqlite://{tmp_path}/s.db{query}", node_id="n")
    try:
        assert isinstance(stores.bindings, SQLiteStore)
        conn = stores.bindings._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == expected
    finally:
        await stores.close()


def test_bad_synchronous_mode_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore.open(tmp_path / "s.db", synchronous="off")


def test_schema_version_recorded_and_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SQLiteStore.open(path)._conn.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        SQLiteStore.open(path)


def test_corrupt_row_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SQLiteStore.open(path)._conn.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO bindings VALUES ('sip:x@y', x'c1c1', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="corrupt"):
        SQLiteStore.open(path)


async def test_locked_database_is_unavailable_and_memory_unchanged(tmp_path: Path) -> None:
    """Another process holding the write lock -> 503, and the in-memory view must not
    run ahead of the file (write-through happens before the dict changes)."""
    path = tmp_path / "s.db"
    store = SQLiteStore.open(path)
    b = binding()
    await store.update(b.aor, append(b), NOW)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageUnavailable):
            await store.update(b.aor, append(binding(n=1)), NOW)
        assert await store.lookup(b.aor, NOW) == [b]
    finally:
        other.execute("ROLLBACK")
        other.close()
        await store.close()


async def test_group_commit_shares_one_commit_and_is_durable(tmp_path: Path) -> None:
    """Updates staged in one event-loop turn share one COMMIT, and each caller returns only
    after it: reopening finds every binding."""
    path = tmp_path / "g.db"
    store = SQLiteStore.open(path)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    aors = [f"sip:u{i}@example.com" for i in range(50)]
    await asyncio.gather(*(store.update(a, append(binding(a, i)), NOW) for i, a in enumerate(aors)))
    assert statements.count("COMMIT") == 1
    assert sum(s.startswith("INSERT INTO bindings") for s in statements) == 50
    await store.close()
    reopened = SQLiteStore.open(path)
    for a in aors:
        assert [b.aor for b in await reopened.lookup(a, NOW)] == [a]
    await reopened.close()


async def test_batch_writes_each_aor_once_with_its_last_value(tmp_path: Path) -> None:
    """The rows are written at the batch's COMMIT: an AoR changed several times in one turn
    costs one statement, carrying its last value, and upserts and deletes mix."""
    path = tmp_path / "w.db"
    store = SQLiteStore.open(path)
    a, d = "sip:a@example.com", "sip:d@example.com"
    await store.update(d, append(binding(d, 9)), NOW)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    await asyncio.gather(
        store.update(a, append(binding(a, 1)), NOW),
        store.update(a, append(binding(a, 2)), NOW),
        store.update(d, replace_all([]), NOW),
    )
    assert sum(s.startswith("INSERT INTO bindings") for s in statements) == 1
    assert sum(s.startswith("DELETE FROM bindings") for s in statements) == 1
    assert statements.count("COMMIT") == 1
    await store.close()
    reopened = SQLiteStore.open(path)
    assert sorted(b.call_id for b in await reopened.lookup(a, NOW)) == [
        "call-1@phone",
        "call-2@phone",
    ]
    assert await reopened.lookup(d, NOW) == []
    await reopened.close()


class _FailingCommit:
    """A connection whose COMMIT (or, with ``rows``, its row writes) fails like a full disk
    would."""

    def __init__(self, conn: sqlite3.Connection, *, rows: bool = False) -> None:
        self.conn = conn
        self.rows = rows

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def executemany(self, sql: str, rows: object) -> sqlite3.Cursor:
        if self.rows:
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.executemany(sql, rows)  # type: ignore[arg-type]

    def close(self) -> None:
        self.conn.close()


@pytest.mark.parametrize("rows", [False, True], ids=["commit", "row-write"])
async def test_failed_commit_rolls_back_memory_and_fails_every_caller(
    tmp_path: Path, rows: bool
) -> None:
    path = tmp_path / "f.db"
    store = SQLiteStore.open(path)
    a = "sip:a@example.com"
    await store.update(a, append(binding(a, 1)), NOW)
    real = store._conn
    store._conn = _FailingCommit(real, rows=rows)  # type: ignore[assignment]
    results = await asyncio.gather(
        store.update(a, append(binding(a, 2)), NOW),
        store.update("sip:b@example.com", append(binding("sip:b@example.com", 3)), NOW),
        return_exceptions=True,
    )
    assert all(isinstance(r, StorageError) for r in results), results
    # Memory is back to what was committed, and so is the file.
    assert [b.call_id for b in await store.lookup(a, NOW)] == ["call-1@phone"]
    assert await store.lookup("sip:b@example.com", NOW) == []
    store._conn = real
    await store.close()
    reopened = SQLiteStore.open(path)
    assert [b.call_id for b in await reopened.lookup(a, NOW)] == ["call-1@phone"]
    await reopened.close()


async def test_checkpoints_leave_the_commit_and_run_on_their_own_thread(
    tmp_path: Path,
) -> None:
    """The store's connection never checkpoints inside a COMMIT on the event loop (a
    checkpoint's fdatasync calls stalled every request for 11-17 ms); the checkpoint
    thread copies the WAL into the database file soon after the writes, and stops with
    the store."""
    path = tmp_path / "c.db"
    store = SQLiteStore.open(path, checkpoint_interval=0.05)
    try:
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        size = path.stat().st_size
        # A few pages: far below SQLite's automatic threshold (1,000 pages), so only the
        # checkpoint thread can have moved them into the database file.
        aors = [f"sip:c{i}@example.com" for i in range(200)]
        await asyncio.gather(
            *(store.update(a, append(binding(a, i)), NOW) for i, a in enumerate(aors))
        )
        for _ in range(100):
            # The count goes up once the pass has returned, after it copied the pages.
            if store._checkpointer.checkpoints:
                break
            await asyncio.sleep(0.05)
        assert store._checkpointer.checkpoints >= 1
        assert path.stat().st_size > size
    finally:
        await store.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("sqlite-checkpoint")]
    # What the thread copied is the file's content: read it back without the WAL.
    assert not Path(f"{path}-wal").exists()
    reopened = SQLiteStore.open(path)
    try:
        assert await reopened.count() == len(aors)
    finally:
        await reopened.close()


async def test_an_update_is_decided_before_its_commit(tmp_path: Path) -> None:
    """``decided`` runs with the write staged: another connection does not see it yet
    (the registrar forwards a held INVITE then, app/register.py)."""
    path = tmp_path / "b.db"
    store = SQLiteStore.open(path)
    seen: list[int] = []

    def decided(result: int) -> None:
        other = sqlite3.connect(path)
        seen.append(other.execute("SELECT count(*) FROM bindings").fetchone()[0])
        other.close()

    try:
        b = binding()
        await store.update(b.aor, append(b), NOW, decided)
        assert seen == [0]
        other = sqlite3.connect(path)
        assert other.execute("SELECT count(*) FROM bindings").fetchone()[0] == 1
        other.close()
    finally:
        await store.close()
