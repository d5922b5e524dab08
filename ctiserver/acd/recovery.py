"""Restart recovery: the ACD's live state rebuilt from the event log.

What the log says is checked against what cannot be true any more: an agent
"reserved" by a process that died has no offer left, so it becomes
available again (a correcting `acd.agent_state` event says so); an agent
"on_call" keeps that state only while its call is open in the log, and the
first AMI login then ends every call whose channels Asterisk no longer has
(CallController._reconcile_with_asterisk). Callers who were waiting come
back on their own through the dialplan's resume loop, at their original
place; those who hung up meanwhile are recorded as abandoned. Kept
callbacks are put back in line with their original virtual enqueue time and
their own requirements and conditions (from `acd.caller_entered`; a resumed
caller brings its own back in the CTI_REQUIREMENTS channel variable).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ctiserver.acd.controller import CallController
from ctiserver.acd.journal import criteria_from_payload, instant
from ctiserver.acd.model import AgentState, AttributeCondition, CallRequest, SkillRequirement
from ctiserver.store.database import Database
from ctiserver.store.events import Event

log = logging.getLogger(__name__)

# How far back open calls are looked for. Callbacks may wait long; a
# talking or waiting call older than this cannot still be live.
DEFAULT_HORIZON = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class LoggedAgentState:
    agent_id: str
    state: AgentState
    reason: str | None
    call_id: str | None
    since: datetime
    last_leg: str | None  # the agent leg of its last offer (may still ring)


@dataclass(frozen=True, slots=True)
class OpenTalk:
    call_id: str
    queue: str
    agent_id: str
    answered_at: datetime
    caller_channel: str | None
    agent_leg: str | None
    caller: str


@dataclass(frozen=True, slots=True)
class OpenWait:
    call_id: str
    queue: str
    caller: str
    priority: int
    virtual_enqueued_at: float
    preferred_agent: str | None
    callback_number: str | None
    requirements: tuple[SkillRequirement, ...] = ()
    conditions: tuple[AttributeCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class LoggedState:
    agents: list[LoggedAgentState]
    talking: list[OpenTalk]
    waiting: list[OpenWait]


_AGENT_STATES = """
SELECT DISTINCT ON (s.agent_id) s.agent_id, s.payload->>'state' AS state,
       s.payload->>'reason' AS reason, s.call_id, s.occurred_at,
       (SELECT o.payload->>'agent_leg' FROM events o
        WHERE o.agent_id = s.agent_id AND o.type = 'acd.offer'
        ORDER BY o.occurred_at DESC, o.id DESC LIMIT 1) AS last_leg
FROM events s
WHERE s.type = 'acd.agent_state' AND s.agent_id IS NOT NULL
ORDER BY s.agent_id, s.occurred_at DESC, s.id DESC
"""

_OPEN_TALKS = """
SELECT e.call_id, e.queue_id, e.agent_id, e.occurred_at, e.payload,
       (SELECT c.payload->>'caller' FROM events c
        WHERE c.call_id = e.call_id AND c.type = 'acd.caller_entered'
        ORDER BY c.occurred_at DESC, c.id DESC LIMIT 1) AS caller
FROM events e
WHERE e.type = 'acd.connected' AND e.occurred_at > $1
  AND NOT EXISTS (SELECT 1 FROM events x
                  WHERE x.call_id = e.call_id AND x.type = 'acd.call_ended'
                    AND x.occurred_at >= e.occurred_at)
"""

# A stay ends with acd.connected or a call_left that is not an overflow.
_OPEN_WAITS = """
SELECT DISTINCT ON (e.call_id) e.call_id, e.payload,
       (SELECT q.queue_id FROM events q
        WHERE q.call_id = e.call_id AND q.type = 'acd.call_queued'
        ORDER BY q.occurred_at DESC, q.id DESC LIMIT 1) AS queue,
       (SELECT b.payload->>'number' FROM events b
        WHERE b.call_id = e.call_id AND b.type = 'acd.callback_requested'
        ORDER BY b.occurred_at DESC, b.id DESC LIMIT 1) AS callback_number
FROM events e
WHERE e.type = 'acd.caller_entered' AND e.occurred_at > $1
  AND NOT EXISTS (SELECT 1 FROM events x
                  WHERE x.call_id = e.call_id AND x.occurred_at >= e.occurred_at
                    AND (x.type = 'acd.connected'
                         OR (x.type = 'acd.call_left'
                             AND x.payload->>'outcome' <> 'overflowed')))
ORDER BY e.call_id, e.occurred_at DESC, e.id DESC
"""


async def load_logged_state(
    db: Database, *, now: datetime, horizon: timedelta = DEFAULT_HORIZON
) -> LoggedState:
    """Each agent's last state, and the calls the log shows as still open."""
    since = now - horizon
    agents = [
        LoggedAgentState(
            row["agent_id"],
            AgentState(row["state"]),
            row["reason"],
            row["call_id"],
            row["occurred_at"],
            row["last_leg"],
        )
        for row in await db.fetch(_AGENT_STATES)
        if row["state"] in AgentState._value2member_map_
    ]
    talking = [
        OpenTalk(
            row["call_id"],
            row["queue_id"] or "",
            row["agent_id"] or "",
            row["occurred_at"],
            _text(row["payload"], "caller_channel"),
            _text(row["payload"], "agent_leg"),
            row["caller"] or "",
        )
        for row in await db.fetch(_OPEN_TALKS, since)
    ]
    waiting = []
    for row in await db.fetch(_OPEN_WAITS, since):
        payload: dict[str, Any] = row["payload"]
        queue = row["queue"] or payload.get("queue") or ""
        if not queue:
            continue
        requirements, conditions = criteria_from_payload(payload)
        waiting.append(
            OpenWait(
                row["call_id"],
                queue,
                str(payload.get("caller") or ""),
                int(payload.get("priority") or 0),
                float(payload.get("virtual_enqueued_at") or 0.0),
                payload.get("preferred_agent"),
                row["callback_number"],
                requirements,
                conditions,
            )
        )
    return LoggedState(agents, talking, waiting)


def _text(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return str(value) if value else None


def restore_controller(controller: CallController, logged: LoggedState, now: float) -> None:
    """Put the logged state into a fresh controller; journal every correction."""
    known_agents = {agent.agent_id for agent in controller.config.agents}
    known_queues = {queue.name for queue in controller.config.queues}
    talking_by_agent = {
        talk.agent_id: talk
        for talk in logged.talking
        if talk.agent_id in known_agents and talk.queue in known_queues
    }
    for agent in logged.agents:
        if agent.agent_id not in known_agents:
            continue
        talk = talking_by_agent.get(agent.agent_id)
        if agent.state is AgentState.ON_CALL and talk is not None:
            controller.restore_talking(
                talk.call_id,
                talk.queue,
                talk.agent_id,
                talk.answered_at.timestamp(),
                caller=talk.caller,
                caller_channel=talk.caller_channel,
                agent_leg=talk.agent_leg,
            )
        elif agent.state in (AgentState.RESERVED, AgentState.ON_CALL):
            # The offer or call died with the previous process; a phone still
            # ringing for it is silenced once AMI is up.
            if agent.state is AgentState.RESERVED and agent.last_leg:
                controller.silence_stale_leg(agent.last_leg)
            controller.engine.restore_agent(agent.agent_id, AgentState.AVAILABLE, now)
            controller.journal(
                Event(
                    "acd.agent_state",
                    {
                        "state": AgentState.AVAILABLE.value,
                        "previous": agent.state.value,
                        "reason": "recovered after restart",
                    },
                    agent_id=agent.agent_id,
                    call_id=agent.call_id,
                    occurred_at=instant(now),
                )
            )
        else:
            controller.engine.restore_agent(
                agent.agent_id, agent.state, agent.since.timestamp(), agent.reason
            )
    for talk in logged.talking:
        if talking_by_agent.get(talk.agent_id) is not talk:
            controller.journal_call_end(talk.call_id, talk.queue, talk.agent_id, now)
    for wait in logged.waiting:
        if wait.queue not in known_queues:
            continue
        if wait.callback_number is not None:
            request = CallRequest(
                call_id=wait.call_id,
                queue=wait.queue,
                priority=wait.priority,
                virtual_enqueued_at=wait.virtual_enqueued_at,
                preferred_agent=wait.preferred_agent,
                caller=wait.caller,
                callback_number=wait.callback_number,
                requirements=wait.requirements,
                conditions=wait.conditions,
            )
            try:
                controller.engine.check_request(request)
            except ValueError as exc:
                # E.g. a skill dropped from the configuration meanwhile: calling
                # the customer back beats forgetting them.
                log.warning("callback %s restored without its own criteria: %s", wait.call_id, exc)
                request = replace(request, requirements=(), conditions=())
            controller.restore_callback(request)
        else:
            controller.expect_resume(wait.call_id, wait.queue)
    log.info(
        "ACD recovered: %d agent states, %d talking, %d waiting",
        len(logged.agents),
        len(logged.talking),
        len(logged.waiting),
    )
