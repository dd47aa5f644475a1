"""The message store: SIP MESSAGEs kept for sleeping devices (issue 13), its codec, and the
in-process backend.

Contract, shared by every backend (tests/storage/test_inbox_contract.py pins it):

* One inbox per AoR, changed atomically as a whole by the pure rules of
  ``policy/inbox.py`` (order, dedup by Call-ID + CSeq, expiry, quota, per-device delivery).
  Concurrent changes of one AoR all land (SQLite and memory: one event loop; Redis:
  compare-and-set with retries, as for bindings).
* ``now`` is the caller's wall clock. An expired message is never returned by ``pending``
  or ``listing``; it stays stored until a change of its AoR or ``purge_expired`` removes
  it, and every removal by expiry is reported in the result so it can be counted.
* Stored messages survive a restart on SQLite (written before the sender gets its 202,
  WAL) and Redis; memory keeps nothing.
* Results are copies: changing them changes nothing stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import msgspec

from sipwake.policy import inbox as rules
from sipwake.policy.inbox import Added, Inbox, Settled, StoredMessage

from .errors import StorageError

R = TypeVar("R")
FORMAT_VERSION = 1
# What a backend's ``_update`` hands the rules: the AoR's whole inbox in, (the new inbox,
# a result) out. May run more than once (Redis retries on conflict): it must be pure.
InboxFn = Callable[[Inbox], tuple[Inbox, R]]


@dataclass(frozen=True, slots=True)
class Purged:
    expired: int  # messages removed because they expired


class MessageStore(Protocol):
    async def add(self, aor: str, message: StoredMessage, now: float, max_per_user: int) -> Added:
        """Store ``message`` for its devices (``policy.inbox.add``)."""
        ...

    async def pending(self, aor: str, device: str, now: float) -> list[StoredMessage]:
        """Live messages ``device`` has still to receive, oldest first."""
        ...

    async def settle(self, aor: str, message_id: str, device: str, now: float) -> Settled:
        """``device`` is done with the message (delivered, or refused for good)."""
        ...

    async def listing(self, aor: str, now: float) -> list[StoredMessage]:
        """Every live message of ``aor``, oldest first (admin)."""
        ...

    async def users(self, now: float, limit: int = 1000) -> dict[str, int]:
        """AoRs with live messages -> how many, sorted by AoR, at most ``limit`` (admin)."""
        ...

    async def purge_expired(self, now: float) -> int:
        """Remove every expired message; returns how many."""
        ...


class InboxStore:
    """The contract's methods on top of three primitives a backend provides: read one
    AoR's inbox, change it atomically, list the AoRs that have one."""

    async def _read(self, aor: str) -> Inbox:
        raise NotImplementedError

    async def _update(self, aor: str, fn: InboxFn[R], now: float) -> R:
        raise NotImplementedError

    async def _aors(self, limit: int) -> list[str]:
        raise NotImplementedError

    async def _due(self, now: float) -> list[str]:
        """AoRs that may hold an expired message (all of them, unless indexed)."""
        return await self._aors(1 << 30)

    async def add(self, aor: str, message: StoredMessage, now: float, max_per_user: int) -> Added:
        def fn(inbox: Inbox) -> tuple[Inbox, Added]:
            done = rules.add(inbox, message, now, max_per_user)
            return done.inbox, done

        return await self._update(aor, fn, now)

    async def pending(self, aor: str, device: str, now: float) -> list[StoredMessage]:
        return rules.pending(await self._read(aor), device, now)

    async def settle(self, aor: str, message_id: str, device: str, now: float) -> Settled:
        def fn(inbox: Inbox) -> tuple[Inbox, Settled]:
            done = rules.settle(inbox, message_id, device, now)
            return done.inbox, done

        return await self._update(aor, fn, now)

    async def listing(self, aor: str, now: float) -> list[StoredMessage]:
        return [m for m in await self._read(aor) if m.live(now)]

    async def users(self, now: float, limit: int = 1000) -> dict[str, int]:
        out: dict[str, int] = {}
        for aor in await self._aors(1 << 30):
            live = len(await self.listing(aor, now))
            if live:
                out[aor] = live
                if len(out) >= limit:
                    break
        return out

    async def purge_expired(self, now: float) -> int:
        def fn(inbox: Inbox) -> tuple[Inbox, int]:
            kept, gone = rules.expire(inbox, now)
            return kept, len(gone)

        removed = 0
        for aor in await self._due(now):
            removed += await self._update(aor, fn, now)
        return removed


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(tuple[int, list[StoredMessage]])


def encode_inbox(inbox: Inbox) -> bytes:
    """msgpack ``[FORMAT_VERSION, [message-map, ...]]``: maps by field name, so a field
    added later decodes from old records (as storage/codec.py does for bindings)."""
    return _encoder.encode((FORMAT_VERSION, list(inbox)))


def decode_inbox(aor: str, data: bytes) -> Inbox:
    try:
        version, items = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StorageError(f"corrupt inbox record for {aor!r}: {exc}") from exc
    if version != FORMAT_VERSION:
        raise StorageError(f"inbox format {version} not supported (aor {aor!r})")
    return tuple(items)


class MemoryMessageStore(InboxStore):
    """Plain dict; every change is one step on the event loop (no await inside)."""

    def __init__(self) -> None:
        self._inboxes: dict[str, Inbox] = {}

    async def _read(self, aor: str) -> Inbox:
        return self._inboxes.get(aor, ())

    async def _update(self, aor: str, fn: InboxFn[R], now: float) -> R:
        new, result = fn(self._inboxes.get(aor, ()))
        if new:
            self._inboxes[aor] = new
        else:
            self._inboxes.pop(aor, None)
        return result

    async def _aors(self, limit: int) -> list[str]:
        return sorted(self._inboxes)[:limit]


def message_row(m: StoredMessage) -> dict[str, object]:
    """A stored message as the admin API and CLI show it: everything but the content
    (operators see who wrote to whom and when, not what)."""
    return {
        "id": m.id,
        "call_id": m.call_id,
        "cseq": m.cseq,
        "sender": m.sender,
        "content_type": m.content_type,
        "size": len(m.data),
        "stored_at": m.stored_at,
        "expires_at": m.expires_at,
        "devices": list(m.devices),
    }


async def admin_view(store: MessageStore, aor: str | None, now: float) -> dict[str, object]:
    """``{"aor", "messages": rows}`` for one AoR, ``{"users": {aor: count}}`` for all."""
    if aor is None:
        return {"users": await store.users(now)}
    return {"aor": aor, "messages": [message_row(m) for m in await store.listing(aor, now)]}
