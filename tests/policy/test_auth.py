"""Server-side digest authentication: RFC vectors, nonces, replay, throttle, trusted peers."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwake.policy.auth import (
    AuthResult,
    DigestCredentials,
    FailureThrottle,
    KnownSources,
    NonceCounter,
    NonceStatus,
    TrustedPeers,
    challenges,
    check_nonce,
    digest_response,
    ha1,
    hash_algorithm,
    make_challenge,
    make_nonce,
    nonce_issued_at,
    parse_authorization,
    verify,
)
from sipwake.sip.errors import ParseError

SECRET = b"s" * 32
REALM = "sip.example.com"
NOW = 1_700_000_000.25

# RFC 2617 §3.5
RFC2617_HA1 = "939e7578ed9e3c518a452acee763bce9"
RFC2617_AUTH = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
    'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
# RFC 7616 §3.9.1
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


# --- HA1 and response vectors --------------------------------------------------------------


def test_ha1_known_values() -> None:
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == RFC2617_HA1
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "md5") == RFC2617_HA1
    # RFC 7616 §3.9.1 (note "of" in lower case there)
    assert ha1("Mufasa", "http-auth@example.org", "Circle of Life", "SHA-256") == (
        "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
    )
    assert ha1("u", "r", "p", "SHA-256-sess") == ha1("u", "r", "p", "SHA-256")
    with pytest.raises(ValueError):
        ha1("u", "r", "p", "SHA-512-256")


def test_rfc2617_md5_response() -> None:
    assert (
        digest_response(
            RFC2617_HA1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "GET",
            "/dir/index.html",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_responses(algorithm: str, expected: str) -> None:
    h = ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm)
    response = digest_response(
        h,
        RFC7616_NONCE,
        "GET",
        "/dir/index.html",
        algorithm=algorithm,
        qop="auth",
        nc="00000001",
        cnonce=RFC7616_CNONCE,
    )
    assert response == expected


def test_rfc2069_no_qop_response() -> None:
    # response = H(HA1:nonce:H(method:uri)) (RFC 2617 §3.2.2.1, no qop)
    ha2 = hashlib.md5(b"REGISTER:sip:example.com").hexdigest()
    expected = hashlib.md5(f"{RFC2617_HA1}:n0nce:{ha2}".encode()).hexdigest()
    assert digest_response(RFC2617_HA1, "n0nce", "REGISTER", "sip:example.com") == expected


def test_hash_algorithm() -> None:
    assert hash_algorithm("sha-256-sess") == "SHA-256"
    assert hash_algorithm("MD5") == "MD5"


# --- parse_authorization -------------------------------------------------------------------


def test_parse_rfc2617_example() -> None:
    c = parse_authorization(RFC2617_AUTH)
    assert c == DigestCredentials(
        username="Mufasa",
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="/dir/index.html",
        response="6629fae49393a05397450978507c4ef1",
        algorithm="MD5",
        cnonce="0a4f113b",
        nc="00000001",
        qop="auth",
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
    )


def test_parse_spacing_case_and_escapes() -> None:
    c = parse_authorization(
        '  digest   USERNAME = "bob\\"x" ,realm="a,b",nonce=abc=,'
        '\tURI="sip:example.com;transport=tcp",  response="ABCD" , algorithm=SHA-256 ,'
    )
    assert c.username == 'bob"x'
    assert c.realm == "a,b"
    assert c.nonce == "abc="
    assert c.uri == "sip:example.com;transport=tcp"
    assert c.algorithm == "SHA-256"
    assert c.qop is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Basic dXNlcjpwYXNz",
        "Digest",  # nothing required present
        'Digest username="a", realm="r", nonce="n", uri="u"',  # no response
        'Digest username="a" realm="r", nonce="n", uri="u", response="x"',  # missing comma
        'Digest username="a, realm="r", nonce="n", uri="u", response="x"',  # unterminated
        'Digest username=, realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
        'Digest username, realm="r", nonce="n", uri="u", response="x"',
        'Digest =x, username="a", realm="r", nonce="n", uri="u", response="x"',
        'Digest username="' + "a" * 2000 + '", realm="r", nonce="n", uri="u", response="x"',
    ],
)
def test_parse_garbage_is_400(value: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_authorization(value)
    assert info.value.status == 400


@given(st.text(max_size=200))
def test_parse_never_raises_anything_else(value: str) -> None:
    try:
        parse_authorization(value)
    except ParseError:
        pass


# --- nonces and challenges -----------------------------------------------------------------


def test_nonce_ok_stale_invalid() -> None:
    nonce = make_nonce(NOW, SECRET, REALM)
    assert check_nonce(nonce, NOW + 10, SECRET, 300, realm=REALM) is NonceStatus.OK
    assert check_nonce(nonce, NOW + 300, SECRET, 300, realm=REALM) is NonceStatus.OK
    assert check_nonce(nonce, NOW + 300.01, SECRET, 300, realm=REALM) is NonceStatus.STALE
    assert check_nonce(nonce, NOW, b"other", 300, realm=REALM) is NonceStatus.INVALID
    assert check_nonce(nonce, NOW, SECRET, 300, realm="evil.example") is NonceStatus.INVALID
    assert nonce_issued_at(nonce) == pytest.approx(NOW, abs=1e-6)


def test_nonce_bound_to_client_ip() -> None:
    nonce = make_nonce(NOW, SECRET, REALM, client_ip="192.0.2.1")
    ok = check_nonce(nonce, NOW, SECRET, 60, realm=REALM, client_ip="192.0.2.1")
    assert ok is NonceStatus.OK
    moved = check_nonce(nonce, NOW, SECRET, 60, realm=REALM, client_ip="192.0.2.2")
    assert moved is NonceStatus.INVALID


def test_forged_nonces_are_invalid() -> None:
    nonce = make_nonce(NOW, SECRET, REALM)
    raw = bytearray(base64.urlsafe_b64decode(nonce))
    # Move the timestamp forward by one second: the MAC no longer matches.
    ts = int.from_bytes(raw[:8], "big") + 1_000_000
    raw[:8] = ts.to_bytes(8, "big")
    forged = base64.urlsafe_b64encode(bytes(raw)).decode()
    for bad in (forged, "", "!!!", "AAAA", "x" * 500, nonce[:-4], RFC7616_NONCE):
        assert check_nonce(bad, NOW, SECRET, 60, realm=REALM) is NonceStatus.INVALID


def test_nonce_from_the_future_is_invalid() -> None:
    nonce = make_nonce(NOW + 3600, SECRET, REALM)
    assert check_nonce(nonce, NOW, SECRET, 60, realm=REALM) is NonceStatus.INVALID


def test_salt_makes_nonces_distinct_and_still_valid() -> None:
    a = make_nonce(NOW, SECRET, REALM, salt=b"\x01" * 8)
    b = make_nonce(NOW, SECRET, REALM, salt=b"\x02" * 8)
    assert a != b
    assert check_nonce(b, NOW, SECRET, 60, realm=REALM) is NonceStatus.OK


def test_challenge_text() -> None:
    value = make_challenge(
        'my "realm"', NOW, SECRET, "MD5", stale=True, opaque="op", salt=b"12345678"
    )
    nonce = make_nonce(NOW, SECRET, 'my "realm"', salt=b"12345678")
    assert value == (
        f'Digest realm="my \\"realm\\"", nonce="{nonce}", opaque="op", algorithm=MD5, '
        'qop="auth", stale=true'
    )
    with pytest.raises(ValueError):
        make_challenge(REALM, NOW, SECRET, "SHA-1")


def test_challenges_sha256_first_then_md5_same_nonce() -> None:
    # RFC 8760 §2.4: SHA-256 before MD5 so clients pick the strongest they support.
    values = challenges(REALM, NOW, SECRET)
    assert len(values) == 2
    assert "algorithm=SHA-256" in values[0]
    assert "algorithm=MD5" in values[1]
    nonces = {parse_challenge_nonce(v) for v in values}
    assert len(nonces) == 1
    assert check_nonce(nonces.pop(), NOW, SECRET, 60, realm=REALM) is NonceStatus.OK


def parse_challenge_nonce(value: str) -> str:
    return value.split('nonce="', 1)[1].split('"', 1)[0]


# --- verify --------------------------------------------------------------------------------


def answer(
    nonce: str,
    *,
    password: str = "secret",
    algorithm: str = "SHA-256",
    nc: str | None = "00000001",
    cnonce: str | None = "c0ffee",
    qop: str | None = "auth",
    method: str = "REGISTER",
) -> DigestCredentials:
    """What a client sends back (computed independently of verify())."""
    h = ha1("alice", REALM, password, algorithm)
    response = digest_response(
        h, nonce, method, "sip:sip.example.com", algorithm=algorithm, qop=qop, nc=nc, cnonce=cnonce
    )
    return DigestCredentials(
        "alice", REALM, nonce, "sip:sip.example.com", response, algorithm, cnonce, nc, qop
    )


def check(
    creds: DigestCredentials,
    *,
    now: float = NOW + 1,
    counter: NonceCounter | None = None,
    client_ip: str = "",
) -> AuthResult:
    base = hash_algorithm(creds.algorithm)
    stored = ha1("alice", REALM, "secret", base if base in ("MD5", "SHA-256") else "SHA-256")
    return verify(
        creds,
        "REGISTER",
        stored,
        now=now,
        secret=SECRET,
        max_age=300,
        counter=counter,
        client_ip=client_ip,
    )


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5", "MD5-sess", "SHA-256-sess"])
def test_verify_ok(algorithm: str) -> None:
    nonce = make_nonce(NOW, SECRET, REALM)
    assert check(answer(nonce, algorithm=algorithm)) is AuthResult.OK


def test_verify_accepts_uppercase_response() -> None:
    creds = answer(make_nonce(NOW, SECRET, REALM))
    upper = dataclasses.replace(creds, response=creds.response.upper())
    assert check(upper) is AuthResult.OK


def test_verify_rfc2069_without_qop() -> None:
    nonce = make_nonce(NOW, SECRET, REALM)
    assert check(answer(nonce, qop=None, nc=None, cnonce=None)) is AuthResult.OK


def test_verify_wrong_password_fails() -> None:
    nonce = make_nonce(NOW, SECRET, REALM)
    assert check(answer(nonce, password="guess")) is AuthResult.FAILED


@pytest.mark.parametrize("password", ["secret", "guess"])
def test_verify_checks_the_nonce_before_the_digest(password: str) -> None:
    # An expired, forged or foreign nonce earns a fresh challenge whatever the digest: not
    # a failure (a blind sender could lock users out with invented nonces), and the same
    # answer for right and wrong passwords (else it is a password oracle with no budget).
    nonce = make_nonce(NOW, SECRET, REALM)
    assert check(answer(nonce, password=password), now=NOW + 1000) is AuthResult.STALE
    assert check(answer("Zm9yZ2Vk", password=password)) is AuthResult.STALE
    other_ip = make_nonce(NOW, SECRET, REALM, client_ip="203.0.113.9")
    assert check(answer(other_ip, password=password)) is AuthResult.STALE
    junk = dataclasses.replace(answer("Zm9yZ2Vk", password=password), qop="auth-int")
    assert check(junk) is AuthResult.STALE


def test_verify_wrong_method_fails() -> None:
    nonce = make_nonce(NOW, SECRET, REALM)
    assert check(answer(nonce, method="INVITE")) is AuthResult.FAILED


def test_verify_stale_nonce_with_right_digest() -> None:
    nonce = make_nonce(NOW, SECRET, REALM)
    assert check(answer(nonce), now=NOW + 301) is AuthResult.STALE


def test_verify_foreign_nonce_with_right_digest_is_stale() -> None:
    # A nonce we did not make (secret rotated, other node): the client knows the password,
    # so a fresh nonce with stale=true lets it retry without prompting.
    assert check(answer("Zm9yZ2VkLW5vbmNl")) is AuthResult.STALE
    assert check(answer(make_nonce(NOW, b"old-secret", REALM))) is AuthResult.STALE


def test_verify_rfc_example_credentials() -> None:
    # RFC 2617 §3.5: the digest is right, the nonce is not ours -> STALE, not OK or FAILED.
    creds = parse_authorization(RFC2617_AUTH)
    ok = verify(creds, "GET", RFC2617_HA1, now=NOW, secret=SECRET, max_age=300)
    assert ok is AuthResult.STALE
    wrong = ha1("Mufasa", "testrealm@host.com", "circle of life")
    bad = verify(creds, "GET", wrong, now=NOW, secret=SECRET, max_age=300)
    assert bad is AuthResult.STALE  # the nonce is checked first: not ours, not a failure


def test_verify_client_ip_binding() -> None:
    nonce = make_nonce(NOW, SECRET, REALM, client_ip="198.51.100.7")
    assert check(answer(nonce), client_ip="198.51.100.7") is AuthResult.OK
    assert check(answer(nonce), client_ip="198.51.100.8") is AuthResult.STALE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"qop": "auth-int"},
        {"qop": "auth", "cnonce": None},
        {"qop": "auth", "nc": None},
        {"qop": "auth", "nc": "1"},
        {"qop": "auth", "nc": "0000000g"},
        {"algorithm": "SHA-512-256"},
    ],
)
def test_verify_unsupported_or_incomplete_fails(kwargs: dict[str, Any]) -> None:
    nonce = make_nonce(NOW, SECRET, REALM)
    creds = answer(nonce)
    assert check(dataclasses.replace(creds, **kwargs)) is AuthResult.FAILED


def test_nc_replay_is_rejected() -> None:
    counter = NonceCounter(max_entries=10)
    nonce = make_nonce(NOW, SECRET, REALM)
    assert check(answer(nonce, nc="00000001"), counter=counter) is AuthResult.OK
    assert check(answer(nonce, nc="00000001"), counter=counter) is AuthResult.STALE
    assert check(answer(nonce, nc="00000003"), counter=counter) is AuthResult.OK
    assert check(answer(nonce, nc="00000002"), counter=counter) is AuthResult.STALE
    assert check(answer(nonce, nc="0000000A"), counter=counter) is AuthResult.OK
    other = make_nonce(NOW, SECRET, REALM, salt=b"x")
    assert check(answer(other, nc="00000001"), counter=counter) is AuthResult.OK


def test_counter_is_bounded_and_evicted_nonces_cannot_replay() -> None:
    counter = NonceCounter(max_entries=3)
    for i in range(3):
        assert counter.advance(f"n{i}", 1, issued_at=100.0 + i)
    assert counter.advance("n3", 1, issued_at=103.0)  # evicts n0 (issued 100)
    assert len(counter) == 3
    assert not counter.advance("n0", 2, issued_at=100.0)  # forgotten, but not replayable
    assert counter.advance("n4", 1, issued_at=104.0)  # newer than anything evicted
    assert counter.advance("n3", 2, issued_at=103.0)
    with pytest.raises(ValueError):
        NonceCounter(0)


def test_counter_lru_keeps_recently_used() -> None:
    counter = NonceCounter(max_entries=2)
    counter.advance("a", 1, 1.0)
    counter.advance("b", 1, 2.0)
    counter.advance("a", 2, 1.0)  # a is now most recent
    counter.advance("c", 1, 3.0)  # evicts b
    assert not counter.advance("a", 2, 1.0)  # still known: replay
    assert counter.advance("a", 3, 1.0)


# --- FailureThrottle -----------------------------------------------------------------------


def test_throttle_blocks_after_max_failures_in_window() -> None:
    t = FailureThrottle(max_failures=3, window=60.0)
    for i in range(2):
        t.record_failure("192.0.2.1", 100.0 + i)
    assert not t.is_blocked("192.0.2.1", 102.0)
    t.record_failure("192.0.2.1", 110.0)
    assert t.is_blocked("192.0.2.1", 110.0)
    assert not t.is_blocked("192.0.2.2", 110.0)
    # Sliding: the failure at 100 ages out at 160, the one at 101 at 161.
    assert t.is_blocked("192.0.2.1", 159.9)
    assert not t.is_blocked("192.0.2.1", 160.0)


def test_throttle_old_failures_do_not_accumulate() -> None:
    t = FailureThrottle(max_failures=3, window=10.0)
    for i in range(10):
        t.record_failure("ip", i * 6.0)  # at most two inside any 10 s window
        assert not t.is_blocked("ip", i * 6.0)


def test_throttle_success_clears() -> None:
    t = FailureThrottle(max_failures=2, window=60.0)
    t.record_failure("ip", 1.0)
    t.record_failure("ip", 2.0)
    assert t.is_blocked("ip", 3.0)
    t.record_success("ip")
    assert not t.is_blocked("ip", 3.0)
    t.record_success("unknown")  # no error


def test_throttle_memory_is_bounded() -> None:
    t = FailureThrottle(max_failures=2, window=60.0, max_entries=100)
    for i in range(1000):
        t.record_failure(f"10.0.{i // 256}.{i % 256}", 1.0)
    assert len(t) == 100
    t.record_failure("10.0.3.231", 2.0)  # the most recent survive
    assert t.is_blocked("10.0.3.231", 2.0)
    assert len(t) == 100
    t2 = FailureThrottle(max_failures=2, window=5.0)
    t2.record_failure("a", 0.0)
    assert not t2.is_blocked("a", 10.0)
    assert len(t2) == 0  # expired entries are dropped when looked at


def test_throttle_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        FailureThrottle(max_failures=0)
    with pytest.raises(ValueError):
        FailureThrottle(window=0)


# --- TrustedPeers --------------------------------------------------------------------------


def test_trusted_peers_ipv4_and_ipv6() -> None:
    peers = TrustedPeers(["192.0.2.0/24", "198.51.100.7", "2001:db8::/32", " 10.1.2.3/8 "])
    assert peers.contains("192.0.2.200")
    assert peers.contains("198.51.100.7")
    assert not peers.contains("198.51.100.8")
    assert peers.contains("2001:db8::1")
    assert peers.contains("[2001:db8::1]")
    assert not peers.contains("2001:db9::1")
    assert peers.contains("10.200.0.1")  # host bits in the CIDR are tolerated
    assert peers.contains("::ffff:192.0.2.9")  # IPv4-mapped, from a dual-stack socket
    assert not peers.contains("::ffff:203.0.113.1")
    assert not peers.contains("not an ip")
    assert not peers.contains("")


def test_trusted_peers_empty_and_bad_config() -> None:
    assert not TrustedPeers([]).contains("127.0.0.1")
    with pytest.raises(ValueError):
        TrustedPeers(["192.0.2.0/33"])


def test_known_sources_expire_and_are_bounded() -> None:
    known = KnownSources(ttl=100, max_entries=2)
    known.add("alice", "192.0.2.1", NOW)
    assert known.contains("alice", "192.0.2.1", NOW + 100)
    assert not known.contains("alice", "192.0.2.1", NOW + 100.5)
    assert not known.contains("bob", "192.0.2.1", NOW)
    assert not known.contains("alice", "192.0.2.2", NOW)
    known.add("alice", "192.0.2.2", NOW)
    known.add("bob", "192.0.2.3", NOW)
    assert len(known) == 2
    assert not known.contains("alice", "192.0.2.1", NOW)  # least recent dropped
    with pytest.raises(ValueError):
        KnownSources(ttl=0)
