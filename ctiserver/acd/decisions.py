"""What the routing engine tells the call controller: one immutable record per fact.

Every engine input returns a list of these in causal order. The controller acts
on some (ring a phone, stop ringing, move a caller) and persists all of them in
the event log, from which metrics and recovery are computed. Instants (`at`)
are POSIX seconds, the engine's notion of when the fact happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ctiserver.acd.model import AgentState, CallOutcome


class WithdrawalReason(StrEnum):
    """Why the engine cancelled a reservation (the phone must stop ringing)."""

    RING_TIMEOUT = "ring timeout"
    CALLER_LEFT = "caller left"
    AGENT_LOGGED_OUT = "agent logged out"
    # The agent asked for not-ready while their phone rang: a refusal.
    AGENT_REFUSED = "agent refused"
    # configure() dropped the queue the call was waiting in.
    QUEUE_REMOVED = "queue removed"


@dataclass(frozen=True, slots=True)
class Offer:
    """An agent is reserved for the call: ring their phone."""

    call_id: str
    agent_id: str
    queue: str
    endpoint: str
    ring_timeout_s: float
    # Set for a kept callback: the agent's leg dials this number.
    callback_number: str | None
    caller: str
    at: float


@dataclass(frozen=True, slots=True)
class OfferWithdrawn:
    """The engine cancelled a reservation; `reason` is a `WithdrawalReason` value."""

    call_id: str
    agent_id: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class AgentStateChanged:
    """Every agent transition, with the call it concerns when there is one."""

    agent_id: str
    state: AgentState
    previous: AgentState
    reason: str | None
    call_id: str | None
    at: float


@dataclass(frozen=True, slots=True)
class CallQueued:
    """The call entered a queue, or re-entered it after a refused offer or an overflow."""

    call_id: str
    queue: str
    priority: int
    virtual_enqueued_at: float
    # 1-based place in the queue's service order right after queueing.
    position: int
    at: float


@dataclass(frozen=True, slots=True)
class StepStarted:
    """An expansion step began for the call (step 0 on entering a queue)."""

    call_id: str
    queue: str
    step: int
    priority: int
    at: float


@dataclass(frozen=True, slots=True)
class CallbackOffered:
    """Offer the waiting caller "press 1 to be called back"; the call keeps waiting."""

    call_id: str
    queue: str
    at: float


@dataclass(frozen=True, slots=True)
class CallLeft:
    """The call's stay in `queue` ended.

    ANSWERED (an agent took it; a callback too), ABANDONED, OVERFLOWED (a
    CallQueued for `target_queue` follows, or another CallLeft if that queue
    turns it away), VOICEMAIL or CLOSED.
    """

    call_id: str
    queue: str
    outcome: CallOutcome
    at: float
    target_queue: str | None = None


@dataclass(frozen=True, slots=True)
class CallEnded:
    """An answered call was hung up; the engine forgets it."""

    call_id: str
    agent_id: str
    queue: str
    talk_s: float
    at: float


Decision = (
    Offer
    | OfferWithdrawn
    | AgentStateChanged
    | CallQueued
    | StepStarted
    | CallbackOffered
    | CallLeft
    | CallEnded
)
