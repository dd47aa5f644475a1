"""The parse memo (sip/memo.py): the same text parses to equal views, each caller gets its
own, a malformed text is never kept, and the memo stays bounded."""

from __future__ import annotations

import pytest

from sipwake.sip.codec import parse_message
from sipwake.sip.errors import ParseError
from sipwake.sip.flows import stamp_received
from sipwake.sip.headers import CSeq, Via
from sipwake.sip.memo import Memo
from sipwake.sip.message import Request
from sipwake.sip.uri import URI, NameAddr


def test_memo_is_emptied_when_full() -> None:
    memo: Memo[int] = Memo(size=3)
    for i in range(3):
        memo.put(str(i), i)
    assert len(memo) == 3 and memo.get("0") == 0
    memo.put("3", 3)  # the fourth text: the memo starts again
    assert len(memo) == 1
    assert memo.get("0") is None and memo.get("3") == 3


def test_a_long_text_is_not_kept() -> None:
    # What the memo holds is bounded by the texts' length too: a flood of long lines
    # cannot fill memory 4,096 times over.
    memo: Memo[int] = Memo(size=3, longest=8)
    memo.put("12345678", 1)
    memo.put("123456789", 2)
    assert memo.get("12345678") == 1 and memo.get("123456789") is None
    long_uri = "sip:alice@example.com;x=" + "a" * 2000
    assert URI.parse(long_uri).params["x"] == "a" * 2000
    assert URI.parse(long_uri) == URI.parse(long_uri)


def test_uri_parse_twice_gives_equal_unshared_uris() -> None:
    text = "sip:alice@example.com:5070;transport=tcp;lr"
    first, second = URI.parse(text), URI.parse(text)
    assert first == second and first is not second
    first.params["maddr"] = "10.0.0.1"
    assert "maddr" not in URI.parse(text).params
    assert "maddr" not in second.params


def test_nameaddr_parse_twice_gives_unshared_views() -> None:
    text = '"Alice" <sip:alice@example.com;transport=tcp>;tag=abc'
    first = NameAddr.parse(text)
    first.params["tag"] = "changed"
    first.uri.params["transport"] = "udp"
    again = NameAddr.parse(text)
    assert again.tag == "abc"
    assert again.uri.params == {"transport": "tcp"}
    assert again.display == "Alice"


def test_wildcard_contact_from_the_memo() -> None:
    assert NameAddr.parse("*").wildcard
    assert NameAddr.parse("*").wildcard


def test_stamped_via_does_not_leak_into_the_next_message() -> None:
    # stamp_received changes the request's own top Via (RFC 3261 §18.2.1); the same Via
    # text in the next message (a retransmission, the response) must parse as written.
    text = "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-memo-1;rport"
    request = Request("OPTIONS", "sip:bob@example.com")
    request.headers.add("Via", text)
    stamp_received(request, "198.51.100.9", 41000)
    assert request.top_via.params["received"] == "198.51.100.9"
    assert request.top_via.params["rport"] == "41000"
    again = Via.parse(text)
    assert again.params == {"branch": "z9hG4bK-memo-1", "rport": None}


def test_cseq_from_the_memo_is_equal() -> None:
    assert CSeq.parse("7 INVITE") == CSeq(7, "INVITE")
    assert CSeq.parse("7 INVITE") == CSeq(7, "INVITE")


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (URI.parse, "sip:"),
        (NameAddr.parse, "<sip:alice@example.com"),
        (Via.parse, "SIP/2.0/UDP"),
        (CSeq.parse, "x INVITE"),
    ],
)
def test_malformed_text_raises_every_time(parse: object, text: str) -> None:
    for _ in range(2):
        with pytest.raises(ParseError):
            parse(text)  # type: ignore[operator]


@pytest.mark.parametrize(
    "lines",
    [
        ["SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK-a;rport"],
        ["SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK-a;rport, SIP/2.0/TCP p1.example;branch=z9hG4bK-b"],
        ["SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK-a", "SIP/2.0/TLS p2.example;branch=z9hG4bK-c"],
    ],
)
def test_stamped_request_keeps_its_vias_view_right(lines: list[str]) -> None:
    # stamp_received rewrites the top Via and installs the views it already has instead
    # of parsing again: they must be what a parse of the rewritten message gives.
    request = Request("INVITE", "sip:bob@example.com")
    for line in lines:
        request.headers.add("Via", line)
    request.vias  # noqa: B018 - validate() parses them before the stamp
    stamp_received(request, "198.51.100.9", 41000)
    fresh = parse_message(request.serialise())
    assert request.vias == fresh.vias
    assert request.top_via == fresh.top_via
    assert request.vias[0].params["received"] == "198.51.100.9"
