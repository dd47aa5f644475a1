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
        # Heap items are [when, seq, key, alive]; ``seq`` keeps keys from ever being compared.
        self._heap: list[list[object]] = []
        self._entries: dict[K, list[object]] = {}
        self._seq = 0
        self._dead = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]  # type: ignore[return-value]

    def set(self, key: K, when: float) -> None:
        """Arm (or re-arm) the deadline for ``key``."""
        old = self._entries.get(key)
        if old is not None:
            old[3] = False
            self._dead += 1
        self._seq += 1
        entry: list[object] = [when, self._seq, key, True]
        self._entries[key] = entry
        heapq.heappush(self._heap, entry)
        if self._dead > 64 and self._dead > len(self._entries):
            self._compact()

    def cancel(self, key: K) -> bool:
        """Drop the deadline for ``key``; False when it had none."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        entry[3] = False
        self._dead += 1
        if self._dead > 64 and self._dead > len(self._entries):
            self._compact()
        return True

    def earliest(self) -> float | None:
        """The earliest live deadline, or None when nothing is armed."""
        heap = self._heap
        while heap and not heap[0][3]:
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0][0] if heap else None  # type: ignore[return-value]

    def pop_due(self, now: float) -> list[K]:
        """Remove and return every key whose deadline is ``<= now``, earliest first."""
        heap = self._heap
        due: list[K] = []
        while heap:
            top = heap[0]
            if not top[3]:
                heapq.heappop(heap)
                self._dead -= 1
                continue
            if top[0] > now:  # type: ignore[operator]
                break
            heapq.heappop(heap)
            key: K = top[2]  # type: ignore[assignment]
            del self._entries[key]
            due.append(key)
        return due

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if e[3]]
        heapq.heapify(self._heap)
        self._dead = 0
