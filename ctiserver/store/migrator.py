"""Versioned SQL migrations: load `migrations/NNNN_name.sql`, apply the pending ones.

Each file is applied once, in version order, in its own transaction, and
recorded in `schema_migrations` with a checksum of its text. A session-level
advisory lock makes concurrent starts safe: the second process waits, then
finds nothing left to do. A file changed after it was applied, or a database
that has versions this code does not know (a newer ctiserver migrated it), is
an error: the schema is not what the code expects, and guessing is worse.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant that names "ctiserver schema migrations" among the
# advisory locks of the database.
MIGRATION_LOCK_KEY = 0x43544953_4D494752  # "CTIS" "MIGR"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS
    'Schema versions applied by ctiserver.store.migrator, with the sha256 of each file.';
"""


class MigrationError(Exception):
    """The migrations cannot be applied; the message names the file and the cause."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def checksum(text: str) -> str:
    """sha256 of a migration's text, blind to CRLF versus LF line ends."""
    return hashlib.sha256(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def load_migrations(directory: Path | Traversable | None = None) -> list[Migration]:
    """Read the migration files of `directory` (default: the package's), in version order.

    Blocking (reads files): call it through asyncio.to_thread from the loop.
    A `.sql` file whose name does not follow NNNN_name.sql, or two files with
    one version, is an error rather than something silently skipped.
    """
    if directory is None:
        directory = resources.files("ctiserver.store").joinpath("migrations")
    found: dict[int, Migration] = {}
    errors: list[str] = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        match = _FILENAME.match(entry.name)
        if match is None:
            errors.append(f"{entry.name}: migration file names must be NNNN_lowercase_name.sql")
            continue
        version = int(match.group(1))
        if version in found:
            other = found[version].filename
            errors.append(f"{entry.name}: version {version} already used by {other}")
            continue
        text = entry.read_text(encoding="utf-8")
        found[version] = Migration(version, match.group(2), text, checksum(text))
    if errors:
        raise MigrationError(f"bad migration files in {directory}: " + "; ".join(errors))
    return [found[v] for v in sorted(found)]


def _error_line(sql: str, exc: Exception) -> str:
    """' line N' for a PostgreSQL error that reports a position in `sql`, else ''."""
    position = getattr(exc, "position", None)
    if not position:
        return ""
    try:
        offset = int(position) - 1
    except ValueError:
        return ""
    return f" line {sql.count(chr(10), 0, offset) + 1}"


async def apply_migrations(
    conn: Any,
    migrations: Sequence[Migration] | None = None,
    *,
    lock_timeout: float = 60.0,
    statement_timeout: float = 600.0,
) -> list[Migration]:
    """Apply the pending migrations over `conn` (an asyncpg connection); return those applied.

    Waits at most `lock_timeout` seconds for another process's run to finish.
    Re-running is a no-op. Raises MigrationError on a changed or unknown
    applied version, or when a migration fails (its transaction is rolled
    back, the ones before it stay applied).
    """
    if migrations is None:
        migrations = await asyncio.to_thread(load_migrations)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY, timeout=lock_timeout)
    except TimeoutError as exc:
        raise MigrationError(
            f"another process has held the migration lock for over {lock_timeout:.0f} s"
        ) from exc
    try:
        await conn.execute(_CREATE_TABLE, timeout=statement_timeout)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row for row in rows}
        _check_applied(applied, migrations)
        done: list[Migration] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            await _apply_one(conn, migration, statement_timeout)
            done.append(migration)
        return done
    finally:
        # A broken connection has released its session lock already.
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY, timeout=10)


def _check_applied(applied: dict[int, Any], migrations: Sequence[Migration]) -> None:
    known = {m.version: m for m in migrations}
    problems: list[str] = []
    for version, row in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            problems.append(
                f"the database has migration {version:04d}_{row['name']} that this ctiserver "
                "does not know (was it migrated by a newer version?)"
            )
        elif migration.checksum != row["checksum"]:
            problems.append(
                f"{migration.filename} was changed after it was applied "
                f"(applied checksum {row['checksum'][:12]}, file now {migration.checksum[:12]}); "
                "add a new migration instead of editing an applied one"
            )
    if problems:
        raise MigrationError("; ".join(problems))


async def _apply_one(conn: Any, migration: Migration, statement_timeout: float) -> None:
    log.info("applying migration %s", migration.filename)
    try:
        async with conn.transaction():
            await conn.execute(migration.sql, timeout=statement_timeout)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
                timeout=statement_timeout,
            )
    except asyncpg.PostgresError as exc:
        where = _error_line(migration.sql, exc)
        raise MigrationError(
            f"migration {migration.filename}{where} failed: {type(exc).__name__}: {exc}"
        ) from exc
