"""ctiserver.store.accounts against real PostgreSQL: accounts, sessions, the schema's rules."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from ctiserver.store.accounts import (
    AccountExists,
    create_account,
    create_session,
    deactivate_account,
    delete_account_sessions,
    delete_session,
    find_session,
    get_account,
    list_accounts,
    set_password,
    token_hash,
    update_account,
)
from ctiserver.store.database import Database
from tests.auth.conftest import T0

IDLE = timedelta(hours=12)


async def test_accounts_are_created_listed_updated_and_deactivated(db: Database) -> None:
    agent = await create_account(
        db, "agent1003", role="agent", password_hash="$h1", name="陈嘉欣", agent_login="1003"
    )
    await create_account(db, "admin", role="admin", password_hash="$h2")
    assert agent.active and agent.name == "陈嘉欣" and agent.agent_login == "1003"
    with pytest.raises(AccountExists):
        await create_account(db, "admin", role="supervisor", password_hash="$h3")

    assert [a.login for a in await list_accounts(db)] == ["admin", "agent1003"]
    changed = await update_account(db, "agent1003", role="supervisor", agent_login=None)
    assert changed is not None
    assert (changed.role, changed.agent_login, changed.name) == ("supervisor", None, "陈嘉欣")
    assert changed.updated_at >= agent.updated_at
    renamed = await update_account(db, "agent1003", name="Chen Jiaxin")
    assert renamed is not None and renamed.role == "supervisor"
    assert await update_account(db, "nobody", name="x") is None

    assert await set_password(db, agent.id, "$new")
    stored = await get_account(db, "agent1003")
    assert stored is not None and stored.password_hash == "$new"
    assert await deactivate_account(db, "agent1003")
    assert not await deactivate_account(db, "nobody")
    assert [a.login for a in await list_accounts(db, active_only=True)] == ["admin"]


async def test_the_schema_refuses_bad_accounts(db: Database) -> None:
    insert = (
        "INSERT INTO accounts (login, role, password_hash, agent_login) VALUES ($1, $2, $3, $4)"
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(insert, "x", "root", "$h", None)
    with pytest.raises(asyncpg.CheckViolationError):  # an agent account needs its agent id
        await db.execute(insert, "x", "agent", "$h", None)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(insert, "", "admin", "$h", None)
    with pytest.raises(ValueError, match="role"):
        await create_account(db, "x", role="root", password_hash="$h")
    with pytest.raises(ValueError, match="agent id"):
        await create_account(db, "x", role="agent", password_hash="$h")


async def test_sessions_are_found_by_token_and_slide(db: Database) -> None:
    account = await create_account(db, "super", role="supervisor", password_hash="$h")
    token = await create_session(db, account.id, now=T0, idle=IDLE)

    assert await db.fetchval("SELECT token_hash FROM sessions") == token_hash(token)
    found = await find_session(db, token, now=T0 + timedelta(seconds=59), idle=IDLE)
    assert found is not None and found.account.login == "super"
    assert found.last_seen_at == T0 and found.expires_at == T0 + IDLE  # not touched yet
    later = T0 + timedelta(hours=11)
    touched = await find_session(db, token, now=later, idle=IDLE)
    assert touched is not None and touched.expires_at == later + IDLE
    assert await db.fetchval("SELECT expires_at FROM sessions") == later + IDLE
    assert await find_session(db, token, now=later + IDLE, idle=IDLE) is None
    assert await find_session(db, token + "x", now=later, idle=IDLE) is None


async def test_sessions_end_one_or_all_and_expired_ones_are_swept(db: Database) -> None:
    account = await create_account(db, "super", role="supervisor", password_hash="$h")
    first = await create_session(db, account.id, now=T0, idle=IDLE)
    second = await create_session(db, account.id, now=T0, idle=IDLE)
    assert first != second

    assert await delete_session(db, first)
    assert not await delete_session(db, first)
    assert await delete_account_sessions(db, account.id) == 1
    assert await find_session(db, second, now=T0, idle=IDLE) is None

    await create_session(db, account.id, now=T0, idle=IDLE)
    # Opening a session after the first has expired removes the expired one.
    await create_session(db, account.id, now=T0 + IDLE + timedelta(seconds=1), idle=IDLE)
    assert await db.fetchval("SELECT count(*) FROM sessions") == 1


async def test_deleting_an_account_deletes_its_sessions(db: Database) -> None:
    account = await create_account(db, "admin", role="admin", password_hash="$h")
    await create_session(db, account.id, now=T0, idle=IDLE)
    await db.execute("DELETE FROM accounts WHERE id = $1", account.id)
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
