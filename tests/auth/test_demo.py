"""Demo accounts: only for the emulator demo, only into an empty accounts table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp
import pytest

from ctiserver.app import Server
from ctiserver.auth.demo import create_demo_accounts, demo_password
from ctiserver.auth.passwords import verify_password
from ctiserver.config import (
    AcdSettings,
    AmiSettings,
    DatabaseSettings,
    FastAgiSettings,
    HttpSettings,
    ServerSettings,
    Settings,
)
from ctiserver.store.accounts import list_accounts
from ctiserver.store.database import Database
from tests.auth.conftest import CHEAP

EXAMPLE_ACD = Path(__file__).resolve().parents[2] / "acd.example.toml"


async def test_demo_accounts_fill_an_empty_table_once(db: Database) -> None:
    created = await create_demo_accounts(db, [("1001", "王小明"), ("1002", "李娜")], CHEAP)

    assert [(a.login, a.role, a.agent_login) for a in created] == [
        ("agent1001", "agent", "1001"),
        ("agent1002", "agent", "1002"),
        ("super", "supervisor", None),
        ("admin", "admin", None),
    ]
    stored = {a.login: a for a in await list_accounts(db)}
    assert stored["agent1001"].name == "王小明"
    for login, password in (
        ("agent1002", "demo1002"),
        ("super", "demosuper"),
        ("admin", "demoadmin"),
    ):
        assert demo_password(login) == password
        assert await verify_password(stored[login].password_hash, password, CHEAP)

    assert await create_demo_accounts(db, [("1003", "陈嘉欣")], CHEAP) == []
    assert len(await list_accounts(db)) == 4


def _settings(pg_dsn: str, data_dir: Path) -> Settings:
    return Settings(
        server=ServerSettings(data_dir=str(data_dir)),
        # Nothing listens there: the server comes up without Asterisk.
        ami=AmiSettings(port=1, connect_timeout=0.5),
        fastagi=FastAgiSettings(port=0),
        http=HttpSettings(port=0),
        database=DatabaseSettings(dsn=pg_dsn),
        acd=AcdSettings(config=str(EXAMPLE_ACD)),
    )


async def test_only_the_emulator_demo_creates_accounts_and_they_sign_in(
    db: Database, pg_dsn: str, tmp_path: Path
) -> None:
    plain = Server(_settings(pg_dsn, tmp_path))
    try:
        await plain.start()
    finally:
        await plain.close()
    assert await list_accounts(db) == []

    demo = Server(_settings(pg_dsn, tmp_path), demo_accounts=True)
    try:
        await demo.start()
        logins = [a.login for a in await list_accounts(db)]
        assert logins == sorted(["admin", "super", *(f"agent{n}" for n in range(1001, 1007))])
        base = f"http://127.0.0.1:{demo.http_port}"
        # unsafe: keep cookies of an IP-address host (127.0.0.1).
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10), cookie_jar=jar
        ) as session:
            async with session.post(
                f"{base}/login", json={"login": "agent1001", "password": "demo1001"}
            ) as response:
                assert response.status == 200
            async with session.get(f"{base}/api/me") as response:
                assert await response.json() == {
                    "login": "agent1001",
                    "name": "王小明",
                    "role": "agent",
                    "agent_id": "1001",
                }
            async with session.get(f"{base}/health") as response:
                assert "database" in await response.json()
    finally:
        await demo.close()


async def test_the_demo_runs_the_sample_centre_when_nothing_is_configured(
    db: Database, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(EXAMPLE_ACD.parent)  # the demo reads ./acd.example.toml
    # [acd] config empty and no ACD rows in the database: only the demo falls back.
    settings = dataclasses.replace(_settings(pg_dsn, tmp_path), acd=AcdSettings(config=""))
    plain = Server(settings)
    try:
        await plain.start()
        assert plain.acd is not None and plain.acd.config.agents == ()
    finally:
        await plain.close()
    demo = Server(settings, demo_accounts=True)
    try:
        await demo.start()
        assert demo.acd is not None
        assert [a.agent_id for a in demo.acd.config.agents] == [f"{n}" for n in range(1001, 1007)]
    finally:
        await demo.close()
