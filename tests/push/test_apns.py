"""ApnsProvider against the APNs emulator over real TLS + HTTP/2 on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sipwake.emulate.apns import ApnsEmulator, TokenError
from sipwake.emulate.tlsutil import CertFiles, client_context
from sipwake.policy.bindings import PushTarget
from sipwake.push.apns import ApnsProvider, _outcome
from sipwake.push.base import Delivered, Permanent, PushRequest, TokenRejected, Transient
from sipwake.push.http2 import H2Client, H2Response

from .conftest import BUNDLE, Clock, write_p8

TOKEN = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0"
Make = Callable[..., ApnsProvider]


def voip(token: str = TOKEN, expires_at: float = 0.0) -> PushRequest:
    target = PushTarget("apns", token, param=f"TEAM123456.{BUNDLE}.voip")
    payload = {"type": "call", "call_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427"}
    return PushRequest(target, payload, expires_at=expires_at, collapse_id=payload["call_id"])


async def test_delivered_with_apns_headers(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    outcome = await make_provider().send(voip(expires_at=clock.now + 30), clock.now)
    assert isinstance(outcome, Delivered) and len(outcome.provider_id) == 36
    [push] = emulator.pushes
    assert push["token"] == TOKEN and push["apns_id"] == outcome.provider_id
    assert push["payload"]["call_id"] == "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
    headers = push["headers"]
    assert headers["apns-push-type"] == "voip"
    assert headers["apns-topic"] == BUNDLE + ".voip"
    assert headers["apns-priority"] == "10"
    assert headers["apns-expiration"] == str(int(clock.now + 30))
    assert headers["apns-collapse-id"] == "1b4e28ba-2fa1-41d2-883f-0016d3cca427"


async def test_alert_push_uses_bundle_topic_and_alert_token(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    target = PushTarget("apns", TOKEN, alert_prid="ab" * 32)
    request = PushRequest(target, {"type": "missed"}, kind="alert", alert_text="Missed call")
    assert isinstance(await make_provider().send(request, clock.now), Delivered)
    [push] = emulator.pushes
    assert push["token"] == "ab" * 32 and push["topic"] == BUNDLE
    assert push["push_type"] == "alert"
    assert push["payload"]["aps"]["alert"] == "Missed call"


async def test_message_alert_is_an_alert_push_never_voip(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    """A stored SIP MESSAGE is announced with an alert push to the remote token: iOS 13+
    ends apps whose VoIP pushes report no call (apns.md §8)."""
    target = PushTarget("apns", TOKEN, alert_prid="cd" * 32)
    request = PushRequest(
        target,
        {"type": "message", "message_id": "m-1"},
        kind="alert",
        expires_at=clock.now + 7 * 86400,
        collapse_id="m-1",
        alert_text="New message from Alice",
        urgent=True,
    )
    assert isinstance(await make_provider().send(request, clock.now), Delivered)
    [push] = emulator.pushes
    headers = push["headers"]
    assert headers["apns-push-type"] == "alert" and headers["apns-topic"] == BUNDLE
    assert headers["apns-priority"] == "10" and headers["apns-collapse-id"] == "m-1"
    assert push["token"] == "cd" * 32
    assert push["payload"]["aps"]["alert"] == "New message from Alice"
    assert push["payload"]["message_id"] == "m-1"


async def test_jwt_reused_then_resigned_after_refresh(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    provider = make_provider(jwt_refresh=40 * 60)
    t0 = clock.now
    for offset in (0, 60, 39 * 60):
        clock.now = t0 + offset
        assert isinstance(await provider.send(voip(), clock.now), Delivered)
    clock.now = t0 + 40 * 60
    assert isinstance(await provider.send(voip(), clock.now), Delivered)
    iats = [push["jwt_iat"] for push in emulator.pushes]
    assert iats == [t0, t0, t0, t0 + 40 * 60]  # one token for 40 min, then a new one


async def test_expired_provider_token_is_resigned_and_retried(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    provider = make_provider()
    t0 = clock.now
    assert isinstance(await provider.send(voip(), t0), Delivered)
    # Our clock says 25 min, APNs's says > 1 h: it rejects the token; we re-sign once.
    clock.now = t0 + 3601
    outcome = await provider.send(voip(), t0 + 25 * 60)
    assert isinstance(outcome, Delivered)
    assert emulator.pushes[-1]["jwt_iat"] == t0 + 25 * 60


async def test_wrong_key_is_permanent(make_provider: Make, tmp_path: Path, clock: Clock) -> None:
    other = write_p8(tmp_path / "other.p8", ec.generate_private_key(ec.SECP256R1()))
    outcome = await make_provider(key_file=other).send(voip(), clock.now)
    assert outcome == Permanent("InvalidProviderToken")


async def test_unknown_topic_is_permanent(make_provider: Make, clock: Clock) -> None:
    outcome = await make_provider(topic_bundle_id="org.other").send(voip(), clock.now)
    assert outcome == Permanent("TopicDisallowed")


@pytest.mark.parametrize(
    ("injected", "expected"),
    [
        (TokenError(410, "Unregistered", timestamp_ms=1_700_000_000_000), "Unregistered"),
        (TokenError(400, "BadDeviceToken"), "BadDeviceToken"),
        (TokenError(400, "DeviceTokenNotForTopic"), "DeviceTokenNotForTopic"),
    ],
)
async def test_token_errors_reject_the_token(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock, injected: TokenError, expected: str
) -> None:
    emulator.config.tokens[TOKEN] = injected
    assert await make_provider().send(voip(), clock.now) == TokenRejected(expected)
    assert not emulator.pushes


async def test_429_with_retry_after_is_transient(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    emulator.config.tokens[TOKEN] = TokenError(429, "TooManyRequests", retry_after=7)
    assert await make_provider().send(voip(), clock.now) == Transient("TooManyRequests", 7.0)


async def test_503_by_rate_is_transient(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    emulator.config.fail_rate = 1.0
    emulator.config.fail_statuses = (503,)
    outcome = await make_provider().send(voip(), clock.now)
    assert outcome == Transient("ServiceUnavailable", None)


async def test_payload_over_5k_is_permanent_without_sending(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    request = PushRequest(voip().target, {"pad": "x" * 5200})
    assert await make_provider().send(request, clock.now) == Permanent("PayloadTooLarge")
    assert emulator.requests == 0


async def test_goaway_mid_stream_retries_on_a_new_connection(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    emulator.config.goaway_after = 3
    provider = make_provider()
    outcomes = await asyncio.gather(*(provider.send(voip(), clock.now) for _ in range(6)))
    assert all(isinstance(o, Delivered) for o in outcomes), outcomes
    assert len(emulator.pushes) == 6
    assert emulator.connections == 2  # streams above last_stream_id moved to a fresh one


async def test_connection_reset_is_transient(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    emulator.config.reset_after = 1  # every connection dies on its first request
    outcome = await make_provider().send(voip(), clock.now)
    assert isinstance(outcome, Transient) and outcome.reason.startswith("connection")
    assert emulator.connections == 2  # tried once more on a fresh connection


async def test_100_concurrent_pushes_over_one_connection(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    provider = make_provider()
    tokens = [f"{i:064x}" for i in range(100)]
    outcomes = await asyncio.gather(*(provider.send(voip(t), clock.now) for t in tokens))
    assert all(isinstance(o, Delivered) for o in outcomes)
    assert emulator.connections == 1
    assert sorted(p["token"] for p in emulator.pushes) == tokens


async def test_inspection_endpoint_lists_and_clears(
    make_provider: Make, emulator: ApnsEmulator, certs: CertFiles, clock: Clock
) -> None:
    await make_provider().send(voip(), clock.now)
    client = H2Client(
        f"https://127.0.0.1:{emulator.port}", ssl_context=client_context(certs.ca_file)
    )
    try:
        listed = await client.request("GET", "/_emulator/pushes", [])
        assert listed.status == 200
        [push] = json.loads(listed.body)
        assert push["token"] == TOKEN and push["payload"]["type"] == "call"
        assert (await client.request("DELETE", "/_emulator/pushes", [])).status == 200
        assert json.loads((await client.request("GET", "/_emulator/pushes", [])).body) == []
    finally:
        await client.close()


async def test_delivered_pushes_are_forwarded(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    received: asyncio.Queue[tuple[bytes, dict[str, object]]] = asyncio.Queue()

    async def phone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        await received.put((head.split(b"\r\n")[0], json.loads(body)))

    server = await asyncio.start_server(phone, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    emulator.config.forward_url = f"http://127.0.0.1:{port}/wake"
    try:
        await make_provider().send(voip(), clock.now)
        request_line, body = await asyncio.wait_for(received.get(), 5)
        assert request_line == b"POST /wake HTTP/1.1"
        assert body["token"] == TOKEN
    finally:
        server.close()
        await server.wait_closed()


def test_key_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        ApnsProvider(
            "apns",
            topic_bundle_id=BUNDLE,
            team_id="T",
            key_id="K",
            key_file=tmp_path / "missing.p8",
        )
    bad = tmp_path / "bad.p8"
    bad.write_text("not a key")
    with pytest.raises(ValueError, match="not a PEM private key"):
        ApnsProvider("apns", topic_bundle_id=BUNDLE, team_id="T", key_id="K", key_file=bad)
    with pytest.raises(ValueError, match="needs team_id"):
        ApnsProvider("apns", topic_bundle_id=BUNDLE)


def test_sandbox_targets_use_the_sandbox_host(p8_file: Path) -> None:
    provider = ApnsProvider(
        "apns", topic_bundle_id=BUNDLE, team_id="T", key_id="K", key_file=p8_file
    )
    assert provider._client(False).host == "api.push.apple.com"
    assert provider._client(True).host == "api.sandbox.push.apple.com"


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (410, "Unregistered", TokenRejected),
        (410, "ExpiredToken", TokenRejected),
        (400, "BadDeviceToken", TokenRejected),
        (400, "DeviceTokenNotForTopic", TokenRejected),
        (400, "TopicDisallowed", Permanent),
        (400, "BadCollapseId", Permanent),
        (400, "BadExpirationDate", Permanent),
        (400, "BadMessageId", Permanent),
        (400, "BadPriority", Permanent),
        (400, "BadTopic", Permanent),
        (400, "DuplicateHeaders", Permanent),
        (400, "IdleTimeout", Transient),
        (400, "InvalidPushType", Permanent),
        (400, "MissingDeviceToken", Permanent),
        (400, "MissingTopic", Permanent),
        (400, "PayloadEmpty", Permanent),
        (403, "BadCertificate", Permanent),
        (403, "BadCertificateEnvironment", Permanent),
        (403, "ExpiredProviderToken", Transient),
        (403, "Forbidden", Permanent),
        (403, "InvalidProviderToken", Permanent),
        (403, "MissingProviderToken", Permanent),
        (404, "BadPath", Permanent),
        (405, "MethodNotAllowed", Permanent),
        (413, "PayloadTooLarge", Permanent),
        (429, "TooManyProviderTokenUpdates", Transient),
        (429, "TooManyRequests", Transient),
        (500, "InternalServerError", Transient),
        (503, "ServiceUnavailable", Transient),
        (503, "Shutdown", Transient),
        (502, "", Transient),
    ],
)
def test_reason_table(status: int, reason: str, kind: type) -> None:
    body = json.dumps({"reason": reason}).encode() if reason else b"<html>"
    outcome = _outcome(H2Response(status, {}, body), 0.0)
    assert isinstance(outcome, kind)


def test_retry_after_http_date() -> None:
    response = H2Response(503, {"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, b"")
    outcome = _outcome(response, 1445412480.0)  # 07:28:00
    assert outcome == Transient("HTTP 503", 30.0)


async def test_refresh_is_a_background_push_to_the_alert_token_never_voip(
    make_provider: Make, emulator: ApnsEmulator, clock: Clock
) -> None:
    # RFC 8599 §5.5 binding refresh (issue 10 item 5): iOS would make a VoIP push ring.
    target = PushTarget("apns", TOKEN, alert_prid="cd" * 32)
    request = PushRequest(
        target, {"type": "refresh"}, kind="refresh", expires_at=clock.now + 60, collapse_id="r1"
    )
    assert isinstance(await make_provider().send(request, clock.now), Delivered)
    [push] = emulator.pushes
    assert push["token"] == "cd" * 32 and push["topic"] == BUNDLE
    assert push["push_type"] == "background"
    assert push["headers"]["apns-priority"] == "5"
    assert push["payload"]["aps"] == {"content-available": 1}
    assert push["payload"]["type"] == "refresh"
    # Without a non-VoIP token there is nothing to refresh with.
    bare = PushRequest(PushTarget("apns", TOKEN), {"type": "refresh"}, kind="refresh")
    assert await make_provider().send(bare, clock.now) == Permanent("NoAlertToken")
