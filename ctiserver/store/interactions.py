"""Interactions: the contact history of a customer, and the wrap-up of each call (SQL only).

An interaction is one contact (a call, a callback, an e-mail...) and how it
ended. The ACD names calls by a text id (the caller channel's Asterisk
Uniqueid), kept in `call_key`: one interaction per call and agent (migration
0006), so writing an agent's interaction of a call again (a wrap-up submitted
twice, a re-applied journal entry) updates it instead of adding a second one,
while each agent of a transferred call keeps their own.

Queues and agents are kept by name and login (the ACD may run from a TOML
file with no rows for them); `queue_id`/`agent_id` are filled in when the
rows exist, and history reads the names from either.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final

from ctiserver.store.customers import (
    UNSET,
    CustomerFieldError,
    Unset,
    check_channel,
    check_notes,
)
from ctiserver.store.database import Connection, Database, in_transaction

DIRECTIONS: Final = frozenset({"inbound", "outbound"})
HISTORY_LIMIT_MAX = 500


@dataclass(frozen=True, slots=True)
class Interaction:
    id: int
    customer_id: int | None
    call_key: str | None  # the ACD's call id
    channel: str
    direction: str
    address: str | None  # caller number, e-mail address...
    queue_name: str | None
    agent_login: str | None
    agent_name: str | None  # from the agents row, when there is one
    disposition: str | None  # the wrap-up code
    notes: str
    resolved: bool | None  # None before wrap-up
    recording_path: str | None
    started_at: datetime
    ended_at: datetime | None
    wrap_up_at: datetime | None
    follow_up_at: datetime | None  # a callback the agent promised
    created_at: datetime
    updated_at: datetime


_FIELDS = fields(Interaction)

_SELECT = """
SELECT i.id, i.customer_id, i.call_key, i.channel, i.direction, i.address,
       coalesce(i.queue_name, q.name) AS queue_name,
       coalesce(i.agent_login, a.login) AS agent_login,
       nullif(a.name, '') AS agent_name,
       i.disposition, i.notes, i.resolved, i.recording_path, i.started_at, i.ended_at,
       i.wrap_up_at, i.follow_up_at, i.created_at, i.updated_at
FROM interactions i
LEFT JOIN queues q ON q.id = i.queue_id
-- By login too: an agents row created after the interaction (acd import) still names it.
LEFT JOIN agents a ON a.id = i.agent_id OR (i.agent_id IS NULL AND a.login = i.agent_login)
"""


def _interaction(row: Any) -> Interaction:
    return Interaction(**{field.name: row[field.name] for field in _FIELDS})


def _check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise CustomerFieldError(
            "direction", f"direction {direction!r} is not one of inbound, outbound"
        )
    return direction


def _text(value: str | None) -> str | None:
    """None for a missing or blank text (the columns refuse '')."""
    return value.strip() or None if value is not None else None


# The row of (call_key, agent_login) is updated when there is one. Columns
# given as None keep what the row has: a later writer adds to what an earlier
# one wrote, without having to repeat it. started_at keeps the earliest.
_UPSERT = """
INSERT INTO interactions (
    call_key, customer_id, channel, direction, address, queue_name, queue_id,
    agent_login, agent_id, disposition, notes, resolved, recording_path,
    started_at, ended_at, wrap_up_at, follow_up_at)
VALUES (
    $1, $2, $3, $4, $5, $6, (SELECT id FROM queues WHERE name = $6),
    $7, (SELECT id FROM agents WHERE login = $7), $8, coalesce($9, ''), $10, $11,
    $12, $13, $14, $15)
ON CONFLICT (call_key, (coalesce(agent_login, ''))) DO UPDATE SET
    customer_id = coalesce(EXCLUDED.customer_id, interactions.customer_id),
    channel = EXCLUDED.channel,
    direction = EXCLUDED.direction,
    address = coalesce(EXCLUDED.address, interactions.address),
    queue_name = coalesce(EXCLUDED.queue_name, interactions.queue_name),
    queue_id = CASE WHEN EXCLUDED.queue_name IS NULL THEN interactions.queue_id
                    ELSE EXCLUDED.queue_id END,
    agent_id = coalesce(EXCLUDED.agent_id, interactions.agent_id),
    disposition = coalesce(EXCLUDED.disposition, interactions.disposition),
    notes = coalesce($9, interactions.notes),
    resolved = coalesce(EXCLUDED.resolved, interactions.resolved),
    recording_path = coalesce(EXCLUDED.recording_path, interactions.recording_path),
    started_at = least(EXCLUDED.started_at, interactions.started_at),
    ended_at = coalesce(EXCLUDED.ended_at, interactions.ended_at),
    wrap_up_at = coalesce(EXCLUDED.wrap_up_at, interactions.wrap_up_at),
    follow_up_at = coalesce(EXCLUDED.follow_up_at, interactions.follow_up_at)
RETURNING id
"""


async def record_interaction(
    db: Database | Connection,
    *,
    channel: str,
    direction: str,
    started_at: datetime,
    call_key: str | None = None,
    customer_id: int | None = None,
    address: str | None = None,
    queue_name: str | None = None,
    agent_login: str | None = None,
    disposition: str | None = None,
    notes: str | None = None,
    resolved: bool | None = None,
    recording_path: str | None = None,
    ended_at: datetime | None = None,
    wrap_up_at: datetime | None = None,
    follow_up_at: datetime | None = None,
) -> Interaction:
    """Write an interaction and return it as stored.

    With a `call_key` that already has an interaction of the same
    `agent_login` (or, without one, an interaction with no agent), that one
    is updated: the values given replace the stored ones, those left None are
    kept (so submitting the same wrap-up twice leaves one row as after the
    first). Another agent of the same call gets a row of their own.
    CustomerFieldError for an unknown channel or direction, notes over
    NOTES_MAX, or ended_at before started_at; the database refuses an
    unknown customer_id (asyncpg.ForeignKeyViolationError).
    """
    check_channel(channel, "channel")
    _check_direction(direction)
    if notes is not None:
        check_notes(notes)
    if ended_at is not None and ended_at < started_at:
        raise CustomerFieldError("ended_at", "ended_at is before started_at")
    async with in_transaction(db) as conn:
        interaction_id = await conn.fetchval(
            _UPSERT,
            _text(call_key),
            customer_id,
            channel,
            direction,
            _text(address),
            _text(queue_name),
            _text(agent_login),
            _text(disposition),
            notes,
            resolved,
            _text(recording_path),
            started_at,
            ended_at,
            wrap_up_at,
            follow_up_at,
        )
        row = await conn.fetchrow(_SELECT + " WHERE i.id = $1", interaction_id)
    return _interaction(row)


async def interaction_for_call(
    db: Database | Connection, call_key: str, agent_login: str | None = None
) -> Interaction | None:
    """The interaction of the ACD call `call_key`: `agent_login`'s, or without one the
    latest written of the call (its last agent's after a transfer); None if none was."""
    row = await db.fetchrow(
        _SELECT + " WHERE i.call_key = $1 AND ($2::text IS NULL OR i.agent_login = $2)"
        " ORDER BY i.started_at DESC, i.id DESC LIMIT 1",
        call_key,
        agent_login,
    )
    return None if row is None else _interaction(row)


async def interactions_for_call(db: Database | Connection, call_key: str) -> list[Interaction]:
    """Every interaction of the ACD call `call_key` (one per agent who handled it), oldest
    first."""
    rows = await db.fetch(_SELECT + " WHERE i.call_key = $1 ORDER BY i.started_at, i.id", call_key)
    return [_interaction(row) for row in rows]


@dataclass(frozen=True, slots=True)
class ScheduledFollowUp:
    """A follow-up an agent promised at wrap-up, still to come."""

    call_key: str | None
    address: str | None
    queue_name: str | None
    follow_up_at: datetime
    wrap_up_at: datetime | None
    customer_name: str | None


async def scheduled_follow_ups(
    db: Database | Connection, agent_login: str, limit: int = 200
) -> list[ScheduledFollowUp]:
    """The agent's promised follow-ups still ahead (follow_up_at after now), soonest first."""
    rows = await db.fetch(
        "SELECT i.call_key, i.address, i.queue_name, i.follow_up_at, i.wrap_up_at,"
        " c.name AS customer_name FROM interactions i"
        " LEFT JOIN customers c ON c.id = i.customer_id"
        " WHERE i.agent_login = $1 AND i.follow_up_at > now()"
        " ORDER BY i.follow_up_at LIMIT $2",
        agent_login,
        limit,
    )
    return [
        ScheduledFollowUp(
            row["call_key"],
            row["address"],
            row["queue_name"],
            row["follow_up_at"],
            row["wrap_up_at"],
            row["customer_name"],
        )
        for row in rows
    ]


async def get_interaction(db: Database | Connection, interaction_id: int) -> Interaction | None:
    row = await db.fetchrow(_SELECT + " WHERE i.id = $1", interaction_id)
    return None if row is None else _interaction(row)


async def customer_history(
    db: Database | Connection, customer_id: int, limit: int = 20
) -> list[Interaction]:
    """The customer's last `limit` interactions, newest first (ties: latest written first)."""
    if not 1 <= limit <= HISTORY_LIMIT_MAX:
        raise CustomerFieldError("limit", f"limit must be between 1 and {HISTORY_LIMIT_MAX}")
    rows = await db.fetch(
        _SELECT + " WHERE i.customer_id = $1 ORDER BY i.started_at DESC, i.id DESC LIMIT $2",
        customer_id,
        limit,
    )
    return [_interaction(row) for row in rows]


async def update_interaction(
    db: Database | Connection,
    interaction_id: int,
    *,
    customer_id: int | Unset | None = UNSET,
    disposition: str | Unset | None = UNSET,
    notes: str | Unset = UNSET,
    resolved: bool | Unset | None = UNSET,
    recording_path: str | Unset | None = UNSET,
    ended_at: datetime | Unset | None = UNSET,
    wrap_up_at: datetime | Unset | None = UNSET,
    follow_up_at: datetime | Unset | None = UNSET,
) -> Interaction | None:
    """Set the fields given (UNSET: keep; None: clear); None when there is no such row.

    For a wrap-up of a call, `record_interaction(call_key=...)` is the one
    call to make (it creates or updates); this is for an interaction known
    by id, e.g. a supervisor correcting a disposition or linking a customer.
    """
    columns: dict[str, Any] = {}
    if not isinstance(customer_id, Unset):
        columns["customer_id"] = customer_id
    if not isinstance(disposition, Unset):
        columns["disposition"] = _text(disposition)
    if not isinstance(notes, Unset):
        columns["notes"] = check_notes(notes)
    if not isinstance(resolved, Unset):
        columns["resolved"] = resolved
    if not isinstance(recording_path, Unset):
        columns["recording_path"] = _text(recording_path)
    for name, instant in (
        ("ended_at", ended_at),
        ("wrap_up_at", wrap_up_at),
        ("follow_up_at", follow_up_at),
    ):
        if not isinstance(instant, Unset):
            columns[name] = instant
    assignments = [f"{column} = ${n}" for n, column in enumerate(columns, start=2)]
    async with in_transaction(db) as conn:
        found = await conn.fetchval(
            f"UPDATE interactions SET {', '.join(assignments) or 'updated_at = now()'}"
            " WHERE id = $1 RETURNING id",
            interaction_id,
            *columns.values(),
        )
        if found is None:
            return None
        row = await conn.fetchrow(_SELECT + " WHERE i.id = $1", interaction_id)
    return _interaction(row)
