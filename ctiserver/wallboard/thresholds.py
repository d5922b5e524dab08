"""Per-queue wallboard thresholds, judged on the server so the page only colours.

The thresholds live in a TOML file named by `[wallboard] thresholds` in
ctiserver.toml (default `wallboard.toml`; see wallboard.example.toml). With no
such file the built-in DEFAULTS apply. Layout:

    [defaults]                      # every queue, and the centre
    waiting = { warn = 3, alarm = 6 }
    service_level_today = { warn = 0.8, alarm = 0.7 }

    [queues.support]                # one queue: only what differs
    waiting = { warn = 1, alarm = 2 }

Figures (THRESHOLD_FIGURES) and which way is bad: `waiting`,
`longest_wait_s`, `asa_s`, `abandonment_rate`, `abandonment_rate_window`
and `agents_short` (Erlang C required minus logged in) are bad when high
(warn when value >= warn); `service_level_today` and `service_level_window`
(fractions 0..1) are bad when low (warn when value <= warn). A figure with no
value (no call yet) is "none". Everything here is pure: no I/O but `load_thresholds`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final


class Level(StrEnum):
    NONE = "none"  # no value to judge
    OK = "ok"
    WARN = "warn"
    ALARM = "alarm"


# Figure -> True when a higher value is worse.
THRESHOLD_FIGURES: Final[Mapping[str, bool]] = {
    "waiting": True,
    "longest_wait_s": True,
    "asa_s": True,
    "abandonment_rate": True,
    "abandonment_rate_window": True,
    "agents_short": True,
    "service_level_today": False,
    "service_level_window": False,
}


class ThresholdError(ValueError):
    """The thresholds file is wrong; one problem per line."""


@dataclass(frozen=True, slots=True)
class Threshold:
    warn: float
    alarm: float

    def judge(self, value: float | None, high_is_bad: bool) -> Level:
        if value is None:
            return Level.NONE
        if high_is_bad:
            if value >= self.alarm:
                return Level.ALARM
            return Level.WARN if value >= self.warn else Level.OK
        if value <= self.alarm:
            return Level.ALARM
        return Level.WARN if value <= self.warn else Level.OK

    def describe(self) -> dict[str, float]:
        return {"warn": self.warn, "alarm": self.alarm}


DEFAULTS: Final[Mapping[str, Threshold]] = {
    "waiting": Threshold(3, 6),
    "longest_wait_s": Threshold(30, 60),
    "asa_s": Threshold(20, 40),
    "abandonment_rate": Threshold(0.05, 0.10),
    "abandonment_rate_window": Threshold(0.05, 0.10),
    "agents_short": Threshold(1, 3),
    "service_level_today": Threshold(0.80, 0.70),
    "service_level_window": Threshold(0.80, 0.70),
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Defaults for every queue (and the centre) plus per-queue overrides."""

    defaults: Mapping[str, Threshold] = field(default_factory=lambda: dict(DEFAULTS))
    queues: Mapping[str, Mapping[str, Threshold]] = field(default_factory=dict)

    def for_queue(self, queue: str | None) -> dict[str, Threshold]:
        """The thresholds of `queue` (None: the centre's, the defaults)."""
        out = dict(self.defaults)
        if queue is not None:
            out.update(self.queues.get(queue, {}))
        return out

    def describe(self, queues: list[str]) -> dict[str, Any]:
        """JSON-ready: the centre's and each named queue's thresholds."""
        return {
            "centre": {k: t.describe() for k, t in self.for_queue(None).items()},
            "queues": {q: {k: t.describe() for k, t in self.for_queue(q).items()} for q in queues},
        }


def parse_thresholds(raw: Mapping[str, Any], origin: str = "thresholds") -> Thresholds:
    """Thresholds from a parsed TOML document; ThresholdError lists every problem."""
    problems: list[str] = []
    for key in sorted(set(raw) - {"defaults", "queues"}):
        problems.append(f"{origin}: unknown section [{key}]")

    def table(section: Any, where: str) -> dict[str, Threshold]:
        out: dict[str, Threshold] = {}
        if not isinstance(section, Mapping):
            problems.append(f"{origin}: [{where}] must be a table")
            return out
        for name, value in section.items():
            at = f"{origin}: {where}.{name}"
            if name not in THRESHOLD_FIGURES:
                problems.append(f"{at}: unknown figure (one of {', '.join(THRESHOLD_FIGURES)})")
                continue
            if not isinstance(value, Mapping) or set(value) != {"warn", "alarm"}:
                problems.append(f"{at}: expected {{ warn = ..., alarm = ... }}")
                continue
            warn, alarm = value["warn"], value["alarm"]
            if not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in (warn, alarm)
            ):
                problems.append(f"{at}: warn and alarm must be numbers")
                continue
            high_is_bad = THRESHOLD_FIGURES[name]
            if (high_is_bad and alarm < warn) or (not high_is_bad and alarm > warn):
                worse = "above" if high_is_bad else "below"
                problems.append(f"{at}: alarm must be at or {worse} warn")
                continue
            out[name] = Threshold(float(warn), float(alarm))
        return out

    defaults = dict(DEFAULTS)
    defaults.update(table(raw.get("defaults", {}), "defaults"))
    queues: dict[str, dict[str, Threshold]] = {}
    raw_queues = raw.get("queues", {})
    if not isinstance(raw_queues, Mapping):
        problems.append(f"{origin}: [queues] must be a table")
    else:
        for queue, section in raw_queues.items():
            queues[queue] = table(section, f"queues.{queue}")
    if problems:
        raise ThresholdError("\n".join(problems))
    return Thresholds(defaults, queues)


def load_thresholds(path: Path | None) -> Thresholds:
    """The file's thresholds; the defaults when `path` is None or names no file."""
    if path is None or not path.is_file():
        return Thresholds()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ThresholdError(f"{path}: {exc}") from exc
    return parse_thresholds(raw, str(path))


def _agents_short(staffing: Mapping[str, Any] | None) -> float | None:
    if not staffing:
        return None
    required, logged_in = staffing.get("required"), staffing.get("logged_in")
    if required is None or logged_in is None:
        return None
    return float(required) - float(logged_in)


def values_of(entry: Mapping[str, Any]) -> dict[str, float | None]:
    """The judged figures of one queue (or the centre) of a LiveMetrics snapshot."""
    today = entry.get("today") or {}
    window = entry.get("window") or {}
    now = entry.get("now") or {}
    return {
        "waiting": now.get("waiting"),
        "longest_wait_s": now.get("longest_wait_s"),
        "asa_s": today.get("asa_s"),
        "abandonment_rate": today.get("abandonment_rate"),
        "abandonment_rate_window": window.get("abandonment_rate"),
        "agents_short": _agents_short(entry.get("staffing")),
        "service_level_today": today.get("service_level"),
        "service_level_window": window.get("service_level"),
    }


def judge(
    values: Mapping[str, float | None], thresholds: Mapping[str, Threshold]
) -> dict[str, str]:
    """A level per figure (figures without a threshold are left out)."""
    return {
        name: str(thresholds[name].judge(value, THRESHOLD_FIGURES[name]))
        for name, value in values.items()
        if name in thresholds
    }


def levels(snapshot: Mapping[str, Any], thresholds: Thresholds) -> dict[str, Any]:
    """{"centre": {figure: level}, "queues": {queue: {figure: level}}} for a snapshot."""
    queues = snapshot.get("queues") or {}
    centre = snapshot.get("centre")
    return {
        "centre": judge(values_of(centre), thresholds.for_queue(None)) if centre else {},
        "queues": {
            name: judge(values_of(entry), thresholds.for_queue(name))
            for name, entry in queues.items()
        },
    }


__all__ = [
    "DEFAULTS",
    "THRESHOLD_FIGURES",
    "Level",
    "Threshold",
    "ThresholdError",
    "Thresholds",
    "judge",
    "levels",
    "load_thresholds",
    "parse_thresholds",
    "values_of",
]
