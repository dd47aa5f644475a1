"""The deadline store: replace/cancel by key, lazy deletion, ordering, heap and lanes."""

from __future__ import annotations

import gc

from hypothesis import given
from hypothesis import strategies as st

from sipwake.sip.deadlines import Deadlines


def test_empty() -> None:
    d: Deadlines[str] = Deadlines()
    assert d.earliest() is None
    assert d.pop_due(1e9) == []
    assert len(d) == 0


def test_pop_due_in_time_order_and_only_due() -> None:
    d: Deadlines[str] = Deadlines()
    d.set("c", 3.0)
    d.set("a", 1.0)
    d.set("b", 2.0)
    assert d.earliest() == 1.0
    assert d.pop_due(2.0) == ["a", "b"]
    assert d.earliest() == 3.0
    assert "c" in d and "a" not in d
    assert d.pop_due(2.9) == []
    assert d.pop_due(3.0) == ["c"]
    assert d.earliest() is None


def test_ties_fire_in_the_order_set() -> None:
    d: Deadlines[str] = Deadlines()
    for key in "xyzw":
        d.set(key, 5.0)
    assert d.pop_due(5.0) == ["x", "y", "z", "w"]


def test_replace_moves_the_deadline() -> None:
    d: Deadlines[str] = Deadlines()
    d.set("a", 1.0)
    d.set("b", 2.0)
    d.set("a", 3.0)
    assert d.get("a") == 3.0
    assert d.earliest() == 2.0
    assert d.pop_due(2.5) == ["b"]
    assert d.pop_due(10) == ["a"]
    # Earlier than before works too.
    d.set("a", 9.0)
    d.set("a", 0.5)
    assert d.pop_due(1.0) == ["a"]
    assert d.pop_due(100) == []


def test_cancel() -> None:
    d: Deadlines[str] = Deadlines()
    d.set("a", 1.0)
    d.set("b", 2.0)
    assert d.cancel("a") is True
    assert d.cancel("a") is False
    assert d.cancel("never") is False
    assert d.earliest() == 2.0
    assert d.pop_due(5) == ["b"]
    assert len(d) == 0


def test_heap_is_compacted_under_churn() -> None:
    d: Deadlines[int] = Deadlines()
    for i in range(10):
        d.set(i, float(i))
    for _ in range(1000):  # re-arming a retransmit timer over and over
        d.set(3, 50.0)
    assert len(d._heap) < 200
    assert d.pop_due(100) == [0, 1, 2, 4, 5, 6, 7, 8, 9, 3]


ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "after", "cancel", "pop", "tick", "peek"]),
        st.integers(0, 6),
        st.floats(0, 100, allow_nan=False),
    ),
    max_size=200,
)
DELAYS = (0.5, 4.0, 32.0)


@given(ops)
def test_matches_a_dict_model(operations: list[tuple[str, int, float]]) -> None:
    """Heap and lanes together (``set`` at any time, ``set_after`` from a clock that
    mostly moves forward but sometimes goes back) against a plain dict."""
    run(operations, peek_always=True)


@given(ops)
def test_the_earliest_kept_between_questions_matches_the_model(
    operations: list[tuple[str, int, float]],
) -> None:
    """As above, but the earliest is asked for only now and then ("peek"), so what is
    kept of it has to survive runs of replacements, cancellations and firings."""
    run(operations, peek_always=False)


def run(operations: list[tuple[str, int, float]], *, peek_always: bool) -> None:
    d: Deadlines[int] = Deadlines()
    model: dict[int, float] = {}
    clock = 0.0
    for op, key, when in operations:
        if op == "peek":
            pass
        elif op == "tick":
            clock = when  # forward or, now and then, back
        elif op == "after":
            delay = DELAYS[key % len(DELAYS)]
            d.set_after(key, clock, delay)
            model[key] = clock + delay
        elif op == "set":
            d.set(key, when)
            model[key] = when
        elif op == "cancel":
            assert d.cancel(key) == (key in model)
            model.pop(key, None)
        else:
            due = d.pop_due(when)
            expected = sorted((t, k) for k, t in model.items() if t <= when)
            assert sorted(model[k] for k in due) == [t for t, _ in expected]
            assert set(due) == {k for _, k in expected}
            times = [model[k] for k in due]
            assert times == sorted(times)
            for k in due:
                del model[k]
        assert len(d) == len(model)
        if peek_always or op == "peek":
            assert d.earliest() == (min(model.values()) if model else None)


def test_armed_deadlines_are_no_work_for_the_cyclic_gc() -> None:
    """Every finished transaction keeps a timer for up to 64*T1: with atomic keys (a
    transaction's (id, slot)) its heap item and entry must not be objects the collector's
    full passes walk."""
    d: Deadlines[tuple[str, int]] = Deadlines()
    for i in range(100):
        d.set((f"txn{i}", 1), float(i))
    d.set(("txn5", 1), 500.0)  # re-armed: the old item stays in the heap, dead
    gc.collect()  # untracks a tuple once what it holds is untracked: two passes at most
    gc.collect()
    items = [*d._heap, *d._entries.values()]
    assert items and not any(gc.is_tracked(item) for item in items)


def test_fixed_delays_go_to_lanes_in_order_and_mix_with_the_heap() -> None:
    """``set_after`` keeps each delay's deadlines in a FIFO lane (no heap work for the
    64*T1 timers every finished transaction keeps); the earliest across the heap and
    the lanes fires first, ties in the order set."""
    d: Deadlines[str] = Deadlines()
    d.set_after("d1", 0.0, 32.0)
    d.set_after("k1", 1.0, 5.0)
    d.set_after("d2", 2.0, 32.0)
    d.set("retx", 6.0)
    d.set_after("k2", 1.0, 5.0)  # the same when as k1: after it
    assert d._heap == [(6.0, 4, "retx")]
    assert [item[2] for lane in d._lanes.values() for item in lane] == ["d1", "d2", "k1", "k2"]
    assert d.earliest() == 6.0
    assert d.pop_due(6.0) == ["k1", "retx", "k2"]
    assert d.pop_due(40.0) == ["d1", "d2"]
    assert len(d) == 0 and d.earliest() is None


def test_a_clock_that_goes_back_does_not_break_a_lane() -> None:
    d: Deadlines[str] = Deadlines()
    d.set_after("late", 10.0, 32.0)
    d.set_after("early", 5.0, 32.0)  # 37 < 42: out of the lane's order, so in the heap
    assert [item[2] for item in d._heap] == ["early"]
    assert d.pop_due(100.0) == ["early", "late"]


def test_lanes_are_compacted_under_churn() -> None:
    """Re-arming and cancelling leave dead lane items behind; they are dropped once they
    outnumber the live ones, the live ones keeping their order."""
    d: Deadlines[int] = Deadlines()
    for i in range(10):
        d.set_after(i, float(i), 32.0)
    for n in range(1000):
        d.set_after(100, 10.0 + n, 32.0)  # a transaction's life timer replaced again and again
        d.cancel(100)
    assert sum(len(lane) for lane in d._lanes.values()) < 200
    assert d.pop_due(100.0) == list(range(10))
