"""Read-only pictures of the routing engine's state for the controller and the wallboard.

The engine hands these out instead of its internal records, so a caller can
keep, compare or serialise them without being able to change routing state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from ctiserver.acd.model import AgentState


class CallStatus(StrEnum):
    WAITING = "waiting"  # in line
    OFFERED = "offered"  # an agent is reserved, the phone rings
    TALKING = "talking"  # answered, until call_ended


@dataclass(frozen=True, slots=True)
class AgentView:
    agent_id: str
    state: AgentState
    since: float
    # The not-ready reason code; None in other states.
    reason: str | None
    # The call being offered, talked or wrapped up, and its queue.
    call_id: str | None
    queue: str | None


@dataclass(frozen=True, slots=True)
class CallView:
    call_id: str
    queue: str
    status: CallStatus
    priority: int
    virtual_enqueued_at: float
    step: int
    agent_id: str | None
    callback_number: str | None
    caller: str
    # The preferred agent the call is kept for while their window runs.
    held_for: str | None = None


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    queue: str
    open: bool
    waiting: int  # in line, not offered
    ringing: int  # offered to an agent, not answered yet
    # Since the virtual enqueue time of the longest-waiting unanswered call.
    longest_wait_s: float
    # For a caller joining now at the end of the line; None when nobody can serve.
    estimated_wait_s: float | None
    # The queue's member agents per state (every state present, zero included).
    agents: Mapping[AgentState, int]


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """A queue's line as its agents see it (cheap: no scan of agents or calls).

    Unlike QueueSnapshot, only the calls in line count: a call offered to an
    agent is neither waiting nor in the longest wait.
    """

    queue: str
    open: bool
    waiting: int  # in line, not offered
    # Since the virtual enqueue time of the longest-waiting call in line; 0 when none.
    longest_wait_s: float
    # For a caller joining now at the end of the line; None when nobody can serve.
    estimated_wait_s: float | None


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    at: float
    queues: tuple[QueueSnapshot, ...]
    agents: tuple[AgentView, ...]
