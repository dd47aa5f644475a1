"""FCM HTTP v1 provider (fcm.md Part A): data-only, high-priority pushes for Android calls.

One POST per push to ``/v1/projects/<project>/messages:send`` over the shared kept-warm h2
connection, authorised by an OAuth2 access token from the service account (oauth.py).
"""

from __future__ import annotations

import json
import math
import ssl
from typing import Any

from sipwake.push.base import (
    Delivered,
    Permanent,
    PushOutcome,
    PushRequest,
    TokenRejected,
    Transient,
)
from sipwake.push.http1 import parse_retry_after
from sipwake.push.http2 import H2Client, H2Error, H2Retryable, H2TLSError
from sipwake.push.oauth import AccessTokenSource, TokenError, load_service_account
from sipwake.push.payload import FCM_DATA_LIMIT  # keys + values of the data map (fcm.md A3)

FCM_BASE_URL = "https://fcm.googleapis.com"
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
# FcmError codes meaning "this registration token is dead for us" (fcm.md A4): drop it.
_DEAD_TOKEN = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_RETRY = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})


class FcmProvider:
    """``PushProvider`` for ``pn-provider=fcm``.

    The project comes from configuration (default: the service account's), not from the
    binding's ``pn-param``: legacy clients put the numeric sender id there, and a service
    account can only send for its own project anyway (403 otherwise).
    """

    def __init__(
        self,
        name: str,
        *,
        service_account_file: str,
        project_id: str | None = None,
        base_url: str = FCM_BASE_URL,
        ca_file: str | None = None,
        timeout: float = 5.0,
        ping_interval: float = 30.0,
    ) -> None:
        self.name = name
        account = load_service_account(service_account_file)
        self.project_id = project_id or account.project_id
        if not self.project_id:
            raise ValueError(f"{service_account_file}: no project_id; set it in the config")
        self._path = f"/v1/projects/{self.project_id}/messages:send"
        self._timeout = timeout
        # The token endpoint is plain HTTP/1.1 (no ALPN offered); the send endpoint is h2.
        http1_ctx = ssl.create_default_context(cafile=ca_file)
        self.tokens = AccessTokenSource(account, ssl_context=http1_ctx, timeout=timeout)
        h2_ctx = ssl.create_default_context(cafile=ca_file)
        h2_ctx.set_alpn_protocols(["h2"])
        self._client = H2Client(
            base_url.rstrip("/"),
            ssl_context=h2_ctx,
            connect_timeout=timeout,
            ping_interval=ping_interval,
        )

    async def send(self, request: PushRequest, now: float) -> PushOutcome:
        message = build_message(request, now)
        if data_size(message["data"]) > FCM_DATA_LIMIT:
            return Permanent("PayloadTooLarge")
        body = json.dumps({"message": message}, separators=(",", ":")).encode()
        for attempt in range(2):
            try:
                token = await self.tokens.token(now)
            except TokenError as exc:
                if exc.retryable:
                    return Transient(f"OAuth: {exc}", exc.retry_after)
                return Permanent(f"OAuth: {exc}")
            headers = [
                ("authorization", f"Bearer {token}"),
                ("content-type", "application/json; charset=UTF-8"),
            ]
            try:
                reply = await self._client.request(
                    "POST", self._path, headers, body, timeout=self._timeout
                )
            except H2TLSError as exc:
                return Permanent(f"TLS: {exc}")
            except H2Retryable as exc:
                return Transient(str(exc))
            except H2Error as exc:  # a reset stream: the server's trouble, not the token's
                return Transient(str(exc))
            if reply.status == 401 and attempt == 0:
                # Expired or revoked access token (fcm.md A2 step 4): refresh once, retry.
                self.tokens.invalidate(token)
                continue
            return classify(reply.status, reply.headers, reply.body)
        raise AssertionError("unreachable")  # the loop always returns on its second turn

    async def close(self) -> None:
        await self._client.close()


def build_message(request: PushRequest, now: float) -> dict[str, Any]:
    """The ``Message`` JSON: data-only, so the app's ``onMessageReceived`` runs even in the
    background; HIGH priority only for calls and messages (``urgent``), which the app
    shows at once, since FCM deprioritises apps whose high-priority pushes show nothing
    (fcm.md A3, A5)."""
    data = {key: _as_string(value) for key, value in request.payload.items()}
    if request.kind == "alert" and request.alert_text:
        data.setdefault("alert", request.alert_text)
    urgent = request.kind == "voip" or request.urgent
    android: dict[str, Any] = {"priority": "high" if urgent else "normal"}
    if request.expires_at > 0:
        # ttl = what is left of the hold window: a call push that arrives after the caller
        # gave up only rings a dead call ("0s": deliver now or drop).
        android["ttl"] = f"{max(0, math.ceil(request.expires_at - now))}s"
    return {"token": request.target.prid, "data": data, "android": android}


def data_size(data: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in data.items())


def _as_string(value: Any) -> str:
    """FCM rejects non-string data values with 400 (fcm.md A3): encode them as JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def classify(status: int, headers: dict[str, str], body: bytes) -> PushOutcome:
    """An FCM reply -> outcome, by ``FcmError.errorCode`` else HTTP status (fcm.md A4)."""
    try:
        info = json.loads(body) if body else {}
    except ValueError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    if status == 200:
        return Delivered(str(info.get("name", "")))
    error = info.get("error") if isinstance(info.get("error"), dict) else {}
    assert isinstance(error, dict)
    code = _error_code(error)
    text = str(error.get("message", ""))
    retry_after = parse_retry_after(headers.get("retry-after"))
    if code in _DEAD_TOKEN or (code == "" and status == 404):
        return TokenRejected(code or "NOT_FOUND")
    if code == "INVALID_ARGUMENT" and _about_token(error, text):
        # Only an invalid *token* kills the binding; other 400s are our message's fault.
        return TokenRejected("InvalidRegistration")
    if code in _RETRY or status == 429 or status >= 500:
        return Transient(code or str(status), retry_after)
    return Permanent(code or str(error.get("status", "")) or str(status))


def _error_code(error: dict[str, Any]) -> str:
    for detail in error.get("details", ()) or ():
        if isinstance(detail, dict) and detail.get("@type") == _FCM_ERROR_TYPE:
            return str(detail.get("errorCode", ""))
    return ""


def _about_token(error: dict[str, Any], text: str) -> bool:
    if "registration token" in text.lower():
        return True
    for detail in error.get("details", ()) or ():
        for violation in detail.get("fieldViolations", ()) if isinstance(detail, dict) else ():
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return False
