"""The cycle collector's policy in a server process (process.tune_gc): young collections
on a timer between messages (and past a high allocation threshold), the rest of the heap
walked only by the full collection on a timer."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from sipwake import process


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def tuned() -> Iterator[None]:
    thresholds = gc.get_threshold()
    process.tune_gc()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def old_cycle() -> weakref.ref[Node]:
    """A reference cycle that outlived a young collection, then became garbage: only the
    cycle collector can free it, and only a pass over the older generations."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    gc.collect(0)  # alive now: moved on to the middle generation
    return weakref.ref(a)


def test_older_generations_are_not_walked_as_allocations_go(tuned: None) -> None:
    ref = old_cycle()
    # 200 000 net allocations: 40 young passes. With the interpreter's default policy (or
    # the (5 000, 10, 10) before it) four middle passes would have freed the cycle.
    kept = [[] for _ in range(200_000)]
    assert gc.get_count()[1] >= 30  # the young passes did run
    assert ref() is not None
    del kept
    gc.collect()
    assert ref() is None


async def freed_by(collector: Coroutine[Any, Any, None], ref: weakref.ref[Node]) -> bool:
    """Run ``collector`` as a task for up to 2 s: does it free what ``ref`` points to?"""
    task = asyncio.get_running_loop().create_task(collector)
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if ref() is None:
                return True
        return False
    finally:
        task.cancel()


async def test_the_full_collection_runs_on_its_timer(tuned: None) -> None:
    assert await freed_by(process.collect_periodically(0.01), old_cycle())


def young_cycle() -> weakref.ref[Node]:
    """Cyclic garbage still in the young generation."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


async def test_young_collections_run_on_their_timer(tuned: None) -> None:
    assert await freed_by(process.collect_young(0.01), young_cycle())


async def test_a_late_tick_leaves_the_young_generation_to_the_threshold(tuned: None) -> None:
    """A tick that comes late finds the loop busy: it does not collect."""
    assert not await freed_by(process.collect_young(0.01, busy_after=-1.0), young_cycle())


class Traffic:
    """The engine's received-message count, growing by ``per_check`` each time it is read
    twice (before and after one check of collect_periodically)."""

    def __init__(self, per_check: int) -> None:
        self.count = 0
        self.per_check = per_check
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        if self.reads % 2 == 0:
            self.count += self.per_check
        return self.count


async def test_the_full_collection_waits_for_a_quiet_second(tuned: None) -> None:
    busy = Traffic(per_check=process.QUIET_MESSAGES + 1)
    collector = process.collect_periodically(0.01, busy, latest=60.0, check=0.01)
    assert not await freed_by(collector, old_cycle())
    assert busy.reads >= 20  # it did look, again and again


async def test_a_quiet_second_lets_the_full_collection_run(tuned: None) -> None:
    quiet = Traffic(per_check=process.QUIET_MESSAGES)
    assert await freed_by(process.collect_periodically(0.01, quiet, check=0.01), old_cycle())


async def test_the_full_collection_runs_at_the_latest_however_busy(tuned: None) -> None:
    busy = Traffic(per_check=10**6)
    collector = process.collect_periodically(0.01, busy, latest=0.1, check=0.01)
    assert await freed_by(collector, old_cycle())


class Shed:
    """The engine's count of requests refused for overload."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


@pytest.fixture
def restored() -> Iterator[None]:
    yield
    gc.enable()
    gc.unfreeze()


def test_no_young_collection_while_shedding_and_what_survived_is_frozen(
    tuned: None, restored: None
) -> None:
    shed = Shed()
    pause = process.ShedPause(shed)
    assert not pause.tick() and gc.isenabled()  # nothing refused: collections as usual
    shed.count += 40
    assert pause.tick()
    assert not gc.isenabled()  # the allocation threshold does not collect either
    ref = young_cycle()
    kept = [[] for _ in range(20_000)]  # four thresholds' worth of allocations
    assert ref() is not None
    frozen = gc.get_freeze_count()
    shed.count += 40
    assert pause.tick()  # still shedding: still paused
    assert not pause.tick()  # a tick without a refusal: on again
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + 20_000  # what survived, out of the young passes
    del kept
    gc.collect(0)
    assert ref() is not None  # frozen: no young pass walks it


async def test_the_full_collection_takes_back_what_an_overload_froze(
    tuned: None, restored: None
) -> None:
    shed = Shed()
    pause = process.ShedPause(shed)
    shed.count += 1
    pause.tick()
    ref = young_cycle()
    pause.tick()  # frozen with the cycle in it
    gc.collect()
    assert ref() is not None  # a plain full collection does not look at frozen objects
    assert await freed_by(process.collect_periodically(0.01, pause=pause), ref)
    assert gc.get_freeze_count() == 0  # not frozen again (ShedPause.take_back says why)


async def test_the_young_timer_skips_its_passes_while_shedding(tuned: None, restored: None) -> None:
    refusals = iter(range(10**6))  # a refusal between any two ticks
    pause = process.ShedPause(lambda: next(refusals))
    assert not await freed_by(process.collect_young(0.01, pause=pause), young_cycle())
