"""The figures of METRICS.md from the fold's facts, per queue, skill, centre or agent.

Everything is additive sums and counts (`QueueTotals`, `AgentTotals`), turned
into ratios only at the end (`figures()`), so buckets merge by addition and an
SQL aggregation can produce the same totals and reuse the same ratios.

Choices where METRICS.md leaves room (also in the report's `notes`):

- A call counts in the bucket in which it entered the queue: per queue its
  stay's entry, centre-wide (and per skill) its first entry. Handle, talk,
  hold and after-call work go with the call's entry too; agent *time*
  (states, hold intervals) is split at bucket edges.
- Per queue the wait runs from entering that queue; centre-wide from the
  call's first entry to its first answer. A call transferred or overflowed
  between queues is one call centre-wide: answered if any stay was.
- Short abandon: abandoned within short_abandon_s of the call's *first* entry
  (so a caller who waited a minute and then overflowed is never "short").
  "Within" is <=, as "answered within T" is wait <= T.
- Calls still waiting count as offered. For service level a waiting call whose
  wait is still under T is undetermined and left out of the denominator;
  one waiting past T already missed it and counts.
- Handled calls: an agent's part of an inbound call (connected -> call end ->
  wrap-up over), so a call transferred to an agent counts once for each
  agent; handle figures wait until the wrap-up is over. Outbound calls
  (click-to-dial) are counted apart (`outbound`), not in AHT; their time is
  in the agent's occupancy since the agent is on a call.
- Per skill: a stay counts for the call's own skills (caller_entered) and its
  queue's configured skills (`queue_skills`, see skills_of_queue).
- IVR containment is a centre figure; a session with no `ivr.ended` yet is open,
  left out of the rate like a pending FCR contact.
- Repeat-contact FCR: the window runs from the answer; a further contact is
  another call of the same customer entering a queue (the same one, with
  fcr_scope same_queue) within it. Per agent it goes to the agent who answered.
- Agent-reported FCR: per handling its agent's latest wrap-up; per stay and
  per call the latest wrap-up with a resolved flag among its handlings.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ctiserver.acd.model import AddSkill, QueueConfig
from ctiserver.metrics.facts import (
    ABANDONED,
    ANSWERED,
    CALLBACK,
    ROUTED_AWAY,
    Handling,
    IvrSession,
    QueueStay,
)
from ctiserver.metrics.fold import MetricFold
from ctiserver.metrics.intervals import Grain, bucket_end, bucket_start, split
from ctiserver.metrics.settings import CallbackWait, FcrScope, MetricSettings, SlMode

NOTES = (
    "calls count in the interval they entered the queue; agent time is split at interval edges",
    "short abandon measured from the call's first entry, inclusive (<=)",
    "answered within T means wait <= T; calls still waiting under T are left out of SL",
    "centre-wide a call transferred or overflowed between queues counts once",
    "handle figures count an agent's part of an inbound call once its wrap-up is over",
    "repeat-contact FCR window runs from the answer; pending contacts are left out",
    "IVR sessions without an end yet are left out of containment",
)


def ratio(numerator: float, denominator: float) -> float | None:
    """None when there is nothing to divide by: a figure with no basis is null, never 0."""
    return numerator / denominator if denominator else None


@dataclass(slots=True)
class QueueTotals:
    entered: int = 0
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    routed_away: int = 0  # overflowed, voicemail, closed
    overflowed: int = 0
    voicemail: int = 0
    closed: int = 0
    callbacks: int = 0
    waiting: int = 0
    sl_undetermined: int = 0
    answered_within_t: int = 0
    abandoned_after_t: int = 0
    wait_answered_s: float = 0.0
    wait_abandoned_s: float = 0.0
    longest_wait_s: float = 0.0  # among answered and abandoned calls
    transferred: int = 0
    handled: int = 0
    handle_s: float = 0.0
    talk_s: float = 0.0
    hold_s: float = 0.0
    acw_s: float = 0.0
    fcr_reported: int = 0
    fcr_reported_resolved: int = 0
    fcr_repeat_closed: int = 0
    fcr_repeat_resolved: int = 0
    fcr_repeat_pending: int = 0
    fcr_repeat_anonymous: int = 0
    ivr_entered: int = 0
    ivr_contained: int = 0
    ivr_open: int = 0

    def add(self, other: QueueTotals) -> None:
        for f in fields(self):
            if f.name == "longest_wait_s":
                self.longest_wait_s = max(self.longest_wait_s, other.longest_wait_s)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def service_level(self, mode: SlMode) -> float | None:
        if mode is SlMode.ANSWERED:
            return ratio(self.answered_within_t, self.answered)
        if mode is SlMode.ABANDON_ADJUSTED:
            return ratio(self.answered_within_t, self.answered + self.abandoned_after_t)
        return ratio(self.answered_within_t, self.offered - self.sl_undetermined)

    def figures(self, settings: MetricSettings) -> dict[str, Any]:
        ivr_closed = self.ivr_entered - self.ivr_open
        return {
            "offered": self.offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "short_abandoned": self.short_abandoned,
            "overflowed": self.routed_away,
            "callbacks": self.callbacks,
            "waiting": self.waiting,
            "abandonment_rate": ratio(self.abandoned, self.offered),
            "asa_s": ratio(self.wait_answered_s, self.answered),
            "avg_time_to_abandon_s": ratio(self.wait_abandoned_s, self.abandoned),
            "service_level": self.service_level(settings.sl_mode),
            "service_level_offered": self.service_level(SlMode.OFFERED),
            "service_level_answered": self.service_level(SlMode.ANSWERED),
            "service_level_abandon_adjusted": self.service_level(SlMode.ABANDON_ADJUSTED),
            "handled": self.handled,
            "aht_s": ratio(self.handle_s, self.handled),
            "avg_talk_s": ratio(self.talk_s, self.handled),
            "avg_hold_s": ratio(self.hold_s, self.answered),
            "avg_acw_s": ratio(self.acw_s, self.handled),
            "transfer_rate": ratio(self.transferred, self.answered),
            "ivr_containment": ratio(self.ivr_contained, ivr_closed),
            "fcr_agent_reported": ratio(self.fcr_reported_resolved, self.fcr_reported),
            "fcr_repeat_contact": ratio(self.fcr_repeat_resolved, self.fcr_repeat_closed),
            "fcr_pending": self.fcr_repeat_pending,
        }


@dataclass(slots=True)
class AgentTotals:
    logged_in_s: float = 0.0
    available_s: float = 0.0
    reserved_s: float = 0.0  # ring time: with available time in occupancy
    on_call_s: float = 0.0  # talk + hold
    hold_s: float = 0.0
    wrap_up_s: float = 0.0
    not_ready_s: float = 0.0
    not_ready_by_reason: dict[str, float] = field(default_factory=dict)
    handled: int = 0
    handle_s: float = 0.0
    talk_s: float = 0.0
    call_hold_s: float = 0.0
    acw_s: float = 0.0
    transferred: int = 0
    outbound: int = 0
    fcr_reported: int = 0
    fcr_reported_resolved: int = 0
    fcr_repeat_closed: int = 0
    fcr_repeat_resolved: int = 0
    fcr_repeat_pending: int = 0

    def add(self, other: AgentTotals) -> None:
        for f in fields(self):
            if f.name == "not_ready_by_reason":
                for reason, seconds in other.not_ready_by_reason.items():
                    self.not_ready_by_reason[reason] = (
                        self.not_ready_by_reason.get(reason, 0.0) + seconds
                    )
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def figures(self, settings: MetricSettings) -> dict[str, Any]:
        idle = self.available_s + self.reserved_s
        with_acw = ratio(self.on_call_s + self.wrap_up_s, self.on_call_s + self.wrap_up_s + idle)
        without_acw = ratio(self.on_call_s, self.on_call_s + idle)
        return {
            "logged_in_s": self.logged_in_s,
            "available_s": self.available_s,
            "ring_s": self.reserved_s,
            "talk_s": self.on_call_s - self.hold_s,
            "hold_s": self.hold_s,
            "acw_s": self.wrap_up_s,
            "not_ready_s": self.not_ready_s,
            "not_ready_by_reason": dict(sorted(self.not_ready_by_reason.items())),
            "occupancy": with_acw if settings.occupancy_includes_acw else without_acw,
            "occupancy_with_acw": with_acw,
            "occupancy_without_acw": without_acw,
            "utilization": ratio(self.on_call_s + self.wrap_up_s, self.logged_in_s),
            "calls_handled": self.handled,
            "aht_s": ratio(self.handle_s, self.handled),
            "avg_acw_s": ratio(self.acw_s, self.handled),
            "avg_hold_s": ratio(self.call_hold_s, self.handled),
            "transfer_rate": ratio(self.transferred, self.handled),
            "outbound_calls": self.outbound,
            "fcr_agent_reported": ratio(self.fcr_reported_resolved, self.fcr_reported),
            "fcr_repeat_contact": ratio(self.fcr_repeat_resolved, self.fcr_repeat_closed),
            "fcr_pending": self.fcr_repeat_pending,
        }


@dataclass(frozen=True, slots=True)
class Row:
    """One bucket of one group: `key` is a queue, skill or agent id; None centre-wide."""

    start: float
    end: float
    dimension: str  # "queue", "skill", "centre", "agent"
    key: str | None
    figures: dict[str, Any]
    totals: QueueTotals | AgentTotals


# -- what a unit (a stay, or a whole call centre-wide) contributes ----------------------


@dataclass(slots=True)
class _Unit:
    """A stay per queue, or a call centre-wide: what the queue figures count."""

    call_id: str
    entered_at: float
    first_entered_at: float
    outcome: str | None
    answered_at: float | None
    left_at: float | None
    callback_requested_at: float | None
    transferred: bool
    caller: str
    queues: tuple[str, ...]  # the stay's queue; centre-wide, the answered queues
    agent_id: str | None
    handlings: list[Handling]


def _stay_unit(stay: QueueStay, handlings: list[Handling]) -> _Unit:
    return _Unit(
        stay.call_id,
        stay.entered_at,
        stay.first_entered_at,
        stay.outcome,
        stay.answered_at,
        stay.left_at,
        stay.callback_requested_at,
        stay.transferred,
        stay.caller,
        (stay.queue,),
        stay.agent_id,
        handlings,
    )


def _call_unit(chain: Sequence[QueueStay], handlings: list[Handling]) -> _Unit:
    first = chain[0]
    answered = next((s for s in chain if s.answered_at is not None), None)
    last = chain[-1]
    outcome = ANSWERED if answered is not None else last.outcome
    callback = next((s.callback_requested_at for s in chain if s.callback), None)
    return _Unit(
        first.call_id,
        first.entered_at,
        first.first_entered_at,
        outcome,
        answered.answered_at if answered else None,
        last.left_at,
        callback,
        any(s.transferred for s in chain),
        first.caller,
        tuple(s.queue for s in chain if s.answered_at is not None) or (first.queue,),
        answered.agent_id if answered else None,
        handlings,
    )


def _wait(unit: _Unit, settings: MetricSettings, as_of: float) -> float:
    end = unit.answered_at if unit.answered_at is not None else unit.left_at
    if end is None:
        end = as_of
    wait = end - unit.entered_at
    if (
        settings.callback_wait is CallbackWait.CONNECTED_ONLY
        and unit.callback_requested_at is not None
        and unit.answered_at is not None
    ):
        # Off the phone from the request until an agent had the customer back.
        wait -= unit.answered_at - max(unit.callback_requested_at, unit.entered_at)
    return max(0.0, wait)


class RepeatIndex:
    """Queue entries by customer: is there a further contact after an answer?

    Built on the first verdict that needs it: a verdict still pending (as_of
    inside the FCR window) reads nothing, so real time, whose calls are all
    pending with the usual windows, never builds it."""

    def __init__(self, fold: MetricFold, stays: Iterable[QueueStay]) -> None:
        self.fold = fold
        self._stays: Iterable[QueueStay] | None = stays
        self._entries: dict[str, list[tuple[float, str, str]]] = {}

    def _index(self) -> dict[str, list[tuple[float, str, str]]]:
        if self._stays is not None:
            entries: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
            for stay in self._stays:
                key = self.fold.customer_key(stay.call_id, stay.caller)
                if key is not None:
                    entries[key].append((stay.entered_at, stay.call_id, stay.queue))
            for listed in entries.values():
                listed.sort()
            self._entries, self._stays = dict(entries), None
        return self._entries

    def verdict(self, unit: _Unit, settings: MetricSettings, as_of: float) -> str | None:
        """ "resolved", "repeated", "pending", or None for an anonymous caller."""
        key = self.fold.customer_key(unit.call_id, unit.caller)
        if key is None or unit.answered_at is None:
            return None
        window_end = unit.answered_at + settings.fcr_window.total_seconds()
        if as_of < window_end:
            return "pending"
        entries = self._index().get(key, [])
        index = bisect.bisect_right(entries, (unit.answered_at, "\uffff", ""))
        for entered, call_id, queue in entries[index:]:
            if entered > window_end:
                break
            if call_id == unit.call_id:
                continue
            if settings.fcr_scope is FcrScope.ANY or queue in unit.queues:
                return "repeated"
        return "resolved"


def latest_resolved(fold: MetricFold, handlings: Iterable[Handling]) -> bool | None:
    """The resolved flag of the latest wrap-up report among `handlings` (None: none says)."""
    reports = [fold.wrap_ups.get((h.call_id, h.agent_id)) for h in handlings]
    usable = [r for r in reports if r is not None and r.resolved is not None]
    if not usable:
        return None
    return max(usable, key=lambda r: r.at).resolved


def _count_unit(
    totals: QueueTotals,
    unit: _Unit,
    settings: MetricSettings,
    as_of: float,
    fold: MetricFold,
    repeats: RepeatIndex,
) -> None:
    totals.entered += 1
    wait = _wait(unit, settings, as_of)
    threshold = settings.sl_threshold_s
    if unit.callback_requested_at is not None:
        totals.callbacks += 1
    outcome = unit.outcome
    if outcome == ABANDONED:
        short = (unit.left_at or as_of) - unit.first_entered_at <= settings.short_abandon_s
        if short:
            totals.short_abandoned += 1
            if not settings.count_short_abandons:
                return  # excluded from offered, abandoned and service level
        totals.offered += 1
        totals.abandoned += 1
        totals.wait_abandoned_s += wait
        totals.longest_wait_s = max(totals.longest_wait_s, wait)
        if wait > threshold:
            totals.abandoned_after_t += 1
        return
    totals.offered += 1
    if outcome is None or outcome == CALLBACK:
        totals.waiting += 1
        if wait <= threshold:
            totals.sl_undetermined += 1
        return
    if outcome in ROUTED_AWAY:
        totals.routed_away += 1
        setattr(totals, outcome, getattr(totals, outcome) + 1)
        return
    if outcome != ANSWERED:
        return  # a stay lost with its events: offered, nothing more known
    totals.answered += 1
    totals.wait_answered_s += wait
    totals.longest_wait_s = max(totals.longest_wait_s, wait)
    if wait <= threshold:
        totals.answered_within_t += 1
    if unit.transferred:
        totals.transferred += 1
    inbound = [h for h in unit.handlings if not h.outbound]
    for handling in inbound:
        totals.hold_s += handling.hold_s
        if handling.complete:
            totals.handled += 1
            totals.handle_s += handling.handle_s
            totals.talk_s += handling.talk_s
            totals.acw_s += handling.acw_s
    resolved = latest_resolved(fold, inbound)
    if resolved is not None:
        totals.fcr_reported += 1
        totals.fcr_reported_resolved += int(resolved)
    _count_repeat(totals, repeats.verdict(unit, settings, as_of))


def _count_repeat(totals: QueueTotals | AgentTotals, verdict: str | None) -> None:
    if verdict == "pending":
        totals.fcr_repeat_pending += 1
    elif verdict is not None:
        totals.fcr_repeat_closed += 1
        totals.fcr_repeat_resolved += int(verdict == "resolved")
    elif isinstance(totals, QueueTotals):
        totals.fcr_repeat_anonymous += 1


def _count_ivr(totals: QueueTotals, session: IvrSession) -> None:
    totals.ivr_entered += 1
    if session.ended_at is None:
        totals.ivr_open += 1
    elif session.contained:
        totals.ivr_contained += 1


def _count_handling(
    totals: AgentTotals,
    handling: Handling,
    settings: MetricSettings,
    as_of: float,
    fold: MetricFold,
    repeats: RepeatIndex,
) -> None:
    """An agent's part of a call, counted when its call entered the queue (not its time)."""
    if handling.outbound:
        totals.outbound += 1
        return
    if handling.complete:
        totals.handled += 1
        totals.handle_s += handling.handle_s
        totals.talk_s += handling.talk_s
        totals.call_hold_s += handling.hold_s
        totals.acw_s += handling.acw_s
        totals.transferred += int(handling.transferred_out)
    report = fold.wrap_ups.get((handling.call_id, handling.agent_id))
    if report is not None and report.resolved is not None:
        totals.fcr_reported += 1
        totals.fcr_reported_resolved += int(report.resolved)
    stay = handling.stay
    if stay is not None and stay.agent_id == handling.agent_id and not handling.transferred_in:
        unit = _stay_unit(stay, [handling])
        _count_repeat(totals, repeats.verdict(unit, settings, as_of))


def add_state_time(totals: AgentTotals, state: str, reason: str | None, seconds: float) -> None:
    """`seconds` of an agent in `state` (logged_out is not counted at all)."""
    if state == "logged_out":
        return
    totals.logged_in_s += seconds
    match state:
        case "available":
            totals.available_s += seconds
        case "reserved":
            totals.reserved_s += seconds
        case "on_call":
            totals.on_call_s += seconds
        case "wrap_up":
            totals.wrap_up_s += seconds
        case "not_ready":
            totals.not_ready_s += seconds
            key = reason or "(none)"
            totals.not_ready_by_reason[key] = totals.not_ready_by_reason.get(key, 0.0) + seconds


# -- reports ---------------------------------------------------------------------------


def skills_of_queue(queue: QueueConfig) -> frozenset[str]:
    """The skills a queue's steps ask for (requirements and added skills)."""
    found: set[str] = set()
    for step in queue.steps:
        found.update(r.skill for r in step.requirements or ())
        found.update(a.skill for a in step.on_expiry if isinstance(a, AddSkill))
    return frozenset(found)


def queue_report(
    fold: MetricFold,
    start: float,
    end: float,
    *,
    settings: MetricSettings,
    as_of: float,
    by: str = "queue",
    grain: Grain = Grain.RANGE,
    queue_skills: Mapping[str, frozenset[str]] | None = None,
) -> list[Row]:
    """Queue figures for calls that entered in [start, end), by "queue", "skill" or "centre".

    `as_of` is the instant the facts are known to (now, for real time; the end
    of the data read, historically): waits of calls still waiting and FCR
    windows are judged against it. For FCR the fold must hold the events up to
    end + fcr_window (or as_of, if earlier).
    """
    if by not in ("queue", "skill", "centre"):
        raise ValueError(f"unknown grouping {by!r}")
    zone = settings.zone
    skills = queue_skills or {}
    repeats = RepeatIndex(fold, fold.stays)
    by_stay: dict[int, list[Handling]] = defaultdict(list)
    by_call: dict[str, list[Handling]] = defaultdict(list)
    for handling in fold.handlings:
        if handling.stay is not None:
            by_stay[id(handling.stay)].append(handling)
            by_call[handling.call_id].append(handling)
    totals: dict[tuple[float, str | None], QueueTotals] = defaultdict(QueueTotals)

    def bucket(at: float) -> float:
        return bucket_start(at, grain, settings.interval_s, zone, start)

    if by == "centre":
        chains: dict[str, list[QueueStay]] = defaultdict(list)
        for stay in fold.stays:
            chains[stay.call_id].append(stay)
        for call_id, chain in chains.items():
            first = chain[0].first_entered_at
            if start <= first < end:
                unit = _call_unit(chain, by_call.get(call_id, []))
                _count_unit(totals[(bucket(first), None)], unit, settings, as_of, fold, repeats)
        for session in fold.ivr_sessions:
            if start <= session.started_at < end:
                _count_ivr(totals[(bucket(session.started_at), None)], session)
    else:
        for stay in fold.stays:
            if not start <= stay.entered_at < end:
                continue
            keys: Iterable[str] = (
                (stay.queue,)
                if by == "queue"
                else sorted(stay.skills | skills.get(stay.queue, frozenset()))
            )
            unit = _stay_unit(stay, by_stay.get(id(stay), []))
            for name in keys:
                row = totals[(bucket(stay.entered_at), name)]
                _count_unit(row, unit, settings, as_of, fold, repeats)
    rows = []
    for (begin, key), total in sorted(totals.items(), key=lambda i: (i[0][0], i[0][1] or "")):
        stop = bucket_end(begin, grain, settings.interval_s, zone, end)
        rows.append(Row(max(begin, start), min(stop, end), by, key, total.figures(settings), total))
    return rows


@dataclass(frozen=True, slots=True)
class Part:
    """What one fact adds to one group's totals, at the instant that places it in a
    period: a stay (its queue, when it entered), a call centre-wide (key None, its
    first entry), an IVR session (centre-wide, its start), a handling (its agent,
    when its call entered the queue)."""

    at: float
    key: str | None
    totals: QueueTotals | AgentTotals


def call_parts(
    fold: MetricFold,
    stays: Sequence[QueueStay],
    handlings: Sequence[Handling],
    ivr_sessions: Sequence[IvrSession],
    *,
    settings: MetricSettings,
    as_of: float,
    repeats: RepeatIndex,
) -> tuple[list[Part], list[Part]]:
    """One call's (queue and centre parts, agent parts), from its stays (in the order
    they opened), handlings and IVR sessions. The parts of every call placed in
    [start, end), added up, are queue_report's and agent_report's RANGE totals for
    that range, except agent time (states and holds): that is split at the period's
    edges by the reader, as agent_report does."""
    queue_parts: list[Part] = []
    by_stay: dict[int, list[Handling]] = defaultdict(list)
    for handling in handlings:
        if handling.stay is not None:
            by_stay[id(handling.stay)].append(handling)
    for stay in stays:
        totals = QueueTotals()
        unit = _stay_unit(stay, by_stay.get(id(stay), []))
        _count_unit(totals, unit, settings, as_of, fold, repeats)
        queue_parts.append(Part(stay.entered_at, stay.queue, totals))
    if stays:
        totals = QueueTotals()
        served = [h for h in handlings if h.stay is not None]
        _count_unit(totals, _call_unit(stays, served), settings, as_of, fold, repeats)
        queue_parts.append(Part(stays[0].first_entered_at, None, totals))
    for session in ivr_sessions:
        totals = QueueTotals()
        _count_ivr(totals, session)
        queue_parts.append(Part(session.started_at, None, totals))
    agent_parts: list[Part] = []
    for handling in handlings:
        agent_totals = AgentTotals()
        _count_handling(agent_totals, handling, settings, as_of, fold, repeats)
        agent_parts.append(Part(handling.reference_at, handling.agent_id, agent_totals))
    return queue_parts, agent_parts


def agent_report(
    fold: MetricFold,
    start: float,
    end: float,
    *,
    settings: MetricSettings,
    as_of: float,
    grain: Grain = Grain.RANGE,
    centre: bool = False,
) -> list[Row]:
    """Agent figures in [start, end): state time split at bucket edges (open states run
    to `as_of`), calls by when they entered the queue. `centre`: all agents summed."""
    zone = settings.zone
    iv = settings.interval_s
    totals: dict[tuple[float, str | None], AgentTotals] = defaultdict(AgentTotals)

    def row(begin: float, agent_id: str) -> AgentTotals:
        return totals[(begin, None if centre else agent_id)]

    stop_at = min(end, as_of)
    for segment in fold.segments:
        if segment.state == "logged_out":
            continue
        seg_end = segment.end if segment.end is not None else as_of
        for begin, seconds in split(segment.start, seg_end, start, stop_at, grain, iv, zone):
            add_state_time(row(begin, segment.agent_id), segment.state, segment.reason, seconds)
    repeats = RepeatIndex(fold, fold.stays)
    for handling in fold.handlings:
        holds = list(handling.holds)
        if handling.held_since is not None:
            holds.append((handling.held_since, as_of))
        for a, b in holds:
            for begin, seconds in split(a, b, start, stop_at, grain, iv, zone):
                row(begin, handling.agent_id).hold_s += seconds
        at = handling.reference_at
        if start <= at < end:
            total = row(bucket_start(at, grain, iv, zone, start), handling.agent_id)
            _count_handling(total, handling, settings, as_of, fold, repeats)
    rows = []
    for (begin, key), total in sorted(totals.items(), key=lambda i: (i[0][0], i[0][1] or "")):
        stop = bucket_end(begin, grain, iv, zone, end)
        dimension = "centre" if centre else "agent"
        rows.append(
            Row(max(begin, start), min(stop, end), dimension, key, total.figures(settings), total)
        )
    return rows


def longest_wait(fold: MetricFold, queue: str | None, as_of: float) -> float | None:
    """Real time: now - the oldest enqueue among calls waiting (in `queue`, or anywhere)."""
    waits = [
        as_of - stay.entered_at for stay in fold.waiting() if queue is None or stay.queue == queue
    ]
    return max(waits) if waits else None
