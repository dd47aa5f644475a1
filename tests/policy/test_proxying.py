"""Pure proxy rules: §16.3 validation and §16.6 forwarding transforms."""

from __future__ import annotations

import pytest

from sipwake.policy.proxying import (
    BadExtension,
    ForwardPlan,
    LoopDetected,
    Me,
    TooManyHops,
    forward_copy,
    loop_hash,
    make_branch,
    validate_request,
)
from sipwake.sip.codec import parse_message
from sipwake.sip.message import Request

ME = Me(frozenset({"proxy.example.com", "192.0.2.1"}), frozenset({5060}))


def invite(*extra: str, mf: int = 70, vias: tuple[str, ...] = ()) -> Request:
    lines = [
        "INVITE sip:bob@example.com SIP/2.0",
        *(f"Via: {v}" for v in vias),
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKcaller",
        f"Max-Forwards: {mf}",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>",
        "Call-ID: c1@198.51.100.7",
        "CSeq: 1 INVITE",
        *extra,
        "Content-Length: 0",
    ]
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def test_max_forwards_exhausted_is_483() -> None:
    with pytest.raises(TooManyHops) as err:
        validate_request(invite(mf=0), ME, "h")
    assert err.value.status == 483
    validate_request(invite(mf=1), ME, "h")


def test_loop_is_482_but_a_spiral_is_not() -> None:
    req = invite()
    h = loop_hash(req)
    ours = f"SIP/2.0/UDP proxy.example.com:5060;branch={make_branch('x1', h)}"
    looped = invite(vias=(ours,))
    with pytest.raises(LoopDetected) as err:
        validate_request(looped, ME, loop_hash(looped))
    assert err.value.status == 482
    # Same Via of ours, but the Request-URI changed on the way: a spiral, allowed.
    spiral = invite(vias=(ours,))
    spiral.set_uri("sip:bob@192.0.2.99")
    validate_request(spiral, ME, loop_hash(spiral))


def test_unknown_proxy_require_is_420_naming_it() -> None:
    with pytest.raises(BadExtension) as err:
        validate_request(invite("Proxy-Require: path, foo, bar"), ME, "h")
    assert err.value.status == 420
    assert err.value.unsupported == ["foo", "bar"]


def test_forward_copy_transforms_and_leaves_the_original_alone() -> None:
    req = invite()
    plan = ForwardPlan(
        target="sip:bob@203.0.113.5:5070",
        via="SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bKp1",
        record_route=("<sip:a@proxy.example.com;lr>", "<sip:b@proxy.example.com;lr>"),
        path=("<sip:edge.example.net;lr>",),
    )
    fwd = forward_copy(req, plan)
    assert fwd.uri == "sip:bob@203.0.113.5:5070"
    assert fwd.max_forwards == 69
    assert str(fwd.top_via).endswith("branch=z9hG4bKp1")
    assert len(fwd.vias) == 2
    assert fwd.headers.get_all("record-route") == list(plan.record_route)
    assert fwd.headers.get_all("route") == ["<sip:edge.example.net;lr>"]
    # The caller's request is untouched (each branch gets its own copy).
    assert req.uri == "sip:bob@example.com" and req.max_forwards == 70
    assert len(req.vias) == 1 and "record-route" not in req.headers
