"""The ACD's vocabulary: agents, skills, queues, expansion steps and call requests.

Plain immutable values shared by the routing engine (pure), the configuration
loader and the call controller. Times are seconds (floats); instants are
POSIX timestamps passed in by the caller, never read from a clock here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from enum import StrEnum

MIN_PROFICIENCY = 1
MAX_PROFICIENCY = 10


class AgentState(StrEnum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RESERVED = "reserved"  # offered a call, the phone rings
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    NOT_READY = "not_ready"


class AgentPolicy(StrEnum):
    """How a queue picks among qualified available agents."""

    LONGEST_IDLE = "longest_idle"
    MOST_SKILLED = "most_skilled"
    LEAST_OCCUPIED = "least_occupied"
    ROUND_ROBIN = "round_robin"


class OfferFailure(StrEnum):
    """Why a reserved agent did not take the call (each is a RONA)."""

    NO_ANSWER = "no answer"
    BUSY = "busy"
    UNREACHABLE = "unreachable"


class CallOutcome(StrEnum):
    """How a call leaves the engine; every call ends in exactly one."""

    ANSWERED = "answered"
    ABANDONED = "abandoned"
    OVERFLOWED = "overflowed"  # moved to another queue (the call continues there)
    CALLBACK = "callback"  # the caller left a number and hung up (kept in line)
    VOICEMAIL = "voicemail"
    CLOSED = "closed"  # queue closed, or max wait reached with no other action


@dataclass(frozen=True, slots=True)
class SkillRequirement:
    """An agent qualifies when their proficiency in `skill` is >= `min_level`."""

    skill: str
    min_level: int = MIN_PROFICIENCY


@dataclass(frozen=True, slots=True)
class AttributeCondition:
    """`attribute` `operator` `value` on an agent's attributes.

    Operators: "=", "!=", "in" (value is a tuple). A missing attribute never
    matches "=" or "in" and always matches "!=".
    """

    attribute: str
    operator: str
    value: str | tuple[str, ...]


# -- what happens when a step's time runs out -----------------------------------


@dataclass(frozen=True, slots=True)
class RelaxLevel:
    """Lower the minimum level of `skill` by `by` (never below 1)."""

    skill: str
    by: int = 1


@dataclass(frozen=True, slots=True)
class AddSkill:
    skill: str
    min_level: int = MIN_PROFICIENCY


@dataclass(frozen=True, slots=True)
class RemoveSkill:
    skill: str


@dataclass(frozen=True, slots=True)
class RaisePriority:
    by: int = 1


@dataclass(frozen=True, slots=True)
class Overflow:
    """Move the call to `queue`; it keeps its virtual enqueue time there."""

    queue: str


@dataclass(frozen=True, slots=True)
class OfferCallback:
    """Offer the waiting caller a callback that keeps their place."""


@dataclass(frozen=True, slots=True)
class ToVoicemail:
    """End the wait with a voicemail recorded to a file linked to the call."""


@dataclass(frozen=True, slots=True)
class CloseCall:
    """Give up: the maximum wait is reached (the caller hears a closing message)."""


StepAction = (
    RelaxLevel
    | AddSkill
    | RemoveSkill
    | RaisePriority
    | Overflow
    | OfferCallback
    | ToVoicemail
    | CloseCall
)


# Actions that end the call's stay in its queue (the engine and the
# configuration check both need to know which).
EndingAction = Overflow | ToVoicemail | CloseCall
ENDING_ACTIONS = (Overflow, ToVoicemail, CloseCall)


@dataclass(frozen=True, slots=True)
class Step:
    """One expansion step of a queue.

    While the step lasts, an agent qualifies when they meet every requirement
    and every attribute condition. When `duration_s` runs out the actions
    apply (their changes stay for the following steps) and the next step
    starts; the last step may have no duration (it lasts until the call
    ends). A step's `requirements`, when given, replace the ones in force;
    None keeps the previous step's (as modified by actions).
    """

    duration_s: float | None
    requirements: tuple[SkillRequirement, ...] | None = None
    conditions: tuple[AttributeCondition, ...] = ()
    on_expiry: tuple[StepAction, ...] = ()


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """One weekly opening slot: weekday 0 = Monday, local time [opens, closes)."""

    weekday: int
    opens: time
    closes: time


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Weekly opening slots in a time zone, plus closed dates ("2026-10-01")."""

    timezone: str
    slots: tuple[OpeningHours, ...]
    closed_dates: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    steps: tuple[Step, ...]
    base_priority: int = 0
    policy: AgentPolicy = AgentPolicy.LONGEST_IDLE
    ring_timeout_s: float = 20.0
    wrap_up_s: float = 30.0
    # A preferred agent (e.g. the customer's last agent) is tried alone this long.
    preferred_agent_s: float = 0.0
    # None: always open.
    hours: BusinessHours | None = None
    # What to do on enqueue when the queue is closed or no logged-in agent
    # could ever serve the call: a caller never waits for nobody.
    when_closed: StepAction = field(default_factory=CloseCall)
    when_unstaffed: StepAction | None = None
    record: bool = False
    music_class: str = "default"
    announce_every_s: float = 60.0  # 0: no position/wait announcements
    title: str = ""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    agent_id: str
    name: str
    endpoint: str  # dial string of the agent's phone, e.g. "PJSIP/agent1001"
    skills: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    # Queues this agent serves, in the order offers are made to them.
    queues: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallRequest:
    """A caller (or a kept callback) asking a queue for an agent.

    `requirements` and `conditions` are the call's own (the IVR knows the
    caller wants a Cantonese speaker with card skills): they hold at every
    step of the call's stay, on top of the step's own requirements and
    conditions. Steps relax only their own, never the call's; an overflow
    keeps them; a preferred agent must meet them too. The engine checks them
    at enqueue: a skill it does not know, a level outside 1..10, a skill
    listed twice or a malformed condition is a ValueError.
    """

    call_id: str
    queue: str
    # Added to the queue's base priority: customer grade (VIP), IVR choices.
    priority: int = 0
    # When the caller first entered the line; a resumed or overflowed call or
    # a callback keeps it, so it neither jumps the line nor loses its place.
    virtual_enqueued_at: float | None = None
    preferred_agent: str | None = None
    caller: str = ""
    callback_number: str | None = None
    requirements: tuple[SkillRequirement, ...] = ()
    conditions: tuple[AttributeCondition, ...] = ()
