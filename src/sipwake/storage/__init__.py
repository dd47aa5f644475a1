"""Location service and credential stores: memory, embedded SQLite (default), Redis.

Open them with ``open_stores(url, node_id=...)``; the engine depends only on the
``BindingStore`` / ``UserStore`` protocols and the error set in ``base``.
"""

from .base import BindingStore, StorageError, StorageUnavailable, Stores, User, UserStore
from .factory import open_stores

__all__ = [
    "BindingStore",
    "StorageError",
    "StorageUnavailable",
    "Stores",
    "User",
    "UserStore",
    "open_stores",
]
