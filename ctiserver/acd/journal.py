"""Routing decisions and call-control facts as event-log events (the ACD's notifier).

Every transition the engine reports becomes one `acd.*` event, so metrics and
restart recovery read one append-only history. Event types:

- `acd.caller_entered` {caller, channel, priority, virtual_enqueued_at,
                      preferred_agent, skills, attributes} (a caller handed to a
                      queue; skills {name: level} and attributes [[attr, op,
                      value], ...] are the call's own criteria, see
                      criteria_payload; recovery rebuilds waiting calls from it)
- `acd.agent_state`  {state, previous, reason}                    agent_id
- `acd.call_queued`  {priority, virtual_enqueued_at, position, caller, channel}
- `acd.step`         {step, priority}
- `acd.callback_offered` {}
- `acd.callback_requested` {number}
- `acd.call_left`    {outcome, target_queue}
- `acd.offer`        {agent_leg, endpoint, ring_timeout_s, callback_number, caller}
- `acd.offer_withdrawn` {reason}
- `acd.offer_failed` {failure}
- `acd.connected`    {caller_channel, agent_channel, agent_leg}
- `acd.recording`    {channel, file}
- `acd.call_ended`   {talk_s}
- `acd.voicemail`    {file}

Agent call controls (call_controls.py) add:

- `acd.hold` / `acd.unhold` {by: "cti" | "phone"}
- `acd.transferred`  {from_agent, target_kind: queue|agent|number, target, caller_channel}
                      (Redirect makes no transfer event of its own: 08a/08c)
- `acd.outbound_started` {number, endpoint, agent_leg}  (click-to-dial; the
                      call id is the agent leg's ChannelId, also on the call's
                      acd.agent_state (reason "outbound call") and acd.call_ended)
- `acd.outbound_answered` {number, customer_channel}
- `acd.connected` with `transferred: true` for an agent who took a transferred call

`call_id` is the caller channel's Uniqueid (the call's Linkedid), `queue_id`
the queue name, `agent_id` the agent id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ctiserver.acd.decisions import (
    AgentStateChanged,
    CallbackOffered,
    CallEnded,
    CallLeft,
    CallQueued,
    Decision,
    Offer,
    OfferWithdrawn,
    StepStarted,
)
from ctiserver.acd.model import AttributeCondition, SkillRequirement
from ctiserver.store.events import Event


def instant(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def decision_event(decision: Decision, *, agent_leg: str | None = None) -> Event:
    """The event-log record of one engine decision."""
    kind, payload = _describe(decision, agent_leg)
    return Event(
        kind,
        payload,
        call_id=decision.call_id,
        agent_id=getattr(decision, "agent_id", None),
        queue_id=getattr(decision, "queue", None),
        occurred_at=instant(decision.at),
    )


def _describe(decision: Decision, agent_leg: str | None) -> tuple[str, dict[str, Any]]:
    match decision:
        case AgentStateChanged():
            return "acd.agent_state", {
                "state": decision.state.value,
                "previous": decision.previous.value,
                "reason": decision.reason,
            }
        case CallQueued():
            return "acd.call_queued", {
                "priority": decision.priority,
                "virtual_enqueued_at": decision.virtual_enqueued_at,
                "position": decision.position,
            }
        case StepStarted():
            return "acd.step", {"step": decision.step, "priority": decision.priority}
        case CallbackOffered():
            return "acd.callback_offered", {}
        case CallLeft():
            return "acd.call_left", {
                "outcome": decision.outcome.value,
                "target_queue": decision.target_queue,
            }
        case Offer():
            return "acd.offer", {
                "agent_leg": agent_leg,
                "endpoint": decision.endpoint,
                "ring_timeout_s": decision.ring_timeout_s,
                "callback_number": decision.callback_number,
                "caller": decision.caller,
            }
        case OfferWithdrawn():
            return "acd.offer_withdrawn", {"reason": decision.reason}
        case CallEnded():
            return "acd.call_ended", {"talk_s": round(decision.talk_s, 3)}
    raise TypeError(f"no event for decision {decision!r}")


def call_event(
    kind: str,
    call_id: str,
    at: float,
    payload: dict[str, Any],
    *,
    agent_id: str | None = None,
    queue: str | None = None,
) -> Event:
    """A call-control fact that is not an engine decision (`acd.<kind>`)."""
    return Event(
        f"acd.{kind}",
        payload,
        call_id=call_id,
        agent_id=agent_id,
        queue_id=queue,
        occurred_at=instant(at),
    )


def criteria_payload(
    requirements: tuple[SkillRequirement, ...], conditions: tuple[AttributeCondition, ...]
) -> dict[str, Any]:
    """A call's own criteria as JSON: {"skills": {name: level}, "attributes": [[a, op, v]]}.

    An "in" value is a list. Skills are unique (the engine refuses one twice).
    """
    return {
        "skills": {r.skill: r.min_level for r in requirements},
        "attributes": [
            [c.attribute, c.operator, list(c.value) if isinstance(c.value, tuple) else c.value]
            for c in conditions
        ],
    }


def criteria_from_payload(
    payload: dict[str, Any],
) -> tuple[tuple[SkillRequirement, ...], tuple[AttributeCondition, ...]]:
    """criteria_payload read back; entries of another shape are skipped.

    A payload written before calls had criteria of their own has none.
    """
    requirements: list[SkillRequirement] = []
    skills = payload.get("skills")
    if isinstance(skills, dict):
        for skill, level in skills.items():
            if isinstance(skill, str) and isinstance(level, int) and not isinstance(level, bool):
                requirements.append(SkillRequirement(skill, level))
    conditions: list[AttributeCondition] = []
    attributes = payload.get("attributes")
    if isinstance(attributes, list):
        for entry in attributes:
            if not (isinstance(entry, list) and len(entry) == 3):
                continue
            attribute, operator, value = entry
            if not (isinstance(attribute, str) and isinstance(operator, str)):
                continue
            if isinstance(value, str):
                conditions.append(AttributeCondition(attribute, operator, value))
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                conditions.append(AttributeCondition(attribute, operator, tuple(value)))
    return tuple(requirements), tuple(conditions)
