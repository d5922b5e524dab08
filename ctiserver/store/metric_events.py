"""The events a real-time metrics fold starts from (SQL only; ctiserver/metrics/live.py).

`events_since` streams, in the event log's order (occurred_at, id), every event
of the given types from `since` on, preceded by each agent's last
`acd.agent_state` before `since` (the state the agent is in when the read
begins). Read in one read-only REPEATABLE READ transaction through a
server-side cursor, in batches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Final

from ctiserver.store.database import Database

BATCH_SIZE: Final = 5000
_COLUMNS: Final = "id, event_key, occurred_at, type, call_id, agent_id, queue_id, payload"

# $1 since, $2 the types. Agents found by a skip scan of the agent index.
_SINCE_SQL: Final = f"""
WITH RECURSIVE
agents AS (
    (SELECT agent_id FROM events WHERE agent_id IS NOT NULL ORDER BY agent_id LIMIT 1)
    UNION ALL
    SELECT (
        SELECT e.agent_id FROM events e
        WHERE e.agent_id IS NOT NULL AND e.agent_id > a.agent_id
        ORDER BY e.agent_id LIMIT 1
    )
    FROM agents a WHERE a.agent_id IS NOT NULL
),
at_start AS (
    SELECT s.* FROM agents a CROSS JOIN LATERAL (
        SELECT {_COLUMNS} FROM events e
        WHERE e.agent_id = a.agent_id AND e.occurred_at < $1 AND e.type = 'acd.agent_state'
        ORDER BY e.occurred_at DESC, e.id DESC LIMIT 1
    ) s
    WHERE a.agent_id IS NOT NULL
)
SELECT * FROM (
    SELECT * FROM at_start
    UNION ALL
    SELECT {_COLUMNS} FROM events WHERE occurred_at >= $1 AND type = ANY($2)
) picked
ORDER BY occurred_at, id
"""


async def events_since(
    database: Database,
    since: datetime,
    types: Sequence[str],
    *,
    batch_size: int = BATCH_SIZE,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Batches of event rows (dicts: the `events` columns) from `since`, in log order,
    after each agent's last state change before it."""
    async with (
        database.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        cursor = await conn.cursor(_SINCE_SQL, since, list(types))
        while rows := await cursor.fetch(batch_size):
            yield [dict(row) for row in rows]
