from __future__ import annotations

from sipwake.policy.flowtoken import decode_pair, encode_pair, other_side
from sipwake.sip.flows import Flow

A = Flow("UDP", ("127.0.0.1", 5060), ("127.0.0.1", 40000))
B = Flow("TCP", ("::1", 5060), ("::1", 51000), 7)


def test_round_trip_and_direction() -> None:
    token = encode_pair(b"k", A, B)
    pair = decode_pair(b"k", token)
    assert pair == (A, B)
    assert other_side(pair, A) == B
    assert other_side(pair, Flow("TCP", ("::1", 5060), ("::1", 9), 7)) == A
    assert other_side(pair, Flow("UDP", ("127.0.0.1", 5060), ("127.0.0.1", 1))) is None


def test_forged_or_foreign_tokens_rejected() -> None:
    token = encode_pair(b"k", A, B)
    assert decode_pair(b"other", token) is None
    assert decode_pair(b"k", token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    assert decode_pair(b"k", "alice") is None
    assert decode_pair(b"k", None) is None
    assert decode_pair(b"k", "sw-!!!-00") is None


def test_owner_token_round_trip_and_forgery() -> None:
    from sipwake.policy.flowtoken import decode_owner, encode_owner

    key = Flow("TCP", ("10.0.0.1", 5060), ("203.0.113.9", 40123), 42)
    token = encode_owner(b"s" * 32, key)
    assert decode_owner(b"s" * 32, token) == key
    assert decode_owner(b"x" * 32, token) is None  # another cluster's key
    assert decode_owner(b"s" * 32, token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    # A pair token (Record-Route) is not an owner route, and vice versa.
    pair = encode_pair(b"s" * 32, key, key)
    assert decode_owner(b"s" * 32, pair) is None
    assert decode_pair(b"s" * 32, token) is None


def test_tokens_are_stable_across_releases() -> None:
    """Tokens sit in Record-Routes of live dialogs and in peers' routes: a release must
    verify what the last one issued, so the format and MAC are pinned here."""
    from sipwake.policy.flowtoken import decode_owner, encode_owner

    secret = b"secret-32-bytes-secret-32-bytes!"
    a = Flow("UDP", ("10.0.0.1", 5060), ("192.0.2.7", 5062))
    b = Flow("TCP", ("10.0.0.1", 5060), ("198.51.100.9", 40123), 42)
    pair = (
        "sw-VURQLDEwLjAuMC4xLDUwNjAsMTkyLjAuMi43LDUwNjIsMHxUQ1AsMTAuMC4wLjEsNTA2MCwxOTguNTEu"
        "MTAwLjksNDAxMjMsNDI-7b270542296573a6"
    )
    owner = "sf-VENQLDEwLjAuMC4xLDUwNjAsMTk4LjUxLjEwMC45LDQwMTIzLDQy-1e3206c91886ac85"
    assert encode_pair(secret, a, b) == pair
    assert decode_pair(secret, pair) == (a, b)
    assert encode_owner(secret, b) == owner
    assert decode_owner(secret, owner) == b
