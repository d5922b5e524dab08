"""Shared fixtures: one PostgreSQL for the whole test session, and a migrated, empty `db`.

Where the session's PostgreSQL comes from, first match wins:
1. $CTISERVER_TEST_DSN: used as is. Its tables are truncated by the tests,
   so point it at a throw-away database.
2. A server on 127.0.0.1:5432 (user postgres, trust auth): a fresh database
   with a unique name is created for the session and dropped at its end.
   Set CTISERVER_TEST_NO_LOCAL_PG=1 to skip this step.
3. Embedded PostgreSQL in a temporary folder, stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from ctiserver.store.database import Database

LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 5432
LOCAL_ADMIN_DSN = f"postgresql://postgres@{LOCAL_HOST}:{LOCAL_PORT}/postgres"


def _local_server_listens() -> bool:
    try:
        with socket.create_connection((LOCAL_HOST, LOCAL_PORT), timeout=2):
            return True
    except OSError:
        return False


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(statement, timeout=30)
    finally:
        await conn.close(timeout=5)


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN of a PostgreSQL database for the session (see the module docstring)."""
    configured = os.environ.get("CTISERVER_TEST_DSN")
    if configured:
        yield configured
        return
    if not os.environ.get("CTISERVER_TEST_NO_LOCAL_PG") and _local_server_listens():
        name = f"ctiserver_test_{uuid.uuid4().hex[:12]}"
        try:
            asyncio.run(_admin(LOCAL_ADMIN_DSN, f"CREATE DATABASE \"{name}\" ENCODING 'UTF8'"))
        except (OSError, asyncpg.PostgresError) as exc:
            warnings.warn(
                f"PostgreSQL on {LOCAL_HOST}:{LOCAL_PORT} is unusable for tests ({exc}); "
                "using embedded PostgreSQL",
                stacklevel=1,
            )
        else:
            try:
                yield f"postgresql://postgres@{LOCAL_HOST}:{LOCAL_PORT}/{name}"
            finally:
                asyncio.run(_admin(LOCAL_ADMIN_DSN, f'DROP DATABASE "{name}" WITH (FORCE)'))
            return
    from ctiserver.store.embedded import acquire_embedded, release_embedded

    pgdata = tmp_path_factory.mktemp("session-pg") / "pgdata"
    server = asyncio.run(acquire_embedded(pgdata))
    try:
        yield server.uri("postgres")
    finally:
        asyncio.run(release_embedded(server))


async def truncate_all(db: Database) -> None:
    """Empty every application table (schema_migrations kept); ids are not reset."""
    tables = [
        row["t"]
        for row in await db.fetch(
            "SELECT quote_ident(tablename) AS t FROM pg_tables "
            "WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'"
        )
    ]
    if not tables:
        return
    # TRUNCATE costs a file swap per table: only the tables holding rows.
    probe = " UNION ALL ".join(f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM {t})" for t in tables)
    busy = [row[0] for row in await db.fetch(probe)]
    # DELETE is quicker still on a few rows; the event log refuses it.
    truncate = [t for t in busy if t == "events"]
    try:
        async with db.transaction() as conn:
            for table in busy:
                if table not in truncate:
                    await conn.execute(f"DELETE FROM {table}")
    except asyncpg.PostgresError:  # a foreign key without ON DELETE: go the long way
        truncate = busy
    if truncate:
        await db.execute(f"TRUNCATE {', '.join(truncate)} CASCADE")


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[Database]:
    """A migrated Database on the session's PostgreSQL, every table empty."""
    database = await Database.open(pg_dsn, startup_timeout=10)
    try:
        await truncate_all(database)
        yield database
    finally:
        await database.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data folder (spill files, embedded pgdata)."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def embedded_pgdata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised embedded-PostgreSQL data folder, its server stopped.

    For tests that start and stop a server of their own (outages, restarts)
    without paying for initdb each time. Leave it stopped.
    """
    from ctiserver.store.embedded import acquire_embedded, release_embedded

    async def init(pgdata: Path) -> None:
        await release_embedded(await acquire_embedded(pgdata))

    pgdata = tmp_path_factory.mktemp("embedded") / "pgdata"
    asyncio.run(init(pgdata))
    return pgdata


@pytest.fixture
def no_server_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the CLI where no ctiserver.toml is found (its defaults are enough for `check`)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CTISERVER_CONFIG", raising=False)
