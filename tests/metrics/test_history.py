"""Historical reports read from PostgreSQL equal the pure core's figures over the whole log.

Events are stored in the real `events` table (plain INSERTs of the rows the
ACD writes, and a real server's own events); the report of a range reads only
what it needs (ctiserver/metrics/history.py) and must give the figures the
pure core gives from every event.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ctiserver.acd.model import AgentState
from ctiserver.metrics.facts import MetricEvent
from ctiserver.metrics.fold import MetricFold
from ctiserver.metrics.history import historical_report, load_facts
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.reports import Report, compose
from ctiserver.metrics.settings import MetricSettings
from ctiserver.sim.phones import PhonePolicy
from ctiserver.store.database import Database
from tests.acd.centre import agent_block, emulated_asterisk, running_server, settings_for, write_acd
from tests.metrics.builder import T0, Log

HOUR = 3600.0
DAY = 86400.0


async def insert(db: Database, events: Iterable[MetricEvent]) -> None:
    """Store events as the event log does (one row each, a fresh event_key)."""
    rows = [
        (
            uuid.uuid4(),
            datetime.fromtimestamp(e.occurred_at, UTC),
            e.type,
            e.call_id,
            e.agent_id,
            e.queue_id,
            dict(e.payload),
        )
        for e in events
    ]
    async with db.acquire() as conn:
        await conn.executemany(
            "INSERT INTO events (event_key, occurred_at, type, call_id, agent_id, queue_id,"
            " payload) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            rows,
        )


async def all_events(db: Database) -> list[MetricEvent]:
    rows = await db.fetch(
        "SELECT event_key, occurred_at, type, call_id, agent_id, queue_id, payload"
        " FROM events ORDER BY occurred_at, id"
    )
    return [MetricEvent.from_row(row) for row in rows]


def pure(
    events: list[MetricEvent],
    start: float,
    end: float,
    *,
    by: str,
    grain: Grain,
    settings: MetricSettings,
    as_of: float,
) -> Report:
    fold = MetricFold()
    fold.apply_all(events)
    return compose(fold, start, end, by=by, grain=grain, settings=settings, as_of=as_of)


def flat(report: Report) -> list[dict[str, Any]]:
    """Rows as flat dicts (nested figures spelled out), for pytest.approx."""
    out = []
    for row in report.rows:
        item: dict[str, Any] = {"start": row.start, "end": row.end, "key": row.key}
        for prefix, figures in (("", row.figures), ("agents.", row.agent_figures or {})):
            for name, value in figures.items():
                if isinstance(value, Mapping):
                    for sub, number in value.items():
                        item[f"{prefix}{name}.{sub}"] = number
                else:
                    item[f"{prefix}{name}"] = value
        out.append(item)
    return out


def same(a: Report, b: Report) -> None:
    left, right = flat(a), flat(b)
    assert len(left) == len(right)
    for x, y in zip(left, right, strict=True):
        assert x == pytest.approx(y, abs=1e-6), (x["start"], x["key"])


def crossing_range() -> Log:
    """Range [T0, T0 + 1 h) of "support" and "billing", with calls on both of its edges."""
    log = Log()
    # The day before: nothing to do with the range.
    log.enter("c8", "support", -DAY, caller="5550888").left("c8", "support", 60 - DAY, "abandoned")
    log.state("A1", -600, "available")
    log.state("A2", -900, "not_ready", "training")
    log.state("A2", 1200, "available")
    # c0 entered before the range and was answered in it: not counted; A1's time is.
    log.enter("c0", "support", -30, caller="5550100").answer("c0", "support", "A1", 10)
    log.add("acd.hold", 20, {"by": "cti"}, call="c0", agent="A1", queue="support")
    log.add("acd.unhold", 40, {"by": "cti"}, call="c0", agent="A1", queue="support")
    log.end("c0", "support", "A1", 90, wrap_until=100)
    # c1: in range; its caller calls again a day later (after the range): a repeat.
    log.enter("c1", "support", 200, caller="5550001", skills={"mandarin": 3}).answer(
        "c1", "support", "A1", 215
    )
    log.end("c1", "support", "A1", 300, wrap_until=310)
    log.add("desktop.wrap_up", 305, {"resolved": True}, call="c1", agent="A1")
    # c2: a short abandon.
    log.enter("c2", "support", 400, caller="5550002").left("c2", "support", 403, "abandoned")
    # c3: answered by A2, transferred to billing and answered there by A1.
    log.enter("c3", "support", 1300, caller="5550003").answer("c3", "support", "A2", 1310)
    log.add(
        "acd.transferred",
        1400,
        {"from_agent": "A2", "target_kind": "queue", "target": "billing"},
        call="c3",
        agent="A2",
        queue="support",
    )
    log.end("c3", "support", "A2", 1400, wrap_until=1420)
    log.enter("c3", "billing", 1400).answer("c3", "billing", "A1", 1430)
    log.end("c3", "billing", "A1", 1500, wrap_until=1560)
    # c4 enters 10 s before the end, is answered after it; its wrap-up ends later still.
    log.enter("c4", "support", HOUR - 10, caller="5550004", skills={"mandarin": 1}).answer(
        "c4", "support", "A2", HOUR + 20
    )
    log.end("c4", "support", "A2", HOUR + 100, wrap_until=HOUR + 130)
    # c5 enters 5 s before the end and abandons after a minute: abandoned, in range.
    log.enter("c5", "billing", HOUR - 5, caller="5550005", skills={"billing": 1}).left(
        "c5", "billing", HOUR + 55, "abandoned"
    )
    # After the range: c1's caller again (a repeat contact), and an unrelated call.
    log.enter("c6", "support", HOUR + DAY, caller="5550001").left(
        "c6", "support", HOUR + DAY + 60, "abandoned"
    )
    log.enter("c7", "support", 2 * HOUR, caller="5550777").left(
        "c7", "support", 2 * HOUR + 60, "abandoned"
    )
    return log


@pytest.mark.parametrize("by", ["queue", "skill", "agent", "centre"])
@pytest.mark.parametrize("grain", [Grain.INTERVAL, Grain.RANGE])
async def test_report_over_a_range_equals_the_pure_core(
    db: Database, by: str, grain: Grain
) -> None:
    await insert(db, crossing_range().events)
    settings = MetricSettings()
    as_of = T0 + 10 * DAY  # every FCR window closed
    start, end = T0, T0 + HOUR
    # Batches of 3 rows: the cursor is read many times.
    stored = await historical_report(
        db, start, end, by=by, grain=grain, settings=settings, as_of=as_of, batch_size=3
    )
    expected = pure(
        await all_events(db), start, end, by=by, grain=grain, settings=settings, as_of=as_of
    )
    same(stored, expected)
    assert stored.rows and stored.events_read < len(await all_events(db))


async def test_calls_entered_in_range_count_with_what_happened_after_it(db: Database) -> None:
    await insert(db, crossing_range().events)
    as_of = T0 + 10 * DAY
    report = await historical_report(
        db, T0, T0 + HOUR, by="queue", grain=Grain.RANGE, settings=MetricSettings(), as_of=as_of
    )
    rows = {row.key: row.figures for row in report.rows}
    support, billing = rows["support"], rows["billing"]
    # c1, c3, c4 offered and answered; c2 a short abandon; c0 entered before the range.
    assert (support["offered"], support["answered"], support["short_abandoned"]) == (3, 3, 1)
    # c4 waited 30 s, answered after the end: in ASA and outside the 20 s service level.
    assert support["asa_s"] == pytest.approx((15 + 10 + 30) / 3)
    assert support["service_level"] == pytest.approx(2 / 3)
    # c4's handle time: 80 s talk + 30 s wrap-up, all after the end of the range.
    assert support["handled"] == 3
    assert support["aht_s"] == pytest.approx(((85 + 10) + (90 + 20) + (80 + 30)) / 3)
    assert support["transfer_rate"] == pytest.approx(1 / 3)
    # c1's caller called again within 7 days: not resolved at first contact.
    assert support["fcr_repeat_contact"] == pytest.approx(2 / 3)
    assert support["fcr_agent_reported"] == 1.0
    # c5 abandoned a minute after entering, 55 s after the end: an abandon of this range.
    assert (billing["offered"], billing["abandoned"], billing["answered"]) == (2, 1, 1)
    assert billing["avg_time_to_abandon_s"] == pytest.approx(60)


async def test_agent_time_starts_from_the_state_held_when_the_range_begins(
    db: Database,
) -> None:
    await insert(db, crossing_range().events)
    report = await historical_report(
        db,
        T0,
        T0 + HOUR,
        by="agent",
        grain=Grain.RANGE,
        settings=MetricSettings(),
        as_of=T0 + 10 * DAY,
    )
    a2 = next(row.figures for row in report.rows if row.key == "A2")
    # Not ready since 15 minutes before the range, until 20 minutes into it.
    assert a2["not_ready_by_reason"] == {"training": pytest.approx(1200)}
    assert a2["logged_in_s"] == pytest.approx(HOUR)


async def test_pending_fcr_and_ranges_ending_now(db: Database) -> None:
    await insert(db, crossing_range().events)
    as_of = T0 + 2 * DAY  # c1's window (7 days) is still open
    report = await historical_report(
        db, T0, T0 + HOUR, by="queue", grain=Grain.RANGE, settings=MetricSettings(), as_of=as_of
    )
    support = next(row.figures for row in report.rows if row.key == "support")
    assert support["fcr_pending"] == 3 and support["fcr_repeat_contact"] is None


async def test_day_edges_are_local_midnight_in_the_centre_time_zone(db: Database) -> None:
    # 2026-03-02 23:30 and 2026-03-03 00:10 in Shanghai (UTC+8): one UTC day, two local ones.
    late = datetime(2026, 3, 2, 15, 30, tzinfo=UTC).timestamp() - T0
    early = datetime(2026, 3, 2, 16, 10, tzinfo=UTC).timestamp() - T0
    log = Log()
    log.enter("n1", "support", late).left("n1", "support", late + 60, "abandoned")
    log.enter("n2", "support", early).left("n2", "support", early + 60, "abandoned")
    await insert(db, log.events)
    shanghai = MetricSettings(timezone="Asia/Shanghai")
    start = datetime(2026, 3, 1, 16, 0, tzinfo=UTC).timestamp()  # 03-02 00:00 in Shanghai
    report = await historical_report(
        db, start, start + 2 * DAY, by="queue", grain=Grain.DAY, settings=shanghai, as_of=T0 + DAY
    )
    assert [(r.start - start, r.figures["offered"]) for r in report.rows] == [(0, 1), (DAY, 1)]
    utc = await historical_report(
        db,
        start + 8 * HOUR,
        start + 8 * HOUR + DAY,
        by="queue",
        grain=Grain.DAY,
        settings=MetricSettings(),
        as_of=T0 + DAY,
    )
    assert [r.figures["offered"] for r in utc.rows] == [2]
    # Hours in Kathmandu (UTC+5:45) start at a quarter past the UTC hour.
    kathmandu = MetricSettings(timezone="Asia/Kathmandu", interval_s=3600)
    hourly = await historical_report(
        db,
        start,
        start + 2 * DAY,
        by="centre",
        grain=Grain.INTERVAL,
        settings=kathmandu,
        as_of=T0 + DAY,
    )
    busy = [r for r in hourly.rows if r.figures["offered"]]
    # 15:30 and 16:10 UTC are both in the local hour 21:00-22:00 (15:15-16:15 UTC).
    assert [datetime.fromtimestamp(r.start, UTC).strftime("%H:%M") for r in busy] == ["15:15"]
    assert busy[0].figures["offered"] == 2
    # The range starts at 21:45 local: a quarter-hour first, 47 whole hours, three quarters last.
    assert len(hourly.rows) == 49
    assert hourly.rows[0].end - hourly.rows[0].start == 900


async def test_load_reads_one_snapshot_of_what_the_range_needs(db: Database) -> None:
    await insert(db, crossing_range().events)
    facts = await load_facts(
        db, T0, T0 + HOUR, settings=MetricSettings(), as_of=T0 + 10 * DAY, batch_size=1
    )
    calls = {stay.call_id for stay in facts.fold.stays}
    # c8 (the day before) has nothing to do with the range; c6 and c7, entering within
    # 7 days of an answer in it, are read as possible repeat contacts, their entries only.
    assert "c8" not in calls and {"c6", "c7"} <= calls
    assert [s.outcome for s in facts.fold.stays if s.call_id == "c6"] == [None]
    assert not facts.fold.skipped, facts.fold.skipped


async def test_real_server_events_give_the_same_report_from_the_database(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001", "王小明"))
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.2, talk_time=0.6))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            centre.acd.login("1001")
            for caller in ("13800138000", "13900139000"):
                call = await emulator.place_call(caller, "张三")
                await centre.agent_reaches("1001", AgentState.ON_CALL)
                await call.ended
                await centre.agent_reaches("1001", AgentState.AVAILABLE)
            assert centre.server.events is not None
            await centre.server.events.flush()
    events = await all_events(db)
    first, last = events[0].occurred_at, events[-1].occurred_at
    metric_settings = MetricSettings()
    # A range cutting the story in the middle: from the first call's answer on.
    connected = [e.occurred_at for e in events if e.type == "acd.connected"]
    for start, end in ((first - 1, last + 1), (connected[0], last + 1), (first - 1, connected[1])):
        for by in ("queue", "agent", "centre"):
            stored = await historical_report(
                db,
                start,
                end,
                by=by,
                grain=Grain.INTERVAL,
                settings=metric_settings,
                as_of=last + 2,
            )
            expected = pure(
                events,
                start,
                end,
                by=by,
                grain=Grain.INTERVAL,
                settings=metric_settings,
                as_of=last + 2,
            )
            same(stored, expected)
            assert not stored.skipped, stored.skipped
    whole = await historical_report(
        db, first - 1, last + 1, by="queue", grain=Grain.RANGE, settings=metric_settings
    )
    assert json.dumps(whole.as_json(), ensure_ascii=False)
    assert [r.figures["answered"] for r in whole.rows] == [2]
    assert timedelta(seconds=whole.as_of - last) >= timedelta(0)


async def test_transferred_call_in_the_fcr_look_ahead_skips_nothing(db: Database) -> None:
    """A later call transferred between queues is a possible repeat contact, read for its
    entries only: none of it is folded, so its second entry finds no first stay open."""
    log = crossing_range()
    # Two days on: c1's caller again, answered in support and transferred to billing.
    at = 2 * DAY
    log.enter("c9", "support", at, caller="5550001").answer("c9", "support", "A1", at + 10)
    log.add(
        "acd.transferred",
        at + 60,
        {"from_agent": "A1", "target_kind": "queue", "target": "billing"},
        call="c9",
        agent="A1",
        queue="support",
    )
    log.end("c9", "support", "A1", at + 60, wrap_until=at + 70)
    log.enter("c9", "billing", at + 60).answer("c9", "billing", "A2", at + 80)
    log.end("c9", "billing", "A2", at + 200, wrap_until=at + 230)
    await insert(db, log.events)
    settings, as_of = MetricSettings(), T0 + 10 * DAY
    day_start = T0 - 9 * HOUR  # local (UTC) midnight of T0's day
    for by in ("queue", "centre"):
        report = await historical_report(
            db, day_start, day_start + DAY, by=by, grain=Grain.DAY, settings=settings, as_of=as_of
        )
        assert report.skipped == {}, report.skipped
        expected = pure(
            await all_events(db),
            day_start,
            day_start + DAY,
            by=by,
            grain=Grain.DAY,
            settings=settings,
            as_of=as_of,
        )
        same(report, expected)
    facts = await load_facts(db, day_start, day_start + DAY, settings=settings, as_of=as_of)
    assert [s.queue for s in facts.fold.stays if s.call_id == "c9"] == ["support", "billing"]
    assert not facts.fold.skipped
