"""How many VoIP pushes a call may cause: a budget per callee device and per caller.

Every VoIP push must ring CallKit on iOS, and APNs throttles (then stops delivering to)
apps that push too much; a push costs the device owner attention and battery. So anyone
who can place calls must not be able to push a device without bound. Two token buckets
(rate per minute, with a burst), both must allow it:

- per device: every push spends one token of the device's bucket, whoever calls;
- per source: a call that pushes spends one token of the caller's bucket. The source is
  the authenticated user when there is one, else the caller's address; trusted peers (a
  PBX, a trunk: many callers behind one address) have no source budget.

A device over its budget is not pushed; the source budget is checked first, so a source
over budget pushes nobody. ``require_auth`` refuses pushes to callers that proved
nothing (anonymous callers from other domains). Pure: ``now`` comes in as an argument;
memory is bounded (least recently used buckets are dropped, which only ever forgives).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum


class Refusal(Enum):
    """Why a push was not sent (the metrics label)."""

    DEVICE = "push_budget_device"
    SOURCE = "push_budget_source"
    ANONYMOUS = "push_needs_auth"


class TokenBuckets:
    """One token bucket per key: ``per_minute`` tokens a minute, at most ``burst`` saved.
    ``per_minute == 0`` means unlimited."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, per_minute: float, burst: int, max_keys: int = 100_000) -> None:
        if per_minute < 0 or burst < 1 or max_keys < 1:
            raise ValueError("per_minute must be >= 0, burst and max_keys positive")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def __len__(self) -> int:
        return len(self._buckets)

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def available(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self.burst
        tokens, at = entry
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def allows(self, key: str, now: float) -> bool:
        return self.unlimited or self.available(key, now) >= 1.0

    def spend(self, key: str, now: float) -> None:
        if self.unlimited:
            return
        self._buckets[key] = (self.available(key, now) - 1.0, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Admission:
    """The devices to push, and each refused device with its reason."""

    push: tuple[str, ...]
    refused: tuple[tuple[str, Refusal], ...]


class PushBudget:
    def __init__(
        self,
        *,
        per_device: float,
        device_burst: int,
        per_source: float,
        source_burst: int,
        require_auth: bool = False,
        max_keys: int = 100_000,
    ) -> None:
        self.devices = TokenBuckets(per_device, device_burst, max_keys)
        self.sources = TokenBuckets(per_source, source_burst, max_keys)
        self.require_auth = require_auth

    def admit(
        self, devices: list[str], source: str | None, now: float, *, anonymous: bool
    ) -> Admission:
        """Spend the budget for one call from ``source`` (None: a trusted peer, no source
        budget) that would push ``devices``; ``anonymous``: the caller proved nothing."""
        if anonymous and self.require_auth:
            return Admission((), tuple((d, Refusal.ANONYMOUS) for d in devices))
        if source is not None and not self.sources.allows(source, now):
            return Admission((), tuple((d, Refusal.SOURCE) for d in devices))
        push: list[str] = []
        refused: list[tuple[str, Refusal]] = []
        for device in devices:
            if self.devices.allows(device, now):
                self.devices.spend(device, now)
                push.append(device)
            else:
                refused.append((device, Refusal.DEVICE))
        if push and source is not None:
            self.sources.spend(source, now)
        return Admission(tuple(push), tuple(refused))
