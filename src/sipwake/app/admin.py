"""What operators may see and do through ``/admin`` (api/admin.py serves it): list and remove
bindings, send a test push to each device of an AoR, list calls and show one call's timeline.

Everything here is JSON-ready data; the API adapter adds HTTP and the token check."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from sipwake.policy.bindings import Binding, as_dict
from sipwake.push.base import Delivered, PushOutcome, PushRequest
from sipwake.push.dispatcher import PushDispatcher
from sipwake.storage.base import BindingStore

log = logging.getLogger("sipwake.admin")

MAX_PAGE = 500
TEST_PUSH_TTL = 30.0  # seconds: a test nobody sees within that is not worth delivering

Rows = list[dict[str, Any]]


def canonical_aor(text: str, default_domain: str) -> str:
    """``alice`` -> ``sip:alice@<first domain>``, ``alice@example.com`` ->
    ``sip:alice@example.com``; a full ``sip:`` URI is reduced to ``sip:user@host`` as the
    registrar keys it (RFC 3261 §10.3 step 5)."""
    text = text.strip()
    rest = text.split(":", 1)[1] if text.lower().startswith(("sip:", "sips:")) else text
    user, at, host = rest.partition("@")
    if not at:
        user, host = rest, default_domain
    host = host.split(";", 1)[0].split(">", 1)[0]
    if host.startswith("["):
        host = host[: host.index("]") + 1] if "]" in host else host
    else:
        host = host.split(":", 1)[0]
    return f"sip:{user}@{host.lower()}"


def binding_row(b: Binding, now: float) -> dict[str, Any]:
    row = as_dict(b)
    row["expires_in"] = b.expires_in(now)
    row["device"] = b.device_key
    return row


def _same_instance(binding: Binding, wanted: str) -> bool:
    def bare(s: str) -> str:
        return s.strip().strip("<>").lower()

    return bool(binding.instance) and bare(binding.instance) == bare(wanted)


def _outcome_row(outcome: PushOutcome) -> dict[str, Any]:
    kind = type(outcome).__name__.lower()
    detail = {k: v for k, v in dataclasses.asdict(outcome).items() if v not in ("", None)}
    return {"outcome": kind, **detail}


class AdminService:
    """The binding and push operations behind ``/admin`` (calls are the server's: held ones
    from the wake service and the cluster registry, finished ones from the timelines)."""

    def __init__(
        self,
        *,
        store: BindingStore,
        dispatcher: Callable[[], PushDispatcher | None],
        domain: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher  # a callable: a reload swaps the dispatcher
        self.domain = domain
        self.clock = clock

    async def bindings(self, aor: str = "", offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """One AoR's bindings, or a page of all AoRs' bindings (``next`` is the offset of
        the next page, None on the last)."""
        now = self.clock()
        if aor:
            key = canonical_aor(aor, self.domain)
            found = await self.store.lookup(key, now)
            return {"aor": key, "bindings": [binding_row(b, now) for b in found]}
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        # The store lists AoRs in order from a prefix; an offset page is enough for an
        # operator's listing and needs nothing new from the three backends.
        aors = await self.store.aors("", offset + limit + 1)
        page = aors[offset : offset + limit]
        rows: Rows = []
        for key in page:
            rows.extend(binding_row(b, now) for b in await self.store.lookup(key, now))
        more = len(aors) > offset + limit
        return {"bindings": rows, "aors": len(page), "next": offset + limit if more else None}

    async def remove_bindings(self, aor: str, instance: str = "") -> dict[str, Any]:
        """Remove an AoR's bindings (only the device ``instance`` when given)."""
        key = canonical_aor(aor, self.domain)

        def drop(current: list[Binding]) -> tuple[list[Binding], list[Binding]]:
            gone = [b for b in current if not instance or _same_instance(b, instance)]
            return [b for b in current if b not in gone], gone

        removed = await self.store.update(key, drop, self.clock())
        log.info(
            "admin removed %d binding(s) of %s%s",
            len(removed),
            key,
            f" instance {instance}" if instance else "",
        )
        return {"aor": key, "removed": [b.contact for b in removed]}

    async def push_test(self, aor: str) -> dict[str, Any]:
        """Push every device of the AoR that has a push target and report each answer."""
        key = canonical_aor(aor, self.domain)
        now = self.clock()
        dispatcher = self.dispatcher()
        results: Rows = []
        test_id = str(uuid.uuid4())
        for b in await self.store.lookup(key, now):
            if b.push is None:
                continue
            row: dict[str, Any] = {
                "device": b.device_key,
                "contact": b.contact,
                "provider": b.push.provider,
            }
            if dispatcher is None:
                row.update(outcome="permanent", reason="push is not configured")
            else:
                # type "test": apps that get one report a call to CallKit and end it at
                # once (a VoIP push must always become a call on iOS, apns.md §8).
                payload = {"type": "test", "call_id": test_id, "callee": key, "sent_at": now}
                request = PushRequest(
                    target=b.push,
                    payload=payload,
                    expires_at=now + TEST_PUSH_TTL,
                    collapse_id=test_id,
                )
                started = time.monotonic()
                outcome = await dispatcher.send(request)
                row.update(_outcome_row(outcome))
                row["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
                row["ok"] = isinstance(outcome, Delivered)
            results.append(row)
        log.info("admin test push to %s: %d device(s)", key, len(results))
        return {"aor": key, "results": results}
