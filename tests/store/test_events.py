"""EventLog on a healthy database: batching, idempotency, checks, spill-file replay, rejects."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ctiserver.store.database import Database
from ctiserver.store.events import SPILL_FILE, Event, EventLog, EventLogError

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def event_log(db: Database, data_dir: Path) -> AsyncIterator[EventLog]:
    log = EventLog(db, data_dir, batch_size=100)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


async def flush(log: EventLog) -> None:
    async with asyncio.timeout(30):
        await log.flush()


def spill_line(event: Event) -> str:
    return (
        json.dumps(
            {
                "key": str(event.key),
                "occurred_at": event.occurred_at.isoformat(),
                "type": event.type,
                "call_id": event.call_id,
                "agent_id": event.agent_id,
                "queue_id": event.queue_id,
                "payload": dict(event.payload),
            },
            ensure_ascii=False,
        )
        + "\n"
    )


async def test_event_round_trips(db: Database, event_log: EventLog) -> None:
    event = Event(
        "call.enqueued",
        {"caller": "13800138000", "customer": "王小明", "priority": 5, "at": T0},
        call_id="1700000000.1",
        agent_id="1001",
        queue_id="vip",
        occurred_at=T0,
    )
    event_log.append(event)
    await flush(event_log)
    row = await db.fetchrow("SELECT * FROM events")
    assert row["event_key"] == event.key
    assert row["occurred_at"] == T0
    assert (row["type"], row["call_id"], row["agent_id"], row["queue_id"]) == (
        "call.enqueued",
        "1700000000.1",
        "1001",
        "vip",
    )
    assert row["payload"] == {
        "caller": "13800138000",
        "customer": "王小明",
        "priority": 5,
        "at": T0.isoformat(),
    }
    assert row["recorded_at"] is not None


async def test_events_are_written_in_batches_in_append_order(
    db: Database, event_log: EventLog
) -> None:
    for n in range(250):
        event_log.append(Event("tick", {"n": n}, occurred_at=T0 + timedelta(seconds=n)))
    await flush(event_log)
    stats = event_log.stats()
    assert (stats.written, stats.batches, stats.buffered) == (250, 3, 0)
    rows = await db.fetch("SELECT payload FROM events ORDER BY id")
    assert [r["payload"]["n"] for r in rows] == list(range(250))


async def test_flush_with_nothing_pending_returns(event_log: EventLog) -> None:
    await flush(event_log)
    event_log.append(Event("tick"))
    await flush(event_log)
    await flush(event_log)
    assert event_log.stats().written == 1


async def test_the_same_event_twice_is_stored_once(db: Database, event_log: EventLog) -> None:
    event = Event("agent.ready", agent_id="1001")
    event_log.append(event)
    await flush(event_log)
    event_log.append(event)
    await flush(event_log)
    assert await db.fetchval("SELECT count(*) FROM events") == 1
    assert (event_log.stats().written, event_log.stats().duplicates) == (1, 1)


@pytest.mark.parametrize(
    ("event", "error", "message"),
    [
        (Event("", {}), ValueError, "non-empty"),
        (Event("x\x00y"), ValueError, "NUL"),
        (Event("t", {"a": ["ok", {"b": "x\x00"}]}), ValueError, r"payload\.a\[1\]\.b"),
        (Event("t", {"a": float("nan")}), ValueError, "not JSON"),
        (Event("t", {"a": object()}), TypeError, "not JSON"),
        (Event("t", {"a": "\ud800"}), ValueError, "UTF-8"),
        (Event("t", call_id=12), TypeError, "call_id must be a str"),  # type: ignore[arg-type]
        (Event("t", occurred_at=datetime(2025, 1, 1)), ValueError, "timezone-aware"),
    ],
)
async def test_malformed_events_fail_in_the_caller(
    event_log: EventLog, event: Event, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        event_log.append(event)
    assert event_log.stats().buffered == 0
    event_log.append(Event("fine"))
    await flush(event_log)


async def test_append_after_close_is_an_error(db: Database, data_dir: Path) -> None:
    log = EventLog(db, data_dir)
    await log.start()
    await log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.append(Event("late"))


async def test_events_appended_before_start_are_written(db: Database, data_dir: Path) -> None:
    log = EventLog(db, data_dir)
    log.append(Event("early"))
    async with log:
        await flush(log)
    assert await db.fetchval("SELECT type FROM events") == "early"


async def test_one_event_log_per_data_folder(db: Database, data_dir: Path) -> None:
    async with EventLog(db, data_dir):
        with pytest.raises(EventLogError, match="in use by another event log"):
            await EventLog(db, data_dir).start()
    # Released on close.
    async with EventLog(db, data_dir):
        pass


async def test_spill_file_left_by_a_dead_process_is_replayed_at_start(
    db: Database, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ctiserver.store.events")
    already_written = Event("call.offered", {"n": 0}, call_id="c1", occurred_at=T0)
    async with EventLog(db, data_dir) as log:
        log.append(already_written)
        await flush(log)
    pending = [
        Event("call.answered", {"n": i, "坐席": "张丽"}, call_id="c1", occurred_at=T0)
        for i in range(1, 6)
    ]
    # The process wrote the first event, died before it removed the file, and
    # was cut off in the middle of a line.
    text = spill_line(already_written) + "".join(spill_line(e) for e in pending)
    text += "\n" + "this is not json\n" + spill_line(pending[0])[:30]
    (data_dir / SPILL_FILE).write_text(text, encoding="utf-8")

    log = EventLog(db, data_dir, batch_size=2)
    await log.start()
    try:
        await flush(log)
        stats = log.stats()
    finally:
        await log.close()
    rows = await db.fetch("SELECT event_key, payload FROM events ORDER BY id")
    assert [r["event_key"] for r in rows] == [already_written.key] + [e.key for e in pending]
    assert rows[1]["payload"] == {"n": 1, "坐席": "张丽"}
    assert (stats.written, stats.duplicates, stats.rejected, stats.spill_bytes) == (5, 1, 1, 0)
    assert not (data_dir / SPILL_FILE).exists()
    rejected = (data_dir / "events-rejected.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rejected) == 1 and "this is not json" in json.loads(rejected[0])["event"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("half-written event; dropped" in m for m in messages)
    assert any("replaying" in m for m in messages)


async def test_event_the_database_refuses_is_moved_aside(
    db: Database, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A constraint the writer's checks know nothing of stands for any row
    # PostgreSQL refuses: it must not hold up the events around it.
    constraint = f"test_refuse_{uuid.uuid4().hex[:8]}"
    await db.execute(f"ALTER TABLE events ADD CONSTRAINT {constraint} CHECK (type <> 'poison')")
    try:
        async with EventLog(db, data_dir) as log:
            log.append(Event("good", {"n": 1}))
            log.append(Event("poison", {"n": 2}))
            log.append(Event("good", {"n": 3}))
            await flush(log)
            assert log.stats().rejected == 1
    finally:
        await db.execute(f"ALTER TABLE events DROP CONSTRAINT {constraint}")
    rows = await db.fetch("SELECT payload FROM events ORDER BY id")
    assert [r["payload"]["n"] for r in rows] == [1, 3]
    [line] = (data_dir / "events-rejected.jsonl").read_text(encoding="utf-8").splitlines()
    rejected = json.loads(line)
    assert "CheckViolationError" in rejected["error"]
    assert json.loads(rejected["event"])["type"] == "poison"
    assert any(r.levelname == "ERROR" and "refused event" in r.getMessage() for r in caplog.records)
