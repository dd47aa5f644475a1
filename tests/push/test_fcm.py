"""FCM provider <-> FCM emulator end to end, over real TLS on 127.0.0.1 (h2 for sends,
HTTP/1.1 for the OAuth token endpoint), plus the error mapping and the emulator's checks."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sipwake.emulate import tlsutil
from sipwake.emulate.fcm import (
    FcmEmulator,
    FcmEmulatorConfig,
    serve_fcm,
    write_service_account,
)
from sipwake.policy.bindings import PushTarget
from sipwake.push.base import Delivered, Permanent, PushRequest, TokenRejected, Transient
from sipwake.push.fcm import FcmProvider, classify
from sipwake.push.http1 import http1_request
from sipwake.push.oauth import load_service_account
from tests.push.test_webhook import Http1Receiver

PROJECT = "sipwake-test"
TOKEN = "dGVzdC10b2tlbg:APA91bF-example_token.1"


class Clock:
    """The emulator's clock; tests pass ``clock()`` as the provider's ``now``."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    emulator: FcmEmulator
    provider: FcmProvider
    clock: Clock
    certs: tlsutil.TestCerts
    account_file: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tlsutil.TestCerts:
    return tlsutil.make_test_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def rig(tmp_path: Path, certs: tlsutil.TestCerts) -> AsyncIterator[Rig]:
    clock = Clock()
    emulator = await serve_fcm(
        FcmEmulatorConfig(
            certfile=str(certs.cert_file), keyfile=str(certs.key_file), clock=clock, retry_after=7
        )
    )
    account_file = write_service_account(
        tmp_path / "sa.json", token_uri=emulator.token_uri, project_id=PROJECT
    )
    emulator.add_account(load_service_account(account_file))
    provider = FcmProvider(
        "fcm",
        service_account_file=str(account_file),
        base_url=emulator.base_url,
        ca_file=str(certs.ca_file),
        timeout=3.0,
    )
    yield Rig(emulator, provider, clock, certs, account_file)
    await provider.close()
    await emulator.close()


def call(now: float, token: str = TOKEN, **payload: Any) -> PushRequest:
    return PushRequest(
        target=PushTarget("fcm", token, param=PROJECT),
        payload={"type": "call", "call_id": "1b4e28ba", **payload},
        expires_at=now + 30,
        collapse_id="1b4e28ba",
    )


async def test_delivered_message_shape_and_ttl(rig: Rig) -> None:
    now = rig.clock()
    outcome = await rig.provider.send(call(now, video=0, caller={"name": "Bob"}), now)
    assert isinstance(outcome, Delivered)
    assert outcome.provider_id.startswith(f"projects/{PROJECT}/messages/0:")
    [push] = rig.emulator.pushes
    assert push["project"] == PROJECT
    assert push["message"] == {
        "token": TOKEN,
        # Data values must be strings (fcm.md A3): non-strings are sent as JSON text.
        "data": {"type": "call", "call_id": "1b4e28ba", "video": "0", "caller": '{"name":"Bob"}'},
        "android": {"priority": "high", "ttl": "30s"},
    }


async def test_alert_push_is_normal_priority_with_remaining_ttl(rig: Rig) -> None:
    now = rig.clock()
    request = PushRequest(
        target=PushTarget("fcm", TOKEN),
        payload={"type": "missed"},
        kind="alert",
        expires_at=now + 12.2,
        alert_text="Missed call from Bob",
    )
    assert isinstance(await rig.provider.send(request, now), Delivered)
    message = rig.emulator.pushes[0]["message"]
    assert message["android"] == {"priority": "normal", "ttl": "13s"}
    assert message["data"]["alert"] == "Missed call from Bob"


async def test_urgent_alert_is_high_priority(rig: Rig) -> None:
    """A stored SIP MESSAGE: a data message the app shows at once, so high priority."""
    now = rig.clock()
    request = PushRequest(
        target=PushTarget("fcm", TOKEN),
        payload={"type": "message", "message_id": "m-1"},
        kind="alert",
        expires_at=now + 3600,
        alert_text="New message from Alice",
        urgent=True,
    )
    assert isinstance(await rig.provider.send(request, now), Delivered)
    message = rig.emulator.pushes[0]["message"]
    assert message["android"] == {"priority": "high", "ttl": "3600s"}
    assert message["data"]["type"] == "message" and "notification" not in message


async def test_token_cached_shared_and_refetched_after_expiry(rig: Rig) -> None:
    now = rig.clock()
    # A burst before any token exists shares one refresh (single flight).
    outcomes = await asyncio.gather(*(rig.provider.send(call(now), now) for _ in range(5)))
    assert all(isinstance(o, Delivered) for o in outcomes)
    assert rig.emulator.tokens_issued == 1
    for _ in range(3):
        assert isinstance(await rig.provider.send(call(now), now), Delivered)
    assert rig.emulator.tokens_issued == 1
    # 3599 s token, refreshed 5 min early: still cached at +3200 s, refetched at +3400 s.
    rig.clock.now += 3200
    assert isinstance(await rig.provider.send(call(rig.clock()), rig.clock()), Delivered)
    assert rig.emulator.tokens_issued == 1
    rig.clock.now += 200
    assert isinstance(await rig.provider.send(call(rig.clock()), rig.clock()), Delivered)
    assert rig.emulator.tokens_issued == 2
    assert rig.emulator.send_requests == 10  # no 401 round trips
    assert rig.provider._client.connections_opened == 1  # one warm h2 connection


async def test_401_refreshes_once_then_retries(rig: Rig) -> None:
    now = rig.clock()
    assert isinstance(await rig.provider.send(call(now), now), Delivered)
    rig.emulator.revoke_tokens()
    assert isinstance(await rig.provider.send(call(now), now), Delivered)
    assert rig.emulator.tokens_issued == 2
    assert rig.emulator.send_requests == 3  # ok, 401, retried ok
    assert len(rig.emulator.pushes) == 2


async def test_persistent_401_is_permanent_after_one_refresh(rig: Rig) -> None:
    rig.emulator.config.accept_tokens = False
    now = rig.clock()
    outcome = await rig.provider.send(call(now), now)
    assert outcome == Permanent("UNAUTHENTICATED")
    assert rig.emulator.tokens_issued == 2
    assert rig.emulator.send_requests == 2


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("UNREGISTERED", TokenRejected("UNREGISTERED")),
        ("SENDER_ID_MISMATCH", TokenRejected("SENDER_ID_MISMATCH")),
        ("INVALID_ARGUMENT", TokenRejected("InvalidRegistration")),
        ("QUOTA_EXCEEDED", Transient("QUOTA_EXCEEDED", 7.0)),
        ("UNAVAILABLE", Transient("UNAVAILABLE", 7.0)),
        ("INTERNAL", Transient("INTERNAL", 7.0)),
    ],
)
async def test_injected_errors_map_to_outcomes(rig: Rig, code: str, expected: object) -> None:
    rig.emulator.set_token_error(TOKEN, code)
    now = rig.clock()
    assert await rig.provider.send(call(now), now) == expected
    assert rig.emulator.pushes == []
    other = await rig.provider.send(call(now, token="another-token"), now)
    assert isinstance(other, Delivered)  # errors are per token


async def test_malformed_token_rejected_by_emulator(rig: Rig) -> None:
    now = rig.clock()
    outcome = await rig.provider.send(call(now, token="not a token!"), now)
    assert outcome == TokenRejected("InvalidRegistration")


async def test_error_rate_injection(rig: Rig) -> None:
    rig.emulator.config.error_rates = {"UNAVAILABLE": 1.0}
    now = rig.clock()
    assert await rig.provider.send(call(now), now) == Transient("UNAVAILABLE", 7.0)


async def test_oversized_data_is_refused_before_sending(rig: Rig) -> None:
    now = rig.clock()
    outcome = await rig.provider.send(call(now, blob="x" * 4096), now)
    assert outcome == Permanent("PayloadTooLarge")
    assert rig.emulator.send_requests == 0


async def test_unknown_service_account_is_permanent(rig: Rig, tmp_path: Path) -> None:
    stranger = write_service_account(
        tmp_path / "stranger.json", token_uri=rig.emulator.token_uri, project_id=PROJECT
    )
    provider = FcmProvider(
        "fcm",
        service_account_file=str(stranger),
        base_url=rig.emulator.base_url,
        ca_file=str(rig.certs.ca_file),
    )
    now = rig.clock()
    outcome = await provider.send(call(now), now)
    await provider.close()
    assert isinstance(outcome, Permanent) and "invalid_grant" in outcome.reason
    assert rig.emulator.tokens_issued == 0


async def test_unreachable_service_is_transient(rig: Rig, tmp_path: Path) -> None:
    port = rig.emulator.port
    await rig.emulator.close()
    now = rig.clock()
    outcome = await rig.provider.send(call(now), now)
    assert isinstance(outcome, Transient), outcome
    assert str(port) in outcome.reason


async def test_wrong_project_is_permanent(rig: Rig) -> None:
    provider = FcmProvider(
        "fcm",
        service_account_file=str(rig.account_file),
        project_id="someone-else",
        base_url=rig.emulator.base_url,
        ca_file=str(rig.certs.ca_file),
    )
    now = rig.clock()
    outcome = await provider.send(call(now), now)
    await provider.close()
    assert outcome == Permanent("PERMISSION_DENIED")


# -- the emulator's own checks, driven over HTTP/1.1 with a valid bearer token -----------


async def _raw_send(rig: Rig, body: Any) -> tuple[int, dict[str, Any]]:
    token = await rig.provider.tokens.token(rig.clock())
    reply = await http1_request(
        "POST",
        f"{rig.emulator.base_url}/v1/projects/{PROJECT}/messages:send",
        [("authorization", f"Bearer {token}"), ("content-type", "application/json")],
        json.dumps(body).encode() if not isinstance(body, bytes) else body,
        ssl_context=ssl.create_default_context(cafile=str(rig.certs.ca_file)),
        timeout=3.0,
    )
    return reply.status, json.loads(reply.body)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"token": TOKEN, "data": {"n": 1}}, "message.data[n]"),
        ({"token": TOKEN, "data": {"gcm.x": "1"}}, "message.data[gcm.x]"),
        ({"token": TOKEN, "data": {"from": "1"}}, "message.data[from]"),
        ({"token": TOKEN, "data": {"k": "v" * 4096}}, "message.data"),
        ({"token": TOKEN, "topic": "news"}, "message"),
        ({"data": {}}, "message"),
        ({"token": TOKEN, "android": {"priority": "urgent"}}, "message.android.priority"),
        ({"token": TOKEN, "android": {"ttl": 30}}, "message.android.ttl"),
        ({"token": TOKEN, "android": {"ttl": "30"}}, "message.android.ttl"),
        ({"token": TOKEN, "android": {"ttl": "2419201s"}}, "message.android.ttl"),
    ],
)
async def test_emulator_rejects_bad_messages(rig: Rig, message: dict[str, Any], field: str) -> None:
    status, body = await _raw_send(rig, {"message": message})
    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    violations = body["error"]["details"][-1]["fieldViolations"]
    assert violations[0]["field"] == field
    # A 400 about the message, not the token: the provider must not drop the binding.
    assert isinstance(classify(status, {}, json.dumps(body).encode()), Permanent)


async def test_emulator_validate_only_and_inspection_endpoints(rig: Rig) -> None:
    ok = {"token": TOKEN, "data": {"a": "b"}, "android": {"priority": "HIGH", "ttl": "3.5s"}}
    status, _ = await _raw_send(rig, {"message": ok, "validate_only": True})
    assert status == 200 and rig.emulator.pushes == []
    status, _ = await _raw_send(rig, {"message": ok})
    assert status == 200
    ctx = ssl.create_default_context(cafile=str(rig.certs.ca_file))
    url = f"{rig.emulator.base_url}/_emulator/pushes"
    reply = await http1_request("GET", url, [], b"", ssl_context=ctx)
    assert [p["message"] for p in json.loads(reply.body)] == [ok]
    reply = await http1_request("DELETE", url, [], b"", ssl_context=ctx)
    assert reply.status == 204 and rig.emulator.pushes == []


async def test_emulator_forwards_delivered_pushes(rig: Rig) -> None:
    phone = Http1Receiver()
    await phone.start()
    rig.emulator.config.forward_url = phone.url
    try:
        now = rig.clock()
        assert isinstance(await rig.provider.send(call(now), now), Delivered)
        [got] = await phone.wait_for(1)
    finally:
        await phone.close()
    forwarded = json.loads(got.body)
    assert forwarded["message"]["token"] == TOKEN
    assert forwarded["project"] == PROJECT


def test_classify_without_fcm_details() -> None:
    assert classify(404, {}, b"") == TokenRejected("NOT_FOUND")
    assert classify(502, {"retry-after": "3"}, b"<html>") == Transient("502", 3.0)
    assert classify(429, {}, b"{}") == Transient("429", None)
    body = {"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "denied"}}
    assert classify(403, {}, json.dumps(body).encode()) == Permanent("PERMISSION_DENIED")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "not JSON"),
        ('{"client_email": "a@b"}', "missing private_key, token_uri"),
        (
            '{"client_email": "a", "private_key": "nope", "token_uri": "https://x/token"}',
            "bad private_key",
        ),
    ],
)
def test_service_account_errors_are_clear(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "sa.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        FcmProvider("fcm", service_account_file=str(path))
    assert str(path) in str(info.value)
