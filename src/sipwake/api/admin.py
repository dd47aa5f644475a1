"""The ``/admin`` routes: bindings, test pushes, calls, stored messages, the OpenAPI document.

All but the OpenAPI document (and the console page, which asks for the token itself) need
``Authorization: Bearer <api.admin_token>`` (RFC 6750 §2.1); with no token configured the
routes answer 404, as if absent. The service behind them is app/admin.py's.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar, cast

import msgspec

_T = TypeVar("_T")
_JSON = "application/json"
SERVICE_TIMEOUT = 10.0
PUSH_TEST_TIMEOUT = 40.0  # the providers retry transient errors for up to 30 s
_CALL_PATH = re.compile(r"/admin/calls/([^/]+)")

Reply = tuple[int, bytes, str, list[tuple[str, str]]]


class AdminService(Protocol):
    """Operator views and actions (plain or ``async def``); values JSON-serialisable."""

    def bindings(self, aor: str) -> Any | Awaitable[Any]:
        """``{"aor": canonical, "bindings": rows}``; a bare user name means our domain."""
        ...

    def all_bindings(self, offset: int, limit: int) -> Any | Awaitable[Any]:
        """``{"bindings": rows, "aors": n, "next": offset or None}``."""
        ...

    def remove_bindings(self, aor: str, instance: str) -> Any | Awaitable[Any]: ...

    def push_test(self, aor: str) -> Any | Awaitable[Any]: ...

    def held_calls(self) -> Any | Awaitable[Any]: ...

    def recent_calls(self) -> Any | Awaitable[Any]: ...

    def call(self, call_id: str) -> Any | Awaitable[Any]:
        """One call's timeline, or None."""
        ...

    def messages(self, aor: str | None) -> Any | Awaitable[Any]:
        """SIP MESSAGEs stored for sleeping devices: ``{"aor", "messages": rows}`` for
        one AoR, ``{"users": {aor: count}}`` for every AoR with some (issue 13)."""
        ...


async def _resolve(value: _T | Awaitable[_T]) -> _T:
    if inspect.isawaitable(value):
        return cast(_T, await value)
    return value


def _json(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return status, msgspec.json.encode(payload), _JSON, headers or []


def _error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return _json(status, {"error": message}, headers)


def _allow(*methods: str) -> Reply:
    return _error(405, "method not allowed", [("allow", ", ".join(methods))])


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name, [])
    return values[0] if len(values) == 1 and values[0] else None


def _int(query: dict[str, list[str]], name: str, default: int) -> int | None:
    values = query.get(name, [])
    if not values:
        return default
    if len(values) != 1 or not values[0].isdigit():
        return None
    return int(values[0])


async def admin_route(
    admin: AdminService, method: str, path: str, query: dict[str, list[str]]
) -> Reply:
    """Answer an authorised ``/admin/...`` request."""
    if path == "/admin/bindings":
        if method == "GET":
            aor = _one(query, "aor")
            if "aor" in query and aor is None:
                return _error(400, "give exactly one aor=")
            async with asyncio.timeout(SERVICE_TIMEOUT):
                if aor is not None:
                    return _json(200, await _resolve(admin.bindings(aor)))
                offset, limit = _int(query, "offset", 0), _int(query, "limit", 100)
                if offset is None or limit is None:
                    return _error(400, "offset and limit are numbers")
                return _json(200, await _resolve(admin.all_bindings(offset, limit)))
        if method == "DELETE":
            aor = _one(query, "aor")
            if aor is None:
                return _error(400, "give exactly one aor=")
            instance = _one(query, "instance") or ""
            async with asyncio.timeout(SERVICE_TIMEOUT):
                return _json(200, await _resolve(admin.remove_bindings(aor, instance)))
        return _allow("GET", "DELETE")
    if path == "/admin/push-test":
        if method != "POST":
            return _allow("POST")
        aor = _one(query, "aor")
        if aor is None:
            return _error(400, "give exactly one aor=")
        async with asyncio.timeout(PUSH_TEST_TIMEOUT):
            return _json(200, await _resolve(admin.push_test(aor)))
    if path == "/admin/calls":
        if method != "GET":
            return _allow("GET")
        async with asyncio.timeout(SERVICE_TIMEOUT):
            held = await _resolve(admin.held_calls())
            recent = await _resolve(admin.recent_calls())
        return _json(200, {"calls": held, "recent": recent})
    match = _CALL_PATH.fullmatch(path)
    if match:
        if method != "GET":
            return _allow("GET")
        found = await _resolve(admin.call(match.group(1)))
        if found is None:
            return _error(404, "no such call (finished calls are kept in a ring)")
        return _json(200, found)
    if path == "/admin/messages":
        if method != "GET":
            return _allow("GET")
        aors = query.get("aor", [])
        if len(aors) > 1:
            return _error(400, "give at most one aor=")
        async with asyncio.timeout(SERVICE_TIMEOUT):
            return _json(200, await _resolve(admin.messages(aors[0] if aors else None)))
    return _error(404, "not found")
