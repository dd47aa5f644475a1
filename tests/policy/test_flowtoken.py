from __future__ import annotations

from sipwake.policy.flowtoken import FlowKey, decode_pair, encode_pair, other_side

A = FlowKey("UDP", ("127.0.0.1", 5060), ("127.0.0.1", 40000))
B = FlowKey("TCP", ("::1", 5060), ("::1", 51000), 7)


def test_round_trip_and_direction() -> None:
    token = encode_pair(b"k", A, B)
    pair = decode_pair(b"k", token)
    assert pair == (A, B)
    assert other_side(pair, A) == B
    assert other_side(pair, FlowKey("TCP", ("::1", 5060), ("::1", 9), 7)) == A
    assert other_side(pair, FlowKey("UDP", ("127.0.0.1", 5060), ("127.0.0.1", 1))) is None


def test_forged_or_foreign_tokens_rejected() -> None:
    token = encode_pair(b"k", A, B)
    assert decode_pair(b"other", token) is None
    assert decode_pair(b"k", token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    assert decode_pair(b"k", "alice") is None
    assert decode_pair(b"k", None) is None
    assert decode_pair(b"k", "sw-!!!-00") is None


def test_owner_token_round_trip_and_forgery() -> None:
    from sipwake.policy.flowtoken import decode_owner, encode_owner

    key = FlowKey("TCP", ("10.0.0.1", 5060), ("203.0.113.9", 40123), 42)
    token = encode_owner(b"s" * 32, key)
    assert decode_owner(b"s" * 32, token) == key
    assert decode_owner(b"x" * 32, token) is None  # another cluster's key
    assert decode_owner(b"s" * 32, token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    # A pair token (Record-Route) is not an owner route, and vice versa.
    pair = encode_pair(b"s" * 32, key, key)
    assert decode_owner(b"s" * 32, pair) is None
    assert decode_pair(b"s" * 32, token) is None
