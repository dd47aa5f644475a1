"""Held calls: an INVITE parked while its callee's devices are woken by push, pure.

States (ARCHITECTURE.md): WAITING while pushed devices may still register, then RESUMED
once one joined (more may follow), and finally ANSWERED | CANCELLED | EXPIRED | DECLINED |
FAILED. A device pushed for a call keeps a claim on it for ``grace`` seconds after the call
ended: if it registers then, it gets the INVITE and an immediate CANCEL (PushKit rule: an
iOS app woken by a VoIP push must report a call to CallKit, so it must receive the call it
was woken for; there is no "cancel" VoIP push). See /work/shared/reference/apns.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class HeldState(Enum):
    WAITING = "waiting"
    RESUMED = "resumed"
    ANSWERED = "answered"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    DECLINED = "declined"
    FAILED = "failed"


ENDED = frozenset(
    {
        HeldState.ANSWERED,
        HeldState.CANCELLED,
        HeldState.EXPIRED,
        HeldState.DECLINED,
        HeldState.FAILED,
    }
)


class DeviceState(Enum):
    PUSHING = "pushing"  # push being sent (with retries)
    PUSHED = "pushed"  # the push service accepted it
    FAILED = "failed"  # could not be pushed (transient errors until the deadline, config)
    REJECTED = "rejected"  # the push service says the token is dead
    JOINED = "joined"  # registered and got its branch
    DECLINED = "declined"  # answered through the decline link


WAITING_STATES = frozenset({DeviceState.PUSHING, DeviceState.PUSHED})


@dataclass(frozen=True, slots=True)
class Join:
    """Give the device a branch of the live call."""


@dataclass(frozen=True, slots=True)
class DeliverAndCancel:
    """The call ended after this device was pushed: send the INVITE, then CANCEL it with
    this Reason (RFC 3326), so the app can end the call it reported."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ignore:
    why: str


RegisterDecision = Join | DeliverAndCancel | Ignore

_END_REASONS = {
    HeldState.ANSWERED: 'SIP;cause=200;text="Call completed elsewhere"',
    HeldState.CANCELLED: 'SIP;cause=487;text="Caller cancelled"',
    HeldState.EXPIRED: 'SIP;cause=480;text="No answer"',
    HeldState.DECLINED: 'SIP;cause=603;text="Declined"',
    HeldState.FAILED: 'SIP;cause=480;text="Call failed"',
}


@dataclass(slots=True)
class HeldCall:
    call_id: str  # the UUID in the push payload: the same for every device and retry
    aor: str
    created_at: float
    deadline: float  # end of the hold window
    grace: float = 30.0
    state: HeldState = HeldState.WAITING
    ended_at: float = 0.0
    devices: dict[str, DeviceState] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def pushing(self, device: str) -> None:
        self.devices[device] = DeviceState.PUSHING

    def waiting(self) -> int:
        """Devices that may still register for this call."""
        return sum(1 for s in self.devices.values() if s in WAITING_STATES)

    def push_result(self, device: str, state: DeviceState) -> bool:
        """Record a push outcome; True if the device stopped being awaited by it."""
        before = self.devices.get(device)
        if before not in WAITING_STATES:
            return False
        self.devices[device] = state
        return state not in WAITING_STATES

    def declined(self, device: str) -> bool:
        """The device answered through its decline link; False if it could not (not pushed
        for this call, or already joined/declined)."""
        if self.devices.get(device) not in WAITING_STATES or self.ended:
            return False
        self.devices[device] = DeviceState.DECLINED
        return True

    def on_register(self, device: str, now: float) -> RegisterDecision:
        """A binding of the callee's AoR was added or refreshed."""
        state = self.devices.get(device)
        if not self.ended:
            if state in (DeviceState.JOINED, DeviceState.DECLINED):
                return Ignore("already has its branch")  # a refresh or the auth retry
            self.devices[device] = DeviceState.JOINED
            self.state = HeldState.RESUMED
            return Join()
        if state in WAITING_STATES and now - self.ended_at <= self.grace:
            self.devices[device] = DeviceState.JOINED
            return DeliverAndCancel(_END_REASONS[self.state])
        return Ignore("call over")

    def end(self, state: HeldState, now: float) -> None:
        if not self.ended:
            self.state = state
            self.ended_at = now

    def forgettable(self, now: float) -> bool:
        """Nothing can happen to this record any more."""
        return self.ended and (now - self.ended_at > self.grace or not self.waiting())
