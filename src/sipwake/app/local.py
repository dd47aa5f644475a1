"""Requests addressed to the server itself, and the answers for what is not served yet.

OPTIONS to one of our domains or addresses is a keep-alive ping: 200 with what we support
(RFC 3261 §11.2). Everything else gets the error that fits (RFC 3261 §8.2.1, §21.4).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

from sipwake.app.engine import Incoming
from sipwake.sip.message import Response
from sipwake.transport.flow import Flow

# RFC 3261 §27.4 and the later method RFCs.
KNOWN_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER "
    "MESSAGE UPDATE".split()
)
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, PRACK, MESSAGE"


class LocalApp:
    """The application for the foundation milestone: ping answering and clean refusals."""

    def __init__(self, domains: Iterable[str], own_hosts: Iterable[str] = ()) -> None:
        self.domains = {d.lower() for d in domains}
        self.own_hosts = {h.strip("[]").lower() for h in own_hosts} | self.domains

    def add_own_host(self, host: str) -> None:
        self.own_hosts.add(host.strip("[]").lower())

    def is_for_us(self, incoming: Incoming) -> bool:
        uri = incoming.request.ruri
        return uri.host.strip("[]").lower() in self.own_hosts

    def on_request(self, incoming: Incoming) -> Awaitable[None] | None:
        req = incoming.request
        method = req.method
        if method == "ACK":
            return None  # an ACK for a 2xx we never sent: nothing to do (§17.2.3)
        if method not in KNOWN_METHODS:
            incoming.respond(501, extra=[("Allow", ALLOW)])  # §21.5.2
            return None
        uri = req.ruri
        if uri.scheme not in ("sip", "sips"):
            incoming.respond(416)  # §21.4.16 Unsupported URI Scheme
            return None
        for_us = self.is_for_us(incoming)
        if method == "OPTIONS" and for_us and uri.user is None:
            incoming.respond(
                200,
                extra=[
                    ("Allow", ALLOW),
                    ("Accept", "application/sdp"),
                    ("Supported", "path, outbound, gruu"),
                ],
            )
            return None
        if req.max_forwards == 0:
            incoming.respond(483)  # §16.3 step 3
            return None
        if not for_us:
            incoming.respond(403, "Relaying Denied")
            return None
        # A user of ours, but no registrar/location service in this build: not found.
        incoming.respond(404)
        return None

    def on_cancel(self, incoming: Incoming, invite_txn_id: str | None) -> None:
        # Nothing is pending here, so nothing to cancel (RFC 3261 §9.2).
        incoming.respond(481)

    def on_response(self, response: Response, txn_id: str) -> None:
        return None

    def on_stray_response(self, response: Response, flow: Flow) -> None:
        return None

    def on_timeout(self, txn_id: str) -> None:
        return None

    def on_terminated(self, txn_id: str) -> None:
        return None
