"""Web Push provider: RFC 8030 delivery, RFC 8292 VAPID, RFC 8291 payload encryption.

For ``pn-provider=webpush`` the ``pn-prid`` is the push subscription's endpoint URL (RFC
8599 §12). RFC 8599 defines no way to carry the subscription's ``p256dh``/``auth`` keys and
forbids ``pn-param`` for Web Push, so the standard profile sends an **empty body**: the
push itself is the wake-up, and the woken app registers and receives the INVITE over SIP
(fcm.md B1). When a binding does carry keys (``param`` = ``<p256dh>.<auth>``, both
base64url; ``.`` is outside that alphabet and needs no escaping in a SIP URI) the JSON
payload is sent encrypted with ``aes128gcm`` (RFC 8291 §3.4, one record, 4096-octet cap).

Requests go over HTTP/2 (RFC 8030's design target), one kept-warm :class:`H2Client` per
push-service origin. The VAPID JWT (RFC 8292 §2) is cached per origin, since its ``aud``
is the origin, and re-minted an hour before its 12 h expiry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import ssl
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import http_ece  # type: ignore[import-untyped]
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

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

VAPID_LIFETIME = 12 * 3600  # RFC 8292 §2: exp at most 24 h ahead; pywebpush uses 12 h
VAPID_REMINT_BEFORE = 3600
DEFAULT_TTL = 900  # when the request has no expiry (Sygnal's default)
MAX_RECORD = 4096  # RFC 8291 §4: push services must accept 4096-octet bodies
MAX_PLAINTEXT = MAX_RECORD - 86 - 17  # header (86), delimiter (1) and tag (16)
MAX_CLIENTS = 32  # distinct push-service origins kept connected


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class VapidKey:
    private_key: ec.EllipticCurvePrivateKey
    public_key_b64: str  # uncompressed point, base64url: the ``k`` parameter, +sip.vapid


def load_vapid_key(path: str | Path) -> VapidKey:
    """A P-256 key from a PEM file (PKCS#8 or SEC1) or a base64url raw 32-octet private
    scalar (what ``web-push generate-vapid-keys`` prints). ValueError when unusable."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"VAPID key file {path}: cannot read: {exc.strerror}") from None
    try:
        if b"-----BEGIN" in raw:
            key = serialization.load_pem_private_key(raw, password=None)
        else:
            scalar = b64url_decode(raw.decode().strip())
            if len(scalar) != 32:
                raise ValueError("raw key must be 32 octets")
            key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
    except (ValueError, TypeError, UnicodeDecodeError, binascii.Error) as exc:
        raise ValueError(f"VAPID key file {path}: bad key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"VAPID key file {path}: not a P-256 (prime256v1) EC key")
    return VapidKey(key, b64url(_point(key.public_key())))


def _point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def origin_of(url: str) -> str:
    """``scheme://host[:port]``, the VAPID ``aud`` (RFC 8292 §2; RFC 6454 serialisation)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    default = {"https": 443, "http": 80}.get(parts.scheme)
    port = "" if parts.port in (None, default) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


def vapid_token(key: VapidKey, audience: str, subject: str, now: float) -> tuple[str, float]:
    """An ES256 JWT for ``audience`` and its expiry (RFC 8292 §2)."""
    exp = int(now) + VAPID_LIFETIME
    claims = {"aud": audience, "exp": exp, "sub": subject}
    return jwt.encode(claims, key.private_key, algorithm="ES256"), float(exp)


def topic_for(collapse_id: str) -> str:
    """RFC 8030 §5.4: at most 32 base64url characters. A hash of the call id fits any
    call id, and a retried push of one call replaces the queued one."""
    return b64url(hashlib.sha256(collapse_id.encode()).digest())[:32]


def subscription_keys(param: str) -> tuple[bytes, bytes] | None:
    """``<p256dh>.<auth>`` -> (65-octet P-256 point, 16-octet auth secret); "" -> None."""
    if not param:
        return None
    p256dh_text, dot, auth_text = param.partition(".")
    try:
        p256dh, auth = b64url_decode(p256dh_text), b64url_decode(auth_text)
    except (binascii.Error, ValueError):
        raise ValueError("subscription keys are not base64url") from None
    if not dot or len(p256dh) != 65 or p256dh[0] != 4 or len(auth) != 16:
        raise ValueError("subscription keys must be <p256dh 65 octets>.<auth 16 octets>")
    return p256dh, auth


def encrypt(plaintext: bytes, p256dh: bytes, auth: bytes) -> bytes:
    """RFC 8291 §3.4 body: one aes128gcm record keyed by a fresh ephemeral ECDH key, whose
    public point http_ece puts in the keyid; the salt is random per message (http_ece
    draws it). ValueError when the subscription key is not a usable P-256 point."""
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    try:
        return bytes(
            http_ece.encrypt(
                plaintext,
                private_key=ephemeral,
                dh=p256dh,
                auth_secret=auth,
                rs=MAX_RECORD,
                version="aes128gcm",
            )
        )
    except (http_ece.ECEException, ValueError) as exc:  # ValueError: point not on the curve
        raise ValueError(f"cannot encrypt for this subscription: {exc}") from None


class WebPushProvider:
    """``PushProvider`` for ``pn-provider=webpush`` (module doc).

    ``allowed_hosts``: push-service host names (or ``.suffix``) the endpoint may point to.
    Endpoints come from REGISTERing devices, so without a list any host is reachable.
    """

    def __init__(
        self,
        name: str,
        *,
        vapid_private_key_file: str,
        subject: str,
        ca_file: str | None = None,
        timeout: float = 5.0,
        ping_interval: float = 30.0,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        if not subject.startswith(("mailto:", "https:")):
            raise ValueError(f"webpush {name}: subject must be a mailto: or https: URI")
        self.name = name
        self.vapid = load_vapid_key(vapid_private_key_file)
        self._subject = subject
        self._ssl = ssl.create_default_context(cafile=ca_file)
        self._ssl.set_alpn_protocols(["h2"])
        self._timeout = timeout
        self._ping_interval = ping_interval
        self._allowed = allowed_hosts
        self._clients: OrderedDict[str, H2Client] = OrderedDict()
        self._tokens: dict[str, tuple[str, float]] = {}  # origin -> (JWT, exp)

    async def send(self, request: PushRequest, now: float) -> PushOutcome:
        endpoint = request.target.prid
        parts = urlsplit(endpoint)
        if parts.scheme != "https" or not parts.hostname:
            return Permanent("BadEndpoint")
        if self._allowed and not _host_allowed(parts.hostname, self._allowed):
            return Permanent("EndpointNotAllowed")
        headers = [
            ("ttl", str(_ttl(request, now))),
            ("urgency", "high" if request.kind == "voip" or request.urgent else "normal"),
        ]
        if request.collapse_id:
            headers.append(("topic", topic_for(request.collapse_id)))
        try:
            keys = subscription_keys(request.target.param)
        except ValueError:
            return Permanent("BadSubscriptionKeys")
        body = b""
        if keys is not None:
            plaintext = json.dumps(request.payload, separators=(",", ":")).encode()
            if len(plaintext) > MAX_PLAINTEXT:
                return Permanent("PayloadTooLarge")
            try:
                body = encrypt(plaintext, *keys)
            except ValueError:
                return Permanent("BadSubscriptionKeys")
            headers += [
                ("content-encoding", "aes128gcm"),
                ("content-type", "application/octet-stream"),
            ]
        origin = origin_of(endpoint)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for attempt in range(2):
            token = self._token(origin, now)
            auth = ("authorization", f"vapid t={token}, k={self.vapid.public_key_b64}")
            try:
                client = await self._client(origin)
                reply = await client.request(
                    "POST", path, [*headers, auth], body, timeout=self._timeout
                )
            except H2TLSError as exc:
                return Permanent(f"TLS: {exc}")
            except (H2Retryable, H2Error) as exc:
                return Transient(str(exc))
            if reply.status in (401, 403) and attempt == 0:
                # RFC 8292 §4.2: the service refused our JWT; mint a fresh one, try once more.
                self._tokens.pop(origin, None)
                continue
            return classify(reply.status, reply.headers)
        raise AssertionError("unreachable")  # the loop always returns on its second turn

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.close()

    def _token(self, origin: str, now: float) -> str:
        cached = self._tokens.get(origin)
        if cached is not None and now < cached[1] - VAPID_REMINT_BEFORE:
            return cached[0]
        token, exp = vapid_token(self.vapid, origin, self._subject, now)
        self._tokens[origin] = (token, exp)
        return token

    async def _client(self, origin: str) -> H2Client:
        client = self._clients.get(origin)
        if client is not None:
            self._clients.move_to_end(origin)
            return client
        if len(self._clients) >= MAX_CLIENTS:
            # Endpoints come from devices: keep the set of live connections bounded. A push
            # still in flight to the least recently used origin fails as Transient.
            _, old = self._clients.popitem(last=False)
            await old.close()
        client = H2Client(
            origin,
            ssl_context=self._ssl,
            connect_timeout=self._timeout,
            ping_interval=self._ping_interval,
        )
        self._clients[origin] = client
        return client


def _ttl(request: PushRequest, now: float) -> int:
    """RFC 8030 §5.2: seconds the service may hold the push; for a call, what is left of
    the hold window (0 = deliver now or drop)."""
    if request.expires_at <= 0:
        return DEFAULT_TTL
    return max(0, math.ceil(request.expires_at - now))


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower()
    return any(host == a or (a.startswith(".") and host.endswith(a)) for a in allowed)


def classify(status: int, headers: dict[str, str]) -> PushOutcome:
    """RFC 8030 §5 / fcm.md B1 replies -> outcome."""
    if 200 <= status < 300:  # 201 Created; 202 when a receipt was asked for
        return Delivered(headers.get("location", ""))
    if status in (404, 410):
        return TokenRejected(f"HTTP {status}")  # subscription expired or unsubscribed
    if status == 429 or status >= 500:
        return Transient(f"HTTP {status}", parse_retry_after(headers.get("retry-after")))
    return Permanent(f"HTTP {status}")  # 400 malformed, 401/403 VAPID, 413 too large
