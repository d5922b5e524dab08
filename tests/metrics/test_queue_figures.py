"""Queue, skill and centre figures against hand-computed scenarios (METRICS.md)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ctiserver.metrics.figures import QueueTotals, Row, queue_report
from ctiserver.metrics.fold import MetricFold
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.settings import CallbackWait, MetricSettings, SlMode
from tests.metrics.builder import T0, Log

DEFAULT = MetricSettings()


def fold_of(log: Log) -> MetricFold:
    fold = MetricFold()
    fold.apply_all(log.events)
    return fold


def report(
    log: Log,
    *,
    by: str = "queue",
    settings: MetricSettings = DEFAULT,
    as_of: float = 10_000,
    grain: Grain = Grain.RANGE,
    end: float = 3600,
    queue_skills: dict[str, frozenset[str]] | None = None,
) -> dict[str | None, Row]:
    rows = queue_report(
        fold_of(log),
        T0,
        T0 + end,
        settings=settings,
        as_of=T0 + as_of,
        by=by,
        grain=grain,
        queue_skills=queue_skills,
    )
    return {row.key: row for row in rows}


def qt(row: Row) -> QueueTotals:
    assert isinstance(row.totals, QueueTotals)
    return row.totals


def mixed_day() -> Log:
    """Six calls in "support" (see each line); hand-computed figures in the tests."""
    log = Log().state("A1", 0, "available")
    # c1: waits 15 s, talk 80 + hold 20, wrap-up 10: handle 110.
    log.enter("c1", "support", 10).answer("c1", "support", "A1", 25)
    log.add("acd.hold", 30, {"by": "cti"}, call="c1", agent="A1", queue="support")
    log.add("acd.unhold", 50, {"by": "cti"}, call="c1", agent="A1", queue="support")
    log.end("c1", "support", "A1", 125, wrap_until=135)
    # c2: hangs up after 3 s: a short abandon.
    log.enter("c2", "support", 30).left("c2", "support", 33, "abandoned")
    # c3: abandons after 60 s (after T).
    log.enter("c3", "support", 40).left("c3", "support", 100, "abandoned")
    # c4: waits 90 s, talks 60, no wrap-up: handle 60.
    log.enter("c4", "support", 50).answer("c4", "support", "A1", 140)
    log.end("c4", "support", "A1", 200)
    # c5: overflows to sales after 60 s and hangs up there 2 s later.
    log.enter("c5", "support", 60).left("c5", "support", 120, "overflowed", "sales")
    log.add("acd.call_queued", 120, {"position": 1}, call="c5", queue="sales")
    log.left("c5", "sales", 122, "abandoned")
    # c6: the queue closes on it after 10 s.
    log.enter("c6", "support", 70).left("c6", "support", 80, "closed")
    return log


def test_queue_figures_of_a_mixed_day() -> None:
    row = report(mixed_day())["support"]
    f = row.figures
    assert (f["offered"], f["answered"], f["abandoned"]) == (5, 2, 1)
    assert (f["short_abandoned"], f["overflowed"], f["waiting"]) == (1, 2, 0)
    assert f["asa_s"] == pytest.approx((15 + 90) / 2)
    assert f["avg_time_to_abandon_s"] == pytest.approx(60)
    assert f["abandonment_rate"] == pytest.approx(1 / 5)
    assert f["service_level"] == pytest.approx(1 / 5)  # offered mode, the default
    assert f["service_level_answered"] == pytest.approx(1 / 2)
    assert f["service_level_abandon_adjusted"] == pytest.approx(1 / 3)
    assert f["handled"] == 2
    assert f["aht_s"] == pytest.approx((110 + 60) / 2)
    assert f["avg_talk_s"] == pytest.approx((80 + 60) / 2)
    assert f["avg_hold_s"] == pytest.approx(20 / 2)
    assert f["avg_acw_s"] == pytest.approx(10 / 2)
    assert f["transfer_rate"] == 0


def test_overflow_target_counts_the_call_too_and_it_is_not_short() -> None:
    f = report(mixed_day())["sales"].figures
    # 2 s in sales but 62 s since the caller first entered: a real abandon.
    assert (f["offered"], f["abandoned"], f["short_abandoned"]) == (1, 1, 0)
    assert f["avg_time_to_abandon_s"] == pytest.approx(2)
    assert f["asa_s"] is None


def test_centre_counts_each_call_once() -> None:
    f = report(mixed_day(), by="centre")[None].figures
    # c5 is one call: offered once, abandoned 62 s after it first entered.
    assert (f["offered"], f["answered"], f["abandoned"], f["overflowed"]) == (5, 2, 2, 1)
    assert f["avg_time_to_abandon_s"] == pytest.approx((60 + 62) / 2)
    assert f["service_level"] == pytest.approx(1 / 5)
    assert f["aht_s"] == pytest.approx(85)


def test_short_abandons_counted_when_the_setting_says_so() -> None:
    settings = MetricSettings(count_short_abandons=True)
    f = report(mixed_day(), settings=settings)["support"].figures
    assert (f["offered"], f["abandoned"], f["short_abandoned"]) == (6, 2, 1)
    assert f["avg_time_to_abandon_s"] == pytest.approx((3 + 60) / 2)
    assert f["service_level"] == pytest.approx(1 / 6)


def test_short_abandon_boundary_is_inclusive() -> None:
    log = Log().enter("a", "q", 0).left("a", "q", 5, "abandoned")
    log.enter("b", "q", 0).left("b", "q", 5.001, "abandoned")
    f = report(log)["q"].figures
    assert (f["short_abandoned"], f["abandoned"], f["offered"]) == (1, 1, 1)


def test_sl_mode_setting_picks_the_headline() -> None:
    settings = MetricSettings(sl_mode=SlMode.ABANDON_ADJUSTED)
    assert report(mixed_day(), settings=settings)["support"].figures[
        "service_level"
    ] == pytest.approx(1 / 3)


def test_no_answered_call_gives_null_asa_never_zero() -> None:
    log = Log().enter("a", "q", 0).left("a", "q", 30, "abandoned")
    f = report(log)["q"].figures
    assert f["asa_s"] is None
    assert f["aht_s"] is None
    assert f["avg_hold_s"] is None
    assert f["service_level"] == 0
    assert f["service_level_answered"] is None
    assert f["transfer_rate"] is None


def test_empty_range_has_no_rows() -> None:
    assert report(Log()) == {}


def callback_call() -> Log:
    log = Log().state("A2", 0, "available")
    log.enter("cb", "q", 0)
    log.add("acd.callback_offered", 20, call="cb", queue="q")
    log.add("acd.callback_requested", 30, {"number": "5551234"}, call="cb", queue="q")
    log.add("acd.offer", 320, {"callback_number": "5551234"}, call="cb", agent="A2", queue="q")
    log.state("A2", 320, "reserved", None, "cb")
    log.add("acd.connected", 330, {"callback_number": "5551234"}, call="cb", agent="A2", queue="q")
    log.state("A2", 330, "on_call", None, "cb")
    log.left("cb", "q", 330, "answered")
    return log.end("cb", "q", "A2", 400, wrap_until=410)


def test_callback_is_answered_not_abandoned_with_its_whole_wait() -> None:
    f = report(callback_call())["q"].figures
    assert (f["offered"], f["answered"], f["abandoned"], f["callbacks"]) == (1, 1, 0, 1)
    assert f["asa_s"] == pytest.approx(330)
    assert f["service_level"] == 0
    assert f["aht_s"] == pytest.approx(70 + 10)


def test_callback_wait_connected_only_leaves_out_time_off_the_phone() -> None:
    settings = MetricSettings(callback_wait=CallbackWait.CONNECTED_ONLY)
    f = report(callback_call(), settings=settings)["q"].figures
    assert f["asa_s"] == pytest.approx(30)
    f = report(callback_call(), settings=settings, by="centre")[None].figures
    assert f["asa_s"] == pytest.approx(30)


def test_callback_still_waiting_is_offered_and_not_abandoned() -> None:
    log = Log().enter("cb", "q", 0)
    log.add("acd.callback_requested", 10, {"number": "555"}, call="cb", queue="q")
    f = report(log, as_of=15)["q"].figures
    assert (f["offered"], f["waiting"], f["abandoned"], f["callbacks"]) == (1, 1, 0, 1)
    assert f["service_level"] is None  # its fate under T is still open
    f = report(log, as_of=25)["q"].figures
    assert f["service_level"] == 0  # waited past T: missed it already


def transfers() -> Log:
    log = Log().state("A1", 0, "available").state("A2", 0, "available")
    # q1: support -> answered by A1 -> blind transfer to the sales queue -> A2.
    log.enter("t1", "support", 0).answer("t1", "support", "A1", 10)
    log.add(
        "acd.transferred",
        70,
        {"from_agent": "A1", "target_kind": "queue", "target": "sales"},
        call="t1",
        agent="A1",
        queue="support",
    )
    log.end("t1", "support", "A1", 70, wrap_until=80)
    log.enter("t1", "sales", 71).answer("t1", "sales", "A2", 81)
    log.end("t1", "sales", "A2", 141, wrap_until=151)
    # t2: support -> A1 -> transferred to agent A2 directly.
    log.enter("t2", "support", 200).answer("t2", "support", "A1", 210)
    log.add(
        "acd.transferred",
        240,
        {"from_agent": "A1", "target_kind": "agent", "target": "A2"},
        call="t2",
        agent="A1",
        queue="support",
    )
    log.end("t2", "support", "A1", 240, wrap_until=245)
    log.state("A2", 240, "not_ready", "transfer")
    log.answer("t2", "support", "A2", 250, transferred=True)
    return log.end("t2", "support", "A2", 310)


def test_transfer_between_queues_counts_in_each_queue_and_once_centre_wide() -> None:
    rows = report(transfers())
    support, sales = rows["support"].figures, rows["sales"].figures
    assert (support["offered"], support["answered"], support["transfer_rate"]) == (2, 2, 1.0)
    assert (sales["offered"], sales["answered"], sales["transfer_rate"]) == (1, 1, 0)
    assert sales["asa_s"] == pytest.approx(10)  # from entering sales
    centre = report(transfers(), by="centre")[None].figures
    assert (centre["offered"], centre["answered"], centre["transfer_rate"]) == (2, 2, 1.0)
    assert centre["asa_s"] == pytest.approx(10)  # first answers: 10 s and 10 s
    # Handled: A1 (60 + 10), A2 in sales (60 + 10), A1 (30 + 5), A2 after the transfer (60).
    assert centre["handled"] == 4
    assert centre["aht_s"] == pytest.approx((70 + 70 + 35 + 60) / 4)


def test_agent_transfer_is_two_handlings_of_one_answered_stay() -> None:
    support = report(transfers())["support"]
    assert qt(support).handled == 3
    assert support.figures["aht_s"] == pytest.approx((70 + 35 + 60) / 3)


def test_a_call_counts_in_the_interval_it_entered() -> None:
    log = Log().state("A1", 0, "available")
    log.enter("x", "q", 890).answer("x", "q", "A1", 910)  # enters 10 s before 09:15
    log.end("x", "q", "A1", 1000)
    log.enter("y", "q", 905).left("y", "q", 950, "abandoned")
    rows = queue_report(
        fold_of(log), T0, T0 + 1800, settings=DEFAULT, as_of=T0 + 2000, grain=Grain.INTERVAL
    )
    assert [(r.start - T0, r.end - T0) for r in rows] == [(0, 900), (900, 1800)]
    first, second = rows[0].figures, rows[1].figures
    assert (first["offered"], first["answered"], first["asa_s"]) == (1, 1, 20)
    assert first["aht_s"] == pytest.approx(90)  # its whole handle time goes with it
    assert (second["offered"], second["abandoned"], second["answered"]) == (1, 1, 0)


def test_days_follow_the_centre_time_zone() -> None:
    settings = MetricSettings(timezone="Asia/Shanghai")  # UTC+8: local midnight is 16:00 UTC
    log = Log().enter("a", "q", 7 * 3600 - 1).left("a", "q", 7 * 3600 + 100, "abandoned")
    log.enter("b", "q", 7 * 3600 + 1).left("b", "q", 7 * 3600 + 100, "abandoned")
    rows = queue_report(
        fold_of(log), T0, T0 + 86400, settings=settings, as_of=T0 + 90000, grain=Grain.DAY
    )
    # T0 is 17:00 local; 16:00 UTC the next day is local midnight.
    assert [r.start - T0 for r in rows] == [0, 7 * 3600]
    assert [r.figures["abandoned"] for r in rows] == [1, 1]


def test_per_skill_uses_the_call_skills_and_the_queue_skills() -> None:
    log = Log().enter("a", "support", 0, skills={"cantonese": 5})
    log.left("a", "support", 30, "overflowed", "sales")
    log.add("acd.call_queued", 30, {"position": 1}, call="a", queue="sales")
    log.left("a", "sales", 130, "abandoned")  # an overflow keeps the call's own skills
    log.enter("b", "support", 0).left("b", "support", 30, "abandoned")
    rows = report(
        log,
        by="skill",
        queue_skills={"support": frozenset({"billing"}), "sales": frozenset({"selling"})},
    )
    assert {k: r.figures["offered"] for k, r in rows.items()} == {
        "billing": 2,
        "cantonese": 2,
        "selling": 1,
    }


def test_ivr_containment_is_a_centre_figure() -> None:
    log = Log()
    for call, outcome in (("i1", "self_served"), ("i2", "queued"), ("i3", "abandoned")):
        log.add("ivr.started", 0, {"caller": "555"}, call=call)
        log.add("ivr.ended", 30, {"outcome": outcome, "customer": {}}, call=call)
    log.add("ivr.started", 0, {"caller": "555"}, call="i4")  # still in the menu
    log.add("ivr.started", 10, {"caller": "555"}, call="i5")
    log.add("ivr.ended", 12, {"outcome": None}, call="i5")  # hung up without an outcome
    f = report(log, by="centre")[None]
    assert f.figures["ivr_containment"] == pytest.approx(1 / 4)
    assert (qt(f).ivr_entered, qt(f).ivr_open) == (5, 1)


def repeat_contacts() -> Log:
    day = 86400
    log = Log().state("A1", 0, "available")
    calls = [
        # call, queue, caller, entered (days)
        ("r1", "support", "5551111", 0.0),  # repeated 3 days later: not resolved
        ("r2", "support", "5551111", 3.0),  # window still open at as_of: pending
        ("r3", "support", "5552222", 0.0),  # nobody calls back: resolved
        ("r4", "support", "anonymous", 0.0),  # no one to recognise: excluded
        ("r5", "support", "5553333", 0.0),  # calls sales later: resolved for same_queue
        ("r6", "sales", "5553333", 2.0),
        ("r7", "support", "5554444", 0.0),  # customer 42 ...
        ("r8", "support", "5559999", 1.0),  # ... calls again from another number
    ]
    for call, queue, caller, entered in calls:
        at = entered * day
        log.enter(call, queue, at, caller=caller).answer(call, queue, "A1", at + 10)
        log.end(call, queue, "A1", at + 70)
    log.add("desktop.wrap_up", 80, {"resolved": True, "customer_id": 42}, call="r7", agent="A1")
    log.add(
        "desktop.wrap_up", day + 80, {"resolved": False, "customer_id": 42}, call="r8", agent="A1"
    )
    return log


def test_repeat_contact_fcr_with_pending_and_anonymous_callers() -> None:
    as_of = 8.5 * 86400  # r2's window (from day 3) is still open
    f = report(repeat_contacts(), as_of=as_of, end=9 * 86400)["support"]
    t = qt(f)
    # Closed: r1 (repeated), r3 (resolved), r5 (resolved: sales is another queue),
    # r7 (repeated by customer id), r8 (resolved). Pending: r2. Anonymous: r4.
    assert (t.fcr_repeat_closed, t.fcr_repeat_resolved) == (5, 3)
    assert (t.fcr_repeat_pending, t.fcr_repeat_anonymous) == (1, 1)
    assert f.figures["fcr_repeat_contact"] == pytest.approx(3 / 5)


def test_repeat_contact_fcr_any_scope_counts_other_queues() -> None:
    settings = MetricSettings(fcr_scope="any")  # type: ignore[arg-type]
    f = report(repeat_contacts(), settings=settings, as_of=8.5 * 86400, end=9 * 86400)
    assert qt(f["support"]).fcr_repeat_resolved == 2  # r5 is now repeated


def test_every_fcr_contact_pending_while_windows_are_open() -> None:
    f = report(repeat_contacts(), as_of=86400, end=9 * 86400)["support"]
    assert f.figures["fcr_repeat_contact"] is None
    assert qt(f).fcr_repeat_closed == 0


def test_shorter_fcr_window_closes_sooner() -> None:
    settings = MetricSettings(fcr_window=timedelta(days=2))
    t = qt(
        report(repeat_contacts(), settings=settings, as_of=8.5 * 86400, end=9 * 86400)["support"]
    )
    # r1's repeat (3 days later) is outside a 2-day window; r2 has closed too.
    assert (t.fcr_repeat_closed, t.fcr_repeat_resolved, t.fcr_repeat_pending) == (6, 5, 0)


def test_agent_reported_fcr_uses_the_latest_wrap_up() -> None:
    log = repeat_contacts()
    log.add("desktop.wrap_up", 90, {"resolved": False}, call="r7", agent="A1")  # changed mind
    log.add("desktop.wrap_up", 95, {"resolved": True}, call="r3", agent="A1")
    f = report(log, as_of=8.5 * 86400, end=9 * 86400)["support"]
    # With a wrap-up: r3 (yes), r7 (no, the latest), r8 (no).
    assert (qt(f).fcr_reported, qt(f).fcr_reported_resolved) == (3, 1)
    assert f.figures["fcr_agent_reported"] == pytest.approx(1 / 3)
