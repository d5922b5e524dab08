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
from dataclasses import dataclass, fields
from typing import Final

from ctiserver.metrics.figures import AgentTotals, Part, QueueTotals, add_state_time

# A part's nonzero fields: (names, values); the names tuple is shared by every part
# with the same fields (a call of each kind gives the same few), to keep parts small.
Items = tuple[tuple[str, ...], tuple[float, ...]]

HOLD: Final = "hold"  # an AgentTime span of hold (agent_report's hold_s), not a state
_LONGEST: Final = "longest_wait_s"
_BY_REASON: Final = "not_ready_by_reason"
_REASON: Final = "reason:"  # items of not_ready_by_reason: "reason:<reason>"
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
        totals = AgentTotals()
        for name, value in self.values.items():
            if name.startswith(_REASON):
                totals.not_ready_by_reason[name[len(_REASON) :]] = value
            else:
                setattr(totals, name, value)
        return totals


@dataclass(slots=True, eq=False)
class _Placed:
    """A part as counted: where it is, and whether it is (still) in the window's sums."""

    at: float
    key: str | None
    agent: bool  # an agent part (else queue or centre-wide)
    items: Items
    in_window: bool = False
    gone: bool = False  # replaced: the heaps drop it when they reach it


_order = itertools.count()


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
        self._parts: dict[str, list[_Placed]] = {}
        self._in_window: list[tuple[float, int, _Placed]] = []  # heap by instant
        self._future: list[tuple[float, int, _Placed]] = []  # placed at or after now
        self._window_count = 0  # parts in the window's sums

    @property
    def window_start(self) -> float:
        return self.now - self._window_s

    def calls(self) -> Iterable[str]:
        return self._parts.keys()

    def advance(self, now: float) -> None:
        """The window is [now - window_s, now) from here on."""
        self.now = now
        start = self.window_start
        while self._future and self._future[0][0] < now:
            placed = heapq.heappop(self._future)[2]
            if not placed.gone and placed.at >= start:
                self._join_window(placed)
        while self._in_window and self._in_window[0][0] < start:
            placed = heapq.heappop(self._in_window)[2]
            if placed.in_window:
                self._take_from(self._window(placed), placed)
                placed.in_window = False
                self._window_count -= 1

    def replace(
        self, call_id: str, queue_parts: Iterable[Part], agent_parts: Iterable[Part]
    ) -> None:
        """The call's parts are these from now on."""
        for placed in self._parts.pop(call_id, ()):
            self._take(placed)
        new = [_Placed(p.at, p.key, False, items_of(p.totals)) for p in queue_parts]
        new.extend(_Placed(p.at, p.key, True, items_of(p.totals)) for p in agent_parts)
        for placed in new:
            self._add(placed)
        if new:
            self._parts[call_id] = new
        if len(self._in_window) > 2 * self._window_count + 1024:
            # Replaced parts wait in the heap until their instant leaves the window:
            # drop them now and then, so it holds about the parts in the window.
            self._in_window = [e for e in self._in_window if e[2].in_window]
            heapq.heapify(self._in_window)

    def forget(self, call_id: str) -> None:
        """Stop following a call: its parts stay in today's sums, and in the window's
        until they leave it, but can no longer be replaced."""
        self._parts.pop(call_id, None)

    def _today(self, placed: _Placed) -> bool:
        return self.day_start <= placed.at < self.day_end

    def _window(self, placed: _Placed) -> dict[str | None, Sum]:
        return self.window_agents if placed.agent else self.window_queues

    def _add(self, placed: _Placed) -> None:
        if self._today(placed):
            self._add_to(self.today_agents if placed.agent else self.today_queues, placed)
            if not placed.agent:
                by_interval = self.series.setdefault(placed.key, {})
                start = self._interval_of(placed.at)
                by_interval.setdefault(start, Sum()).add(placed.items)
        if placed.at >= self.now:
            heapq.heappush(self._future, (placed.at, next(_order), placed))
        elif placed.at >= self.window_start:
            self._join_window(placed)

    def _join_window(self, placed: _Placed) -> None:
        self._add_to(self._window(placed), placed)
        placed.in_window = True
        self._window_count += 1
        heapq.heappush(self._in_window, (placed.at, next(_order), placed))

    def _take(self, placed: _Placed) -> None:
        placed.gone = True
        if self._today(placed):
            self._take_from(self.today_agents if placed.agent else self.today_queues, placed)
            if not placed.agent:
                self.series[placed.key][self._interval_of(placed.at)].take(placed.items)
        if placed.in_window:
            self._take_from(self._window(placed), placed)
            placed.in_window = False
            self._window_count -= 1

    @staticmethod
    def _add_to(sums: dict[str | None, Sum], placed: _Placed) -> None:
        sums.setdefault(placed.key, Sum()).add(placed.items)
        if placed.agent:  # all agents: the sum of every agent's
            sums.setdefault(None, Sum()).add(placed.items)

    @staticmethod
    def _take_from(sums: dict[str | None, Sum], placed: _Placed) -> None:
        sums[placed.key].take(placed.items)
        if placed.agent:
            sums[None].take(placed.items)


@dataclass(slots=True, eq=False)
class _Span:
    agent_id: str
    state: str  # an agent state, or HOLD
    reason: str | None
    start: float
    end: float


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
        self._inside_heap: list[tuple[float, int, _Span]] = []  # those, by start
        self._crossing: list[_Span] = []  # closed spans across the window's start

    @property
    def window_start(self) -> float:
        return self.now - self._window_s

    def advance(self, now: float) -> None:
        self.now = now
        start = self.window_start
        while self._inside_heap and self._inside_heap[0][0] < start:
            span = heapq.heappop(self._inside_heap)[2]
            items = _span_items(span.state, span.reason, span.end - span.start)
            self._inside[span.agent_id].take(items)
            self._inside[None].take(items)
            if span.end > start:
                self._crossing.append(span)
        self._crossing = [s for s in self._crossing if s.end > start]

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
        span = _Span(agent_id, state, reason, start, end)
        window_start = self.window_start
        if start >= window_start:
            items = _span_items(state, reason, end - start)
            self._inside.setdefault(agent_id, Sum()).add(items)
            self._inside.setdefault(None, Sum()).add(items)
            heapq.heappush(self._inside_heap, (start, next(_order), span))
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

        for span in self._crossing:
            seconds = min(span.end, now) - window_start
            if seconds > 0:
                give(window, (span.agent_id, span.state, span.reason, seconds))
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


def _merge(*sums: Mapping[str | None, Sum]) -> dict[str | None, AgentTotals]:
    out: dict[str | None, AgentTotals] = {}
    for group in sums:
        for key, total in group.items():
            have = out.get(key)
            if have is None:
                out[key] = total.agent_totals()
            else:
                have.add(total.agent_totals())
    return out
