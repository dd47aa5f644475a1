"""Google service-account OAuth2 (JWT bearer grant, RFC 7523).

FCM HTTP v1 wants ``Authorization: Bearer <access token>``. The token comes from POSTing an
RS256-signed assertion to the service account's ``token_uri`` (fcm.md A2). We read
``token_uri`` from the JSON file rather than hard-coding Google's, so pointing sipwake at
the FCM emulator is a config change (DEPENDENCIES.md, "Push clients").

The token endpoint is hit about once an hour, so it goes over plain HTTP/1.1 on a fresh
connection each time (push/http1.py).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from sipwake.push.http1 import Http1Error, http1_request, parse_retry_after

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # Google rejects assertions whose exp is more than 1 h after iat
REFRESH_MARGIN = 300.0  # refresh ~5 min before expiry, as google-auth does (fcm.md A2 step 4)


class TokenError(Exception):
    """The token endpoint refused or could not be reached. ``retryable`` is False when the
    endpoint answered 4xx (bad key, clock skew, revoked account): a config problem."""

    def __init__(self, detail: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(detail)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The fields of a service-account JSON file we use (fcm.md A2)."""

    client_email: str
    private_key: RSAPrivateKey
    private_key_id: str
    token_uri: str
    project_id: str


def load_service_account(path: str | Path) -> ServiceAccount:
    """Read and parse the key once at start-up (an RSA PEM load costs ~39 ms,
    DEPENDENCIES.md). Any problem is a ValueError naming the file and the fault."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"service account file {path}: cannot read: {exc.strerror}") from None
    try:
        info = json.loads(raw)
    except ValueError:
        raise ValueError(f"service account file {path}: not JSON") from None
    if not isinstance(info, dict):
        raise ValueError(f"service account file {path}: not a JSON object")
    missing = [
        k for k in ("client_email", "private_key", "token_uri") if not isinstance(info.get(k), str)
    ]
    if missing:
        raise ValueError(f"service account file {path}: missing {', '.join(missing)}")
    try:
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"service account file {path}: bad private_key: {exc}") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError(f"service account file {path}: private_key is not an RSA key")
    scheme = urlsplit(info["token_uri"]).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"service account file {path}: token_uri must be http(s)")
    return ServiceAccount(
        client_email=info["client_email"],
        private_key=key,
        private_key_id=str(info.get("private_key_id", "")),
        token_uri=info["token_uri"],
        project_id=str(info.get("project_id", "")),
    )


def sign_assertion(account: ServiceAccount, now: float, scope: str = FCM_SCOPE) -> str:
    """The RS256 JWT of the JWT-bearer grant (fcm.md A2 step 1; RFC 7523 §3)."""
    iat = int(now)
    claims = {
        "iss": account.client_email,
        "scope": scope,
        "aud": account.token_uri,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME,
    }
    headers = {"kid": account.private_key_id} if account.private_key_id else None
    return jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)


class AccessTokenSource:
    """Caches the access token until ``REFRESH_MARGIN`` before it expires.

    Concurrent callers share one refresh (a lock, re-checked inside), so a burst of pushes
    after expiry costs one token request, not one each (fcm.md A2 step 4).
    """

    def __init__(
        self,
        account: ServiceAccount,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        scope: str = FCM_SCOPE,
    ) -> None:
        self.account = account
        self._ssl = ssl_context
        self._timeout = timeout
        self._scope = scope
        self._token = ""
        self._valid_until = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many token requests succeeded (tests, metrics)

    @property
    def valid_until(self) -> float:
        """When the cached access token expires (Unix time; 0 before the first fetch)."""
        return self._valid_until

    async def token(self, now: float) -> str:
        """A valid access token; ``now`` is wall-clock seconds (the assertion's ``iat``)."""
        if self._token and now < self._valid_until:
            return self._token
        async with self._lock:
            if self._token and now < self._valid_until:
                return self._token  # another caller refreshed while we waited
            await self._refresh(now)
            return self._token

    def invalidate(self, token: str) -> None:
        """Drop ``token`` if it is still the cached one: after a 401 the next ``token()``
        refreshes, but a caller holding an already-replaced token does not force a second
        refresh."""
        if token == self._token:
            self._token = ""
            self._valid_until = 0.0

    async def _refresh(self, now: float) -> None:
        body = urlencode(
            {
                "grant_type": JWT_BEARER_GRANT,
                "assertion": sign_assertion(self.account, now, self._scope),
            }
        ).encode()
        try:
            reply = await http1_request(
                "POST",
                self.account.token_uri,
                [("content-type", "application/x-www-form-urlencoded")],
                body,
                ssl_context=self._ssl,
                timeout=self._timeout,
            )
        except Http1Error as exc:
            raise TokenError(f"token endpoint unreachable: {exc}", retryable=True) from None
        info = _json_object(reply.body)
        if reply.status != 200:
            detail = f"{info.get('error', '')} {info.get('error_description', '')}".strip()
            retryable = reply.status >= 500 or reply.status == 429
            raise TokenError(
                f"token endpoint answered {reply.status}: {detail or 'no detail'}",
                retryable=retryable,
                retry_after=parse_retry_after(reply.headers.get("retry-after")),
            )
        token = info.get("access_token")
        expires_in = info.get("expires_in", 3600)
        if not isinstance(token, str) or not token or not isinstance(expires_in, int | float):
            raise TokenError("token endpoint answered 200 without access_token", retryable=True)
        self._token = token
        # Never cache for less than nothing: a tiny expires_in still serves this one caller.
        self._valid_until = now + max(0.0, float(expires_in) - REFRESH_MARGIN)
        self.fetches += 1


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
