"""One forwarded call, pure: the fork of its answers and the table of its devices.

A ``Call`` is what the proxy knows of one request it forwarded (RFC 3261 §16): the response
context (``policy.fork.Fork``) and, for an INVITE to our users, the devices woken by push
for it (``policy.parking.DeviceTable``, RFC 8599 §5.3.2). It is fed inputs — the start, push
results, registrations, decline links, branch responses and time-outs, the caller's
CANCEL, the clock — and answers with actions for ``app/calls.py`` to carry out. It reads
no clock: every input carries ``now`` on one monotonic clock, and ``next_deadline()`` is
the earliest moment it wants ``timer(now)`` called (hold window end, Timer C, the live
timeout of a branch, the end of the grace period).

Who is still awaited is derived from the device table, never counted on the side: a
device is awaited while its push is in flight or delivered, the hold window is open and
the caller has not cancelled. The fork does not finish while one is.

The live/sleeping plan (``start``): a device with a push target and no connection known
to be alive is pushed; one with a live connection gets a branch at once, and if that
branch gets no response at all within ``live_timeout`` (an app frozen, a NAT binding gone
without a FIN) it is pushed as if asleep, its branch kept open (issue 10.7).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sipwake.policy.fork import Action, BranchState, CancelBranch, Fork, Forward, Respond
from sipwake.policy.parking import (
    WAITING_STATES,
    DeviceState,
    DeviceTable,
    HeldState,
    end_reason,
    ended_state,
)
from sipwake.sip.message import Request, Response

__all__ = [
    "Call",
    "CallAction",
    "CallRules",
    "CancelBranch",
    "DeliverAndCancel",
    "Ended",
    "Forget",
    "Forward",
    "OpenBranch",
    "Respond",
    "SendPush",
    "invite_key",
    "resume_state",
]


@dataclass(frozen=True, slots=True)
class SendPush:
    """Push this device (the call's UUID is the same for every device and retry)."""

    device: str


@dataclass(frozen=True, slots=True)
class OpenBranch:
    """This device registered for the call: open its branch (``branch_opened`` after)."""

    device: str


@dataclass(frozen=True, slots=True)
class DeliverAndCancel:
    """The call ended after this device was pushed: send it the INVITE, then CANCEL it
    with this Reason (RFC 3326), so the app can end the call it reported."""

    device: str
    reason: str


@dataclass(frozen=True, slots=True)
class Ended:
    """The caller got its final answer (``status``); the call is over for it."""

    state: HeldState
    status: int


@dataclass(frozen=True, slots=True)
class Forget:
    """Nothing can happen to this call any more: drop it."""


CallAction = Action | SendPush | OpenBranch | DeliverAndCancel | Ended | Forget


NO_ANSWER = Respond(480)  # RFC 8599 §5.3.2: nobody woke in time


def invite_key(request: Request) -> str:
    """What finds a held call from its caller's INVITE, retransmitted, or its CANCEL: the
    Call-ID and the top Via branch, which a CANCEL repeats (RFC 3261 §9.1, §17.2.3); the
    From tag for a pre-RFC 3261 caller without a magic-cookie branch."""
    return f"{request.call_id} {request.top_via.branch or request.from_.tag or ''}"


def resume_state(state: DeviceState) -> DeviceState:
    """How a device stands for a call resumed by another process. A push in flight may
    have been delivered, and a device that joined lost its branch with the old process's
    connections: all three are awaited again, never pushed again (the app already has a
    push with this call's UUID). A device that failed or declined stays out."""
    return DeviceState.PUSHED if state in RESUMABLE else state


RESUMABLE = frozenset({DeviceState.PUSHING, DeviceState.PUSHED, DeviceState.JOINED})


@dataclass(frozen=True, slots=True)
class CallRules:
    """The settings a call runs by ([push] and [sip] in the config)."""

    hold_window: float = 30.0
    cancel_grace: float = 30.0
    live_timeout: float = 2.0  # a live branch silent this long is pushed (0: never)
    send_180: bool = False
    unanswered: Respond = NO_ANSWER
    timer_c: float = 180.0
    decline_ends_all: bool = True


_CALL_FIELDS = (
    "call_id", "aor", "rules", "fork", "devices", "pushable", "branch_of", "live_until",
    "opening", "hold_end", "hold_over", "ended_at", "final", "end", "ghost", "forgotten",
)  # fmt: skip


class Call:
    """One held call: its fork and its devices. Equal only to itself. A plain class, not a
    dataclass: one is made per call, and mypyc compiles a hand-written ``__init__`` where a
    dataclass's stays interpreted (sip/flows.py Flow). The state after ``fork`` starts
    empty; ``Call.new`` makes one."""

    __slots__ = (
        "aor", "branch_of", "call_id", "devices", "end", "ended_at", "final", "forgotten",
        "fork", "ghost", "hold_end", "hold_over", "live_until", "opening", "pushable", "rules",
    )  # fmt: skip

    call_id: str  # the UUID in the push payload
    aor: str
    rules: CallRules
    fork: Fork
    devices: DeviceTable
    pushable: set[str]  # devices with a push target
    branch_of: dict[str, str]  # device -> its branch key
    live_until: dict[str, float]  # branch -> first-answer deadline
    opening: set[str]  # devices whose branch is being opened
    hold_end: float | None  # None: never pushed
    hold_over: bool
    ended_at: float | None
    final: int
    end: HeldState | None
    ghost: bool  # delivers an ended call to a late device only to CANCEL it
    forgotten: bool  # Forget() was emitted

    def __init__(self, call_id: str, aor: str, rules: CallRules, fork: Fork) -> None:
        self.call_id = call_id
        self.aor = aor
        self.rules = rules
        self.fork = fork
        self.devices = DeviceTable()
        self.pushable = set()
        self.branch_of = {}
        self.live_until = {}
        self.opening = set()
        self.hold_end = None
        self.hold_over = False
        self.ended_at = None
        self.final = 0
        self.end = None
        self.ghost = False
        self.forgotten = False

    def __repr__(self) -> str:
        values = (
            self.call_id, self.aor, self.rules, self.fork, self.devices, self.pushable,
            self.branch_of, self.live_until, self.opening, self.hold_end, self.hold_over,
            self.ended_at, self.final, self.end, self.ghost, self.forgotten,
        )  # fmt: skip
        pairs = zip(_CALL_FIELDS, values, strict=True)
        return "Call(" + ", ".join(f"{name}={value!r}" for name, value in pairs) + ")"

    @classmethod
    def new(cls, call_id: str, aor: str, rules: CallRules, *, is_invite: bool = True) -> Call:
        fork = Fork(
            is_invite=is_invite, timer_c=rules.timer_c, decline_ends_all=rules.decline_ends_all
        )
        return cls(call_id, aor, rules, fork)

    # -- what it is ---------------------------------------------------------------------
    @property
    def held(self) -> bool:
        """At least one device was pushed for it."""
        return self.hold_end is not None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @property
    def state(self) -> HeldState:
        if self.end is not None:
            return self.end
        joined = DeviceState.JOINED in self.devices.states.values()
        return HeldState.RESUMED if joined else HeldState.WAITING

    def awaited(self, now: float) -> bool:
        """May a device still add a branch? One whose branch is being opened may; one
        pushed may while the hold window is open and the caller has not cancelled."""
        if self.fork.cancelled or self.fork.finished:
            return False
        if self.opening:
            return True
        if self.hold_end is None or self.hold_over or now >= self.hold_end:
            return False
        return self.devices.waiting() > 0

    def can_open(self, device: str) -> bool:
        fork = self.fork
        return not (fork.finished or fork.cancelled or fork.has_device(device))

    # -- inputs -------------------------------------------------------------------------
    def start(
        self, now: float, sleeping: Iterable[str], live_pushable: Iterable[str] = ()
    ) -> list[CallAction]:
        """Push every sleeping device; the live ones get branches (``branch_opened``)."""
        self.pushable.update(live_pushable)
        out: list[CallAction] = []
        for device in sleeping:
            if self.devices.get(device) is None:
                self.pushable.add(device)
                out += self._push(device, now)
        return out

    def resume(
        self,
        now: float,
        hold_end: float,
        states: dict[str, DeviceState],
        woke: Iterable[str] = (),
    ) -> list[CallAction]:
        """Take over a call another process held (it died, or this is its restart): the
        devices keep their states (``resume_state``), the hold window its end, and nobody
        is pushed again. Devices in ``woke`` registered since they were pushed: their
        branches open now. The caller hears 110 again from the new server transaction;
        a window already over ends the call at the next ``timer``."""
        for device, state in states.items():
            self.devices.states[device] = resume_state(state)
            self.pushable.add(device)
        self.hold_end = hold_end
        self.fork.unanswered = self.rules.unanswered
        out: list[CallAction] = [Respond(110, reason="Push sent")]
        for device in woke:
            out += self.registered(device, now)
        return out + self.settle(now)  # nobody left to wait for: 480 now

    def will_open(self, device: str) -> None:
        """A branch towards ``device`` is being opened (the flow looked up): the call
        waits for it."""
        self.opening.add(device)

    def branch_failed(self, device: str, now: float) -> list[CallAction]:
        """The branch towards ``device`` could not be opened (unreachable, or refused)."""
        self.opening.discard(device)
        return self.settle(now)

    def branch_opened(self, key: str, device: str, now: float) -> bool:
        """A branch went out towards ``device``; False if the fork refuses it."""
        self.opening.discard(device)
        if not self.fork.add_branch(key, device, now):
            return False
        self.branch_of[device] = key
        live = self.devices.get(device) is None and device in self.pushable
        if live and self.rules.live_timeout > 0 and self.fork.is_invite:
            self.live_until[key] = now + self.rules.live_timeout
        return True

    def settle(self, now: float) -> list[CallAction]:
        """Finish if nothing is pending (after the branches were opened, or one failed)."""
        return self._after(self.fork.settle(awaited=self.awaited(now)), now)

    def push_result(self, device: str, state: DeviceState, now: float) -> list[CallAction]:
        if not self.devices.push_result(device, state):
            return []
        return self.settle(now)

    def registered(self, device: str, now: float) -> list[CallAction]:
        """A binding of the callee's AoR was added or refreshed."""
        if self.hold_end is None or self.ghost:
            return []  # never held: registrations do not concern it
        state = self.devices.get(device)
        if self.ended or self.fork.cancelled:
            if self.ended_at is not None and now - self.ended_at > self.rules.cancel_grace:
                return []
            if not self.devices.owed(device):
                return []
            self.devices.join(device)
            status = self.final or 487
            why = self.end or HeldState.CANCELLED
            return [DeliverAndCancel(device, end_reason(why, status))]
        if state in (DeviceState.JOINED, DeviceState.DECLINED):
            return []  # a refresh, or the REGISTER after a 401
        key = self.branch_of.get(device)
        if key is not None and self.fork.has_device(device):
            if state not in WAITING_STATES:
                return []  # a live device refreshing: its branch goes on
            # Pushed because its branch stayed silent: it is back over a new connection.
            self.fork.supersede(key)
            self.live_until.pop(key, None)
        self.devices.join(device)
        self.opening.add(device)
        return [OpenBranch(device)]

    def declined(self, device: str, status: int, now: float) -> list[CallAction] | None:
        """The decline link in the push (486 busy, 603 decline); None if this device may
        not decline this call (not pushed for it, joined, or the call is over)."""
        if self.ended or not self.devices.decline(device):
            return None
        actions = self.fork.device_answered(device, status, awaited=self.awaited(now))
        return self._after(actions, now)

    def response(self, key: str, response: Response, now: float) -> list[CallAction]:
        self.live_until.pop(key, None)  # any answer: the connection is alive
        if response.status == 430:
            # RFC 5626 §11.5 Flow Failed: the node owning the device's connection found it
            # gone (it closed just before this call). A device with a push target is not
            # unreachable, it is asleep: push it, as one whose branch stayed silent.
            pushed = self._flow_failed(key, now)
            if pushed:
                return pushed
        actions = self.fork.on_response(key, response, now, awaited=self.awaited(now))
        return self._after(actions, now)

    def branch_timeout(self, key: str, now: float) -> list[CallAction]:
        self.live_until.pop(key, None)
        return self._after(self.fork.on_timeout(key, awaited=self.awaited(now)), now)

    def cancel(self, now: float) -> list[CallAction]:
        """The caller cancelled (RFC 3261 §16.10)."""
        return self._after(self.fork.on_cancel(), now)

    def shutdown(self, now: float, retry_after: int) -> list[CallAction]:
        """The server stops (the SIGTERM drain is over): the caller gets 503 with
        Retry-After (RFC 3261 §21.5.4: try again, or elsewhere), its branches a CANCEL."""
        reason = 'SIP;cause=503;text="Server shutting down"'
        headers = (("Retry-After", str(retry_after)),)
        return self._after(self.fork.abandon(503, headers, reason), now)

    def abandon(self, now: float, status: int, text: str) -> list[CallAction]:
        """End the call for a caller that can no longer be answered (its connection died
        with the process that held the call): branches get a CANCEL, pushed devices
        their INVITE + CANCEL when they wake (the grace period)."""
        reason = f'SIP;cause={status};text="{text}"'
        return self._after(self.fork.abandon(status, (), reason), now)

    def deliver_and_cancel(self, reason: str) -> list[CallAction]:
        """A ghost's branch went out: CANCEL it at once (sent after its first provisional)."""
        return list(self.fork.cancel_all(reason))

    def timer(self, now: float) -> list[CallAction]:
        out: list[CallAction] = []
        if not self.ended:
            if self.hold_end is not None and not self.hold_over and now >= self.hold_end:
                # The hold window is over: devices that did not wake are no longer awaited
                # (they stay owed the INVITE + CANCEL). Branches ringing go on (Timer C).
                self.hold_over = True
                out += self.fork.settle(awaited=False)
            for key, when in list(self.live_until.items()):
                if when <= now:
                    del self.live_until[key]
                    out += self._silent(key, now)
        deadline = self.fork.next_deadline()
        if deadline is not None and deadline <= now:
            out += self.fork.on_timer(now, awaited=self.awaited(now))
        return self._after(out, now)

    def next_deadline(self) -> float | None:
        when = self.fork.next_deadline()
        if not self.ended:
            if self.hold_end is not None and not self.hold_over:
                when = _earliest(when, self.hold_end)
            if self.live_until:
                when = _earliest(when, min(self.live_until.values()))
        elif self.ended_at is not None and self.held and not (self.ghost or self.forgotten):
            when = _earliest(when, self.ended_at + self.rules.cancel_grace)
        return when

    # -- internals ----------------------------------------------------------------------
    def _push(self, device: str, now: float) -> list[CallAction]:
        self.devices.pushing(device)
        out: list[CallAction] = []
        if self.hold_end is None:
            # The first push holds the call: 110 Push sent (RFC 8599 §5.3.2 leaves the
            # provisional to the proxy), the hold window, and the answer if nobody wakes.
            self.hold_end = now + self.rules.hold_window
            self.fork.unanswered = self.rules.unanswered
            if not self.fork.finished:
                out.append(Respond(110, reason="Push sent"))
                if self.rules.send_180:
                    out.append(Respond(180))
        out.append(SendPush(device))
        return out

    def _flow_failed(self, key: str, now: float) -> list[CallAction]:
        device = self._pushable_branch(key, (BranchState.CALLING, BranchState.PROCEEDING))
        if device is None:
            return []
        self.fork.supersede(key)  # the woken device gets a branch of its own
        return self._push(device, now)

    def _silent(self, key: str, now: float) -> list[CallAction]:
        """A live branch got no answer at all in ``live_timeout``: push its device."""
        device = self._pushable_branch(key, (BranchState.CALLING,))
        return [] if device is None else self._push(device, now)

    def _pushable_branch(self, key: str, states: tuple[BranchState, ...]) -> str | None:
        """The device of branch ``key`` if it is in one of ``states``, could be pushed and
        was not yet, and the call goes on; else None."""
        branch = self.fork.branches.get(key)
        if branch is None or branch.state not in states or not self.fork.is_invite:
            return None
        if self.fork.finished or self.fork.cancelled:
            return None
        device = branch.device
        if self.devices.get(device) is not None or device not in self.pushable:
            return None
        return device

    def _after(self, done: Sequence[CallAction], now: float) -> list[CallAction]:
        actions = list(done)
        if self.fork.finished and self.ended_at is None:
            self.ended_at = now
            self.final = self.fork.final_sent
            self.end = ended_state(self.final, self.rules.unanswered.status)
            self.live_until.clear()
            actions.append(Ended(self.end, self.final))
        if self._forgettable(now):
            self.forgotten = True
            actions.append(Forget())
        return actions

    def _forgettable(self, now: float) -> bool:
        """Ended, and no device pushed for it can still wake and be owed the INVITE +
        CANCEL: the grace is over, or every pushed device already joined, declined or
        could not be pushed. (Most calls: the one woken phone answered. Keeping such a
        call through the grace only kept its INVITE and state alive for nothing.)"""
        if self.forgotten or self.ended_at is None or not self.held or self.ghost:
            return False
        if now >= self.ended_at + self.rules.cancel_grace:
            return True
        return not any(state in WAITING_STATES for state in self.devices.states.values())


def _earliest(a: float | None, b: float) -> float:
    return b if a is None or b < a else a
