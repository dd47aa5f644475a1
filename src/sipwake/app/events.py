"""What happens to a call, as typed events for whoever watches (the demo's timeline, a
per-call trace, tests): the server is observed through these, never patched.

Every event names the call by its UUID (``call_id``, the one in the push payload) and
carries ``at``, the engine's monotonic clock. Observers run synchronously on the event
loop, inside the call's turn: they must be quick and must not raise (an observer that
raises is logged and the call goes on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sipwake.sip.values import Value

log = logging.getLogger("sipwake.events")


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_id: str
    at: float
    aor: str
    sip_call_id: str  # the caller's Call-ID
    received_at: float  # when the INVITE arrived (before the callee was looked up)
    devices: int  # bindings found for the callee


@dataclass(frozen=True, slots=True)
class PushSent:
    call_id: str
    at: float
    device: str
    provider: str


@dataclass(frozen=True, slots=True)
class PushAnswered:
    call_id: str
    at: float
    device: str
    outcome: str  # delivered | token_rejected | transient | permanent
    reason: str = ""  # the provider's reason when not delivered (Unregistered, ...)


class ProvisionalSent(Value):
    """A provisional response went to the caller. An immutable value, like the others, but
    a plain class, not a dataclass: one is made per provisional relayed, and mypyc
    compiles a hand-written ``__init__`` where a dataclass's stays interpreted
    (sip/flows.py Flow)."""

    __slots__ = ("at", "call_id", "status")

    call_id: Final[str]
    at: Final[float]
    status: Final[int]

    def __init__(self, call_id: str, at: float, status: int) -> None:
        self.call_id = call_id
        self.at = at
        self.status = status

    def _items(self) -> tuple[tuple[str, object], ...]:
        return (
            ("call_id", self.call_id),
            ("at", self.at),
            ("status", self.status),
        )


@dataclass(frozen=True, slots=True)
class WakeRegister:
    """A device pushed for the call registered (and gets its branch, or INVITE+CANCEL)."""

    call_id: str
    at: float
    device: str
    late: bool  # the call had already ended


@dataclass(frozen=True, slots=True)
class BranchOpened:
    call_id: str
    at: float
    device: str
    transport: str


@dataclass(frozen=True, slots=True)
class BranchResponse:
    call_id: str
    at: float
    device: str
    status: int


@dataclass(frozen=True, slots=True)
class Declined:
    """The app declined the call from its push (the decline link): 486 or 603 for it."""

    call_id: str
    at: float
    device: str
    status: int


@dataclass(frozen=True, slots=True)
class CancelSent:
    call_id: str
    at: float
    device: str
    reason: str


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    call_id: str
    at: float
    status: int


@dataclass(frozen=True, slots=True)
class CallEnded:
    """Nothing more will happen to the call (its grace period for late devices is over)."""

    call_id: str
    at: float
    state: str


CallEvent = (
    CallStarted
    | PushSent
    | PushAnswered
    | ProvisionalSent
    | WakeRegister
    | BranchOpened
    | BranchResponse
    | Declined
    | CancelSent
    | FinalAnswer
    | CallEnded
)
Observer = Callable[[CallEvent], None]


def answered(call_id: str, at: float, status: int) -> CallEvent:
    """The event for an answer that went to the caller: provisional or final."""
    return (
        ProvisionalSent(call_id, at, status) if status < 200 else FinalAnswer(call_id, at, status)
    )


class Observers:
    """The observers of one runner."""

    __slots__ = ("_observers",)

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)

    def remove(self, observer: Observer) -> None:
        self._observers.remove(observer)

    def __bool__(self) -> bool:
        return bool(self._observers)

    def emit(self, event: CallEvent) -> None:
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                log.exception("call observer failed on %s", type(event).__name__)
