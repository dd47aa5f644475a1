"""Google service-account OAuth2 (JWT bearer grant, RFC 7523) and a small HTTP/1.1 client.

FCM HTTP v1 wants ``Authorization: Bearer <access token>``. The token comes from POSTing an
RS256-signed assertion to the service account's ``token_uri`` (fcm.md A2). We read
``token_uri`` from the JSON file rather than hard-coding Google's, so pointing sipwake at
the FCM emulator is a config change (DEPENDENCIES.md, "Push clients").

The token endpoint is hit about once an hour, so it goes over plain HTTP/1.1 (``h11``) on a
fresh connection each time; the same client serves the webhook provider, whose operator
endpoints are often HTTP/1.1-only.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # Google rejects assertions whose exp is more than 1 h after iat
REFRESH_MARGIN = 300.0  # refresh ~5 min before expiry, as google-auth does (fcm.md A2 step 4)
MAX_REPLY_BYTES = 1 << 20


class Http1Error(Exception):
    """The HTTP/1.1 exchange failed before a complete response arrived (connect, TLS,
    timeout, malformed response). Always worth retrying later: nothing was answered."""


class TokenError(Exception):
    """The token endpoint refused or could not be reached. ``retryable`` is False when the
    endpoint answered 4xx (bad key, clock skew, revoked account): a config problem."""

    def __init__(self, detail: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(detail)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes


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


def parse_retry_after(value: str | None) -> float | None:
    """Delta-seconds form of Retry-After (RFC 9110 §10.2.3); HTTP dates are not used by
    push services and are ignored."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


async def http1_request(
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> HttpReply:
    """One request on a fresh connection (``Connection: close``). Raises Http1Error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Http1Error(f"bad URL {url!r}")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise Http1Error(f"bad port in URL {url!r}") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    ctx = (ssl_context or ssl.create_default_context()) if tls else None
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(
                parts.hostname,
                port,
                ctx,
                method=method,
                target=target,
                host_header=host_header,
                headers=headers,
                body=body,
            )
    except TimeoutError:
        raise Http1Error(f"{method} {url}: timed out after {timeout} s") from None
    except (OSError, ssl.SSLError, h11.ProtocolError) as exc:
        raise Http1Error(f"{method} {url}: {exc}") from None


async def _exchange(
    host: str,
    port: int,
    ctx: ssl.SSLContext | None,
    *,
    method: str,
    target: str,
    host_header: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> HttpReply:
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ctx, server_hostname=host if ctx else None
    )
    try:
        conn = h11.Connection(h11.CLIENT)
        all_headers = [
            ("host", host_header),
            ("content-length", str(len(body))),
            ("connection", "close"),
            *headers,
        ]
        out = [conn.send(h11.Request(method=method, target=target, headers=all_headers))]
        if body:
            out.append(conn.send(h11.Data(data=body)))
        out.append(conn.send(h11.EndOfMessage()))
        writer.write(b"".join(chunk for chunk in out if chunk))
        await writer.drain()
        status = 0
        reply_headers: dict[str, str] = {}
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    key = name.decode("latin-1").lower()
                    text = value.decode("latin-1")
                    reply_headers[key] = (
                        f"{reply_headers[key]}, {text}" if key in reply_headers else text
                    )
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_REPLY_BYTES:
                    raise OSError("response body too large")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return HttpReply(status, reply_headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise OSError("connection closed before the response ended")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
