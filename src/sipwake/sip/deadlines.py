"""One store for every deadline (the aioquic ``get_timer``/``handle_timer`` shape): a heap,
and FIFO lanes for fixed delays.

Each key has at most one deadline; setting it again replaces it and cancelling drops it.
Replaced and cancelled entries are left in place and skipped when they surface (lazy
deletion) so both are O(1) apart from the insertion; everything is rebuilt when dead
entries outnumber live ones, so a churn of re-armed retransmission timers cannot grow it
unbounded.

Why lanes: every finished transaction keeps a timer for up to 64*T1 (Timers D, H, J, L, M,
RFC 3261 §17 and RFC 6026), so under load the store holds one entry per transaction of the
last 32 s -- a few hundred thousand at a few thousand calls/s -- and each heap push or pop
costs ~18 tuple comparisons at that size, growing with how long the server has been busy.
Those timers are ``now + a constant``; with a clock that only moves forward, one constant's
deadlines arrive already in order, so a deque per delay (``set_after``) takes them in O(1)
and the earliest of each lane is its head. The heap keeps the rest (retransmission
intervals that double, the calls' own deadlines), and an entry that would break a lane's
order (a clock that went back) goes to the heap too.

The earliest deadline is asked for after every message (the engine re-arms its one timer,
app/engine.py ``_arm_timer``) and finding it walks the heap's top and every lane's head:
3 % of the server's CPU at its call capacity. It is kept instead, and found again only
when the entry that held it is replaced, cancelled or fired.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """Map ``key -> when`` ordered by ``when``; ties fire in the order they were set."""

    __slots__ = ("_dead", "_earliest", "_entries", "_heap", "_known", "_lanes", "_seq")

    def __init__(self) -> None:
        # Items are (when, seq, key), in the heap or in a lane: ``seq`` keeps keys from ever
        # being compared, and an item is live while ``_entries[key]`` still holds its seq.
        # Tuples, not lists: a tuple of a float, an int and an atomic key (a transaction's
        # timer key) is untracked by the cyclic GC after its first pass, and every finished
        # transaction keeps a timer for up to 64*T1 -- as lists they were objects for every
        # full pass to walk.
        self._heap: list[tuple[float, int, K]] = []
        self._lanes: dict[float, deque[tuple[float, int, K]]] = {}
        self._entries: dict[K, tuple[float, int]] = {}
        self._seq = 0
        self._dead = 0
        # The earliest live deadline while _known; otherwise _first() finds it again.
        self._earliest: float | None = None
        self._known = True

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def set(self, key: K, when: float) -> None:
        """Arm (or re-arm) the deadline for ``key``."""
        heapq.heappush(self._heap, (when, self._arm(key, when), key))
        self._maybe_compact()

    def set_after(self, key: K, now: float, delay: float) -> None:
        """Arm (or re-arm) ``key`` at ``now + delay``, in the lane of ``delay``: O(1) for
        a fixed delay and a clock that does not go back (otherwise as ``set``)."""
        when = now + delay
        seq = self._arm(key, when)
        lane = self._lanes.get(delay)
        if lane is None:
            lane = self._lanes[delay] = deque()
        if lane and lane[-1][0] > when:
            heapq.heappush(self._heap, (when, seq, key))
        else:
            lane.append((when, seq, key))
        self._maybe_compact()

    def cancel(self, key: K) -> bool:
        """Drop the deadline for ``key``; False when it had none."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        if entry[0] == self._earliest:
            self._known = False
        self._dead += 1
        self._maybe_compact()
        return True

    def earliest(self) -> float | None:
        """The earliest live deadline, or None when nothing is armed."""
        if not self._known:
            item, _ = self._first()
            self._earliest = None if item is None else item[0]
            self._known = True
        return self._earliest

    def pop_due(self, now: float) -> list[K]:
        """Remove and return every key whose deadline is ``<= now``, earliest first."""
        entries = self._entries
        due: list[K] = []
        while True:
            item, lane = self._first()
            if item is None or item[0] > now:
                self._earliest = None if item is None else item[0]
                self._known = True
                return due
            if lane is None:
                heapq.heappop(self._heap)
            else:
                lane.popleft()
            key = item[2]
            del entries[key]
            due.append(key)

    def _arm(self, key: K, when: float) -> int:
        entries = self._entries
        old = entries.get(key)
        if old is not None:
            self._dead += 1
            if old[0] == self._earliest:
                self._known = False  # the earliest may have moved later
        self._seq = seq = self._seq + 1
        entries[key] = (when, seq)
        if self._known and (self._earliest is None or when < self._earliest):
            self._earliest = when
        return seq

    def _first(self) -> tuple[tuple[float, int, K] | None, deque[tuple[float, int, K]] | None]:
        """The earliest live item and the lane holding it (None: the heap), dropping the
        dead items found on top of the heap and at the head of each lane."""
        entries = self._entries
        heap = self._heap
        best: tuple[float, int, K] | None = None
        while heap:
            top = heap[0]
            entry = entries.get(top[2])
            if entry is not None and entry[1] == top[1]:
                best = top
                break
            heapq.heappop(heap)
            self._dead -= 1
        where: deque[tuple[float, int, K]] | None = None
        for lane in self._lanes.values():
            while lane:
                head = lane[0]
                entry = entries.get(head[2])
                if entry is not None and entry[1] == head[1]:
                    # (when, seq): ties go to the one set first, wherever it is.
                    if best is None or (
                        head[0] < best[0] or (head[0] == best[0] and head[1] < best[1])
                    ):
                        best, where = head, lane
                    break
                lane.popleft()
                self._dead -= 1
        return best, where

    def _maybe_compact(self) -> None:
        if self._dead > 64 and self._dead > len(self._entries):
            self._compact()

    def _compact(self) -> None:
        """Keep the live items only: the heap re-heapified, each lane in its order."""
        entries = self._entries
        live: list[tuple[float, int, K]] = []
        for item in self._heap:
            entry = entries.get(item[2])
            if entry is not None and entry[1] == item[1]:
                live.append(item)
        heapq.heapify(live)
        self._heap = live
        for delay, lane in list(self._lanes.items()):
            kept: deque[tuple[float, int, K]] = deque()
            for item in lane:
                entry = entries.get(item[2])
                if entry is not None and entry[1] == item[1]:
                    kept.append(item)
            if kept:
                self._lanes[delay] = kept
            else:
                del self._lanes[delay]
        self._dead = 0
