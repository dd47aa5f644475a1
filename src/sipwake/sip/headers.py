"""Header multimap and the typed views a proxy reads (Via, CSeq).

Header lines are kept as they arrived, so serialising an unmodified message writes unknown
headers back byte-for-byte. Names are case-insensitive and compact forms map to full names
at parse time (RFC 3261 §7.3.1, §7.3.3). Typed views are parsed only when asked and cached
until that header changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sipwake.sip.errors import ParseError
from sipwake.sip.memo import Memo
from sipwake.sip.uri import Params, format_params, parse_params, split_header_values, split_hostport

T = TypeVar("T")

# RFC 3261 §7.3.3 and later RFCs: compact form -> canonical lower-case name.
COMPACT: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",  # RFC 6665
    "u": "allow-events",  # RFC 6665
    "r": "refer-to",  # RFC 3515
    "b": "referred-by",  # RFC 3892
    "x": "session-expires",  # RFC 4028
    "a": "accept-contact",  # RFC 3841
    "j": "reject-contact",  # RFC 3841
    "d": "request-disposition",  # RFC 3841
    "y": "identity",  # RFC 8224
}

# Display names used when we write a header ourselves.
CANONICAL: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
}


def canonical_name(key: str) -> str:
    name = CANONICAL.get(key)
    if name is None:
        name = "-".join(p.capitalize() for p in key.split("-"))
    return name


_KEYS: dict[str, str] = {}

# RFC 3261 §25.1 token.
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")

_MISS: Any = object()  # Headers.parsed: not in the cache (a view may be None)

# Cache slot of the top-Via view: it is dropped whenever "via" changes (see _invalidate).
TOP_VIA = "via#top"


def header_key(name: str) -> str:
    """Canonical lower-case key for a header name (compact forms expanded). Memoised:
    the same few dozen names are asked for on every message."""
    key = _KEYS.get(name)
    if key is None:
        low = name.strip().lower()
        key = COMPACT.get(low, low)
        if len(_KEYS) < 4096:
            _KEYS[name] = key
    return key


class Headers:
    """Ordered, case-insensitive multimap of header lines.

    Each entry is ``[key, line, value]``: ``key`` the canonical lower-case name, ``line`` the
    raw text (written back verbatim) and ``value`` the stripped value, computed on demand.
    """

    __slots__ = ("_cache", "_entries", "_index")

    def __init__(self, entries: list[list[Any]] | None = None) -> None:
        self._entries: list[list[Any]] = [] if entries is None else entries
        self._cache: dict[str, Any] = {}
        self._index: dict[str, list[list[Any]]] | None = None

    @classmethod
    def _from_parsed(
        cls, entries: list[list[Any]], index: dict[str, list[list[Any]]] | None = None
    ) -> Headers:
        """Headers over entries a parser already split (taken, not copied), with their
        index when the parser built it (``_idx``'s shape, over the same entry lists).
        Through ``__init__``, not ``cls.__new__``: mypyc cannot compile the latter."""
        headers = cls(entries)
        headers._index = index
        return headers

    def _idx(self) -> dict[str, list[list[Any]]]:
        """key -> its entries in order; built on first lookup, dropped on any change that
        is not a plain append or prepend."""
        idx = self._index
        if idx is None:
            idx = {}
            for e in self._entries:
                lst = idx.get(e[0])
                if lst is None:
                    idx[e[0]] = [e]
                else:
                    lst.append(e)
            self._index = idx
        return idx

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def _value(entry: list[Any]) -> str:
        v = entry[2]
        if v is None:
            line: str = entry[1]
            v = entry[2] = line[line.index(":") + 1 :].strip()
        return v  # type: ignore[no-any-return]

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first line with this name."""
        lst = self._idx().get(header_key(name))
        return self._value(lst[0]) if lst else default

    def get_unique(self, name: str) -> str | None:
        """Value of a header that may appear once; repeats with the same value are
        tolerated, different values are a ParseError (RFC 4475 §3.3.9 "mcl01")."""
        found: str | None = None
        for e in self._idx().get(header_key(name), ()):
            v = self._value(e)
            if found is None:
                found = v
            elif v != found:
                raise ParseError(f"conflicting {name} headers")
        return found

    def get_lines(self, name: str) -> list[str]:
        """Values of every line with this name, unsplit."""
        value = self._value
        return [value(e) for e in self._idx().get(header_key(name), ())]

    def get_all(self, name: str) -> list[str]:
        """Every value, comma-separated lists split (RFC 3261 §7.3.1)."""
        out: list[str] = []
        for v in self.get_lines(name):
            out.extend(split_header_values(v))
        return out

    def count(self, name: str) -> int:
        return len(self._idx().get(header_key(name), ()))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return header_key(name) in self._idx()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(display name as written, value) for every line, in order."""
        for e in self._entries:
            line: str = e[1]
            yield line[: line.index(":")].strip(), self._value(e)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        return [e[0] for e in self._entries]

    def parsed(self, key: str, parser: Callable[[Headers], T]) -> T:
        """Typed view of a header (``key``: canonical lower-case name), cached until that
        header is modified."""
        # get() with a sentinel, not try/except KeyError: a miss happens once per view and
        # message, and raising costs more than the lookup (issue 16: 4 % of compiled CPU).
        cache = self._cache
        value = cache.get(key, _MISS)
        if value is _MISS:
            value = cache[key] = parser(self)
        return value  # type: ignore[no-any-return]

    def _invalidate(self, key: str) -> None:
        cache = self._cache
        if cache:
            cache.pop(key, None)
            if key == "via":
                cache.pop(TOP_VIA, None)

    def seed(self, key: str, value: Any) -> None:
        """Install the typed view of ``key`` after an edit that the caller made from it,
        so it is not parsed again."""
        self._cache[key] = value

    # -- writing ---------------------------------------------------------------------------
    @staticmethod
    def _entry(name: str, value: str) -> list[Any]:
        key = header_key(name)
        display = canonical_name(key) if name == key else name
        return [key, f"{display}: {value}", value]

    def add(self, name: str, value: str) -> None:
        """Append a line."""
        e = self._entry(name, value)
        key = e[0]
        self._invalidate(key)
        self._entries.append(e)
        idx = self._index
        if idx is not None:
            lst = idx.get(key)
            if lst is None:
                idx[key] = [e]
            else:
                lst.append(e)

    def prepend(self, name: str, value: str) -> None:
        """Insert a line before the first line of that name (or first of all if none), so
        a new topmost Via/Record-Route stays grouped with the others (RFC 3261 §16.6)."""
        e = self._entry(name, value)
        key = e[0]
        self._invalidate(key)
        idx = self._idx()
        lst = idx.get(key)
        if lst is None:
            idx[key] = [e]
            self._entries.insert(0, e)
        else:
            # Identity, not equality: two lines may hold the same text.
            at = next(i for i, cur in enumerate(self._entries) if cur is lst[0])
            self._entries.insert(at, e)
            lst.insert(0, e)

    def set(self, name: str, value: str) -> None:
        """Replace all lines of this name by one, in the place of the first."""
        e = self._entry(name, value)
        key = e[0]
        self._invalidate(key)
        idx = self._idx()
        lst = idx.get(key)
        if not lst:
            self._entries.append(e)
            idx[key] = [e]
            return
        first = lst[0]
        at = next(i for i, cur in enumerate(self._entries) if cur is first)
        self._entries[at] = e
        if len(lst) > 1:
            self._entries[at + 1 :] = [x for x in self._entries[at + 1 :] if x[0] != key]
        idx[key] = [e]

    def remove(self, name: str) -> int:
        key = header_key(name)
        before = len(self._entries)
        self._entries = [e for e in self._entries if e[0] != key]
        self._invalidate(key)
        self._index = None
        return before - len(self._entries)

    def pop_first_value(self, name: str) -> str | None:
        """Remove the first comma-separated value of a header (e.g. the top Via or Route),
        dropping the line when it held only that value."""
        key = header_key(name)
        for i, e in enumerate(self._entries):
            if e[0] == key:
                values = split_header_values(self._value(e))
                self._invalidate(key)
                self._index = None
                if len(values) <= 1:
                    del self._entries[i]
                else:
                    line: str = e[1]
                    display = line[: line.index(":")].strip()
                    rest = ", ".join(values[1:])
                    self._entries[i] = [key, f"{display}: {rest}", rest]
                return values[0] if values else None
        return None

    def copy(self) -> Headers:
        return Headers._from_parsed([list(e) for e in self._entries])

    def lines(self) -> list[str]:
        return [e[1] for e in self._entries]


# ---------------------------------------------------------------------------------------
# Typed views
# ---------------------------------------------------------------------------------------


class Via:
    """One Via value (RFC 3261 §20.42), with rport (RFC 3581). Plain class: see Flow."""

    __slots__ = ("host", "params", "port", "protocol", "transport")

    transport: str
    host: str
    port: int | None
    params: Params
    protocol: str

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: Params | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.protocol = protocol

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return (
            self.transport == other.transport
            and self.host == other.host
            and self.port == other.port
            and self.params == other.params
            and self.protocol == other.protocol
        )

    __hash__ = None  # type: ignore[assignment]  # mutable (params)

    def __repr__(self) -> str:
        return (
            f"Via(transport={self.transport!r}, host={self.host!r}, port={self.port!r}, "
            f"params={self.params!r}, protocol={self.protocol!r})"
        )

    @classmethod
    def parse(cls, text: str) -> Via:
        return _VIA_MEMO.parsed(text, parse_via).copy()

    def copy(self) -> Via:
        """A Via equal to this one that shares nothing mutable with it."""
        return Via(
            self.transport,
            self.host,
            self.port,
            dict(self.params) if self.params else None,
            self.protocol,
        )

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    """``Via.parse`` without the memo: for a Via not seen again (the shed path, sip/scan.py:
    a refused request's branch is new, and a flood of them would only empty the memo)."""
    text = text.strip()
    proto, _, rest = text.partition(" ")
    if proto[:8] == "SIP/2.0/" and "/" not in proto[8:] and proto[8:] and rest:
        # The common shape, no LWS inside the protocol: skip the general path below.
        semi = rest.find(";")
        sent_by, ptext = (rest, "") if semi < 0 else (rest[:semi], rest[semi + 1 :])
        sent_by = sent_by.strip()
        if " " in sent_by or "\t" in sent_by:
            sent_by = sent_by.replace(" ", "").replace("\t", "")
        if not sent_by:
            raise ParseError("Via without sent-by")
        host, port = split_hostport(sent_by, "Via")
        params = parse_params(ptext, "Via") if ptext else {}
        return Via(proto[8:].upper(), host.lower(), port, params, "SIP/2.0")
    if proto.count("/") != 2 or proto.endswith("/") or "\t" in proto:
        # SLASH allows LWS on both sides (RFC 3261 §25.1; RFC 4475 §3.1.1.1 "wsinv":
        # "SIP  /   2.0 /UDP"): rebuild the protocol, then take the transport token.
        first = text.find("/")
        second = text.find("/", first + 1) if first >= 0 else -1
        if second < 0:
            raise ParseError("bad Via protocol")
        tail = text[second + 1 :].lstrip(" \t")
        end = 0
        while end < len(tail) and tail[end] not in " \t":
            end += 1
        proto = "".join(text[:second].split()) + "/" + tail[:end]
        rest = tail[end:]
    parts = proto.split("/")
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise ParseError("bad Via protocol")
    name, version, transport = (p.strip() for p in parts)
    if name.upper() != "SIP":
        raise ParseError("bad Via protocol")
    rest = rest.strip()
    # Tolerate LWS around ';' and ':' (RFC 4475 §3.1.1.1 "wsinv").
    semi = rest.find(";")
    sent_by, ptext = (rest, "") if semi < 0 else (rest[:semi], rest[semi + 1 :])
    sent_by = sent_by.replace(" ", "").replace("\t", "")
    if not sent_by:
        raise ParseError("Via without sent-by")
    host, port = split_hostport(sent_by, "Via")
    params = parse_params(ptext, "Via") if ptext else {}
    return Via(transport.upper(), host.lower(), port, params, f"{name.upper()}/{version}")


class CSeq:
    """The CSeq value (RFC 3261 §20.16); immutable. Plain class: see Flow."""

    __slots__ = ("method", "seq")

    seq: int
    method: str

    def __init__(self, seq: int, method: str) -> None:
        self.seq = seq
        self.method = method

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CSeq):
            return NotImplemented
        return self.seq == other.seq and self.method == other.method

    def __hash__(self) -> int:
        return hash((self.seq, self.method))

    def __repr__(self) -> str:
        return f"CSeq(seq={self.seq!r}, method={self.method!r})"

    @classmethod
    def parse(cls, text: str) -> CSeq:
        # Immutable, so the memo's CSeq itself is handed out (sip/memo.py).
        return _CSEQ_MEMO.parsed(text, _parse_cseq)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def _parse_cseq(text: str) -> CSeq:
    num, _, method = text.strip().partition(" ")
    method = method.strip()
    # RFC 3261 §8.1.1.5: a 32-bit unsigned integer less than 2**31, then the method.
    if not num.isdigit() or len(num) > 10 or int(num) >= 2**31 or not method:
        raise ParseError("bad CSeq")
    if not _TOKEN.fullmatch(method):
        raise ParseError("bad CSeq method")
    return CSeq(int(num), method)


_VIA_MEMO: Memo[Via] = Memo()
_CSEQ_MEMO: Memo[CSeq] = Memo(1024)
