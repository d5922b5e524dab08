"""Wallboard thresholds: parsing, per-queue overrides, levels judged per figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctiserver.wallboard.thresholds import (
    DEFAULTS,
    Level,
    Threshold,
    ThresholdError,
    Thresholds,
    judge,
    levels,
    load_thresholds,
    parse_thresholds,
    values_of,
)

ROOT = Path(__file__).resolve().parents[2]


def test_high_is_bad_and_low_is_bad() -> None:
    waiting = Threshold(3, 6)
    assert waiting.judge(None, True) is Level.NONE
    assert waiting.judge(2, True) is Level.OK
    assert waiting.judge(3, True) is Level.WARN
    assert waiting.judge(6, True) is Level.ALARM
    sl = Threshold(0.8, 0.7)
    assert sl.judge(0.95, False) is Level.OK
    assert sl.judge(0.8, False) is Level.WARN
    assert sl.judge(0.5, False) is Level.ALARM
    assert sl.judge(None, False) is Level.NONE


def test_queue_overrides_only_what_it_names() -> None:
    thresholds = parse_thresholds(
        {
            "defaults": {"waiting": {"warn": 5, "alarm": 10}},
            "queues": {"sales": {"waiting": {"warn": 1, "alarm": 2}}},
        }
    )
    assert thresholds.for_queue("sales")["waiting"] == Threshold(1, 2)
    assert thresholds.for_queue("support")["waiting"] == Threshold(5, 10)
    assert thresholds.for_queue("sales")["longest_wait_s"] == DEFAULTS["longest_wait_s"]
    assert thresholds.for_queue(None)["waiting"] == Threshold(5, 10)


def test_every_problem_is_reported() -> None:
    with pytest.raises(ThresholdError) as caught:
        parse_thresholds(
            {
                "defaults": {"waiting": {"warn": 5, "alarm": 2}, "colour": {"warn": 1, "alarm": 2}},
                "queues": {"sales": {"service_level_today": {"warn": 0.7, "alarm": 0.9}}},
                "extra": {},
            },
            "wb.toml",
        )
    message = str(caught.value)
    assert "wb.toml: defaults.waiting: alarm must be at or above warn" in message
    assert "defaults.colour: unknown figure" in message
    assert "queues.sales.service_level_today: alarm must be at or below warn" in message
    assert "unknown section [extra]" in message
    with pytest.raises(ThresholdError, match="must be numbers"):
        parse_thresholds({"defaults": {"waiting": {"warn": "1", "alarm": 2}}})
    with pytest.raises(ThresholdError, match=r"\{ warn = \.\.\., alarm = \.\.\. \}"):
        parse_thresholds({"defaults": {"waiting": 3}})


def test_the_example_file_loads_and_a_missing_file_means_defaults(tmp_path: Path) -> None:
    example = load_thresholds(ROOT / "wallboard.example.toml")
    assert example.for_queue("sales")["waiting"] == Threshold(2, 4)
    assert load_thresholds(tmp_path / "absent.toml") == Thresholds()
    assert load_thresholds(None) == Thresholds()
    bad = tmp_path / "bad.toml"
    bad.write_text("[defaults\n", encoding="utf-8")
    with pytest.raises(ThresholdError):
        load_thresholds(bad)


def test_levels_of_a_snapshot() -> None:
    snapshot = {
        "centre": {"today": {"service_level": 0.9}, "window": {}, "now": {"waiting": 7}},
        "queues": {
            "sales": {
                "today": {"service_level": 0.75, "asa_s": None, "abandonment_rate": 0.2},
                "window": {"service_level": None, "abandonment_rate": 0.0},
                "now": {"waiting": 1, "longest_wait_s": 25.0},
                "staffing": {"required": 5, "logged_in": 2},
            }
        },
    }
    thresholds = parse_thresholds({"queues": {"sales": {"waiting": {"warn": 1, "alarm": 2}}}})
    got = levels(snapshot, thresholds)
    assert got["centre"]["waiting"] == "alarm"
    assert got["centre"]["service_level_today"] == "ok"
    sales = got["queues"]["sales"]
    assert sales == {
        "waiting": "warn",
        "longest_wait_s": "ok",
        "asa_s": "none",
        "abandonment_rate": "alarm",
        "abandonment_rate_window": "ok",
        "agents_short": "alarm",
        "service_level_today": "warn",
        "service_level_window": "none",
    }
    assert values_of({})["agents_short"] is None
    assert judge({"waiting": 1.0, "other": 2.0}, {"waiting": Threshold(1, 2)}) == {
        "waiting": "warn"
    }
