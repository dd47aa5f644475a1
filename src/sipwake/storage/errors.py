"""The small error set every storage backend maps its own errors to (storage/base.py)."""

from __future__ import annotations


class StorageError(Exception):
    """A store operation failed for a reason other than the backend being unreachable
    (corrupt record, too much write contention, schema newer than this code)."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached right now (connection refused, timeout, database
    locked, disk full). The engine answers 503 with Retry-After (RFC 3261 §21.5.4)."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after
