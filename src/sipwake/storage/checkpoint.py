"""WAL checkpoints for the embedded SQLite store, on a thread of their own.

Why: SQLite checkpoints a WAL database itself, in whichever connection's COMMIT takes the
WAL past ``wal_autocheckpoint`` pages (1,000 by default), and a checkpoint syncs the WAL
and then the database file (https://www.sqlite.org/wal.html, "Automatic Checkpoint"; with
``synchronous=NORMAL`` it is the only thing that syncs). Our COMMIT runs on the event
loop (sqlite.py), so every few hundred commits one of them stopped the whole server for
the checkpoint's fdatasync calls: 11-17 ms per checkpoint on this project's VMs (perf
trace of a server under bench/probe.py), i.e. every request that arrived meanwhile waited
that long -- the p99 of the REGISTER and push-latency probes.

So the store's connection turns automatic checkpoints off and this thread, with its own
connection, runs a PASSIVE checkpoint (it never takes the writer's lock: the loop's
BEGIN IMMEDIATE and COMMIT go on while it copies pages and syncs) at most once an
``interval`` after a commit was reported, and again at once while the WAL still held
frames it could not reach. The wal.html page names this pattern: turn off automatic
checkpoints and run them "in a separate thread or process". Once a checkpoint has copied
every frame, the next writer starts the WAL over from its beginning, so the file stays
as small as one interval's writes.

Durability is unchanged: a committed transaction is in the WAL, and SQLite replays the WAL
at the next open whether or not it was ever checkpointed (kill -9 included)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 1.0  # s between checkpoints while the store is being written
# A pass that could not reach every frame (a reader held an older snapshot, or commits
# landed meanwhile) is retried at once, at most this many times in a row.
MAX_CATCH_UP = 8


class WalCheckpointer:
    """A daemon thread checkpointing one SQLite file's WAL after ``wrote()``.

    Daemon: a store never closed (a crash on the way out) must not keep the process
    alive; the WAL it leaves is replayed at the next open."""

    def __init__(self, path: Path, *, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0  # passes that copied every frame (for tests and debugging)
        self._wake = threading.Condition()
        self._dirty = False
        self._stopping = False
        self._thread: threading.Thread | None = None  # started by the first commit

    def wrote(self) -> None:
        """A COMMIT landed in the WAL (called on the event loop after each batch).

        The flag is set under the condition's lock (an uncontended lock costs well under
        a microsecond, next to a COMMIT's tens) and read without it: a stale True only
        means a pass is already due, and that pass starts after this COMMIT."""
        if self._thread is None:
            # Lazily: a store that is only read (the CLI listing users) needs no thread.
            self._thread = threading.Thread(
                target=self._run, name=f"sqlite-checkpoint:{self.path.name}", daemon=True
            )
            self._thread.start()
        if not self._dirty:
            with self._wake:
                self._dirty = True
                self._wake.notify()

    def close(self) -> None:
        """Stop the thread (after a pass in progress ends) and close its connection."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        # The connection belongs to this thread alone (sqlite3's check_same_thread).
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            while self._wait_for_work():
                self._checkpoint(conn)
        finally:
            conn.close()

    def _wait_for_work(self) -> bool:
        """Block until there is something to checkpoint (or we stop); then let one
        interval pass, so a burst of commits costs one checkpoint, not one each."""
        with self._wake:
            while not (self._dirty or self._stopping):
                self._wake.wait()
            if self._stopping:
                return False
            self._wake.wait_for(lambda: self._stopping, self.interval)
            self._dirty = False
            return not self._stopping

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        for _ in range(MAX_CATCH_UP):
            try:
                busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                # Not fatal: the WAL grows until the next pass succeeds, and SQLite still
                # checkpoints it when the last connection closes.
                log.warning("sqlite %s: checkpoint failed: %s", self.path, exc)
                return
            if busy:
                return
            if copied >= frames:
                self.checkpoints += 1
                return
