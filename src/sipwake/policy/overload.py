"""When to shed load: refuse new work with 503 before doing any of it.

Past its capacity a SIP server that accepts everything collapses: answers come late, the
callers retransmit (RFC 3261 §17.1.1.2), the retransmissions cost as much as new work, and
every call fails with 408 while memory grows. Answering the excess at once with
``503 Service Unavailable`` and ``Retry-After`` (RFC 3261 §21.5.4) keeps the work in
progress finishing in time; a client then retries later or elsewhere (RFC 3263 §4.3).

What is shed: only requests that *start* something — an initial INVITE, REGISTER,
MESSAGE, SUBSCRIBE or PUBLISH (no To tag). In-dialog requests, CANCEL, ACK and
retransmissions of requests already in progress keep flowing, since refusing them wastes
the work already done for their call. OPTIONS (keep-alives, monitoring) is answered
anyway: it costs less than the 503.
So does the REGISTER of a device woken for a held call (its AoR has a call waiting): the
engine asks the call table, which only the app ring knows (app/engine.py _wake_register).

When: any of these signals reaches its bound —
- ``pending``: requests received and not yet finally answered, not counting held calls
  (a backlog: the answers are late, so the callers are about to retransmit);
- ``held``: calls held while a device is woken (each holds memory for up to the hold window);
- ``lag``: how late the event loop ran a timer that was due (the CPU is saturated);
- ``delay``: how long datagrams waited in the UDP socket's kernel receive queue before we
  read them (their arrival timestamps). Datagrams wait there unseen when we fall behind:
  a long wait means callers about to retransmit (T1, 500 ms, RFC 3261 §17.1.1.2) and the
  answers from callees for calls we accepted stuck behind new requests. Shedding what
  waited too long keeps that delay short (CoDel's idea: act on the time spent in the
  queue, not on the arrival rate), and sheds about only what is over the bound: the
  reading falls back under it as soon as the cheap 503s have caught up;
- ``backlog``: how full that queue is (0..1), a last-resort bound on the memory queued.
  Linux hands a datagram's memory back only once the whole batch it came in has been
  read, so the reading stays at its peak until the queue is empty: shedding on it alone
  refused whole queues (half of a load 13 % over capacity), hence the delay.
Pure: the caller measures and passes the numbers in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

SHEDDABLE = frozenset({"INVITE", "REGISTER", "MESSAGE", "SUBSCRIBE", "PUBLISH"})
# To tag of our 503s: the ACK for such a 503 (same branch, no transaction kept for it) is
# recognised by it and dropped instead of being routed as an in-dialog request.
SHED_TAG_PREFIX = "sipwake-503-"
SHED_TAG_MARK = b";tag=" + SHED_TAG_PREFIX.encode()  # that To tag as the ACK's bytes hold it


def sheddable(method: str, to_tag: str | None) -> bool:
    """May this request be refused under overload (it starts new work)?"""
    return to_tag is None and method in SHEDDABLE


def shed_ack(method: str, to_tag: str | None) -> bool:
    """Is this the ACK of one of our 503s? No transaction was kept for the 503 (RFC 3261
    §17.2.1 would absorb this ACK in one), so it is dropped by its To tag."""
    return method == "ACK" and to_tag is not None and to_tag.startswith(SHED_TAG_PREFIX)


class Overloaded:
    """Why we are overloaded: the bound reached and the reading that reached it. Asked
    for every message while overloaded (a response too), so the sentence is written only
    when it is logged, which is once in ten seconds (app/engine.py): formatting it each
    time cost more than the rest of the decision."""

    __slots__ = ("_reading", "_text")

    def __init__(self, text: str, reading: float) -> None:
        self._text = text  # a %-template taking the reading
        self._reading = reading

    def __str__(self) -> str:
        return self._text % self._reading

    def __repr__(self) -> str:
        return f"Overloaded({self})"


_PENDING: Final = "%d requests in progress, overload.max_pending reached"
_HELD: Final = "%d held calls, overload.max_held_calls reached"
_LAG: Final = "event loop %.0f ms late > overload.max_loop_lag"
_DELAY: Final = "UDP datagrams waited %.0f ms > overload.max_udp_delay"
_BACKLOG: Final = "UDP receive queue %.0f%% full > overload.max_udp_backlog"


@dataclass(frozen=True, slots=True)
class OverloadLimits:
    max_pending: int = 2000
    max_held: int = 10_000
    max_lag: float = 0.25  # seconds
    max_delay: float = 0.15  # seconds a datagram waited in the UDP receive queue
    max_backlog: float = 0.5  # of the UDP receive buffer
    retry_after: int = 5  # seconds, in the 503

    def reason(
        self, *, pending: int, held: int, lag: float, delay: float = 0.0, backlog: float = 0.0
    ) -> Overloaded | None:
        """Why we are overloaded (``str()`` of it for the log), or None when we are not."""
        if pending - held >= self.max_pending:
            return Overloaded(_PENDING, pending - held)
        if held >= self.max_held:
            return Overloaded(_HELD, held)
        if lag > self.max_lag:
            return Overloaded(_LAG, lag * 1000)
        if delay > self.max_delay:
            return Overloaded(_DELAY, delay * 1000)
        if backlog > self.max_backlog:
            return Overloaded(_BACKLOG, backlog * 100)
        return None


@dataclass(slots=True)
class StandingLag:
    """The event loop's *standing* lag: the smallest of the last ``window`` samples.

    One late timer is a stall (a GC pause, a slow fsync, the process descheduled on a busy
    host), not saturation: shedding on it would refuse a lone REGISTER that arrives just
    after. A loop that is late on every one of the last samples has a standing queue
    (CoDel's minimum-over-an-interval idea), which is what ``max_lag`` bounds."""

    window: int = 4
    _samples: deque[float] = field(default_factory=deque)

    def sample(self, lag: float) -> float:
        self._samples.append(lag)
        if len(self._samples) > self.window:
            self._samples.popleft()
        if len(self._samples) < self.window:
            return 0.0  # too soon to tell (the first tick also measures start-up)
        return min(self._samples)
