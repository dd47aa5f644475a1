from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwake.policy.decline import (
    BAD_TOKEN,
    EXPIRED,
    REPLAYED,
    WRONG_CALL,
    DeclineClaim,
    DeclineError,
    UsedTokens,
    check_token,
    decline_path,
    make_token,
)

SECRET = b"0123456789abcdef0123456789abcdef"
CALL = "a84b4c76e66710@pc33.atlanta.example.com"
DEVICE = "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"
NOW = 1_700_000_000.0
TOKEN = make_token(SECRET, CALL, DEVICE, NOW + 60, "n1")


def reason_of(secret: bytes, token: str, call_id: str = CALL, now: float = NOW) -> str:
    with pytest.raises(DeclineError) as info:
        check_token(secret, token, call_id, now)
    assert info.value.status == 403
    return info.value.reason


def test_round_trip_gives_the_claim() -> None:
    claim = check_token(SECRET, TOKEN, CALL, NOW)
    assert claim == DeclineClaim(CALL, DEVICE, NOW + 60, "n1")


def test_token_is_url_safe_and_compact() -> None:
    fcm_token = "f" * 163  # FCM registration tokens run to ~160 characters
    token = make_token(SECRET, CALL, fcm_token, NOW + 60, "Zx9_-nonce")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(token) < 300
    assert check_token(SECRET, token, CALL, NOW).device == fcm_token


def test_expiry_is_exclusive_and_rounded_down() -> None:
    token = make_token(SECRET, CALL, DEVICE, NOW + 10.9, "n")
    assert check_token(SECRET, token, CALL, NOW + 9.99).expires_at == NOW + 10
    assert reason_of(SECRET, token, now=NOW + 10) == EXPIRED


def test_refusals() -> None:
    assert reason_of(b"another secret", TOKEN) == BAD_TOKEN
    assert reason_of(SECRET, TOKEN, call_id=CALL + "x") == WRONG_CALL
    assert reason_of(SECRET, TOKEN, now=NOW + 3600) == EXPIRED
    for junk in ("", "a", "!!!!", TOKEN + "=", TOKEN[:-4], "é" * 40, "A" * 5000):
        assert reason_of(SECRET, junk) == BAD_TOKEN


def test_unicode_call_id_and_device() -> None:
    token = make_token(SECRET, "ça@x", "dévice", NOW + 1, "ñ")
    assert check_token(SECRET, token, "ça@x", NOW) == DeclineClaim("ça@x", "dévice", NOW + 1, "ñ")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_token(b"", CALL, DEVICE, NOW, "n")
    with pytest.raises(ValueError):
        make_token(SECRET, CALL, DEVICE, NOW, "")
    with pytest.raises(ValueError):
        make_token(SECRET, CALL, DEVICE, -1, "n")
    with pytest.raises(ValueError):
        make_token(SECRET, CALL, "d" * 2000, NOW, "n")
    with pytest.raises(ValueError):
        check_token(b"", TOKEN, CALL, NOW)


def test_decline_path_escapes_the_call_id() -> None:
    assert decline_path("a/b@c d", "tok") == "/v1/calls/a%2Fb%40c%20d/decline?t=tok"


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.!é\x00"


@given(st.data())
def test_any_single_character_change_is_rejected(data: st.DataObject) -> None:
    token = make_token(SECRET, CALL, DEVICE, NOW + 60, data.draw(st.text(min_size=1, max_size=8)))
    pos = data.draw(st.integers(0, len(token) - 1))
    new = data.draw(st.sampled_from(_ALPHABET).filter(lambda c: c != token[pos]))
    edited = token[:pos] + new + token[pos + 1 :]
    with pytest.raises(DeclineError):
        check_token(SECRET, edited, CALL, NOW)


def test_last_character_low_bits_are_not_ignored() -> None:
    # Base64 decoders drop the unused low bits of the final character; a token differing
    # only there must still be refused (one token, one spelling).
    for nonce in ("a", "ab", "abc"):
        token = make_token(SECRET, CALL, DEVICE, NOW + 60, nonce)
        for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
            if c != token[-1]:
                assert reason_of(SECRET, token[:-1] + c) == BAD_TOKEN


def claim(nonce: str, expires_at: float = NOW + 60) -> DeclineClaim:
    return DeclineClaim(CALL, DEVICE, expires_at, nonce)


def test_used_tokens_single_use() -> None:
    used = UsedTokens(10)
    assert used.use(claim("a"), NOW)
    assert not used.use(claim("a"), NOW + 1)  # replay
    assert used.use(claim("b"), NOW + 1)
    assert len(used) == 2


def test_used_tokens_forget_expired_entries() -> None:
    used = UsedTokens(10)
    used.use(claim("a", NOW + 5), NOW)
    used.use(claim("b", NOW + 50), NOW)
    used.use(claim("c", NOW + 100), NOW + 6)
    assert len(used) == 2  # "a" could no longer pass check_token anyway
    used.use(claim("d", NOW + 200), NOW + 100)
    assert len(used) == 1


def test_used_tokens_bounded_evicts_soonest_to_expire() -> None:
    used = UsedTokens(3)
    for nonce, exp in (("x", 30), ("y", 10), ("z", 20), ("w", 40)):
        assert used.use(claim(nonce, NOW + exp), NOW)
    assert len(used) == 3
    assert used.use(claim("y", NOW + 10), NOW)  # evicted, so forgotten
    assert not used.use(claim("w", NOW + 40), NOW)
    with pytest.raises(ValueError):
        UsedTokens(0)


def test_check_then_use_replay_flow() -> None:
    used = UsedTokens()
    assert used.use(check_token(SECRET, TOKEN, CALL, NOW), NOW)
    assert not used.use(check_token(SECRET, TOKEN, CALL, NOW + 1), NOW + 1)
    assert REPLAYED == "replayed"
