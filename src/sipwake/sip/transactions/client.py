"""Client transactions (RFC 3261 §17.1): the record, and the requests a client side builds
itself (the ACK for a non-2xx final, §17.1.1.3; the CANCEL for a pending INVITE, §9.1)."""

from __future__ import annotations

from sipwake.sip.events import Dest
from sipwake.sip.headers import Headers
from sipwake.sip.message import Request, Response
from sipwake.sip.transactions.fsm import (
    CALLING,
    CLIENT_INVITE,
    CLIENT_NON_INVITE,
    TRYING,
    Transaction,
)

ClientKey = tuple[str, str]  # (top Via branch, method): §17.1.3

# What a transaction's request is replaced with once nothing needs it any more.
RELEASED = Request("RELEASED", "sip:released.invalid")


class ClientTransaction(Transaction):
    """One request sent and its responses. ``data`` is the request serialised once for
    every retransmission; ``ack`` the ACK bytes once a non-2xx final made one."""

    __slots__ = ("ack", "data", "invite", "key", "released")

    def __init__(self, txn_id: str, request: Request, dest: Dest, key: ClientKey) -> None:
        invite = request.method == "INVITE"
        if invite:
            super().__init__(txn_id, CLIENT_INVITE, CALLING, request, dest)
        else:
            super().__init__(txn_id, CLIENT_NON_INVITE, TRYING, request, dest)
        # The key lives here, typed for this side, not in Transaction: a subclass narrowing
        # an attribute's type is unsound (mypyc rejects it).
        self.key = key
        self.invite = invite
        self.data = request.serialise()
        self.ack: bytes | None = None
        self.released = False

    def release(self) -> None:
        """The final response came: keep only what the later states use (the ACK bytes,
        the key, the destination); see fsm.RELEASE."""
        self.request = RELEASED
        self.data = b""
        self.released = True


def _top_via(request: Request) -> str:
    # The first Via value as written (a line may hold several, comma-separated).
    return request.headers.get_all("via")[0]


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 response (§17.1.1.3): same
    Request-URI, Call-ID, From and CSeq number; To from the response (it carries the tag);
    one Via, equal to the INVITE's top Via, so it matches the server transaction; the
    INVITE's Route headers."""
    src = invite.headers
    h = Headers()
    h.add("Via", _top_via(invite))
    for line in src.get_lines("route"):
        h.add("Route", line)
    h.add("Max-Forwards", src.get("max-forwards") or "70")
    h.add("From", src.get("from") or "")
    h.add("To", response.headers.get("to") or src.get("to") or "")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", f"{invite.cseq.seq} ACK")
    h.add("Content-Length", "0")
    return Request("ACK", invite.uri, h)


def build_cancel(invite: Request, reason: str | None = None) -> Request:
    """A CANCEL for a pending INVITE (§9.1): Request-URI, Call-ID, To, From and the CSeq
    number of the INVITE, its top Via only (same branch: the downstream server matches the
    CANCEL to the INVITE by it, §9.2), its Route headers. ``reason`` becomes a Reason header
    (RFC 3326), e.g. ``SIP;cause=200;text="Call completed elsewhere"``."""
    src = invite.headers
    h = Headers()
    h.add("Via", _top_via(invite))
    for line in src.get_lines("route"):
        h.add("Route", line)
    h.add("Max-Forwards", "70")
    h.add("From", src.get("from") or "")
    h.add("To", src.get("to") or "")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", f"{invite.cseq.seq} CANCEL")
    if reason is not None:
        h.add("Reason", reason)
    h.add("Content-Length", "0")
    return Request("CANCEL", invite.uri, h)
