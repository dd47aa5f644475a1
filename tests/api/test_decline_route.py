"""POST /v1/calls/{call_id}/decline against a real server, tokens made for real."""

from __future__ import annotations

import json

import pytest

from sipwake.policy.decline import DeclineResult, decline_path, make_token
from tests.api.conftest import NOW, SECRET, Api, MakeApi

CALL = "a84b4c76e66710@pc33.atlanta.example.com"
DEVICE = "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"


def token(call_id: str = CALL, expires_at: float = NOW + 60, nonce: str = "n1") -> str:
    return make_token(SECRET, call_id, DEVICE, expires_at, nonce)


async def post(api: Api, path: str, body: bytes = b'{"reason": "busy"}') -> tuple[int, object]:
    reply = await api.request("POST", path, body, [("content-type", "application/json")])
    assert reply.headers["content-type"] == "application/json"
    return reply.status, json.loads(reply.body)


def declines(api: Api, reason: str) -> float:
    value = api.metrics.registry.get_sample_value("sipwake_declines_total", {"reason": reason})
    assert value is not None
    return value


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_valid_token_declines_once_then_replay_is_refused(
    make_api: MakeApi, tls: bool
) -> None:
    api = await make_api(tls=tls)
    assert api.server.url.startswith("https://" if tls else "http://")
    api.decline.calls.add(CALL)
    path = decline_path(CALL, token())
    assert await post(api, path) == (200, {"status": "declined"})
    assert api.decline.declined == [(CALL, DEVICE, "busy")]
    assert await post(api, path) == (403, {"error": "replayed"})
    assert api.decline.declined == [(CALL, DEVICE, "busy")]
    assert declines(api, "busy") == 1
    assert declines(api, "replayed") == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"", "decline"), (b"{}", "decline"), (b'{"reason": "decline"}', "decline")],
)
async def test_reason_defaults_to_decline(api: Api, body: bytes, reason: str) -> None:
    api.decline.calls.add(CALL)
    assert (await post(api, decline_path(CALL, token()), body))[0] == 200
    assert api.decline.declined == [(CALL, DEVICE, reason)]


async def test_call_id_with_reserved_characters_round_trips(api: Api) -> None:
    odd = "x/y z?%@host"
    api.decline.calls.add(odd)
    assert (await post(api, decline_path(odd, token(odd))))[0] == 200
    assert api.decline.declined[0][0] == odd


async def test_token_for_another_call_is_refused(api: Api) -> None:
    api.decline.calls.update((CALL, "other-call"))
    assert await post(api, decline_path("other-call", token())) == (403, {"error": "wrong_call"})
    assert api.decline.declined == []


async def test_expired_token_is_refused(api: Api) -> None:
    api.decline.calls.add(CALL)
    api.decline.now = NOW + 61
    assert await post(api, decline_path(CALL, token())) == (403, {"error": "expired"})


async def test_tampered_or_missing_token_is_refused(api: Api) -> None:
    api.decline.calls.add(CALL)
    good = token()
    bad = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    assert await post(api, decline_path(CALL, bad)) == (403, {"error": "bad_token"})
    assert (await post(api, decline_path(CALL, "")))[0] == 403
    assert (await post(api, f"/v1/calls/{CALL}/decline"))[0] == 403
    assert (await post(api, decline_path(CALL, good) + "&t=x"))[0] == 403
    assert api.decline.declined == []
    assert declines(api, "bad_token") == 4


async def test_unknown_call_is_404(api: Api) -> None:
    assert await post(api, decline_path(CALL, token())) == (404, {"error": "unknown call"})
    assert declines(api, "unknown_call") == 1


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"reason": "maybe"}', b'{"reason": 3}', b"[]", b'"busy"', b"\xff\xfe"],
)
async def test_bad_body_is_400(api: Api, body: bytes) -> None:
    api.decline.calls.add(CALL)
    status, payload = await post(api, decline_path(CALL, token()), body)
    assert status == 400
    assert isinstance(payload, dict) and "error" in payload
    assert api.decline.declined == []


async def test_oversize_body_is_413(api: Api) -> None:
    api.decline.calls.add(CALL)
    body = b'{"reason": "busy", "pad": "' + b"x" * 1100 + b'"}'
    assert (await post(api, decline_path(CALL, token()), body))[0] == 413
    assert api.decline.declined == []
    # exactly at the cap is still read
    body = b'{"reason": "busy", "p": "' + b"x" * (1024 - 27) + b'"}'
    assert len(body) == 1024
    assert (await post(api, decline_path(CALL, token()), body))[0] == 200


async def test_wrong_method_is_405(api: Api) -> None:
    reply = await api.request("GET", decline_path(CALL, token()))
    assert reply.status == 405
    assert reply.headers["allow"] == "POST"


async def test_service_exception_is_500_not_a_crash(api: Api) -> None:
    async def boom(call_id: str, token: str, reason: str) -> object:
        raise RuntimeError("store exploded")

    api.decline.decline = boom  # type: ignore[method-assign,assignment]
    assert await post(api, decline_path(CALL, token())) == (500, {"error": "internal error"})
    assert (await api.request("GET", "/healthz")).status == 200  # server still serving


async def test_plain_service_method_and_free_text_refusal(api: Api) -> None:
    """A synchronous ``decline`` fits the Protocol too; a 403 reason outside the policy
    slugs is echoed to the app but counted under the closed label ``forbidden``."""
    seen: list[str] = []

    def plain(call_id: str, token: str, reason: str) -> DeclineResult:
        seen.append(reason)
        return DeclineResult(403, "token already used") if seen[1:] else DeclineResult(200)

    api.decline.decline = plain  # type: ignore[method-assign,assignment]
    assert await post(api, decline_path(CALL, token())) == (200, {"status": "declined"})
    assert await post(api, decline_path(CALL, token())) == (403, {"error": "token already used"})
    assert seen == ["busy", "busy"]
    assert declines(api, "forbidden") == 1
