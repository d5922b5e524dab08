"""Migrations: apply in order, idempotent, safe when concurrent, strict about changed files."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ctiserver.store.database import Database
from ctiserver.store.migrator import (
    MIGRATION_LOCK_KEY,
    MigrationError,
    apply_migrations,
    load_migrations,
)

PoolFactory = Callable[[], Awaitable[Any]]


@pytest.fixture
async def schema_pools(pg_dsn: str) -> AsyncIterator[PoolFactory]:
    """Pools on a fresh, empty schema of the session database (dropped afterwards).

    A schema of its own lets a test start from nothing without creating a
    database, which CTISERVER_TEST_DSN may not allow.
    """
    schema = f"mig_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_dsn, timeout=10)
    await admin.execute(f"CREATE SCHEMA {schema}")
    pools: list[Any] = []

    async def make_pool() -> Any:
        pool = await asyncpg.create_pool(
            pg_dsn, min_size=1, max_size=2, timeout=10, server_settings={"search_path": schema}
        )
        pools.append(pool)
        return pool

    try:
        yield make_pool
    finally:
        for pool in pools:
            await pool.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


def write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql, encoding="utf-8")


async def test_package_migrations_apply_then_rerun_is_noop(schema_pools: PoolFactory) -> None:
    pool = await schema_pools()
    async with pool.acquire() as conn:
        first = await apply_migrations(conn)
        second = await apply_migrations(conn)
        recorded = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    assert [m.filename for m in first] == [m.filename for m in load_migrations()]
    assert first[0].filename == "0001_initial.sql"
    assert second == []
    assert [(r["version"], r["name"], r["checksum"]) for r in recorded] == [
        (m.version, m.name, m.checksum) for m in first
    ]


async def test_concurrent_runs_from_two_pools_apply_once(schema_pools: PoolFactory) -> None:
    pool_a, pool_b = await schema_pools(), await schema_pools()

    async def run(pool: Any) -> list[str]:
        async with pool.acquire() as conn:
            return [m.filename for m in await apply_migrations(conn)]

    done_a, done_b = await asyncio.gather(run(pool_a), run(pool_b))
    # One run applied everything, the other waited for the lock and found nothing to do.
    assert sorted([done_a, done_b], key=len) == [[], [m.filename for m in load_migrations()]]
    async with pool_a.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(
            load_migrations()
        )


async def test_every_table_has_a_comment(db: Database) -> None:
    rows = await db.fetch(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c "
        "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace"
    )
    names = {row["relname"] for row in rows}
    assert {
        "customers",
        "customer_phones",
        "customer_accounts",
        "agents",
        "skills",
        "agent_skills",
        "queues",
        "calls",
        "call_legs",
        "interactions",
        "events",
        "schema_migrations",
    } <= names
    assert [row["relname"] for row in rows if not row["comment"]] == []


async def test_every_timestamp_is_timestamptz(db: Database) -> None:
    naive = await db.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND data_type = 'timestamp without time zone'"
    )
    assert naive == []


async def test_changed_applied_file_is_an_error(schema_pools: PoolFactory, tmp_path: Path) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE t1 (id int);\nCOMMENT ON TABLE t1 IS 'x';\n")
    write(tmp_path, "0002_second.sql", "CREATE TABLE t2 (id int);")
    pool = await schema_pools()
    async with pool.acquire() as conn:
        assert len(await apply_migrations(conn, load_migrations(tmp_path))) == 2
        write(tmp_path, "0002_second.sql", "CREATE TABLE t2 (id bigint);")
        with pytest.raises(MigrationError, match=r"0002_second\.sql was changed after it was"):
            await apply_migrations(conn, load_migrations(tmp_path))
        # A checkout with CRLF line ends is not a change.
        write(tmp_path, "0002_second.sql", "CREATE TABLE t2 (id int);")
        (tmp_path / "0001_first.sql").write_bytes(
            b"CREATE TABLE t1 (id int);\r\nCOMMENT ON TABLE t1 IS 'x';\r\n"
        )
        assert await apply_migrations(conn, load_migrations(tmp_path)) == []


async def test_new_file_is_applied_after_the_others(
    schema_pools: PoolFactory, tmp_path: Path
) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE t1 (id int);")
    pool = await schema_pools()
    async with pool.acquire() as conn:
        await apply_migrations(conn, load_migrations(tmp_path))
        write(tmp_path, "0002_second.sql", "ALTER TABLE t1 ADD COLUMN name text;")
        applied = await apply_migrations(conn, load_migrations(tmp_path))
        assert [m.filename for m in applied] == ["0002_second.sql"]
        assert await conn.fetchval("SELECT count(*) FROM t1") == 0


async def test_version_unknown_to_the_code_is_an_error(
    schema_pools: PoolFactory, tmp_path: Path
) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE t1 (id int);")
    write(tmp_path, "0002_second.sql", "CREATE TABLE t2 (id int);")
    pool = await schema_pools()
    async with pool.acquire() as conn:
        await apply_migrations(conn, load_migrations(tmp_path))
        (tmp_path / "0002_second.sql").unlink()
        with pytest.raises(MigrationError, match=r"0002_second .*newer version"):
            await apply_migrations(conn, load_migrations(tmp_path))


async def test_failing_migration_rolls_back_and_names_file_and_line(
    schema_pools: PoolFactory, tmp_path: Path
) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE t1 (id int);")
    write(
        tmp_path,
        "0002_broken.sql",
        "CREATE TABLE t2 (id int);\n\nCREATE TABLE t3 (id nosuchtype);\n",
    )
    pool = await schema_pools()
    async with pool.acquire() as conn:
        with pytest.raises(MigrationError, match=r"0002_broken\.sql line 3 failed: .*nosuchtype"):
            await apply_migrations(conn, load_migrations(tmp_path))
        versions = await conn.fetch("SELECT version FROM schema_migrations")
        assert [r["version"] for r in versions] == [1]
        assert await conn.fetchval("SELECT to_regclass('t2')") is None
        # The lock was released: a corrected file applies.
        write(tmp_path, "0002_broken.sql", "CREATE TABLE t2 (id int);\n")
        assert len(await apply_migrations(conn, load_migrations(tmp_path))) == 1


def test_badly_named_or_duplicate_files_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "0001_first.sql", "")
    write(tmp_path, "1_second.sql", "")
    write(tmp_path, "0001_again.sql", "")
    write(tmp_path, "README.txt", "not a migration")
    with pytest.raises(MigrationError) as raised:
        load_migrations(tmp_path)
    message = str(raised.value)
    assert "1_second.sql: migration file names must be NNNN_lowercase_name.sql" in message
    assert "0001_first.sql: version 1 already used by 0001_again.sql" in message
    assert "README" not in message


async def test_lock_wait_is_bounded(schema_pools: PoolFactory, tmp_path: Path) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE t1 (id int);")
    pool = await schema_pools()
    holder = await pool.acquire()
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        async with pool.acquire() as conn:
            with pytest.raises(MigrationError, match="held the migration lock"):
                await apply_migrations(conn, load_migrations(tmp_path), lock_timeout=0.3)
    finally:
        await holder.execute("SELECT pg_advisory_unlock_all()")
        await pool.release(holder)
