"""The routing engine's mutable records of queues, agents and calls.

Only the engine changes them, keeping their indexes (sorted lines of calls,
sorted lists of available agents, counters) consistent; everyone else gets the
frozen views they produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctiserver.acd.criteria import CallCriteria, StepCriteria
from ctiserver.acd.estimates import HandleTime
from ctiserver.acd.model import AgentConfig, AgentState, CallRequest, QueueConfig
from ctiserver.acd.selection import AgentKey, CallKey
from ctiserver.acd.views import AgentView, CallStatus, CallView


@dataclass(slots=True, eq=False)
class QueueRecord:
    """A queue's configuration, compiled steps and routing indexes."""

    config: QueueConfig
    steps: tuple[StepCriteria, ...]
    handle_time: HandleTime
    # Per step: waiting calls open to every qualified agent, in service order.
    lines: list[list[CallKey]]
    # Per step: how many calls of lines[step] bring criteria of their own; while
    # none do, the head of the line is the best call for any qualified agent.
    demanding: list[int]
    # Waiting calls kept for their preferred agent, in service order.
    held: list[CallKey]
    # Per step: available agents who qualify, in the queue policy's order.
    available: list[list[AgentKey]]
    # Logged-in agents who qualify for some step (when_unstaffed). Per step
    # only: a call whose own criteria nobody meets still counts as staffed and
    # waits for its steps to run out like any other.
    staffed: int = 0
    # Agents able to serve step 0: logged in and not not_ready (estimated wait).
    serving: int = 0
    last_round_robin: int | None = None

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(slots=True, eq=False)
class AgentRecord:
    """An agent's configuration, state, qualifications and day's occupancy."""

    config: AgentConfig
    order: int
    state: AgentState = AgentState.LOGGED_OUT
    since: float = 0.0
    reason: str | None = None
    # The call offered or talked (an object), and the call id / queue name
    # shown while reserved, on call or in wrap-up.
    call: CallRecord | None = None
    call_id: str | None = None
    queue: str | None = None
    # Asked for during a call, applied at its end instead of wrap-up.
    pending: tuple[AgentState, str | None] | None = None
    # Per queue of the agent: whether they meet each step.
    qualified: dict[str, tuple[bool, ...]] = field(default_factory=dict)
    queue_order: dict[str, int] = field(default_factory=dict)
    # Where the agent sits in availability lists while available.
    available_keys: list[tuple[list[AgentKey], AgentKey]] = field(default_factory=list)
    # Seconds on call and in wrap-up since the centre's day began.
    occupied_s: float = 0.0
    busy_since: float | None = None
    # The talk time and queue average a wrap-up sample goes to when it ends.
    talk_s: float = 0.0
    wrap_handle_time: HandleTime | None = None
    # Removed from the configuration while on a call: logs out when it ends.
    retired: bool = False

    @property
    def agent_id(self) -> str:
        return self.config.agent_id

    def view(self) -> AgentView:
        return AgentView(
            self.agent_id, self.state, self.since, self.reason, self.call_id, self.queue
        )


@dataclass(slots=True, eq=False)
class CallRecord:
    """A call the engine knows: waiting, offered or talking."""

    call_id: str
    request: CallRequest
    sequence: int
    virtual_enqueued_at: float
    queue: QueueRecord
    status: CallStatus = CallStatus.WAITING
    step: int = 0
    step_started_at: float = 0.0
    # When the call entered its current queue (preferred window start).
    entered_at: float = 0.0
    priority: int = 0
    # Its key in queue.lines[step] or queue.held while waiting.
    key: CallKey | None = None
    held_for: str | None = None
    preferred_until: float | None = None
    # Its step ran out while it rang: apply the expiry when it is back in line.
    step_overdue: bool = False
    agent: AgentRecord | None = None
    callback_number: str | None = None
    answered_at: float = 0.0
    # The request's own requirements and conditions; None (most calls) when
    # it has none, so routing takes the fast path.
    own: CallCriteria | None = None

    def view(self) -> CallView:
        return CallView(
            call_id=self.call_id,
            queue=self.queue.name,
            status=self.status,
            priority=self.priority,
            virtual_enqueued_at=self.virtual_enqueued_at,
            step=self.step,
            agent_id=self.agent.agent_id if self.agent is not None else None,
            callback_number=self.callback_number,
            caller=self.request.caller,
            held_for=self.held_for,
        )
