"""Running sums (ctiserver/metrics/rolling.py): parts in and out of today, the window
and today's intervals; agents' time split at the window's start; exact zeros."""

from __future__ import annotations

import pytest

from ctiserver.metrics.figures import AgentTotals, Part, QueueTotals
from ctiserver.metrics.rolling import HOLD, AgentTime, CallSums, Sum, items_of
from ctiserver.metrics.settings import MetricSettings

DAY = (0.0, 86400.0)
WINDOW_S = 900.0


def answered(wait: float, talk: float) -> QueueTotals:
    return QueueTotals(
        entered=1, offered=1, answered=1, wait_answered_s=wait, longest_wait_s=wait, talk_s=talk
    )


def interval_of(at: float) -> float:
    return at - at % 900


def test_a_field_whose_parts_are_all_taken_out_is_exactly_zero() -> None:
    total = Sum()
    parts = [items_of(answered(0.1, 10.0)), items_of(answered(0.2, 20.0))]
    for items in parts:
        total.add(items)
    total.take(parts[0])
    assert total.queue_totals().wait_answered_s == pytest.approx(0.2)
    total.take(parts[1])
    figures = total.queue_totals()
    assert figures.wait_answered_s == 0 and figures.answered == 0
    # A ratio over nothing is null, never a float residue's 1e-17 / 1e-17.
    agent = Sum()
    on_call = items_of(AgentTotals(logged_in_s=0.1, on_call_s=0.1))
    idle = items_of(AgentTotals(logged_in_s=0.3, available_s=0.3))
    agent.add(on_call)
    agent.add(idle)
    agent.take(on_call)
    agent.take(idle)
    occupancy = agent.agent_totals().figures(MetricSettings())["occupancy"]
    assert occupancy is None


def test_parts_join_and_leave_today_the_window_and_their_interval() -> None:
    sums = CallSums(*DAY, WINDOW_S, interval_of)
    sums.advance(10_000.0)
    sums.replace(
        "c1",
        [Part(9_500.0, "support", answered(5, 60)), Part(9_500.0, None, answered(5, 60))],
        [Part(9_500.0, "A1", AgentTotals(handled=1, handle_s=70.0))],
    )
    sums.replace("c2", [Part(10_005.0, "support", answered(1, 30))], [])  # after now
    assert sums.today_queues["support"].queue_totals().answered == 2
    assert sums.window_queues["support"].queue_totals().answered == 1  # c2 not yet
    assert sums.window_agents["A1"].agent_totals().handled == 1
    assert sums.window_agents[None].agent_totals().handled == 1  # all agents
    sums.advance(10_006.0)
    assert sums.window_queues["support"].queue_totals().answered == 2
    # The call changes (say, a wrap-up): its parts are replaced everywhere.
    sums.replace("c1", [Part(9_500.0, "support", answered(5, 90))], [])
    assert sums.today_queues["support"].queue_totals().talk_s == pytest.approx(120)
    assert sums.series["support"][9_000.0].queue_totals().talk_s == pytest.approx(90)
    assert sums.series["support"][9_900.0].queue_totals().talk_s == pytest.approx(30)
    assert "A1" not in sums.window_agents or not sums.window_agents["A1"].values
    # 9_500 leaves the window at 10_400; 10_005 stays.
    sums.advance(10_401.0)
    window = sums.window_queues["support"].queue_totals()
    assert (window.answered, window.talk_s) == (1, pytest.approx(30))
    # Forgotten (pruned): still counted today, no longer replaceable.
    sums.forget("c2")
    assert set(sums.calls()) == {"c1"}
    assert sums.today_queues["support"].queue_totals().answered == 2


def test_replaced_parts_do_not_pile_up_in_the_window() -> None:
    sums = CallSums(*DAY, WINDOW_S, interval_of)
    sums.advance(5_000.0)
    for n in range(5_000):
        sums.replace("c", [Part(4_900.0, "q", answered(n, 1))], [])
    assert len(sums._window_heap) < 2_100 and len(sums._placed) == 1
    assert sums.window_queues["q"].queue_totals().wait_answered_s == 4_999


def test_agent_time_is_split_at_the_window_start_and_the_day_start() -> None:
    time = AgentTime(WINDOW_S)
    time.reset(*DAY, now=1_000.0)
    time.add_closed("A1", "available", None, -100.0, 50.0)  # from yesterday
    time.add_closed("A1", "on_call", None, 50.0, 200.0)  # crosses the window start at 1100
    time.add_closed("A1", HOLD, None, 100.0, 120.0)
    time.add_closed("A1", "not_ready", "lunch", 200.0, 900.0)
    time.advance(1_100.0)  # window [200, 1100)
    today, window = time.read({}, {}, [("A1", "available", None, 900.0)])
    assert today["A1"].available_s == pytest.approx(50 + 200)
    assert today["A1"].logged_in_s == pytest.approx(50 + 150 + 700 + 200)
    assert today["A1"].hold_s == pytest.approx(20)
    assert window["A1"].on_call_s == 0  # it ended at the window's start
    assert window["A1"].not_ready_by_reason == {"lunch": pytest.approx(700)}
    assert window["A1"].available_s == pytest.approx(200)
    time.advance(1_500.0)  # window [600, 1500): the not-ready span crosses its start
    today, window = time.read({}, {}, [("A1", "available", None, 900.0)])
    assert window["A1"].not_ready_s == pytest.approx(300)
    assert window["A1"].available_s == pytest.approx(600)
    assert window[None].logged_in_s == pytest.approx(900)


def test_a_call_with_twin_parts_keeps_and_takes_each() -> None:
    sums = CallSums(*DAY, WINDOW_S, interval_of)
    sums.advance(5_000.0)
    twin = QueueTotals(ivr_entered=1, ivr_contained=1)
    sums.replace("c", [Part(4_900.0, None, twin), Part(4_900.0, None, twin)], [])
    sums.replace("c", [Part(4_900.0, None, twin)], [])  # one of the two is gone
    assert sums.today_queues[None].queue_totals().ivr_entered == 1
    assert sums.window_queues[None].queue_totals().ivr_entered == 1
    sums.replace("c", [], [])
    assert sums.today_queues[None].queue_totals().ivr_entered == 0
    assert not sums.window_queues[None].values and not sums._placed
