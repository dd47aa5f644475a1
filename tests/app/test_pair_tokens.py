"""The proxy's pair tokens (our Record-Route user part): what it keeps of the ones it
issued or checked (app/proxy.py PAIR_CACHE) answers as a check would."""

from __future__ import annotations

from sipwake.policy.flowtoken import encode_pair
from sipwake.transport.flow import Flow
from tests.app.harness import US, Rig

A = Flow("UDP", US, ("192.0.2.7", 5062))
B = Flow("TCP", US, ("198.51.100.9", 40123), 42)


def forged(token: str) -> str:
    return token[:-1] + ("0" if token[-1] != "0" else "1")


def test_a_token_we_issued_names_its_flows_and_a_forgery_of_it_none() -> None:
    proxy = Rig().calls.proxy
    (route,) = proxy.record_route_for(A, A)
    token = route.split("sip:", 1)[1].split("@", 1)[0]
    assert proxy.pair_of(token) == (A, A)
    assert proxy.pair_of(forged(token)) is None


def test_a_token_checked_once_reads_the_same_and_other_secrets_stay_out() -> None:
    proxy = Rig().calls.proxy
    token = encode_pair(proxy.secret, A, B)  # issued elsewhere (another process)
    assert proxy.pair_of(token) == (A, B)  # checked, then kept
    assert proxy.pair_of(token) == (A, B)
    assert proxy.pair_of(forged(token)) is None
    assert proxy.pair_of(encode_pair(b"x" * 32, A, B)) is None  # not our secret
    assert proxy.pair_of("alice") is None
    assert proxy.pair_of(None) is None
