"""Queue totals per 15 minutes: the rows a day or a month of queue figures is summed from.

`metric_stays` (summary.py) has one row per stay, so a 30-day report at 10 M
calls still aggregates ~11 M rows. Here that aggregation is done once per
15-minute bucket and queue, when the stays are rebuilt, into
`metric_queue_intervals` (migration 0007): every field of `figures.QueueTotals`
is additive (longest wait is a maximum), so a report of any local interval
grid on 15-minute edges, of local days or of the whole range is a sum of a few
thousand rows, whatever the call volume.

What a row can answer depends on what it was built with:
- the variant settings the totals bake in (`settings_key`: short abandons,
  service-level threshold, callback wait, FCR window and scope); a report with
  other variants is not answered from here;
- the FCR repeat-contact counts are as of the build: a row answers only once
  every window of the bucket closed before the build (`last_fcr_due` <= the
  range's `built_as_of`) and before the report's `as_of`.
`rollup_report` returns None when any of that fails, and the caller goes to the
per-stay rows or the events (report_source.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import astuple, fields
from typing import Any, Final
from zoneinfo import ZoneInfo

from ctiserver.acd.config import AcdConfig
from ctiserver.metrics.figures import QueueTotals
from ctiserver.metrics.intervals import Grain, buckets
from ctiserver.metrics.reports import Report, ReportRow
from ctiserver.metrics.settings import MetricSettings
from ctiserver.metrics.sql_buckets import bucket_sql
from ctiserver.store.database import Database

ROLLUP_BUCKET_S: Final = 900
_UTC: Final = ZoneInfo("UTC")
_TOTAL_FIELDS: Final = tuple(f.name for f in fields(QueueTotals))


def settings_key(settings: MetricSettings) -> str:
    """The variants baked into the totals (the rest only shape buckets or ratios)."""
    return json.dumps(
        {
            "short_abandon_s": settings.short_abandon_s,
            "count_short_abandons": settings.count_short_abandons,
            "sl_threshold_s": settings.sl_threshold_s,
            "callback_wait": str(settings.callback_wait),
            "fcr_window_s": settings.fcr_window.total_seconds(),
            "fcr_scope": str(settings.fcr_scope),
        },
        sort_keys=True,
    )


def last_fcr_due(
    stays: Sequence[tuple[float, float | None, str | None]], window_s: float
) -> dict[float, float]:
    """Per 15-minute bucket (UTC edges): when the last FCR window of its answered, known
    customers' stays closes. `stays`: (entered_at, answered_at, customer_key)."""
    due: dict[float, float] = {}
    for entered, answered, key in stays:
        if answered is None or key is None:
            continue
        bucket = entered - entered % ROLLUP_BUCKET_S
        due[bucket] = max(due.get(bucket, answered + window_s), answered + window_s)
    return due


async def write_rollup(
    conn: Any,
    totals: Mapping[tuple[float, str], QueueTotals],
    due: Mapping[float, float],
    start: float,
    end: float,
    key: str,
) -> None:
    """Replace the rows of [start, end) by `totals` (inside the caller's transaction)."""
    await conn.execute(
        "DELETE FROM metric_queue_intervals WHERE bucket_start >= $1 AND bucket_start < $2",
        start,
        end,
    )
    records = [
        (bucket, queue, key, due.get(bucket), *astuple(total))
        for (bucket, queue), total in sorted(totals.items())
    ]
    await conn.copy_records_to_table(
        "metric_queue_intervals",
        records=records,
        columns=("bucket_start", "queue", "settings_key", "last_fcr_due", *_TOTAL_FIELDS),
    )


def _on_quarter_hours(start: float, end: float, grain: Grain, settings: MetricSettings) -> bool:
    edges = [
        edge
        for pair in buckets(start, end, grain, settings.interval_s, settings.zone)
        for edge in pair
    ]
    return all(edge % ROLLUP_BUCKET_S == 0 for edge in edges)


_SUMS: Final = ", ".join(
    f"max({name}) AS {name}" if name == "longest_wait_s" else f"sum({name}) AS {name}"
    for name in _TOTAL_FIELDS
)


async def rollup_report(
    database: Database,
    start: float,
    end: float,
    *,
    grain: Grain,
    settings: MetricSettings,
    config: AcdConfig | None,
    as_of: float,
) -> Report | None:
    """The report of [start, end) by queue from `metric_queue_intervals`, or None when the
    rows cannot answer it exactly (see the module doc)."""
    if not _on_quarter_hours(start, end, grain, settings):
        return None
    key = settings_key(settings)
    bucket = (
        bucket_sql(grain, "m.bucket_start")
        .replace("{tz}", "$3::text")
        .replace("{iv}", "$4::float8")
        .replace("$1", "$1::float8")
    )
    query = (
        f"SELECT greatest($1::float8, {bucket}) AS bucket, m.queue, max(m.last_fcr_due) AS due,"
        f" {_SUMS} FROM metric_queue_intervals m"
        " WHERE m.bucket_start >= $1::float8 AND m.bucket_start < $2::float8"
        # Every parameter named once, whichever of them the grain's bucket uses.
        " AND $3::text IS NOT NULL AND $4::float8 IS NOT NULL"
        " GROUP BY 1, 2"
    )
    async with database.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        ranges = await conn.fetch(
            "SELECT range_start, range_end, built_as_of, unfinished, rollup_key"
            " FROM metric_summary_ranges WHERE range_end > $1 AND range_start < $2"
            " ORDER BY range_start",
            start,
            end,
        )
        covered, built_as_of = start, as_of
        for r in ranges:
            if r["range_start"] > covered or r["unfinished"] or r["rollup_key"] != key:
                return None
            covered = max(covered, r["range_end"])
            built_as_of = min(built_as_of, r["built_as_of"])
        if covered < end:
            return None
        rows = await conn.fetch(query, start, end, settings.timezone, float(settings.interval_s))
    found: dict[tuple[float, str], QueueTotals] = {}
    for row in rows:
        if row["due"] is not None and row["due"] > built_as_of:
            return None  # FCR windows still open when built, or when asked
        values = {name: row[name] for name in _TOTAL_FIELDS}
        found[(float(row["bucket"]), row["queue"])] = QueueTotals(**values)
    names = {q.name: q.title for q in config.queues} if config is not None else {}
    empty = QueueTotals().figures(settings)
    groups = sorted(set(names) | {queue for _, queue in found})
    report_rows = [
        ReportRow(
            begin,
            stop,
            queue,
            names.get(queue, ""),
            found[(begin, queue)].figures(settings) if (begin, queue) in found else empty,
        )
        for begin, stop in buckets(start, end, grain, settings.interval_s, settings.zone)
        for queue in groups
    ]
    return Report(start, end, "queue", grain, settings, as_of, tuple(report_rows), source="rollup")
