"""Bytes <-> messages: datagram parsing and a stream framer for TCP/TLS (RFC 3261 §7, §18.3).

Everything here is bounded by ``Limits``: an oversize message, an over-long line or too many
headers is a ParseError (so a 400/513 or a dropped datagram), never unbounded memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from sipwake.sip.errors import MessageTooLarge, ParseError, VersionNotSupported
from sipwake.sip.headers import COMPACT, Headers
from sipwake.sip.message import SIP_VERSION, Request, Response


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits for incoming messages."""

    max_message_size: int = 65535  # one UDP datagram; a stream message may not exceed it either
    max_headers: int = 200
    max_line_length: int = 8192


DEFAULT_LIMITS: Final = Limits()

_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")  # RFC 3261 §25.1 token
_COMPACT = COMPACT


def _is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def _split_lines(head: str) -> list[str]:
    if "\r" not in head:
        return head.split("\n")  # LF-only sender: be liberal in what we accept (§7.5)
    lines = head.split("\r\n")
    if head.count("\n") != len(lines) - 1:
        return head.replace("\r\n", "\n").split("\n")
    return lines


def _lf_sender(data: bytes | bytearray, end: int) -> bool:
    """True when the start line ends in a bare LF and a LF-only blank line comes before the
    CRLFCRLF at ``end``: that earlier blank line ends the head, and the CRLFCRLF belongs to
    the body or to trailing bytes. Checking the first line keeps the CRLF fast path to one
    short search (a full search for LFLF costs ~1 us on a typical INVITE)."""
    nl = data.find(b"\n")
    if nl <= 0 or data[nl - 1] == 13:
        return False
    return data.find(b"\n\n", 0, end) >= 0


def parse_head(head: str, limits: Limits = DEFAULT_LIMITS) -> tuple[str, list[list[Any]]]:
    """Split the header block into the start line and header entries (see Headers)."""
    start, entries, _ = parse_head_indexed(head, limits)
    return start, entries


def parse_head_indexed(
    head: str, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, list[list[Any]], dict[str, list[list[Any]]]]:
    """``parse_head`` plus the header index (key -> its entries in order, see Headers),
    built in the same pass: every message is looked up, so Headers would build it anyway,
    in a second loop over the entries."""
    lines = _split_lines(head)
    if len(lines) - 1 > limits.max_headers:
        raise ParseError("too many header lines")
    maxlen = limits.max_line_length
    entries: list[list[Any]] = []
    index: dict[str, list[list[Any]]] = {}
    append = entries.append
    compact = _COMPACT
    start = lines[0]
    if len(start) > maxlen:
        raise ParseError("start line too long")
    for line in lines[1:]:
        if len(line) > maxlen:
            raise ParseError("header line too long")
        if not line:
            raise ParseError("empty line inside header block")
        c = line[0]
        if c in {" ", "\t"}:
            # Folded continuation (RFC 3261 §7.3.1): joined with one space; the unfolded
            # line is what gets written back.
            if not entries:
                raise ParseError("continuation line before any header")
            prev = entries[-1]
            prev[1] = prev[1].rstrip() + " " + line.strip()
            prev[2] = None
            if len(prev[1]) > maxlen:
                raise ParseError("header line too long")
            continue
        colon = line.find(":")
        if colon <= 0:
            raise ParseError("header line without name and colon")
        key = line[:colon].rstrip().lower()
        key = compact.get(key, key)
        entry = [key, line, None]
        append(entry)
        # A folded continuation changes this same list in place, so the index stays true.
        same = index.get(key)
        if same is None:
            index[key] = [entry]
        else:
            same.append(entry)
    return start, entries, index


def parse_message(
    data: bytes, limits: Limits = DEFAULT_LIMITS, *, stream: bool = False
) -> Request | Response:
    """Parse one whole message.

    For a datagram (``stream=False``) bytes beyond Content-Length are discarded and a
    Content-Length larger than what arrived is a ParseError (RFC 3261 §18.3). The stream
    framer passes exactly one framed message.
    """
    if len(data) > limits.max_message_size:
        raise MessageTooLarge(f"{len(data)} bytes")
    # Be liberal: tolerate leading CRLFs before the start line (RFC 3261 §7.5).
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0 and not _lf_sender(data, end):
        head_b, body = data[:end], data[end + 4 :]
    else:
        end = data.find(b"\n\n")
        if end < 0:
            if b"\n" not in data.rstrip(b"\r\n"):
                raise ParseError("no header block")
            head_b, body = data.rstrip(b"\r\n"), b""
        else:
            head_b, body = data[:end], data[end + 2 :]
    head = head_b.decode("utf-8", "surrogateescape")
    start, entries, index = parse_head_indexed(head, limits)
    msg = _make(start)
    headers = Headers._from_parsed(entries, index)
    msg.headers = headers
    clen = msg.content_length
    if clen is None:
        if stream:
            raise ParseError("missing Content-Length on a stream transport")
    elif clen < len(body):
        body = body[:clen]
    elif clen > len(body):
        raise ParseError("body shorter than Content-Length")
    msg.body = body
    return msg


def _make(start: str) -> Request | Response:
    if start.startswith("SIP/"):
        version, _, rest = start.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != SIP_VERSION:
            raise ParseError("bad SIP version in status line")
        if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
            raise ParseError("bad status code")
        return Response(int(code), reason, Headers())
    parts = start.split(" ")
    if len(parts) != 3:
        raise ParseError("bad request line")
    method, uri, version = parts
    if not _is_token(method):
        raise ParseError("bad method")
    if version != SIP_VERSION:
        if version.upper().startswith("SIP/") and version.upper() != SIP_VERSION:
            raise VersionNotSupported(version)
        raise ParseError("bad SIP version in request line")
    if not uri or ":" not in uri:
        raise ParseError("bad Request-URI")
    return Request(method, uri, Headers())


class Ping:
    """RFC 5626 §4.4.1 keep-alive: a double CRLF from the peer, to be answered with CRLF."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PING"


PING: Final = Ping()
PONG: Final = b"\r\n"


class StreamFramer:
    """Cut a byte stream (TCP/TLS) into messages by Content-Length (RFC 3261 §18.3).

    ``feed`` returns complete message bytes and PING markers. A framing error (no or bad
    Content-Length, oversize message) raises ParseError; the stream cannot be resynchronised
    and the caller closes the connection. The buffer never holds more than one maximal
    message plus one read.
    """

    __slots__ = ("_buf", "limits")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | Ping]:
        buf = self._buf
        buf += data
        out: list[bytes | Ping] = []
        limit = self.limits.max_message_size
        while buf:
            # Keep-alives and stray CRLFs between messages (RFC 5626 §3.5.1).
            if buf[0] in (13, 10):
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    out.append(PING)
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break  # maybe the start of a ping
                del buf[: 2 if buf.startswith(b"\r\n") else 1]
                continue
            end = buf.find(b"\r\n\r\n")
            sep = 4
            if end < 0 or _lf_sender(buf, end):
                lf_end = buf.find(b"\n\n", 0, end if end >= 0 else len(buf))
                if lf_end >= 0:
                    end, sep = lf_end, 2
            if end < 0:
                if len(buf) > limit:
                    raise MessageTooLarge("header block exceeds the message size limit")
                break
            clen = _content_length(bytes(buf[:end]))
            total = end + sep + clen
            if total > limit:
                raise MessageTooLarge(f"{total} bytes")
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out


def _content_length(head: bytes) -> int:
    """Find Content-Length (or compact ``l``) in a raw header block."""
    found: int | None = None
    for line in head.split(b"\n"):
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].strip().lower()
        if name in {b"content-length", b"l"}:
            value = line[colon + 1 :].strip()
            if not value.isdigit() or len(value) > 10:
                raise ParseError("bad Content-Length")
            if found is not None and found != int(value):
                raise ParseError("conflicting Content-Length headers")
            found = int(value)
    if found is None:
        raise ParseError("missing Content-Length on a stream transport")
    return found
