"""Storage interfaces: the location service (RFC 3261 §10.2 "location service") and the
digest credential store, plus the small error set every backend maps its own errors to.

The engine only ever sees ``StorageError`` / ``StorageUnavailable`` (ARCHITECTURE.md
"Errors"): sqlite3 and redis exceptions never leave their adapter.

Semantics shared by every backend (the contract suite in tests/storage pins them):

* A binding is live while ``expires_at > now``. ``lookup`` and ``update`` only ever show
  live bindings; expired ones stay stored (and counted by ``count``/``aors``) until
  ``purge_expired`` runs or an update of the same AoR rewrites the list.
* ``now`` is the caller's clock. Bindings hold absolute times, so every node sharing a
  store must use the same clock (wall-clock ``time.time()`` in the server).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from sipwake.policy.bindings import Binding, evolve

from .cluster import Cluster, LocalCluster
from .errors import StorageError, StorageUnavailable
from .inbox import MemoryMessageStore, MessageStore

__all__ = [
    "BindingStore",
    "Decided",
    "StorageError",
    "StorageUnavailable",
    "Stores",
    "UpdateFn",
    "User",
    "UserStore",
    "clear_push",
    "live",
    "new_list",
]

T = TypeVar("T")

# What ``BindingStore.update`` hands the registrar: the AoR's current live bindings in,
# (the AoR's complete new binding list, a result for the caller) out.
UpdateFn = Callable[[list[Binding]], tuple[list[Binding], T]]
# Told an update's result as soon as it is final, before it is durable (``update``).
Decided = Callable[[T], None]


@dataclass(frozen=True, slots=True)
class User:
    """Digest credentials for one user in one realm (RFC 3261 §22.4, RFC 8760).

    Only the HA1 digests are kept, never the password: ``ha1_md5`` is
    MD5(username:realm:password), ``ha1_sha256`` the SHA-256 equivalent. Either may be
    empty when that algorithm is not provisioned for the user.
    """

    username: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    disabled: bool = False


class BindingStore(Protocol):
    """The location service: address-of-record -> list of bindings."""

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of ``aor`` (``expires_at > now``), in stored order."""
        ...

    async def update(
        self, aor: str, fn: UpdateFn[T], now: float, decided: Decided[T] | None = None
    ) -> T:
        """Atomic read-modify-write of one AoR (RFC 3261 §10.3 step 6-8 must see a
        consistent binding set). ``fn`` gets the live bindings and returns the AoR's new
        full list (expired entries in it are dropped; an empty list removes the AoR) and
        a result passed back. ``fn`` may run more than once (Redis retries on conflict),
        so it must be pure. If ``fn`` raises, nothing is written.

        ``decided`` (which must not raise) is called once with the result as soon as it
        is final -- the write staged but not yet durable, where the backend has such a
        moment (SQLite's group commit), else just before ``update`` returns -- and not
        at all if ``fn`` raises. What it does must not acknowledge the write: that waits
        for ``update`` to return (the registrar forwards a held INVITE early, app/register.py)."""
        ...

    async def remove_push_target(self, aor: str, device_key: str) -> bool:
        """The push service rejected this device's token: clear ``push`` on the AoR's
        bindings whose ``device_key`` matches. Returns whether anything changed."""
        ...

    async def purge_expired(self, now: float) -> int:
        """Delete expired bindings; returns how many were removed."""
        ...

    async def count(self) -> int:
        """Number of stored AoRs (expired ones included until purged)."""
        ...

    async def aors(self, prefix: str = "", limit: int = 1000) -> list[str]:
        """Stored AoRs starting with ``prefix``, sorted, at most ``limit`` (admin)."""
        ...

    async def close(self) -> None: ...


class UserStore(Protocol):
    """Digest credentials keyed by (username, realm)."""

    async def get_user(self, username: str, realm: str) -> User | None: ...

    async def put_user(self, user: User) -> None:
        """Insert or replace."""
        ...

    async def remove_user(self, username: str, realm: str) -> bool: ...

    async def list_users(self, realm: str | None = None) -> list[User]:
        """Sorted by (realm, username)."""
        ...


def _memory_messages() -> MessageStore:
    return MemoryMessageStore()


@dataclass(frozen=True, slots=True)
class Stores:
    """What ``factory.open_stores`` returns: the stores of one backend, sharing one
    connection, closed together."""

    bindings: BindingStore
    users: UserStore
    closer: Callable[[], Awaitable[None]]
    # Nodes sharing this backend find each other here; a one-node backend gets a
    # LocalCluster (nobody else to tell).
    cluster: Cluster = field(default_factory=LocalCluster)
    # SIP MESSAGEs kept for sleeping devices (storage/inbox.py).
    messages: MessageStore = field(default_factory=_memory_messages)

    async def close(self) -> None:
        await self.closer()


def live(bindings: list[Binding] | tuple[Binding, ...], now: float) -> list[Binding]:
    """The bindings still valid at ``now`` (RFC 3261 §10.3: a binding whose expiration
    has passed is removed)."""
    return [b for b in bindings if b.expires_at > now]


def new_list(aor: str, bindings: list[Binding], now: float) -> list[Binding]:
    """Validate what an ``update`` callback returned: live entries only, all of ``aor``
    (the backends key blobs by AoR and do not store it per binding)."""
    for b in bindings:
        if b.aor != aor:
            raise ValueError(f"binding for {b.aor!r} returned from an update of {aor!r}")
    return live(bindings, now)


def clear_push(
    bindings: list[Binding] | tuple[Binding, ...], device_key: str
) -> list[Binding] | None:
    """``bindings`` with ``push`` cleared where ``device_key`` matches, or None if no
    binding carried a push target for that device.

    The binding itself is kept: it may still have a live flow (the app is in the
    foreground on its own connection), and the registrar's next refresh decides its
    fate. Only the token is dead (ARCHITECTURE.md: the push target dies when the token
    is rejected)."""
    changed = False
    out: list[Binding] = []
    for b in bindings:
        if b.push is not None and b.device_key == device_key:
            out.append(evolve(b, push=None))
            changed = True
        else:
            out.append(b)
    return out if changed else None
