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
