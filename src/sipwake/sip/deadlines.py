"""One heap for every deadline (the aioquic ``get_timer``/``handle_timer`` shape).

Each key has at most one deadline; setting it again replaces it and cancelling drops it.
Replaced and cancelled heap entries are left in place and skipped when they surface (lazy
deletion) so both are O(1) apart from the push; the heap is rebuilt when dead entries
outnumber live ones, so a churn of re-armed retransmission timers cannot grow it unbounded.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """Map ``key -> when`` ordered by ``when``; ties fire in the order they were set."""

    __slots__ = ("_dead", "_entries", "_heap", "_seq")

    def __init__(self) -> None:
        # Heap items are (when, seq, key): ``seq`` keeps keys from ever being compared, and
        # an item is live while ``_entries[key]`` still holds its seq. Tuples, not lists:
        # a tuple of a float, an int and an atomic key (a transaction's timer key) is
        # untracked by the cyclic GC after its first pass, and every finished transaction
        # keeps a timer for up to 64*T1 -- as lists they were objects for every full pass
        # to walk.
        self._heap: list[tuple[float, int, K]] = []
        self._entries: dict[K, tuple[float, int]] = {}
        self._seq = 0
        self._dead = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def set(self, key: K, when: float) -> None:
        """Arm (or re-arm) the deadline for ``key``."""
        entries = self._entries
        if key in entries:
            self._dead += 1
        self._seq = seq = self._seq + 1
        entries[key] = (when, seq)
        heapq.heappush(self._heap, (when, seq, key))
        if self._dead > 64 and self._dead > len(entries):
            self._compact()

    def cancel(self, key: K) -> bool:
        """Drop the deadline for ``key``; False when it had none."""
        if self._entries.pop(key, None) is None:
            return False
        self._dead += 1
        if self._dead > 64 and self._dead > len(self._entries):
            self._compact()
        return True

    def earliest(self) -> float | None:
        """The earliest live deadline, or None when nothing is armed."""
        heap = self._heap
        entries = self._entries
        while heap:
            when, seq, key = heap[0]
            entry = entries.get(key)
            if entry is not None and entry[1] == seq:
                return when
            heapq.heappop(heap)
            self._dead -= 1
        return None

    def pop_due(self, now: float) -> list[K]:
        """Remove and return every key whose deadline is ``<= now``, earliest first."""
        heap = self._heap
        entries = self._entries
        due: list[K] = []
        while heap:
            when, seq, key = heap[0]
            entry = entries.get(key)
            if entry is None or entry[1] != seq:
                heapq.heappop(heap)
                self._dead -= 1
                continue
            if when > now:
                break
            heapq.heappop(heap)
            del entries[key]
            due.append(key)
        return due

    def _compact(self) -> None:
        entries = self._entries
        self._heap = [(when, seq, key) for key, (when, seq) in entries.items()]
        heapq.heapify(self._heap)
        self._dead = 0
