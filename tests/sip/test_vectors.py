"""Byte-level vectors (tests/vectors/index.toml): RFC 4475 torture messages and our own.

Each vector is fed (a) whole as a datagram, (b) byte by byte through the stream framer and
then parsed with ``stream=True`` (when it carries a Content-Length), and (c) with trailing
bytes after it. The expected outcome comes from the index.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipwake.sip.codec import PING, Limits, StreamFramer, parse_message
from sipwake.sip.errors import ParseError
from sipwake.sip.headers import COMPACT
from sipwake.sip.message import Request, Response

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
INDEX = tomllib.loads((VECTORS / "index.toml").read_text("utf-8"))

# Headers the core or a proxy interprets; anything else must be written back untouched.
KNOWN = {
    "via",
    "from",
    "to",
    "call-id",
    "cseq",
    "contact",
    "content-length",
    "max-forwards",
    "route",
    "record-route",
    "expires",
}


@dataclass(frozen=True)
class Vector:
    name: str
    data: bytes
    expect: str  # "valid" | "valid-syntax" | "drop" | "error"
    status: int | None

    @property
    def accepts(self) -> bool:
        return self.expect in ("valid", "valid-syntax")


def _load() -> list[Vector]:
    out = []
    for name, entry in INDEX.items():
        data = (VECTORS / entry["file"]).read_bytes()
        if "status" in entry:
            out.append(Vector(name, data, "error", entry["status"]))
        else:
            assert entry["expect"] in ("valid", "valid-syntax", "drop"), name
            out.append(Vector(name, data, entry["expect"], None))
    return out


ALL = _load()
IDS = [v.name for v in ALL]


def _has_content_length(data: bytes) -> bool:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for line in head.split(b"\n")[1:]:
        name = line.partition(b":")[0].strip().lower()
        if name in (b"content-length", b"l"):
            return True
    return False


def _outcome(parse: object) -> tuple[str, Request | Response | None, int | None]:
    """Run ``parse`` (returning a message) and validate(); report what happened."""
    try:
        msg = parse()  # type: ignore[operator]
        msg.validate()
    except ParseError as exc:
        return "error", None, exc.status
    return "ok", msg, None


def _check(vector: Vector, kind: str, msg: Request | Response | None, status: int | None) -> None:
    if vector.accepts:
        assert kind == "ok", f"{vector.name}: rejected with {status}"
    elif vector.expect == "drop":
        assert kind == "error", f"{vector.name}: a broken response was accepted"
        assert vector.data.lstrip(b"\r\n").startswith(b"SIP/"), "drop is for responses only"
    else:
        assert kind == "error" and status == vector.status, f"{vector.name}: got {kind} {status}"


def _same(a: Request | Response, b: Request | Response) -> None:
    assert a.start_line() == b.start_line()
    assert list(a.headers) == list(b.headers)
    assert a.body == b.body


@pytest.mark.parametrize("vector", ALL, ids=IDS)
def test_whole_datagram(vector: Vector) -> None:
    kind, msg, status = _outcome(lambda: parse_message(vector.data))
    _check(vector, kind, msg, status)
    if msg is None:
        return
    # serialise(parse(x)) re-parses to an equal message.
    out = msg.serialise()
    again = parse_message(out)
    _same(msg, again)
    again.validate()
    assert again.serialise() == out


@pytest.mark.parametrize("vector", [v for v in ALL if v.accepts], ids=lambda v: v.name)
def test_unknown_headers_written_back_verbatim(vector: Vector) -> None:
    msg = parse_message(vector.data)
    out = msg.serialise()
    head = vector.data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
    lines = head.split(b"\n")[1:]
    for i, line in enumerate(lines):
        if not line or line[:1] in b" \t":
            continue
        folded = i + 1 < len(lines) and lines[i + 1][:1] in (b" ", b"\t")
        key = line.partition(b":")[0].strip().lower().decode("utf-8", "surrogateescape")
        key = COMPACT.get(key, key)
        if key in KNOWN or folded:
            continue
        assert b"\r\n" + line + b"\r\n" in out, line
    # A message whose lines are all CRLF and unfolded is written back byte for byte.
    raw = vector.data.lstrip(b"\r\n")
    if b"\n" not in raw.replace(b"\r\n", b"") and b"\r\n " not in raw and b"\r\n\t" not in raw:
        if b"\r\n\r\n" not in raw:
            raw += b"\r\n"  # "baddn" ends without the empty line; serialise() adds it
        assert raw.startswith(out), "unmodified message not written back byte for byte"


@pytest.mark.parametrize("vector", [v for v in ALL if v.accepts], ids=lambda v: v.name)
def test_header_index_from_the_parse_matches_the_entries(vector: Vector) -> None:
    """The index parse_head builds in its one pass (folded lines, compact forms, repeats)
    is the one Headers would build from the entries: the same entry objects, in order."""
    headers = parse_message(vector.data).headers
    index = headers._index
    assert index is not None  # built by the parser, not on first lookup
    headers._index = None
    rebuilt = headers._idx()
    assert rebuilt == index
    assert all(a is b for key in index for a, b in zip(index[key], rebuilt[key], strict=True))


FRAMED = [v for v in ALL if _has_content_length(v.data) and b"\n\n" in v.data.replace(b"\r", b"")]


@pytest.mark.parametrize("vector", FRAMED, ids=lambda v: v.name)
def test_stream_byte_by_byte(vector: Vector) -> None:
    framer = StreamFramer()
    frames: list[bytes] = []
    error: ParseError | None = None
    try:
        for i in range(len(vector.data)):
            for item in framer.feed(vector.data[i : i + 1]):
                assert item is not PING  # no vector holds a bare double CRLF between messages
                assert isinstance(item, bytes)
                frames.append(item)
    except ParseError as exc:
        error = exc
    if not frames:
        assert not vector.accepts, f"{vector.name}: nothing framed ({error})"
        if error is None:
            # Content-Length larger than what was sent: the framer waits for the rest.
            assert framer.buffered > 0
        elif vector.status is not None:
            # A framing error (bad or conflicting Content-Length) closes the connection.
            assert error.status == vector.status
        return
    # After the first message a framing error is fine: dblreq's INVITE is one octet longer
    # than its Content-Length, so on a stream the leftover octet cannot be framed.
    kind, msg, status = _outcome(lambda: parse_message(frames[0], stream=True))
    _check(vector, kind, msg, status)
    if msg is not None:
        _same(msg, parse_message(vector.data))
    # Whatever follows (dblreq's second request) is framed as a message of its own.
    assert frames[0] == vector.data.lstrip(b"\r\n")[: len(frames[0])]
    for frame in frames[1:]:
        assert frame in vector.data
        parse_message(frame, stream=True).validate()


@pytest.mark.parametrize("tail", [b"\r\n", b"junk\x00\xff", b"INVITE sip:x SIP/2.0\r\n\r\n"])
@pytest.mark.parametrize("vector", FRAMED, ids=lambda v: v.name)
def test_trailing_bytes(vector: Vector, tail: bytes) -> None:
    """RFC 3261 §18.3: octets after Content-Length in a datagram are discarded."""
    kind, msg, status = _outcome(lambda: parse_message(vector.data + tail))
    _check(vector, kind, msg, status)
    if msg is not None:
        _same(msg, parse_message(vector.data))


def test_oversize_datagram_is_513() -> None:
    base = (VECTORS / "extra" / "lf_only.sip").read_bytes()
    body = b"x" * 65536
    data = base.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)) + body
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.status == 513
    with pytest.raises(ParseError) as info:
        StreamFramer().feed(data)
    assert info.value.status == 513


def test_limits_are_configurable() -> None:
    data = (VECTORS / "extra" / "too_many_headers.sip").read_bytes()
    assert parse_message(data, Limits(max_headers=300)).headers.count("x-h0") == 1
    data = (VECTORS / "extra" / "long_line.sip").read_bytes()
    assert (
        len(parse_message(data, Limits(max_line_length=10_000)).headers.get("x-long") or "") == 9000
    )


def test_rfc4475_details() -> None:
    """Spot checks of what the torture messages are about (RFC 4475 §3.1.1)."""

    def load(name: str) -> Request | Response:
        return parse_message((VECTORS / "rfc4475" / f"{name}.sip").read_bytes())

    wsinv = load("wsinv")
    assert isinstance(wsinv, Request)
    assert wsinv.max_forwards == 68 and wsinv.cseq.seq == 9
    assert [v.host for v in wsinv.vias] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert [v.transport for v in wsinv.vias] == ["UDP", "TCP", "UDP"]
    assert wsinv.vias[2].branch == "z9hG4bK30239"
    assert wsinv.from_.display == 'J Rosenberg \\"' and wsinv.from_.tag == "98asjd8"
    assert wsinv.to.tag == "1918181833n"
    assert wsinv.contacts[0].params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert wsinv.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert wsinv.headers.get("subject") == ""
    intmeth = load("intmeth")
    assert (
        isinstance(intmeth, Request)
        and intmeth.method == "!interesting-Method0123456789_*+`.%indeed'~"
    )
    esc02 = load("esc02")
    assert len(esc02.contacts) == 2  # "C%6Fntact" is an unknown header, not Contact
    semiuri = load("semiuri")
    assert isinstance(semiuri, Request) and semiuri.ruri.user == "user;par=u%40example.net"
    dblreq = load("dblreq")
    assert isinstance(dblreq, Request) and dblreq.method == "REGISTER" and dblreq.body == b""
    noreason = load("noreason")
    assert isinstance(noreason, Response) and noreason.status == 100 and noreason.reason == ""
    unreason = load("unreason")
    assert isinstance(unreason, Response)
    assert unreason.reason.encode("utf-8", "surrogateescape").endswith("простое".encode())
    assert len(load("mpart01").body) == 553
    transports = load("transports")
    assert [v.transport for v in transports.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    with pytest.raises(ParseError):
        load("regbadct").contacts  # noqa: B018
