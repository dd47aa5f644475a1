"""Digest authentication, server side (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Pure: the clock (``now``), the nonce secret and any per-challenge salt come in as
arguments; nothing here keeps time or draws random numbers.

Supported: ``MD5`` and ``SHA-256`` (RFC 8760 §2), their ``-sess`` variants when a client
picks them (cheap: HA1' = H(HA1:nonce:cnonce), RFC 7616 §3.4.2), ``qop=auth`` and the
RFC 2069 no-qop form. Not supported: ``qop=auth-int`` (never offered, so a client using
it fails), ``SHA-512-256``, ``userhash`` and ``username*`` (RFC 7616 §3.4.4).

Nonces are stateless (RFC 7616 §5.5 "a nonce might be a hash of a timestamp and a
private key"): ``base64url(ts || salt || HMAC-SHA256(secret, ts || salt || realm || ip)[:16])``
with ``ts`` the issue time in microseconds (8 bytes, big-endian) and ``salt`` optional
caller-supplied random bytes (two challenges in the same microsecond would otherwise share
a nonce and therefore an ``nc`` sequence). Binding the realm means a nonce answered for
another realm is not ours.

Outcome of :func:`verify`. The nonce is checked *before* the digest:
    - a nonce that is expired or not ours (forged, secret rotated, issued to another
      address) -> STALE: a fresh challenge with ``stale=true``, never a failure. Anyone can
      invent a nonce, so counting such a request as a failed password would let a blind
      (spoofed UDP) sender lock users out; and the answer must not depend on the digest,
      or an invented nonce would become an unthrottled password oracle. RFC 7616 §3.3 says
      the server SHOULD set stale only for a right digest; we set it whatever the digest,
      which costs a client with a wrong password one more round trip, nothing more;
    - wrong digest, unknown algorithm/qop, missing cnonce/nc -> FAILED (count it);
    - right digest but an ``nc`` already seen -> STALE (RFC 7616 §3.4: a replay; many SIP
      clients also reuse a nonce with ``nc=00000001``, and a fresh nonce serves them);
    - otherwise OK.
The caller looks up HA1 for ``creds.username`` / ``creds.realm`` and
``hash_algorithm(creds.algorithm)``, and SHOULD check that ``creds.uri`` names the
Request-URI (RFC 2617 §3.2.2.5).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from sipwake.sip.errors import ParseError

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
_TS_LEN = 8
_MAC_LEN = 16
_MAX_SKEW = 5.0  # seconds a nonce may appear to come from the future (clock steps)


class NonceStatus(Enum):
    OK = "ok"
    STALE = "stale"
    INVALID = "invalid"


class AuthResult(Enum):
    OK = "ok"
    STALE = "stale"  # re-challenge with stale=true
    FAILED = "failed"  # re-challenge (or 403), and record the failure


def hash_algorithm(algorithm: str) -> str:
    """``SHA-256`` for ``sha-256-sess``: the algorithm a stored HA1 is computed with."""
    alg = algorithm.upper()
    return alg.removesuffix("-SESS")


def _hasher(algorithm: str) -> Callable[[bytes], str]:
    h = _HASHES.get(hash_algorithm(algorithm))
    if h is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return h


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password) (RFC 2617 §3.2.2.2); what a user store keeps, per algorithm.
    For ``-sess`` algorithms this is the stored part; :func:`digest_response` adds the rest."""
    return _hasher(algorithm)(f"{username}:{realm}:{password}".encode())


def digest_response(
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1) for qop ``auth`` or none."""
    h = _hasher(algorithm)
    if algorithm.upper().endswith("-SESS"):
        ha1_hex = h(f"{ha1_hex}:{nonce}:{cnonce or ''}".encode())
    ha2 = h(f"{method}:{uri}".encode())
    if qop is None:
        return h(f"{ha1_hex}:{nonce}:{ha2}".encode())
    return h(f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


# --- nonces -------------------------------------------------------------------------------


def _mac(secret: bytes, head: bytes, realm: str, client_ip: str) -> bytes:
    msg = head + b"\x00" + realm.encode() + b"\x00" + client_ip.encode()
    return hmac.new(secret, msg, hashlib.sha256).digest()[:_MAC_LEN]


def make_nonce(
    now: float, secret: bytes, realm: str, client_ip: str = "", salt: bytes = b""
) -> str:
    """A stateless nonce for ``realm`` (and ``client_ip`` when given) issued at ``now``."""
    head = int(now * 1_000_000).to_bytes(_TS_LEN, "big") + salt
    return base64.urlsafe_b64encode(head + _mac(secret, head, realm, client_ip)).decode()


def nonce_issued_at(nonce: str) -> float | None:
    """Issue time carried by a nonce (unauthenticated), or None when it cannot be decoded."""
    raw = _decode_nonce(nonce)
    return None if raw is None else int.from_bytes(raw[:_TS_LEN], "big") / 1_000_000


def _decode_nonce(nonce: str) -> bytes | None:
    if len(nonce) > 200:
        return None
    try:
        raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) >= _TS_LEN + _MAC_LEN else None


def check_nonce(
    nonce: str, now: float, secret: bytes, max_age: float, *, realm: str, client_ip: str = ""
) -> NonceStatus:
    """OK, STALE (ours but older than ``max_age``) or INVALID (forged, other realm/IP,
    undecodable, or from the future)."""
    raw = _decode_nonce(nonce)
    if raw is None:
        return NonceStatus.INVALID
    head, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
    if not hmac.compare_digest(mac, _mac(secret, head, realm, client_ip)):
        return NonceStatus.INVALID
    issued = int.from_bytes(head[:_TS_LEN], "big") / 1_000_000
    if issued > now + _MAX_SKEW:
        return NonceStatus.INVALID
    return NonceStatus.STALE if now - issued > max_age else NonceStatus.OK


# --- challenges ---------------------------------------------------------------------------


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_challenge(
    realm: str,
    now: float,
    secret: bytes,
    algorithm: str = "SHA-256",
    *,
    stale: bool = False,
    opaque: str | None = None,
    client_ip: str = "",
    salt: bytes = b"",
    nonce: str | None = None,
) -> str:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` value offering ``qop="auth"``."""
    _hasher(algorithm)
    if nonce is None:
        nonce = make_nonce(now, secret, realm, client_ip, salt)
    parts = [f"Digest realm={_quote(realm)}", f'nonce="{nonce}"']
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    parts.append(f"algorithm={algorithm}")
    parts.append('qop="auth"')
    if stale:
        parts.append("stale=true")
    return ", ".join(parts)


def challenges(
    realm: str,
    now: float,
    secret: bytes,
    algorithms: Iterable[str] = ("SHA-256", "MD5"),
    *,
    stale: bool = False,
    opaque: str | None = None,
    client_ip: str = "",
    salt: bytes = b"",
) -> list[str]:
    """One challenge per algorithm, strongest first (RFC 8760 §2.4, RFC 7616 §3.7: the
    client uses the first one it supports), all with the same nonce."""
    nonce = make_nonce(now, secret, realm, client_ip, salt)
    return [
        make_challenge(realm, now, secret, alg, stale=stale, opaque=opaque, nonce=nonce)
        for alg in algorithms
    ]


# --- credentials --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """The parameters of an ``Authorization`` / ``Proxy-Authorization`` value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"  # RFC 2617 §3.2.1: absent means MD5
    cnonce: str | None = None
    nc: str | None = None
    qop: str | None = None
    opaque: str | None = None


_TOKEN_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_BARE_RE = re.compile(r'[^\s,"]+')
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_REQUIRED = ("username", "realm", "nonce", "uri", "response")
_MAX_VALUE = 1024


def parse_authorization(value: str) -> DigestCredentials:
    """Parse ``Digest name=value, name="quoted", ...`` (RFC 3261 §25.1 credentials);
    ParseError (400) on anything else."""
    m = _TOKEN_RE.match(value, _skip_space(value, 0))
    if m is None or m.group().lower() != "digest":
        raise ParseError("Authorization scheme is not Digest")
    params: dict[str, str] = {}
    pos, n = m.end(), len(value)
    while True:
        pos = _skip_space(value, pos)
        if pos >= n:
            break
        name_m = _TOKEN_RE.match(value, pos)
        if name_m is None:
            raise ParseError("bad Authorization parameter name")
        name = name_m.group().lower()
        pos = _skip_space(value, name_m.end())
        if pos >= n or value[pos] != "=":
            raise ParseError(f"Authorization parameter {name[:20]} without value")
        pos = _skip_space(value, pos + 1)
        if pos < n and value[pos] == '"':
            text, pos = _read_quoted(value, pos)
        else:
            # A token by the grammar; read up to the next comma/space so that a sloppy
            # client's unquoted base64 nonce (with '=' / '/') still parses.
            tok = _BARE_RE.match(value, pos)
            if tok is None:
                raise ParseError(f"bad Authorization value for {name[:20]}")
            text, pos = tok.group(), tok.end()
        if name in params:
            raise ParseError(f"duplicate Authorization parameter {name[:20]}")
        if len(text) > _MAX_VALUE:
            raise ParseError(f"Authorization parameter {name[:20]} too long")
        params[name] = text
        pos = _skip_space(value, pos)
        if pos < n:
            if value[pos] != ",":
                raise ParseError("junk in Authorization header")
            pos += 1
    missing = [k for k in _REQUIRED if k not in params]
    if missing:
        raise ParseError(f"Authorization without {missing[0]}")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=params.get("algorithm", "MD5"),
        cnonce=params.get("cnonce"),
        nc=params.get("nc"),
        qop=params.get("qop"),
        opaque=params.get("opaque"),
    )


def _skip_space(value: str, pos: int) -> int:
    while pos < len(value) and value[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_quoted(value: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at ``value[pos] == '"'``; return (text, end)."""
    out: list[str] = []
    i, n = pos + 1, len(value)
    while i < n:
        c = value[i]
        if c == "\\" and i + 1 < n:
            out.append(value[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise ParseError("unterminated quoted string in Authorization header")


# --- verification -------------------------------------------------------------------------


class NonceCounter:
    """Highest ``nc`` seen per nonce, bounded LRU (RFC 7616 §3.4: the server SHOULD reject
    a repeated nc). A nonce evicted from the table cannot be replayed either: any unknown
    nonce issued no later than the newest evicted one is refused (the client gets STALE
    and a fresh nonce), so size the table for the nonces alive within ``max_age``."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._horizon = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    def advance(self, nonce: str, nc: int, issued_at: float) -> bool:
        """Record ``nc`` for ``nonce``; False when it does not exceed the highest seen."""
        entry = self._seen.get(nonce)
        if entry is None:
            if issued_at <= self._horizon:
                return False
        elif nc <= entry[0]:
            return False
        self._seen[nonce] = (nc, issued_at)
        self._seen.move_to_end(nonce)
        while len(self._seen) > self.max_entries:
            _, (_, evicted_at) = self._seen.popitem(last=False)
            self._horizon = max(self._horizon, evicted_at)
        return True


def verify(
    creds: DigestCredentials,
    method: str,
    ha1_hex: str,
    *,
    now: float,
    secret: bytes,
    max_age: float,
    counter: NonceCounter | None = None,
    client_ip: str = "",
) -> AuthResult:
    """Check a response against the stored HA1 (see the module doc for the outcomes).
    ``counter`` enables nc replay protection for qop=auth; ``client_ip`` must be the one
    the nonce was made for (or "" for both)."""
    # Nonce first (module doc): a request on a nonce we did not issue proves nothing.
    status = check_nonce(creds.nonce, now, secret, max_age, realm=creds.realm, client_ip=client_ip)
    if status is not NonceStatus.OK:
        return AuthResult.STALE
    if hash_algorithm(creds.algorithm) not in _HASHES:
        return AuthResult.FAILED
    qop = creds.qop
    nc_value = 0
    if qop is not None:
        if qop.lower() != "auth" or not creds.cnonce or creds.nc is None:
            return AuthResult.FAILED
        if not _NC_RE.fullmatch(creds.nc):
            return AuthResult.FAILED
        nc_value = int(creds.nc, 16)
    expected = digest_response(
        ha1_hex,
        creds.nonce,
        method,
        creds.uri,
        algorithm=creds.algorithm,
        qop=qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
    )
    if not hmac.compare_digest(expected.encode(), creds.response.lower().encode("utf-8")):
        return AuthResult.FAILED
    if qop is not None and counter is not None:
        issued = nonce_issued_at(creds.nonce)
        assert issued is not None  # check_nonce decoded it
        if not counter.advance(creds.nonce, nc_value, issued):
            return AuthResult.STALE
    return AuthResult.OK


# --- brute-force throttle and trusted peers ------------------------------------------------


class FailureThrottle:
    """Failed authentications per key (a source IP, or an account name) in a sliding
    window. A key with ``max_failures`` failures in the last ``window`` seconds is blocked
    until the oldest of them ages out. Memory is bounded: at most ``max_entries`` keys
    (least recently failed dropped first), each with at most ``max_failures`` timestamps."""

    def __init__(self, max_failures: int = 10, window: float = 60.0, max_entries: int = 10_000):
        if max_failures < 1 or window <= 0 or max_entries < 1:
            raise ValueError("max_failures, window and max_entries must be positive")
        self.max_failures = max_failures
        self.window = window
        self.max_entries = max_entries
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, ip: str, now: float) -> deque[float] | None:
        times = self._failures.get(ip)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[ip]
            return None
        return times

    def is_blocked(self, ip: str, now: float) -> bool:
        times = self._recent(ip, now)
        return times is not None and len(times) >= self.max_failures

    def record_failure(self, ip: str, now: float) -> None:
        times = self._recent(ip, now)
        if times is None:
            times = self._failures[ip] = deque(maxlen=self.max_failures)
        times.append(now)
        self._failures.move_to_end(ip)
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)

    def record_success(self, ip: str) -> None:
        self._failures.pop(ip, None)


class KnownSources:
    """Which source addresses authenticated as which account, and when (bounded LRU).

    The per-account failure budget blocks guesses for an account from *every* source once
    it is spent, which an attacker could use to lock the real user out; a source that
    proved the password for that account within ``ttl`` seconds is exempt from it (it
    still has its own per-source budget)."""

    def __init__(self, ttl: float = 86_400.0, max_entries: int = 100_000) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("ttl and max_entries must be positive")
        self.ttl = ttl
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, account: str, ip: str, now: float) -> None:
        key = (account, ip)
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)

    def contains(self, account: str, ip: str, now: float) -> bool:
        seen = self._seen.get((account, ip))
        return seen is not None and now - seen <= self.ttl


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedPeers:
    """PBX / trunk addresses that skip the challenge (IPv4 and IPv6 CIDRs). An IPv4-mapped
    IPv6 address (``::ffff:192.0.2.1``, as a dual-stack socket reports it) matches the IPv4
    networks. Bad CIDRs raise ValueError at construction (a configuration error)."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(c.strip(), strict=False) for c in cidrs
        )

    def contains(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.strip().strip("[]"))
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)
