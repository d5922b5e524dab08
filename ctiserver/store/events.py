"""The event log writer: `append` never blocks; a background task writes batches.

Appended events wait in memory, in order, and the writer task inserts them
in batches (one `INSERT ... SELECT FROM unnest(...)` per batch, one round
trip). When PostgreSQL fails, the failure is logged once, the writer retries
with backoff, and events keep arriving in memory. Past `memory_cap` events the
oldest are moved to an append-only JSONL spill file in the data folder; the
writer replays that file before anything newer, so events reach the table in
the order they were appended. A file left by a process that died is replayed
at the next start. `close()` saves whatever is still in memory to the file.

Every event carries a UUID key and the table has a unique index on it, with
ON CONFLICT DO NOTHING on insert: replaying a file whose first part was
already written, or an insert whose commit we never heard back, stores
nothing twice.

`append_durable` is for the events a caller is about to promise are safe (an
agent's wrap-up): it waits briefly for the table and, when the database does
not confirm in time (or is known to be failing), writes a copy of the event,
with every event appended before it and not yet written, to
`events-durable.jsonl` with fsync before returning. The event stays in memory
and reaches the table the usual way; the copy only matters if the process
dies first: `start()` appends that file to the spill file (after what the
spill already held, so the order is kept) and the duplicates it brings are
skipped by key. The file is removed once every event in it is in the table.

Events are checked at `append` (a tz-aware time, JSON-able payload, no NUL,
valid UTF-8), so a bad one fails in its caller, not in the writer. An event the
database still rejects (a data or constraint error) is moved to
`events-rejected.jsonl` with the error, so it cannot hold up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID, uuid4

import asyncpg

from ctiserver.lifecycle import Service
from ctiserver.store.database import Database

log = logging.getLogger(__name__)

SPILL_FILE = "events-spill.jsonl"
DURABLE_FILE = "events-durable.jsonl"
REJECTED_FILE = "events-rejected.jsonl"
# How long append_durable waits for the table before it writes the event to disk.
DURABLE_WAIT_S = 1.0
_LOCK_SUFFIX = ".lock"

_INSERT = """
INSERT INTO events (event_key, occurred_at, type, call_id, agent_id, queue_id, payload)
SELECT k, o, t, c, a, q, p::jsonb
FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[]) AS u(k, o, t, c, a, q, p)
ON CONFLICT (event_key) DO NOTHING
"""
# The database refused these rows for what they hold: retrying will not help.
_ROW_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, UnicodeError)
# The database is down, restarting or unreachable: expected, no traceback.
_OUTAGE_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """One fact for the event log.

    `call_id`, `agent_id` and `queue_id` are the ids the emitter knows (the
    Asterisk linkedid, the agent's login, the queue's name). `key` makes the
    event idempotent: appending the same Event twice stores it once.
    """

    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    call_id: str | None = None
    agent_id: str | None = None
    queue_id: str | None = None
    occurred_at: datetime = field(default_factory=_now)
    key: UUID = field(default_factory=uuid4)


# Called synchronously by `append` with every accepted event (see EventLog.add_observer).
EventObserver = Callable[[Event], None]


class EventLogError(Exception):
    """The spill file is held by another event log, or a flush was cut short by close()."""


class Durability(StrEnum):
    """Where append_durable found the event safe."""

    DATABASE = "database"  # in the events table
    DISK = "disk"  # fsynced to the data folder; it reaches the table later


@dataclass(frozen=True, slots=True)
class EventLogStats:
    """Counters for health pages and metrics."""

    buffered: int  # events in memory, not yet written
    spill_bytes: int  # bytes of the spill file still to replay
    written: int  # rows inserted
    duplicates: int  # rows skipped because their key was already stored
    rejected: int  # rows moved to the rejected file
    batches: int  # INSERT statements that succeeded
    failing_since: datetime | None  # start of the current outage, if any


class _Row(NamedTuple):
    seq: int  # order of append in this process; 0 for rows read from the spill file
    key: UUID
    occurred_at: datetime
    type: str
    call_id: str | None
    agent_id: str | None
    queue_id: str | None
    payload: str  # JSON text of an object


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _check_text(what: str, value: str) -> None:
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character, which PostgreSQL text cannot hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid UTF-8 ({exc.reason})") from exc


def _find_nul(value: Any, path: str) -> str | None:
    """The path of the first string (or key) in `value` holding a NUL, else None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str) and "\x00" in k:
                return f"{path} key {k!r}"
            found = _find_nul(v, f"{path}.{k}")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _find_nul(v, f"{path}[{i}]")
            if found:
                return found
    return None


def _make_row(seq: int, event: Event) -> _Row:
    """Check `event` and turn it into a row; ValueError/TypeError say what is wrong."""
    if not isinstance(event.type, str) or not event.type:
        raise ValueError(f"event type must be a non-empty string, got {event.type!r}")
    _check_text("event type", event.type)
    for name in ("call_id", "agent_id", "queue_id"):
        value = getattr(event, name)
        if value is not None:
            if not isinstance(value, str):
                raise TypeError(f"event {event.type}: {name} must be a str, got {value!r}")
            _check_text(f"event {event.type}: {name}", value)
    if not isinstance(event.occurred_at, datetime) or event.occurred_at.tzinfo is None:
        raise ValueError(f"event {event.type}: occurred_at must be a timezone-aware datetime")
    if not isinstance(event.payload, Mapping):
        raise TypeError(f"event {event.type}: payload must be a mapping")
    try:
        payload = json.dumps(
            event.payload,
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
            default=_json_default,
        )
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"event {event.type}: payload is not JSON: {exc}") from exc
    # jsonb refuses \u0000 too; walk the payload only when the text shows one.
    if "\\u0000" in payload:
        found = _find_nul(event.payload, "payload")
        if found:
            raise ValueError(f"event {event.type}: {found} contains a NUL character")
    _check_text(f"event {event.type}: payload", payload)
    return _Row(
        seq,
        event.key,
        event.occurred_at,
        event.type,
        event.call_id,
        event.agent_id,
        event.queue_id,
        payload,
    )


def _spill_line(row: _Row) -> str:
    head = json.dumps(
        {
            "key": str(row.key),
            "occurred_at": row.occurred_at.isoformat(),
            "type": row.type,
            "call_id": row.call_id,
            "agent_id": row.agent_id,
            "queue_id": row.queue_id,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    # The payload is JSON text already: splice it in rather than parse it again.
    return head[:-1] + ',"payload":' + row.payload + "}\n"


def _row_from_line(line: str) -> _Row:
    data = json.loads(line)
    event = Event(
        type=data["type"],
        payload=data["payload"],
        call_id=data.get("call_id"),
        agent_id=data.get("agent_id"),
        queue_id=data.get("queue_id"),
        occurred_at=datetime.fromisoformat(data["occurred_at"]),
        key=UUID(data["key"]),
    )
    return _make_row(0, event)


class EventLog(Service):
    """Buffered, batched, outage-proof writer of the `events` table.

    `await start()` takes the spill file of `data_dir` (one process at a time)
    and starts the writer task, which first replays a file left by an earlier
    run. `append()` is synchronous and never blocks nor raises for the
    database's sake. `await flush()` waits until everything appended so far
    is in the table. `await close()` flushes for at most `grace_s` seconds,
    stops the task and saves anything left to the spill file.

    `memory_cap` is soft: the writer enforces it whenever it is not waiting
    on the database, which it does at most `write_timeout` seconds at a time.
    """

    def __init__(
        self,
        db: Database,
        data_dir: Path,
        *,
        batch_size: int = 500,
        memory_cap: int = 10_000,
        linger: float = 0.02,
        write_timeout: float = 10.0,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
    ) -> None:
        if batch_size < 1 or memory_cap < 1:
            raise ValueError("batch_size and memory_cap must be at least 1")
        self._db = db
        self.spill_path = data_dir / SPILL_FILE
        self.durable_path = data_dir / DURABLE_FILE
        self.rejected_path = data_dir / REJECTED_FILE
        self._batch_size = batch_size
        self._memory_cap = memory_cap
        self._linger = linger
        self._write_timeout = write_timeout
        self._retry_initial = retry_initial
        self._retry_max = retry_max

        self._memory: deque[_Row] = deque()
        self._last_seq = 0  # seq of the last append
        self._durable_seq = 0  # every seq up to this one is in the table (or rejected)
        self._spill_offset = 0  # replay position in the spill file
        self._spill_size = 0  # bytes in the spill file
        self._durable_max_seq = 0  # the newest seq copied to the durable file (0: no file)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        # File work runs in worker threads, and a write cut short by close()
        # goes on running: this keeps such writes from interleaving.
        self._file_lock = threading.Lock()
        self._closed = False
        self._observers: list[EventObserver] = []

        self._failing_since: datetime | None = None
        self._failing_since_mono = 0.0
        self._spill_warned = False
        self._written = 0
        self._duplicates = 0
        self._rejected = 0
        self._batches = 0

    # -- public API ---------------------------------------------------------

    async def start(self) -> None:
        """Take the spill file and start the writer task (it replays an old file first)."""
        if self._task is not None:
            raise RuntimeError("EventLog already started")
        if self._closed:
            raise RuntimeError("EventLog is closed")
        await asyncio.to_thread(self._open_spill)
        if self._spill_size:
            # One seq stands for the old file, so that flush() waits for it too.
            self._last_seq += 1
            log.info(
                "event log: %s holds %d bytes of events not yet in PostgreSQL; replaying",
                self.spill_path,
                self._spill_size,
            )
        self._task = asyncio.create_task(self._run(), name="ctiserver.store.events.writer")

    def append(self, event: Event) -> None:
        """Queue `event` for writing. Raises ValueError/TypeError if the event is malformed."""
        if self._closed:
            raise RuntimeError("EventLog is closed")
        row = _make_row(self._last_seq + 1, event)
        self._last_seq = row.seq
        self._memory.append(row)
        self._wakeup.set()
        for observer in tuple(self._observers):
            try:
                observer(event)
            except Exception:  # an observer's fault never reaches the emitter
                log.exception("event log: observer %r failed on %s", observer, event.type)

    def add_observer(self, observer: EventObserver) -> Callable[[], None]:
        """Call `observer(event)` with every event accepted by `append` (and so
        `append_durable`), synchronously, in append order; returns its remover.

        An observer runs inside its emitter's `append`: it must be quick (queue
        the event, never wait). Its exceptions are logged, never raised.
        """
        self._observers.append(observer)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._observers.remove(observer)

        return remove

    async def append_durable(self, event: Event, *, wait_s: float = DURABLE_WAIT_S) -> Durability:
        """Append `event` and return once it is in the table or fsynced to disk.

        Waits at most `wait_s` for the table (not at all while writes are
        failing); then writes a copy of the event to the durable file, without
        blocking the loop. The order and the one-row-per-key of the table are
        those of `append`. ValueError/TypeError for a malformed event (as
        `append`); OSError or EventLogError when the event could be made safe
        neither way (it is still in memory and may yet reach the table).
        """
        self.append(event)
        seq = self._last_seq
        if self._task is not None and self._failing_since is None:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((seq, future))
            self._wakeup.set()
            try:
                async with asyncio.timeout(wait_s):
                    await asyncio.shield(future)
                return Durability.DATABASE
            except TimeoutError:
                pass
            except EventLogError:  # closed meanwhile: its memory went to the spill file
                if self._durable_seq >= seq:
                    return Durability.DATABASE
            finally:
                future.cancel()
        if self._durable_seq >= seq:
            return Durability.DATABASE
        if self._lock_fd is None:
            raise EventLogError("EventLog not started or closed: no file to keep the event in")
        # With every event appended before it and not yet written: after a crash the
        # table gets them all, in order, rather than this one with a gap before it.
        rows = self._not_yet_copied(seq)
        await asyncio.to_thread(self._write_durable, rows)
        # Written to the table meanwhile: the copy is not needed (or is a harmless duplicate).
        await self._drop_durable_file()
        return Durability.DISK

    def _not_yet_copied(self, seq: int) -> list[_Row]:
        """The rows in memory up to `seq` not already in the durable file.

        Memory holds consecutive sequence numbers (appended at the right, written
        or spilled from the left), so the rows are a slice of it: taken without
        a Python-level pass over the backlog, which grows when the table lags and
        made each wrap-up cost O(backlog) just then (bench/e2e.py).
        """
        memory = self._memory
        if not memory:
            return []
        first = memory[0].seq
        start = max(0, self._durable_max_seq + 1 - first)
        stop = min(len(memory), seq - first + 1)
        rows = list(itertools.islice(memory, start, stop)) if stop > start else []
        if rows and (rows[0].seq != first + start or rows[-1].seq != first + stop - 1):
            return [row for row in memory if row.seq <= seq]  # not consecutive after all
        return rows

    async def flush(self) -> None:
        """Wait until every event appended so far is in the table.

        Waits as long as the database is down: bound it with asyncio.timeout.
        """
        target = self._last_seq
        if self._durable_seq >= target:
            return
        if self._closed:
            raise EventLogError("EventLog is closed; unwritten events are in the spill file")
        if self._task is None:
            raise RuntimeError("EventLog.flush() before start()")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._wakeup.set()
        try:
            await future
        finally:
            future.cancel()  # no-op once resolved; drops the wait if we were cancelled

    async def close(self, grace_s: float = 5.0) -> None:
        """Flush for at most `grace_s` s, stop the writer, save what is left to the spill file."""
        if self._closed:
            return
        try:
            if self._task is not None:
                try:
                    async with asyncio.timeout(grace_s):
                        await self.flush()
                except TimeoutError:
                    log.warning(
                        "event log: PostgreSQL did not take every event within %.1f s of close",
                        grace_s,
                    )
        finally:
            self._closed = True
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            if self._memory:
                await self._save_memory_on_close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            for _, future in self._waiters:
                if not future.done():
                    future.set_exception(
                        EventLogError("EventLog closed before these events reached PostgreSQL")
                    )
            self._waiters.clear()

    async def _save_memory_on_close(self) -> None:
        rows = list(self._memory)
        self._memory.clear()
        try:
            if self._lock_fd is None:
                await asyncio.to_thread(self._open_spill)
            await asyncio.to_thread(self._write_spill, rows)
        except (OSError, EventLogError) as exc:
            # The one way events get lost: say so, with how many.
            log.critical(
                "event log: %d events not yet in PostgreSQL could not be saved to %s (%s); "
                "they are lost",
                len(rows),
                self.spill_path,
                exc,
            )
            return
        log.warning(
            "event log: %d events not yet in PostgreSQL saved to %s; "
            "they are written at the next start",
            len(rows),
            self.spill_path,
        )

    def stats(self) -> EventLogStats:
        return EventLogStats(
            buffered=len(self._memory),
            spill_bytes=self._spill_size - self._spill_offset,
            written=self._written,
            duplicates=self._duplicates,
            rejected=self._rejected,
            batches=self._batches,
            failing_since=self._failing_since,
        )

    # -- the writer task ----------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._retry_initial
        retry_at = 0.0
        while True:
            self._wakeup.clear()
            await self._spill_excess()
            if not self._has_work():
                await self._wakeup.wait()
                # Let a burst gather into one batch, unless someone is waiting.
                if not self._waiters and len(self._memory) < self._batch_size:
                    await asyncio.sleep(self._linger)
                continue
            wait = retry_at - loop.time()
            if wait > 0:
                # Wake early only to spill if memory passes the cap.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                continue
            try:
                await self._write_once()
            except Exception as exc:  # the writer must outlive any failure; it retries
                self._note_failure(exc)
                retry_at = loop.time() + delay
                delay = min(delay * 2, self._retry_max)
            else:
                self._note_success()
                delay = self._retry_initial
                retry_at = 0.0
                await self._drop_durable_file()

    def _has_work(self) -> bool:
        return bool(self._memory) or self._spill_offset < self._spill_size

    async def _write_once(self) -> None:
        """Write one batch: from the spill file while it has any, else from memory."""
        if self._spill_offset < self._spill_size:
            rows, offset = await asyncio.to_thread(self._read_spill, self._spill_offset)
            if rows:
                await self._insert(rows)
            self._spill_offset = offset
            if offset >= self._spill_size:
                await asyncio.to_thread(self._remove_spill)
                self._spill_offset = self._spill_size = 0
                self._mark_durable()
            return
        batch = list(itertools.islice(self._memory, self._batch_size))
        await self._insert(batch)
        for _ in batch:
            self._memory.popleft()
        self._mark_durable()

    async def _insert(self, rows: list[_Row]) -> None:
        async with self._db.pool.acquire(timeout=self._write_timeout) as conn:
            try:
                status = await conn.execute(_INSERT, *_columns(rows), timeout=self._write_timeout)
            except _ROW_ERRORS:
                await self._insert_singly(conn, rows)
                return
        self._count(len(rows), status)

    async def _insert_singly(self, conn: Any, rows: list[_Row]) -> None:
        """Insert row by row, moving the ones the database refuses to the rejected file."""
        for row in rows:
            try:
                status = await conn.execute(_INSERT, *_columns([row]), timeout=self._write_timeout)
            except _ROW_ERRORS as exc:
                error = f"{type(exc).__name__}: {exc}"
                await asyncio.to_thread(self._write_rejected, row, error)
                self._rejected += 1
                log.error(
                    "event log: PostgreSQL refused event %s (%s): %s; moved to %s",
                    row.key,
                    row.type,
                    error,
                    self.rejected_path,
                )
            else:
                self._count(1, status)

    def _count(self, rows: int, status: str) -> None:
        inserted = int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <n>"
        self._written += inserted
        self._duplicates += rows - inserted
        self._batches += 1

    async def _spill_excess(self) -> None:
        if len(self._memory) <= self._memory_cap:
            return
        # Down to half the cap, so that the next spill is not one event away.
        count = len(self._memory) - self._memory_cap // 2
        rows = list(itertools.islice(self._memory, count))
        try:
            await asyncio.to_thread(self._write_spill, rows)
        except OSError as exc:
            log.error(
                "event log: cannot spill to %s (%s); %d events stay in memory",
                self.spill_path,
                exc,
                len(self._memory),
            )
            return
        for _ in rows:
            self._memory.popleft()
        if not self._spill_warned:
            self._spill_warned = True
            log.warning(
                "event log: more than %d events waiting; spilling the oldest to %s",
                self._memory_cap,
                self.spill_path,
            )

    def _mark_durable(self) -> None:
        """Advance the durable mark; call only while the spill file is empty.

        With no file, whatever is not in memory has been written, and memory
        holds the newest events: everything before its first one is durable.
        """
        seq = self._memory[0].seq - 1 if self._memory else self._last_seq
        if seq <= self._durable_seq:
            return
        self._durable_seq = seq
        waiting: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if future.done():
                continue
            if target <= seq:
                future.set_result(None)
            else:
                waiting.append((target, future))
        self._waiters = waiting

    async def _drop_durable_file(self) -> None:
        """Remove the durable file once every event copied to it is in the table."""
        if 0 < self._durable_max_seq <= self._durable_seq:
            try:
                await asyncio.to_thread(self._remove_durable, self._durable_seq)
            except OSError as exc:  # kept: a duplicate at the next start, nothing lost
                log.warning("event log: cannot remove %s: %s", self.durable_path, exc)

    def _note_failure(self, exc: Exception) -> None:
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._failing_since is not None:
            log.debug("event log: still failing: %s", cause)
            return
        self._failing_since = datetime.now(UTC)
        self._failing_since_mono = time.monotonic()
        log.error(
            "event log: cannot write to PostgreSQL at %s (%s); retrying with backoff up to "
            "%.0f s. Events are kept in memory, past %d of them in %s",
            self._db.target,
            cause,
            self._retry_max,
            self._memory_cap,
            self.spill_path,
            exc_info=not isinstance(exc, _OUTAGE_ERRORS),
        )

    def _note_success(self) -> None:
        if self._failing_since is None:
            return
        log.warning(
            "event log: writing to PostgreSQL again after %.1f s of failures",
            time.monotonic() - self._failing_since_mono,
        )
        self._failing_since = None
        self._spill_warned = False

    # -- the spill file (these run in worker threads) -----------------------

    def _open_spill(self) -> None:
        self.spill_path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.spill_path.with_name(self.spill_path.name + _LOCK_SUFFIX)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EventLogError(
                f"{self.spill_path} is in use by another event log (lock {lock_path}); "
                "two ctiserver processes cannot share one data folder's event spill file"
            ) from None
        self._lock_fd = fd
        with self._file_lock:
            self._spill_size = _drop_torn_tail(self.spill_path)
            self._spill_offset = 0
            self._adopt_durable_file()

    def _adopt_durable_file(self) -> None:
        """Move the durable file of an earlier run to the end of the spill file.

        Its events are copies of events appended before anything of this run,
        and the spill file holds the oldest of that run's unwritten events: after
        them, the order is kept; those already in the table are skipped by key.
        A crash half-way leaves both files: the copies are duplicates, skipped
        the same way. The caller holds the file lock.
        """
        size = _drop_torn_tail(self.durable_path)
        if size == 0:
            self.durable_path.unlink(missing_ok=True)
            return
        data = self.durable_path.read_bytes()[:size]
        with open(self.spill_path, "ab") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        self._spill_size += len(data)
        self.durable_path.unlink()
        log.info(
            "event log: %d bytes of events kept in %s by an earlier run; replaying them",
            len(data),
            self.durable_path,
        )

    def _write_durable(self, rows: list[_Row]) -> None:
        """Append the rows not copied yet (they are in append order) and fsync."""
        with self._file_lock:
            rows = [row for row in rows if row.seq > self._durable_max_seq]
            if not rows:
                return  # a later copy took them along already
            data = "".join(_spill_line(row) for row in rows).encode("utf-8")
            new_file = not self.durable_path.exists()
            with open(self.durable_path, "ab") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            if new_file:
                _fsync_folder(self.durable_path.parent)
            self._durable_max_seq = rows[-1].seq

    def _remove_durable(self, durable_seq: int) -> None:
        with self._file_lock:
            # Checked again under the lock: a copy written meanwhile keeps the file.
            if 0 < self._durable_max_seq <= durable_seq:
                self.durable_path.unlink(missing_ok=True)
                self._durable_max_seq = 0

    def _write_spill(self, rows: Iterable[_Row]) -> None:
        data = "".join(_spill_line(row) for row in rows).encode("utf-8")
        with self._file_lock:
            with open(self.spill_path, "ab") as file:
                file.write(data)
                file.flush()
                # The file is where events survive an outage: make it so.
                os.fsync(file.fileno())
            self._spill_size += len(data)

    def _read_spill(self, offset: int) -> tuple[list[_Row], int]:
        """Up to one batch of rows from `offset`; returns them and the next offset."""
        rows: list[_Row] = []
        with self._file_lock, open(self.spill_path, "rb") as file:
            file.seek(offset)
            while len(rows) < self._batch_size and offset < self._spill_size:
                raw = file.readline()
                if not raw:
                    break
                line_at = offset
                offset += len(raw)
                if not raw.strip():
                    continue
                try:
                    rows.append(_row_from_line(raw.decode("utf-8")))
                except (ValueError, TypeError, KeyError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    log.error(
                        "event log: %s byte %d: unreadable event (%s); moved to %s",
                        self.spill_path,
                        line_at,
                        error,
                        self.rejected_path,
                    )
                    self._append_rejected(raw.decode("utf-8", "replace").rstrip("\n"), error)
                    self._rejected += 1
        return rows, offset

    def _remove_spill(self) -> None:
        with self._file_lock:
            self.spill_path.unlink(missing_ok=True)

    def _write_rejected(self, row: _Row, error: str) -> None:
        with self._file_lock:
            self._append_rejected(_spill_line(row).rstrip("\n"), error)

    def _append_rejected(self, line: str, error: str) -> None:
        """Append to the rejected file; the caller holds the file lock."""
        record = json.dumps({"error": error, "event": line}, ensure_ascii=False) + "\n"
        with open(self.rejected_path, "a", encoding="utf-8") as file:
            file.write(record)


def _columns(rows: list[_Row]) -> list[list[Any]]:
    return [
        [row.key for row in rows],
        [row.occurred_at for row in rows],
        [row.type for row in rows],
        [row.call_id for row in rows],
        [row.agent_id for row in rows],
        [row.queue_id for row in rows],
        [row.payload for row in rows],
    ]


def _fsync_folder(folder: Path) -> None:
    """Make a file just created in `folder` survive a crash (its directory entry)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_torn_tail(path: Path) -> int:
    """Cut a last line left half-written by a crash; return the file's size (0 if none)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    with open(path, "r+b") as file:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            file.seek(start)
            chunk = file.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            log.warning(
                "event log: %s ends with %d bytes of a half-written event; dropped",
                path,
                size - keep,
            )
            file.truncate(keep)
    return keep
