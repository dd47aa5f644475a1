"""APNs provider: VoIP and alert pushes over HTTP/2 (apns.md), token or certificate auth.

One provider serves one app (``topic_bundle_id``) of one team; the dispatcher routes by
pn-provider and app id. ``apns.dev`` targets (RFC 8599 sandbox spelling, see
``policy.pushparams.is_sandbox``) go to the sandbox host, others to production, each over its
own kept-warm connection (a sandbox token sent to production fails with BadDeviceToken).

Token auth (apns.md §4.1): one ES256 JWT (``kid`` header, ``iss`` = team, ``iat``) is signed
and reused; it is re-signed after ``jwt_refresh`` seconds, kept within 20..50 min because
APNs rejects tokens older than 60 min and answers 429 TooManyProviderTokenUpdates when they
change more often than every 20 min. The .p8 key is loaded once, at construction.

Outcomes (apns.md §5, Sygnal's token-error table): 410 and 400 BadDeviceToken /
DeviceTokenNotForTopic -> TokenRejected; 429, 5xx, 400 IdleTimeout, network trouble ->
Transient (Retry-After honoured); 403 ExpiredProviderToken -> re-sign and retry once; the
rest (our request or configuration) -> Permanent. A request the connection lost (GOAWAY,
REFUSED_STREAM, reset) is retried once on a fresh connection, then Transient: for a held
call there is time for one quick retry only (apns.md §5).
"""

from __future__ import annotations

import email.utils
import ssl
from pathlib import Path
from typing import Any, Literal

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.policy.pushparams import has_voip_token, is_sandbox
from sipwake.push.base import (
    Delivered,
    Permanent,
    PushOutcome,
    PushRequest,
    TokenRejected,
    Transient,
)
from sipwake.push.http2 import H2Client, H2Error, H2Response, H2Retryable, H2TLSError
from sipwake.push.payload import APNS_ALERT_LIMIT, APNS_VOIP_LIMIT

PRODUCTION_URL = "https://api.push.apple.com:443"
SANDBOX_URL = "https://api.sandbox.push.apple.com:443"
JWT_MIN_AGE = 20 * 60  # re-signing sooner: 429 TooManyProviderTokenUpdates
JWT_MAX_AGE = 50 * 60  # APNs rejects tokens older than 60 min; keep a margin for clock skew

TOKEN_REJECTED = frozenset(
    {"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"}
)
# Headers whose values change per request: never put them in APNs's small HPACK table.
_UNINDEXED = frozenset({"apns-expiration", "apns-collapse-id", "apns-id"})
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class ApnsProvider:
    """A :class:`~sipwake.push.base.PushProvider` for APNs (module doc)."""

    def __init__(
        self,
        name: str,
        *,
        topic_bundle_id: str,
        team_id: str = "",
        key_id: str = "",
        key_file: str | Path = "",
        cert_file: str | Path = "",
        environment: Literal["production", "sandbox"] | str = "production",
        base_url: str = "",
        ca_file: str | Path = "",
        jwt_refresh: float = 40 * 60,
        timeout: float = 10.0,
        ping_interval: float = 30.0,
    ) -> None:
        """Token auth: ``team_id`` + ``key_id`` + ``key_file`` (.p8). Certificate auth:
        ``cert_file`` + ``key_file`` (PEM). ``environment`` is the default for targets that
        do not say (``apns.dev`` always means sandbox); ``base_url`` replaces both hosts
        (an emulator), trusted through ``ca_file``. Raises ValueError on bad key material."""
        if not topic_bundle_id:
            raise ValueError("APNs provider needs topic_bundle_id")
        if environment not in ("production", "sandbox"):
            raise ValueError(f"APNs environment must be production or sandbox: {environment}")
        self.name = name
        self.topic = topic_bundle_id
        self.team_id = team_id
        self.key_id = key_id
        self._default_sandbox = environment == "sandbox"
        self._jwt_refresh = min(max(jwt_refresh, JWT_MIN_AGE), JWT_MAX_AGE)
        self._timeout = timeout
        self._ping_interval = ping_interval
        self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._ssl.set_alpn_protocols(["h2"])
        self._signing_key: ec.EllipticCurvePrivateKey | None = None
        if cert_file:
            try:
                self._ssl.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"APNs certificate {cert_file}: cannot load: {exc}") from None
        else:
            if not (team_id and key_id and key_file):
                raise ValueError("APNs token auth needs team_id, key_id and key_file (.p8)")
            self._signing_key = load_p8(Path(key_file))
        self._urls = (base_url, base_url) if base_url else (PRODUCTION_URL, SANDBOX_URL)
        self._clients: dict[str, H2Client] = {}
        self._jwt = ""
        self._jwt_iat = 0.0

    # -- PushProvider ---------------------------------------------------------------------
    async def send(self, request: PushRequest, now: float) -> PushOutcome:
        target = request.target
        if request.kind == "voip":
            if not has_voip_token(target):
                return Permanent("NoVoipToken")  # PushKit token missing: alert only
            token, topic, limit = target.prid, self.topic + ".voip", APNS_VOIP_LIMIT
            body = _encode(request.payload)
        else:
            token, topic, limit = target.alert_prid or "", self.topic, APNS_ALERT_LIMIT
            if not token:
                return Permanent("NoAlertToken")
            if request.kind == "refresh":
                # A background push wakes the app without a word (never VoIP: iOS would
                # make it ring); content-available and no alert (apns.md §3).
                aps: dict[str, Any] = {"content-available": 1}
            else:
                aps = {"alert": request.alert_text, "sound": "default"}
            body = _encode({"aps": aps, **request.payload})
        if len(body) > limit:
            return Permanent("PayloadTooLarge")
        if request.expires_at and request.expires_at <= now:
            return Permanent("ExpiredBeforeSend")
        background = request.kind == "refresh"
        headers = [
            ("apns-push-type", "background" if background else request.kind),
            ("apns-topic", topic),
            # A call rings now (apns.md §3); a background push must be priority 5.
            ("apns-priority", "5" if background else "10"),
            ("apns-expiration", str(int(request.expires_at))),
        ]
        if request.collapse_id:
            headers.append(("apns-collapse-id", request.collapse_id[:64]))
        client = self._client(is_sandbox(target) or self._default_sandbox)
        path = "/3/device/" + token
        retried_network = retried_jwt = False
        while True:
            auth = [("authorization", "bearer " + self._token(now))] if self._signing_key else []
            try:
                response = await client.request(
                    "POST", path, headers + auth, body, timeout=self._timeout
                )
            except H2Retryable as exc:
                if retried_network:
                    return Transient(f"connection: {exc}")
                retried_network = True  # once, on a fresh connection
                continue
            except H2TLSError as exc:
                return Permanent(f"TLS: {exc}")
            except H2Error as exc:
                return Transient(f"HTTP/2: {exc}")
            outcome = _outcome(response, now)
            if (
                isinstance(outcome, Transient)
                and outcome.reason == "ExpiredProviderToken"
                and not retried_jwt
                and self._signing_key is not None
                and now - self._jwt_iat >= JWT_MIN_AGE  # sooner would be TooManyUpdates
            ):
                retried_jwt = True
                self._jwt = ""
                continue
            return outcome

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    # -- internals ------------------------------------------------------------------------
    def _client(self, sandbox: bool) -> H2Client:
        url = self._urls[1] if sandbox else self._urls[0]
        client = self._clients.get(url)
        if client is None:
            client = H2Client(
                url,
                ssl_context=self._ssl,
                ping_interval=self._ping_interval,
                unindexed_headers=_UNINDEXED,
            )
            self._clients[url] = client
        return client

    def _token(self, now: float) -> str:
        """The cached provider JWT, re-signed once it is ``jwt_refresh`` old (§4.1)."""
        if not self._jwt or now - self._jwt_iat >= self._jwt_refresh:
            assert self._signing_key is not None  # only called with token auth
            iat = int(now)
            self._jwt = jwt.encode(
                {"iss": self.team_id, "iat": iat},
                self._signing_key,
                algorithm="ES256",
                headers={"kid": self.key_id},
            )
            self._jwt_iat = iat
        return self._jwt


def load_p8(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"APNs key file {path}: cannot read: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"APNs key file {path}: not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"APNs key file {path}: not an EC P-256 key (ES256)")
    return key


def _outcome(response: H2Response, now: float) -> PushOutcome:
    """Map one APNs answer to an outcome (apns.md §5)."""
    status = response.status
    if status == 200:
        return Delivered(response.headers.get("apns-id", ""))
    reason = _reason(response.body) or f"HTTP {status}"
    if status == 410 or reason in TOKEN_REJECTED:
        return TokenRejected(reason)
    if status == 429 or status >= 500 or reason in ("IdleTimeout", "ExpiredProviderToken"):
        return Transient(reason, _retry_after(response.headers.get("retry-after", ""), now))
    return Permanent(reason)


def _reason(body: bytes) -> str:
    try:
        doc: Any = _decode(body) if body else None
    except msgspec.DecodeError:
        return ""
    reason = doc.get("reason") if isinstance(doc, dict) else None
    return reason if isinstance(reason, str) else ""


def _retry_after(value: str, now: float) -> float | None:
    """Retry-After as delay-seconds or HTTP-date (RFC 9110 §10.2.3) -> seconds from now."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
