"""Running totals for real time: today's, the sliding window's and today's by interval,
kept up to date by parts instead of recomputed from every fact each second.

`CallSums` holds each call's parts (`figures.call_parts`: what its stays, the
call centre-wide, its IVR sessions and its handlings add, each at the instant
that places it) and their sums per group: today [day start, day end), the window
[now - window_s, now) and today per interval. When a call changes, its parts are
replaced: the old ones are taken out of every sum they are in, the new ones
added. As time passes, parts placed before the window's start leave it.

`AgentTime` does the same for agents' time (states and holds), which is split
at a period's edges: closed spans are added once to today and, while they are
inside the window, to the window; spans crossing the window's start and spans
still open (to now) are added when read, one per agent or so.

Sums never drift to a false value where there is nothing: every field counts the
parts that gave it something, and a field whose parts are all taken out again
is exactly zero (a ratio over it is null, not 1e-13 / 3e-13). `longest_wait_s`
is a maximum, which cannot be taken back out: it is kept for today as a running
maximum and is not one of the real-time figures.

Pure: no I/O, time is an argument.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from typing import Final

from ctiserver.metrics.figures import AgentTotals, Part, QueueTotals, add_state_time

# A part's nonzero fields: (names, values); the names tuple is shared by every part
# with the same fields (a call of each kind gives the same few), to keep parts small.
Items = tuple[tuple[str, ...], tuple[float, ...]]

HOLD: Final = "hold"  # an AgentTime span of hold (agent_report's hold_s), not a state
_LONGEST: Final = "longest_wait_s"
_BY_REASON: Final = "not_ready_by_reason"
_REASON: Final = "~"  # items of not_ready_by_reason: "~<reason>" (no field starts so)
_QUEUE_FIELDS: Final = tuple(f.name for f in fields(QueueTotals))
_AGENT_FIELDS: Final = tuple(f.name for f in fields(AgentTotals))
_HOLD_NAMES: Final = ("hold_s",)


_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}


def items_of(totals: QueueTotals | AgentTotals) -> Items:
    """The nonzero fields of `totals`."""
    names: list[str] = []
    values: list[float] = []
    for name in _QUEUE_FIELDS if isinstance(totals, QueueTotals) else _AGENT_FIELDS:
        value = getattr(totals, name)
        if name == _BY_REASON:
            for reason, seconds in value.items():
                if seconds:
                    names.append(_REASON + reason)
                    values.append(seconds)
        elif value:
            names.append(name)
            values.append(value)
    key = tuple(names)
    return _NAMES.setdefault(key, key), tuple(values)


class Sum:
    """A sum of parts' items that parts can be taken back out of."""

    __slots__ = ("nonzero", "values")

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.nonzero: dict[str, int] = {}  # parts that gave each field something

    def add(self, items: Items) -> None:
        values, nonzero = self.values, self.nonzero
        for name, value in zip(*items, strict=True):
            if name == _LONGEST:
                values[name] = max(values.get(name, 0.0), value)
                continue
            values[name] = values.get(name, 0) + value
            nonzero[name] = nonzero.get(name, 0) + 1

    def take(self, items: Items) -> None:
        values, nonzero = self.values, self.nonzero
        for name, value in zip(*items, strict=True):
            if name == _LONGEST:
                continue  # a maximum cannot be taken back (not a real-time figure)
            left = nonzero[name] - 1
            if left:
                nonzero[name] = left
                values[name] -= value
            else:  # nothing gives it anything any more: exactly zero
                del nonzero[name]
                del values[name]

    def queue_totals(self) -> QueueTotals:
        return QueueTotals(**self.values)  # type: ignore[arg-type]

    def agent_totals(self) -> AgentTotals:
        return _agent_totals(self.values)


# A part as counted: (instant, group, is an agent part, items). A plain tuple of atoms,
# which the collector stops tracking: a window holds hundreds of thousands, and
# each tracked object would be visited by every full collection.
_Placed = tuple[float, str | None, bool, Items]


_order = itertools.count()  # numbers parts and spans: unique, in the order given


class CallSums:
    """Per group: queue parts by queue (None: centre-wide), agent parts by agent (None:
    all agents), for today and for the window; queue parts also by interval of today."""

    def __init__(
        self,
        day_start: float,
        day_end: float,
        window_s: float,
        interval_of: Callable[[float], float],
    ) -> None:
        self._window_s = window_s
        self._interval_of = interval_of
        self.reset(day_start, day_end, float("-inf"))

    def reset(self, day_start: float, day_end: float, now: float) -> None:
        """Nothing counted: a new day, or all parts given again."""
        self.day_start, self.day_end = day_start, day_end
        self.now = now
        self.today_queues: dict[str | None, Sum] = {}
        self.today_agents: dict[str | None, Sum] = {}
        self.window_queues: dict[str | None, Sum] = {}
        self.window_agents: dict[str | None, Sum] = {}
        self.series: dict[str | None, dict[float, Sum]] = {}
        self._calls: dict[str, tuple[int, ...]] = {}  # call -> its parts' numbers
        self._placed: dict[int, _Placed] = {}  # number -> part, while anything needs it
        self._in_window: set[int] = set()  # parts in the window's sums
        self._window_heap: list[tuple[float, int]] = []  # (instant, number), lazily
        self._future: list[tuple[float, int]] = []  # placed at or after now
        self._forgotten: set[int] = set()  # parts of forgotten calls, kept for the window

    @property
    def window_start(self) -> float:
        return self.now - self._window_s

    def calls(self) -> Iterable[str]:
        return self._calls.keys()

    def advance(self, now: float) -> None:
        """The window is [now - window_s, now) from here on."""
        self.now = now
        start = self.window_start
        while self._future and self._future[0][0] < now:
            at, number = heapq.heappop(self._future)
            if number in self._placed and at >= start:
                self._join_window(number, self._placed[number])
        while self._window_heap and self._window_heap[0][0] < start:
            number = heapq.heappop(self._window_heap)[1]
            if number in self._in_window:
                self._in_window.discard(number)
                self._take_from(self._window(self._placed[number]), self._placed[number])
            if number in self._forgotten:
                self._forgotten.discard(number)
                del self._placed[number]

    def replace(
        self, call_id: str, queue_parts: Iterable[Part], agent_parts: Iterable[Part]
    ) -> None:
        """The call's parts are these from now on."""
        new: list[_Placed] = [(p.at, p.key, False, items_of(p.totals)) for p in queue_parts]
        new.extend((p.at, p.key, True, items_of(p.totals)) for p in agent_parts)
        # Most events change one part of a call or none: those that are the same stay.
        unchanged: dict[_Placed, list[int]] = {}
        for number in self._calls.pop(call_id, ()):
            unchanged.setdefault(self._placed[number], []).append(number)
        numbers = []
        for placed in new:
            same = unchanged.get(placed)
            numbers.append(same.pop() if same else self._add(placed))
        for left in unchanged.values():
            for number in left:
                self._take(number)
        if numbers:
            self._calls[call_id] = tuple(numbers)
        if len(self._window_heap) > 2 * len(self._in_window) + 1024:
            # Replaced parts wait in the heap until their instant leaves the window:
            # drop them now and then, so it holds about the parts in the window.
            self._window_heap = [e for e in self._window_heap if e[1] in self._in_window]
            heapq.heapify(self._window_heap)

    def forget(self, call_id: str) -> None:
        """Stop following a call: its parts stay in today's sums, and in the window's
        until they leave it, but can no longer be replaced."""
        for number in self._calls.pop(call_id, ()):
            if number in self._in_window or self._placed[number][0] >= self.now:
                self._forgotten.add(number)
            else:
                del self._placed[number]

    def _today(self, placed: _Placed) -> bool:
        return self.day_start <= placed[0] < self.day_end

    def _window(self, placed: _Placed) -> dict[str | None, Sum]:
        return self.window_agents if placed[2] else self.window_queues

    def _add(self, placed: _Placed) -> int:
        number = next(_order)
        self._placed[number] = placed
        at, key, agent, items = placed
        if self._today(placed):
            self._add_to(self.today_agents if agent else self.today_queues, placed)
            if not agent:
                by_interval = self.series.setdefault(key, {})
                by_interval.setdefault(self._interval_of(at), Sum()).add(items)
        if at >= self.now:
            heapq.heappush(self._future, (at, number))
        elif at >= self.window_start:
            self._join_window(number, placed)
        return number

    def _join_window(self, number: int, placed: _Placed) -> None:
        self._add_to(self._window(placed), placed)
        self._in_window.add(number)
        heapq.heappush(self._window_heap, (placed[0], number))

    def _take(self, number: int) -> None:
        placed = self._placed.pop(number)
        at, key, agent, items = placed
        if self._today(placed):
            self._take_from(self.today_agents if agent else self.today_queues, placed)
            if not agent:
                self.series[key][self._interval_of(at)].take(items)
        if number in self._in_window:
            self._in_window.discard(number)
            self._take_from(self._window(placed), placed)

    @staticmethod
    def _add_to(sums: dict[str | None, Sum], placed: _Placed) -> None:
        _, key, agent, items = placed
        sums.setdefault(key, Sum()).add(items)
        if agent:  # all agents: the sum of every agent's
            sums.setdefault(None, Sum()).add(items)

    @staticmethod
    def _take_from(sums: dict[str | None, Sum], placed: _Placed) -> None:
        _, key, agent, items = placed
        sums[key].take(items)
        if agent:
            sums[None].take(items)


# A closed span of an agent's time: (start, number, agent, state or HOLD, reason, end);
# a plain tuple of atoms, untracked by the collector like _Placed. The number orders
# spans starting at the same instant.
_Span = tuple[float, int, str, str, str | None, float]


def _span_items(state: str, reason: str | None, seconds: float) -> Items:
    if state == HOLD:
        return _HOLD_NAMES, (seconds,)
    totals = AgentTotals()
    add_state_time(totals, state, reason, seconds)
    return items_of(totals)


def add_time(totals: AgentTotals, state: str, reason: str | None, seconds: float) -> None:
    """`seconds` of a span (a state, or HOLD) into `totals`."""
    if state == HOLD:
        totals.hold_s += seconds
    else:
        add_state_time(totals, state, reason, seconds)


class AgentTime:
    """Agents' time in states and on hold: today's and the window's, by agent (None:
    all agents). Closed spans are given once (`add_closed`); open ones are given
    at every read (`read`), as they run to now."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self.reset(float("-inf"), float("inf"), float("-inf"))

    def reset(self, day_start: float, day_end: float, now: float) -> None:
        self.day_start, self.day_end = day_start, day_end
        self.now = now
        self._today: dict[str | None, Sum] = {}
        self._inside: dict[str | None, Sum] = {}  # closed spans wholly in the window
        self._inside_heap: list[_Span] = []  # those, by start
        self._crossing: list[_Span] = []  # closed spans across the window's start

    @property
    def window_start(self) -> float:
        return self.now - self._window_s

    def advance(self, now: float) -> None:
        self.now = now
        start = self.window_start
        while self._inside_heap and self._inside_heap[0][0] < start:
            span = heapq.heappop(self._inside_heap)
            begin, _, agent_id, state, reason, end = span
            items = _span_items(state, reason, end - begin)
            self._inside[agent_id].take(items)
            self._inside[None].take(items)
            if end > start:
                self._crossing.append(span)
        self._crossing = [s for s in self._crossing if s[5] > start]

    def add_closed(
        self, agent_id: str, state: str, reason: str | None, start: float, end: float
    ) -> None:
        if state == "logged_out" or end <= start:
            return
        seconds = min(end, self.day_end) - max(start, self.day_start)
        if seconds > 0:
            items = _span_items(state, reason, seconds)
            self._today.setdefault(agent_id, Sum()).add(items)
            self._today.setdefault(None, Sum()).add(items)
        span: _Span = (start, next(_order), agent_id, state, reason, end)
        window_start = self.window_start
        if start >= window_start:
            items = _span_items(state, reason, end - start)
            self._inside.setdefault(agent_id, Sum()).add(items)
            self._inside.setdefault(None, Sum()).add(items)
            heapq.heappush(self._inside_heap, span)
        elif end > window_start:
            self._crossing.append(span)

    def read(
        self,
        counts_today: Mapping[str | None, Sum],
        counts_window: Mapping[str | None, Sum],
        open_spans: Iterable[tuple[str, str, str | None, float]],
    ) -> tuple[dict[str | None, AgentTotals], dict[str | None, AgentTotals]]:
        """(today, window) per agent (None: all agents): the call counts given plus the
        time; `open_spans` are (agent, state or HOLD, reason, since), running to now."""
        now, window_start = self.now, self.window_start
        day_start, day_end = self.day_start, self.day_end
        today = _merge(counts_today, self._today)
        window = _merge(counts_window, self._inside)

        def give(
            into: dict[str | None, AgentTotals], span: tuple[str, str, str | None, float]
        ) -> None:
            agent_id, state, reason, seconds = span
            for key in (agent_id, None):
                totals = into.get(key)
                if totals is None:
                    totals = into[key] = AgentTotals()
                add_time(totals, state, reason, seconds)

        for _, _, agent_id, state, reason, end in self._crossing:
            seconds = min(end, now) - window_start
            if seconds > 0:
                give(window, (agent_id, state, reason, seconds))
        for agent_id, state, reason, since in open_spans:
            if state == "logged_out":
                continue
            seconds = min(now, day_end) - max(since, day_start)
            if seconds > 0:
                give(today, (agent_id, state, reason, seconds))
            seconds = now - max(since, window_start)
            if seconds > 0:
                give(window, (agent_id, state, reason, seconds))
        return today, window


def _merge(*groups: Mapping[str | None, Sum]) -> dict[str | None, AgentTotals]:
    """The groups' sums added, per key, as totals."""
    merged: dict[str | None, dict[str, float]] = {}
    for group in groups:
        for key, total in group.items():
            values = merged.get(key)
            if values is None:
                merged[key] = dict(total.values)
            else:
                for name, value in total.values.items():
                    values[name] = values.get(name, 0) + value
    return {key: _agent_totals(values) for key, values in merged.items()}


def _agent_totals(values: Mapping[str, float]) -> AgentTotals:
    reasons = {n[1:]: v for n, v in values.items() if n[0] == _REASON}
    if not reasons:
        return AgentTotals(**values)  # type: ignore[arg-type]
    fields_ = {n: v for n, v in values.items() if n[0] != _REASON}
    return AgentTotals(**fields_, not_ready_by_reason=reasons)  # type: ignore[arg-type]
