"""Signed, single-use decline tokens for the push payload's ``decline_url``.

When a call is held for a sleeping phone, the VoIP push carries a URL the app may POST to
(user busy, or declined on the lock screen) instead of waking SIP up. Whoever holds the URL
can end that device's branch, so the token is a capability: it names the call and the
device, expires with the held call, is MACed with a server secret, and may be used once.

Layout (one base64url string, no padding, so it sits in a query string unescaped)::

    version:1 | expires_at:8 (uint64 seconds, big-endian) | sha256(call_id)[:12]
    | len(nonce):1 | nonce | device (UTF-8, rest)  || HMAC-SHA256(secret, ...)[:16]

The call id travels as a 96-bit hash only: the URL path already carries it, and a second
preimage of 96 bits is out of reach, so the token stays bound to one call while FCM's long
registration tokens (the device) still fit the 4 KB push limit. The MAC is truncated to
128 bits, the floor NIST SP 800-107 §5.3.4 allows for HMAC tags.

Pure: no clock and no randomness here. The caller passes ``now`` and a fresh ``nonce``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import struct
from dataclasses import dataclass
from urllib.parse import quote

VERSION = 1
MAC_LEN = 16
CALL_HASH_LEN = 12
MAX_TOKEN_CHARS = 2048  # refuse to decode anything bigger: no work for junk input
_HEAD = struct.Struct(">BQ")
_DOMAIN = b"sipwake-decline\x00"  # domain separation: this secret may sign other things

# Reasons carried by DeclineError, short slugs fit for a metrics label.
BAD_TOKEN = "bad_token"
EXPIRED = "expired"
WRONG_CALL = "wrong_call"
REPLAYED = "replayed"


class DeclineError(Exception):
    """A token that does not authorise this decline; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeclineResult:
    """What the decline service answers the API (api/routes.py): 200 done, 403 token
    refused (``message``: one of the reason slugs above), 404 unknown or ended call. Kept
    here, in the inner ring, so app/ can build it without importing api/."""

    status: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class DeclineClaim:
    """What a valid token grants: decline ``call_id`` on ``device`` until ``expires_at``."""

    call_id: str
    device: str
    expires_at: float
    nonce: str


def decline_path(call_id: str, token: str) -> str:
    """Path and query of the decline URL (api/routes.py serves it). Call-IDs may hold any
    ``word`` character of RFC 3261 §25.1, ``/`` included, so the id is fully escaped."""
    return f"/v1/calls/{quote(call_id, safe='')}/decline?t={token}"


def _call_hash(call_id: str) -> bytes:
    return hashlib.sha256(call_id.encode("utf-8", "surrogateescape")).digest()[:CALL_HASH_LEN]


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + payload, hashlib.sha256).digest()[:MAC_LEN]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_token(secret: bytes, call_id: str, device: str, expires_at: float, nonce: str) -> str:
    """A token letting ``device`` decline ``call_id`` once before ``expires_at`` (seconds,
    the caller's wall clock; stored whole, rounded down so it never outlives the call)."""
    if not secret:
        raise ValueError("decline secret must not be empty")
    if expires_at < 0:
        raise ValueError("expires_at must be >= 0")
    raw_nonce = nonce.encode("utf-8")
    if not 1 <= len(raw_nonce) <= 255:
        raise ValueError("nonce must be 1..255 bytes")
    payload = b"".join(
        (
            _HEAD.pack(VERSION, int(expires_at)),
            _call_hash(call_id),
            bytes((len(raw_nonce),)),
            raw_nonce,
            device.encode("utf-8"),
        )
    )
    token = _b64(payload + _mac(secret, payload))
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError("device identifier too long for a decline token")
    return token


def _decode(token: str) -> bytes | None:
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    # The decoder skips stray characters and ignores the unused low bits of the last
    # character: demand the canonical spelling so one token has exactly one form.
    return raw if _b64(raw) == token else None


def check_token(secret: bytes, token: str, call_id: str, now: float) -> DeclineClaim:
    """The claim of a valid token for ``call_id`` (the id from the URL), else DeclineError
    403. Does not record the use: pair with :meth:`UsedTokens.use`."""
    if not secret:
        raise ValueError("decline secret must not be empty")
    raw = _decode(token)
    fixed = _HEAD.size + CALL_HASH_LEN + 1
    if raw is None or len(raw) < fixed + MAC_LEN:
        raise DeclineError(403, BAD_TOKEN)
    payload, tag = raw[:-MAC_LEN], raw[-MAC_LEN:]
    if not hmac.compare_digest(tag, _mac(secret, payload)):
        raise DeclineError(403, BAD_TOKEN)
    # From here on the payload is ours; a malformed one means a format change, not forgery.
    version, expires = _HEAD.unpack_from(payload)
    nonce_len = payload[fixed - 1]
    if version != VERSION or len(payload) < fixed + nonce_len:
        raise DeclineError(403, BAD_TOKEN)
    if not hmac.compare_digest(payload[_HEAD.size : fixed - 1], _call_hash(call_id)):
        raise DeclineError(403, WRONG_CALL)
    if now >= expires:
        raise DeclineError(403, EXPIRED)
    try:
        nonce = payload[fixed : fixed + nonce_len].decode("utf-8")
        device = payload[fixed + nonce_len :].decode("utf-8")
    except UnicodeDecodeError:
        raise DeclineError(403, BAD_TOKEN) from None
    return DeclineClaim(call_id, device, float(expires), nonce)


class UsedTokens:
    """Tokens already spent, each remembered until it would have expired anyway.

    Bounded: at ``max_entries`` the entry closest to expiry is forgotten first. A replay of
    a forgotten token is harmless in practice: the branch it named has ended, so the decline
    finds nothing to end (404). Unbounded memory, fed by a flood of valid tokens, is not.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._seen: set[DeclineClaim] = set()
        self._heap: list[tuple[float, int, DeclineClaim]] = []
        self._seq = 0  # tie-breaker: claims themselves are not ordered

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, claim: DeclineClaim, now: float) -> bool:
        """Record ``claim`` as spent; False when it already was (a replay: answer 403)."""
        self._expire(now)
        if claim in self._seen:
            return False
        while len(self._seen) >= self.max_entries:
            _, _, oldest = heapq.heappop(self._heap)
            self._seen.discard(oldest)
        self._seq += 1
        self._seen.add(claim)
        heapq.heappush(self._heap, (claim.expires_at, self._seq, claim))
        return True

    def _expire(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, claim = heapq.heappop(heap)
            self._seen.discard(claim)
