"""Interactions: one per ACD call and agent, merged writes, history newest first, names
without rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ctiserver.store.call_history import last_agent
from ctiserver.store.customers import CustomerFieldError, create_customer
from ctiserver.store.database import Database
from ctiserver.store.interactions import (
    customer_history,
    get_interaction,
    interaction_for_call,
    interactions_for_call,
    record_interaction,
    update_interaction,
)

T0 = datetime(2024, 11, 23, 9, 0, tzinfo=UTC)


async def test_wrap_up_submitted_twice_is_written_once(db: Database) -> None:
    customer = await create_customer(db, name="王小明", phones=["13800138000"])
    # The ACD writes the call when it ends...
    first = await record_interaction(
        db,
        call_key="1732368000.42",
        customer_id=customer.id,
        channel="phone",
        direction="inbound",
        address="13800138000",
        queue_name="support",
        agent_login="alice",
        started_at=T0,
        ended_at=T0 + timedelta(minutes=3),
        recording_path="/var/spool/asterisk/monitor/1732368000.42.wav",
    )
    assert first.resolved is None and first.disposition is None
    # ...then the same agent's wrap-up from the desktop, twice (a retry), adds to it.
    wrap = {
        "call_key": "1732368000.42",
        "agent_login": "alice",
        "channel": "phone",
        "direction": "inbound",
        "started_at": T0 + timedelta(seconds=5),
        "disposition": "billing",
        "notes": "客户询问账单，已解释",
        "resolved": False,
        "wrap_up_at": T0 + timedelta(minutes=4),
        "follow_up_at": T0 + timedelta(days=1),
    }
    await record_interaction(db, **wrap)  # type: ignore[arg-type]
    again = await record_interaction(db, **wrap)  # type: ignore[arg-type]
    assert await db.fetchval("SELECT count(*) FROM interactions") == 1
    assert again.id == first.id
    assert (again.disposition, again.resolved) == ("billing", False)
    assert again.notes == "客户询问账单，已解释"
    # What the ACD wrote is kept; started_at keeps the earliest.
    assert (again.customer_id, again.queue_name, again.agent_login) == (
        customer.id,
        "support",
        "alice",
    )
    assert again.recording_path == first.recording_path
    assert (again.started_at, again.ended_at) == (T0, T0 + timedelta(minutes=3))
    assert again.follow_up_at == T0 + timedelta(days=1)
    assert await interaction_for_call(db, "1732368000.42") == again
    assert await interaction_for_call(db, "1732368000.42", "alice") == again
    assert await interaction_for_call(db, "1732368000.42", "bob") is None
    assert await interaction_for_call(db, "1732368000.43") is None


async def test_each_agent_of_a_transferred_call_keeps_their_wrap_up(db: Database) -> None:
    customer = await create_customer(db, name="王小明", phones=["13800138000"])
    common: dict[str, Any] = {
        "call_key": "1732368000.42",
        "customer_id": customer.id,
        "channel": "phone",
        "direction": "inbound",
        "address": "13800138000",
        "queue_name": "support",
    }
    alice = await record_interaction(
        db, **common, agent_login="alice", started_at=T0, disposition="transferred",
        notes="转给账单组", resolved=False, wrap_up_at=T0 + timedelta(minutes=2),
    )  # fmt: skip
    bob = await record_interaction(
        db, **common, agent_login="bob", started_at=T0 + timedelta(minutes=2),
        disposition="billing-fixed", notes="已更正账单", resolved=True,
        wrap_up_at=T0 + timedelta(minutes=6),
    )  # fmt: skip
    # Bob submits again (a retry): his row is updated, Alice's untouched.
    again = await record_interaction(
        db, **common, agent_login="bob", started_at=T0 + timedelta(minutes=2),
        disposition="billing-fixed", notes="已更正账单，客户满意", resolved=True,
        wrap_up_at=T0 + timedelta(minutes=7),
    )  # fmt: skip
    assert again.id == bob.id and alice.id != bob.id
    both = await interactions_for_call(db, "1732368000.42")
    assert [(i.agent_login, i.disposition, i.notes) for i in both] == [
        ("alice", "transferred", "转给账单组"),
        ("bob", "billing-fixed", "已更正账单，客户满意"),
    ]
    assert await interaction_for_call(db, "1732368000.42", "alice") == alice
    # Without an agent: the call's latest part.
    latest = await interaction_for_call(db, "1732368000.42")
    assert latest is not None and latest.agent_login == "bob"
    history = await customer_history(db, customer.id)
    assert [i.agent_login for i in history] == ["bob", "alice"]


async def test_concurrent_writes_of_one_call_make_one_row(db: Database) -> None:
    await asyncio.gather(
        *(
            record_interaction(
                db,
                call_key="1732368000.7",
                channel="phone",
                direction="inbound",
                started_at=T0,
                notes=f"note {i}",
            )
            for i in range(8)
        )
    )
    assert await db.fetchval("SELECT count(*) FROM interactions") == 1


async def test_queue_and_agent_ids_only_when_their_rows_exist(db: Database) -> None:
    agent_id = await db.fetchval(
        "INSERT INTO agents (login, name) VALUES ('bob', '鲍勃') RETURNING id"
    )
    queue_id = await db.fetchval("INSERT INTO queues (name) VALUES ('sales') RETURNING id")
    known = await record_interaction(
        db,
        call_key="1.1",
        channel="phone",
        direction="inbound",
        started_at=T0,
        queue_name="sales",
        agent_login="bob",
    )
    toml_only = await record_interaction(
        db,
        call_key="1.2",
        channel="phone",
        direction="inbound",
        started_at=T0,
        queue_name="vip",
        agent_login="carol",
    )
    ids = {
        row["call_key"]: (row["queue_id"], row["agent_id"])
        for row in await db.fetch("SELECT call_key, queue_id, agent_id FROM interactions")
    }
    assert ids == {"1.1": (queue_id, agent_id), "1.2": (None, None)}
    assert (known.queue_name, known.agent_login, known.agent_name) == ("sales", "bob", "鲍勃")
    assert (toml_only.queue_name, toml_only.agent_login, toml_only.agent_name) == (
        "vip",
        "carol",
        None,
    )
    # An agents row created later (acd import) still names the agent.
    await db.execute("INSERT INTO agents (login, name) VALUES ('carol', 'Carol Chen')")
    later = await interaction_for_call(db, "1.2")
    assert later is not None and later.agent_name == "Carol Chen"


async def test_history_is_newest_first_and_limited(db: Database) -> None:
    customer = await create_customer(db, name="李四", phones=["13900139000"])
    other = await create_customer(db, name="王五", phones=["13700137000"])
    for minutes, channel in ((0, "phone"), (30, "email"), (10, "callback"), (20, "chat")):
        await record_interaction(
            db,
            customer_id=customer.id,
            channel=channel,
            direction="inbound",
            started_at=T0 + timedelta(minutes=minutes),
        )
    await record_interaction(
        db, customer_id=other.id, channel="phone", direction="outbound", started_at=T0
    )
    history = await customer_history(db, customer.id)
    assert [i.channel for i in history] == ["email", "chat", "callback", "phone"]
    assert [i.channel for i in await customer_history(db, customer.id, limit=2)] == [
        "email",
        "chat",
    ]
    assert await customer_history(db, 999_999) == []
    with pytest.raises(CustomerFieldError):
        await customer_history(db, customer.id, limit=0)


async def test_update_interaction_sets_and_clears(db: Database) -> None:
    item = await record_interaction(
        db, channel="phone", direction="inbound", started_at=T0, disposition="sales"
    )
    customer = await create_customer(db, name="赵六", phones=["13600136000"])
    updated = await update_interaction(
        db, item.id, customer_id=customer.id, disposition=None, resolved=True, notes="已解决"
    )
    assert updated is not None
    assert (updated.customer_id, updated.disposition, updated.resolved, updated.notes) == (
        customer.id,
        None,
        True,
        "已解决",
    )
    assert await get_interaction(db, item.id) == updated
    assert await update_interaction(db, 999_999, resolved=True) is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"channel": "fax"}, "channel"),
        ({"direction": "sideways"}, "direction"),
        ({"ended_at": T0 - timedelta(seconds=1)}, "ended_at"),
    ],
)
async def test_bad_interactions_are_refused_by_field(
    db: Database, fields: dict[str, object], field: str
) -> None:
    given: dict[str, object] = {"channel": "phone", "direction": "inbound", "started_at": T0}
    with pytest.raises(CustomerFieldError) as caught:
        await record_interaction(db, **{**given, **fields})  # type: ignore[arg-type]
    assert caught.value.field == field
    assert await db.fetchval("SELECT count(*) FROM interactions") == 0


async def test_the_ivr_finds_the_last_agent_by_login_without_an_agents_row(db: Database) -> None:
    # An ACD run from a TOML file has no agents rows: the login alone names the agent.
    customer = await create_customer(db, name="李四", phones=["13900139000"])
    for minutes, login in ((0, "agent1001"), (30, "agent1002")):
        await record_interaction(
            db,
            call_key=f"1732368000.{minutes}",
            customer_id=customer.id,
            channel="phone",
            direction="inbound",
            agent_login=login,
            started_at=T0 + timedelta(minutes=minutes),
        )
    assert await last_agent(db, customer.id, ("13900139000",)) == "agent1002"
