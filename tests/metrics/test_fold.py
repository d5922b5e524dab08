"""The fold never crashes on what it reads: it skips and counts."""

from __future__ import annotations

from datetime import UTC, datetime

from ctiserver.metrics.facts import MetricEvent
from ctiserver.metrics.figures import longest_wait, queue_report
from ctiserver.metrics.fold import MetricFold
from ctiserver.metrics.settings import MetricSettings
from tests.metrics.builder import T0, Log
from tests.metrics.test_queue_figures import mixed_day


def test_duplicates_are_skipped_by_key_or_by_content() -> None:
    fold = MetricFold()
    events = mixed_day().events
    fold.apply_all(events)
    once = queue_report(fold, T0, T0 + 3600, settings=MetricSettings(), as_of=T0 + 999)
    fold.apply_all(events[::-1])  # every event again, out of order
    again = queue_report(fold, T0, T0 + 3600, settings=MetricSettings(), as_of=T0 + 999)
    assert [r.figures for r in once] == [r.figures for r in again]
    assert fold.skipped["duplicate"] == len(events)
    keyed = MetricEvent(
        "acd.agent_state", T0, agent_id="A9", payload={"state": "available"}, key="k1"
    )
    assert fold.apply(keyed) is True
    assert fold.apply(keyed) is False


def test_unknown_types_missing_fields_and_bad_payloads_are_counted() -> None:
    fold = MetricFold()
    bad = [
        MetricEvent("acd.something_new", T0),
        MetricEvent("acd.caller_entered", T0, call_id=None, queue_id="q"),
        MetricEvent(
            "acd.call_left", T0, call_id="nobody", queue_id="q", payload={"outcome": "answered"}
        ),
        MetricEvent("acd.agent_state", T0, agent_id="A1", payload={"state": "dancing"}),
        MetricEvent("acd.agent_state", T0, agent_id="A1", payload={}),
        MetricEvent("ivr.ended", T0, call_id="i", payload={"started_at": "yesterday"}),
        MetricEvent("acd.hold", T0, call_id="c"),
        MetricEvent(
            "desktop.wrap_up",
            T0,
            call_id="c",
            agent_id="A1",
            payload={"resolved": "yes", "customer_id": ""},
        ),
    ]
    results = [fold.apply(e) for e in bad]
    assert results == [False, False, False, False, False, True, False, True]
    assert fold.skipped["unknown_type"] == 1
    assert fold.skipped["missing_field"] == 2
    assert fold.skipped["no_open_stay"] == 1
    assert fold.skipped["unknown_state"] == 1
    assert fold.skipped["no_call"] == 1
    assert fold.wrap_ups[("c", "A1")].resolved is None


def test_stale_agent_state_is_skipped_small_skew_is_absorbed() -> None:
    fold = MetricFold()
    log = Log().state("A1", 100, "available").state("A1", 50, "not_ready", "old")
    log.state("A1", 199.5, "on_call").state("A1", 200, "wrap_up")
    fold.apply_all(log.events)
    assert fold.skipped["out_of_order"] == 1
    assert [(s.state, s.start - T0) for s in fold.segments] == [
        ("available", 100),
        ("on_call", 199.5),
        ("wrap_up", 200),
    ]


def test_resumed_caller_keeps_its_stay() -> None:
    log = Log().enter("c", "q", 0).enter("c", "q", 40)  # back after a restart
    log.left("c", "q", 60, "abandoned")
    fold = MetricFold()
    fold.apply_all(log.events)
    assert len(fold.stays) == 1
    assert fold.stays[0].left_at == T0 + 60


def test_rows_from_the_database_shape() -> None:
    row = {
        "occurred_at": datetime.fromtimestamp(T0, UTC),
        "type": "acd.caller_entered",
        "call_id": "c",
        "agent_id": None,
        "queue_id": "q",
        "payload": '{"caller": "555"}',
        "event_key": "0b7c",
    }
    event = MetricEvent.from_row(row)
    assert (event.occurred_at, event.payload, event.key) == (T0, {"caller": "555"}, "0b7c")
    assert MetricEvent.from_row({**row, "payload": "not json"}).payload == {}


def test_waiting_calls_and_longest_wait_in_real_time() -> None:
    fold = MetricFold()
    fold.apply_all(Log().enter("a", "q", 0).enter("b", "q", 30).enter("c", "r", 10).events)
    assert longest_wait(fold, "q", T0 + 100) == 100
    assert longest_wait(fold, None, T0 + 100) == 100
    assert longest_wait(fold, "nowhere", T0 + 100) is None
    assert len(fold.waiting()) == 3


def test_incremental_equals_batch_and_prune_keeps_open_facts() -> None:
    events = mixed_day().events
    batch = MetricFold()
    batch.apply_all(events)
    live = MetricFold()
    settings = MetricSettings()
    for event in events:  # a real-time fold asks for figures after every event
        live.apply(event)
        queue_report(live, T0, T0 + 3600, settings=settings, as_of=event.occurred_at)
    a = queue_report(batch, T0, T0 + 3600, settings=settings, as_of=T0 + 999)
    b = queue_report(live, T0, T0 + 3600, settings=settings, as_of=T0 + 999)
    assert [r.figures for r in a] == [r.figures for r in b]
    live.apply(MetricEvent("acd.caller_entered", T0 + 500, "late", None, "q", {}))
    live.prune(T0 + 400)
    assert [s.call_id for s in live.stays] == ["late"]
    assert live.agent_state("A1") is not None
