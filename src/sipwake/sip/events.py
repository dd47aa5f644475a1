"""What the transaction layer hands to its user (the TU: proxy core, registrar).

Events are immutable values in the h11/h2 style; the engine loops on ``next_event()``. A
``Dest`` is whatever the transport uses to name a flow or a next hop: the layer only asks
whether it is reliable (which decides retransmissions, RFC 3261 §17.1.1.2) and otherwise
hands it back untouched in events and outbox items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from sipwake.sip.message import Request, Response
from sipwake.sip.values import Value


class Dest(Protocol):
    """Where a message came from or goes to; opaque to the transaction layer."""

    @property
    def reliable(self) -> bool:
        """True for TCP/TLS/WS(S): no retransmissions, zero-length absorb timers."""
        ...


class RequestReceived(Value):
    """A new request for the TU. ``txn_id`` is None for an ACK that matches no server
    transaction (the ACK to a 2xx is its own end-to-end transaction, RFC 3261 §17). A plain
    class, not a dataclass: one is made per request, and mypyc compiles a hand-written
    ``__init__`` where a dataclass's stays interpreted (sip/flows.py Flow)."""

    __slots__ = ("flow", "request", "txn_id")

    request: Final[Request]
    txn_id: Final[str | None]
    flow: Final[Dest]

    def __init__(self, request: Request, txn_id: str | None, flow: Dest) -> None:
        self.request = request
        self.txn_id = txn_id
        self.flow = flow

    def _items(self) -> tuple[tuple[str, object], ...]:
        return (
            ("request", self.request),
            ("txn_id", self.txn_id),
            ("flow", self.flow),
        )


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL, in its own non-INVITE server transaction ``txn_id``; ``invite_txn_id`` is
    the INVITE server transaction it matches (§9.2), None when there is none: the TU then
    answers 481 on ``txn_id``. Answering the CANCEL (200) is the TU's job (§16.10)."""

    cancel: Request
    txn_id: str
    invite_txn_id: str | None
    flow: Dest


class ResponseReceived(Value):
    """A response for client transaction ``txn_id``. For an INVITE every 2xx is passed up,
    including retransmissions and 2xx from other forks while the transaction is Accepted
    (RFC 6026 §7.2): a proxy forwards each (§16.7 step 5). A plain class, not a dataclass,
    as RequestReceived."""

    __slots__ = ("response", "txn_id")

    response: Final[Response]
    txn_id: Final[str]

    def __init__(self, response: Response, txn_id: str) -> None:
        self.response = response
        self.txn_id = txn_id

    def _items(self) -> tuple[tuple[str, object], ...]:
        return (
            ("response", self.response),
            ("txn_id", self.txn_id),
        )


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response matching no client transaction (§17.1.3). RFC 6026 changed the handling
    of these (they could be forged): a stateful element discards them instead of forwarding
    (§18.1.2 as it updates it). Surfaced so the engine can count, log, or decide itself."""

    response: Response
    flow: Dest


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B, F (client: the TU acts as on a 408, §16.7 step 2) or H (server: the ACK
    never came) fired. A TransactionTerminated for the same id follows."""

    txn_id: str


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction is gone; its id will never appear again."""

    txn_id: str


Event = (
    RequestReceived
    | CancelReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | TransactionTerminated
)
