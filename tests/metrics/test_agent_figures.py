"""Agent figures: state time split at interval edges, occupancy variants, handled calls."""

from __future__ import annotations

import pytest

from ctiserver.metrics.figures import agent_report
from ctiserver.metrics.fold import MetricFold
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.settings import MetricSettings
from tests.metrics.builder import T0, Log
from tests.metrics.test_queue_figures import mixed_day


def agent_rows(log: Log, end: float, as_of: float, **kwargs: object):  # type: ignore[no-untyped-def]
    fold = MetricFold()
    fold.apply_all(log.events)
    return agent_report(
        fold,
        T0,
        T0 + end,
        settings=kwargs.pop("settings", MetricSettings()),  # type: ignore[arg-type]
        as_of=T0 + as_of,
        **kwargs,  # type: ignore[arg-type]
    )


def test_occupancy_utilisation_and_not_ready_by_reason() -> None:
    log = mixed_day().state("A1", 200, "not_ready", "lunch").state("A1", 260, "available")
    [row] = agent_rows(log, 3600, 300)
    f = row.figures
    # available 25 + 5 + 0 + 40, on call 100 + 60 (hold 20), wrap-up 10, not ready 60.
    assert f["logged_in_s"] == pytest.approx(300)
    assert (f["available_s"], f["hold_s"], f["talk_s"], f["acw_s"]) == (70, 20, 140, 10)
    assert f["not_ready_by_reason"] == {"lunch": 60}
    assert f["occupancy"] == pytest.approx(170 / 240)
    assert f["occupancy_with_acw"] == pytest.approx(170 / 240)
    assert f["occupancy_without_acw"] == pytest.approx(160 / 230)
    assert f["utilization"] == pytest.approx(170 / 300)
    assert f["calls_handled"] == 2
    assert f["aht_s"] == pytest.approx(85)
    without = agent_rows(log, 3600, 300, settings=MetricSettings(occupancy_includes_acw=False))
    assert without[0].figures["occupancy"] == pytest.approx(160 / 230)


def test_ring_time_counts_with_available_time() -> None:
    log = Log().state("A1", 0, "available").state("A1", 10, "reserved", None, "c")
    log.answer("c", "q", "A1", 20).end("c", "q", "A1", 50)
    [row] = agent_rows(log, 3600, 50)
    assert row.figures["ring_s"] == 10
    assert row.figures["occupancy"] == pytest.approx(30 / 50)


def test_agent_time_is_split_across_interval_edges() -> None:
    log = Log().state("A1", 800, "available")
    log.enter("x", "q", 840).answer("x", "q", "A1", 850)
    log.add("acd.hold", 880, {}, call="x", agent="A1")
    log.add("acd.unhold", 920, {}, call="x", agent="A1")
    log.end("x", "q", "A1", 1000, wrap_until=1020)
    log.state("A1", 1100, "logged_out")
    rows = agent_rows(log, 1800, 2000, grain=Grain.INTERVAL)
    assert [r.start - T0 for r in rows] == [0, 900]
    first, second = rows[0].figures, rows[1].figures
    assert (first["available_s"], first["talk_s"], first["hold_s"]) == (50, 30, 20)
    assert (second["talk_s"], second["hold_s"], second["acw_s"]) == (80, 20, 20)
    assert second["available_s"] == 80  # 1020 -> 1100, then logged out
    assert first["logged_in_s"] + second["logged_in_s"] == 300
    # The call itself counts where it entered the queue: the first interval.
    assert (first["calls_handled"], second["calls_handled"]) == (1, 0)


def test_open_state_runs_to_as_of_and_no_further() -> None:
    log = Log().state("A1", 0, "not_ready", "meeting")
    [row] = agent_rows(log, 3600, 120)
    assert row.figures["not_ready_by_reason"] == {"meeting": 120}
    assert row.figures["occupancy"] is None  # no available or working time: no basis
    assert row.figures["utilization"] == 0


def test_centre_sums_agents_and_outbound_is_apart() -> None:
    log = Log().state("A1", 0, "available").state("A2", 0, "available")
    log.add("acd.outbound_started", 10, {"number": "555"}, call="o1", agent="A2", queue="q")
    log.state("A2", 10, "on_call", "outbound call", "o1")
    log.end("o1", "q", "A2", 70)
    log.enter("c", "q", 0).answer("c", "q", "A1", 5).end("c", "q", "A1", 65)
    [row] = agent_rows(log, 3600, 100, centre=True)
    f = row.figures
    assert (f["calls_handled"], f["outbound_calls"]) == (1, 1)
    assert f["logged_in_s"] == 200
    assert f["talk_s"] == 120  # both calls keep the agents busy
    assert f["aht_s"] == 60


def test_transferred_call_counts_for_each_agent() -> None:
    from tests.metrics.test_queue_figures import transfers

    rows = {r.key: r.figures for r in agent_rows(transfers(), 3600, 400)}
    assert rows["A1"]["calls_handled"] == 2
    assert rows["A1"]["transfer_rate"] == 1.0
    assert rows["A2"]["calls_handled"] == 2
    assert rows["A2"]["not_ready_by_reason"] == {"transfer": 10}
