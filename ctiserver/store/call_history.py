"""What the event log says about earlier calls: the IVR path of a call, who took it,
its recording, who last served a customer, and the desktop's journaled wrap-ups
(SQL only).

The IVR and the ACD write facts as events (ivr.*, acd.*); these queries read
them back for the screen-pop, the post-call survey and the IVR's look-up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctiserver.store.customers import normalize_phone
from ctiserver.store.database import Connection, Database


@dataclass(frozen=True, slots=True)
class ConnectedAgent:
    agent_id: str
    queue: str


@dataclass(frozen=True, slots=True)
class JournaledWrapUp:
    """A wrap-up the desktop journaled (its event's payload), by call and agent."""

    call_id: str
    agent_id: str
    payload: Mapping[str, Any]


def _payload(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


async def ivr_record(db: Database | Connection, call_id: str) -> dict[str, Any] | None:
    """The IVR path and outcome of a call (the last `ivr.ended`), or None."""
    row = await db.fetchrow(
        "SELECT payload FROM events WHERE call_id = $1 AND type = 'ivr.ended'"
        " ORDER BY occurred_at DESC, id DESC LIMIT 1",
        call_id,
    )
    return None if row is None else _payload(row["payload"])


async def survey_answers(db: Database | Connection, call_id: str) -> list[dict[str, Any]]:
    """The survey answers given on a call, oldest first, each with the agent it rated."""
    rows = await db.fetch(
        "SELECT payload, agent_id, queue_id, occurred_at FROM events"
        " WHERE call_id = $1 AND type = 'ivr.survey' ORDER BY occurred_at, id",
        call_id,
    )
    return [
        {
            **_payload(row["payload"]),
            "agent_id": row["agent_id"],
            "queue": row["queue_id"],
            "at": row["occurred_at"],
        }
        for row in rows
    ]


async def connected_agent(db: Database | Connection, call_id: str) -> ConnectedAgent | None:
    """The agent the ACD last connected the call to."""
    row = await db.fetchrow(
        "SELECT agent_id, queue_id FROM events WHERE call_id = $1 AND type = 'acd.connected'"
        " ORDER BY occurred_at DESC, id DESC LIMIT 1",
        call_id,
    )
    if row is None or not row["agent_id"]:
        return None
    return ConnectedAgent(row["agent_id"], row["queue_id"] or "")


async def last_agent(
    db: Database | Connection, customer_id: int, numbers: tuple[str, ...]
) -> str | None:
    """The agent who last served the customer: their latest interaction with an agent,
    else the latest call from one of their numbers that the ACD connected."""
    login = await db.fetchval(
        # agent_login: interactions written while the ACD runs from a TOML file
        # have no agents row to point at (migration 0005).
        "SELECT coalesce(a.login, i.agent_login) FROM interactions i"
        " LEFT JOIN agents a ON a.id = i.agent_id"
        " WHERE i.customer_id = $1 AND coalesce(a.login, i.agent_login) IS NOT NULL"
        " ORDER BY i.started_at DESC LIMIT 1",
        customer_id,
    )
    if login:
        return str(login)
    keys = [digits[-10:] for digits in map(normalize_phone, numbers) if len(digits) >= 2]
    if not keys:
        return None
    agent = await db.fetchval(
        "SELECT c.agent_id FROM events c JOIN events e"
        "   ON e.call_id = c.call_id AND e.type = 'acd.caller_entered'"
        " WHERE c.type = 'acd.connected' AND c.agent_id IS NOT NULL"
        "   AND right(regexp_replace(e.payload->>'caller', '[^0-9]', '', 'g'), 10) = ANY($1)"
        " ORDER BY c.occurred_at DESC, c.id DESC LIMIT 1",
        keys,
    )
    return str(agent) if agent else None


async def agent_took_call(db: Database | Connection, call_id: str, agent_id: str) -> bool:
    """Whether the ACD put `agent_id` on the call (answered or dialled it)."""
    found = await db.fetchval(
        "SELECT 1 FROM events WHERE call_id = $1 AND agent_id = $2"
        " AND type IN ('acd.connected', 'acd.outbound_started') LIMIT 1",
        call_id,
        agent_id,
    )
    return found is not None


async def recording_file(db: Database | Connection, call_id: str) -> str | None:
    """The file the ACD last recorded the call to (`acd.recording`), or None."""
    file = await db.fetchval(
        "SELECT payload->>'file' FROM events WHERE call_id = $1 AND type = 'acd.recording'"
        " ORDER BY occurred_at DESC, id DESC LIMIT 1",
        call_id,
    )
    return str(file) if file else None


async def unapplied_wrap_ups(
    db: Database | Connection, event_type: str, days: int
) -> list[JournaledWrapUp]:
    """The newest journaled wrap-up (`event_type`) of each call and agent of the last
    `days` days that is not in `interactions` yet: no interaction of that call and
    agent, or only one written before the wrap-up was submitted."""
    rows = await db.fetch(
        "SELECT DISTINCT ON (e.call_id, e.agent_id) e.call_id, e.agent_id, e.payload"
        " FROM events e WHERE e.type = $1 AND e.call_id IS NOT NULL"
        "   AND e.occurred_at > now() - make_interval(days => $2)"
        "   AND NOT EXISTS (SELECT 1 FROM interactions i"
        "     WHERE i.call_key = e.call_id"
        "       AND coalesce(i.agent_login, '') = coalesce(e.agent_id, '')"
        "       AND i.wrap_up_at >= e.occurred_at)"
        " ORDER BY e.call_id, e.agent_id, e.occurred_at DESC, e.id DESC",
        event_type,
        days,
    )
    return [
        JournaledWrapUp(row["call_id"], row["agent_id"] or "", _payload(row["payload"]))
        for row in rows
    ]
