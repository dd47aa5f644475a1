"""Webhook provider: hand the push to the operator's own HTTP endpoint.

For push services sipwake does not speak (an in-house gateway, a vendor SDK) the operator
runs a small HTTP endpoint; sipwake POSTs each :class:`PushRequest` to it as JSON. The body
is signed with HMAC-SHA-256 under a shared secret (``X-Sipwake-Signature: sha256=<hex>``)
so the endpoint can reject forgeries. The signed body carries the same ``timestamp`` as the
``X-Sipwake-Timestamp`` header, so the signature covers it and a receiver can refuse
replays outside a few minutes' window.

HTTP/1.1 (push/http1.py): operator endpoints are commonly HTTP/1.1-only, and a webhook
adds no h2 requirement of its own. Connections are kept alive between pushes (RFC 9112
§9.3): a fresh connection per push cost as much CPU as the push itself over TCP, 4.7
times as much over TLS (bench/README.md, "The push path like for like, webhook keep-alive").
"""

from __future__ import annotations

import hashlib
import hmac
import ssl

import msgspec

from sipwake.push.base import (
    Delivered,
    Permanent,
    PushOutcome,
    PushRequest,
    TokenRejected,
    Transient,
)
from sipwake.push.http1 import Http1Client, Http1Error, parse_retry_after

SIGNATURE_HEADER = "x-sipwake-signature"
TIMESTAMP_HEADER = "x-sipwake-timestamp"


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Sipwake-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, signature: str) -> bool:
    """For receivers (and tests): constant-time check of a signature header value."""
    return hmac.compare_digest(sign(secret, body), signature)


# Compact and key-sorted, as json.dumps(sort_keys=True) wrote it before; non-ASCII text as
# UTF-8 rather than \u escapes (RFC 8259 §8.1). msgspec: a fifth of json.dumps's time,
# on the push's critical path (bench/README.md, "The push before the row").
_encode = msgspec.json.Encoder(order="sorted").encode


def encode_request(request: PushRequest, now: float) -> bytes:
    """The JSON body: the push request as data, plus the signing timestamp."""
    target = request.target
    return _encode(
        {
            "target": {
                "provider": target.provider,
                "prid": target.prid,
                "param": target.param,
                "purr": target.purr,
                "alert_prid": target.alert_prid,
                "app_id": target.app_id,
            },
            "kind": request.kind,
            "payload": request.payload,
            "expires_at": request.expires_at,
            "collapse_id": request.collapse_id,
            "alert_text": request.alert_text,
            "timestamp": int(now),
        }
    )


class WebhookProvider:
    """``PushProvider`` POSTing to an operator URL (module doc)."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        secret: str | bytes,
        timeout: float = 5.0,
        ca_file: str | None = None,
    ) -> None:
        if not secret:
            raise ValueError(f"webhook {name}: an empty secret would sign nothing")
        ctx = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None
        try:
            self._http = Http1Client(url, ssl_context=ctx)
        except Http1Error as exc:
            raise ValueError(f"webhook {name}: bad url: {exc}") from None
        self.name = name
        self.url = url
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self._timeout = timeout

    async def send(self, request: PushRequest, now: float) -> PushOutcome:
        body = encode_request(request, now)
        headers = [
            ("content-type", "application/json"),
            (SIGNATURE_HEADER, sign(self._secret, body)),
            (TIMESTAMP_HEADER, str(int(now))),
        ]
        try:
            reply = await self._http.request("POST", headers, body, timeout=self._timeout)
        except Http1Error as exc:
            return Transient(str(exc))
        return classify(reply.status, reply.headers.get("retry-after"))

    async def close(self) -> None:
        await self._http.close()


def classify(status: int, retry_after: str | None = None) -> PushOutcome:
    if 200 <= status < 300:
        return Delivered()
    if status in (404, 410):
        return TokenRejected(f"HTTP {status}")  # the operator says the device is gone
    if status == 429 or status >= 500:
        return Transient(f"HTTP {status}", parse_retry_after(retry_after))
    return Permanent(f"HTTP {status}")
