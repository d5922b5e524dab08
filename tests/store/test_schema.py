"""Schema rules the database itself enforces: the append-only event log, calls, interactions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ctiserver.store.customers import create_customer
from ctiserver.store.database import Database

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


async def insert_event(db: Database, type_: str = "call.offered") -> int:
    return int(
        await db.fetchval(
            "INSERT INTO events (event_key, occurred_at, type, call_id, payload) "
            "VALUES ($1, $2, $3, 'c1', $4) RETURNING id",
            uuid.uuid4(),
            T0,
            type_,
            {"queue": "vip"},
        )
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET type = 'changed'",
        "UPDATE events SET payload = '{}' WHERE id = -1",
        "DELETE FROM events",
        "DELETE FROM events WHERE id = -1",
    ],
)
async def test_events_refuse_update_and_delete(db: Database, statement: str) -> None:
    await insert_event(db)
    with pytest.raises(asyncpg.RaiseError, match="events is append-only"):
        await db.execute(statement)
    assert await db.fetchval("SELECT type FROM events") == "call.offered"


async def test_event_key_is_unique_and_payload_an_object(db: Database) -> None:
    key = uuid.uuid4()
    insert = "INSERT INTO events (event_key, occurred_at, type, payload) VALUES ($1, $2, $3, $4)"
    await db.execute(insert, key, T0, "agent.ready", {})
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert, key, T0, "agent.ready", {})
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(insert, uuid.uuid4(), T0, "agent.ready", [1, 2])
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(insert, uuid.uuid4(), T0, "", {})


async def test_event_time_range_and_per_call_queries_use_indexes(db: Database) -> None:
    async def plan(conn: asyncpg.Connection, query: str, *args: object) -> str:
        return "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + query, *args))

    async with db.transaction() as conn:
        await conn.execute("SET LOCAL enable_seqscan = off")
        by_time = await plan(
            conn,
            "SELECT * FROM events WHERE occurred_at >= $1 AND occurred_at < $2",
            T0,
            T0 + timedelta(minutes=15),
        )
        by_call = await plan(conn, "SELECT * FROM events WHERE call_id = $1", "c1")
    assert "events_occurred" in by_time
    assert "events_call" in by_call


async def test_call_with_legs_and_an_interaction(db: Database) -> None:
    customer = await create_customer(db, name="王小明", phones=["13800138000"])
    call_id = await db.fetchval(
        "INSERT INTO calls (linkedid, uniqueid, caller_number, dnis, customer_id, started_at) "
        "VALUES ('1700000000.1', '1700000000.1', '13800138000', '95555', $1, $2) RETURNING id",
        customer.id,
        T0,
    )
    await db.execute(
        "INSERT INTO call_legs (call_id, channel, uniqueid, role, started_at, ended_at, "
        "hangup_cause) VALUES ($1, 'PJSIP/trunk-00000001', '1700000000.1', 'caller', $2, $3, 16)",
        call_id,
        T0,
        T0 + timedelta(minutes=3),
    )
    await db.execute(
        "INSERT INTO interactions (customer_id, call_id, channel, direction, notes, resolved, "
        "started_at) VALUES ($1, $2, 'phone', 'inbound', '客户很满意', true, $3)",
        customer.id,
        call_id,
        T0,
    )
    row = await db.fetchrow(
        "SELECT i.notes, c.dnis, l.role FROM interactions i JOIN calls c ON c.id = i.call_id "
        "JOIN call_legs l ON l.call_id = c.id"
    )
    assert tuple(row) == ("客户很满意", "95555", "caller")


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        (
            "INSERT INTO calls (linkedid, uniqueid, started_at, ended_at) "
            "VALUES ('x', 'x', $1, $1::timestamptz - interval '1 s')",
            asyncpg.CheckViolationError,
        ),
        (
            "INSERT INTO calls (linkedid, uniqueid, started_at, outcome) "
            "VALUES ('x', 'x', $1, 'lost')",
            asyncpg.CheckViolationError,
        ),
        (
            "INSERT INTO interactions (channel, direction, started_at) "
            "VALUES ('pigeon', 'inbound', $1)",
            asyncpg.CheckViolationError,
        ),
    ],
)
async def test_calls_and_interactions_refuse_nonsense(
    db: Database, statement: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await db.execute(statement, T0)


async def test_linkedid_is_unique_per_asterisk_node(db: Database) -> None:
    insert = (
        "INSERT INTO calls (asterisk_node, linkedid, uniqueid, started_at) "
        "VALUES ($1, '1700000000.1', '1700000000.1', $2)"
    )
    await db.execute(insert, "pbx1", T0)
    await db.execute(insert, "pbx2", T0)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert, "pbx1", T0)


async def test_updated_at_follows_changes(db: Database) -> None:
    customer = await create_customer(db, name="王小明")
    await db.execute("UPDATE customers SET notes = '客户很满意' WHERE id = $1", customer.id)
    updated = await db.fetchval("SELECT updated_at FROM customers WHERE id = $1", customer.id)
    # now() is the transaction start: the update's transaction started later.
    assert updated > customer.updated_at
