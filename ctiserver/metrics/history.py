"""Historical figures: the events a report needs, read from PostgreSQL into a MetricFold.

The SQL lives here, the math in the pure core (fold.py, figures.py): a report
over [start, end) is `figures.queue_report` / `agent_report` over a fold of
exactly the events that decide it, so it equals the pure core's figures for
the whole event log (tests/metrics/test_history.py checks that).

Which events, for a range [start, end) (all of the types the fold reads):

1. every event in [start, end);
2. every event, before start or after end, of a call with an event in the
   range: a call counts in the interval it entered, so one that entered in
   range and ended (was answered, transferred, wrapped up) after end brings
   its whole story, and one that entered the centre before start brings its
   first entry (the centre-wide count and the short-abandon rule use it);
3. each agent's last `acd.agent_state` before start: the state the agent is
   in when the range begins (agents found by a skip scan of the agent index);
4. every agent's `acd.agent_state` from end to the last event of those calls,
   and, for an agent whose after-call work of a call in range is still open
   then, its next state changes: handle time ends with the wrap-up;
5. for repeat-contact FCR, the queue entries (and the customer ids, from
   `ivr.ended` and `desktop.wrap_up`) of other calls up to the last answer in
   range + fcr_window: a contact is resolved when no further one follows.
   These are not folded (a later call's entries alone are half a story: a
   transferred call's second entry would find its first stay never closed);
   `_later_contacts` reads them into the stays the repeat-contact check
   looks at (`LaterContact`), entries only, outside every report's range.

Everything is read in one read-only REPEATABLE READ transaction (one snapshot)
and streamed through a server-side cursor in batches, in (occurred_at, id)
order, the order the event log defines.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from ctiserver.acd.config import AcdConfig
from ctiserver.metrics.facts import CALLBACK, MetricEvent, QueueStay
from ctiserver.metrics.fold import CLOCK_SKEW_S, READ_TYPES, MetricFold
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.reports import Report, compose
from ctiserver.metrics.settings import MetricSettings
from ctiserver.store.database import Database

BATCH_SIZE: Final = 5000
_COLUMNS: Final = "id, event_key, occurred_at, type, call_id, agent_id, queue_id, payload"
_ENTRY_TYPES: Final = ("acd.caller_entered", "acd.call_queued")

# $1 start, $2 end, $3 the types the fold reads. Parts 1-4 of the module docstring.
_RANGE_SQL: Final = f"""
WITH RECURSIVE
calls AS MATERIALIZED (
    SELECT DISTINCT call_id FROM events
    WHERE occurred_at >= $1 AND occurred_at < $2 AND call_id IS NOT NULL AND type = ANY($3)
),
beyond AS MATERIALIZED (
    SELECT e.id, e.event_key, e.occurred_at, e.type, e.call_id, e.agent_id, e.queue_id, e.payload
    FROM calls c JOIN events e ON e.call_id = c.call_id
    WHERE (e.occurred_at < $1 OR e.occurred_at >= $2) AND e.type = ANY($3)
),
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
),
settled AS (
    SELECT coalesce(max(occurred_at), $2) AS until FROM beyond WHERE occurred_at >= $2
),
picked AS (
    SELECT {_COLUMNS} FROM events
    WHERE occurred_at >= $1 AND occurred_at < $2 AND type = ANY($3)
    UNION ALL SELECT * FROM beyond
    UNION ALL SELECT * FROM at_start
    UNION ALL
    SELECT e.id, e.event_key, e.occurred_at, e.type, e.call_id, e.agent_id, e.queue_id, e.payload
    FROM events e, settled
    WHERE e.type = 'acd.agent_state' AND e.occurred_at >= $2 AND e.occurred_at <= settled.until
)
SELECT DISTINCT ON (occurred_at, id) {_COLUMNS} FROM picked ORDER BY occurred_at, id
"""

# $1 agents whose after-call work is still open, $2 the instant read to: their next states
# (a wrap-up that starts it, perhaps a repeat of it, and the change that ends it).
_AFTER_CALL_SQL: Final = f"""
SELECT s.* FROM unnest($1::text[]) AS a(agent_id) CROSS JOIN LATERAL (
    SELECT {_COLUMNS} FROM events e
    WHERE e.agent_id = a.agent_id AND e.type = 'acd.agent_state' AND e.occurred_at > $2
    ORDER BY e.occurred_at, e.id LIMIT 3
) s
ORDER BY occurred_at, id
"""

# $1 start, $2 end, $3 the last instant a repeat contact counts, $4 the types the fold reads:
# part 5, for calls with nothing in the range (those were read whole above). Only what
# a contact's entries and customer need, extracted on the server (no payload decoding).
_REPEAT_SQL: Final = """
WITH later AS MATERIALIZED (
    SELECT DISTINCT e.call_id FROM events e
    WHERE e.type IN ('acd.caller_entered', 'acd.call_queued')
      AND e.occurred_at >= $2 AND e.occurred_at <= $3 AND e.call_id IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM events x
          WHERE x.call_id = e.call_id AND x.occurred_at >= $1 AND x.occurred_at < $2
            AND x.type = ANY($4)
      )
)
SELECT e.occurred_at, e.type, e.call_id, e.agent_id, e.queue_id,
       e.payload ->> 'caller' AS caller,
       e.payload ->> 'outcome' AS outcome,
       CASE WHEN jsonb_typeof(e.payload -> 'customer') = 'object'
            THEN e.payload -> 'customer' ->> 'id' END AS ivr_customer,
       e.payload ->> 'customer_id' AS customer_id
FROM later l JOIN events e ON e.call_id = l.call_id
WHERE e.type IN ('acd.caller_entered', 'acd.call_queued', 'acd.call_left',
                 'ivr.ended', 'desktop.wrap_up')
ORDER BY e.occurred_at, e.id
"""


class LaterContacts:
    """Later calls' queue entries, as the fold would open stays, for repeat-contact FCR only.

    The same rules as MetricFold's stays (a re-entry into the queue a call waits
    in is the same stay, `call_left` closes it, a callback request does not) and
    customer ids (the agent's wrap-up, else the IVR's lookup), without the rest
    of the call (the stays keep no outcome): they are added to the fold's list,
    where only the repeat index looks at them (they entered after the range, so
    no report counts them).
    """

    def __init__(self) -> None:
        self.stays: list[QueueStay] = []
        self.customers: dict[str, str] = {}
        self._ivr_customers: dict[str, str] = {}
        self._open: dict[str, QueueStay] = {}
        self._chains: dict[str, list[QueueStay]] = {}

    def apply(self, row: Mapping[str, Any]) -> None:
        call_id = row["call_id"]
        kind = row["type"]
        at = row["occurred_at"].timestamp()
        queue = row["queue_id"] or None
        if kind in _ENTRY_TYPES:
            if call_id is None or queue is None:
                return
            current = self._open.get(call_id)
            if current is not None and current.queue == queue:
                return
            chain = self._chains.setdefault(call_id, [])
            previous = chain[-1] if chain else None
            caller = row["caller"] or ""
            stay = QueueStay(
                call_id,
                queue,
                entered_at=at,
                first_entered_at=chain[0].first_entered_at if chain else at,
                via="entry" if previous is None else "transfer",
                caller=caller or (previous.caller if previous else ""),
            )
            chain.append(stay)
            self.stays.append(stay)
            self._open[call_id] = stay
        elif kind == "acd.call_left":
            left = self._open.get(call_id or "")
            outcome = row["outcome"]
            if left is None or (queue is not None and queue != left.queue) or not outcome:
                return
            if outcome != CALLBACK and at >= left.entered_at - CLOCK_SKEW_S:
                del self._open[left.call_id]  # the stay is over (its outcome is not kept)
        elif kind == "ivr.ended" and call_id is not None and row["ivr_customer"]:
            self._ivr_customers[call_id] = row["ivr_customer"]
        elif kind == "desktop.wrap_up" and call_id and row["agent_id"] and row["customer_id"]:
            self.customers[call_id] = row["customer_id"]  # None or "": no customer named

    def add_to(self, fold: MetricFold) -> None:
        """Into `fold`: the stays for its repeat index, the customers for its keys."""
        fold.stays.extend(self.stays)
        for call_id, customer in self._ivr_customers.items():
            fold.customer_ids.setdefault(call_id, customer)
        for call_id, customer in self.customers.items():
            fold.customer_ids[call_id] = customer


@dataclass(slots=True)
class LoadedFacts:
    """A fold holding what a report of [start, end) needs, and how much was read."""

    fold: MetricFold
    start: float
    end: float
    as_of: float
    events_read: int = 0
    read_to: float | None = None  # the newest occurred_at read


def _instant(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


async def _stream(
    conn: Any, facts: LoadedFacts, query: str, args: Sequence[Any], batch_size: int
) -> None:
    cursor = await conn.cursor(query, *args)
    while rows := await cursor.fetch(batch_size):
        for row in rows:
            event = MetricEvent.from_row(row)
            facts.fold.apply(event)
            if facts.read_to is None or event.occurred_at > facts.read_to:
                facts.read_to = event.occurred_at
        facts.events_read += len(rows)


async def _later_contacts(
    conn: Any, facts: LoadedFacts, args: Sequence[Any], batch_size: int
) -> None:
    contacts = LaterContacts()
    cursor = await conn.cursor(_REPEAT_SQL, *args)
    while rows := await cursor.fetch(batch_size):
        for row in rows:
            contacts.apply(row)
        facts.events_read += len(rows)
    contacts.add_to(facts.fold)


def _open_after_call(facts: LoadedFacts) -> list[str]:
    """Agents with a call of the range over but its after-call work not yet read to its end."""
    return sorted(
        {
            h.agent_id
            for h in facts.fold.handlings
            if h.ended_at is not None
            and h.acw_end is None
            and facts.start <= h.reference_at < facts.end
        }
    )


def _last_answer(facts: LoadedFacts) -> float | None:
    start, end = facts.start, facts.end
    answers = [
        s.answered_at
        for s in facts.fold.stays
        if s.answered_at is not None
        and (start <= s.entered_at < end or start <= s.first_entered_at < end)
    ]
    return max(answers, default=None)


async def load_facts(
    database: Database,
    start: float,
    end: float,
    *,
    settings: MetricSettings,
    as_of: float | None = None,
    batch_size: int = BATCH_SIZE,
) -> LoadedFacts:
    """The fold of the events a report of [start, end) needs (see the module docstring).

    `as_of` (default: now) is when the facts are known to: calls still
    waiting and FCR windows still open are judged against it.
    """
    if end <= start:
        raise ValueError("end must be after start")
    facts = LoadedFacts(MetricFold(), start, end, time.time() if as_of is None else as_of)
    types = sorted(READ_TYPES)
    async with (
        database.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        await _stream(conn, facts, _RANGE_SQL, (_instant(start), _instant(end), types), batch_size)
        read_to = max(end, facts.read_to or end)
        agents = _open_after_call(facts)
        if agents:
            await _stream(conn, facts, _AFTER_CALL_SQL, (agents, _instant(read_to)), batch_size)
        last_answer = _last_answer(facts)
        if last_answer is not None:
            until = min(facts.as_of, last_answer + settings.fcr_window.total_seconds())
            if until >= end:
                args = (_instant(start), _instant(end), _instant(until), types)
                await _later_contacts(conn, facts, args, batch_size)
    return facts


async def historical_report(
    database: Database,
    start: float,
    end: float,
    *,
    by: str,
    grain: Grain,
    settings: MetricSettings,
    config: AcdConfig | None = None,
    as_of: float | None = None,
    batch_size: int = BATCH_SIZE,
) -> Report:
    """The report of [start, end) grouped `by` queue, skill, agent or centre, per `grain`.

    `config` (the ACD configuration) gives queue titles, agent names, skill
    descriptions, each queue's skills, and the groups that have a row even
    without a call.
    """
    facts = await load_facts(
        database, start, end, settings=settings, as_of=as_of, batch_size=batch_size
    )
    return compose(
        facts.fold,
        start,
        end,
        by=by,
        grain=grain,
        settings=settings,
        as_of=facts.as_of,
        config=config,
        events_read=facts.events_read,
    )
