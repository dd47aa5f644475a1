"""Bindings kept packed (storage/packed.py): lossless, and invisible to the cyclic GC, so
the stores' in-memory bindings cost no collection anything however many there are."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwake.policy.bindings import Binding
from sipwake.storage.base import live
from sipwake.storage.memory import MemoryStore
from sipwake.storage.packed import expired, pack, unpack
from sipwake.storage.sqlite import SQLiteStore

from .test_codec import bindings
from .util import NOW, append, binding

AOR = "sip:a@example.com"


@given(st.lists(bindings, max_size=4))
def test_round_trip(items: list[Binding]) -> None:
    assert unpack(AOR, pack(items)) == items


@given(st.lists(bindings, max_size=4), st.floats(allow_nan=False))
def test_expiry_read_without_unpacking(items: list[Binding], now: float) -> None:
    stored = pack(items)
    assert unpack(AOR, stored, now) == live(items, now)
    assert expired(stored, now) == len(items) - len(live(items, now))


def test_packed_bindings_are_untracked_by_the_gc() -> None:
    # Every optional part filled: a FlowRef, a PushTarget, a Path, extra parameters.
    full, bare = binding(AOR, 1), binding(AOR, 2, flow=None, push=None, path=(), extra=())
    stored = pack([full, bare])
    # A collection untracks a tuple whose items are untracked by then; in the order it
    # meets them an outer tuple may come before its inner ones: one pass per level
    # (the AoR's tuple, a binding's, its FlowRef's) settles them all.
    for _ in range(3):
        gc.collect()
    assert not gc.is_tracked(stored)
    assert not any(gc.is_tracked(row) for row in stored)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_stores_bindings_leave_no_object_for_the_gc(kind: str, tmp_path: Path) -> None:
    def objects() -> int:
        """Binding and FlowRef objects alive in this process (other tests' included)."""
        gc.collect()
        return sum(type(o).__name__ in ("Binding", "FlowRef") for o in gc.get_objects())

    store = MemoryStore() if kind == "memory" else SQLiteStore.open(tmp_path / "s.db")
    try:
        before = objects()
        for n in range(50):
            aor = f"sip:u{n}@example.com"
            await store.update(aor, append(binding(aor, n)), NOW)
        assert objects() <= before  # kept as Binding objects: 100 more
        assert len(await store.lookup("sip:u7@example.com", NOW)) == 1
    finally:
        await store.close()
