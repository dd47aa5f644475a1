"""The overload path's byte scan (sip/scan.py): it never raises, it gives up on what it
cannot read with certainty, and where it answers it agrees with the full parser: the same
method, To tag and top Via, and the same 503 bytes as ``make_response`` builds."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sipwake.policy.registrar import aor_of
from sipwake.sip.codec import DEFAULT_LIMITS, Limits, parse_message
from sipwake.sip.errors import ParseError
from sipwake.sip.flows import stamp_received, stamp_via
from sipwake.sip.message import Request, make_response
from sipwake.sip.scan import RequestHead, ack_with, scan_request, to_aor
from sipwake.sip.uri import NameAddr, aor_key

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
INDEX = tomllib.loads((VECTORS / "index.toml").read_text("utf-8"))
FILES = {name: (VECTORS / entry["file"]).read_bytes() for name, entry in INDEX.items()}
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RETRY = [("Retry-After", "5")]

SIPP_INVITE = (
    b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-1-0;rport\r\n"
    b'From: "Caller" <sip:caller@127.0.0.1>;tag=1SIPpTag001\r\n'
    b"To: <sip:bob@127.0.0.1>\r\n"
    b"Call-ID: 1-1234@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:caller@127.0.0.1:5061;transport=UDP>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 9\r\n"
    b"\r\n"
    b"v=0\r\ns=-\r\n"
)


def full_parse(data: bytes) -> Request | None:
    """What the engine's full path makes of ``data``: a valid request, or None."""
    try:
        msg = parse_message(data)
        msg.validate()
    except (ParseError, ValueError):
        return None
    return msg if isinstance(msg, Request) else None


def agree(head: RequestHead, request: Request) -> None:
    """The scan read what the parser read, and the 503 is byte for byte make_response's."""
    assert head.method == request.method
    assert head.to_tag == request.to.tag
    assert head.via == request.top_via
    # The AoR key the overload path looks held calls up by is the registrar's.
    assert to_aor(head.to_value) == aor_of(request)
    tag = "sipwake-503-x"
    expected = make_response(request, 503, to_tag=tag, extra=RETRY).serialise()
    assert head.response(503, to_tag=tag, extra=RETRY) == expected


def check(data: bytes) -> RequestHead | None:
    """Scan ``data`` (must not raise); when both the scan and the parser accept it, they
    must agree."""
    head = scan_request(data, DEFAULT_LIMITS)
    request = full_parse(data)
    if head is not None and request is not None:
        agree(head, request)
    return head


def test_a_sipp_invite() -> None:
    head = check(SIPP_INVITE)
    assert head is not None
    assert head.method == "INVITE" and head.to_tag is None
    assert head.via.branch == "z9hG4bK-1-1-0" and head.via.port == 5061


@pytest.mark.parametrize("name", sorted(FILES))
def test_vectors_never_raise_and_agree(name: str) -> None:
    check(FILES[name])


def test_most_valid_vectors_are_read() -> None:
    # The scan is worth having only if plain requests take it.
    read = [n for n, d in FILES.items() if full_parse(d) is not None and check(d) is not None]
    assert {"compact", "register_pn", "lwsdisp", "longreq", "transports"} <= set(read), read


def _with(old: bytes, new: bytes, data: bytes = SIPP_INVITE) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


@pytest.mark.parametrize(
    ("to", "tag"),
    [
        (b"To: <sip:bob@127.0.0.1>;tag=abc", "abc"),
        (b"To: <sip:bob@127.0.0.1> ; TAG = abc ;x", "abc"),
        (b'To: "Bob" <sip:bob@127.0.0.1>;tag=abc', "abc"),
        (b"To: <sip:bob@127.0.0.1;tag=uri-param>", None),  # a URI parameter, not the tag
        (b"To: sip:bob@127.0.0.1;tag=abc", "abc"),  # addr-spec: the parameters are the header's
        (b"t: <sip:bob@127.0.0.1>;tag=abc", "abc"),
        (b"To: Bob <sip:tag=bob@127.0.0.1>", None),
    ],
)
def test_to_tag(to: bytes, tag: str | None) -> None:
    head = check(_with(b"To: <sip:bob@127.0.0.1>", to))
    assert head is not None
    assert head.to_tag == tag


@pytest.mark.parametrize(
    ("to", "aor"),
    [
        (b"<sip:bob@example.com>", "sip:bob@example.com"),
        # RFC 3261 §10.3 step 5: scheme and host case, sips, port and parameters go;
        # §19.1.4: an escaped unreserved character is the character, the user keeps case.
        (b'"Bob" <SIPS:Bob@Example.COM:5061;transport=tls>;x=1', "sip:Bob@example.com"),
        (b"<sip:b%6Fb%2c@example.com>", "sip:bob%2C@example.com"),
        (b"sip:bob@example.com;tag=abc", "sip:bob@example.com"),  # the header's tag
        (b"<tel:+15551234>", "tel:+15551234"),
        (b"Bob <sip:bob@example.com;transport=tcp;lr>", "sip:bob@example.com"),
        (b"<sip:bob:secret@example.com>", "sip:bob@example.com"),  # the parser's
        (b"<sip:bob@example.com", None),  # the parser refuses it: no key
        (b"<sip:bob@exa mple.com>", None),
        (b"<sip:bob@example.com> junk", None),
        (b"sip:bo,b@example.com", None),  # §20.10: a comma outside <...>
    ],
)
def test_to_aor(to: bytes, aor: str | None) -> None:
    assert to_aor(to) == aor


def parsed_aor(to: bytes) -> str | None:
    """The key after the full parse: what the registrar stores the bindings under."""
    try:
        return aor_key(NameAddr.parse(to.decode("ascii")).uri)
    except (ParseError, ValueError):
        return None


BACK_TO_THE_PARSER = {
    "a response": b"SIP/2.0 200 OK\r\n" + SIPP_INVITE.partition(b"\r\n")[2],
    "LF only": SIPP_INVITE.replace(b"\r\n", b"\n"),
    "a folded line": _with(b"Call-ID: 1", b"Call-ID:\r\n 1"),
    "leading CRLF": b"\r\n" + SIPP_INVITE,
    "no empty line": SIPP_INVITE.partition(b"\r\n\r\n")[0],
    "a stray CR": _with(b"Max-Forwards: 70", b"Max-Forwards: 7\r0"),
    "a NUL": _with(b"Max-Forwards: 70", b"Max-Forwards: 7\x000"),
    "UTF-8": _with(b'"Caller"', '"Jürgen"'.encode()),
    "two Call-IDs": _with(b"CSeq: 1", b"i: other\r\nCSeq: 1"),
    "two To": _with(b"CSeq: 1", b"t: <sip:x@y>\r\nCSeq: 1"),
    "no From": _with(b'From: "Caller" <sip:caller@127.0.0.1>;tag=1SIPpTag001\r\n', b""),
    "no Via": _with(b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-1-0;rport\r\n", b""),
    "empty Call-ID": _with(b"Call-ID: 1-1234@127.0.0.1", b"Call-ID: "),
    "CSeq of another method": _with(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
    "CSeq too large": _with(b"CSeq: 1 INVITE", b"CSeq: 2147483648 INVITE"),
    "two Vias in one line": _with(b";rport", b";rport, SIP/2.0/UDP 10.0.0.1"),
    "bad Via": _with(b"SIP/2.0/UDP 127.0.0.1:5061", b"SIP/2.0/UDP 127.0.0.1:99999"),
    "bad version": _with(b"SIP/2.0\r\n", b"SIP/3.0\r\n"),
    "bad method": _with(b"INVITE sip", b"INV@TE sip"),
    "no URI scheme": _with(b"INVITE sip:bob@127.0.0.1", b"INVITE bob"),
    "two tags": _with(b"To: <sip:bob@127.0.0.1>", b"To: <sip:bob@127.0.0.1>;tag=a;tag=b"),
    "empty tag": _with(b"To: <sip:bob@127.0.0.1>", b"To: <sip:bob@127.0.0.1>;tag="),
    "junk after >": _with(b"To: <sip:bob@127.0.0.1>", b"To: <sip:bob@127.0.0.1> junk"),
    "unclosed <": _with(b"To: <sip:bob@127.0.0.1>", b"To: <sip:bob@127.0.0.1"),
    "a quoted <": _with(b"To: <sip:bob", b'To: "a<b>" <sip:bob'),
    "escaped quote": _with(b"To: <sip:bob", b'To: "a\\"b" <sip:bob'),
}


@pytest.mark.parametrize("name", sorted(BACK_TO_THE_PARSER))
def test_gives_up_to_the_full_parser(name: str) -> None:
    assert check(BACK_TO_THE_PARSER[name]) is None


def test_limits() -> None:
    assert scan_request(SIPP_INVITE, Limits(max_message_size=len(SIPP_INVITE) - 1)) is None
    assert scan_request(SIPP_INVITE, Limits(max_headers=5)) is None
    assert scan_request(SIPP_INVITE, Limits(max_line_length=40)) is None
    assert scan_request(SIPP_INVITE, Limits(max_line_length=80)) is not None


def test_the_response_echoes_a_stamped_via() -> None:
    data = _with(b"127.0.0.1:5061;", b"client.invalid:5061;")
    head = scan_request(data, DEFAULT_LIMITS)
    request = full_parse(data)
    assert head is not None and request is not None
    stamp_received(request, "192.0.2.7", 40000)
    assert stamp_via(head.via, "192.0.2.7", 40000)
    assert head.via == request.top_via
    expected = make_response(request, 503, to_tag="t", extra=RETRY).serialise()
    assert head.response(503, to_tag="t", extra=RETRY, top_via_changed=True) == expected
    assert b";rport=40000;received=192.0.2.7\r\n" in expected


def test_every_via_line_is_echoed() -> None:
    more = b"v: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2\r\n"
    data = _with(b"From:", more + b"From:")
    head = check(data)
    assert head is not None and len(head.via_lines) == 2


# -- generated input ------------------------------------------------------------------------

NAMES = {
    "via": ["Via", "via", "VIA", "v", "V"],
    "from": ["From", "from", "f"],
    "to": ["To", "TO", "t"],
    "call-id": ["Call-ID", "call-id", "i"],
    "cseq": ["CSeq", "cseq"],
}
TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-.!%*_+`'~", min_size=1, max_size=8)
SPACE = st.sampled_from(["", " ", "  ", "\t"])
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
HEAD_CHARS = st.characters(min_codepoint=1, max_codepoint=0x7F) | st.sampled_from("é\u00a0\x85")


@st.composite
def to_values(draw: st.DrawFn, plain: bool) -> str:
    scheme = draw(st.sampled_from(["sip:", "sips:", "SIP:"]))
    user = draw(TOKEN) + draw(st.sampled_from(["", "%41", "%2f", "%zz"]))
    host = draw(st.sampled_from(["@example.com", "@Example.COM:5061"]))
    uri = scheme + user + host + draw(st.sampled_from(["", ";tag=u", ";lr"]))
    displays = ["", "Bob ", '"Bob" '] + ([] if plain else ['"B<o>b" ', '"a;tag=1" '])
    display = draw(st.sampled_from(displays))
    bracket = draw(st.booleans()) or bool(display) or ";" in uri
    value = f"{display}<{uri}>" if bracket else uri
    tagged = False
    for _ in range(draw(st.integers(0, 3))):
        sp1, sp2 = draw(SPACE), draw(SPACE)
        name = draw(st.sampled_from(["tag", "TAG", "Tag", "x", "tagx"]))
        eq = draw(st.sampled_from(["="] if plain else ["=", ""]))
        if plain and name.lower() == "tag":
            if tagged:
                continue  # a plain request has one tag at most
            tagged = True
        value += f"{sp1};{sp2}{name}{eq}{draw(TOKEN) if eq else ''}"
    return value


@st.composite
def requests(draw: st.DrawFn, plain: bool = False) -> bytes:
    """Requests with the echoed headers in every spelling the parser takes; ``plain``:
    only what the scan must read (ASCII, no quoted '<', no doubtful tag)."""
    method = draw(st.sampled_from(["INVITE", "REGISTER", "ACK", "BYE", "CANCEL", "MESSAGE"]))
    branch = draw(st.sampled_from(["z9hG4bK", "", "Z9HG4BK"])) + draw(TOKEN)
    host = draw(st.sampled_from(["127.0.0.1", "Host.Example.COM", "[2001:db8::1]"]))
    port = draw(st.sampled_from(["", ":5060", ":1"]))
    params = draw(st.sampled_from([";rport", "", ";received=10.0.0.1", ";RPort=7"]))
    via = f"SIP/2.0/{draw(st.sampled_from(['UDP', 'tcp', 'WS']))} {host}{port}"
    via += f"{params};branch={branch}"
    noise = st.text(PRINTABLE if plain else HEAD_CHARS.filter(lambda c: c not in "\r\n"))
    lines = {
        "via": [via, *draw(st.lists(st.just("SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKb"), max_size=2))],
        "from": [f"<sip:a@example.com>;tag={draw(TOKEN)}"],
        "to": [draw(to_values(plain))],
        "call-id": [draw(TOKEN) + "@host"],
        "cseq": [f"{draw(st.integers(0, 2**31 - 1))} {method}"],
        "max-forwards": ["70"],
        "x-noise": [draw(noise.filter(lambda t: t.strip() == t).map(lambda t: t[:12]))],
    }
    out = []
    for key, values in lines.items():
        for value in values:
            name = draw(st.sampled_from(NAMES.get(key, [key])))
            out.append(f"{name}{draw(SPACE)}:{draw(SPACE)}{value}{draw(SPACE)}")
    order = draw(st.permutations(out))
    text = f"{method} sip:bob@example.com SIP/2.0\r\n" + "\r\n".join(order) + "\r\n\r\n"
    return text.encode("utf-8")


@SETTINGS
@given(requests())
@example(SIPP_INVITE)
def test_generated_requests_agree(data: bytes) -> None:
    check(data)


@SETTINGS
@given(requests(plain=True))
def test_plain_requests_are_read(data: bytes) -> None:
    assert full_parse(data) is not None
    assert check(data) is not None


@SETTINGS
@given(requests(), st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=3)), max_size=4))
def test_mutated_requests_never_raise_and_agree(
    data: bytes, edits: list[tuple[int, bytes]]
) -> None:
    buf = bytearray(data)
    for at, new in edits:
        at %= max(1, len(buf))
        buf[at : at + len(new)] = new
    check(bytes(buf))


@SETTINGS
@given(st.binary(max_size=600))
def test_any_bytes_never_raise(data: bytes) -> None:
    check(data)
    check(SIPP_INVITE[:200] + data)


def test_ack_with_a_marker_in_its_head() -> None:
    ack = (
        b"ACK sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKa\r\n"
        b"To: <sip:bob@127.0.0.1>;tag=sipwake-503-abc\r\nCSeq: 1 ACK\r\n\r\n"
    )
    assert ack_with(ack, b";tag=sipwake-503-")
    assert not ack_with(ack, b";tag=other")
    assert not ack_with(ack.replace(b"ACK sip", b"BYE sip"), b";tag=sipwake-503-")
    # Only the head counts: the same bytes in a body are not a To tag.
    body = ack.replace(b";tag=sipwake-503-abc", b"") + b"x;tag=sipwake-503-abc"
    assert not ack_with(body, b";tag=sipwake-503-")


@st.composite
def to_like(draw: st.DrawFn) -> str:
    """Mostly well-formed To values, each part in a common or an odd spelling."""

    def one(*options: str) -> str:
        # The first option is the plain one: half the time; now and then two random chars.
        if draw(st.integers(0, 9)) == 0:
            return draw(st.text(PRINTABLE, max_size=2))
        return options[0] if draw(st.booleans()) else draw(st.sampled_from(options))

    display = one("", "Bob ", '"Bob" ', '"B<o>b" ', '"a\\"b" ', 'Bo"b ', " ")
    scheme = one("sip:", "sips:", "SIP:", "Sips:", "tel:", "sipx:")
    user = draw(TOKEN) + one("", "%41", "%2f", ",", ";x=1", ":pw", "[", "@x")
    host = one("example.com", "Ex.COM", "1.2.3.4", "[::1]", "", "a b", "-")
    port = one("", ":5061", ":1", ":65535", ":99999", ":", ":5x")
    params = one("", ";lr", ";transport=TCP;lr", ";=x", ";;", "; a = b", ";maddr=[::1]")
    query = one("", "?h=1")
    tail = one("", ";tag=1", " ;x", ";", " junk", ";=1")
    uri = f"{scheme}{user}@{host}{port}{params}{query}"
    inner = one("", " ")
    bracket = draw(st.booleans()) or bool(display)
    value = f"{display}<{inner}{uri}{inner}>{tail}" if bracket else uri + tail
    return value.strip(" \t")


TO_PIECES = st.sampled_from(
    ["sip:", "sips:", "SIP:", "tel:", "bob", "B%6Fb", "@", "example.com", "Ex.COM", ":5061",
     ":99999", ":", ";", ";lr", ";transport=tcp", ";=x", "=", "?h=1", "<", ">", '"', '"Bob" ',
     "Bob ", " ", "\t", ",", "\\", "[::1]", "%", "tag=1"]
)  # fmt: skip


@SETTINGS
@given(to_like() | st.lists(TO_PIECES | st.text(PRINTABLE, max_size=2), max_size=12).map("".join))
@example("<sip:bob@example.com>")
@example('"Bob" <sips:bob@Ex.COM:5061;lr>')
@example("sip:bob@example.com;tag=1")
def test_to_aor_is_the_parsers_key(value: str) -> None:
    """Read from the bytes or not, the key is the full parser's, and None where it
    refuses the value, for any To value the scan can hand over (printable ASCII)."""
    to = value.strip(" \t").encode("ascii")
    assert to_aor(to) == parsed_aor(to)
