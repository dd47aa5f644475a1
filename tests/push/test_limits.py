"""ConcurrencyLimited and Retrying with a scripted fake provider, fake clock and sleep."""

from __future__ import annotations

import asyncio
import random

import pytest

from sipwake.policy.bindings import PushTarget
from sipwake.push.base import Delivered, Permanent, PushOutcome, PushRequest, Transient
from sipwake.push.limits import ConcurrencyLimited, Retrying

REQUEST = PushRequest(PushTarget("apns", "ab"), {}, expires_at=1000.0)


class FakeProvider:
    name = "fake"

    def __init__(self, outcomes: list[PushOutcome], gate: asyncio.Event | None = None) -> None:
        self.outcomes = outcomes
        self.calls: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate = gate
        self.closed = False

    async def send(self, request: PushRequest, now: float) -> PushOutcome:
        self.calls.append(now)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.gate is not None:
            await self.gate.wait()
        self.in_flight -= 1
        return self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]

    async def close(self) -> None:
        self.closed = True


class FakeTime:
    def __init__(self, now: float = 900.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


def retrying(provider: FakeProvider, t: FakeTime, **kw: object) -> Retrying:
    return Retrying(provider, t.clock, sleep=t.sleep, rng=random.Random(1), **kw)  # type: ignore[arg-type]


async def test_concurrency_cap_holds_the_rest() -> None:
    gate = asyncio.Event()
    inner = FakeProvider([Delivered()], gate)
    limited = ConcurrencyLimited(inner, 3)
    tasks = [asyncio.create_task(limited.send(REQUEST, 0.0)) for _ in range(10)]
    await asyncio.sleep(0)
    assert inner.in_flight == 3
    gate.set()
    assert all(isinstance(o, Delivered) for o in await asyncio.gather(*tasks))
    assert inner.max_in_flight == 3 and len(inner.calls) == 10
    await limited.close()
    assert inner.closed


async def test_retries_transient_with_growing_backoff_then_succeeds() -> None:
    t = FakeTime()
    inner = FakeProvider([Transient("500"), Transient("500"), Transient("500"), Delivered("x")])
    outcome = await retrying(inner, t).send(REQUEST, t.now)
    assert outcome == Delivered("x")
    assert len(t.sleeps) == 3
    for n, delay in enumerate(t.sleeps):
        assert 0.1 * 2**n * 0.5 <= delay <= 0.1 * 2**n
    expected = [900.0, 900.0 + t.sleeps[0], 900.0 + sum(t.sleeps[:2]), t.now]
    assert inner.calls == pytest.approx(expected)


async def test_retry_after_is_honoured() -> None:
    t = FakeTime()
    inner = FakeProvider([Transient("429", retry_after=12.0), Delivered()])
    assert await retrying(inner, t).send(REQUEST, t.now) == Delivered()
    assert t.sleeps == [12.0]


async def test_never_retries_past_the_deadline() -> None:
    t = FakeTime(now=995.0)  # expires_at 1000
    inner = FakeProvider([Transient("429", retry_after=6.0)])
    assert await retrying(inner, t).send(REQUEST, t.now) == Transient("429", 6.0)
    assert t.sleeps == [] and len(inner.calls) == 1


async def test_backoff_is_capped_and_attempts_bounded() -> None:
    t = FakeTime(now=0.0)
    inner = FakeProvider([Transient("503")])
    request = PushRequest(PushTarget("apns", "ab"), {})  # no expiry: no deadline
    r = retrying(inner, t, max_attempts=10)
    assert await r.send(request, 0.0) == Transient("503")
    assert len(inner.calls) == 10 and r.retries == 9
    assert max(t.sleeps) <= 5.0


async def test_permanent_and_delivered_are_not_retried() -> None:
    for outcome in (Permanent("BadTopic"), Delivered()):
        t = FakeTime()
        inner = FakeProvider([outcome])
        assert await retrying(inner, t).send(REQUEST, t.now) == outcome
        assert len(inner.calls) == 1 and t.sleeps == []
