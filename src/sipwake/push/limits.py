"""Wrappers around any PushProvider (Sygnal style): a concurrency cap and retries.

Both are PushProviders themselves, so they stack: ``Retrying(ConcurrencyLimited(apns, 200),
clock=time.time)``. Retrying sits outside the cap, so a request sleeping in backoff does not
hold a slot.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from sipwake.push.base import PushOutcome, PushProvider, PushRequest, Transient


class ConcurrencyLimited:
    """At most ``max_in_flight`` sends at a time; the rest wait their turn (FIFO)."""

    def __init__(self, provider: PushProvider, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.provider = provider
        self.name = provider.name
        self._semaphore = asyncio.Semaphore(max_in_flight)

    async def send(self, request: PushRequest, now: float) -> PushOutcome:
        async with self._semaphore:
            return await self.provider.send(request, now)

    async def close(self) -> None:
        await self.provider.close()


def request_deadline(request: PushRequest) -> float:
    """Default deadline: the push's own expiry (0 means none)."""
    return request.expires_at


class Retrying:
    """Retry :class:`Transient` outcomes with capped exponential backoff and full jitter.

    Delay before retry n (0-based): ``uniform(0.5, 1) * min(cap, base * 2**n)``, at least the
    service's ``retry_after``. A retry that would start at or after the request's deadline
    (``deadline_fn``, by default its ``expires_at``; 0 = none) is not made: a call push
    delivered after the held INVITE gave up only rings a dead call. The last outcome is
    returned either way.
    """

    def __init__(
        self,
        provider: PushProvider,
        clock: Callable[[], float],
        deadline_fn: Callable[[PushRequest], float] = request_deadline,
        *,
        max_attempts: int = 4,
        base: float = 0.1,
        cap: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self._clock = clock
        self._deadline_fn = deadline_fn
        self._max_attempts = max(1, max_attempts)
        self._base = base
        self._cap = cap
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.retries = 0  # for metrics and tests

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        delay: float = min(self._cap, self._base * 2.0**attempt) * self._rng.uniform(0.5, 1.0)
        return max(delay, retry_after or 0.0)

    async def send(self, request: PushRequest, now: float) -> PushOutcome:
        deadline = self._deadline_fn(request)
        outcome = await self.provider.send(request, now)
        for attempt in range(self._max_attempts - 1):
            if not isinstance(outcome, Transient):
                break
            delay = self.backoff(attempt, outcome.retry_after)
            if deadline and self._clock() + delay >= deadline:
                break
            await self._sleep(delay)
            self.retries += 1
            outcome = await self.provider.send(request, self._clock())
        return outcome

    async def close(self) -> None:
        await self.provider.close()
