"""The skill-based routing engine: agents, queues and waiting calls in, decisions out.

Pure and deterministic: no I/O, no clock. Every input carries `now` (POSIX
seconds) and returns the decisions it caused, in causal order, every agent
transition included. After every input the engine is at a fixed point: no
available agent qualifies for a waiting call that is not yet offered
(respecting preferred-agent windows). Inputs that cannot apply raise
(UnknownCall, UnknownAgent, UnknownQueue, IllegalTransition) before changing
anything.

Rules:
- An agent qualifies for a call when the call's queue is in the agent's
  AgentConfig.queues and the agent meets the requirements and attribute
  conditions of the call's current expansion step (see criteria.py) and
  those of the call itself (CallRequest.requirements and .conditions: at
  every step, in every queue it overflows to, for its preferred agent too).
  Step qualification is precomputed per agent; a call's own criteria are
  tested only for calls that have some, while matching.
- Effective priority = queue base priority + CallRequest.priority + the
  RaisePriority actions of the steps the call went through.
- When a call becomes routable (enqueued, back after a refusal, a new step,
  a preferred window over), the queue's policy picks among the qualified
  available agents (see selection.py); for a call with criteria of its own,
  the first agent in the policy's order who meets them.
- When an agent becomes available, the candidate calls of all their queues are
  ranked by (higher effective priority, then the agent's queue order — earlier
  in AgentConfig.queues first — then earlier virtual enqueue time, then arrival
  sequence), and the first is offered. A call whose own criteria the agent
  does not meet is no candidate: it does not block the calls behind it.
- Preferred agent: when a request names one and the queue's
  preferred_agent_s > 0, for that long after entering the queue only that agent
  qualifies, as long as they are logged in and meet the current step and the
  call's own criteria (they may be busy: the call waits for them). The window
  ends early when they refuse the offer or log out.
- Offers: one call per agent. The engine times the ring (ring_timeout_s); a
  timeout, a reported failure (busy, unreachable, no answer) or a not-ready
  request while ringing sends the call back into its queue with its virtual
  enqueue time and arrival sequence, so it is back at the head among its
  priority; the agent goes not_ready with the failure as reason.
- A step's time runs while the call rings; if it expires then, it applies
  when the call is back in line, not while an agent's phone rings.
- Callbacks keep their place: a converted call stays in line with its number,
  and the Offer carries callback_number.
- After a call: wrap-up for the queue's wrap_up_s (0: straight to available),
  unless the agent asked for not-ready or logout during the call, which then
  applies at once.
- Enqueue on a closed queue applies its when_closed; when no logged-in agent
  qualifies for any of its steps, its when_unstaffed (if set). Both look at
  the queue's steps only: a call whose own criteria nobody meets waits for
  its steps to run out like any other. An overflow
  that would come back to a queue the call just left in the same instant
  closes the call instead of looping.
- Time never runs backwards: an input older than the latest one is taken as
  happening at the latest instant. tick() applies due timers at their own
  deadlines, in time order.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from enum import IntEnum
from heapq import merge
from itertools import count
from math import inf
from types import MappingProxyType

from ctiserver.acd.criteria import (
    CallCriteria,
    StepCriteria,
    call_criteria,
    ending_action,
    skills_named,
)
from ctiserver.acd.deadlines import Deadlines
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
    WithdrawalReason,
)
from ctiserver.acd.errors import IllegalTransition, UnknownAgent, UnknownCall, UnknownQueue
from ctiserver.acd.estimates import HandleTime, estimated_wait_s
from ctiserver.acd.hours import day_bounds, is_open, zone
from ctiserver.acd.model import (
    ENDING_ACTIONS,
    AgentConfig,
    AgentPolicy,
    AgentState,
    CallOutcome,
    CallRequest,
    CloseCall,
    OfferCallback,
    OfferFailure,
    Overflow,
    QueueConfig,
    StepAction,
    ToVoicemail,
)
from ctiserver.acd.records import AgentRecord, CallRecord, QueueRecord
from ctiserver.acd.selection import (
    AgentCandidate,
    CallKey,
    agent_key,
    agents_in_turn,
    call_key,
    pick_agent,
    ranked_for_agent,
)
from ctiserver.acd.validation import validated_configuration
from ctiserver.acd.views import (
    AgentView,
    CallStatus,
    CallView,
    EngineSnapshot,
    QueueFigures,
    QueueSnapshot,
)

__all__ = [
    "AgentView",
    "CallStatus",
    "CallView",
    "EngineSnapshot",
    "IllegalTransition",
    "QueueFigures",
    "QueueSnapshot",
    "RoutingEngine",
    "UnknownAgent",
    "UnknownCall",
    "UnknownQueue",
]

_LOGGED_OUT = AgentState.LOGGED_OUT
_AVAILABLE = AgentState.AVAILABLE
_RESERVED = AgentState.RESERVED
_ON_CALL = AgentState.ON_CALL
_WRAP_UP = AgentState.WRAP_UP
_NOT_READY = AgentState.NOT_READY
_WAITING = CallStatus.WAITING
_OFFERED = CallStatus.OFFERED
_TALKING = CallStatus.TALKING

# States in which an agent counts as able to serve (estimated wait time).
_SERVING = frozenset({_AVAILABLE, _RESERVED, _ON_CALL, _WRAP_UP})
# States in which an agent is busy with a call (occupancy).
_HANDLING = frozenset({_ON_CALL, _WRAP_UP})
_HOLDING_CALL = frozenset({_RESERVED, _ON_CALL})
_RESTORABLE = frozenset({_LOGGED_OUT, _AVAILABLE, _NOT_READY, _WRAP_UP})
_OUT = frozenset({_LOGGED_OUT})
_LOGGED_IN = frozenset(AgentState) - _OUT
_IN_WRAP_UP = frozenset({_WRAP_UP})
# make_available ends not-ready or wrap-up, or cancels a not-ready asked for during a call.
_MAY_BECOME_AVAILABLE = frozenset({_NOT_READY, _WRAP_UP, _ON_CALL})


class _Timer(IntEnum):
    STEP = 0  # a call's expansion step runs out
    PREFERRED = 1  # a call's preferred-agent window closes
    RING = 2  # an offered call's ring timeout
    WRAP_UP = 3  # an agent's wrap-up ends


class RoutingEngine:
    """Routing state and rules for one contact centre; see the module docstring."""

    def __init__(
        self,
        queues: Iterable[QueueConfig] = (),
        agents: Iterable[AgentConfig] = (),
        *,
        skills: Iterable[str] = (),
        default_handle_time_s: float = 180.0,
        timezone: str = "UTC",
    ) -> None:
        """`skills`: the declared skill names; a call may require those and any
        skill the queues or agents name (see check_request)."""
        if default_handle_time_s <= 0:
            raise ValueError(f"default_handle_time_s must be positive: {default_handle_time_s}")
        zone(timezone)
        self._timezone = timezone
        self._default_handle_time_s = default_handle_time_s
        self._queues: dict[str, QueueRecord] = {}
        self._agents: dict[str, AgentRecord] = {}
        self._calls: dict[str, CallRecord] = {}
        # Agent id -> ids of waiting calls held for them.
        self._held_for: dict[str, set[str]] = {}
        # Agent id -> ids of calls whose preferred-agent window for them runs.
        self._windows: dict[str, set[str]] = {}
        self._deadlines: Deadlines[tuple[_Timer, str]] = Deadlines()
        self._sequence = count()
        self._clock = -inf
        self._day_start = -inf
        self._day_end = -inf
        # Restored agents are routed by the next input that carries `now`.
        self._unsettled = False
        queue_configs, agent_configs, compiled = validated_configuration(queues, agents)
        self._skills = skills_named(skills, queue_configs, agent_configs)
        self._install(queue_configs, agent_configs, compiled)

    # -- configuration ------------------------------------------------------------------------

    def configure(
        self,
        queues: Iterable[QueueConfig],
        agents: Iterable[AgentConfig],
        now: float,
        *,
        skills: Iterable[str] = (),
    ) -> list[Decision]:
        """Replace the configuration live, keeping agent states and waiting calls.

        Removed agents are logged out (one on a call when the call ends); calls
        waiting or ringing in removed queues close. A waiting call keeps its
        step number (capped at the queue's new last step) and the time it
        started; its timers follow the new durations. It keeps its own
        criteria, even one naming a skill the new configuration lacks (it
        was accepted: it waits, as for a skill nobody has).
        """
        queue_configs, agent_configs, compiled = validated_configuration(queues, agents)
        self._skills = skills_named(skills, queue_configs, agent_configs)
        out, at = self._start(now)
        self._close_removed_queues({config.name for config in queue_configs}, at, out)
        requeued = self._drop_removed_agents({config.agent_id for config in agent_configs}, at, out)
        self._install(queue_configs, agent_configs, compiled)
        for call in requeued:
            self._announce_queued(call, at, out)
        self._settle(at, out)
        for call in requeued:
            if call.step_overdue and call.status is _WAITING:
                call.step_overdue = False
                self._expire_step(call, at, out)
        return out

    # -- agent inputs ---------------------------------------------------------------------------

    def login(self, agent_id: str, now: float) -> list[Decision]:
        """A logged-out agent becomes available."""
        agent = self._agent_in(agent_id, _OUT, "log in")
        out, at = self._start(now)
        self._transition(agent, _AVAILABLE, None, at, out)
        self._rehold(agent_id, at)  # holds calls for them; they come first below if due
        self._route_agent(agent, at, out)
        return out

    def logout(self, agent_id: str, now: float) -> list[Decision]:
        """The agent logs out; during a call, when the call ends (no wrap-up)."""
        agent = self._agent_in(agent_id, _LOGGED_IN, "log out")
        out, at = self._start(now)
        self._step_away(agent, _LOGGED_OUT, None, WithdrawalReason.AGENT_LOGGED_OUT, at, out)
        return out

    def make_available(self, agent_id: str, now: float) -> list[Decision]:
        """From not-ready, or ending wrap-up early; during a call, cancels a pending not-ready."""
        agent = self._agent_in(agent_id, _MAY_BECOME_AVAILABLE, "become available")
        if agent.state is _ON_CALL and agent.pending is None:
            raise IllegalTransition(f"agent {agent_id!r} is on a call")
        out, at = self._start(now)
        if agent.state is _ON_CALL:
            agent.pending = None
        else:
            self._become_available(agent, at, out)
        return out

    def make_not_ready(self, agent_id: str, reason: str, now: float) -> list[Decision]:
        """Not ready with a reason code; while ringing a refusal, during a call after it."""
        agent = self._agent_in(agent_id, _LOGGED_IN, "become not ready")
        out, at = self._start(now)
        self._step_away(agent, _NOT_READY, reason, WithdrawalReason.AGENT_REFUSED, at, out)
        return out

    def end_wrap_up(self, agent_id: str, now: float) -> list[Decision]:
        """The agent ends wrap-up before its timer."""
        agent = self._agent_in(agent_id, _IN_WRAP_UP, "end wrap-up")
        out, at = self._start(now)
        self._become_available(agent, at, out)
        return out

    # -- call inputs ----------------------------------------------------------------------------

    def enqueue(self, request: CallRequest, now: float) -> list[Decision]:
        """A caller (or a kept callback) asks the request's queue for an agent.

        virtual_enqueued_at None means now. UnknownQueue (a ValueError) for an
        unknown queue, IllegalTransition (a ValueError) for a call id already here,
        ValueError for the request's own criteria (see check_request).
        """
        queue = self._queue(request.queue)
        if request.call_id in self._calls:
            raise IllegalTransition(f"call {request.call_id!r} is already in the engine")
        # Most calls have no criteria of their own: not even a call to check them.
        own = (
            call_criteria(request, self._skills)
            if request.requirements or request.conditions
            else None
        )
        out, at = self._start(now)
        vea = at if request.virtual_enqueued_at is None else request.virtual_enqueued_at
        call = CallRecord(request.call_id, request, next(self._sequence), vea, queue)
        call.callback_number = request.callback_number
        call.own = own
        self._calls[call.call_id] = call
        self._enter(call, queue, at, out, set())
        return out

    @property
    def skills(self) -> frozenset[str]:
        """The skills a call may require: declared, or named by a queue or an agent."""
        return self._skills

    def check_request(self, request: CallRequest) -> None:
        """Raise what enqueue would for the request itself, changing nothing.

        UnknownQueue for an unknown queue; ValueError for its own criteria: a
        skill neither declared nor named by the configuration, a skill twice,
        a level outside 1..10, a malformed condition (criteria.call_criteria).
        """
        self._queue(request.queue)
        call_criteria(request, self._skills)

    def caller_left(self, call_id: str, now: float) -> list[Decision]:
        """The caller hung up: abandoned while waiting or ringing; a call end once answered."""
        call = self._call(call_id)
        out, at = self._start(now)
        if call.status is _TALKING:
            self._end_call(call, at, out)
            return out
        out.append(CallLeft(call_id, call.queue.name, CallOutcome.ABANDONED, at))
        if call.status is _OFFERED:
            agent = self._agent_of(call)
            out.append(OfferWithdrawn(call_id, agent.agent_id, WithdrawalReason.CALLER_LEFT, at))
            self._forget(call)
            agent.call = None
            self._become_available(agent, at, out)
        else:
            self._remove_from_line(call)
            self._forget(call)
        return out

    def offer_accepted(self, call_id: str, now: float) -> list[Decision]:
        """The reserved agent answered."""
        call = self._call_in(call_id, _OFFERED, "answer it")
        out, at = self._start(now)
        self._deadlines.cancel((_Timer.RING, call_id))
        self._deadlines.cancel((_Timer.STEP, call_id))
        self._end_window(call)
        call.status = _TALKING
        call.answered_at = at
        call.step_overdue = False
        self._transition(self._agent_of(call), _ON_CALL, None, at, out)
        out.append(CallLeft(call_id, call.queue.name, CallOutcome.ANSWERED, at))
        return out

    def offer_failed(self, call_id: str, failure: OfferFailure, now: float) -> list[Decision]:
        """The agent's phone did not take the call: the call goes back, the agent not-ready."""
        reason = OfferFailure(failure).value
        call = self._call_in(call_id, _OFFERED, "fail its offer")
        out, at = self._start(now)
        self._refuse(self._agent_of(call), _NOT_READY, reason, None, at, out)
        return out

    def call_ended(self, call_id: str, now: float) -> list[Decision]:
        """An answered call hung up: the agent goes to wrap-up (or available, or pending)."""
        call = self._call_in(call_id, _TALKING, "end it")
        out, at = self._start(now)
        self._end_call(call, at, out)
        return out

    def convert_to_callback(self, call_id: str, number: str, now: float) -> list[Decision]:
        """The waiting caller left a number: the call keeps its place as a callback."""
        call = self._call_in(call_id, _WAITING, "make it a callback")
        if call.callback_number is not None:
            raise IllegalTransition(f"call {call_id!r} is already a callback")
        if not number:
            raise ValueError("a callback needs a number")
        call.callback_number = number  # before routing restored agents: an offer carries it
        out, _ = self._start(now)
        return out

    def tick(self, now: float) -> list[Decision]:
        """Apply every timer due by `now` at its own deadline, in time order."""
        out: list[Decision] = []
        if self._unsettled:
            self._begin(now, out)
        while (due := self._deadlines.pop_due(now)) is not None:
            deadline, (kind, subject) = due
            at = self._advance(deadline)
            match kind:
                case _Timer.STEP:
                    self._step_ran_out(self._calls[subject], at, out)
                case _Timer.PREFERRED:
                    self._window_closed(self._calls[subject], at, out)
                case _Timer.RING:
                    agent = self._agent_of(self._calls[subject])
                    reason = OfferFailure.NO_ANSWER.value
                    self._refuse(agent, _NOT_READY, reason, WithdrawalReason.RING_TIMEOUT, at, out)
                case _Timer.WRAP_UP:
                    self._become_available(self._agents[subject], at, out)
        self._advance(now)
        return out

    def next_deadline(self) -> float | None:
        """When tick() has something to do next; None when no timer runs."""
        if self._unsettled:
            return self._clock
        return self._deadlines.next_at()

    # -- recovery -------------------------------------------------------------------------------

    def restore_agent(
        self,
        agent_id: str,
        state: AgentState,
        since: float,
        reason: str | None = None,
        *,
        queue: str | None = None,
    ) -> None:
        """Set an agent's state as found after a restart (no decisions: it is not a transition).

        For logged_out, available, not_ready and wrap_up; a talking agent is
        restored with restore_talking. Wrap-up runs until `since` + the wrap-up
        time of `queue` (default: the longest among the agent's queues). The
        next input, or tick(), routes restored agents.
        """
        agent = self._active_agent(agent_id)
        if state not in _RESTORABLE:
            raise ValueError(f"cannot restore agent {agent_id!r} as {state}: use restore_talking")
        if agent.state in _HOLDING_CALL:
            raise IllegalTransition(f"agent {agent_id!r} holds call {agent.call_id!r}")
        wrap_queue = self._queue(queue) if queue is not None else None
        self._clock = max(self._clock, since)
        agent.pending = None
        self._set_state(agent, state, reason if state is _NOT_READY else None, since)
        agent.call_id = None
        agent.queue = None
        if state is _WRAP_UP:
            if wrap_queue is None:
                wrap_s = max((self._queues[q].config.wrap_up_s for q in agent.qualified), default=0)
            else:
                wrap_s = wrap_queue.config.wrap_up_s
                agent.queue = wrap_queue.name
            agent.talk_s = 0.0
            agent.wrap_handle_time = None  # the talk time is unknown: no sample
            self._deadlines.schedule((_Timer.WRAP_UP, agent_id), since + wrap_s)
        self._unsettled = True

    def restore_talking(
        self, call_id: str, queue: str, agent_id: str, answered_at: float, caller: str = ""
    ) -> None:
        """A call still connected after a restart: the agent is on it since `answered_at`."""
        talking_queue = self._queue(queue)
        agent = self._active_agent(agent_id)
        if call_id in self._calls:
            raise IllegalTransition(f"call {call_id!r} is already in the engine")
        if agent.state in _HOLDING_CALL:
            raise IllegalTransition(f"agent {agent_id!r} holds call {agent.call_id!r}")
        request = CallRequest(call_id, queue, virtual_enqueued_at=answered_at, caller=caller)
        call = CallRecord(call_id, request, next(self._sequence), answered_at, talking_queue)
        call.status = _TALKING
        call.answered_at = answered_at
        call.agent = agent
        self._calls[call_id] = call
        self._clock = max(self._clock, answered_at)
        agent.pending = None
        agent.call = call
        agent.call_id = call_id
        agent.queue = queue
        self._set_state(agent, _ON_CALL, None, answered_at)
        self._unsettled = True

    # -- queries --------------------------------------------------------------------------------

    def agent(self, agent_id: str) -> AgentView:
        return self._agent(agent_id).view()

    def agents(self) -> list[AgentView]:
        """Every configured agent (and one removed but still on a call), in configuration order."""
        ordered = sorted(self._agents.values(), key=lambda a: (a.retired, a.order))
        return [agent.view() for agent in ordered]

    def call(self, call_id: str) -> CallView:
        return self._call(call_id).view()

    def callbacks(self) -> list[CallView]:
        """The kept callbacks (calls with a number to call back), waiting or offered.

        A scan of attributes only: views are made for the callbacks, not for every call.
        """
        return [call.view() for call in self._calls.values() if call.callback_number]

    def waiting(self, queue: str) -> list[CallView]:
        """The queue's calls in line (not offered), in service order."""
        line = self._queue(queue)
        return [self._calls[key[3]].view() for key in merge(*line.lines, line.held)]

    def position(self, call_id: str) -> int:
        """1-based place in its queue's service order; 0 once offered or answered."""
        call = self._call(call_id)
        if call.status is not _WAITING:
            return 0
        return self._position(call)

    def estimated_wait(
        self, queue: str, position: int, now: float, *, call_id: str | None = None
    ) -> float | None:
        """Seconds until the caller at `position` reaches an agent; None when nobody can serve.

        With `call_id` of a waiting call that has criteria of its own, only
        the serving agents who meet them count (a scan of the agents: call it
        for announcements, not in a loop). The estimate depends only on state
        changed by inputs, so it is the same at any `now` between two inputs.
        """
        line = self._queue(queue)
        serving = line.serving
        call = self._calls.get(call_id) if call_id is not None else None
        if call is not None and call.own is not None and call.queue is line:
            serving = self._serving_for(line, call.own)
        return estimated_wait_s(position, line.handle_time.seconds, serving)

    def is_open(self, queue: str, now: float) -> bool:
        return is_open(self._queue(queue).config.hours, now)

    def snapshot(self, now: float) -> EngineSnapshot:
        """Per queue and per agent figures for the wallboard (a scan: call it once a second)."""
        by_state: dict[str, dict[AgentState, int]] = {
            name: dict.fromkeys(AgentState, 0) for name in self._queues
        }
        for agent in self._agents.values():
            for name in agent.queue_order:
                by_state[name][agent.state] += 1
        ringing = dict.fromkeys(self._queues, 0)
        oldest: dict[str, float] = {}
        for call in self._calls.values():
            if call.status is _TALKING:
                continue
            name = call.queue.name
            if call.status is _OFFERED:
                ringing[name] += 1
            oldest[name] = min(oldest.get(name, inf), call.virtual_enqueued_at)
        queues = []
        for name, line in self._queues.items():
            waiting = sum(map(len, line.lines)) + len(line.held)
            queues.append(
                QueueSnapshot(
                    queue=name,
                    open=is_open(line.config.hours, now),
                    waiting=waiting,
                    ringing=ringing[name],
                    longest_wait_s=max(0.0, now - oldest[name]) if name in oldest else 0.0,
                    estimated_wait_s=estimated_wait_s(
                        waiting + 1, line.handle_time.seconds, line.serving
                    ),
                    agents=MappingProxyType(by_state[name]),
                )
            )
        return EngineSnapshot(now, tuple(queues), tuple(self.agents()))

    def queue_figures(self, now: float, names: Iterable[str] | None = None) -> list[QueueFigures]:
        """The figures of the named queues (every queue by default; unknown names skipped).

        Costs the queue's calls in line, not the agents or the other calls:
        for the agents' desktops, once a second per queue or per connecting desktop.
        """
        queues = self._queues
        lines = queues.values() if names is None else [queues[n] for n in names if n in queues]
        out = []
        for line in lines:
            waiting = sum(map(len, line.lines)) + len(line.held)
            # Each line is in service order (priority first): only a scan finds the oldest.
            oldest = min((key[1] for keys in (*line.lines, line.held) for key in keys), default=inf)
            out.append(
                QueueFigures(
                    queue=line.name,
                    open=is_open(line.config.hours, now),
                    waiting=waiting,
                    longest_wait_s=max(0.0, now - oldest) if waiting else 0.0,
                    estimated_wait_s=estimated_wait_s(
                        waiting + 1, line.handle_time.seconds, line.serving
                    ),
                )
            )
        return out

    def _serving_for(self, queue: QueueRecord, own: CallCriteria) -> int:
        """QueueRecord.serving restricted to the agents who meet a call's own criteria."""
        name = queue.name
        serving = 0
        for agent in self._agents.values():
            qualified = agent.qualified.get(name)
            if qualified and qualified[0] and agent.state in _SERVING and own.admits(agent.config):
                serving += 1
        return serving

    # -- lookups --------------------------------------------------------------------------------

    def _queue(self, name: str) -> QueueRecord:
        try:
            return self._queues[name]
        except KeyError:
            raise UnknownQueue(name) from None

    def _agent(self, agent_id: str) -> AgentRecord:
        try:
            return self._agents[agent_id]
        except KeyError:
            raise UnknownAgent(agent_id) from None

    def _agent_in(self, agent_id: str, states: frozenset[AgentState], doing: str) -> AgentRecord:
        agent = self._active_agent(agent_id)
        if agent.state not in states:
            raise IllegalTransition(f"agent {agent_id!r} cannot {doing} while {agent.state}")
        return agent

    def _call_in(self, call_id: str, status: CallStatus, doing: str) -> CallRecord:
        call = self._call(call_id)
        if call.status is not status:
            raise IllegalTransition(f"call {call_id!r} is {call.status}: cannot {doing}")
        return call

    def _active_agent(self, agent_id: str) -> AgentRecord:
        agent = self._agent(agent_id)
        if agent.retired:
            raise IllegalTransition(
                f"agent {agent_id!r} was removed from the configuration; "
                "they log out when their call ends"
            )
        return agent

    def _call(self, call_id: str) -> CallRecord:
        try:
            return self._calls[call_id]
        except KeyError:
            raise UnknownCall(call_id) from None

    @staticmethod
    def _agent_of(call: CallRecord) -> AgentRecord:
        """The agent an offered or talking call is with."""
        if call.agent is None:
            raise AssertionError(f"call {call.call_id!r} is {call.status} without an agent")
        return call.agent

    # -- time -----------------------------------------------------------------------------------

    def _start(self, now: float) -> tuple[list[Decision], float]:
        """An input's decision list and effective instant (see _begin)."""
        out: list[Decision] = []
        return out, self._begin(now, out)

    def _begin(self, now: float, out: list[Decision]) -> float:
        """Start applying an input at `now`: the effective instant, restored agents routed."""
        at = self._advance(now)
        if self._unsettled:
            self._settle(at, out)
        return at

    def _advance(self, now: float) -> float:
        at = max(now, self._clock)
        self._clock = at
        if at >= self._day_end:
            self._start_day(at)
        return at

    def _start_day(self, at: float) -> None:
        """A new day in the centre's time zone: "least occupied today" starts from zero."""
        first = self._day_end == -inf
        self._day_start, self._day_end = day_bounds(at, self._timezone)
        if first:
            return
        for agent in self._agents.values():
            agent.occupied_s = 0.0
            if agent.state is _AVAILABLE:
                self._unindex_available(agent)
                self._index_available(agent)

    # -- agents ---------------------------------------------------------------------------------

    def _set_state(
        self, agent: AgentRecord, state: AgentState, reason: str | None, at: float
    ) -> None:
        """Change the agent's state with its indexes, counters, occupancy and wrap-up sample."""
        previous = agent.state
        if previous is _AVAILABLE:
            self._unindex_available(agent)
        if previous is _WRAP_UP:
            self._deadlines.cancel((_Timer.WRAP_UP, agent.agent_id))
            if agent.wrap_handle_time is not None:
                agent.wrap_handle_time.record(agent.talk_s + max(0.0, at - agent.since))
                agent.wrap_handle_time = None
        if previous in _HANDLING and state not in _HANDLING and agent.busy_since is not None:
            agent.occupied_s += max(0.0, at - max(agent.busy_since, self._day_start))
            agent.busy_since = None
        if state in _HANDLING and previous not in _HANDLING:
            agent.busy_since = at
        self._count(agent, -1)
        agent.state = state
        agent.since = at
        agent.reason = reason
        self._count(agent, +1)
        if state is _AVAILABLE:
            self._index_available(agent)

    def _transition(
        self,
        agent: AgentRecord,
        state: AgentState,
        reason: str | None,
        at: float,
        out: list[Decision],
    ) -> None:
        """_set_state, reported. The decision names the call entered, or the call left."""
        previous = agent.state
        call_id = agent.call_id
        self._set_state(agent, state, reason, at)
        if state not in (_RESERVED, _ON_CALL, _WRAP_UP):
            agent.call_id = None
            agent.queue = None
        out.append(AgentStateChanged(agent.agent_id, state, previous, reason, call_id, at))

    def _count(self, agent: AgentRecord, sign: int) -> None:
        if agent.state is _LOGGED_OUT:
            return
        serving = agent.state in _SERVING
        for name, qualified in agent.qualified.items():
            queue = self._queues[name]
            if True in qualified:
                queue.staffed += sign
            if serving and qualified[0]:
                queue.serving += sign

    def _index_available(self, agent: AgentRecord) -> None:
        config = agent.config
        for name, qualified in agent.qualified.items():
            queue = self._queues[name]
            policy = queue.config.policy
            for step, ok in enumerate(qualified):
                if not ok:
                    continue
                key = agent_key(
                    policy,
                    agent_id=config.agent_id,
                    order=agent.order,
                    available_since=agent.since,
                    skill_sum=(
                        queue.steps[step].skill_sum(config)
                        if policy is AgentPolicy.MOST_SKILLED
                        else 0
                    ),
                    occupied_s=agent.occupied_s,
                )
                ordered = queue.available[step]
                insort(ordered, key)
                agent.available_keys.append((ordered, key))

    @staticmethod
    def _unindex_available(agent: AgentRecord) -> None:
        for ordered, key in agent.available_keys:
            del ordered[bisect_left(ordered, key)]
        agent.available_keys.clear()

    def _step_away(
        self,
        agent: AgentRecord,
        state: AgentState,
        reason: str | None,
        withdrawal: WithdrawalReason,
        at: float,
        out: list[Decision],
    ) -> None:
        """Not ready or logged out: after the call, as a refusal while ringing, or now."""
        if agent.state is _ON_CALL:
            agent.pending = (state, reason)
        elif agent.state is _RESERVED:
            self._refuse(agent, state, reason, withdrawal, at, out)
        else:
            self._stop_work(agent, state, reason, at, out)

    def _stop_work(
        self,
        agent: AgentRecord,
        state: AgentState,
        reason: str | None,
        at: float,
        out: list[Decision],
    ) -> None:
        """Into not ready or logged out; a logout releases the calls kept for the agent."""
        self._transition(agent, state, reason, at, out)
        if state is _LOGGED_OUT:
            self._route_in_order(self._rehold(agent.agent_id, at), at, out)

    def _become_available(self, agent: AgentRecord, at: float, out: list[Decision]) -> None:
        self._transition(agent, _AVAILABLE, None, at, out)
        self._route_agent(agent, at, out)

    def _refuse(
        self,
        agent: AgentRecord,
        state: AgentState,
        reason: str | None,
        withdrawal: WithdrawalReason | None,
        at: float,
        out: list[Decision],
    ) -> None:
        """A refused offer (RONA): the agent leaves to `state`, the call goes back in line."""
        if withdrawal is None:
            call = self._release_offer(agent)
        else:
            call = self._withdraw(agent, withdrawal, at, out)
        self._transition(agent, state, reason, at, out)
        self._announce_queued(call, at, out)
        released = self._rehold(agent.agent_id, at) if state is _LOGGED_OUT else []
        if call.step_overdue:
            call.step_overdue = False
            self._expire_step(call, at, out)
        else:
            released.append(call)
        self._route_in_order(released, at, out)

    def _withdraw(
        self, agent: AgentRecord, reason: WithdrawalReason, at: float, out: list[Decision]
    ) -> CallRecord:
        call = self._release_offer(agent)
        out.append(OfferWithdrawn(call.call_id, agent.agent_id, reason, at))
        return call

    def _release_offer(self, agent: AgentRecord) -> CallRecord:
        """Undo the reservation: the call is waiting again, not yet in line."""
        call = agent.call
        if call is None:
            raise AssertionError(f"agent {agent.agent_id!r} is reserved without a call")
        self._deadlines.cancel((_Timer.RING, call.call_id))
        agent.call = None
        call.agent = None
        call.status = _WAITING
        if call.request.preferred_agent == agent.agent_id:
            # Who did not answer is not kept waited for.
            self._end_window(call)
        return call

    def _end_call(self, call: CallRecord, at: float, out: list[Decision]) -> None:
        agent = self._agent_of(call)
        queue = call.queue
        talk_s = max(0.0, at - call.answered_at)
        out.append(CallEnded(call.call_id, agent.agent_id, queue.name, talk_s, at))
        self._forget(call)
        agent.call = None
        if agent.pending is not None:
            state, reason = agent.pending
            agent.pending = None
            queue.handle_time.record(talk_s)
            self._stop_work(agent, state, reason, at, out)
            if agent.retired:
                del self._agents[agent.agent_id]
        elif queue.config.wrap_up_s > 0:
            agent.talk_s = talk_s
            agent.wrap_handle_time = queue.handle_time
            self._transition(agent, _WRAP_UP, None, at, out)
            self._deadlines.schedule((_Timer.WRAP_UP, agent.agent_id), at + queue.config.wrap_up_s)
        else:
            queue.handle_time.record(talk_s)
            self._become_available(agent, at, out)

    # -- calls ----------------------------------------------------------------------------------

    def _enter(
        self,
        call: CallRecord,
        queue: QueueRecord,
        at: float,
        out: list[Decision],
        visited: set[str],
    ) -> None:
        """The call arrives in `queue` (enqueue or overflow): admitted, or turned away."""
        visited.add(queue.name)
        action = self._admission(queue, at)
        if isinstance(action, Overflow) and action.queue in visited:
            action = CloseCall()
        call.queue = queue
        if isinstance(action, ENDING_ACTIONS):
            self._leave(call, action, at, out, visited)
            return
        call.step = 0
        call.step_started_at = at
        call.entered_at = at
        call.step_overdue = False
        call.priority = self._priority(call)
        preferred = call.request.preferred_agent
        if preferred is not None and queue.config.preferred_agent_s > 0:
            call.preferred_until = at + queue.config.preferred_agent_s
            self._deadlines.schedule((_Timer.PREFERRED, call.call_id), call.preferred_until)
            self._windows.setdefault(preferred, set()).add(call.call_id)
        call.status = _WAITING
        self._put_in_line(call, at)
        self._announce_queued(call, at, out)
        out.append(StepStarted(call.call_id, queue.name, 0, call.priority, at))
        self._schedule_step(call)
        if isinstance(action, OfferCallback) and call.callback_number is None:
            out.append(CallbackOffered(call.call_id, queue.name, at))
        self._route_call(call, at, out)

    def _admission(self, queue: QueueRecord, at: float) -> StepAction | None:
        """What the queue does with an arriving call instead of queueing it plainly."""
        config = queue.config
        if not is_open(config.hours, at):
            return config.when_closed
        if config.when_unstaffed is not None and queue.staffed == 0:
            return config.when_unstaffed
        return None

    def _leave(
        self,
        call: CallRecord,
        action: Overflow | ToVoicemail | CloseCall,
        at: float,
        out: list[Decision],
        visited: set[str],
    ) -> None:
        """End the call's stay in its queue (it is not in line any more)."""
        name = call.queue.name
        self._deadlines.cancel((_Timer.STEP, call.call_id))
        self._end_window(call)
        match action:
            case Overflow(queue=target):
                out.append(CallLeft(call.call_id, name, CallOutcome.OVERFLOWED, at, target))
                self._enter(call, self._queues[target], at, out, visited)
            case ToVoicemail():
                out.append(CallLeft(call.call_id, name, CallOutcome.VOICEMAIL, at))
                self._forget(call)
            case CloseCall():
                out.append(CallLeft(call.call_id, name, CallOutcome.CLOSED, at))
                self._forget(call)

    def _step_ran_out(self, call: CallRecord, at: float, out: list[Decision]) -> None:
        if call.status is _OFFERED:
            call.step_overdue = True
        else:
            self._expire_step(call, at, out)

    def _expire_step(self, call: CallRecord, at: float, out: list[Decision]) -> None:
        """Apply the current step's expiry to a waiting call: next step, or leave."""
        queue = call.queue
        actions = queue.steps[call.step].on_expiry
        for action in actions:
            if isinstance(action, OfferCallback) and call.callback_number is None:
                out.append(CallbackOffered(call.call_id, queue.name, at))
        ending = ending_action(actions)
        self._remove_from_line(call)
        if ending is not None:
            self._leave(call, ending, at, out, {queue.name})
            return
        call.step += 1
        call.step_started_at = at
        call.priority = self._priority(call)
        self._put_in_line(call, at)
        out.append(StepStarted(call.call_id, queue.name, call.step, call.priority, at))
        self._schedule_step(call)
        self._route_call(call, at, out)

    def _schedule_step(self, call: CallRecord) -> None:
        duration = call.queue.steps[call.step].duration_s
        if duration is None:
            self._deadlines.cancel((_Timer.STEP, call.call_id))
        else:
            self._deadlines.schedule((_Timer.STEP, call.call_id), call.step_started_at + duration)

    def _window_closed(self, call: CallRecord, at: float, out: list[Decision]) -> None:
        self._end_window(call)
        if call.status is _WAITING and call.held_for is not None:
            self._remove_from_line(call)
            self._put_in_line(call, at)
            self._route_call(call, at, out)

    def _end_window(self, call: CallRecord) -> None:
        if call.preferred_until is None:
            return
        call.preferred_until = None
        self._deadlines.cancel((_Timer.PREFERRED, call.call_id))
        preferred = call.request.preferred_agent
        if preferred is not None:
            windowed = self._windows.get(preferred)
            if windowed is not None:
                windowed.discard(call.call_id)
                if not windowed:
                    del self._windows[preferred]

    def _forget(self, call: CallRecord) -> None:
        del self._calls[call.call_id]
        self._deadlines.cancel((_Timer.STEP, call.call_id))
        self._deadlines.cancel((_Timer.RING, call.call_id))
        self._end_window(call)

    def _priority(self, call: CallRecord) -> int:
        queue = call.queue
        return (
            queue.config.base_priority
            + call.request.priority
            + queue.steps[call.step].priority_bonus
        )

    def _holder(self, call: CallRecord, at: float) -> str | None:
        """The preferred agent the call is kept for right now, if any."""
        preferred = call.request.preferred_agent
        if preferred is None or call.preferred_until is None or at >= call.preferred_until:
            return None
        agent = self._agents.get(preferred)
        if agent is None or agent.state is _LOGGED_OUT or agent.retired:
            return None
        qualified = agent.qualified.get(call.queue.name)
        if qualified is None or not qualified[call.step]:
            return None
        if call.own is not None and not call.own.admits(agent.config):
            return None  # they could never take it: not worth waiting for
        return preferred

    def _put_in_line(self, call: CallRecord, at: float) -> None:
        """Insert a waiting call in its line, or among the held calls of its queue."""
        queue = call.queue
        call.held_for = self._holder(call, at)
        key = call_key(call.priority, call.virtual_enqueued_at, call.sequence, call.call_id)
        call.key = key
        if call.held_for is None:
            insort(queue.lines[call.step], key)
            if call.own is not None:
                queue.demanding[call.step] += 1
        else:
            insort(queue.held, key)
            self._held_for.setdefault(call.held_for, set()).add(call.call_id)

    def _remove_from_line(self, call: CallRecord) -> None:
        key = call.key
        if key is None:
            return
        queue = call.queue
        if call.held_for is None:
            line = queue.lines[call.step]
            if call.own is not None:
                queue.demanding[call.step] -= 1
        else:
            line = queue.held
            held = self._held_for[call.held_for]
            held.discard(call.call_id)
            if not held:
                del self._held_for[call.held_for]
            call.held_for = None
        del line[bisect_left(line, key)]
        call.key = None

    def _position(self, call: CallRecord) -> int:
        key = call.key
        if key is None:
            raise AssertionError(f"call {call.call_id!r} is waiting but not in line")
        queue = call.queue
        ahead = bisect_left(queue.held, key)
        for line in queue.lines:
            ahead += bisect_left(line, key)
        return ahead + 1

    def _announce_queued(self, call: CallRecord, at: float, out: list[Decision]) -> None:
        """Report a call in line; a call back from an offer is put in line here first."""
        if call.key is None:
            self._put_in_line(call, at)
        out.append(
            CallQueued(
                call.call_id,
                call.queue.name,
                call.priority,
                call.virtual_enqueued_at,
                self._position(call),
                at,
            )
        )

    def _rehold(self, agent_id: str, at: float) -> list[CallRecord]:
        """Re-decide which calls are kept for the agent (they logged in or out).

        Returns the calls released to everyone; the caller routes them.
        """
        windowed = self._windows.get(agent_id)
        if not windowed:
            return []
        released = []
        for call_id in list(windowed):
            call = self._calls[call_id]
            if call.status is _WAITING and self._holder(call, at) != call.held_for:
                self._remove_from_line(call)
                self._put_in_line(call, at)
                if call.held_for is None:
                    released.append(call)
        return released

    def _route_in_order(self, calls: list[CallRecord], at: float, out: list[Decision]) -> None:
        """Route calls that became routable together, in service order."""
        for call in sorted(calls, key=_line_key):
            if call.status is _WAITING:
                self._route_call(call, at, out)

    # -- matching -------------------------------------------------------------------------------

    def _route_call(self, call: CallRecord, at: float, out: list[Decision]) -> None:
        """The call became routable: offer it to the agent its queue's policy picks."""
        if call.held_for is not None:
            preferred = self._agents[call.held_for]
            if preferred.state is _AVAILABLE:
                self._offer(call, preferred, at, out)
            return
        queue = call.queue
        available = queue.available[call.step]
        if not available:
            return
        if call.own is None:
            key = pick_agent(queue.config.policy, available, queue.last_round_robin)
            self._offer(call, self._agents[key[3]], at, out)
            return
        agents = self._agents
        own = call.own
        for key in agents_in_turn(queue.config.policy, available, queue.last_round_robin):
            agent = agents[key[3]]
            if own.admits(agent.config):
                self._offer(call, agent, at, out)  # changes `available`: stop iterating
                return

    def _route_agent(self, agent: AgentRecord, at: float, out: list[Decision]) -> None:
        """The agent became available: offer them the first call in their ranking."""
        best: AgentCandidate | None = None
        queues = self._queues
        for name, qualified in agent.qualified.items():
            queue = queues[name]
            lines = queue.lines
            demanding = queue.demanding
            order = agent.queue_order[name]
            for step, ok in enumerate(qualified):
                if ok and (line := lines[step]):
                    if demanding[step]:
                        candidate = self._first_for(agent, line, order, best)
                        if candidate is None:
                            continue
                    else:
                        candidate = ranked_for_agent(line[0], order)
                    if best is None or candidate < best:
                        best = candidate
        # A call is held only for a preferred agent who meets its own criteria (_holder).
        for call_id in self._held_for.get(agent.agent_id, ()):
            held = self._calls[call_id]
            candidate = ranked_for_agent(_line_key(held), agent.queue_order[held.queue.name])
            if best is None or candidate < best:
                best = candidate
        if best is not None:
            self._offer(self._calls[best[4]], agent, at, out)

    def _first_for(
        self,
        agent: AgentRecord,
        line: list[CallKey],
        order: int,
        best: AgentCandidate | None,
    ) -> AgentCandidate | None:
        """The first call of `line` the agent meets, ranked; None if none beats `best`."""
        calls = self._calls
        config = agent.config
        for key in line:
            candidate = ranked_for_agent(key, order)
            if best is not None and candidate >= best:
                return None  # the rest of the line ranks lower still
            own = calls[key[3]].own
            if own is None or own.admits(config):
                return candidate
        return None

    def _offer(self, call: CallRecord, agent: AgentRecord, at: float, out: list[Decision]) -> None:
        queue = call.queue
        self._remove_from_line(call)
        call.status = _OFFERED
        call.agent = agent
        queue.last_round_robin = agent.order
        agent.call = call
        agent.call_id = call.call_id
        agent.queue = queue.name
        self._transition(agent, _RESERVED, None, at, out)
        ring_timeout_s = queue.config.ring_timeout_s
        self._deadlines.schedule((_Timer.RING, call.call_id), at + ring_timeout_s)
        out.append(
            Offer(
                call.call_id,
                agent.agent_id,
                queue.name,
                agent.config.endpoint,
                ring_timeout_s,
                call.callback_number,
                call.request.caller,
                at,
            )
        )

    def _settle(self, at: float, out: list[Decision]) -> None:
        """Reach the fixed point from scratch (after a reload or a restore)."""
        self._unsettled = False
        # Holds first: each available agent below then sees the calls kept for them.
        for agent_id in list(self._windows):
            self._rehold(agent_id, at)
        for agent in sorted(self._agents.values(), key=lambda a: (a.since, a.order)):
            if agent.state is _AVAILABLE:
                self._route_agent(agent, at, out)

    # -- (re)building ---------------------------------------------------------------------------

    def _close_removed_queues(self, kept: set[str], at: float, out: list[Decision]) -> None:
        """Calls waiting or ringing in a queue that is not kept close (talking ones go on)."""
        for call in list(self._calls.values()):
            if call.queue.name in kept or call.status is _TALKING:
                continue
            if call.status is _OFFERED:
                agent = self._agent_of(call)
                out.append(CallLeft(call.call_id, call.queue.name, CallOutcome.CLOSED, at))
                out.append(
                    OfferWithdrawn(call.call_id, agent.agent_id, WithdrawalReason.QUEUE_REMOVED, at)
                )
                self._forget(call)
                agent.call = None
                self._transition(agent, _AVAILABLE, None, at, out)
            else:
                self._remove_from_line(call)
                out.append(CallLeft(call.call_id, call.queue.name, CallOutcome.CLOSED, at))
                self._forget(call)

    def _drop_removed_agents(
        self, kept: set[str], at: float, out: list[Decision]
    ) -> list[CallRecord]:
        """Log out and forget agents not kept; return the calls they were offered.

        One on a call stays, retired, until the call ends.
        """
        requeued: list[CallRecord] = []
        for agent in list(self._agents.values()):
            if agent.agent_id in kept:
                continue
            if agent.state is _ON_CALL:
                agent.retired = True
                agent.pending = (_LOGGED_OUT, None)
                continue
            if agent.state is _RESERVED:
                requeued.append(self._withdraw(agent, WithdrawalReason.AGENT_LOGGED_OUT, at, out))
            if agent.state is not _LOGGED_OUT:
                self._transition(agent, _LOGGED_OUT, None, at, out)
            del self._agents[agent.agent_id]
        return requeued

    def _install(
        self,
        queues: tuple[QueueConfig, ...],
        agents: tuple[AgentConfig, ...],
        compiled: dict[str, tuple[StepCriteria, ...]],
    ) -> None:
        """Take a validated configuration and rebuild every index from the live state."""
        previous = self._queues
        self._queues = {}
        for config in queues:
            steps = compiled[config.name]
            old = previous.get(config.name)
            self._queues[config.name] = QueueRecord(
                config=config,
                steps=steps,
                handle_time=old.handle_time if old else HandleTime(self._default_handle_time_s),
                lines=[[] for _ in steps],
                demanding=[0] * len(steps),
                held=[],
                available=[[] for _ in steps],
                last_round_robin=old.last_round_robin if old else None,
            )
        for order, agent_config in enumerate(agents):
            agent = self._agents.get(agent_config.agent_id)
            if agent is None:
                self._agents[agent_config.agent_id] = AgentRecord(agent_config, order)
            else:
                agent.config = agent_config
                agent.order = order
                if agent.retired:  # removed during a call, configured again before its end
                    agent.retired = False
                    agent.pending = None
        for agent in self._agents.values():
            agent.available_keys = []
            if agent.retired:
                agent.qualified = {}
                agent.queue_order = {}
            else:
                agent.queue_order = {name: i for i, name in enumerate(agent.config.queues)}
                agent.qualified = {
                    name: tuple(step.admits(agent.config) for step in self._queues[name].steps)
                    for name in agent.config.queues
                }
            self._count(agent, +1)
            if agent.state is _AVAILABLE:
                self._index_available(agent)
        self._held_for = {}
        self._windows = {}
        for call in self._calls.values():
            queue = self._queues.get(call.queue.name)
            if call.status is _TALKING:
                if queue is not None:
                    call.queue = queue  # its wrap-up follows the new configuration
                continue
            if queue is None:
                raise AssertionError(f"call {call.call_id!r} is left in a removed queue")
            call.queue = queue
            call.key = None
            call.held_for = None
            call.step = min(call.step, len(queue.steps) - 1)
            call.priority = self._priority(call)
            if call.step_overdue:
                # It ran out while ringing under the old durations; under the new
                # ones it may not have, or the step may now be open-ended.
                duration = queue.steps[call.step].duration_s
                call.step_overdue = (
                    duration is not None and call.step_started_at + duration <= self._clock
                )
            self._schedule_step(call)
            self._reopen_window(call)
            if call.status is _WAITING:
                self._put_in_line(call, self._clock)

    def _reopen_window(self, call: CallRecord) -> None:
        """Recompute a call's preferred window from its queue's current setting."""
        preferred = call.request.preferred_agent
        window_s = call.queue.config.preferred_agent_s
        until = call.entered_at + window_s
        if preferred is None or window_s <= 0 or until <= self._clock:
            call.preferred_until = None
            self._deadlines.cancel((_Timer.PREFERRED, call.call_id))
            return
        call.preferred_until = until
        self._deadlines.schedule((_Timer.PREFERRED, call.call_id), until)
        self._windows.setdefault(preferred, set()).add(call.call_id)


def _line_key(call: CallRecord) -> CallKey:
    if call.key is None:
        raise AssertionError(f"call {call.call_id!r} is not in line")
    return call.key
