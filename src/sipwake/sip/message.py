"""SIP requests and responses (RFC 3261 §7) with lazy typed views over their headers."""

from __future__ import annotations

from sipwake.sip.errors import ParseError
from sipwake.sip.headers import CSeq, Headers, Via
from sipwake.sip.status import reason_phrase
from sipwake.sip.uri import URI, NameAddr

SIP_VERSION = "SIP/2.0"

# The RFC 3261 §8.1.1 headers every request needs, and the ones a response must echo.
MANDATORY = ("via", "call-id", "cseq", "from", "to")


def _vias(h: Headers) -> list[Via]:
    return [Via.parse(v) for v in h.get_all("via")]


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
        values = self.headers.get_lines("call-id")
        if len(values) != 1 or not values[0]:
            raise ParseError("missing Call-ID" if not values else "bad Call-ID")
        return values[0]

    @property
    def cseq(self) -> CSeq:
        return self.headers.parsed("cseq", _cseq)

    @property
    def vias(self) -> list[Via]:
        return self.headers.parsed("via", _vias)

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise ParseError("missing Via")
        return vias[0]

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
        for key in MANDATORY:
            if key not in self.headers:
                raise ParseError(f"missing {key}")
        self.call_id  # noqa: B018 - each access validates its header
        self.cseq  # noqa: B018
        self.top_via  # noqa: B018
        self.from_  # noqa: B018
        self.to  # noqa: B018

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

    __bytes__ = serialise


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
    src = request.headers
    headers = Headers()
    for key in ("via", "from", "to", "call-id", "cseq"):
        for line in src.get_lines(key):
            headers.add(key, line)
    if status >= 101 and to_tag is not None and key_missing_tag(src.get("to")):
        headers.set("to", f"{src.get('to')};tag={to_tag}")
    if status == 100:
        # RFC 3261 §8.2.6.1: 100 Trying copies Timestamp.
        ts = src.get("timestamp")
        if ts is not None:
            headers.add("Timestamp", ts)
    for name, value in extra or ():
        headers.add(name, value)
    headers.add("Content-Length", "0")
    return Response(status, reason, headers)


def key_missing_tag(to_value: str | None) -> bool:
    if to_value is None:
        return False
    try:
        return NameAddr.parse(to_value).tag is None
    except ParseError:
        return False
