"""Property tests: parse(serialise(m)) == m, framer split invariance, URI/name-addr round trips."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwake.sip.codec import PING, StreamFramer, parse_message
from sipwake.sip.headers import Headers
from sipwake.sip.message import Request, Response
from sipwake.sip.uri import URI, NameAddr

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TOKEN = ALNUM + "-.!%*_+`'~"
LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"

tokens = st.text(TOKEN, min_size=1, max_size=12)
methods = (
    st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE", "ACK", "CANCEL", "MESSAGE"]) | tokens
)
labels = st.text(LOWER, min_size=1, max_size=10)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 0xFFFF).map(lambda n: f"{n:x}"), min_size=8, max_size=8).map(
    lambda g: "[" + ":".join(g) + "]"
)
ipv6_short = st.sampled_from(["[::1]", "[2001:db8::10]", "[fe80::1]", "[::ffff:192.0.2.1]"])
hosts = domains | ipv4 | ipv6 | ipv6_short
ports = st.none() | st.integers(0, 65535)
users = st.none() | st.text(ALNUM + "-_.!~*'()&=+$%", min_size=1, max_size=12)
param_values = st.none() | st.text(TOKEN, min_size=0, max_size=10)
params = st.dictionaries(st.text(LOWER + "-", min_size=1, max_size=8), param_values, max_size=4)


@st.composite
def sip_uris(draw: st.DrawFn) -> URI:
    user = draw(users)
    return URI(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        host=draw(hosts),
        user=user,
        password=None if user is None else draw(st.none() | st.text(ALNUM, max_size=6)),
        port=draw(ports),
        params=draw(params),
        headers=draw(st.none() | st.text(ALNUM + "=&%", min_size=1, max_size=10)),
    )


uris = sip_uris() | st.builds(lambda n: URI("tel", opaque=f"+{n}"), st.integers(0, 10**12))
# Display names: any non-control text, quotes and backslashes included (quoted-pair).
display_text = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=16
).filter(lambda s: s.strip() == s)
name_addrs = st.builds(
    NameAddr,
    uri=uris,
    display=st.none() | display_text,
    params=params,
)


@SETTINGS
@given(uris)
def test_uri_round_trip(uri: URI) -> None:
    assert URI.parse(str(uri)) == uri


@SETTINGS
@given(name_addrs)
def test_name_addr_round_trip(addr: NameAddr) -> None:
    assert NameAddr.parse(str(addr)) == addr


# -- messages ---------------------------------------------------------------------------------

VIEWED = {"via", "from", "to", "call-id", "cseq", "max-forwards", "content-length", "expires"}
VIEWED |= {"contact", "route", "record-route"}
# Extra headers are anything but the ones validate() or the typed views interpret.
header_names = st.text(ALNUM + "-", min_size=2, max_size=16).filter(
    lambda s: s.lower() not in VIEWED
)
header_values = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"]), min_size=0, max_size=40
).map(str.strip)
bodies = st.binary(max_size=300)


def _headers(draw: st.DrawFn, method: str) -> Headers:
    h = Headers()
    h.add(
        "Via",
        f"SIP/2.0/UDP {draw(hosts)}:{draw(st.integers(1, 65535))};branch=z9hG4bK{draw(labels)}",
    )
    h.add(
        "From",
        str(NameAddr(draw(sip_uris()), draw(st.none() | display_text), {"tag": draw(labels)})),
    )
    h.add("To", str(draw(name_addrs)))
    h.add("Call-ID", f"{draw(labels)}@{draw(hosts)}")
    h.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    for name, value in draw(st.lists(st.tuples(header_names, header_values), max_size=8)):
        h.add(name, value)
    return h


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(methods)
    ruri = draw(uris.filter(lambda u: u.headers is None))  # RFC 3261 §19.1.1: no headers
    req = Request(method, str(ruri), _headers(draw, method))
    req.set_body(draw(bodies))
    return req


@st.composite
def responses(draw: st.DrawFn) -> Response:
    reason = draw(st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=20))
    resp = Response(draw(st.integers(100, 699)), reason, _headers(draw, draw(methods)))
    resp.set_body(draw(bodies))
    return resp


messages = requests() | responses()


def _as_tuple(m: Request | Response) -> tuple[str, list[tuple[str, str]], bytes]:
    return m.start_line(), list(m.headers), m.body


@SETTINGS
@given(messages)
def test_message_round_trip(msg: Request | Response) -> None:
    data = msg.serialise()
    parsed = parse_message(data)
    assert type(parsed) is type(msg)
    assert _as_tuple(parsed) == _as_tuple(msg)
    assert parse_message(data, stream=True).serialise() == data
    parsed.validate()
    assert parsed.cseq == msg.cseq


@SETTINGS
@given(
    st.lists(messages, min_size=1, max_size=4),
    st.lists(st.integers(1, 200), max_size=30),
    st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_framer_split_invariance(
    msgs: list[Request | Response], cuts: list[int], pings: list[bool]
) -> None:
    """Any split of a concatenation of messages (with RFC 5626 keep-alives between them)
    yields the same messages."""
    wire = [m.serialise() for m in msgs]
    stream = b"".join(
        (b"\r\n\r\n" if ping else b"") + w for w, ping in zip(wire, pings, strict=False)
    )
    framer = StreamFramer()
    out: list[bytes] = []
    pos = 0
    n_pings = 0
    for cut in [*cuts, len(stream)]:
        chunk, pos = stream[pos : pos + cut], pos + cut
        for item in framer.feed(chunk):
            if item is PING:
                n_pings += 1
            else:
                assert isinstance(item, bytes)
                out.append(item)
        if pos >= len(stream):
            break
    framer.feed(stream[pos:])
    assert out == wire
    assert n_pings == sum(pings[: len(wire)])
    assert framer.buffered == 0
    for frame, msg in zip(out, msgs, strict=True):
        assert _as_tuple(parse_message(frame, stream=True)) == _as_tuple(msg)
