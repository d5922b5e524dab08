"""Historical reports: one row per group x period, the variants named, in JSON, CSV or a table.

Pure (no I/O): `history.py` reads the facts from PostgreSQL and calls `compose`;
the REST API and `ctiserver report` parse their input with `parse_range` and
`settings_with` (a `ParameterError` names the bad parameter) and print with
`Report.as_json`, `to_csv` and `to_table`.

Periods come from intervals.buckets, so a report has a row for every period of
the range and every group (configured queues, skills or agents, and any other
the events name), empty ones included: a spreadsheet sees the whole grid.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ctiserver.acd.config import AcdConfig
from ctiserver.metrics.figures import (
    NOTES,
    AgentTotals,
    QueueTotals,
    Row,
    agent_report,
    queue_report,
    skills_of_queue,
)
from ctiserver.metrics.fold import MetricFold
from ctiserver.metrics.intervals import Grain, buckets
from ctiserver.metrics.settings import CallbackWait, FcrScope, MetricSettings, SlMode

GROUPINGS: Final = ("queue", "skill", "agent", "centre")
# A report folds every event of its range in memory: a bound keeps one request sane.
MAX_RANGE_DAYS: Final = 366
MAX_INTERVAL_RANGE_DAYS: Final = 62
# The variants a report may override, by their describe() names (window_s is real time only).
VARIANTS: Final = (
    "short_abandon_s",
    "count_short_abandons",
    "sl_threshold_s",
    "sl_mode",
    "callback_wait",
    "occupancy_includes_acw",
    "fcr_window_s",
    "fcr_scope",
    "interval_s",
    "timezone",
)
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


class ParameterError(ValueError):
    """A bad report parameter; `name` is the parameter as the caller spelled it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


# -- input -------------------------------------------------------------------------------


def centre_timezone(config: AcdConfig | None) -> str | None:
    """The centre's time zone as the ACD configuration states it: the one zone every queue
    with business hours uses; None when no queue has hours or they disagree."""
    if config is None:
        return None
    zones = {queue.hours.timezone for queue in config.queues if queue.hours is not None}
    return zones.pop() if len(zones) == 1 else None


def _number(name: str, text: str, *, positive: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ParameterError(name, f"{name} must be a number, not {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ParameterError(name, f"{name} must be a {'positive' if positive else '>= 0'} number")
    return value


def _flag(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ParameterError(name, f"{name} must be true or false, not {text!r}")


def _choice(name: str, text: str, kinds: Iterable[str]) -> str:
    allowed = list(kinds)
    if text not in allowed:
        raise ParameterError(name, f"{name} must be one of {', '.join(allowed)}, not {text!r}")
    return text


def zone_named(name: str, text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ParameterError(name, f"{name}: unknown time zone {text!r}") from None


def settings_with(base: MetricSettings, overrides: Mapping[str, str]) -> MetricSettings:
    """`base` with the variants named in `overrides` (text values, as in a query string)."""
    changes: dict[str, Any] = {}
    for name, text in overrides.items():
        match name:
            case "short_abandon_s" | "sl_threshold_s":
                changes[name] = _number(name, text)
            case "count_short_abandons" | "occupancy_includes_acw":
                changes[name] = _flag(name, text)
            case "sl_mode":
                changes[name] = SlMode(_choice(name, text, (str(m) for m in SlMode)))
            case "callback_wait":
                changes[name] = CallbackWait(_choice(name, text, (str(m) for m in CallbackWait)))
            case "fcr_scope":
                changes[name] = FcrScope(_choice(name, text, (str(m) for m in FcrScope)))
            case "fcr_window_s":
                changes["fcr_window"] = timedelta(seconds=_number(name, text, positive=True))
            case "interval_s":
                if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= 86400:
                    raise ParameterError(name, "interval_s must be whole seconds dividing a day")
                if 86400 % int(text):
                    raise ParameterError(name, "interval_s must divide a day (900, 1800, 3600...)")
                changes[name] = int(text)
            case "timezone":
                changes[name] = zone_named(name, text).key
            case _:
                raise ParameterError(
                    name, f"unknown variant {name!r}; variants are {', '.join(VARIANTS)}"
                )
    return dataclasses.replace(base, **changes)


def _local_midnight(day: date, zone: ZoneInfo) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()


def parse_moment(name: str, text: str, zone: ZoneInfo, *, end: bool) -> float:
    """An ISO date or date-time; without an offset it is local time in `zone`.

    A date as the range's end includes that whole day (to its local midnight after).
    """
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return _local_midnight(day + timedelta(days=1) if end else day, zone)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ParameterError(
            name, f"{name} must be an ISO date (2026-03-02) or date-time, not {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def parse_range(
    start_text: str | None,
    end_text: str | None,
    zone: ZoneInfo,
    grain: Grain,
    *,
    names: tuple[str, str] = ("from", "to"),
) -> tuple[float, float]:
    """[start, end) from `from` and `to`; `to` defaults to the end of `from`'s day."""
    start_name, end_name = names
    if not start_text:
        raise ParameterError(start_name, f"{start_name} is required (an ISO date or date-time)")
    start = parse_moment(start_name, start_text, zone, end=False)
    if end_text:
        end = parse_moment(end_name, end_text, zone, end=True)
    else:
        day = datetime.fromtimestamp(start, zone).date()
        end = _local_midnight(day + timedelta(days=1), zone)
    if end <= start:
        raise ParameterError(end_name, f"{end_name} must be after {start_name}")
    days = (end - start) / 86400
    limit = MAX_INTERVAL_RANGE_DAYS if grain is Grain.INTERVAL else MAX_RANGE_DAYS
    if days > limit + 1 / 24:  # an hour of slack for a daylight-saving change
        raise ParameterError(
            end_name, f"the range is over {limit} days (the limit for grain {grain})"
        )
    return start, end


def parse_grain(name: str, text: str | None, default: Grain = Grain.DAY) -> Grain:
    if text is None:
        return default
    return Grain(_choice(name, text, (str(g) for g in Grain)))


# -- composition -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One group in one period. `key` is the queue, skill or agent id (None centre-wide);
    `agent_figures` is set centre-wide: all agents' time summed."""

    start: float
    end: float
    key: str | None
    name: str
    figures: dict[str, Any]
    agent_figures: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Report:
    start: float
    end: float
    by: str
    grain: Grain
    settings: MetricSettings
    as_of: float
    rows: tuple[ReportRow, ...]
    events_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    # Where the figures came from: "events" (folded), "summary" (per-stay rows) or
    # "rollup" (15-minute queue totals); all three give the same figures.
    source: str = "events"

    def instant(self, at: float) -> str:
        return datetime.fromtimestamp(at, self.settings.zone).isoformat()

    def as_json(self) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        for row in self.rows:
            item: dict[str, Any] = {"start": self.instant(row.start), "end": self.instant(row.end)}
            if self.by != "centre":
                item[self.by] = row.key
                item["name"] = row.name
            item["figures"] = row.figures
            if row.agent_figures is not None:
                item["agents"] = row.agent_figures
            rows.append(item)
        return {
            "by": self.by,
            "grain": str(self.grain),
            "from": self.instant(self.start),
            "to": self.instant(self.end),
            "as_of": self.instant(self.as_of),
            "variants": self.settings.describe(),
            "variants_summary": self.settings.summary(),
            "notes": list(NOTES),
            "events_read": self.events_read,
            "events_skipped": dict(sorted(self.skipped.items())),
            "source": self.source,
            "rows": rows,
        }


def _names(config: AcdConfig | None, by: str) -> dict[str, str]:
    if config is None:
        return {}
    if by == "queue":
        return {q.name: q.title for q in config.queues}
    if by == "skill":
        return dict(config.skills)
    if by == "agent":
        return {a.agent_id: a.name for a in config.agents}
    return {}


def queue_skills(config: AcdConfig | None) -> dict[str, frozenset[str]]:
    return {} if config is None else {q.name: skills_of_queue(q) for q in config.queues}


def compose(
    fold: MetricFold,
    start: float,
    end: float,
    *,
    by: str,
    grain: Grain,
    settings: MetricSettings,
    as_of: float,
    config: AcdConfig | None = None,
    events_read: int = 0,
) -> Report:
    """The report of [start, end) from a fold holding the events it needs (history.py)."""
    if by not in GROUPINGS:
        raise ParameterError("by", f"by must be one of {', '.join(GROUPINGS)}, not {by!r}")
    common: dict[str, Any] = {"settings": settings, "as_of": as_of, "grain": grain}
    periods = list(buckets(start, end, grain, settings.interval_s, settings.zone))
    names = _names(config, by)
    rows: list[ReportRow] = []
    if by == "centre":
        queue_rows = _by_period(queue_report(fold, start, end, by="centre", **common))
        agent_rows = _by_period(agent_report(fold, start, end, centre=True, **common))
        empty_queue = QueueTotals().figures(settings)
        empty_agents = AgentTotals().figures(settings)
        for begin, stop in periods:
            queue_row = queue_rows.get((begin, None))
            agent_row = agent_rows.get((begin, None))
            rows.append(
                ReportRow(
                    begin,
                    stop,
                    None,
                    "",
                    queue_row.figures if queue_row else empty_queue,
                    agent_row.figures if agent_row else empty_agents,
                )
            )
    else:
        if by == "agent":
            found = _by_period(agent_report(fold, start, end, **common))
            empty = AgentTotals().figures(settings)
        else:
            found = _by_period(
                queue_report(fold, start, end, by=by, queue_skills=queue_skills(config), **common)
            )
            empty = QueueTotals().figures(settings)
        groups = sorted(set(names) | {key for _, key in found if key is not None})
        for begin, stop in periods:
            for key in groups:
                row = found.get((begin, key))
                rows.append(
                    ReportRow(begin, stop, key, names.get(key, ""), row.figures if row else empty)
                )
    return Report(
        start,
        end,
        by,
        grain,
        settings,
        as_of,
        tuple(rows),
        events_read,
        dict(fold.skipped),
    )


def _by_period(rows: Sequence[Row]) -> dict[tuple[float, str | None], Row]:
    return {(row.start, row.key): row for row in rows}


# -- output ------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 4))
    if isinstance(value, Mapping):
        return json.dumps(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in value.items()},
            ensure_ascii=False,
        )
    return str(value)


def to_csv(report: Report) -> str:
    """UTF-8 text (no BOM), a header row, one row per group x period; the last column names
    the variants in force. Centre-wide, agent figures are the `agents.` columns."""
    out = io.StringIO()
    writer = csv.writer(out)
    first = report.rows[0] if report.rows else None
    figure_names = list(first.figures) if first else list(QueueTotals().figures(report.settings))
    agent_names = list(first.agent_figures or {}) if first else []
    if report.by == "centre" and not agent_names:
        agent_names = list(AgentTotals().figures(report.settings))
    lead = ["start", "end"] if report.by == "centre" else ["start", "end", report.by, "name"]
    writer.writerow(lead + figure_names + [f"agents.{n}" for n in agent_names] + ["variants"])
    summary = report.settings.summary()
    for row in report.rows:
        cells = [report.instant(row.start), report.instant(row.end)]
        if report.by != "centre":
            cells += [row.key or "", row.name]
        cells += [_cell(row.figures.get(n)) for n in figure_names]
        cells += [_cell((row.agent_figures or {}).get(n)) for n in agent_names]
        writer.writerow([*cells, summary])
    return out.getvalue()


_QUEUE_COLUMNS: Final = (
    ("offered", "offered", "n"),
    ("answered", "answered", "n"),
    ("abandoned", "abandoned", "n"),
    ("ASA", "asa_s", "s"),
    ("SL", "service_level", "%"),
    ("aband.", "abandonment_rate", "%"),
    ("AHT", "aht_s", "s"),
    ("transfer", "transfer_rate", "%"),
    ("FCR", "fcr_repeat_contact", "%"),
)
_AGENT_COLUMNS: Final = (
    ("handled", "calls_handled", "n"),
    ("AHT", "aht_s", "s"),
    ("occupancy", "occupancy", "%"),
    ("utilization", "utilization", "%"),
    ("not ready", "not_ready_s", "s"),
    ("FCR", "fcr_repeat_contact", "%"),
)


def _short(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "%":
        return f"{value * 100:.1f}%"
    if kind == "s":
        return f"{value:.1f}"
    return str(value)


def _width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def to_table(report: Report) -> str:
    """A terminal table of the main figures, after the variants (the JSON and CSV have all)."""
    zone = report.settings.zone
    day_only = report.grain is Grain.DAY
    columns = _AGENT_COLUMNS if report.by == "agent" else _QUEUE_COLUMNS
    header = ["period", report.by, "name"] if report.by != "centre" else ["period"]
    header += [title for title, _, _ in columns]
    if report.by == "centre":
        header += ["occupancy"]
    table = [header]
    for row in report.rows:
        begin = datetime.fromtimestamp(row.start, zone)
        stop = datetime.fromtimestamp(row.end, zone)
        period = (
            begin.strftime("%Y-%m-%d")
            if day_only
            else f"{begin:%Y-%m-%d %H:%M}-{stop:%H:%M}"
            if begin.date() == stop.date() or stop.time() == datetime.min.time()
            else f"{begin:%Y-%m-%d %H:%M} - {stop:%Y-%m-%d %H:%M}"
        )
        cells = [period] if report.by == "centre" else [period, row.key or "", row.name or ""]
        cells += [_short(row.figures.get(key), kind) for _, key, kind in columns]
        if report.by == "centre":
            cells.append(_short((row.agent_figures or {}).get("occupancy"), "%"))
        table.append(cells)
    widths = [max(_width(line[i]) for line in table) for i in range(len(header))]
    lines = [
        f"{report.by} report {report.instant(report.start)} .. {report.instant(report.end)}"
        f" by {report.grain}",
        f"variants: {report.settings.summary()}",
    ]
    if report.skipped:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(report.skipped.items()))
        lines.append(f"events skipped: {skipped}")
    lines += [
        "  ".join(c + " " * (w - _width(c)) for c, w in zip(line, widths, strict=True))
        for line in table
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"
