"""Web Push provider against a mock push service over real TLS + h2 on 127.0.0.1.

The mock plays the push service (RFC 8030 §5): it requires TTL, checks the VAPID JWT
(RFC 8292 §2-§4) against the ``k`` it is given and the subscription's registered key, and
decrypts aes128gcm bodies with the subscription's private key (RFC 8291 §3.4)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import http_ece  # type: ignore[import-untyped]
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app

from sipwake.emulate import tlsutil
from sipwake.policy.bindings import PushTarget
from sipwake.push.base import Delivered, Permanent, PushRequest, TokenRejected, Transient
from sipwake.push.webpush import (
    MAX_PLAINTEXT,
    WebPushProvider,
    b64url,
    b64url_decode,
    encrypt,
    load_vapid_key,
    origin_of,
    subscription_keys,
    topic_for,
)

NOW = 1_700_000_000.0  # the provider's clock; the mock checks exp against it


@dataclass
class Subscription:
    """A browser's subscription: its ECDH key pair and auth secret (RFC 8291 §2)."""

    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = b"0123456789abcdef"
    status: int = 201  # what the mock answers for this subscription

    @property
    def p256dh(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    @property
    def param(self) -> str:
        return f"{b64url(self.p256dh)}.{b64url(self.auth)}"


@dataclass
class Received:
    sub_id: str
    headers: dict[str, str]
    claims: dict[str, Any]
    plaintext: bytes | None


class MockPushService:
    def __init__(self, vapid_public_b64: str) -> None:
        self.vapid_k = vapid_public_b64  # the restricted subscriptions' applicationServerKey
        self.subs: dict[str, Subscription] = {}
        self.received: list[Received] = []
        self.auth_failures = 0  # answer 403 to this many requests first
        self.port = 0
        self.http_versions: set[str] = set()

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.http_versions.add(scope["http_version"])
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, extra = self._handle(scope["path"], headers, body)
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b""})

    def _handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        sub_id = path.removeprefix("/push/")
        sub = self.subs.get(sub_id)
        if sub is None:
            return 404, []
        if not headers.get("ttl", "").isdigit():
            return 400, []
        scheme, _, creds = headers.get("authorization", "").partition(" ")
        if scheme != "vapid":
            return 401, [(b"www-authenticate", b"vapid")]
        params = dict(p.strip().split("=", 1) for p in creds.split(","))
        if params["k"] != self.vapid_k or self.auth_failures > 0:
            self.auth_failures -= 1
            return 403, []
        public = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b64url_decode(params["k"])
        )
        try:
            claims = jwt.decode(
                params["t"],
                public,
                algorithms=["ES256"],
                audience=self.origin,
                options={"verify_exp": False},
            )
        except jwt.PyJWTError:
            return 403, []
        if not NOW < claims["exp"] <= NOW + 24 * 3600:
            return 403, []
        plaintext = None
        if body:
            if headers.get("content-encoding") != "aes128gcm":
                return 415, []
            plaintext = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
            )
        self.received.append(Received(sub_id, headers, claims, plaintext))
        extra = [(b"location", f"/message/{len(self.received)}".encode())]
        extra.append((b"retry-after", b"30"))
        return sub.status, extra


async def _serve(app: Any, certs: tlsutil.TestCerts) -> tuple[int, asyncio.Event, Any]:
    config = Config()
    config.certfile, config.keyfile = str(certs.cert_file), str(certs.key_file)
    config.accesslog = config.errorlog = None
    config.graceful_timeout = 1.0
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    stop = asyncio.Event()
    task = asyncio.create_task(
        worker_serve(
            wrap_app(cast(Any, app), config.wsgi_max_body_size, "asgi"),
            config,
            sockets=Sockets([sock], [], []),
            shutdown_trigger=stop.wait,
        )
    )
    return sock.getsockname()[1], stop, task


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tlsutil.TestCerts:
    return tlsutil.make_test_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def vapid_file(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "vapid.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@dataclass
class Rig:
    service: MockPushService
    provider: WebPushProvider


@pytest.fixture
async def rig(certs: tlsutil.TestCerts, vapid_file: Path) -> AsyncIterator[Rig]:
    provider = WebPushProvider(
        "webpush",
        vapid_private_key_file=str(vapid_file),
        subject="mailto:ops@example.com",
        ca_file=str(certs.ca_file),
        timeout=3.0,
    )
    service = MockPushService(provider.vapid.public_key_b64)
    service.port, stop, task = await _serve(service, certs)
    yield Rig(service, provider)
    await provider.close()
    stop.set()
    await task


def _request(endpoint: str, param: str = "", **payload: Any) -> PushRequest:
    return PushRequest(
        target=PushTarget("webpush", endpoint, param=param),
        payload={"type": "call", "call_id": "1b4e28ba", **payload},
        expires_at=NOW + 30,
        collapse_id="a84b4c76e66710@pc33.example.com",
    )


async def test_rfc8599_profile_sends_empty_body_with_vapid(rig: Rig) -> None:
    rig.service.subs["abc"] = Subscription()
    endpoint = f"{rig.service.origin}/push/abc"
    outcome = await rig.provider.send(_request(endpoint), NOW)
    assert outcome == Delivered("/message/1")
    [got] = rig.service.received
    assert got.plaintext is None and "content-encoding" not in got.headers
    assert got.headers["ttl"] == "30"
    assert got.headers["urgency"] == "high"
    topic = got.headers["topic"]
    assert len(topic) <= 32 and topic == topic_for("a84b4c76e66710@pc33.example.com")
    assert got.claims["aud"] == rig.service.origin
    assert got.claims["sub"] == "mailto:ops@example.com"
    assert got.claims["exp"] == NOW + 12 * 3600
    assert rig.service.http_versions == {"2"}


async def test_encrypted_payload_round_trip(rig: Rig) -> None:
    sub = Subscription()
    rig.service.subs["enc"] = sub
    request = _request(f"{rig.service.origin}/push/enc", sub.param, name="Bob")
    assert isinstance(await rig.provider.send(request, NOW), Delivered)
    [got] = rig.service.received
    assert got.headers["content-encoding"] == "aes128gcm"
    assert got.plaintext is not None
    assert json.loads(got.plaintext) == {"type": "call", "call_id": "1b4e28ba", "name": "Bob"}


async def test_vapid_jwt_cached_per_origin_and_reminted_after_403(rig: Rig) -> None:
    rig.service.subs["a"] = Subscription()
    endpoint = f"{rig.service.origin}/push/a"
    for _ in range(2):
        assert isinstance(await rig.provider.send(_request(endpoint), NOW), Delivered)
    first, second = (r.headers["authorization"] for r in rig.service.received)
    assert first == second  # one JWT reused for the origin
    rig.service.auth_failures = 1
    assert isinstance(await rig.provider.send(_request(endpoint), NOW + 60), Delivered)
    assert rig.service.received[-1].headers["authorization"] != first  # re-minted once
    rig.service.auth_failures = 5
    outcome = await rig.provider.send(_request(endpoint), NOW + 120)
    assert outcome == Permanent("HTTP 403")  # a second refusal is not retried


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, TokenRejected("HTTP 404")),
        (410, TokenRejected("HTTP 410")),
        (429, Transient("HTTP 429", 30.0)),
        (503, Transient("HTTP 503", 30.0)),
        (413, Permanent("HTTP 413")),
        (400, Permanent("HTTP 400")),
    ],
)
async def test_status_mapping(rig: Rig, status: int, expected: object) -> None:
    rig.service.subs["s"] = Subscription(status=status)
    outcome = await rig.provider.send(_request(f"{rig.service.origin}/push/s"), NOW)
    assert outcome == expected


async def test_unknown_subscription_is_token_rejected(rig: Rig) -> None:
    outcome = await rig.provider.send(_request(f"{rig.service.origin}/push/gone"), NOW)
    assert outcome == TokenRejected("HTTP 404")


async def test_oversized_payload_and_bad_keys_are_permanent(rig: Rig) -> None:
    sub = Subscription()
    endpoint = f"{rig.service.origin}/push/x"
    big = _request(endpoint, sub.param, blob="x" * MAX_PLAINTEXT)
    assert await rig.provider.send(big, NOW) == Permanent("PayloadTooLarge")
    bad = _request(endpoint, "not.keys")
    assert await rig.provider.send(bad, NOW) == Permanent("BadSubscriptionKeys")
    off_curve = _request(endpoint, f"{b64url(bytes([4]) + bytes(64))}.{b64url(sub.auth)}")
    assert await rig.provider.send(off_curve, NOW) == Permanent("BadSubscriptionKeys")
    assert rig.service.received == []


async def test_endpoint_checks(certs: tlsutil.TestCerts, vapid_file: Path) -> None:
    provider = WebPushProvider(
        "webpush",
        vapid_private_key_file=str(vapid_file),
        subject="https://example.com/contact",
        allowed_hosts=("push.example.com", ".push.services.mozilla.com"),
    )
    assert await provider.send(_request("http://push.example.com/x"), NOW) == Permanent(
        "BadEndpoint"
    )
    evil = _request("https://169.254.169.254/latest")
    assert await provider.send(evil, NOW) == Permanent("EndpointNotAllowed")
    await provider.close()


async def test_unreachable_push_service_is_transient(vapid_file: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    provider = WebPushProvider(
        "webpush", vapid_private_key_file=str(vapid_file), subject="mailto:a@b", timeout=1.0
    )
    outcome = await provider.send(_request(f"https://127.0.0.1:{port}/push/a"), NOW)
    await provider.close()
    assert isinstance(outcome, Transient)


def test_encrypt_matches_rfc8291_layout_and_decrypts() -> None:
    sub = Subscription()
    body = encrypt(b"hello", sub.p256dh, sub.auth)
    # salt(16) | rs(4) = 4096 | idlen(1) = 65 | keyid = sender's P-256 point (RFC 8291 §4)
    assert int.from_bytes(body[16:20], "big") == 4096
    assert body[20] == 65 and body[21] == 4
    assert len(body) == 86 + len(b"hello") + 1 + 16
    plain = http_ece.decrypt(body, private_key=sub.private_key, auth_secret=sub.auth)
    assert plain == b"hello"
    other = encrypt(b"hello", sub.p256dh, sub.auth)
    assert other[:16] != body[:16] and other[21:86] != body[21:86]  # fresh salt and key


def test_subscription_keys_parsing() -> None:
    sub = Subscription()
    assert subscription_keys("") is None
    assert subscription_keys(sub.param) == (sub.p256dh, sub.auth)
    for bad in ("abc", f"{b64url(sub.p256dh)}.{b64url(b'short')}", "!!.!!"):
        with pytest.raises(ValueError):
            subscription_keys(bad)


def test_origin_and_topic() -> None:
    assert origin_of("https://push.example.com/wpush/v2/abc?x=1") == "https://push.example.com"
    assert origin_of("https://push.example.com:443/a") == "https://push.example.com"
    assert origin_of("https://h:8443/a") == "https://h:8443"
    assert origin_of("https://[::1]:8443/a") == "https://[::1]:8443"
    topic = topic_for("x" * 500)
    assert len(topic) == 32 and set(topic) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )


def test_vapid_key_formats(tmp_path: Path, vapid_file: Path) -> None:
    pem = load_vapid_key(vapid_file)
    scalar = pem.private_key.private_numbers().private_value.to_bytes(32, "big")
    raw = tmp_path / "raw.txt"
    raw.write_text(b64url(scalar) + "\n")
    assert load_vapid_key(raw).public_key_b64 == pem.public_key_b64
    assert len(b64url_decode(pem.public_key_b64)) == 65
    rsa_like = tmp_path / "bad.txt"
    rsa_like.write_text("not a key")
    with pytest.raises(ValueError, match="bad key"):
        load_vapid_key(rsa_like)
    with pytest.raises(ValueError, match="cannot read"):
        load_vapid_key(tmp_path / "missing.pem")
