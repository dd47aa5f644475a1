"""SIP requests and responses (RFC 3261 §7) with lazy typed views over their headers."""

from __future__ import annotations

from typing import Any

from sipwake.sip.errors import ParseError
from sipwake.sip.headers import TOP_VIA, CSeq, Headers, Via
from sipwake.sip.status import reason_phrase
from sipwake.sip.uri import URI, NameAddr, split_header_values

SIP_VERSION = "SIP/2.0"

# The RFC 3261 §8.1.1 headers every request needs, and the ones a response must echo.
MANDATORY = ("via", "call-id", "cseq", "from", "to")


def _vias(h: Headers) -> list[Via]:
    return [Via.parse(v) for v in h.get_all("via")]


def _top_via(h: Headers) -> Via | None:
    """Only the first Via value: what matching and response routing need (§17, §18)."""
    first = h.get("via")
    if first is None:
        return None
    if "," in first:
        values = split_header_values(first)
        first = values[0] if values else ""
    return Via.parse(first) if first else None


def _call_id(h: Headers) -> str:
    values = h.get_lines("call-id")
    if len(values) != 1 or not values[0]:
        raise ParseError("missing Call-ID" if not values else "bad Call-ID")
    return values[0]


def _cseq(h: Headers) -> CSeq:
    values = h.get_lines("cseq")
    if len(values) != 1:
        raise ParseError("missing CSeq" if not values else "multiple CSeq")
    return CSeq.parse(values[0])


def _single_nameaddr(name: str) -> object:
    def parse(h: Headers) -> NameAddr:
        values = h.get_lines(name)
        if len(values) != 1:
            raise ParseError(f"missing {name}" if not values else f"multiple {name}")
        return NameAddr.parse(values[0])

    return parse


_from = _single_nameaddr("From")
_to = _single_nameaddr("To")


def _contacts(h: Headers) -> list[NameAddr]:
    return [NameAddr.parse(v) for v in h.get_all("contact")]


def _routes(h: Headers) -> list[NameAddr]:
    return [NameAddr.parse(v) for v in h.get_all("route")]


def _record_routes(h: Headers) -> list[NameAddr]:
    return [NameAddr.parse(v) for v in h.get_all("record-route")]


def _int_header(h: Headers, name: str) -> int | None:
    value = h.get(name)
    if value is None:
        return None
    return _int_value(value, name)


def _int_value(value: str, name: str) -> int:
    value = value.strip()
    if not value.isdigit() or len(value) > 10:
        raise ParseError(f"bad {name}")
    return int(value)


class Message:
    """Common part of requests and responses."""

    __slots__ = ("body", "headers")

    headers: Headers
    body: bytes

    # -- typed views (parse on first use; a ParseError names the faulty header) -------------
    @property
    def call_id(self) -> str:
        return self.headers.parsed("call-id", _call_id)

    @property
    def cseq(self) -> CSeq:
        return self.headers.parsed("cseq", _cseq)

    @property
    def vias(self) -> list[Via]:
        return self.headers.parsed("via", _vias)

    @property
    def top_via(self) -> Via:
        via = self.headers.parsed(TOP_VIA, _top_via)
        if via is None:
            raise ParseError("missing Via")
        return via

    @property
    def from_(self) -> NameAddr:
        return self.headers.parsed("from", _from)  # type: ignore[arg-type]

    @property
    def to(self) -> NameAddr:
        return self.headers.parsed("to", _to)  # type: ignore[arg-type]

    @property
    def contacts(self) -> list[NameAddr]:
        return self.headers.parsed("contact", _contacts)

    @property
    def routes(self) -> list[NameAddr]:
        return self.headers.parsed("route", _routes)

    @property
    def record_routes(self) -> list[NameAddr]:
        return self.headers.parsed("record-route", _record_routes)

    @property
    def max_forwards(self) -> int | None:
        return _int_header(self.headers, "Max-Forwards")

    @property
    def expires(self) -> int | None:
        return _int_header(self.headers, "Expires")

    @property
    def content_length(self) -> int | None:
        # Two different lengths leave the body unframeable (RFC 4475 §3.3.9 "mcl01").
        value = self.headers.get_unique("Content-Length")
        return None if value is None else _int_value(value, "Content-Length")

    def validate(self) -> None:
        """Check the headers every message needs (RFC 3261 §8.1.1) parse; raise ParseError
        naming the first that does not."""
        self._validate_routing()
        self.from_  # noqa: B018 - each access validates its header
        self.to  # noqa: B018

    def _validate_routing(self) -> None:
        """Presence of the mandatory headers, and a parse of those that route a message
        to its transaction: Call-ID, CSeq and the top Via."""
        headers = self.headers
        for key in MANDATORY:
            if key not in headers:
                raise ParseError(f"missing {key}")
        self.call_id  # noqa: B018
        self.cseq  # noqa: B018
        self.top_via  # noqa: B018

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        self.body = body
        if content_type is not None:
            self.headers.set("Content-Type", content_type)
        self.headers.set("Content-Length", str(len(body)))

    def start_line(self) -> str:
        raise NotImplementedError

    def serialise(self) -> bytes:
        head = "\r\n".join([self.start_line(), *self.headers.lines()])
        return head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + self.body

    def __bytes__(self) -> bytes:
        # A method, not ``__bytes__ = serialise``: a compiled class cannot alias one.
        return self.serialise()


class Request(Message):
    __slots__ = ("_uri", "method", "uri", "version")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._uri: URI | None = None

    @property
    def ruri(self) -> URI:
        """The Request-URI, parsed (cached until ``set_uri``)."""
        if self._uri is None:
            self._uri = URI.parse(self.uri)
        return self._uri

    def set_uri(self, uri: URI | str) -> None:
        self.uri = str(uri)
        self._uri = uri if isinstance(uri, URI) else None

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def validate(self) -> None:
        super().validate()
        # Every Via of a request must parse: the responses will be routed back along them
        # (RFC 4475 §3.1.2.1 "badinv01").
        self.vias  # noqa: B018
        # RFC 3261 §8.2: the CSeq method must match the request method.
        if self.cseq.method != self.method:
            raise ParseError("CSeq method does not match request method")
        # RFC 3261 §19.1.1 Table 1: headers are not allowed in a Request-URI (RFC 4475
        # §3.1.2.11 "escruri").
        if self.ruri.headers is not None:
            raise ParseError("headers in Request-URI")
        self.max_forwards  # noqa: B018

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        self.status = status
        self.reason = reason if reason is not None else reason_phrase(status)
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def validate(self) -> None:
        """A proxy relays responses: it needs what matches the client transaction (top
        Via, CSeq, Call-ID) and that From and To are present (§8.1.1); parsing them is left
        to whoever reads them, so relaying does not pay for it."""
        self._validate_routing()

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> Response:
    """Build a response to ``request`` (RFC 3261 §8.2.6.2): Via, From, Call-ID and CSeq
    copied, To copied with ``to_tag`` added when it has none (not for 100 Trying)."""
    # The echoed lines are copied as they came (byte-for-byte), without re-parsing.
    idx = request.headers._idx()
    entries: list[list[Any]] = []
    for key in _ECHOED:
        for e in idx.get(key, ()):
            entries.append([e[0], e[1], e[2]])
    headers = Headers._from_parsed(entries)
    if status >= 101 and to_tag is not None and "to" in idx and _to_has_no_tag(request):
        headers.set("to", f"{Headers._value(idx['to'][0])};tag={to_tag}")
    if status == 100:
        # RFC 3261 §8.2.6.1: 100 Trying copies Timestamp.
        ts = request.headers.get("timestamp")
        if ts is not None:
            headers.add("Timestamp", ts)
    for name, value in extra or ():
        headers.add(name, value)
    headers.add("Content-Length", "0")
    return Response(status, reason, headers)


_ECHOED = ("via", "from", "to", "call-id", "cseq")


def _to_has_no_tag(request: Request) -> bool:
    try:
        return request.to.tag is None
    except ParseError:
        return False
