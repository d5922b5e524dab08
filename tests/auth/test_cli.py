"""`ctiserver user add|passwd|list|deactivate` against real PostgreSQL."""

from __future__ import annotations

import asyncio
import getpass
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ctiserver.auth.passwords import verify_password
from ctiserver.cli import main
from ctiserver.store.accounts import Account, create_session, get_account
from ctiserver.store.database import Database
from tests.conftest import truncate_all


async def _empty(dsn: str) -> None:
    async with await Database.open(dsn) as db:
        await truncate_all(db)


async def _account(dsn: str, login: str) -> Account | None:
    async with await Database.open(dsn) as db:
        return await get_account(db, login)


async def _sessions(dsn: str) -> int:
    async with await Database.open(dsn) as db:
        return int(await db.fetchval("SELECT count(*) FROM sessions"))


@pytest.fixture
def dsn(pg_dsn: str, no_server_config: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("CTISERVER_DATABASE_DSN", pg_dsn)
    asyncio.run(_empty(pg_dsn))
    yield pg_dsn


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_user_add_list_passwd_deactivate(
    dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, "first password\n")
    code = main(
        [
            "user",
            "add",
            "agent1001",
            "--role",
            "agent",
            "--name",
            "王小明",
            "--agent",
            "1001",
            "--password-stdin",
        ]
    )
    assert code == 0
    assert "account agent1001 created (agent, takes calls as agent 1001)" in capsys.readouterr().out
    account = asyncio.run(_account(dsn, "agent1001"))
    assert account is not None
    assert (account.name, account.role, account.agent_login) == ("王小明", "agent", "1001")
    assert account.password_hash.startswith("$argon2id$")
    assert asyncio.run(verify_password(account.password_hash, "first password"))

    # Asked twice on the terminal when not piped.
    answers = iter(["admin password", "admin password"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    assert main(["user", "add", "admin", "--role", "admin"]) == 0
    capsys.readouterr()

    assert main(["user", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["LOGIN", "ROLE", "AGENT", "ACTIVE", "NAME"]
    assert lines[1].split() == ["admin", "admin", "-", "yes"]
    assert lines[2].split() == ["agent1001", "agent", "1001", "yes", "王小明"]

    async def open_session() -> None:
        async with await Database.open(dsn) as db:
            await create_session(db, account.id, now=datetime.now(UTC), idle=timedelta(hours=1))

    asyncio.run(open_session())
    _stdin(monkeypatch, "second password\n")
    assert main(["user", "passwd", "agent1001", "--password-stdin"]) == 0
    assert "password of agent1001 changed; 1 session ended" in capsys.readouterr().out
    changed = asyncio.run(_account(dsn, "agent1001"))
    assert changed is not None
    assert asyncio.run(verify_password(changed.password_hash, "second password"))
    assert not asyncio.run(verify_password(changed.password_hash, "first password"))
    assert asyncio.run(_sessions(dsn)) == 0

    assert main(["user", "deactivate", "agent1001"]) == 0
    assert main(["user", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[:4] == [
        "agent1001",
        "agent",
        "1001",
        "no",
    ]


def test_user_commands_refuse_what_they_cannot_do(
    dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, "long enough\n")
    assert main(["user", "add", "agent1001", "--role", "agent", "--password-stdin"]) == 2
    assert "needs --agent AGENT_ID" in capsys.readouterr().err

    _stdin(monkeypatch, "short\n")
    assert main(["user", "add", "boss", "--role", "admin", "--password-stdin"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err

    answers = iter(["one password", "another one"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    assert main(["user", "add", "boss", "--role", "admin"]) == 2
    assert "the two passwords differ" in capsys.readouterr().err
    assert asyncio.run(_account(dsn, "boss")) is None

    _stdin(monkeypatch, "long enough\n")
    assert main(["user", "add", "boss", "--role", "admin", "--password-stdin"]) == 0
    _stdin(monkeypatch, "long enough\n")
    assert main(["user", "add", "boss", "--role", "supervisor", "--password-stdin"]) == 1
    assert "an account 'boss' exists already" in capsys.readouterr().err

    _stdin(monkeypatch, "long enough\n")
    assert main(["user", "passwd", "nobody", "--password-stdin"]) == 1
    assert "no account 'nobody'" in capsys.readouterr().err
    assert main(["user", "deactivate", "nobody"]) == 1

    with pytest.raises(SystemExit):
        main(["user", "add", "x", "--role", "root"])


def test_user_list_when_empty(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["user", "list"]) == 0
    assert "no accounts" in capsys.readouterr().out
