"""The HTTP API as one small ASGI app: decline a held call, health, metrics, admin.

Exposure, by design:

* ``POST /v1/calls/{call_id}/decline?t=<token>`` faces the Internet: a phone on any network
  posts here straight from the push it was woken by. Its only credential is the signed,
  call-bound, single-use token of policy/decline.py, checked by the DeclineService.
* ``GET /healthz`` is for load balancers and orchestrators.
* ``GET /metrics`` and ``GET /admin/*`` are operator tools, not for the Internet: bind the
  API to a private address or let the reverse proxy in front pass only ``/v1/``. Admin
  routes are disabled (404, as if absent) unless an admin token is configured, and then
  need ``Authorization: Bearer <token>`` (RFC 6750 §2.1).

Errors are JSON ``{"error": "..."}``; request bodies are capped at ``BODY_LIMIT``.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import parse_qs, quote, unquote

import msgspec

from sipwake.api.admin import AdminService, admin_route
from sipwake.api.console import CONSOLE_FILES, CONSOLE_HEADERS, console_file
from sipwake.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from sipwake.api.metrics import Metrics
from sipwake.api.openapi import OPENAPI
from sipwake.policy.decline import BAD_TOKEN, EXPIRED, REPLAYED, WRONG_CALL, DeclineResult

log = logging.getLogger(__name__)
_T = TypeVar("_T")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Rows = Sequence[Mapping[str, Any]]
Reply = tuple[int, bytes, str, list[tuple[str, str]]]  # status, body, content type, headers

BODY_LIMIT = 1024  # a decline body is ``{"reason": "busy"}``; nothing here needs more
SERVICE_TIMEOUT = 10.0  # a stuck store must not pin connections forever: answer 503
DECLINE_REASONS = ("busy", "decline")  # -> 486 Busy Here / 603 Decline on the branch
_TOKEN_FAULTS = frozenset((BAD_TOKEN, EXPIRED, WRONG_CALL, REPLAYED))
_DECLINE_PATH = re.compile(r"/v1/calls/([^/]+)/decline")
_JSON = "application/json"


class DeclineService(Protocol):
    """Checks the token (policy/decline.py: check_token + UsedTokens) and ends the device's
    branch with 486 (``busy``) or 603 (``decline``). Plain or ``async def``: both fit."""

    def decline(
        self, call_id: str, token: str, reason: str
    ) -> DeclineResult | Awaitable[DeclineResult]: ...


async def _resolve(value: _T | Awaitable[_T]) -> _T:
    if inspect.isawaitable(value):
        return cast(_T, await value)
    return value


class _BodyTooLarge(Exception):
    pass


def _json(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return status, msgspec.json.encode(payload), _JSON, headers or []


def _error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return _json(status, {"error": message}, headers)


class ApiApp:
    """The ASGI application; api/server.py serves it with hypercorn."""

    def __init__(
        self,
        *,
        decline: DeclineService,
        admin: AdminService | None,
        metrics: Metrics,
        health: Callable[[], bool],
        admin_token: str = "",
    ) -> None:
        self.decline_service = decline
        self.admin = admin
        self.metrics = metrics
        self.health = health
        self._admin_token = admin_token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websocket: not offered; hypercorn closes it
        try:
            body = await _read_body(scope, receive)
        except _BodyTooLarge:
            reply = _error(413, f"body over {BODY_LIMIT} bytes")
        else:
            try:
                reply = await self._route(scope, body)
            except Exception:
                log.exception("API %s %s failed", scope["method"], scope["path"])
                reply = _error(500, "internal error")
        status, payload, ctype, extra = reply
        headers = [(b"content-type", ctype.encode()), (b"cache-control", b"no-store")]
        headers += [(k.encode(), v.encode("latin-1")) for k, v in extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _route(self, scope: Scope, body: bytes) -> Reply:
        method: str = scope["method"]
        path: str = scope["path"]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        raw = scope.get("raw_path") or quote(path).encode()
        match = _DECLINE_PATH.fullmatch(raw.decode("latin-1"))
        if match:
            if method != "POST":
                return _error(405, "method not allowed", [("allow", "POST")])
            return await self._decline(match.group(1), query, body)
        if path == "/healthz":
            if method != "GET":
                return _error(405, "method not allowed", [("allow", "GET")])
            return self._healthz()
        if path == "/metrics":
            if method != "GET":
                return _error(405, "method not allowed", [("allow", "GET")])
            await self.metrics.refresh()
            return 200, self.metrics.render(), METRICS_CONTENT_TYPE, []
        if path.startswith("/admin/"):
            return await self._admin(method, path, query, scope["headers"])
        return _error(404, "not found")

    async def _decline(self, raw_call_id: str, query: dict[str, list[str]], body: bytes) -> Reply:
        try:
            call_id = unquote(raw_call_id, errors="strict")
        except UnicodeDecodeError:
            call_id = ""
        tokens = query.get("t", [])
        if len(tokens) != 1:
            self.metrics.decline(BAD_TOKEN)
            return _error(403, "missing or repeated token")
        reason = _decline_reason(body)
        if reason is None:
            self.metrics.decline("bad_request")
            return _error(400, 'body must be {"reason": "busy" | "decline"}')
        if not call_id:
            self.metrics.decline("unknown_call")
            return _error(404, "unknown call")
        try:
            async with asyncio.timeout(SERVICE_TIMEOUT):
                result = await _resolve(self.decline_service.decline(call_id, tokens[0], reason))
        except TimeoutError:
            log.warning("decline of call %s timed out", call_id)
            return _error(503, "try again later", [("retry-after", "1")])
        if result.status == 200:
            self.metrics.decline(reason)
            log.info("call %s declined by app (%s)", call_id, reason)
            return _json(200, {"status": "declined"})
        if result.status == 202:
            # Held by another node or worker: passed on over the cluster bus, which
            # applies it there (docs/scale-out.md). The token itself was good.
            self.metrics.decline(reason)
            log.info("call %s: decline forwarded to its node (%s)", call_id, reason)
            return _json(202, {"status": "forwarded"})
        if result.status == 403:
            # The label set stays closed whatever text the service chose.
            slug = result.message if result.message in _TOKEN_FAULTS else "forbidden"
            self.metrics.decline(slug)
            log.info("call %s: decline refused (%s)", call_id, result.message)
            return _error(403, result.message or "forbidden")
        if result.status == 404:
            self.metrics.decline("unknown_call")
            return _error(404, result.message or "unknown call")
        return _error(result.status, result.message or "decline failed")

    def _healthz(self) -> Reply:
        try:
            healthy = self.health()
        except Exception:
            log.exception("health check failed")
            healthy = False
        if healthy:
            return 200, b"ok\n", "text/plain; charset=utf-8", []
        return 503, b"unavailable\n", "text/plain; charset=utf-8", [("retry-after", "5")]

    async def _admin(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: list[tuple[bytes, bytes]],
    ) -> Reply:
        if self.admin is None or not self._admin_token:
            return _error(404, "not found")  # disabled: do not even reveal the route
        if path == "/admin/openapi.json" and method == "GET":
            return 200, OPENAPI, "application/json", []  # documentation: no secret in it
        if path in CONSOLE_FILES and method == "GET":
            # The console's page and script hold no data: the script asks for the token
            # and sends it with every /admin request it makes.
            body, ctype = console_file(path)
            return 200, body, ctype, CONSOLE_HEADERS
        if not self._authorised(headers):
            self.metrics.auth_failure()
            return _error(401, "unauthorised", [("www-authenticate", 'Bearer realm="admin"')])
        return await admin_route(self.admin, method, path, query)

    def set_admin_token(self, token: str) -> None:
        """A reload's new token: the next request is checked against it."""
        self._admin_token = token.encode()

    def _authorised(self, headers: list[tuple[bytes, bytes]]) -> bool:
        for name, value in headers:
            if name.lower() == b"authorization":
                scheme, _, credentials = value.strip().partition(b" ")
                # The scheme name is case-insensitive (RFC 7235 §2.1); compare the secret in
                # constant time so its prefix cannot be found by timing.
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._admin_token
                )
        return False


def _decline_reason(body: bytes) -> str | None:
    """The app's reason, ``decline`` when the body or the field is absent; None if bad."""
    if not body.strip():
        return "decline"
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(data, dict):
        return None
    reason = data.get("reason", "decline")
    return reason if reason in DECLINE_REASONS else None


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    """The request body, refusing more than BODY_LIMIT without reading it all."""
    for name, value in scope["headers"]:
        if name.lower() == b"content-length" and value.isdigit() and int(value) > BODY_LIMIT:
            raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > BODY_LIMIT:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
