"""The device table of a held call: which devices were pushed and how each stands, pure.

A call is held while pushed devices may still register (RFC 8599 §5.3.2). Every device the
call concerns has one state here; ``policy.call.Call`` derives from it who is still awaited
(nothing else counts devices). A device pushed for a call keeps a claim on it for the grace
period after the call ended, *whatever ended it*: if it registers then, it gets the INVITE
and an immediate CANCEL naming why (PushKit rule: an iOS app woken by a VoIP push must
report a call to CallKit, so it must receive the call it was woken for; there is no
"cancel" VoIP push). See /work/shared/reference/apns.md and docs/app-developers.md.
"""

from __future__ import annotations

from enum import Enum


class HeldState(Enum):
    WAITING = "waiting"  # pushed devices may still register
    RESUMED = "resumed"  # one joined (more may follow)
    ANSWERED = "answered"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    DECLINED = "declined"
    BUSY = "busy"
    FAILED = "failed"


ENDED = frozenset(
    {
        HeldState.ANSWERED,
        HeldState.CANCELLED,
        HeldState.EXPIRED,
        HeldState.DECLINED,
        HeldState.BUSY,
        HeldState.FAILED,
    }
)


class DeviceState(Enum):
    PUSHING = "pushing"  # push being sent (with retries)
    PUSHED = "pushed"  # the push service accepted it
    FAILED = "failed"  # could not be pushed (transient errors until the deadline, config)
    REJECTED = "rejected"  # the push service says the token is dead
    JOINED = "joined"  # registered and got its branch (or its INVITE + CANCEL)
    DECLINED = "declined"  # answered through the decline link


# A device in one of these states may still register for the call (or, once it ended,
# is owed the INVITE + CANCEL when it does).
WAITING_STATES = frozenset({DeviceState.PUSHING, DeviceState.PUSHED})


def ended_state(status: int, unanswered: int) -> HeldState:
    """Why a call ended, from the final status its caller got."""
    if 200 <= status < 300:
        return HeldState.ANSWERED
    if status == 487:
        return HeldState.CANCELLED
    if status in (486, 600):
        return HeldState.BUSY
    if status >= 600:
        return HeldState.DECLINED
    if status == unanswered:
        return HeldState.EXPIRED
    return HeldState.FAILED


def end_reason(state: HeldState, status: int) -> str:
    """The Reason (RFC 3326) on the CANCEL a late-waking device gets: the app shows it."""
    if state is HeldState.ANSWERED:
        return 'SIP;cause=200;text="Call completed elsewhere"'
    if state is HeldState.CANCELLED:
        return 'SIP;cause=487;text="Caller cancelled"'
    if state is HeldState.EXPIRED:
        return f'SIP;cause={status};text="No answer"'
    if state is HeldState.BUSY:
        text = "Busy Everywhere" if status == 600 else "Busy Here"
        return f'SIP;cause={status};text="{text}"'
    if state is HeldState.DECLINED:
        return f'SIP;cause={status};text="Declined"'
    return 'SIP;cause=480;text="Call failed"'


class DeviceTable:
    """device key -> state, for the devices a call pushed or let join."""

    __slots__ = ("states",)

    def __init__(self) -> None:
        self.states: dict[str, DeviceState] = {}

    def get(self, device: str) -> DeviceState | None:
        return self.states.get(device)

    def pushing(self, device: str) -> None:
        self.states[device] = DeviceState.PUSHING

    def waiting(self) -> int:
        """Devices that may still register for this call."""
        return sum(1 for s in self.states.values() if s in WAITING_STATES)

    def push_result(self, device: str, state: DeviceState) -> bool:
        """Record a push outcome; True if the device stopped being awaited by it."""
        if self.states.get(device) not in WAITING_STATES:
            return False
        self.states[device] = state
        return state not in WAITING_STATES

    def decline(self, device: str) -> bool:
        """The device answered through its decline link; False if it could not (not
        pushed for this call, or already joined/declined)."""
        if self.states.get(device) not in WAITING_STATES:
            return False
        self.states[device] = DeviceState.DECLINED
        return True

    def join(self, device: str) -> None:
        self.states[device] = DeviceState.JOINED

    def owed(self, device: str) -> bool:
        """Pushed for the call and never reached: owed the INVITE + CANCEL after its end."""
        return self.states.get(device) in WAITING_STATES
