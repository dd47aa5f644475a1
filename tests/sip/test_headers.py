"""The header multimap and the Via/CSeq views (RFC 3261 §7.3, §20.16, §20.42)."""

from __future__ import annotations

import pytest

from sipwake.sip.codec import parse_message
from sipwake.sip.errors import ParseError
from sipwake.sip.headers import COMPACT, CSeq, Headers, Via, canonical_name, header_key

RAW = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com;branch=z9hG4bK2\r\n"
    b"Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK3\r\n"
    b"X-Custom  :   keep   me  \r\n"
    b"Route: <sip:p1.example.com;lr>\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"l: 0\r\n\r\n"
)


def test_compact_forms_map_to_full_names() -> None:
    for short, full in COMPACT.items():
        assert header_key(short) == full
        assert header_key(short.upper()) == full
    assert header_key(" Content-LENGTH ") == "content-length"


def test_canonical_names() -> None:
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("cseq") == "CSeq"
    assert canonical_name("record-route") == "Record-Route"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"


def test_reading() -> None:
    h = parse_message(RAW).headers
    assert (
        h.get("via")
        == "SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com;branch=z9hG4bK2"
    )
    assert h.get_lines("V") == [h.get("via"), "SIP/2.0/UDP c.example.com;branch=z9hG4bK3"]
    assert len(h.get_all("Via")) == 3
    assert h.count("via") == 2 and "VIA" in h and "content-length" in h and 3 not in h
    assert h.get("x-custom") == "keep   me"
    assert h.get("missing", "dflt") == "dflt"
    names = [name for name, _ in h]
    assert names == ["v", "Via", "X-Custom", "Route", "CSeq", "l"]  # as written
    assert h.keys()[0] == "via" and len(h) == 6
    # Lines are written back exactly as they came.
    assert h.lines()[2] == "X-Custom  :   keep   me  "


def test_writing_keeps_grouping_and_invalidates_views() -> None:
    msg = parse_message(RAW)
    assert msg.top_via.host == "a.example.com"
    msg.headers.prepend("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp")
    assert msg.top_via.host == "proxy.example.com"  # cache dropped
    assert msg.headers.keys()[:3] == ["via", "via", "via"]
    msg.headers.prepend("Record-Route", "<sip:proxy.example.com;lr>")  # none yet: goes first
    assert msg.headers.keys()[0] == "record-route"
    assert msg.headers.lines()[0] == "Record-Route: <sip:proxy.example.com;lr>"

    assert msg.headers.pop_first_value("via") == "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp"
    assert msg.headers.pop_first_value("via") == "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"
    assert msg.headers.get_lines("via")[0] == "SIP/2.0/TCP b.example.com;branch=z9hG4bK2"
    assert msg.headers.lines()[1] == "v: SIP/2.0/TCP b.example.com;branch=z9hG4bK2"
    assert [v.host for v in msg.vias] == ["b.example.com", "c.example.com"]
    assert msg.headers.pop_first_value("nothing") is None

    msg.headers.set("via", "SIP/2.0/UDP only.example.com")
    assert msg.headers.count("via") == 1 and msg.top_via.host == "only.example.com"
    msg.headers.set("Max-Forwards", "69")  # absent: appended
    assert msg.max_forwards == 69 and msg.headers.lines()[-1] == "Max-Forwards: 69"
    assert msg.headers.remove("ROUTE") == 1 and msg.routes == []
    msg.headers.add("x-new", "1")
    assert msg.headers.lines()[-1] == "X-New: 1"
    msg.headers.add("X-keep-Case", "2")
    assert msg.headers.lines()[-1] == "X-keep-Case: 2"


def test_copy_is_independent() -> None:
    h = parse_message(RAW).headers
    c = h.copy()
    c.set("CSeq", "2 INVITE")
    c.remove("via")
    assert h.get("cseq") == "1 INVITE" and h.count("via") == 2
    assert isinstance(c, Headers) and c.count("via") == 0


# -- Via ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "transport", "host", "port", "params"),
    [
        (
            "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
            "UDP",
            "pc33.atlanta.com",
            None,
            {"branch": "z9hG4bK776asdhds"},
        ),
        (
            "SIP/2.0/tls Host.Example.com:5061 ; rport ; received=192.0.2.1",
            "TLS",
            "host.example.com",
            5061,
            {"rport": None, "received": "192.0.2.1"},
        ),
        (
            "SIP  /   2.0\t/UDP    192.0.2.2;branch=390skdjuw",
            "UDP",
            "192.0.2.2",
            None,
            {"branch": "390skdjuw"},
        ),
        (
            "SIP / 2.0 / TCP spindle.example.com ;branch = z9",
            "TCP",
            "spindle.example.com",
            None,
            {"branch": "z9"},
        ),
        (
            "SIP/2.0/WSS [2001:db8::1]:443;branch=z9hG4bKw",
            "WSS",
            "[2001:db8::1]",
            443,
            {"branch": "z9hG4bKw"},
        ),
        ("SIP/2.0/UDP 192.0.2.1 : 5060", "UDP", "192.0.2.1", 5060, {}),
    ],
)
def test_via_parse(
    text: str, transport: str, host: str, port: int | None, params: dict[str, str | None]
) -> None:
    via = Via.parse(text)
    assert (via.transport, via.host, via.port, via.params) == (transport, host, port, params)
    assert via.sent_by == (host, port)
    assert Via.parse(str(via)) == via


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0 host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP ;branch=x",
        "HTTP/1.1/TCP host",
        "SIP//UDP host",
        "SIP/2.0/UDP host:99999",
    ],
)
def test_bad_via(text: str) -> None:
    with pytest.raises(ParseError):
        Via.parse(text)


# -- CSeq ---------------------------------------------------------------------------------------


def test_cseq() -> None:
    assert CSeq.parse(" 0009 \t INVITE ") == CSeq(9, "INVITE")
    assert str(CSeq(2**31 - 1, "BYE")) == "2147483647 BYE"
    for bad in (
        "",
        "1",
        "INVITE",
        "-1 INVITE",
        "2147483648 INVITE",
        "1 IN VITE",
        "1 INV@TE",
        "x1 ACK",
    ):
        with pytest.raises(ParseError):
            CSeq.parse(bad)
