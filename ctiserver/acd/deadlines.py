"""Keyed timers for a pure state machine: schedule, cancel, and take what is due.

There is no clock here: the owner asks for the timers due at an instant it
passes in. Each key has at most one live timer; rescheduling or cancelling
leaves the old heap entry behind to be skipped when it surfaces, which keeps
both operations O(log n). Entries due at the same instant come out in the
order they were scheduled, so replays are deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from itertools import count
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)

# Rebuild the heap when skipped entries outnumber live ones by this factor.
_COMPACT_FACTOR = 2
_COMPACT_MIN = 1024


class Deadlines(Generic[Key]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Key]] = []
        self._live: dict[Key, int] = {}
        self._sequence = count()

    def __len__(self) -> int:
        return len(self._live)

    def schedule(self, key: Key, at: float) -> None:
        """Set the key's timer to `at`, replacing any earlier one."""
        sequence = next(self._sequence)
        self._live[key] = sequence
        heapq.heappush(self._heap, (at, sequence, key))
        if len(self._heap) > _COMPACT_MIN + _COMPACT_FACTOR * len(self._live):
            self._heap = [entry for entry in self._heap if self._live.get(entry[2]) == entry[1]]
            heapq.heapify(self._heap)

    def cancel(self, key: Key) -> None:
        self._live.pop(key, None)

    def next_at(self) -> float | None:
        self._drop_dead_head()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> tuple[float, Key] | None:
        """The earliest live timer at or before `now`, removed; None if there is none."""
        self._drop_dead_head()
        if not self._heap or self._heap[0][0] > now:
            return None
        at, _, key = heapq.heappop(self._heap)
        del self._live[key]
        return at, key

    def _drop_dead_head(self) -> None:
        heap = self._heap
        while heap and self._live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
