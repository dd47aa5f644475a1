"""SIP URIs (RFC 3261 §19.1) and the name-addr form used by From/To/Contact/Route (§20.10).

Parsing is strict enough to reject what cannot be routed (400) and lenient about the rest:
unknown parameters are kept, in order, and written back as they came.
"""

from __future__ import annotations

import re
import string

from sipwake.sip.errors import ParseError
from sipwake.sip.memo import Memo

# Parameter values: None for a flag parameter such as ";lr".
Params = dict[str, str | None]

_BAD_HOST_CHAR = re.compile(r"[ \t<>\"']")
_BAD_URI_CHAR = re.compile(r'[ \t<>"]')
_BAD_OPAQUE_CHAR = re.compile(r"[ \t<>]")
_SCHEME = re.compile(r"[a-z0-9+.-]+")  # RFC 3986 §3.1, lower-cased already
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-_.!~*'()")  # §25.1
_HEX = frozenset(string.hexdigits)


def parse_params(text: str, what: str) -> Params:
    """Parse ``;a=b;c`` (the leading ';' already removed). Names are case-insensitive
    (RFC 3261 §19.1.4), so they are lowercased; values keep their case."""
    params: Params = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise ParseError(f"empty parameter name in {what}")
        params[name] = value.strip() if eq else None
    return params


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def split_hostport(text: str, what: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` where host may be ``[IPv6]`` (RFC 3261 §25.1 hostport)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {what}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ParseError(f"bad host in {what}")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = text.partition(":")
    if not host or _BAD_HOST_CHAR.search(host):
        raise ParseError(f"bad host in {what}")
    if not port_text:
        if text.endswith(":"):
            raise ParseError(f"bad port in {what}")
        return host, None
    if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        raise ParseError(f"bad port in {what}")
    return host, int(port_text)


_URI_FIELDS = ("scheme", "host", "user", "password", "port", "params", "headers", "opaque")


class URI:
    """A parsed URI. ``sip``/``sips`` URIs are split into parts; other schemes (``tel``,
    ``urn``, ``https``...) keep their text in ``opaque``. A plain class, not a dataclass:
    mypyc compiles its hand-written ``__init__`` (sip/flows.py Flow)."""

    __slots__ = ("headers", "host", "opaque", "params", "password", "port", "scheme", "user")

    scheme: str
    host: str
    user: str | None
    password: str | None
    port: int | None
    params: Params
    headers: str | None
    opaque: str | None

    def __init__(
        self,
        scheme: str,
        host: str = "",
        user: str | None = None,
        *,
        password: str | None = None,
        port: int | None = None,
        params: Params | None = None,
        headers: str | None = None,
        opaque: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.user = user
        self.password = password
        self.port = port
        self.params = {} if params is None else params
        self.headers = headers
        self.opaque = opaque

    def _key(self) -> tuple[object, ...]:
        return (
            self.scheme, self.host, self.user, self.password, self.port, self.params,
            self.headers, self.opaque,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, URI):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable (params)

    def __repr__(self) -> str:
        return (
            "URI("
            + ", ".join(
                f"{name}={value!r}" for name, value in zip(_URI_FIELDS, self._key(), strict=True)
            )
            + ")"
        )

    @classmethod
    def parse(cls, text: str) -> URI:
        return _URI_MEMO.parsed(text, _parse_uri).copy()

    def copy(self) -> URI:
        """A URI equal to this one that shares nothing mutable with it."""
        return URI(
            self.scheme,
            self.host,
            self.user,
            password=self.password,
            port=self.port,
            params=dict(self.params) if self.params else None,
            headers=self.headers,
            opaque=self.opaque,
        )

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        if self.params:
            out.append(format_params(self.params))
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)

    @property
    def transport(self) -> str | None:
        t = self.params.get("transport")
        return t.lower() if t else None

    def aor(self) -> str:
        """Address-of-record key: ``sip:user@host`` without port or params (RFC 3261 §10.3
        step 5 compares AoRs after this canonicalisation)."""
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        scheme = "sip" if self.scheme == "sips" else self.scheme
        return (
            f"{scheme}:{self.user}@{self.host}"
            if self.user is not None
            else f"{scheme}:{self.host}"
        )


def _parse_uri(text: str) -> URI:
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme or not rest:
        raise ParseError(f"bad URI {text[:60]!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        if not _SCHEME.fullmatch(scheme):
            raise ParseError(f"bad URI scheme {scheme[:20]!r}")
        if _BAD_OPAQUE_CHAR.search(rest):
            raise ParseError(f"bad URI {text[:60]!r}")
        return URI(scheme=scheme, opaque=rest)
    if _BAD_URI_CHAR.search(rest):
        raise ParseError(f"bad SIP URI {text[:60]!r}")
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, pcolon, pw = userinfo.partition(":")
        if pcolon:
            password = pw
        if not user:
            raise ParseError("empty user part in SIP URI")
    headers = None
    q = rest.find("?")
    if q >= 0:
        rest, headers = rest[:q], rest[q + 1 :]
    hostport, semi, ptext = rest.partition(";")
    host, port = split_hostport(hostport, "SIP URI")
    params = parse_params(ptext, "SIP URI") if semi else {}
    return URI(
        scheme, host.lower(), user, password=password, port=port, params=params, headers=headers
    )


def aor_key(uri: URI) -> str:
    """The address-of-record key of a To URI, as the registrar stores bindings under it
    (RFC 3261 §10.3 step 5): ``URI.aor`` (sips becomes sip, the host lower-cased by the
    parser, no port or parameters), the user keeping its case but with %-escapes of
    unreserved characters decoded, since §19.1.4 makes them equal to the literal."""
    if uri.opaque is None and uri.user is not None and "%" in uri.user:
        uri = URI(uri.scheme, uri.host, _unescape_unreserved(uri.user))
    return uri.aor()


def _unescape_unreserved(user: str) -> str:
    """Decode %XX of RFC 3261 §25.1 unreserved characters; upper-case the other escapes."""
    out: list[str] = []
    i = 0
    while i < len(user):
        hex_text = user[i + 1 : i + 3]
        if user[i] == "%" and len(hex_text) == 2 and all(h in _HEX for h in hex_text):
            decoded = chr(int(hex_text, 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + hex_text.upper())
            i += 3
        else:
            out.append(user[i])
            i += 1
    return "".join(out)


def _find_unquoted(text: str, chars: str, start: int = 0) -> int:
    """Index of the first char of ``chars`` outside double quotes, or -1."""
    in_quotes = False
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c in chars:
            return i
        i += 1
    return -1


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header value, honouring quotes and <...> (RFC 3261 §7.3.1)."""
    if "," not in value:
        return [value.strip()] if value.strip() else []
    if '"' not in value and "<" not in value:
        # No quoted string or <URI> that could hide a comma (Via lists, option tags).
        return [p for p in (part.strip() for part in value.split(",")) if p]
    out: list[str] = []
    depth = 0
    in_quotes = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


class NameAddr:
    """``"Display" <uri>;params`` or ``uri;params`` (RFC 3261 §20.10: without angle brackets,
    parameters after the URI belong to the header, not the URI). Plain class: see URI."""

    __slots__ = ("display", "params", "uri", "wildcard")

    uri: URI
    display: str | None
    params: Params
    wildcard: bool  # Contact: * (RFC 3261 §10.2.2)

    def __init__(
        self,
        uri: URI,
        display: str | None = None,
        params: Params | None = None,
        wildcard: bool = False,
    ) -> None:
        self.uri = uri
        self.display = display
        self.params = {} if params is None else params
        self.wildcard = wildcard

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (
            self.uri == other.uri
            and self.display == other.display
            and self.params == other.params
            and self.wildcard == other.wildcard
        )

    __hash__ = None  # type: ignore[assignment]  # mutable (params)

    def __repr__(self) -> str:
        return (
            f"NameAddr(uri={self.uri!r}, display={self.display!r}, params={self.params!r}, "
            f"wildcard={self.wildcard!r})"
        )

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        return _NAMEADDR_MEMO.parsed(text, _parse_nameaddr).copy()

    def copy(self) -> NameAddr:
        """A name-addr equal to this one that shares nothing mutable with it."""
        return NameAddr(
            self.uri.copy(),
            self.display,
            dict(self.params) if self.params else None,
            self.wildcard,
        )

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        display = f'"{_quote(self.display)}" ' if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def _parse_nameaddr(text: str) -> NameAddr:
    text = text.strip()
    if text == "*":
        return NameAddr(uri=URI("sip"), wildcard=True)
    lt = _find_unquoted(text, "<")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise ParseError("unterminated <...> in name-addr")
        display_text = text[:lt].strip()
        display: str | None = None
        if display_text:
            if display_text.startswith('"'):
                if len(display_text) < 2 or not display_text.endswith('"'):
                    raise ParseError("bad quoted display name")
                display = _unquote(display_text[1:-1])
            else:
                display = display_text
        uri = URI.parse(text[lt + 1 : gt])
        rest = text[gt + 1 :].strip()
    else:
        semi = text.find(";")
        uri_text, rest = (text, "") if semi < 0 else (text[:semi], text[semi:])
        if not uri_text.strip():
            raise ParseError("empty name-addr")
        if "?" in uri_text or "," in uri_text:
            # RFC 3261 §20.10: such a URI must be in <>; RFC 4475 §3.1.2.13 "regbadct".
            raise ParseError("URI with ? or , outside <...>")
        uri = URI.parse(uri_text)
        display = None
    if rest:
        if not rest.startswith(";"):
            raise ParseError("junk after URI in name-addr")
        params = parse_params(rest[1:], "name-addr")
    else:
        params = {}
    return NameAddr(uri=uri, display=display, params=params)


def _unquote(text: str) -> str:
    if "\\" not in text:
        return text
    out = []
    it = iter(text)
    for c in it:
        out.append(next(it, "") if c == "\\" else c)
    return "".join(out)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


_URI_MEMO: Memo[URI] = Memo()
_NAMEADDR_MEMO: Memo[NameAddr] = Memo()
