"""Per-stay summary rows: the queue figures from one SQL aggregation instead of the event fold.

The event path (history.py) reads every event of a range and folds it in
Python (~20 µs an event): far from 1 s at 10 M calls. Here the same fold is
run once per local day, by `ctiserver metrics rebuild` (by hand for a backfill,
and by the server's upkeep, summary_upkeep.py, for recent days), and
`summarise` turns its finished facts into rows (migration 0007):

- `metric_stays`: one row per finished queue stay, the additive inputs of
  `figures.QueueTotals` as raw instants and durations (waits, answer, leave,
  callback request, handle/talk/hold/ACW sums of its complete handlings, the
  latest resolved flag, the customer key and the next other contact of the same
  customer in the same queue and in any queue after the answer);
- `metric_agent_time`: agents' state time cut at 15-minute edges;
- `metric_queue_intervals` (rollup.py): those stays' QueueTotals per 15 minutes
  and queue, written in the same transaction.

`summary_report` aggregates `metric_stays` in SQL per bucket (intervals and
local days of the centre's time zone, or the range) into `QueueTotals`, whose
`figures()` computes the ratios unchanged, so the paths give the same report
(tests/metrics/test_summary.py and test_rollup.py check it against the events);
report_source.py picks the fastest that can answer.

Scope: queue and skill reports. The centre-wide report (a call counted once
across its stays, IVR containment) and the agent report (state time from
`metric_agent_time`, handlings per agent) stay on the event path. A stay still
waiting, or answered with a handling not over yet, has no row
(`Summary.unfinished` counts them): a range with such stays is not complete and
is reported from events. Events appended to a rebuilt day afterwards (a late
wrap-up) show once the upkeep rebuilds it (daily while its FCR windows are open).
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, field, fields, replace
from typing import Any, Final
from zoneinfo import ZoneInfo

from ctiserver.acd.config import AcdConfig
from ctiserver.metrics.facts import ANSWERED, CALLBACK, Handling, QueueStay
from ctiserver.metrics.figures import QueueTotals, latest_resolved
from ctiserver.metrics.fold import MetricFold
from ctiserver.metrics.history import load_facts
from ctiserver.metrics.intervals import Grain, bucket_start, buckets, split
from ctiserver.metrics.reports import Report, ReportRow, queue_skills
from ctiserver.metrics.rollup import ROLLUP_BUCKET_S, last_fcr_due, settings_key, write_rollup
from ctiserver.metrics.settings import CallbackWait, FcrScope, MetricSettings
from ctiserver.metrics.sql_buckets import bucket_sql
from ctiserver.store.database import Database

AGENT_BUCKET_S: Final = 900
_UTC: Final = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class StayRow:
    """One `metric_stays` row (column order)."""

    call_id: str
    queue: str
    entered_at: float
    first_entered_at: float
    left_at: float | None
    outcome: str
    answered_at: float | None
    agent_id: str | None
    callback_requested_at: float | None
    transferred: bool
    skills: list[str]
    customer_key: str | None
    handled: int
    handle_s: float
    talk_s: float
    hold_s: float
    acw_s: float
    resolved: bool | None
    next_same_queue_at: float | None
    next_any_at: float | None
    fcr_known_until: float


STAY_COLUMNS: Final = tuple(f.name for f in fields(StayRow))


@dataclass(frozen=True, slots=True)
class AgentTimeRow:
    agent_id: str
    bucket_start: float
    state: str
    reason: str
    seconds: float


@dataclass(slots=True)
class Summary:
    stays: list[StayRow] = field(default_factory=list)
    agent_time: list[AgentTimeRow] = field(default_factory=list)
    unfinished: int = 0  # stays in range not finished (no row written)
    stays_written: int = 0  # rebuild_days: rows written (the lists are left empty)
    agent_rows_written: int = 0


def _finished(stay: QueueStay, handlings: Sequence[Handling]) -> bool:
    if stay.outcome is None or stay.outcome == CALLBACK:
        return False
    return stay.outcome != ANSWERED or all(h.complete for h in handlings)


def summarise(fold: MetricFold, start: float, end: float, known_until: float) -> Summary:
    """The summary rows of the stays that entered in [start, end) and are finished, and the
    agents' finished state time in [start, end). Pure: `fold` must hold what a report of
    the range needs (history.load_facts), later contacts read up to `known_until`."""
    summary = Summary()
    by_stay: dict[int, list[Handling]] = defaultdict(list)
    for handling in fold.handlings:
        if handling.stay is not None and not handling.outbound:
            by_stay[id(handling.stay)].append(handling)
    # Queue entries per customer, in time order: (entered_at, call_id, queue).
    entries: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    for stay in fold.stays:
        key = fold.customer_key(stay.call_id, stay.caller)
        if key is not None:
            entries[key].append((stay.entered_at, stay.call_id, stay.queue))
    for listed in entries.values():
        listed.sort()
    for stay in fold.stays:
        if not start <= stay.entered_at < end:
            continue
        handlings = by_stay.get(id(stay), [])
        if not _finished(stay, handlings):
            summary.unfinished += 1
            continue
        assert stay.outcome is not None
        key = fold.customer_key(stay.call_id, stay.caller)
        next_same = next_any = None
        if key is not None and stay.answered_at is not None:
            for entered, call_id, queue in entries[key]:
                if entered <= stay.answered_at or call_id == stay.call_id:
                    continue
                if next_any is None:
                    next_any = entered
                if queue == stay.queue:
                    next_same = entered
                    break
        complete = [h for h in handlings if h.complete]
        summary.stays.append(
            StayRow(
                stay.call_id,
                stay.queue,
                stay.entered_at,
                stay.first_entered_at,
                stay.left_at,
                stay.outcome,
                stay.answered_at,
                stay.agent_id,
                stay.callback_requested_at,
                stay.transferred,
                sorted(stay.skills),
                key,
                len(complete),
                sum(h.handle_s for h in complete),
                sum(h.talk_s for h in complete),
                sum(h.hold_s for h in handlings),
                sum(h.acw_s for h in complete),
                latest_resolved(fold, handlings),
                next_same,
                next_any,
                known_until,
            )
        )
    seconds: dict[tuple[str, float, str, str], float] = defaultdict(float)
    for segment in fold.segments:
        if segment.end is None or segment.state == "logged_out":
            continue
        reason = (segment.reason or "") if segment.state == "not_ready" else ""
        for begin, length in split(
            segment.start, segment.end, start, end, Grain.INTERVAL, AGENT_BUCKET_S, _UTC
        ):
            seconds[(segment.agent_id, begin, segment.state, reason)] += length
    summary.agent_time = [AgentTimeRow(*k, v) for k, v in sorted(seconds.items())]
    return summary


async def write_summary(
    database: Database,
    summary: Summary,
    start: float,
    end: float,
    as_of: float,
    settings: MetricSettings,
) -> None:
    """Replace the summary rows of [start, end) by `summary`, and the 15-minute queue
    totals aggregated from them (rollup.py, with `settings`' variants), in one transaction."""
    async with database.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM metric_stays WHERE entered_at >= $1 AND entered_at < $2", start, end
        )
        await conn.execute(
            "DELETE FROM metric_agent_time WHERE bucket_start >= $1 AND bucket_start < $2",
            start,
            end,
        )
        # Ranges overlapping this one keep their parts outside it.
        overlapping = await conn.fetch(
            "DELETE FROM metric_summary_ranges WHERE range_start < $2 AND range_end > $1"
            " RETURNING range_start, range_end, built_as_of, unfinished, rollup_key",
            start,
            end,
        )
        key = settings_key(settings)
        kept = [
            piece
            for r in overlapping
            for piece in (
                (r["range_start"], start, r["built_as_of"], r["unfinished"], r["rollup_key"]),
                (end, r["range_end"], r["built_as_of"], r["unfinished"], r["rollup_key"]),
            )
            if piece[0] < piece[1]
        ]
        kept.append((start, end, as_of, summary.unfinished, key))
        await conn.copy_records_to_table(
            "metric_stays", records=[astuple(r) for r in summary.stays], columns=STAY_COLUMNS
        )
        await conn.copy_records_to_table(
            "metric_agent_time",
            records=[astuple(r) for r in summary.agent_time],
            columns=[f.name for f in fields(AgentTimeRow)],
        )
        quarter_hours = replace(settings, interval_s=ROLLUP_BUCKET_S, timezone="UTC")
        totals = await queue_totals(
            conn, start, end, by="queue", grain=Grain.INTERVAL, settings=quarter_hours, as_of=as_of
        )
        window = settings.fcr_window.total_seconds()
        due = last_fcr_due(
            [(r.entered_at, r.answered_at, r.customer_key) for r in summary.stays], window
        )
        await write_rollup(conn, totals, due, start, end, key)
        await conn.executemany(
            "INSERT INTO metric_summary_ranges"
            " (range_start, range_end, built_as_of, unfinished, rollup_key)"
            " VALUES ($1, $2, $3, $4, $5)",
            kept,
        )


async def rebuild(
    database: Database,
    start: float,
    end: float,
    *,
    settings: MetricSettings,
    as_of: float | None = None,
) -> Summary:
    """Backfill [start, end): fold its events (the event path's read), summarise, write.
    Both ends on 15-minute edges (agent time is kept per 15-minute bucket)."""
    if start % AGENT_BUCKET_S or end % AGENT_BUCKET_S or end <= start:
        raise ValueError("a rebuild range runs between 15-minute edges")
    known = time.time() if as_of is None else as_of
    facts = await load_facts(database, start, end, settings=settings, as_of=known)
    # Later contacts were read up to the last answer + fcr_window (history.load_facts).
    answers = [
        s.answered_at
        for s in facts.fold.stays
        if s.answered_at is not None and start <= s.entered_at < end
    ]
    lookahead = max(answers, default=start) + settings.fcr_window.total_seconds()
    summary = summarise(facts.fold, start, end, known_until=min(known, lookahead))
    await write_summary(database, summary, start, end, known, settings)
    return summary


async def rebuild_days(
    database: Database,
    start: float,
    end: float,
    *,
    settings: MetricSettings,
    as_of: float | None = None,
    progress: Callable[[float, float, Summary], None] | None = None,
) -> Summary:
    """`rebuild` one local day (of settings.timezone) at a time: memory stays one day's fold.
    Returns the counts summed (rows are not kept)."""
    known = time.time() if as_of is None else as_of
    total = Summary()
    for begin, stop in buckets(start, end, Grain.DAY, settings.interval_s, settings.zone):
        day = await rebuild(database, begin, stop, settings=settings, as_of=known)
        total.unfinished += day.unfinished
        if progress is not None:
            progress(begin, stop, day)
        total.stays_written += len(day.stays)
        total.agent_rows_written += len(day.agent_time)
    return total


# Stays answered this long after their day ended still count in its FCR windows.
_LATE_ANSWER_S: Final = 6 * 3600.0
# A day whose FCR windows are still open is rebuilt at most this often: a busy day's
# fold takes minutes, and its rows answer only reports as of their build until then.
_OPEN_WINDOW_REBUILD_S: Final = 86400.0


async def stale_days(
    database: Database, now: float, settings: MetricSettings
) -> list[tuple[float, float]]:
    """The recent local days (before today, back to the FCR window and two days more)
    the upkeep rebuilds: rows missing, built with stays unfinished or other variants;
    built before every FCR window of their stays closed, once they all have, and
    meanwhile once a day. Older days are rebuilt on demand
    (`ctiserver metrics rebuild --from --to`)."""
    window = settings.fcr_window.total_seconds()
    zone = settings.zone
    today = bucket_start(now, Grain.DAY, settings.interval_s, zone, now)
    first = bucket_start(today - window - 2 * 86400, Grain.DAY, settings.interval_s, zone, 0.0)
    ranges = await database.fetch(
        "SELECT range_start, range_end, built_as_of, unfinished, rollup_key"
        " FROM metric_summary_ranges WHERE range_end > $1 AND range_start < $2",
        first,
        today,
    )
    key = settings_key(settings)
    stale: list[tuple[float, float]] = []
    for begin, end in buckets(first, today, Grain.DAY, settings.interval_s, zone):
        closed = end + window + _LATE_ANSWER_S
        settled = any(
            r["range_start"] <= begin
            and r["range_end"] >= end
            and not r["unfinished"]
            and r["rollup_key"] == key
            and (
                r["built_as_of"] >= closed
                or (now < closed and r["built_as_of"] >= now - _OPEN_WINDOW_REBUILD_S)
            )
            for r in ranges
        )
        if not settled:
            stale.append((begin, end))
    return stale


# -- the SQL aggregation -------------------------------------------------------------------

_KEYS: Final = {
    "queue": "SELECT m.queue AS key",
    # The call's own skills and its queue's configured ones ({qs}: queue -> skills).
    "skill": (
        "SELECT DISTINCT k AS key FROM unnest(m.skills || ARRAY(SELECT"
        " jsonb_array_elements_text(coalesce({qs}::text::jsonb -> m.queue, '[]'::jsonb)))) AS k"
    ),
}

SUMMARY_KEYS: Final = frozenset(_KEYS)

# $1 start, $2 end, $3 as_of, $4 short_abandon_s, $5 count_short_abandons, $6 sl_threshold_s,
# $7 callback wait connected-only, $8 fcr_window seconds, $9 fcr scope any; then, where the
# query names them, {iv} interval_s, {tz} time zone, {qs} queue -> skills (json).
# figures._count_unit in SQL.
_AGGREGATE: Final = """
WITH s AS (
    SELECT g.key, greatest($1, {bucket}) AS bucket, m.*,
           greatest(0.0, coalesce(m.answered_at, m.left_at, $3) - m.entered_at
               - CASE WHEN $7 AND m.callback_requested_at IS NOT NULL
                           AND m.answered_at IS NOT NULL
                      THEN m.answered_at - greatest(m.callback_requested_at, m.entered_at)
                      ELSE 0.0 END) AS wait,
           (m.outcome = 'abandoned'
               AND coalesce(m.left_at, $3) - m.first_entered_at <= $4) AS short,
           CASE WHEN $9 THEN m.next_any_at ELSE m.next_same_queue_at END AS next_at
    FROM metric_stays m CROSS JOIN LATERAL ({keys}) g
    WHERE m.entered_at >= $1 AND m.entered_at < $2
),
c AS (
    SELECT *, NOT (short AND NOT $5) AS counted,
           outcome = 'answered' AND NOT (short AND NOT $5) AS ans,
           outcome = 'abandoned' AND NOT (short AND NOT $5) AS abd,
           outcome IS NULL OR outcome = 'callback' AS wtg
    FROM s
)
SELECT bucket, key,
    count(*) AS entered,
    count(*) FILTER (WHERE counted) AS offered,
    count(*) FILTER (WHERE ans) AS answered,
    count(*) FILTER (WHERE abd) AS abandoned,
    count(*) FILTER (WHERE short) AS short_abandoned,
    count(*) FILTER (WHERE counted AND outcome IN ('overflowed', 'voicemail', 'closed'))
        AS routed_away,
    count(*) FILTER (WHERE counted AND outcome = 'overflowed') AS overflowed,
    count(*) FILTER (WHERE counted AND outcome = 'voicemail') AS voicemail,
    count(*) FILTER (WHERE counted AND outcome = 'closed') AS closed,
    count(*) FILTER (WHERE callback_requested_at IS NOT NULL) AS callbacks,
    count(*) FILTER (WHERE counted AND wtg) AS waiting,
    count(*) FILTER (WHERE counted AND wtg AND wait <= $6) AS sl_undetermined,
    count(*) FILTER (WHERE ans AND wait <= $6) AS answered_within_t,
    count(*) FILTER (WHERE abd AND wait > $6) AS abandoned_after_t,
    coalesce(sum(wait) FILTER (WHERE ans), 0.0) AS wait_answered_s,
    coalesce(sum(wait) FILTER (WHERE abd), 0.0) AS wait_abandoned_s,
    coalesce(max(wait) FILTER (WHERE ans OR abd), 0.0) AS longest_wait_s,
    count(*) FILTER (WHERE ans AND transferred) AS transferred,
    coalesce(sum(handled) FILTER (WHERE ans), 0) AS handled,
    coalesce(sum(handle_s) FILTER (WHERE ans), 0.0) AS handle_s,
    coalesce(sum(talk_s) FILTER (WHERE ans), 0.0) AS talk_s,
    coalesce(sum(hold_s) FILTER (WHERE ans), 0.0) AS hold_s,
    coalesce(sum(acw_s) FILTER (WHERE ans), 0.0) AS acw_s,
    count(*) FILTER (WHERE ans AND resolved IS NOT NULL) AS fcr_reported,
    count(*) FILTER (WHERE ans AND resolved) AS fcr_reported_resolved,
    count(*) FILTER (WHERE ans AND customer_key IS NOT NULL AND answered_at IS NOT NULL
                     AND $3 >= answered_at + $8) AS fcr_repeat_closed,
    count(*) FILTER (WHERE ans AND customer_key IS NOT NULL AND answered_at IS NOT NULL
                     AND $3 >= answered_at + $8
                     AND (next_at IS NULL OR next_at > answered_at + $8)) AS fcr_repeat_resolved,
    count(*) FILTER (WHERE ans AND customer_key IS NOT NULL AND answered_at IS NOT NULL
                     AND $3 < answered_at + $8) AS fcr_repeat_pending,
    count(*) FILTER (WHERE ans AND (customer_key IS NULL OR answered_at IS NULL))
        AS fcr_repeat_anonymous
FROM c
GROUP BY bucket, key
"""

_TOTAL_FIELDS: Final = tuple(f.name for f in fields(QueueTotals))


async def queue_totals(
    database: Database | Any,
    start: float,
    end: float,
    *,
    by: str,
    grain: Grain,
    settings: MetricSettings,
    as_of: float,
    skills_of: Mapping[str, frozenset[str]] | None = None,
) -> dict[tuple[float, str], QueueTotals]:
    """QueueTotals per (bucket start, queue or skill) of the stays entered in [start, end).
    `database`: the Database or a connection (to read inside its transaction)."""
    if by not in _KEYS:
        raise ValueError(f"the summary path reports by {', '.join(_KEYS)}, not {by!r}")
    args: list[Any] = [
        start,
        end,
        as_of,
        settings.short_abandon_s,
        settings.count_short_abandons,
        settings.sl_threshold_s,
        settings.callback_wait is CallbackWait.CONNECTED_ONLY,
        settings.fcr_window.total_seconds(),
        settings.fcr_scope is FcrScope.ANY,
    ]
    template = _AGGREGATE.format(bucket=bucket_sql(grain, "m.entered_at"), keys=_KEYS[by])
    extra = {
        "iv": float(settings.interval_s),
        "tz": settings.timezone,
        "qs": json.dumps({q: sorted(s) for q, s in (skills_of or {}).items()}),
    }
    numbers: dict[str, str] = {}
    for name, value in extra.items():
        if "{" + name + "}" in template:  # only the parameters the query names
            args.append(value)
            numbers[name] = f"${len(args)}"
    query = template.replace("{", "{{").replace("}", "}}")
    for name in extra:
        query = query.replace("{{" + name + "}}", "{" + name + "}")
    query = query.format(**{name: numbers.get(name, "NULL") for name in extra})
    # Every use of a parameter carries its type (PostgreSQL cannot infer some).
    types = ["float8"] * 4 + ["boolean", "float8", "boolean", "float8", "boolean"]
    types += ["float8" if name == "iv" else "text" for name in extra if name in numbers]
    query = re.sub(r"\$(\d+)\b", lambda m: f"{m.group(0)}::{types[int(m.group(1)) - 1]}", query)
    totals: dict[tuple[float, str], QueueTotals] = {}
    for row in await database.fetch(query, *args):
        values = {name: row[name] for name in _TOTAL_FIELDS if name in row}
        totals[(float(row["bucket"]), str(row["key"]))] = QueueTotals(**values)
    return totals


async def summary_complete(
    database: Database, start: float, end: float, *, settings: MetricSettings, as_of: float
) -> bool:
    """Whether `metric_stays` answers a report of [start, end) as of `as_of` as the events
    would: rebuilt ranges cover it with no stay unfinished, and every FCR window the report
    judges closed was looked through by the rebuild. (Events appended after a rebuild, e.g.
    late wrap-ups, are not detected: live writing, not done yet, is to keep rows current.)"""
    covered = start
    rows = await database.fetch(
        "SELECT range_start, range_end, unfinished FROM metric_summary_ranges"
        " WHERE range_end > $1 AND range_start < $2 ORDER BY range_start",
        start,
        end,
    )
    for row in rows:
        if row["range_start"] > covered or row["unfinished"]:
            return False
        covered = max(covered, row["range_end"])
    if covered < end:
        return False
    window = settings.fcr_window.total_seconds()
    unknown = await database.fetchval(
        "SELECT EXISTS (SELECT 1 FROM metric_stays WHERE entered_at >= $1 AND entered_at < $2"
        " AND answered_at IS NOT NULL AND answered_at + $3::float8 <= $4::float8"
        " AND least(answered_at + $3::float8, $4::float8) > fcr_known_until)",
        start,
        end,
        window,
        as_of,
    )
    return not unknown


async def summary_report(
    database: Database,
    start: float,
    end: float,
    *,
    by: str,
    grain: Grain,
    settings: MetricSettings,
    config: AcdConfig | None = None,
    as_of: float | None = None,
) -> Report:
    """The report of [start, end) by queue or skill from `metric_stays` (see the module doc);
    the rows and figures of history.historical_report for the same range."""
    known = time.time() if as_of is None else as_of
    found = await queue_totals(
        database,
        start,
        end,
        by=by,
        grain=grain,
        settings=settings,
        as_of=known,
        skills_of=queue_skills(config),
    )
    names: dict[str, str] = {}
    if config is not None:
        names = {q.name: q.title for q in config.queues} if by == "queue" else dict(config.skills)
    empty = QueueTotals().figures(settings)
    groups = sorted(set(names) | {key for _, key in found})
    rows: list[ReportRow] = []
    for begin, stop in buckets(start, end, grain, settings.interval_s, settings.zone):
        for key in groups:
            total = found.get((begin, key))
            figures = total.figures(settings) if total is not None else empty
            rows.append(ReportRow(begin, stop, key, names.get(key, ""), figures))
    return Report(start, end, by, grain, settings, known, tuple(rows), source="summary")
