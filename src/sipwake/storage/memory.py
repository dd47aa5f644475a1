"""In-process store: plain dicts. The reference implementation of the storage contract,
the backend for tests and for ``memory://`` (nothing survives a restart).

Atomicity: every method runs without an ``await`` between reading and writing, so on one
event loop an ``update`` cannot interleave with another (asyncio is cooperative).
"""

from __future__ import annotations

from sipwake.policy.bindings import Binding

from .base import Decided, T, UpdateFn, User, clear_push, new_list
from .packed import Stored, expired, pack, unpack


class MemoryStore:
    """Implements both ``BindingStore`` and ``UserStore``."""

    def __init__(self) -> None:
        # Packed (packed.py): tuples the cyclic GC does not walk; callers get new objects.
        self._bindings: dict[str, Stored] = {}
        self._users: dict[tuple[str, str], User] = {}

    # BindingStore

    async def lookup(self, aor: str, now: float) -> list[Binding]:
        return unpack(aor, self._bindings.get(aor, ()), now)

    async def update(
        self, aor: str, fn: UpdateFn[T], now: float, decided: Decided[T] | None = None
    ) -> T:
        new, result = fn(unpack(aor, self._bindings.get(aor, ()), now))
        self._put(aor, new_list(aor, new, now))
        if decided is not None:
            decided(result)
        return result

    async def remove_push_target(self, aor: str, device_key: str) -> bool:
        new = clear_push(unpack(aor, self._bindings.get(aor, ())), device_key)
        if new is None:
            return False
        self._put(aor, new)
        return True

    async def purge_expired(self, now: float) -> int:
        removed = 0
        for aor, stored in list(self._bindings.items()):
            gone = expired(stored, now)
            if gone:
                removed += gone
                self._put(aor, unpack(aor, stored, now))
        return removed

    async def count(self) -> int:
        return len(self._bindings)

    async def aors(self, prefix: str = "", limit: int = 1000) -> list[str]:
        return sorted(a for a in self._bindings if a.startswith(prefix))[:limit]

    async def close(self) -> None:
        pass

    def _put(self, aor: str, bindings: list[Binding]) -> None:
        if bindings:
            self._bindings[aor] = pack(bindings)
        else:
            self._bindings.pop(aor, None)

    # UserStore

    async def get_user(self, username: str, realm: str) -> User | None:
        return self._users.get((realm, username))

    async def put_user(self, user: User) -> None:
        self._users[(user.realm, user.username)] = user

    async def remove_user(self, username: str, realm: str) -> bool:
        return self._users.pop((realm, username), None) is not None

    async def list_users(self, realm: str | None = None) -> list[User]:
        return [self._users[k] for k in sorted(self._users) if realm is None or k[0] == realm]
