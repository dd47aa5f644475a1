"""Server transactions (RFC 3261 §17.2): the record and request matching (§17.2.3)."""

from __future__ import annotations

from typing import Any, Final

from sipwake.sip.events import Dest
from sipwake.sip.headers import Headers, Via
from sipwake.sip.message import Request, Response
from sipwake.sip.transactions.client import RELEASED
from sipwake.sip.transactions.fsm import (
    PROCEEDING,
    SERVER_INVITE,
    SERVER_NON_INVITE,
    TRYING,
    Transaction,
)

MAGIC_COOKIE: Final = "z9hG4bK"  # §8.1.1.7: branch made by an RFC 3261 element

ServerKey = tuple[object, ...]  # see server_key


class ServerTransaction(Transaction):
    """One received request and the responses sent to it. ``last`` is the last response
    sent, serialised once, re-sent on request retransmissions and Timer G. For an RFC 2543
    peer, ``response_tag`` is the To tag of that response, which its ACK must carry."""

    __slots__ = ("invite", "invite_id", "key", "last", "response_tag", "rfc2543")

    def __init__(
        self, txn_id: str, request: Request, flow: Dest, key: ServerKey, rfc2543: bool
    ) -> None:
        invite = request.method == "INVITE"
        if invite:
            super().__init__(txn_id, SERVER_INVITE, PROCEEDING, request, flow)
        else:
            super().__init__(txn_id, SERVER_NON_INVITE, TRYING, request, flow)
        self.key = key  # typed for this side (see ClientTransaction.key)
        self.invite = invite
        self.rfc2543 = rfc2543
        self.last: bytes | None = None
        self.response_tag: str | None = None
        self.invite_id: str | None = None  # for a CANCEL: the INVITE transaction it matched

    def keep_response(self, response: Response) -> bytes:
        data = self.last = response.serialise()
        if self.rfc2543:
            self.response_tag = response.to.tag
        if response.status >= 200:
            # From here on retransmissions are answered from ``last`` and ACKs matched by
            # key: the request (and every object hanging off it) need not live through
            # Timers H/J/L (up to 64*T1). Memory and GC work per transaction stay small.
            self.request = RELEASED
        return data


def server_key(request: Request, method: str) -> tuple[ServerKey, bool]:
    """The key of the server transaction ``request`` belongs to, as if its method were
    ``method`` (INVITE for an ACK, or for a CANCEL looking for its INVITE), and whether the
    RFC 2543 rules made it.

    RFC 3261 peers (branch starts with the magic cookie): branch, sent-by and method
    (§17.2.3); sent-by is in the key because two clients may pick the same branch.
    RFC 2543 peers: Request-URI, From tag, Call-ID, CSeq number, method and top Via; the
    caller appends the To tag, which differs between a request and its ACK.
    Raises ParseError when the fields needed are malformed (the engine answers 400).
    """
    via = request.top_via
    key3261 = via_key(via, method)
    if key3261 is not None:
        return key3261, False
    key = (
        request.uri,
        request.from_.tag,
        request.call_id,
        request.cseq.seq,
        method,
        str(via),
    )
    return key, True


def via_key(via: Via, method: str) -> ServerKey | None:
    """The RFC 3261 key (§17.2.3) of a request with this top Via, or None when its branch
    lacks the magic cookie (an RFC 2543 peer)."""
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host, via.port, method)
    return None


_TRYING_KEYS: Final = frozenset(("via", "from", "to", "call-id", "cseq", "timestamp"))


def trying(request: Request) -> Response:
    """The 100 Trying a new INVITE server transaction sends at once (§17.2.1): Via, From,
    To (as it came: no tag is added to a 100), Call-ID, CSeq and Timestamp (§8.2.6.1)
    copied. One pass over the raw lines, as ``make_response`` would build, for every call."""
    h = request.headers
    entries: list[list[Any]] = [
        [key, line, None]
        for key, line in zip(h.keys(), h.lines(), strict=True)
        if key in _TRYING_KEYS
    ]
    entries.append(["content-length", "Content-Length: 0", "0"])
    return Response(100, "Trying", Headers._from_parsed(entries))
