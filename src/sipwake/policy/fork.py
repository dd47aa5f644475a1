"""Forking proxy response context, pure (RFC 3261 §16.7, §16.8, §16.10; RFC 3326).

A ``Fork`` is the response context of one request forwarded to several targets. It is fed
branch responses, transaction time-outs, a caller CANCEL and the clock, and answers with
actions for the app layer: forward a response upstream, CANCEL a branch, finish. Branches
may be added while it runs (a device that wakes from a push joins late, RFC 8599 §5.3.2
"the proxy ... forwards the request to the newly registered contact"). Whether a device
may still join is not the fork's to know: the caller (``policy.call.Call``) passes
``awaited`` into every input that may end the fork, derived from its device table, so the
fork does not give up while one may still join.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sipwake.sip.message import Response

COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'  # RFC 3326 §2
DECLINED_ELSEWHERE = 'SIP;cause=603;text="Declined"'
BUSY_ELSEWHERE = 'SIP;cause=600;text="Busy Everywhere"'


class BranchState(Enum):
    CALLING = "calling"  # request sent, no response yet
    PROCEEDING = "proceeding"  # a provisional response arrived
    DONE = "done"  # final response (or timeout) received


@dataclass(slots=True)
class Branch:
    key: str  # client transaction id
    device: str  # Binding.device_key: one branch per device per call
    timer_c: float
    state: BranchState = BranchState.CALLING
    status: int = 0
    cancelled: bool = False  # we want it cancelled
    cancel_sent: bool = False  # the CANCEL went out (only after a provisional, §9.1)
    reason: str | None = None  # Reason header for that CANCEL
    superseded: bool = False  # its device got a new branch (Fork.supersede)


@dataclass(frozen=True, slots=True)
class Forward:
    """Send this response upstream (provisional or final)."""

    response: Response


@dataclass(frozen=True, slots=True)
class CancelBranch:
    key: str
    reason: str | None = None  # Reason header value (RFC 3326), None for none


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer upstream with a response built by the app layer (no branch produced it)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    reason: str | None = None  # reason phrase; None: the standard one


Action = Forward | CancelBranch | Respond


_FORK_FIELDS = (
    "is_invite", "timer_c", "decline_ends_all", "branches", "devices", "final_sent",
    "cancelled", "unanswered", "_best", "_virtual", "_challenges",
)  # fmt: skip
_UNANSWERED = Respond(480)


class Fork:
    """The response context of one forwarded request. A plain class, not a dataclass: one
    is made per call, and mypyc compiles a hand-written ``__init__`` where a dataclass's
    stays interpreted (sip/flows.py Flow)."""

    __slots__ = (
        "_best", "_challenges", "_virtual", "branches", "cancelled", "decline_ends_all",
        "devices", "final_sent", "is_invite", "timer_c", "unanswered",
    )  # fmt: skip

    is_invite: bool
    timer_c: float
    decline_ends_all: bool  # 603 from one device ends the call (configurable)
    branches: dict[str, Branch]
    devices: set[str]
    final_sent: int  # status of the final response sent upstream (0: none)
    cancelled: bool
    # Answer when no branch was ever opened and nobody is awaited any more (every device
    # slept through its push): RFC 8599 §5.3.2 bucket-timer expiry -> 480 by default.
    unanswered: Respond
    _best: Response | None
    _virtual: int  # best final given by a device without a branch (decline link)
    _challenges: list[tuple[str, str]]

    def __init__(  # noqa: PLR0917 - positional, as the dataclass's was
        self,
        is_invite: bool,
        timer_c: float = 180.0,
        decline_ends_all: bool = True,
        branches: dict[str, Branch] | None = None,
        devices: set[str] | None = None,
        final_sent: int = 0,
        cancelled: bool = False,
        unanswered: Respond = _UNANSWERED,  # frozen: one shared default is safe
    ) -> None:
        self.is_invite = is_invite
        self.timer_c = timer_c
        self.decline_ends_all = decline_ends_all
        self.branches = {} if branches is None else branches
        self.devices = set() if devices is None else devices
        self.final_sent = final_sent
        self.cancelled = cancelled
        self.unanswered = unanswered
        self._best = None
        self._virtual = 0
        self._challenges = []

    def _key(self) -> tuple[object, ...]:
        return (
            self.is_invite, self.timer_c, self.decline_ends_all, self.branches, self.devices,
            self.final_sent, self.cancelled, self.unanswered, self._best, self._virtual,
            self._challenges,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fork):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        pairs = zip(_FORK_FIELDS, self._key(), strict=True)
        return "Fork(" + ", ".join(f"{name}={value!r}" for name, value in pairs) + ")"

    # -- adding branches --------------------------------------------------------------------
    def has_device(self, device: str) -> bool:
        return device in self.devices

    def add_branch(self, key: str, device: str, now: float) -> bool:
        """Register a forwarded branch. False (and nothing changes) if that device already
        has one or the fork is over: exactly one branch per device per call."""
        if self.final_sent or self.cancelled or device in self.devices:
            return False
        self.devices.add(device)
        self.branches[key] = Branch(key, device, now + self.timer_c)
        return True

    @property
    def finished(self) -> bool:
        return self.final_sent != 0

    def active(self) -> list[Branch]:
        return [b for b in self.branches.values() if b.state is not BranchState.DONE]

    # -- inputs -----------------------------------------------------------------------------
    def on_response(
        self, key: str, response: Response, now: float, *, awaited: bool = False
    ) -> list[Action]:
        branch = self.branches.get(key)
        if branch is None or branch.state is BranchState.DONE:
            # A 2xx retransmission or late answer: 2xx still go upstream (§16.7 step 5).
            if branch is not None and 200 <= response.status < 300 and self.is_invite:
                if branch.superseded and not self.final_sent:
                    # The silent branch answered after all: it is the call's 2xx.
                    self.final_sent = response.status
                    return [*self._cancel_others(COMPLETED_ELSEWHERE), Forward(response)]
                return [Forward(response)]
            late = branch is not None and response.status < 200 and branch.cancelled
            if late and branch is not None and not branch.cancel_sent:
                # A superseded branch woke up after all: it gets its CANCEL (§9.1).
                branch.cancel_sent = True
                return [CancelBranch(key, branch.reason)]
            return []
        status = response.status
        if status < 200:
            branch.state = BranchState.PROCEEDING
            if branch.cancelled and not branch.cancel_sent:
                # The CANCEL we held back until the branch answered (§9.1) goes now.
                branch.cancel_sent = True
                return [CancelBranch(key, branch.reason)]
            if status > 100:
                branch.timer_c = now + self.timer_c  # §16.7 step 2: reset Timer C
                if not self.final_sent:
                    return [Forward(response)]
            return []
        branch.state = BranchState.DONE
        branch.status = status
        actions: list[Action] = []
        if 200 <= status < 300:
            # §16.7 step 5: every 2xx goes upstream at once; the others are cancelled
            # (§16.7 step 10) with RFC 3326 "Call completed elsewhere".
            if self.is_invite:
                actions += self._cancel_others(COMPLETED_ELSEWHERE)
            self.final_sent = self.final_sent or status
            actions.append(Forward(response))
            return actions
        if self.final_sent:
            return actions
        if status >= 600 and (status != 603 or self.decline_ends_all):
            # §16.7 step 5: a 6xx ends the fork; pending branches are cancelled (§16.7
            # step 10) and the 6xx goes upstream.
            reason = DECLINED_ELSEWHERE if status == 603 else BUSY_ELSEWHERE
            actions += self._cancel_others(reason)
            self.final_sent = status
            actions.append(Forward(response))
            return actions
        self._store(response)
        return actions + self._maybe_finish(awaited)

    def on_timeout(self, key: str, *, awaited: bool = False) -> list[Action]:
        """The branch's client transaction timed out: as if it answered 408 (§16.7 step 1,
        §16.8). The synthesised 408 is never preferred over a real answer."""
        branch = self.branches.get(key)
        if branch is None or branch.state is BranchState.DONE:
            return []
        branch.state = BranchState.DONE
        branch.status = 408
        if self.final_sent:
            return []
        return self._maybe_finish(awaited)

    def on_cancel(self) -> list[Action]:
        """The caller cancelled (§16.10): CANCEL every pending branch; the 487s that come
        back make the final answer. With no branch pending, answer 487 ourselves."""
        if self.final_sent:
            return []
        self.cancelled = True
        actions = self._cancel_others(None)
        if not self.active():
            self.final_sent = 487
            actions.append(Respond(487))
        return actions

    def device_answered(self, device: str, status: int, *, awaited: bool = False) -> list[Action]:
        """A device that has no branch answered out of band (the decline link in its push:
        486 busy or 603 decline): counted as that device's final response (§16.7)."""
        if self.final_sent or device in self.devices:
            return []
        self.devices.add(device)
        if status >= 600 and (status != 603 or self.decline_ends_all):
            reason = DECLINED_ELSEWHERE if status == 603 else BUSY_ELSEWHERE
            actions = self._cancel_others(reason)
            self.final_sent = status
            actions.append(Respond(status))
            return actions
        if not self._virtual or _rank(status) < _rank(self._virtual):
            self._virtual = status
        return self._maybe_finish(awaited)

    def cancel_all(self, reason: str | None) -> list[Action]:
        """End every branch with CANCEL and ``reason``, nothing upstream (a call delivered
        only to be cancelled)."""
        self.cancelled = True
        return self._cancel_others(reason)

    def abandon(
        self, status: int, headers: tuple[tuple[str, str], ...], reason: str
    ) -> list[Action]:
        """Give up now (the server is shutting down): CANCEL every pending branch with
        ``reason`` and answer ``status`` upstream ourselves."""
        if self.final_sent:
            return []
        actions = self._cancel_others(reason)
        self.final_sent = status
        actions.append(Respond(status, headers))
        return actions

    def settle(self, *, awaited: bool) -> list[Action]:
        """Fewer devices are awaited now (a push failed, the hold window ended, a branch
        could not be opened): finish if nothing else is pending."""
        if self.final_sent:
            return []
        return self._maybe_finish(awaited)

    def supersede(self, key: str) -> None:
        """Give up on a branch without an answer: its device reached us again over a new
        connection and gets a new branch (RFC 8599 §5.3.2; the old connection went silent).
        The old branch no longer counts; a provisional that still comes on it gets its
        CANCEL (§9.1), a 2xx still goes upstream (§16.7 step 5)."""
        branch = self.branches.get(key)
        if branch is None or branch.state is BranchState.DONE:
            return
        self.devices.discard(branch.device)
        branch.state = BranchState.DONE
        branch.status = 408
        branch.cancelled = True
        branch.superseded = True

    def next_deadline(self) -> float | None:
        pending = [b.timer_c for b in self.branches.values() if b.state is not BranchState.DONE]
        return min(pending) if pending and self.is_invite else None

    def on_timer(self, now: float, *, awaited: bool = False) -> list[Action]:
        """Timer C (§16.8): a branch with a provisional answer is cancelled; one without
        is treated as a 408."""
        actions: list[Action] = []
        if not self.is_invite:
            return actions
        for b in list(self.branches.values()):
            if b.state is BranchState.DONE or b.timer_c > now:
                continue
            if b.state is BranchState.PROCEEDING:
                if not b.cancel_sent:
                    b.cancelled = b.cancel_sent = True
                    actions.append(CancelBranch(b.key))
                b.timer_c = now + self.timer_c  # wait for the 487 as long again
            else:
                actions += self.on_timeout(b.key, awaited=awaited)
        return actions

    # -- internals --------------------------------------------------------------------------
    def _cancel_others(self, reason: str | None) -> list[Action]:
        out: list[Action] = []
        for b in self.branches.values():
            if b.state is BranchState.DONE or b.cancelled:
                continue
            b.cancelled = True
            b.reason = reason
            # Only a branch that got a provisional answer may be cancelled (§9.1); one
            # still CALLING is cancelled when its first provisional arrives.
            if b.state is BranchState.PROCEEDING:
                b.cancel_sent = True
                out.append(CancelBranch(b.key, reason))
        return out

    def _store(self, response: Response) -> None:
        status = response.status
        if status in (401, 407):
            # §16.7 step 7: collect every challenge into the one 401/407 sent upstream.
            name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            for value in response.headers.get_lines(name):
                self._challenges.append((name, value))
        if self._best is None or _rank(response.status) < _rank(self._best.status):
            self._best = response

    def _maybe_finish(self, awaited: bool) -> list[Action]:
        if self.final_sent or self.active() or awaited:
            return []
        best = self._best
        if self.cancelled and (best is None or best.status != 487):
            # The caller cancelled: whatever the branches ended with, it gets 487 (§16.10).
            self.final_sent = 487
            return [Respond(487)]
        if self._virtual and (best is None or _rank(self._virtual) < _rank(best.status)):
            self.final_sent = self._virtual
            return [Respond(self._virtual)]
        if best is None:
            if all(b.superseded for b in self.branches.values()):
                # No branch, or only ones given up for a push whose device did not
                # wake: nothing answered, RFC 8599 §5.3.2's answer (480 by default).
                self.final_sent = self.unanswered.status
                return [self.unanswered]
            self.final_sent = 408
            return [Respond(408)]
        self.final_sent = best.status
        if best.status == 503:
            # §16.7 step 6: a 503 is not forwarded as is (it would make the caller think
            # *we* are overloaded); 500 instead.
            self.final_sent = 500
            return [Respond(500)]
        if best.status in (401, 407) and len(self._challenges) > 1:
            return [Respond(best.status, tuple(self._challenges))]
        return [Forward(best)]


def _rank(status: int) -> tuple[int, int]:
    """Preference among stored non-2xx finals (§16.7 step 6): 6xx first, then the lowest
    class; within 4xx, answers the caller can act on (401/407/415/420/484) first, and a
    408 we synthesised or got last."""
    cls = status // 100
    order = 0 if cls == 6 else cls
    within = 0 if status in (401, 407, 415, 420, 484) else 2 if status == 408 else 1
    return order, within
