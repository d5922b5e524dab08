"""EventLog through real PostgreSQL outages: buffer, spill, log once, recover, no duplicates.

Each test runs its own embedded server on the session's initialised data
folder, and stops and starts it as an outage would.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from ctiserver.store.database import Database
from ctiserver.store.embedded import EmbeddedPostgres, acquire_embedded, release_embedded
from ctiserver.store.events import SPILL_FILE, Event, EventLog, EventLogError

EVENTS_LOGGER = "ctiserver.store.events"


@dataclass
class Outage:
    """A database on an embedded server that the test can stop and start."""

    pgdata: Path
    server: EmbeddedPostgres | None
    db: Database

    async def stop(self) -> None:
        assert self.server is not None
        await release_embedded(self.server)
        self.server = None

    async def start(self) -> None:
        assert self.server is None
        self.server = await acquire_embedded(self.pgdata)


@pytest.fixture
async def outage(embedded_pgdata: Path) -> AsyncIterator[Outage]:
    server = await acquire_embedded(embedded_pgdata)
    name = f"outage_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server.uri("postgres"), timeout=10)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    db = await Database.open(server.uri(name), connect_timeout=2)
    state = Outage(embedded_pgdata, server, db)
    try:
        yield state
    finally:
        await db.close()
        if state.server is not None:
            await release_embedded(state.server)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until true (the writer works in the background); fail after 20 s."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"never happened: {what}")


async def wait_until_failing(log: EventLog) -> None:
    await eventually(lambda: log.stats().failing_since is not None, "the writer saw the outage")


async def flush(log: EventLog) -> None:
    async with asyncio.timeout(30):
        await log.flush()


async def stored_keys(db: Database) -> list[uuid.UUID]:
    return [row["event_key"] for row in await db.fetch("SELECT event_key FROM events ORDER BY id")]


def new_log(outage: Outage, data_dir: Path, **options: int) -> EventLog:
    return EventLog(outage.db, data_dir, retry_initial=0.05, retry_max=0.3, **options)


async def test_outage_buffers_logs_once_and_stores_every_event_once(
    outage: Outage, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=EVENTS_LOGGER)
    events = [Event("tick", {"n": n}, call_id=f"c{n % 3}") for n in range(60)]
    log = new_log(outage, data_dir)
    await log.start()
    try:
        for event in events[:20]:
            log.append(event)
        await flush(log)

        await outage.stop()
        for event in events[20:40]:
            log.append(event)  # no exception: buffered
        await wait_until_failing(log)
        for event in events[40:]:
            log.append(event)
        await asyncio.sleep(1.0)  # several retries fail meanwhile
        assert log.stats().buffered == 40
        assert not await outage.db.healthy(within_s=1)

        await outage.start()
        await flush(log)
        assert await outage.db.healthy()
        stats = log.stats()
    finally:
        await log.close()

    assert await stored_keys(outage.db) == [e.key for e in events]
    assert (stats.written, stats.duplicates, stats.buffered) == (60, 0, 0)
    assert stats.failing_since is None
    errors = [r for r in caplog.records if r.name == EVENTS_LOGGER and r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "cannot write to PostgreSQL at socket" in message
    assert str(data_dir / SPILL_FILE) in message
    assert any("writing to PostgreSQL again" in r.getMessage() for r in caplog.records)


async def test_outage_past_the_memory_cap_spills_to_file_then_replays_in_order(
    outage: Outage, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=EVENTS_LOGGER)
    events = [Event("tick", {"n": n}) for n in range(50)]
    log = new_log(outage, data_dir, memory_cap=4, batch_size=3)
    await log.start()
    try:
        log.append(events[0])
        await flush(log)
        await outage.stop()
        for event in events[1:]:
            log.append(event)
            await asyncio.sleep(0)  # let the writer run between appends
        await wait_until_failing(log)
        await eventually(lambda: log.stats().buffered <= 4, "memory back under the cap")
        assert (data_dir / SPILL_FILE).stat().st_size > 0
        assert log.stats().spill_bytes > 0

        await outage.start()
        await flush(log)
        stats = log.stats()
    finally:
        await log.close()

    assert await stored_keys(outage.db) == [e.key for e in events]
    assert (stats.written, stats.duplicates, stats.spill_bytes, stats.buffered) == (50, 0, 0, 0)
    assert not (data_dir / SPILL_FILE).exists()
    ours = [r for r in caplog.records if r.name == EVENTS_LOGGER]
    assert sum("spilling the oldest" in r.getMessage() for r in ours) == 1
    assert sum(r.levelno >= logging.ERROR for r in ours) == 1


async def test_close_during_outage_saves_events_for_the_next_start(
    outage: Outage, data_dir: Path
) -> None:
    events = [Event("tick", {"n": n, "名字": "王小明"}) for n in range(7)]
    log = new_log(outage, data_dir)
    await log.start()
    log.append(events[0])
    await flush(log)
    await outage.stop()
    for event in events[1:]:
        log.append(event)
    waiting = asyncio.create_task(log.flush())
    await log.close(grace_s=0.5)
    with pytest.raises(EventLogError, match="closed before these events reached PostgreSQL"):
        await waiting
    assert len((data_dir / SPILL_FILE).read_text(encoding="utf-8").splitlines()) == 6

    await outage.start()
    # The next process: the file is replayed before anything new.
    later = Event("tock")
    log = new_log(outage, data_dir)
    log.append(later)
    await log.start()
    try:
        await flush(log)
    finally:
        await log.close()
    assert await stored_keys(outage.db) == [e.key for e in events] + [later.key]
    assert not (data_dir / SPILL_FILE).exists()
