"""EventLog.append_durable: in the table when PostgreSQL answers, fsynced to disk when it
does not; the disk copy survives a crash, keeps the order and stores nothing twice."""

from __future__ import annotations

import json
from pathlib import Path

from ctiserver.store.events import DURABLE_FILE, Durability, Event
from tests.store.test_outage import (
    Outage,
    eventually,
    flush,
    new_log,
    stored_keys,
    wait_until_failing,
)

# The fixture, re-exported so that pytest finds it here.
from tests.store.test_outage import outage as outage


def copied_keys(data_dir: Path) -> list[str]:
    """The event keys in the durable file, in its order."""
    lines = (data_dir / DURABLE_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["key"] for line in lines]


async def test_durable_append_waits_for_the_table_when_the_database_answers(
    outage: Outage, data_dir: Path
) -> None:
    log = new_log(outage, data_dir)
    await log.start()
    try:
        event = Event("desktop.wrap_up", {"notes": "好"}, call_id="c1")
        assert await log.append_durable(event) is Durability.DATABASE
        assert await stored_keys(outage.db) == [event.key]
        assert not (data_dir / DURABLE_FILE).exists()
    finally:
        await log.close()


async def test_durable_append_during_an_outage_is_on_disk_and_survives_a_crash(
    outage: Outage, data_dir: Path
) -> None:
    log = new_log(outage, data_dir)
    await log.start()
    await outage.stop()
    before = [Event("acd.tick", {"n": n}) for n in range(3)]
    for event in before:
        log.append(event)
    await wait_until_failing(log)
    wrap_up = Event("desktop.wrap_up", {"notes": "投诉"}, call_id="c1")
    assert await log.append_durable(wrap_up, wait_s=0.2) is Durability.DISK
    # The events appended before it come along, in order.
    assert copied_keys(data_dir) == [str(e.key) for e in [*before, wrap_up]]
    # A crash: memory is lost, the files stay.
    log._memory.clear()
    await log.close(grace_s=0.1)

    await outage.start()
    log = new_log(outage, data_dir)
    await log.start()
    try:
        await flush(log)
        assert await stored_keys(outage.db) == [e.key for e in [*before, wrap_up]]
        assert not (data_dir / DURABLE_FILE).exists()
    finally:
        await log.close()


async def test_each_durable_copy_adds_only_the_events_not_copied_yet(
    outage: Outage, data_dir: Path
) -> None:
    log = new_log(outage, data_dir)
    await log.start()
    try:
        await outage.stop()
        first = [Event("acd.tick", {"n": n}) for n in range(3)]
        for event in first:
            log.append(event)
        await wait_until_failing(log)
        wrap_up_1 = Event("desktop.wrap_up", {"notes": "一"}, call_id="c1")
        assert await log.append_durable(wrap_up_1, wait_s=0.2) is Durability.DISK
        between = [Event("acd.tick", {"n": n}) for n in range(3, 5)]
        for event in between:
            log.append(event)
        wrap_up_2 = Event("desktop.wrap_up", {"notes": "二"}, call_id="c2")
        assert await log.append_durable(wrap_up_2, wait_s=0.2) is Durability.DISK
        # Every event once, in append order: the second copy took the backlog's new part.
        expected = [*first, wrap_up_1, *between, wrap_up_2]
        assert copied_keys(data_dir) == [str(e.key) for e in expected]
        await outage.start()
        await flush(log)
        assert await stored_keys(outage.db) == [e.key for e in expected]
    finally:
        await log.close()


async def test_the_disk_copy_goes_once_the_table_has_it_and_nothing_is_stored_twice(
    outage: Outage, data_dir: Path
) -> None:
    log = new_log(outage, data_dir)
    await log.start()
    try:
        await outage.stop()
        log.append(Event("acd.tick"))
        await wait_until_failing(log)
        wrap_up = Event("desktop.wrap_up", call_id="c2")
        assert await log.append_durable(wrap_up, wait_s=0.2) is Durability.DISK
        later = Event("acd.tick", {"n": 2})
        log.append(later)
        await outage.start()
        await flush(log)
        await eventually(lambda: not (data_dir / DURABLE_FILE).exists(), "copy removed")
        stats = log.stats()
        assert (stats.written, stats.duplicates) == (3, 0)
        assert (await stored_keys(outage.db))[1:] == [wrap_up.key, later.key]
    finally:
        await log.close()
