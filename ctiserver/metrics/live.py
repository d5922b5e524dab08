"""Real-time figures (METRICS.md "Intervals and windows"): today and a sliding window,
per queue, per agent and centre-wide, kept from live events; refreshed once a second
(less often when a refresh gets slow: at most MAX_LOOP_SHARE of the event loop).

`LiveMetrics` loads today's events once at start (from local midnight in the
centre's time zone, less `lookback_s` for calls and states still open, and
each agent's last state before that), then follows the event log through
`EventLog.add_observer`: the observer only queues the event (`append` never
waits on metrics); the ticker task folds what was queued into one
`MetricFold` and recomputes, at most once per `tick_s`, when an event came
or time moved something (a call waiting, an agent logged in, a fact leaving
the window). It never reads the database again; at local midnight the day
rolls over and the fold forgets what ended before it (`MetricFold.prune`).

The figures are the pure core's, so they are the historical ones for the same
period and the same events: `figures.call_parts` gives what one call adds
(its stays, the call centre-wide, its IVR sessions, its handlings, each at the
instant that places it), the very counting `queue_report` / `agent_report` do.
To keep a second's work small on a busy day, nothing is counted twice:

- each call's parts are kept in running sums (metrics/rolling.py) for today,
  for the window and for today by interval; a call is counted again only when
  an event of it came, its agent's state changed (the end of its after-call
  work), it is waiting (its wait grows) or its FCR verdict turns final today,
  and its changed parts replace the old ones in every sum;
- parts leave the window's sums as it slides; agents' closed spans of time
  (states, holds) are added once, and split at the window's start when read.

A refresh costs the calls that changed plus the queues; agents' own figures
(two rows per agent: thousands) are read at most every `agents_s`.

The fold keeps a call's facts until it is settled (left its queue, its
handlings and wrap-up over for `settle_s`, its repeat-contact FCR verdict fixed
for the rest of the day) and F, the edge before which every call is, has
passed it: then they are pruned and its parts, still counted, can no longer
change. An event that continues a pruned call (a wrap-up report long after,
say) makes the ticker read today's events from the table again and count
everything anew (`catch_up`, at most every `reload_gap_s`): slower, never
wrong.

Real-time-only figures come from the ACD engine when one is given (its
`snapshot(now)`: calls waiting in line, longest wait since the virtual enqueue
time, agents by state per queue), else from the fold (calls in a queue,
agents' last states). Staffing: Erlang C agents required per queue from the
window's arrival rate (offered per hour) and AHT (the window's, else today's),
for `StaffingTarget.target_sl` within `sl_threshold_s`, next to agents logged in.

Today by interval (the wallboard's chart): offered, answered and service level
per `settings.interval_s` interval of today, per queue and centre-wide (as
`queue_report` with `Grain.INTERVAL`), from the running sums by interval; turned
into rows at most every `series_s` (and on a rebuild); the snapshot carries the
latest under "intervals".
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from ctiserver.acd.config import AcdConfig
from ctiserver.acd.model import AgentState
from ctiserver.acd.views import EngineSnapshot
from ctiserver.lifecycle import Service
from ctiserver.metrics.erlang import agents_required
from ctiserver.metrics.facts import (
    CALLBACK,
    Handling,
    IvrSession,
    MetricEvent,
    QueueStay,
    StateSegment,
)
from ctiserver.metrics.figures import (
    NOTES,
    AgentTotals,
    QueueTotals,
    RepeatIndex,
    call_parts,
    longest_wait,
    skills_of_queue,
)
from ctiserver.metrics.fold import READ_TYPES, MetricFold
from ctiserver.metrics.intervals import Grain, bucket_start
from ctiserver.metrics.rolling import HOLD, AgentTime, CallSums, Sum
from ctiserver.metrics.settings import MetricSettings
from ctiserver.store.database import Database
from ctiserver.store.events import Event, EventLog, EventLogError
from ctiserver.store.metric_events import events_since

log = logging.getLogger(__name__)

Snapshot = dict[str, Any]
Listener = Callable[[Snapshot], None]
EngineView = Callable[[float], EngineSnapshot]

# F is looked at (and the fold pruned) about this often: a scan of the recent facts.
_EDGE_STEP_S: Final = 60.0
# At most this share of the event loop goes to recomputing figures: a refresh that
# took r seconds is followed by r * (1 - share) / share of rest before the next one, so
# under a load that makes refreshes slow, the figures come less often than every tick
# instead of starving the calls (bench/e2e.py).
MAX_LOOP_SHARE: Final = 0.2
_AGENT_STATE: Final = "acd.agent_state"
# Events that need nothing earlier of their call: the start of a stay, an outbound
# call or an IVR session, and an IVR session's end (its record says when it began).
_SELF_CONTAINED: Final = frozenset(
    {"acd.caller_entered", "acd.call_queued", "acd.outbound_started", "ivr.started", "ivr.ended"}
)
_LOGGED_IN: Final = frozenset(s for s in AgentState if s is not AgentState.LOGGED_OUT)


@dataclass(frozen=True, slots=True)
class StaffingTarget:
    """The Erlang C target shown next to agents logged in (METRICS.md "Staffing")."""

    target_sl: float = 0.8  # of calls answered within settings.sl_threshold_s
    max_occupancy: float | None = None
    shrinkage: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "target_sl": self.target_sl,
            "max_occupancy": self.max_occupancy,
            "shrinkage": self.shrinkage,
        }


@dataclass(slots=True)
class _Totals:
    """One period's totals: per queue, centre-wide, per agent, all agents."""

    queues: dict[str, QueueTotals]
    centre: QueueTotals
    agents: dict[str, AgentTotals]
    agent_centre: AgentTotals


def next_tick_delay(tick_s: float, last_refresh_s: float) -> float:
    """Seconds until the next refresh: the tick, or longer after a slow refresh."""
    return max(tick_s, last_refresh_s * (1.0 - MAX_LOOP_SHARE) / MAX_LOOP_SHARE)


def local_day(at: float, settings: MetricSettings) -> tuple[float, float]:
    """[local midnight, next local midnight) holding `at` in the centre's time zone."""
    zone = settings.zone
    local = datetime.fromtimestamp(at, zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    following = (midnight + timedelta(days=1, hours=3)).replace(hour=0)
    return midnight.timestamp(), following.timestamp()


class LiveMetrics(Service):
    """Today's and the sliding window's figures, kept from live events.

    `snapshot()` is the latest JSON-ready picture (see `_compose`);
    `add_listener(callback)` calls `callback(snapshot)` after every refresh
    (synchronously, on the loop: keep it quick); `refresh()` recomputes now
    if something changed (the ticker calls it every `tick_s`, or less often after a
    slow refresh: `next_tick_delay`).
    """

    def __init__(
        self,
        database: Database,
        events: EventLog,
        *,
        settings: MetricSettings | None = None,
        config: AcdConfig | None = None,
        engine: EngineView | None = None,
        staffing: StaffingTarget | None = None,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
        lookback_s: float = 6 * 3600.0,
        settle_s: float = 300.0,
        flush_timeout_s: float = 10.0,
        series_s: float = 5.0,
        agents_s: float = 5.0,
        reload_gap_s: float = 60.0,
    ) -> None:
        if tick_s <= 0 or lookback_s < 0 or settle_s < 0:
            raise ValueError("tick_s > 0, lookback_s >= 0 and settle_s >= 0 are required")
        self.settings = settings or MetricSettings()
        self.config = config
        self.staffing = staffing or StaffingTarget()
        self._database = database
        self._events = events
        self._engine = engine
        self._clock = clock
        self._tick_s = tick_s
        self._lookback_s = lookback_s
        self._settle_s = settle_s
        self._flush_timeout_s = flush_timeout_s
        self._series_s = series_s
        self._agents_s = agents_s
        # Agents' figures (their time is read span by span; thousands of rows): at most
        # every agents_s; queues and centre every refresh.
        self._agent_figures: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._agent_totals: tuple[dict[str | None, AgentTotals], dict[str | None, AgentTotals]]
        self._agent_totals = ({}, {})
        self._agents_at = float("-inf")
        self._reload_gap_s = reload_gap_s
        self._next_reload = 0.0  # time.monotonic() from which a reload may run
        self._series: dict[str, Any] = {}
        self._series_at = float("-inf")  # when the interval series was last computed

        self._fold = MetricFold()
        self._pending: deque[MetricEvent] = deque()
        self._times: deque[float] = deque()  # occurred_at of applied events, for the window
        self._day_start, self._day_end = local_day(clock(), self.settings)
        self._edge = self._day_start  # F: calls that entered before it are settled
        # The fold holds every fact of the calls that entered from here on (pruned before).
        self._complete_from = float("-inf")
        self._reload_wanted = False
        self._stale_cause = ""  # the event that needs pruned facts, for the log
        window_s = self.settings.window_s
        self._sums = CallSums(self._day_start, self._day_end, window_s, self._interval_of)
        self._time = AgentTime(window_s)
        # What the sums are kept from (see _recount): calls' handlings and IVR sessions,
        # agents' open states and holds, and the calls to count again without an event.
        self._call_handlings: dict[str, list[Handling]] = {}
        self._call_ivr: dict[str, list[IvrSession]] = {}
        self._open_segments: dict[str, StateSegment] = {}
        self._open_holds: dict[Handling, float] = {}
        self._holds_counted: dict[Handling, int] = {}
        self._incomplete: dict[str, set[str]] = {}  # agent -> calls their part is not over
        self._waiting_calls: set[str] = set()
        self._expiries: list[tuple[float, str]] = []  # FCR verdicts final later today
        self._dirty_calls: set[str] = set()
        self._dirty_agents: set[str] = set()
        self._next_edge_check = float("-inf")
        self._active_at_check = 0  # active facts after the last edge check
        # The calls that may still hold F back (see _settled_edge).
        self._stays: list[QueueStay] = []
        self._handlings: list[Handling] = []
        self._ivr: list[IvrSession] = []
        self._seen_counts = (0, 0, 0, 0)
        self._stale = True  # every count must be made again from the whole fold
        self._dirty = True
        self._next_change = 0.0
        self._snapshot: Snapshot = {}
        self._listeners: list[Listener] = []
        self._remove_observer: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.loaded = False  # today's events were read at start
        self.events_loaded = 0
        self.refreshes = 0
        self.rebuilds = 0
        self.reloads = 0
        self.last_refresh_s = 0.0  # how long the last recompute took

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("LiveMetrics already started")
        # Follow first, then read: an event appended meanwhile is in one or both,
        # and the fold keeps one of two copies (same key).
        self._remove_observer = self._events.add_observer(self._on_event)
        await self._reload(self._clock())
        self._task = asyncio.create_task(self._run(), name="ctiserver.metrics.live")

    async def close(self) -> None:
        if self._remove_observer is not None:
            self._remove_observer()
            self._remove_observer = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._listeners.clear()

    async def _reload(self, now: float) -> None:
        """Today's facts from the table into a new fold, then a rebuild (start; after a
        late event for facts already pruned). If the table cannot be read, a reload
        keeps the figures it had and is tried again `reload_gap_s` later; at start the
        figures begin from live events."""
        previous = (self._fold, self._complete_from, self._day_start, self._day_end)
        self._fold = MetricFold()
        self._complete_from = float("-inf")
        self._day_start, self._day_end = local_day(now, self.settings)
        keep_from = min(self._day_start, now - self.settings.window_s - self._settle_s)
        if not await self._load(keep_from - self._lookback_s) and self._task is not None:
            self._fold, self._complete_from, self._day_start, self._day_end = previous
            self._next_reload = time.monotonic() + self._reload_gap_s
            return
        self._prune(keep_from)
        self._edge = keep_from
        self._stale = True
        self._reload_wanted = False
        self._next_reload = time.monotonic() + self._reload_gap_s
        self.refresh(now)

    async def catch_up(self, now: float | None = None) -> bool:
        """`refresh`; then, if a late event changed facts already pruned, read today's
        events again (at most once every `reload_gap_s`: until then the figures go
        on without that change). True if the figures were recomputed."""
        at = self._clock() if now is None else now
        changed = self.refresh(at)
        if not self._reload_wanted or time.monotonic() < self._next_reload:
            return changed
        self.reloads += 1
        # Worth a warning: one pass over the day's events, on the event loop.
        log.warning(
            "live metrics: %s may need facts already pruned; reading today's events again",
            self._stale_cause or "a late event",
        )
        await self._reload(at)
        return True

    async def _load(self, since: float) -> bool:
        """Today's events (and what open calls and states need) from the table; False if
        they could not be read."""
        try:
            # What was appended before the observer is in the table after this.
            async with asyncio.timeout(self._flush_timeout_s):
                await self._events.flush()
            count = 0
            start = datetime.fromtimestamp(since, UTC)
            async for batch in events_since(self._database, start, sorted(READ_TYPES)):
                for row in batch:
                    self._apply(MetricEvent.from_row(row))
                count += len(batch)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.error("live metrics: cannot read today's events (%s: %s)", type(exc).__name__, exc)
            return False
        except EventLogError as exc:
            log.error("live metrics: event log closed before the load (%s)", exc)
            return False
        self.loaded = True
        self.events_loaded = count
        log.info("live metrics: %d events read since %s", count, start.isoformat())
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(next_tick_delay(self._tick_s, self.last_refresh_s))
            try:
                await self.catch_up()
            except Exception:  # the ticker outlives a bad refresh; the next one retries
                log.exception("live metrics: refresh failed")
                self._stale = True

    # -- input -------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """The EventLog observer: O(1), inside the emitter's append."""
        if event.type in READ_TYPES:
            self.observe(MetricEvent.from_event(event))

    def observe(self, event: MetricEvent) -> None:
        """Queue one event for the next refresh (the observer's job; replays and
        bench/live_metrics.py feed events this way)."""
        self._pending.append(event)

    def _apply(self, event: MetricEvent) -> None:
        call_id = event.call_id
        # Pruned calls are settled: an event that continues one (a wrap-up report days
        # late, say) needs the facts the fold no longer holds.
        pruned = (
            self._complete_from > self._day_start
            and call_id is not None
            and event.type not in _SELF_CONTAINED
            and not self._fold.knows_call(call_id)
        )
        if not self._fold.apply(event):
            return
        if call_id is not None:
            self._dirty_calls.add(call_id)
        if event.type == _AGENT_STATE and event.agent_id is not None:
            self._dirty_agents.add(event.agent_id)
        self._dirty = True
        self._times.append(event.occurred_at)
        if pruned:
            self._reload_wanted = True
            self._stale_cause = f"{event.type} for call {call_id}, no longer in the fold"

    @property
    def held_facts(self) -> int:
        """Stays, handlings, IVR sessions and state segments in the fold (pruned at F)."""
        return sum(self._counts())

    @property
    def settled_until(self) -> float:
        """F: today's calls that entered before it are settled and pruned from the fold."""
        return self._edge

    # -- listeners and output ------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(snapshot)` after every refresh; returns its remover."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def snapshot(self) -> Snapshot:
        """The latest figures, JSON-ready (empty before start)."""
        return self._snapshot

    # -- refresh ---------------------------------------------------------------------------

    def _drain(self) -> None:
        while self._pending:
            self._apply(self._pending.popleft())

    def refresh(self, now: float | None = None) -> bool:
        """Fold what was appended and recompute if anything changed; True if it did.

        A change to facts already pruned waits for `catch_up` (the ticker's)."""
        at = self._clock() if now is None else now
        self._drain()
        if at >= self._day_end:
            self._roll_over(at)
        window_start = at - self.settings.window_s
        while self._times and self._times[0] < window_start:
            self._times.popleft()
        if not (self._dirty or self._stale or at >= self._next_change):
            return False
        if self._stale and self._complete_from > self._day_start:
            # Counting again needs facts already pruned: the sums stay as they are
            # until catch_up reads today's events again.
            self._reload_wanted = True
            self._stale = False
        started = time.perf_counter()
        self._sums.advance(at)
        self._time.advance(at)
        if self._stale:
            self._rebuild(at)
            self._series_at = float("-inf")
        else:
            self._follow(at)
        active = len(self._stays) + len(self._handlings) + len(self._ivr)
        if at >= self._next_edge_check or active > 2 * self._active_at_check:
            # Once a minute, or when what it scans has doubled: O(1) a fact.
            self._advance_edge(at)
            self._next_edge_check = at + _EDGE_STEP_S
            self._active_at_check = len(self._stays) + len(self._handlings) + len(self._ivr)
        self._snapshot = self._compose(at)
        self._dirty = False
        self._next_change = self._next_change_after(at)
        self.refreshes += 1
        self.last_refresh_s = time.perf_counter() - started
        for listener in tuple(self._listeners):
            try:
                listener(self._snapshot)
            except Exception:
                log.exception("live metrics: listener %r failed", listener)
        return True

    def _roll_over(self, at: float) -> None:
        """Local midnight passed: a new day; forget what ended before anything needs it."""
        self._day_start, self._day_end = local_day(at, self.settings)
        keep_from = min(self._edge, self._day_start, at - self.settings.window_s - self._settle_s)
        self._edge = keep_from
        self._prune(keep_from)
        self._stale = True  # nothing of the new day is counted yet
        log.info(
            "live metrics: new day from %s",
            datetime.fromtimestamp(self._day_start, self.settings.zone).isoformat(),
        )

    def _rebuild(self, at: float) -> None:
        """Every count again from the whole fold (start, reload, rollover): one pass over
        the day."""
        fold = self._fold
        self._sums.reset(self._day_start, self._day_end, at)
        self._time.reset(self._day_start, self._day_end, at)
        self._open_segments, self._open_holds, self._holds_counted = {}, {}, {}
        self._incomplete, self._waiting_calls, self._expiries = {}, set(), []
        self._index_calls()
        for segment in fold.segments:
            if segment.end is None:
                self._open_segments[segment.agent_id] = segment
            else:
                self._time.add_closed(
                    segment.agent_id, segment.state, segment.reason, segment.start, segment.end
                )
        calls = self._known_calls()
        repeats = RepeatIndex(fold, fold.stays)
        for call_id in calls:
            self._recount(call_id, at, repeats)
        self._stays, self._handlings, self._ivr = [], [], []
        self._keep_active(fold.stays, fold.handlings, fold.ivr_sessions, self._edge)
        self._seen_counts = self._counts()
        self._dirty_calls.clear()
        self._dirty_agents.clear()
        self._stale = False
        self._next_edge_check = float("-inf")  # F may move at once: all is counted again
        self._agents_at = float("-inf")
        self.rebuilds += 1

    def _index_calls(self) -> None:
        """Handlings and IVR sessions by call, from the fold's lists."""
        handlings: dict[str, list[Handling]] = {}
        for handling in self._fold.handlings:
            handlings.setdefault(handling.call_id, []).append(handling)
        ivr: dict[str, list[IvrSession]] = {}
        for session in self._fold.ivr_sessions:
            ivr.setdefault(session.call_id, []).append(session)
        self._call_handlings, self._call_ivr = handlings, ivr

    def _known_calls(self) -> set[str]:
        """The calls the fold holds facts of (after _index_calls)."""
        stays = {s.call_id for s in self._fold.stays}
        return stays | self._call_handlings.keys() | self._call_ivr.keys()

    def _counts(self) -> tuple[int, int, int, int]:
        fold = self._fold
        return (len(fold.stays), len(fold.handlings), len(fold.ivr_sessions), len(fold.segments))

    def _follow(self, at: float) -> None:
        """Count again the calls that changed since the last refresh (and those whose
        figures move with time: waiting, or an FCR verdict turning final)."""
        fold = self._fold
        n_stays, n_handlings, n_ivr, n_segments = self._seen_counts
        dirty = self._dirty_calls
        new_handlings = fold.handlings[n_handlings:]
        new_ivr = fold.ivr_sessions[n_ivr:]
        self._stays.extend(fold.stays[n_stays:])
        self._handlings.extend(new_handlings)
        self._ivr.extend(new_ivr)
        for handling in new_handlings:
            self._call_handlings.setdefault(handling.call_id, []).append(handling)
            dirty.add(handling.call_id)
        for session in new_ivr:
            self._call_ivr.setdefault(session.call_id, []).append(session)
            dirty.add(session.call_id)
        for segment in fold.segments[n_segments:]:
            previous = self._open_segments.get(segment.agent_id)
            if previous is not None and previous.end is not None:
                self._time.add_closed(
                    previous.agent_id, previous.state, previous.reason, previous.start, previous.end
                )
            self._open_segments[segment.agent_id] = segment
        self._seen_counts = self._counts()
        for agent_id in self._dirty_agents:
            # A state change may end the after-call work of the agent's last call.
            dirty.update(self._incomplete.get(agent_id, ()))
        while self._expiries and self._expiries[0][0] <= at:
            dirty.add(heapq.heappop(self._expiries)[1])
        dirty.update(self._waiting_calls)
        repeats = RepeatIndex(fold, fold.stays)
        for call_id in dirty:
            self._recount(call_id, at, repeats)
        dirty.clear()
        self._dirty_agents.clear()

    def _recount(self, call_id: str, at: float, repeats: RepeatIndex) -> None:
        """The call's parts as of `at`, in place of the ones counted before."""
        fold = self._fold
        stays = fold.stays_of(call_id)
        handlings = self._call_handlings.get(call_id, [])
        queue_parts, agent_parts = call_parts(
            fold,
            stays,
            handlings,
            self._call_ivr.get(call_id, []),
            settings=self.settings,
            as_of=at,
            repeats=repeats,
        )
        self._sums.replace(call_id, queue_parts, agent_parts)
        if any(s.outcome is None or s.outcome == CALLBACK for s in stays):
            self._waiting_calls.add(call_id)  # its wait grows: counted again every refresh
        else:
            self._waiting_calls.discard(call_id)
        fcr_s = self.settings.fcr_window.total_seconds()
        for stay in stays:
            if stay.answered_at is not None and at < stay.answered_at + fcr_s < self._day_end:
                # Its repeat-contact verdict is pending until then, final after.
                heapq.heappush(self._expiries, (stay.answered_at + fcr_s, call_id))
        for handling in handlings:
            calls = self._incomplete.setdefault(handling.agent_id, set())
            if handling.complete:
                calls.discard(call_id)
            else:
                calls.add(call_id)
            self._count_holds(handling)

    def _count_holds(self, handling: Handling) -> None:
        counted = self._holds_counted.get(handling, 0)
        for a, b in handling.holds[counted:]:
            self._time.add_closed(handling.agent_id, HOLD, None, a, b)
        if len(handling.holds) > counted:
            self._holds_counted[handling] = len(handling.holds)
        if handling.held_since is not None:
            self._open_holds[handling] = handling.held_since
        else:
            self._open_holds.pop(handling, None)

    def _keep_active(
        self,
        stays: Iterable[QueueStay],
        handlings: Iterable[Handling],
        ivr: Iterable[IvrSession],
        edge: float,
    ) -> None:
        """Into the (emptied) active lists: what may still hold F back."""
        self._stays.extend(s for s in stays if s.entered_at >= edge)
        self._handlings.extend(h for h in handlings if h.reference_at >= edge)
        self._ivr.extend(s for s in ivr if s.started_at >= edge)

    def _settled_edge(self, at: float) -> float:
        """How far F may go now: before every call not settled."""
        settle_by = at - self._settle_s
        fcr_s = self.settings.fcr_window.total_seconds()
        edge = settle_by
        for stay in self._stays:
            if stay.first_entered_at >= edge:
                continue
            open_ = stay.outcome is None or (stay.left_at or at) > settle_by
            if not open_ and stay.answered_at is not None:
                closes = stay.answered_at + fcr_s
                # Its FCR verdict: pending all day, or final; anything else may still change.
                open_ = settle_by < closes <= self._day_end
            if open_:
                edge = min(edge, stay.first_entered_at, stay.entered_at)
        for handling in self._handlings:
            reference = handling.reference_at
            if handling.stay is not None:
                reference = min(reference, handling.stay.first_entered_at)
            if reference >= edge:
                continue
            if not handling.complete or (handling.acw_end or at) > settle_by:
                edge = min(edge, reference)
        for session in self._ivr:
            if session.started_at < edge and (session.ended_at or at) > settle_by:
                edge = session.started_at
        return edge

    def _advance_edge(self, at: float) -> None:
        edge = self._settled_edge(at)
        if edge < self._edge:
            return  # a late call, not settled, entered before F: F waits for it
        stays, handlings, ivr = self._stays, self._handlings, self._ivr
        self._stays, self._handlings, self._ivr = [], [], []
        self._keep_active(stays, handlings, ivr, edge)
        self._edge = edge
        self._prune(edge)

    def _prune(self, before: float) -> None:
        """Drop from the fold what ended before `before` (F: settled and counted), and stop
        following those calls: their parts stay counted."""
        fold = self._fold
        fold.prune(before)
        self._complete_from = max(self._complete_from, before)
        self._seen_counts = self._counts()
        self._index_calls()
        known = self._known_calls()
        for call_id in [c for c in self._sums.calls() if c not in known]:
            self._sums.forget(call_id)
        kept = set(fold.handlings)
        self._holds_counted = {h: n for h, n in self._holds_counted.items() if h in kept}
        self._open_holds = {h: since for h, since in self._open_holds.items() if h in kept}
        for calls in self._incomplete.values():
            calls.intersection_update(known)
        self._waiting_calls.intersection_update(known)

    def _interval_of(self, at: float) -> float:
        """The start of the interval of today holding `at`."""
        settings = self.settings
        start, end = self._day_start, self._day_end
        if end - start == 86400.0 and start <= at < end:
            # No clock change today: the intervals are a plain grid from midnight.
            return start + (at - start) // settings.interval_s * settings.interval_s
        return bucket_start(at, Grain.INTERVAL, settings.interval_s, settings.zone, at)

    def _open_spans(self) -> list[tuple[str, str, str | None, float]]:
        """Agents' states and holds still running: (agent, state or HOLD, reason, since)."""
        spans = [
            (s.agent_id, s.state, s.reason, s.start)
            for s in self._open_segments.values()
            if s.end is None
        ]
        spans.extend((h.agent_id, HOLD, None, since) for h, since in self._open_holds.items())
        return spans

    def _time_dependent(self) -> bool:
        """Anything whose figures change with time alone (waits, agent time, holds)."""
        if self._engine is not None or self._waiting_calls or self._open_holds:
            return True
        return any(s.end is None and s.state != "logged_out" for s in self._open_segments.values())

    def _next_change_after(self, at: float) -> float:
        step = min(self._tick_s, 1.0)  # figures that move with time: once a second
        if self._time_dependent():
            return at + step
        following = self._day_end
        if self._times:  # the oldest fact in the window leaves it then
            following = min(following, self._times[0] + self.settings.window_s)
        if self._expiries:
            following = min(following, self._expiries[0][0])
        return max(following, at + step)

    # -- the snapshot ------------------------------------------------------------------------

    def _period_totals(self, per_agent: bool) -> tuple[_Totals, _Totals]:
        """(today, window) from the running sums; agents' totals (their time is read
        span by span) only if `per_agent`, else as they were last read."""
        sums = self._sums
        if per_agent:
            self._agent_totals = self._time.read(
                sums.today_agents, sums.window_agents, self._open_spans()
            )
        agents_today, agents_window = self._agent_totals

        def totals(queues: dict[str | None, Sum], agents: dict[str | None, AgentTotals]) -> _Totals:
            centre = queues.get(None)
            return _Totals(
                {k: v.queue_totals() for k, v in queues.items() if k is not None},
                centre.queue_totals() if centre is not None else QueueTotals(),
                {k: v for k, v in agents.items() if k is not None},
                agents.get(None) or AgentTotals(),
            )

        return totals(sums.today_queues, agents_today), totals(sums.window_queues, agents_window)

    def _compose(self, at: float) -> Snapshot:
        settings = self.settings
        per_agent = at - self._agents_at >= self._agents_s
        today, window = self._period_totals(per_agent)
        empty = AgentTotals().figures(settings)
        if per_agent:
            self._agent_figures = {
                agent_id: (
                    today.agents[agent_id].figures(settings) if agent_id in today.agents else empty,
                    window.agents[agent_id].figures(settings)
                    if agent_id in window.agents
                    else empty,
                )
                for agent_id in set(today.agents) | set(window.agents)
            }
            self._agents_at = at
        window_start = at - settings.window_s
        engine = self._engine(at) if self._engine is not None else None

        config = self.config
        queue_titles = {q.name: q.title for q in config.queues} if config else {}
        agent_names = {a.agent_id: a.name for a in config.agents} if config else {}
        queue_names = sorted(set(queue_titles) | set(today.queues) | set(window.queues))
        agent_ids = sorted(set(agent_names) | set(self._agent_figures))
        now_queues, now_agents = self._now(at, engine, queue_names, agent_ids)

        queues: dict[str, Any] = {}
        for name in queue_names:
            today_q = today.queues.get(name) or QueueTotals()
            window_q = window.queues.get(name) or QueueTotals()
            current = now_queues.get(name, {})
            queues[name] = {
                "name": queue_titles.get(name, ""),
                "today": today_q.figures(settings),
                "window": window_q.figures(settings),
                "now": current,
                "staffing": self._staffing(today_q, window_q, current.get("agents_logged_in")),
            }
        agents: dict[str, Any] = {}
        for agent_id in agent_ids:
            agent_today, agent_window = self._agent_figures.get(agent_id, (empty, empty))
            agents[agent_id] = {
                "name": agent_names.get(agent_id, ""),
                "today": agent_today,
                "window": agent_window,
                "now": now_agents.get(agent_id),
            }
        by_state = dict.fromkeys((str(s) for s in AgentState), 0)
        for state in now_agents.values():
            if state is not None:
                by_state[state["state"]] = by_state.get(state["state"], 0) + 1
        zone = settings.zone

        def instant(value: float) -> str:
            return datetime.fromtimestamp(value, zone).isoformat()

        return {
            "as_of": instant(at),
            "as_of_ts": at,
            "today": {"from": instant(self._day_start), "to": instant(self._day_end)},
            "window": {
                "from": instant(window_start),
                "to": instant(at),
                "seconds": settings.window_s,
            },
            "variants": settings.describe(),
            "variants_summary": settings.summary(),
            "staffing_target": {
                **self.staffing.describe(),
                "target_s": settings.sl_threshold_s,
            },
            "notes": [*NOTES, "today and the window count calls that entered in them"],
            "source": "acd" if engine is not None else "events",
            "loaded": self.loaded,
            "centre": {
                "today": {
                    **today.centre.figures(settings),
                    "agents": today.agent_centre.figures(settings),
                },
                "window": {
                    **window.centre.figures(settings),
                    "agents": window.agent_centre.figures(settings),
                },
                "now": {
                    "waiting": sum(q.get("waiting", 0) for q in now_queues.values()),
                    "longest_wait_s": max(
                        (q.get("longest_wait_s") or 0.0 for q in now_queues.values()),
                        default=0.0,
                    ),
                    "agents_by_state": by_state,
                    "agents_logged_in": sum(
                        n for state, n in by_state.items() if state != AgentState.LOGGED_OUT
                    ),
                },
            },
            "queues": queues,
            "agents": agents,
            "intervals": self._intervals(at),
            "events_skipped": dict(sorted(self._fold.skipped.items())),
        }

    def _intervals(self, at: float) -> dict[str, Any]:
        """Today per interval: {"seconds", "centre": [...], "queues": {name: [...]}}, each
        entry {"start", "start_ts", "offered", "answered", "service_level"}; recomputed
        at most every `series_s` (a call arriving shows within that)."""
        if at - self._series_at < self._series_s and self._series:
            return self._series
        settings = self.settings
        zone = settings.zone

        def entry(row_start: float, total: Sum) -> dict[str, Any]:
            totals = total.queue_totals()
            return {
                "start": datetime.fromtimestamp(row_start, zone).isoformat(),
                "start_ts": row_start,
                "offered": totals.offered,
                "answered": totals.answered,
                "service_level": totals.service_level(settings.sl_mode),
            }

        series = self._sums.series
        centre = [entry(t, total) for t, total in sorted(series.get(None, {}).items())]
        queues = {
            name: [entry(t, total) for t, total in sorted(rows.items())]
            for name, rows in series.items()
            if name is not None
        }
        self._series = {
            "seconds": settings.interval_s,
            "centre": centre,
            "queues": dict(sorted(queues.items())),
        }
        self._series_at = at
        return self._series

    def _now(
        self,
        at: float,
        engine: EngineSnapshot | None,
        queue_names: list[str],
        agent_ids: list[str],
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any] | None]]:
        """Real-time-only figures: per queue calls waiting, longest wait, agents by
        state; per agent the current state (None: never seen)."""
        queues: dict[str, dict[str, Any]] = {}
        agents: dict[str, dict[str, Any] | None] = {}
        if engine is not None:
            for queue in engine.queues:
                by_state = {str(state): n for state, n in queue.agents.items()}
                queues[queue.queue] = {
                    "open": queue.open,
                    "waiting": queue.waiting,
                    "ringing": queue.ringing,
                    "longest_wait_s": queue.longest_wait_s,
                    "estimated_wait_s": queue.estimated_wait_s,
                    "agents_by_state": by_state,
                    "agents_logged_in": sum(
                        n for state, n in queue.agents.items() if state in _LOGGED_IN
                    ),
                }
            for agent in engine.agents:
                agents[agent.agent_id] = {
                    "state": str(agent.state),
                    "since": agent.since,
                    "time_in_state_s": max(0.0, at - agent.since),
                    "reason": agent.reason,
                    "call_id": agent.call_id,
                    "queue": agent.queue,
                }
            for agent_id in agent_ids:
                agents.setdefault(agent_id, None)
            return queues, agents
        fold = self._fold
        waiting = fold.waiting()
        for name in queue_names:
            here = [s for s in waiting if s.queue == name]
            queues[name] = {
                "waiting": len(here),
                "longest_wait_s": longest_wait(fold, name, at) or 0.0,
            }
        known = set(agent_ids) | set(self._open_segments)
        for agent_id in sorted(known):
            segment = fold.agent_state(agent_id)
            agents[agent_id] = (
                None
                if segment is None
                else {
                    "state": segment.state,
                    "since": segment.start,
                    "time_in_state_s": max(0.0, at - segment.start),
                    "reason": segment.reason,
                }
            )
        if self.config is not None:
            # Agents by state per queue: those serving it (by their queue list, else skills).
            for configured in self.config.queues:
                wanted = skills_of_queue(configured)
                members = [
                    a.agent_id
                    for a in self.config.agents
                    if configured.name in a.queues or (not a.queues and set(a.skills) & wanted)
                ]
                counts = dict.fromkeys((str(s) for s in AgentState), 0)
                for agent_id in members:
                    state = agents.get(agent_id)
                    counts[state["state"] if state else "logged_out"] += 1
                entry = queues.setdefault(configured.name, {"waiting": 0, "longest_wait_s": 0.0})
                entry["agents_by_state"] = counts
                entry["agents_logged_in"] = sum(
                    n for state, n in counts.items() if state != AgentState.LOGGED_OUT
                )
        return queues, agents

    def _staffing(
        self, today: QueueTotals, window: QueueTotals, logged_in: int | None
    ) -> dict[str, Any] | None:
        """Erlang C agents required for the window's traffic (AHT: the window's, else today's)."""
        settings = self.settings
        calls_per_hour = window.offered * 3600.0 / settings.window_s
        aht_from = "window"
        aht = window.handle_s / window.handled if window.handled else None
        if aht is None and today.handled:
            aht, aht_from = today.handle_s / today.handled, "today"
        if aht is None or aht <= 0:
            return {
                "calls_per_hour": calls_per_hour,
                "aht_s": None,
                "required": None,
                "logged_in": logged_in,
            }
        target = self.staffing
        try:
            result = agents_required(
                calls_per_hour,
                aht,
                target.target_sl,
                settings.sl_threshold_s,
                max_occupancy=target.max_occupancy,
                shrinkage=target.shrinkage,
            )
        except ValueError as exc:
            log.debug("live metrics: no staffing figure: %s", exc)
            return None
        return {
            "calls_per_hour": calls_per_hour,
            "aht_s": aht,
            "aht_from": aht_from,
            "traffic_erlangs": result.traffic_erlangs,
            "required": result.agents,
            "scheduled": result.scheduled,
            "service_level": result.service_level,
            "logged_in": logged_in,
        }
