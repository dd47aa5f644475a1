"""A request's method, To tag and echoed headers read straight from its bytes: what the
overload path needs to answer ``503`` before doing any work (RFC 3261 §21.5.4).

Parsing and validating a request costs most of what refusing it costs (a shed INVITE
spent ~60 µs in ``parse_message``, ``validate`` and ``make_response``, pure Python). Past
capacity every microsecond spent on a request we refuse is taken from the calls we
accepted, so the refusal reads only what a response must echo (§8.2.6.2: Via, From, To,
Call-ID, CSeq) and what decides whether to refuse (the method and the To tag, §12.2.2:
a To tag means the request belongs to a dialog), with a few C-level searches.

Sure or nothing: ``scan_request`` never raises, and gives None for anything it cannot read
with certainty (a response, folded lines, an LF-only sender, bytes beyond ASCII or control
characters in the head, two values in the top Via line, a To header whose tag cannot be
told, duplicate From/To/Call-ID/CSeq, a CSeq that does not name the method...). The caller
then takes the full path (parse, validate, the transaction layer), which answers what is
malformed. Where it gives an answer, it agrees with the full parser
(``tests/sip/test_scan.py`` checks that, on vectors and generated input). What it does not
read it does not check: a request malformed in some other header is refused 503 like any
other while the server sheds, and answered 400 otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from sipwake.sip.codec import Limits
from sipwake.sip.errors import ParseError
from sipwake.sip.headers import Via, parse_via
from sipwake.sip.status import reason_phrase
from sipwake.sip.uri import NameAddr, aor_key

# The headers a response echoes, full and compact names (RFC 3261 §7.3.3), each line
# preceded by the CRLF of the line before it (the request line comes first); ``_slot``
# files each match by its name.
_ECHOED: Final = re.compile(
    rb"\r\n(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE
)
_TOKEN: Final = re.compile(rb"[A-Za-z0-9.!%*_+`'~-]+")  # RFC 3261 §25.1 token
_CTL: Final = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])  # not TAB, CR, LF
# to_aor: a To value whose AoR key is read without the parser: ``<uri>`` after a display
# name without quotes or a quoted string with nothing escaped, or the URI alone (its
# parameters then are the header's; they must have names either way). The URI has no
# %-escape to decode, no password, no headers, and a port of at most 4 digits (valid).
_PLAIN_URI: Final = (
    rb"sips?:([^:@;?%,<>\"\s]+)@([A-Za-z0-9.-]+)(?::[0-9]{1,4})?"
    rb"(?:;[^;=?<>\"\s]+(?:=[^;?<>\"\s]*)?)*"
)
_PLAIN_TO: Final = re.compile(
    rb'(?:[ \t]*"[^"\\]*"[ \t]*|[^"<]*)<' + _PLAIN_URI + rb">|" + _PLAIN_URI, re.IGNORECASE
)
_UNSURE: Final = b"\0"  # _to_tag: the To header's tag cannot be told without a parse


_HEAD_FIELDS = (
    "method", "to_tag", "via", "via_lines", "from_line", "to_line", "to_value", "call_id_line",
    "cseq_line",
)  # fmt: skip


class RequestHead:
    """What ``scan_request`` read. ``via`` is the top Via, parsed by the same code as the
    full path (so transaction keys and response addresses match it exactly); the caller
    may stamp it (``received``/``rport``, RFC 3581) before ``response``. A plain class, not
    a dataclass: one is made per request scanned, and mypyc compiles a hand-written
    ``__init__`` where a dataclass's stays interpreted (sip/flows.py Flow)."""

    __slots__ = (
        "call_id_line", "cseq_line", "from_line", "method", "to_line", "to_tag", "to_value",
        "via", "via_lines",
    )  # fmt: skip

    method: str
    to_tag: str | None
    via: Via
    via_lines: list[bytes]  # every Via line as it came; the first holds only ``via``
    from_line: bytes
    to_line: bytes
    to_value: bytes
    call_id_line: bytes
    cseq_line: bytes

    def __init__(  # noqa: PLR0917 - positional, as the dataclass's was
        self,
        method: str,
        to_tag: str | None,
        via: Via,
        via_lines: list[bytes],
        from_line: bytes,
        to_line: bytes,
        to_value: bytes,
        call_id_line: bytes,
        cseq_line: bytes,
    ) -> None:
        self.method = method
        self.to_tag = to_tag
        self.via = via
        self.via_lines = via_lines
        self.from_line = from_line
        self.to_line = to_line
        self.to_value = to_value
        self.call_id_line = call_id_line
        self.cseq_line = cseq_line

    def _key(self) -> tuple[object, ...]:
        return (
            self.method, self.to_tag, self.via, self.via_lines, self.from_line, self.to_line,
            self.to_value, self.call_id_line, self.cseq_line,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestHead):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        pairs = zip(_HEAD_FIELDS, self._key(), strict=True)
        return "RequestHead(" + ", ".join(f"{name}={value!r}" for name, value in pairs) + ")"

    def response(
        self,
        status: int,
        *,
        to_tag: str,
        extra: Sequence[tuple[str, str]] = (),
        top_via_changed: bool = False,
    ) -> bytes:
        """The response, serialised (RFC 3261 §8.2.6.2): the echoed lines copied as they
        came (the top Via rewritten when ``top_via_changed``), ``to_tag`` added to a To
        that has none, then ``extra`` and ``Content-Length: 0``."""
        vias = self.via_lines
        if top_via_changed:
            vias = [b"Via: " + str(self.via).encode(), *vias[1:]]
        to = self.to_line
        if self.to_tag is None:
            to = b"To: " + self.to_value + b";tag=" + to_tag.encode()
        lines = [
            f"SIP/2.0 {status} {reason_phrase(status)}".encode(),
            *vias,
            self.from_line,
            to,
            self.call_id_line,
            self.cseq_line,
            *(f"{name}: {value}".encode() for name, value in extra),
            b"Content-Length: 0",
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n"


def scan_request(data: bytes, limits: Limits) -> RequestHead | None:
    """Read a request's head without parsing it; None when anything read is not certain
    (see the module docstring). Never raises.

    ``find() >= 0`` rather than ``in`` on bytes here: CPython's ``bytes.__contains__``
    first tries the operand as an integer and clears the TypeError that raises, which
    was 8 % of this function's time."""
    if len(data) > limits.max_message_size or data[:4] == b"SIP/":
        return None
    end = data.find(b"\r\n\r\n")
    if end <= 0:
        return None
    head = data[:end]
    # An LF-only sender, a stray CR, a folded line (§7.3.1), a control character or a
    # byte beyond ASCII (which str.strip and str.lower, in the full parser, may treat
    # otherwise than bytes do): the full parser's job.
    crlf = head.count(b"\r\n")
    if crlf != head.count(b"\n") or crlf != head.count(b"\r"):
        return None
    if not head.isascii() or len(head.translate(None, _CTL)) != len(head):
        return None
    if head.find(b"\r\n ") >= 0 or head.find(b"\r\n\t") >= 0 or crlf > limits.max_headers:
        return None
    first = head.find(b"\r\n")
    start = head if first < 0 else head[:first]
    if len(start) > limits.max_line_length:
        return None
    parts = start.split(b" ")
    if len(parts) != 3 or parts[2] != b"SIP/2.0" or parts[1].find(b":") < 0:
        return None
    method_b = parts[0]
    if _TOKEN.fullmatch(method_b) is None:
        return None
    found: list[list[re.Match[bytes]]] = [[], [], [], [], []]
    for m in _ECHOED.finditer(head):
        found[_slot(m.group(1))].append(m)
    vias, froms, tos, call_ids, cseqs = found
    if not vias or len(froms) != 1 or len(tos) != 1 or len(call_ids) != 1 or len(cseqs) != 1:
        return None
    maxlen = limits.max_line_length
    if len(head) > maxlen and any(m.end() - m.start() - 2 > maxlen for g in found for m in g):
        return None
    if not call_ids[0].group(2).strip() or not froms[0].group(2).strip():
        return None
    cseq = cseqs[0].group(2).split()
    if len(cseq) != 2 or cseq[1] != method_b or not cseq[0].isdigit():
        return None
    if len(cseq[0]) > 10 or int(cseq[0]) >= 2**31:  # §8.1.1.5
        return None
    to_value = tos[0].group(2).rstrip(b" \t")  # what Headers gives: stripped
    tag = _to_tag(to_value)
    if tag == _UNSURE:
        return None
    via = _top_via(vias[0].group(2))
    if via is None:
        return None
    return RequestHead(
        method=method_b.decode("ascii"),
        to_tag=None if tag is None else tag.decode("utf-8", "surrogateescape"),
        via=via,
        via_lines=[_line(m) for m in vias],
        from_line=_line(froms[0]),
        to_line=_line(tos[0]),
        to_value=to_value,
        call_id_line=_line(call_ids[0]),
        cseq_line=_line(cseqs[0]),
    )


def to_aor(to_value: bytes) -> str | None:
    """The address-of-record a REGISTER with this To value names (RFC 3261 §10.3: the To
    header holds it), keyed as the registrar keys it after the full parse
    (``policy.registrar.aor_of``, ``sip.uri.aor_key`` of the To URI), or None when the
    full parser refuses the value. The key must be the one the held calls are indexed
    by (``app/calls.py`` ``by_aor``). ``to_value`` comes from ``scan_request``, which
    has checked that the head is ASCII without control characters.

    The common forms (``<sip:user@host>``, a display name, ``sips``, a port, URI
    parameters) are read by one regular expression (~0.7 µs): NameAddr.parse costs
    ~3 µs, a fifth of a shed REGISTER. Anything else (a %-escape, a tel URI, header
    parameters after ``>``...) is left to the parser itself: the key agrees with the
    full path by construction there (``tests/sip/test_scan.py`` checks both)."""
    m = _PLAIN_TO.fullmatch(to_value)
    if m is None:
        return _parsed_aor(to_value)
    user = 1 if m.start(1) >= 0 else 3
    # §10.3 step 5 (URI.aor): sips is sip, no port, no parameters, the host lower-cased.
    return (b"sip:" + m.group(user) + b"@" + m.group(user + 1).lower()).decode("ascii")


def _parsed_aor(to_value: bytes) -> str | None:
    try:
        return aor_key(NameAddr.parse(to_value.decode("ascii")).uri)
    except (ParseError, ValueError):
        return None


def ack_with(data: bytes, marker: bytes) -> bool:
    """Is ``data`` an ACK with ``marker`` in its head? One search, no scan: how the
    overload path drops the ACKs of its own 503s by their To tag (the UA copies the To
    of the response into the ACK, RFC 3261 §17.1.1.3)."""
    if not data.startswith(b"ACK "):
        return False
    end = data.find(b"\r\n\r\n")
    return data.find(marker, 0, end if end >= 0 else len(data)) >= 0


def _slot(name: bytes) -> int:
    """Where ``scan_request`` files a header ``_ECHOED`` matched: 0 Via, 1 From, 2 To,
    3 Call-ID, 4 CSeq. The first letter tells, but for c (Call-ID or CSeq), told apart by
    length: integer work, not the lower-casing and the dict lookup it replaces."""
    first = name[0] | 0x20  # ASCII lower case
    if first == 0x76:  # v
        return 0
    if first == 0x66:  # f
        return 1
    if first == 0x74:  # t
        return 2
    if first == 0x69 or len(name) == 7:  # i, call-id
        return 3
    return 4  # cseq


def _line(m: re.Match[bytes]) -> bytes:
    return m.group(0)[2:]  # as it came, as make_response copies it


def _top_via(value: bytes) -> Via | None:
    """The first Via line's value, parsed, when it holds exactly one ASCII value."""
    if value.find(b",") >= 0 or not value.isascii():
        return None
    try:
        return parse_via(value.decode("ascii"))  # not memoised: see parse_via
    except (ParseError, ValueError):
        return None


def _to_tag(value: bytes) -> bytes | None:
    """The ``tag`` parameter of a To value (RFC 3261 §20.39), None when it has none, or
    _UNSURE when that cannot be told without the name-addr parser. Header parameters
    follow the ``>`` of a name-addr, or the URI of an addr-spec (which, with parameters of
    its own, must be in angle brackets, §20.10); the cut is made where ``NameAddr.parse``
    makes it, and the parameters are split as ``parse_params`` splits them."""
    lt = value.find(b"<")
    if lt >= 0:
        display = value[:lt].strip(b" \t")
        if display.find(b'"') >= 0 and not (
            len(display) >= 2
            and display.count(b'"') == 2
            and display.startswith(b'"')
            and display.endswith(b'"')
            and display.find(b"\\") < 0
        ):
            return _UNSURE  # a quoted '<' or an escaped quote: the parser's job
        gt = value.find(b">", lt)
        if gt < 0:
            return _UNSURE
        tail = value[gt + 1 :].strip(b" \t")
        if tail and not tail.startswith(b";"):
            return _UNSURE
    elif value.find(b'"') >= 0 or value.find(b">") >= 0:
        return _UNSURE
    else:
        semi = value.find(b";")
        tail = value[semi:] if semi >= 0 else b""
    tag: bytes | None = None
    seen = False
    for part in tail[1:].split(b";") if tail else ():
        part = part.strip(b" \t")
        if not part:
            continue
        name, eq, param = part.partition(b"=")
        name = name.strip(b" \t").lower()
        if not name:
            return _UNSURE  # the full parser refuses an empty parameter name
        if name == b"tag":
            param = param.strip(b" \t")
            if seen or not eq or not param:
                return _UNSURE  # twice, or no value: leave the meaning to the parser
            seen, tag = True, param
    return tag
