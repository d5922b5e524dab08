"""Routing decisions and call-control facts as event-log events (the ACD's notifier).

Every transition the engine reports becomes one `acd.*` event, so metrics and
restart recovery read one append-only history. Event types:

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
