"""Invariants of the routing engine over random configurations and input sequences.

A harness feeds random inputs at increasing times, follows the engine's
decisions with its own bookkeeping, and after every input checks:
- an agent never holds two reservations, and every reservation is reported;
- a reserved agent qualified for the call's queue and step, and met the call's
  own requirements and conditions, when it was offered (qualification
  recomputed here from the configuration and the request, not the engine's);
- within a queue and a priority, calls are offered in virtual-wait order;
- every agent transition is reported (the decisions replay to the engine's state);
- the fixed point: no available agent qualifies for a waiting call not kept
  for its preferred agent (a call is kept only for one who qualifies);
- an input that raises changes nothing.
At the end it drives the centre to quiescence (everyone logged in and
available, every offer answered, every call ended, every timer past) and checks
that every call was answered, abandoned, sent to voicemail or closed, or still
waits for a step nobody on the roster qualifies for (with its own criteria).
Some calls bring criteria of their own, mixed in the same lines as plain ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctiserver.acd.decisions import (
    AgentStateChanged,
    CallEnded,
    CallLeft,
    CallQueued,
    Decision,
    Offer,
    OfferWithdrawn,
    StepStarted,
)
from ctiserver.acd.engine import (
    IllegalTransition,
    RoutingEngine,
    UnknownAgent,
    UnknownCall,
    UnknownQueue,
)
from ctiserver.acd.model import (
    AddSkill,
    AgentConfig,
    AgentPolicy,
    AgentState,
    AttributeCondition,
    CallOutcome,
    CallRequest,
    CloseCall,
    OfferCallback,
    OfferFailure,
    Overflow,
    QueueConfig,
    RaisePriority,
    RelaxLevel,
    RemoveSkill,
    SkillRequirement,
    Step,
    StepAction,
    ToVoicemail,
)
from ctiserver.acd.views import AgentView, CallStatus, CallView

SKILLS = ("sales", "tech")
QUEUE_NAMES = ("q0", "q1", "q2")
AGENT_IDS = ("a0", "a1", "a2", "a3")
START = 1_795_420_800.0  # 2026-11-23 08:00 UTC
STEADY = (
    RelaxLevel("sales", 3),
    RelaxLevel("tech", 9),
    AddSkill("tech", 4),
    RemoveSkill("sales"),
    RaisePriority(2),
    OfferCallback(),
    ToVoicemail(),
    CloseCall(),
)
CONDITIONS = (
    AttributeCondition("language", "=", "zh"),
    AttributeCondition("language", "!=", "zh"),
    AttributeCondition("language", "in", ("zh", "en")),
)
# A call's own requirements and conditions, picked per request: plain calls
# and calls only some agents of a step may take share the lines.
CALL_NEEDS: tuple[tuple[tuple[SkillRequirement, ...], tuple[AttributeCondition, ...]], ...] = (
    ((), ()),
    ((SkillRequirement("sales", 3),), ()),
    ((SkillRequirement("tech", 6),), (AttributeCondition("language", "in", ("zh", "en")),)),
    ((), (AttributeCondition("language", "!=", "zh"),)),
)
EXPECTED_ERRORS = (IllegalTransition, UnknownCall, UnknownAgent, UnknownQueue)
TERMINAL = {CallOutcome.ABANDONED, CallOutcome.VOICEMAIL, CallOutcome.CLOSED}


# -- random configurations --------------------------------------------------------------------


def expiry_actions(index: int) -> st.SearchStrategy[tuple[StepAction, ...]]:
    # Overflow only to later queues: no endless overflow cycles while driving to quiescence.
    later = tuple(Overflow(name) for name in QUEUE_NAMES[index + 1 :])
    return st.lists(st.sampled_from(STEADY + later), max_size=2).map(tuple)


requirements = st.none() | st.lists(
    st.builds(SkillRequirement, st.sampled_from(SKILLS), st.integers(1, 10)),
    max_size=2,
    unique_by=lambda r: r.skill,
).map(tuple)


@st.composite
def queue_configs(draw: st.DrawFn, index: int) -> QueueConfig:
    step_count = draw(st.integers(0, 3))
    steps = []
    for position in range(step_count):
        last = position == step_count - 1
        duration = draw(st.sampled_from([None, 4.0, 10.0, 25.0] if last else [0.0, 4.0, 10.0]))
        steps.append(
            Step(
                duration,
                draw(requirements),
                tuple(draw(st.lists(st.sampled_from(CONDITIONS), max_size=1))),
                draw(expiry_actions(index)),
            )
        )
    later = [Overflow(name) for name in QUEUE_NAMES[index + 1 :]]
    return QueueConfig(
        QUEUE_NAMES[index],
        tuple(steps),
        base_priority=draw(st.integers(0, 2)),
        policy=draw(st.sampled_from(AgentPolicy)),
        ring_timeout_s=draw(st.sampled_from([3.0, 10.0])),
        wrap_up_s=draw(st.sampled_from([0.0, 5.0])),
        preferred_agent_s=draw(st.sampled_from([0.0, 8.0, 60.0])),
        when_unstaffed=draw(st.sampled_from([None, None, ToVoicemail(), CloseCall(), *later])),
    )


@st.composite
def agent_configs(draw: st.DrawFn, agent_id: str, queue_names: tuple[str, ...]) -> AgentConfig:
    skills = draw(st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 10)))
    # Some of the centre's queues, in a random offer order.
    order = draw(st.permutations(queue_names))
    queues = tuple(order[: draw(st.integers(0, len(order)))])
    language = draw(st.sampled_from(["zh", "en", None]))
    return AgentConfig(
        agent_id,
        "王小明" if agent_id == "a0" else f"Agent {agent_id}",
        f"PJSIP/{agent_id}",
        skills=skills,
        attributes={"language": language} if language else {},
        queues=queues,
    )


@dataclass(frozen=True)
class Centre:
    queues: tuple[QueueConfig, ...]
    agents: tuple[AgentConfig, ...]


@st.composite
def generalist_centres(draw: st.DrawFn) -> Centre:
    """Everyone serves every queue and callers ask for their last agent: holds everywhere."""
    queue_count = draw(st.integers(1, 2))
    queues = tuple(
        QueueConfig(
            QUEUE_NAMES[i],
            (Step(None),),
            base_priority=draw(st.integers(0, 1)),
            policy=draw(st.sampled_from(AgentPolicy)),
            ring_timeout_s=5.0,
            wrap_up_s=draw(st.sampled_from([0.0, 5.0])),
            preferred_agent_s=draw(st.sampled_from([10.0, 60.0])),
        )
        for i in range(queue_count)
    )
    names = tuple(q.name for q in queues)
    # Skills and languages only matter to calls with criteria of their own.
    agents = tuple(
        AgentConfig(
            AGENT_IDS[i],
            f"Agent {i}",
            f"PJSIP/{AGENT_IDS[i]}",
            skills=draw(st.dictionaries(st.sampled_from(SKILLS), st.integers(1, 10))),
            attributes={"language": draw(st.sampled_from(["zh", "en"]))},
            queues=names,
        )
        for i in range(draw(st.integers(2, 4)))
    )
    return Centre(queues, agents)


@st.composite
def centres(draw: st.DrawFn) -> Centre:
    queue_count = draw(st.integers(1, 3))
    queues = tuple(draw(queue_configs(i)) for i in range(queue_count))
    names = tuple(q.name for q in queues)
    # Overflow targets must exist in this centre.
    queues = tuple(_without_missing_targets(q, names) for q in queues)
    agent_count = draw(st.integers(1, 4))
    agents = tuple(draw(agent_configs(AGENT_IDS[i], names)) for i in range(agent_count))
    return Centre(queues, agents)


def _without_missing_targets(queue: QueueConfig, names: tuple[str, ...]) -> QueueConfig:
    def keep(action: StepAction | None) -> bool:
        return not (isinstance(action, Overflow) and action.queue not in names)

    steps = tuple(
        Step(s.duration_s, s.requirements, s.conditions, tuple(filter(keep, s.on_expiry)))
        for s in queue.steps
    )
    unstaffed = queue.when_unstaffed if keep(queue.when_unstaffed) else None
    return QueueConfig(
        queue.name,
        steps,
        base_priority=queue.base_priority,
        policy=queue.policy,
        ring_timeout_s=queue.ring_timeout_s,
        wrap_up_s=queue.wrap_up_s,
        preferred_agent_s=queue.preferred_agent_s,
        when_unstaffed=unstaffed,
    )


# -- qualification recomputed from the configuration ------------------------------------------


def step_rules(
    queue: QueueConfig, step: int
) -> tuple[dict[str, int], tuple[AttributeCondition, ...], int]:
    """Requirements, conditions and raised priority at `step`, straight from the config."""
    if not queue.steps:
        return {}, (), 0
    levels: dict[str, int] = {}
    raised = 0
    for index, rules in enumerate(queue.steps):
        if rules.requirements is not None:
            levels = {r.skill: r.min_level for r in rules.requirements}
        if index == step:
            return levels, rules.conditions, raised
        for action in rules.on_expiry:
            if isinstance(action, RelaxLevel) and action.skill in levels:
                levels[action.skill] = max(1, levels[action.skill] - action.by)
            elif isinstance(action, AddSkill):
                levels[action.skill] = action.min_level
            elif isinstance(action, RemoveSkill):
                levels.pop(action.skill, None)
            elif isinstance(action, RaisePriority):
                raised += action.by
    return levels, queue.steps[-1].conditions, raised


def qualifies(
    agent: AgentConfig, queue: QueueConfig, step: int, request: CallRequest | None = None
) -> bool:
    """Whether the agent may take a call at `step` of `queue` (with the request's own criteria)."""
    if queue.name not in agent.queues:
        return False
    levels, conditions, _ = step_rules(queue, step)
    if request is not None:
        # The call's own hold on top of the step's, whatever the step relaxed.
        for requirement in request.requirements:
            levels[requirement.skill] = max(levels.get(requirement.skill, 0), requirement.min_level)
        conditions = conditions + request.conditions
    if any(agent.skills.get(skill, 0) < level for skill, level in levels.items()):
        return False
    for condition in conditions:
        value = agent.attributes.get(condition.attribute)
        if condition.operator == "=" and value != condition.value:
            return False
        if condition.operator == "!=" and value == condition.value:
            return False
        if condition.operator == "in" and value not in condition.value:
            return False
    return True


# -- the harness ------------------------------------------------------------------------------


@dataclass
class Tracked:
    request: CallRequest
    queue: str
    step: int = 0
    priority: int = 0
    virtual_enqueued_at: float = 0.0
    entering: bool = True
    outcome: CallOutcome | None = None
    ended: bool = False


@dataclass
class Harness:
    centres: tuple[Centre, Centre]
    # Requests with `extra` at least this name a preferred agent.
    preferred_from: int = 6
    engine: RoutingEngine = field(init=False)
    current: int = 0
    now: float = START
    last_at: float = START
    states: dict[str, AgentState] = field(default_factory=dict)
    reserved: dict[str, str] = field(default_factory=dict)
    calls: dict[str, Tracked] = field(default_factory=dict)

    def __post_init__(self) -> None:
        centre = self.centres[0]
        self.engine = RoutingEngine(
            centre.queues, centre.agents, skills=SKILLS, timezone="Asia/Shanghai"
        )

    @property
    def centre(self) -> Centre:
        return self.centres[self.current]

    def queue(self, name: str) -> QueueConfig:
        return next(q for q in self.centre.queues if q.name == name)

    def agent_config(self, agent_id: str) -> AgentConfig | None:
        return next((a for a in self.centre.agents if a.agent_id == agent_id), None)

    # -- inputs

    def apply(self, kind: str, target: int, extra: int, dt: float) -> None:
        self.now += dt
        engine, now = self.engine, self.now
        agent_id = AGENT_IDS[target % len(AGENT_IDS)]
        inputs: dict[str, Callable[[], list[Decision]]] = {
            "login": lambda: engine.login(agent_id, now),
            "logout": lambda: engine.logout(agent_id, now),
            "available": lambda: engine.make_available(agent_id, now),
            "not_ready": lambda: engine.make_not_ready(
                agent_id, ("午饭", "meeting")[extra % 2], now
            ),
            "end_wrap_up": lambda: engine.end_wrap_up(agent_id, now),
            "enqueue": lambda: self.enqueue(target, extra),
            "leave": lambda: engine.caller_left(self.pick(target, extra, None), now),
            "accept": lambda: engine.offer_accepted(
                self.pick(target, extra, CallStatus.OFFERED), now
            ),
            "fail": lambda: engine.offer_failed(
                self.pick(target, extra, CallStatus.OFFERED), list(OfferFailure)[extra % 3], now
            ),
            "end": lambda: engine.call_ended(self.pick(target, extra, CallStatus.TALKING), now),
            "callback": lambda: engine.convert_to_callback(
                self.pick(target, extra, CallStatus.WAITING), "13800138000", now
            ),
            "tick": lambda: engine.tick(now),
            "configure": self.reconfigure,
        }
        self.run(inputs[kind])

    def enqueue(self, target: int, extra: int) -> list[Decision]:
        call_id = f"c{len(self.calls)}"
        preferred = AGENT_IDS[extra % len(AGENT_IDS)] if extra >= self.preferred_from else None
        requirements, conditions = CALL_NEEDS[target // len(QUEUE_NAMES) % len(CALL_NEEDS)]
        request = CallRequest(
            call_id,
            QUEUE_NAMES[target % len(QUEUE_NAMES)],
            priority=extra % 3,
            virtual_enqueued_at=self.now - 5.0 * (extra % 4),
            preferred_agent=preferred,
            caller="李雷",
            callback_number="10086" if extra == 10 else None,
            requirements=requirements,
            conditions=conditions,
        )
        decisions = self.engine.enqueue(request, self.now)
        self.calls[call_id] = Tracked(request, request.queue)
        return decisions

    def reconfigure(self) -> list[Decision]:
        self.current = 1 - self.current
        centre = self.centre
        decisions = self.engine.configure(centre.queues, centre.agents, self.now, skills=SKILLS)
        # After a reload the steps of waiting calls are capped; follow the engine's count.
        for call_id, tracked in self.calls.items():
            if tracked.outcome is None or tracked.outcome is CallOutcome.OVERFLOWED:
                try:
                    view = self.engine.call(call_id)
                except UnknownCall:
                    continue
                if view.status is not CallStatus.TALKING:
                    tracked.step, tracked.priority = view.step, view.priority
        return decisions

    def pick(self, target: int, extra: int, status: CallStatus | None) -> str:
        """A call id: usually one in the wanted state, sometimes any (even a finished one)."""
        ids = list(self.calls)
        if not ids:
            return "no-such-call"
        if extra % 3 and status is not None:
            alive = [c for c in ids if self.alive(c) and self.engine.call(c).status is status]
            ids = alive or ids
        return ids[target % len(ids)]

    def work(self, view: AgentView) -> Callable[[], list[Decision]]:
        """What an agent in this state does next to get back to work."""
        engine, now, agent_id = self.engine, self.now, view.agent_id
        match view.state:
            case AgentState.LOGGED_OUT:
                return lambda: engine.login(agent_id, now)
            case AgentState.NOT_READY:
                return lambda: engine.make_available(agent_id, now)
            case AgentState.WRAP_UP:
                return lambda: engine.end_wrap_up(agent_id, now)
        call_id = view.call_id
        assert call_id is not None, view
        if view.state is AgentState.RESERVED:
            return lambda: engine.offer_accepted(call_id, now)
        return lambda: engine.call_ended(call_id, now)

    def alive(self, call_id: str) -> bool:
        tracked = self.calls[call_id]
        return tracked.outcome not in TERMINAL and not tracked.ended

    def run(self, apply: Callable[[], list[Decision]]) -> list[Decision]:
        before = self.fingerprint()
        waiting_before = self.waiting_calls()
        try:
            decisions = apply()
        except EXPECTED_ERRORS:
            assert self.fingerprint() == before, "a refused input changed the engine"
            return []
        self.follow(decisions, waiting_before)
        self.check_state()
        return decisions

    # -- checks

    def fingerprint(self) -> object:
        views: list[CallView | None] = []
        for call_id in self.calls:
            try:
                views.append(self.engine.call(call_id))
            except UnknownCall:
                views.append(None)
        return self.engine.snapshot(self.now), views, self.engine.next_deadline()

    def waiting_calls(self) -> dict[str, CallView]:
        return {
            view.call_id: view
            for queue in self.centre.queues
            for view in self.engine.waiting(queue.name)
        }

    def follow(self, decisions: list[Decision], waiting_before: dict[str, CallView]) -> None:
        waiting_after = self.waiting_calls()
        for decision in decisions:
            assert decision.at >= self.last_at, f"time ran backwards: {decision}"
            self.last_at = decision.at
            match decision:
                case AgentStateChanged(agent_id=agent_id, state=state, previous=previous):
                    assert previous == self.states.get(agent_id, AgentState.LOGGED_OUT), decision
                    self.states[agent_id] = state
                    if previous is AgentState.RESERVED:
                        call_id = self.reserved.pop(agent_id)
                        assert decision.call_id == call_id, decision
                    elif state is AgentState.ON_CALL:
                        raise AssertionError(f"on a call without an offer: {decision}")
                case Offer(call_id=call_id, agent_id=agent_id):
                    self.check_offer(decision, waiting_before, waiting_after)
                    self.reserved[agent_id] = call_id
                case OfferWithdrawn(call_id=call_id, agent_id=agent_id):
                    assert self.reserved.get(agent_id) == call_id, decision
                case CallQueued(call_id=call_id, queue=queue):
                    tracked = self.calls[call_id]
                    if tracked.entering:
                        tracked.step = 0
                    tracked.queue = queue
                    tracked.virtual_enqueued_at = decision.virtual_enqueued_at
                    tracked.priority = decision.priority
                    self.check_priority(tracked)
                case StepStarted(call_id=call_id, queue=queue, step=step):
                    tracked = self.calls[call_id]
                    expected = 0 if tracked.entering else tracked.step + 1
                    assert (queue, step) == (tracked.queue, expected), decision
                    tracked.step, tracked.priority, tracked.entering = (
                        step,
                        decision.priority,
                        False,
                    )
                    self.check_priority(tracked)
                case CallLeft(call_id=call_id, outcome=outcome):
                    tracked = self.calls[call_id]
                    if outcome is CallOutcome.OVERFLOWED:
                        assert decision.target_queue is not None
                        tracked.entering = True
                    tracked.outcome = outcome
                case CallEnded(call_id=call_id):
                    assert self.calls[call_id].outcome is CallOutcome.ANSWERED, decision
                    self.calls[call_id].ended = True

    def check_priority(self, tracked: Tracked) -> None:
        queue = self.queue(tracked.queue)
        _, _, raised = step_rules(queue, tracked.step)
        assert tracked.priority == queue.base_priority + tracked.request.priority + raised

    def check_offer(
        self,
        offer: Offer,
        waiting_before: dict[str, CallView],
        waiting_after: dict[str, CallView],
    ) -> None:
        assert offer.agent_id not in self.reserved, f"{offer.agent_id} holds two reservations"
        assert self.states.get(offer.agent_id) is AgentState.RESERVED
        tracked = self.calls[offer.call_id]
        config = self.agent_config(offer.agent_id)
        assert config is not None
        queue = self.queue(tracked.queue)
        assert qualifies(config, queue, tracked.step, tracked.request), (
            f"{offer} to an agent not qualified"
        )
        # A call that waited in the same queue at the same priority throughout this
        # input, open to this agent, and earlier in line, would have been offered first.
        for call_id, before in waiting_before.items():
            after = waiting_after.get(call_id)
            if (
                after == before
                and before.held_for is None
                and self.calls[call_id].request.preferred_agent is None
                and before.queue == tracked.queue
                and before.priority == tracked.priority
                and qualifies(config, queue, before.step, self.calls[call_id].request)
            ):
                assert before.virtual_enqueued_at >= tracked.virtual_enqueued_at, (
                    f"{offer.call_id} offered before {call_id}, which waited longer"
                )

    def check_state(self) -> None:
        engine = self.engine
        views = {view.agent_id: view for view in engine.agents()}
        for agent_id, view in views.items():
            assert view.state == self.states.get(agent_id, AgentState.LOGGED_OUT), view
            if view.state is AgentState.RESERVED:
                assert view.call_id is not None
                call = engine.call(view.call_id)
                assert (call.status, call.agent_id) == (CallStatus.OFFERED, agent_id)
                assert self.reserved.get(agent_id) == view.call_id
        for agent_id in set(self.states) - set(views):
            assert self.states[agent_id] is AgentState.LOGGED_OUT  # removed by a reload
        available = [
            config
            for config in self.centre.agents
            if agent_id_state(views, config.agent_id) is AgentState.AVAILABLE
        ]
        for queue in self.centre.queues:
            line = engine.waiting(queue.name)
            order = [(-c.priority, c.virtual_enqueued_at) for c in line]
            assert order == sorted(order), f"{queue.name} out of service order"
            for position, call in enumerate(line, start=1):
                assert engine.position(call.call_id) == position
                request = self.calls[call.call_id].request
                if call.held_for is not None:
                    # Kept for their preferred agent, who is logged in, qualifies, and is busy.
                    assert call.held_for == request.preferred_agent
                    assert agent_id_state(views, call.held_for) not in (
                        AgentState.AVAILABLE,
                        AgentState.LOGGED_OUT,
                    )
                    preferred = self.agent_config(call.held_for)
                    assert preferred is not None
                    assert qualifies(preferred, queue, call.step, request), call
                    continue
                for config in available:
                    assert not qualifies(config, queue, call.step, request), (
                        f"fixed point broken: {config.agent_id} is free for {call.call_id}"
                    )

    # -- the end

    def quiesce(self) -> None:
        """Everyone logs in and works; when all are free, time jumps to the next deadline."""
        engine = self.engine
        for _ in range(500):
            self.now += 1.0
            busy = False
            for view in engine.agents():
                if view.state is not AgentState.AVAILABLE:
                    busy = True
                    self.run(self.work(view))
            deadline = engine.next_deadline()
            if busy:
                self.run(lambda: engine.tick(self.now))
            elif deadline is not None:
                self.now = max(self.now, deadline)
                self.run(lambda: engine.tick(self.now))
            else:
                break
        else:
            raise AssertionError("the centre never settled")
        roster = self.centre.agents
        for call_id, tracked in self.calls.items():
            if tracked.ended or tracked.outcome in TERMINAL:
                continue
            left = engine.call(call_id)  # still known: it must be waiting for nobody
            assert left.status is CallStatus.WAITING, left
            queue = self.queue(left.queue)
            request = tracked.request
            assert not any(qualifies(a, queue, left.step, request) for a in roster), (
                f"{call_id} is stuck in {left.queue} at step {left.step}"
            )


def agent_id_state(views: dict[str, AgentView], agent_id: str) -> AgentState:
    view = views.get(agent_id)
    return AgentState.LOGGED_OUT if view is None else view.state


# -- the properties ---------------------------------------------------------------------------

KINDS = (
    "login",
    "login",
    "logout",
    "available",
    "not_ready",
    "end_wrap_up",
    "enqueue",
    "enqueue",
    "enqueue",
    "leave",
    "accept",
    "accept",
    "fail",
    "end",
    "end",
    "callback",
    "tick",
    "tick",
    "configure",
)
inputs = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, 11),
        st.integers(0, 10),
        st.sampled_from([0.0, 0.5, 1.0, 3.0, 7.0, 15.0, 40.0]),
    ),
    min_size=20,
    max_size=60,
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(centres(), centres(), inputs)
def test_routing_invariants_hold_for_any_input_sequence(
    first: Centre, second: Centre, sequence: list[tuple[str, int, int, float]]
) -> None:
    harness = Harness((first, second))
    for kind, target, extra, dt in sequence:
        harness.apply(kind, target, extra, dt)
    harness.quiesce()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generalist_centres(), generalist_centres(), inputs)
def test_preferred_agent_windows_keep_the_invariants(
    first: Centre, second: Centre, sequence: list[tuple[str, int, int, float]]
) -> None:
    harness = Harness((first, second), preferred_from=2)
    for kind, target, extra, dt in sequence:
        harness.apply(kind, target, extra, dt)
    harness.quiesce()
