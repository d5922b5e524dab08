"""The routing engine, one rule at a time (pure: no sockets, time passed in)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, time
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from ctiserver.acd.criteria import format_call_criteria, parse_call_criteria
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
from ctiserver.acd.engine import (
    IllegalTransition,
    RoutingEngine,
    UnknownAgent,
    UnknownCall,
    UnknownQueue,
)
from ctiserver.acd.journal import criteria_from_payload, criteria_payload
from ctiserver.acd.model import (
    AddSkill,
    AgentConfig,
    AgentPolicy,
    AgentState,
    AttributeCondition,
    BusinessHours,
    CallOutcome,
    CallRequest,
    CloseCall,
    OfferCallback,
    OfferFailure,
    OpeningHours,
    Overflow,
    QueueConfig,
    RaisePriority,
    RelaxLevel,
    RemoveSkill,
    SkillRequirement,
    Step,
    ToVoicemail,
)
from ctiserver.acd.views import CallStatus

# Monday 23 November 2026, 10:00 UTC.
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
D = TypeVar("D", bound=Decision)


def agent(
    agent_id: str,
    queues: tuple[str, ...] = ("sales",),
    skills: dict[str, int] | None = None,
    attributes: dict[str, str] | None = None,
    name: str = "",
) -> AgentConfig:
    return AgentConfig(
        agent_id,
        name or agent_id,
        f"PJSIP/{agent_id}",
        skills=skills if skills is not None else {"sales": 5},
        attributes=attributes or {},
        queues=queues,
    )


def queue(name: str = "sales", *steps: Step, **options: Any) -> QueueConfig:
    return QueueConfig(name, steps or (Step(None),), **options)


def request(call_id: str, queue_name: str = "sales", **options: Any) -> CallRequest:
    return CallRequest(call_id, queue_name, **options)


def only(decisions: Iterable[Decision], kind: type[D]) -> list[D]:
    return [d for d in decisions if isinstance(d, kind)]


def kinds(decisions: Iterable[Decision]) -> list[str]:
    return [type(d).__name__ for d in decisions]


def offered_to(decisions: Iterable[Decision]) -> list[tuple[str, str]]:
    return [(d.call_id, d.agent_id) for d in only(decisions, Offer)]


def engine_with(
    queues: Iterable[QueueConfig], agents: Iterable[AgentConfig], *logged_in: str, **kw: Any
) -> RoutingEngine:
    engine = RoutingEngine(queues, agents, **kw)
    for offset, agent_id in enumerate(logged_in):
        engine.login(agent_id, T0 - 1 + offset * 0.001)
    return engine


# -- offers and the call life cycle -----------------------------------------------------------


def test_login_makes_the_agent_available() -> None:
    engine = RoutingEngine([queue()], [agent("a1", name="王小明")])
    decisions = engine.login("a1", T0)
    assert decisions == [
        AgentStateChanged("a1", AgentState.AVAILABLE, AgentState.LOGGED_OUT, None, None, T0)
    ]
    view = engine.agent("a1")
    assert (view.state, view.since, view.call_id) == (AgentState.AVAILABLE, T0, None)


def test_a_call_for_an_available_agent_is_offered_at_once() -> None:
    engine = engine_with([queue(ring_timeout_s=15)], [agent("a1")], "a1")
    decisions = engine.enqueue(request("c1", caller="+8613800138000"), T0 + 1)
    assert kinds(decisions) == ["CallQueued", "StepStarted", "AgentStateChanged", "Offer"]
    assert decisions[-1] == Offer(
        "c1", "a1", "sales", "PJSIP/a1", 15, None, "+8613800138000", T0 + 1
    )
    assert engine.agent("a1").state is AgentState.RESERVED
    assert engine.call("c1").status is CallStatus.OFFERED
    assert engine.position("c1") == 0


def test_answer_talk_and_wrap_up_then_available_when_the_timer_ends() -> None:
    engine = engine_with([queue(wrap_up_s=30)], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0 + 1)
    answered = engine.offer_accepted("c1", T0 + 5)
    assert answered == [
        AgentStateChanged("a1", AgentState.ON_CALL, AgentState.RESERVED, None, "c1", T0 + 5),
        CallLeft("c1", "sales", CallOutcome.ANSWERED, T0 + 5),
    ]
    ended = engine.call_ended("c1", T0 + 65)
    assert ended == [
        CallEnded("c1", "a1", "sales", 60, T0 + 65),
        AgentStateChanged("a1", AgentState.WRAP_UP, AgentState.ON_CALL, None, "c1", T0 + 65),
    ]
    assert engine.agent("a1").call_id == "c1"  # the desktop attaches the disposition to it
    assert engine.next_deadline() == T0 + 95
    assert engine.tick(T0 + 94) == []
    assert engine.tick(T0 + 100) == [
        AgentStateChanged("a1", AgentState.AVAILABLE, AgentState.WRAP_UP, None, "c1", T0 + 95)
    ]
    assert engine.next_deadline() is None
    with pytest.raises(UnknownCall):
        engine.call("c1")


def test_no_wrap_up_time_means_straight_to_the_next_call() -> None:
    engine = engine_with([queue(wrap_up_s=0)], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0 + 1)
    engine.enqueue(request("c2"), T0 + 2)
    engine.offer_accepted("c1", T0 + 3)
    decisions = engine.call_ended("c1", T0 + 10)
    assert kinds(decisions) == ["CallEnded", "AgentStateChanged", "AgentStateChanged", "Offer"]
    assert offered_to(decisions) == [("c2", "a1")]


def test_wrap_up_ended_early_by_the_agent() -> None:
    engine = engine_with([queue(wrap_up_s=120)], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0)
    engine.offer_accepted("c1", T0)
    engine.call_ended("c1", T0 + 100)
    engine.enqueue(request("c2"), T0 + 101)
    decisions = engine.end_wrap_up("a1", T0 + 110)
    assert decisions[0] == AgentStateChanged(
        "a1", AgentState.AVAILABLE, AgentState.WRAP_UP, None, "c1", T0 + 110
    )
    assert offered_to(decisions) == [("c2", "a1")]
    # The wrap-up timer is gone with the wrap-up: only c2's ring timeout is left.
    assert engine.next_deadline() == T0 + 110 + 20
    with pytest.raises(IllegalTransition):
        engine.end_wrap_up("a1", T0 + 111)


def test_make_available_also_ends_wrap_up() -> None:
    engine = engine_with([queue(wrap_up_s=120)], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0)
    engine.offer_accepted("c1", T0)
    engine.call_ended("c1", T0 + 10)
    decisions = engine.make_available("a1", T0 + 20)
    assert [d.state for d in only(decisions, AgentStateChanged)] == [AgentState.AVAILABLE]


# -- agent selection policies -----------------------------------------------------------------


def test_longest_idle_agent_gets_the_call() -> None:
    agents = [agent("a1"), agent("a2"), agent("a3")]
    engine = RoutingEngine([queue()], agents)
    engine.login("a2", T0)
    engine.login("a3", T0 + 1)
    engine.login("a1", T0 + 2)
    assert offered_to(engine.enqueue(request("c1"), T0 + 3)) == [("c1", "a2")]
    assert offered_to(engine.enqueue(request("c2"), T0 + 4)) == [("c2", "a3")]


def test_most_skilled_agent_gets_the_call_whoever_waited_longest() -> None:
    steps = Step(None, (SkillRequirement("sales", 3), SkillRequirement("english", 1)))
    agents = [
        agent("a1", skills={"sales": 4, "english": 9}),
        agent("a2", skills={"sales": 9, "english": 8}),
        agent("a3", skills={"sales": 9, "english": 2}),
    ]
    engine = engine_with([queue("sales", steps, policy=AgentPolicy.MOST_SKILLED)], agents)
    for offset, agent_id in enumerate(["a1", "a3", "a2"]):
        engine.login(agent_id, T0 + offset)
    assert offered_to(engine.enqueue(request("c1"), T0 + 5)) == [("c1", "a2")]
    # a1 (13) and a3 (11): a1 is more skilled on this step's requirements.
    assert offered_to(engine.enqueue(request("c2"), T0 + 6)) == [("c2", "a1")]


def test_least_occupied_today_gets_the_call_and_the_count_restarts_each_day() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    morning = datetime(2026, 11, 23, 9, 0, tzinfo=shanghai).timestamp()
    engine = engine_with(
        [queue(policy=AgentPolicy.LEAST_OCCUPIED, wrap_up_s=0)],
        [agent("a1"), agent("a2")],
        timezone="Asia/Shanghai",
    )
    engine.login("a1", morning)
    engine.login("a2", morning + 1)
    assert offered_to(engine.enqueue(request("c1"), morning + 10)) == [("c1", "a1")]
    engine.offer_accepted("c1", morning + 10)
    assert offered_to(engine.enqueue(request("c2"), morning + 20)) == [("c2", "a2")]
    engine.offer_accepted("c2", morning + 20)
    engine.call_ended("c2", morning + 80)  # a2: 60 s today
    engine.make_not_ready("a2", "training", morning + 80)
    engine.call_ended("c1", morning + 610)  # a1: 600 s today, available since +610
    engine.make_available("a2", morning + 700)  # idle for less time, but less occupied
    assert offered_to(engine.enqueue(request("c3"), morning + 701)) == [("c3", "a2")]
    engine.caller_left("c3", morning + 702)
    # Midnight in Shanghai (16:00 UTC): both start from zero, so idle time decides.
    next_day = datetime(2026, 11, 24, 0, 0, 1, tzinfo=shanghai).timestamp()
    assert offered_to(engine.enqueue(request("c4"), next_day)) == [("c4", "a1")]


def test_round_robin_rotates_in_configuration_order() -> None:
    engine = engine_with(
        [queue(policy=AgentPolicy.ROUND_ROBIN, wrap_up_s=0)],
        [agent("a1"), agent("a2"), agent("a3")],
    )
    for offset, agent_id in enumerate(["a3", "a1", "a2"]):
        engine.login(agent_id, T0 + offset)
    picked = []
    for number in range(5):
        call_id = f"c{number}"
        (offer,) = only(engine.enqueue(request(call_id), T0 + 10 + number), Offer)
        picked.append(offer.agent_id)
        engine.offer_accepted(call_id, T0 + 10 + number)
        engine.call_ended(call_id, T0 + 10 + number)
    assert picked == ["a1", "a2", "a3", "a1", "a2"]


# -- call selection and priority --------------------------------------------------------------


def test_an_agent_freeing_up_takes_the_highest_priority_then_the_longest_wait() -> None:
    engine = engine_with([queue(wrap_up_s=0)], [agent("a1")], "a1")
    engine.enqueue(request("busy"), T0)
    engine.offer_accepted("busy", T0)
    engine.enqueue(request("old"), T0 + 1)
    engine.enqueue(request("vip", priority=5), T0 + 2)
    engine.enqueue(request("older", virtual_enqueued_at=T0 - 100), T0 + 3)
    assert [c.call_id for c in engine.waiting("sales")] == ["vip", "older", "old"]
    assert [engine.position(c) for c in ("vip", "older", "old")] == [1, 2, 3]
    served = []
    for call_id in ("busy", "vip", "older"):
        decisions = engine.call_ended(call_id, T0 + 10)
        served += [offer.call_id for offer in only(decisions, Offer)]
        if served:
            engine.offer_accepted(served[-1], T0 + 10)
    assert served == ["vip", "older", "old"]


def test_priority_is_base_plus_request_plus_raises() -> None:
    engine = RoutingEngine(
        [
            queue(
                "sales",
                Step(10, on_expiry=(RaisePriority(2),)),
                Step(10, on_expiry=(RaisePriority(3),)),
                Step(None),
                base_priority=10,
            )
        ],
        [agent("a1")],
    )
    started = only(engine.enqueue(request("c1", priority=1), T0), StepStarted)
    started += only(engine.tick(T0 + 30), StepStarted)
    assert [(s.step, s.priority, s.at) for s in started] == [
        (0, 11, T0),
        (1, 13, T0 + 10),
        (2, 16, T0 + 20),
    ]
    assert engine.call("c1").priority == 16


def test_an_agent_in_several_queues_takes_them_in_configured_order() -> None:
    queues = [queue("vip", wrap_up_s=0), queue("general", wrap_up_s=0)]
    a1 = agent("a1", queues=("vip", "general"))
    engine = RoutingEngine(queues, [a1])
    engine.enqueue(request("g1", "general"), T0)
    engine.enqueue(request("v1", "vip"), T0 + 5)
    engine.enqueue(request("g2", "general", priority=1), T0 + 6)
    # Higher priority first, whatever the queue; then the agent's queue order, then wait.
    served = []
    decisions = engine.login("a1", T0 + 10)
    for _ in range(3):
        (offer,) = only(decisions, Offer)
        served.append(offer.call_id)
        engine.offer_accepted(offer.call_id, T0 + 10)
        decisions = engine.call_ended(offer.call_id, T0 + 11)
    assert served == ["g2", "v1", "g1"]


# -- preferred agent --------------------------------------------------------------------------


def two_agent_engine(**options: Any) -> RoutingEngine:
    return engine_with([queue(**options)], [agent("a1"), agent("a2")], "a1", "a2")


def test_a_preferred_agent_is_waited_for_during_the_window() -> None:
    engine = two_agent_engine(preferred_agent_s=30)
    engine.enqueue(request("c0"), T0 + 1)  # a1 is now ringing for c0
    decisions = engine.enqueue(request("c1", preferred_agent="a1"), T0 + 2)
    assert offered_to(decisions) == []  # a2 is free, but c1 waits for a1
    assert engine.call("c1").held_for == "a1"
    engine.offer_accepted("c0", T0 + 3)
    assert offered_to(engine.call_ended("c0", T0 + 10)) == []  # a1 in wrap-up
    decisions = engine.end_wrap_up("a1", T0 + 12)
    assert offered_to(decisions) == [("c1", "a1")]


def test_the_preferred_window_ends_and_anyone_qualified_may_take_the_call() -> None:
    engine = two_agent_engine(preferred_agent_s=30)
    engine.make_not_ready("a1", "meeting", T0 + 1)
    assert offered_to(engine.enqueue(request("c1", preferred_agent="a1"), T0 + 2)) == []
    assert engine.next_deadline() == T0 + 32
    assert offered_to(engine.tick(T0 + 40)) == [("c1", "a2")]


def test_a_logged_out_preferred_agent_holds_nobody() -> None:
    engine = two_agent_engine(preferred_agent_s=30)
    engine.logout("a1", T0 + 1)
    assert offered_to(engine.enqueue(request("c1", preferred_agent="a1"), T0 + 2)) == [("c1", "a2")]


def test_when_the_preferred_agent_logs_out_the_call_is_released() -> None:
    engine = two_agent_engine(preferred_agent_s=30)
    engine.make_not_ready("a1", "meeting", T0 + 1)
    engine.enqueue(request("c1", preferred_agent="a1"), T0 + 2)
    assert offered_to(engine.logout("a1", T0 + 3)) == [("c1", "a2")]


def test_a_preferred_agent_logging_in_during_the_window_gets_the_call() -> None:
    engine = engine_with([queue(preferred_agent_s=30)], [agent("a1"), agent("a2")])
    engine.enqueue(request("c1", preferred_agent="a1"), T0)
    assert engine.call("c1").held_for is None  # nobody to wait for yet
    assert offered_to(engine.login("a1", T0 + 5)) == [("c1", "a1")]


def test_a_preferred_agent_who_does_not_answer_is_not_waited_for_again() -> None:
    engine = engine_with([queue(preferred_agent_s=60)], [agent("a1"), agent("a2")], "a1", "a2")
    engine.make_not_ready("a2", "training", T0)
    engine.enqueue(request("c1", preferred_agent="a1"), T0 + 1)
    engine.make_available("a2", T0 + 2)  # c1 is ringing a1, a2 free
    decisions = engine.offer_failed("c1", OfferFailure.NO_ANSWER, T0 + 3)
    assert offered_to(decisions) == [("c1", "a2")]


def test_a_preferred_agent_must_qualify_to_hold_the_call() -> None:
    engine = engine_with(
        [queue("sales", Step(None, (SkillRequirement("sales", 8),)), preferred_agent_s=30)],
        [agent("a1", skills={"sales": 2}), agent("a2", skills={"sales": 9})],
        "a1",
        "a2",
    )
    assert offered_to(engine.enqueue(request("c1", preferred_agent="a1"), T0 + 1)) == [("c1", "a2")]


# -- expansion steps --------------------------------------------------------------------------


def test_relax_level_lets_less_skilled_agents_in() -> None:
    engine = engine_with(
        [
            queue(
                "sales",
                Step(20, (SkillRequirement("sales", 8),), on_expiry=(RelaxLevel("sales", 4),)),
                Step(None),
            )
        ],
        [agent("a1", skills={"sales": 4})],
        "a1",
    )
    assert offered_to(engine.enqueue(request("c1"), T0)) == []
    decisions = engine.tick(T0 + 20)
    assert kinds(decisions) == ["StepStarted", "AgentStateChanged", "Offer"]
    assert engine.call("c1").step == 1


def test_relax_never_goes_below_level_one() -> None:
    engine = engine_with(
        [
            queue(
                "sales",
                Step(5, (SkillRequirement("sales", 3),), on_expiry=(RelaxLevel("sales", 9),)),
            )
        ],
        [agent("a1", skills={"sales": 1}), agent("a2", skills={})],
        "a1",
        "a2",
    )
    engine.enqueue(request("c1"), T0)
    assert offered_to(engine.tick(T0 + 5)) == [("c1", "a1")]


def test_add_and_remove_skill() -> None:
    steps = (
        Step(10, (SkillRequirement("sales", 1),), on_expiry=(AddSkill("mandarin", 6),)),
        Step(10, on_expiry=(RemoveSkill("sales"),)),
        Step(None),
    )
    agents = [
        agent("a1", skills={"sales": 9}),
        agent("a2", skills={"mandarin": 9}, attributes={"language": "zh"}),
    ]
    engine = engine_with([queue("sales", *steps)], agents)
    engine.enqueue(request("c1"), T0)
    engine.tick(T0 + 10)  # step 1: sales and mandarin
    assert offered_to(engine.login("a1", T0 + 11)) == []
    assert offered_to(engine.login("a2", T0 + 12)) == []
    assert offered_to(engine.tick(T0 + 20)) == [("c1", "a2")]  # step 2: mandarin only


def test_overflow_moves_the_call_with_its_virtual_enqueue_time() -> None:
    queues = [
        queue("sales", Step(30, on_expiry=(Overflow("support"),))),
        queue("support"),
    ]
    engine = engine_with(queues, [agent("a1", queues=("support",))])
    engine.enqueue(request("c1", virtual_enqueued_at=T0 - 50), T0)
    decisions = engine.tick(T0 + 30)
    assert decisions[:3] == [
        CallLeft("c1", "sales", CallOutcome.OVERFLOWED, T0 + 30, "support"),
        CallQueued("c1", "support", 0, T0 - 50, 1, T0 + 30),
        StepStarted("c1", "support", 0, 0, T0 + 30),
    ]
    assert engine.call("c1").queue == "support"
    assert offered_to(engine.login("a1", T0 + 31)) == [("c1", "a1")]


def test_offer_callback_asks_and_the_call_keeps_waiting() -> None:
    engine = RoutingEngine(
        [queue("sales", Step(60, on_expiry=(OfferCallback(),)), Step(None))], [agent("a1")]
    )
    engine.enqueue(request("c1"), T0)
    decisions = engine.tick(T0 + 60)
    assert decisions == [
        CallbackOffered("c1", "sales", T0 + 60),
        StepStarted("c1", "sales", 1, 0, T0 + 60),
    ]
    assert engine.call("c1").status is CallStatus.WAITING


def test_voicemail_and_close_end_the_call() -> None:
    engine = RoutingEngine(
        [
            queue("sales", Step(60, on_expiry=(ToVoicemail(),))),
            queue("support", Step(90, on_expiry=(CloseCall(), Overflow("sales")))),
        ],
        [agent("a1")],
    )
    engine.enqueue(request("c1"), T0)
    engine.enqueue(request("c2", "support"), T0)
    assert engine.tick(T0 + 100) == [
        CallLeft("c1", "sales", CallOutcome.VOICEMAIL, T0 + 60),
        CallLeft("c2", "support", CallOutcome.CLOSED, T0 + 90),
    ]
    assert engine.next_deadline() is None
    with pytest.raises(UnknownCall):
        engine.caller_left("c1", T0 + 101)


def test_a_step_that_runs_out_while_ringing_applies_after_a_refusal() -> None:
    engine = engine_with(
        [queue("sales", Step(10, on_expiry=(Overflow("support"),))), queue("support")],
        [agent("a1")],
        "a1",
    )
    engine.enqueue(request("c1"), T0)
    assert engine.tick(T0 + 10) == []  # ringing: the overflow waits
    decisions = engine.offer_failed("c1", OfferFailure.BUSY, T0 + 12)
    assert kinds(decisions) == [
        "AgentStateChanged",
        "CallQueued",
        "CallLeft",
        "CallQueued",
        "StepStarted",
    ]
    assert decisions[2] == CallLeft("c1", "sales", CallOutcome.OVERFLOWED, T0 + 12, "support")


def test_last_step_changes_apply_to_an_open_ended_final_step() -> None:
    engine = engine_with(
        [queue("sales", Step(10, (SkillRequirement("sales", 9),), on_expiry=(RaisePriority(),)))],
        [agent("a1", skills={"sales": 9})],
    )
    engine.enqueue(request("c1"), T0)
    assert only(engine.tick(T0 + 10), StepStarted) == [StepStarted("c1", "sales", 1, 1, T0 + 10)]
    assert engine.next_deadline() is None
    assert offered_to(engine.login("a1", T0 + 11)) == [("c1", "a1")]


def test_attribute_conditions_in_chinese() -> None:
    zh = (AttributeCondition("language", "=", "zh"), AttributeCondition("team", "!=", "夜班"))
    steps = (
        Step(30, conditions=zh),
        Step(None, conditions=(AttributeCondition("language", "in", ("zh", "en")),)),
    )
    agents = [
        agent("a1", attributes={"language": "en"}),
        agent("a2", attributes={"language": "zh", "team": "夜班"}),
        agent("a3", name="王小明", attributes={"language": "zh", "team": "白班"}),
    ]
    engine = engine_with([queue("sales", *steps)], agents, "a1", "a2")
    assert offered_to(engine.enqueue(request("c1", caller="李雷"), T0)) == []
    assert offered_to(engine.login("a3", T0 + 1)) == [("c1", "a3")]
    engine.offer_accepted("c1", T0 + 1)
    engine.enqueue(request("c2"), T0 + 2)
    assert offered_to(engine.tick(T0 + 32)) == [("c2", "a1")]


# -- refusals (RONA) --------------------------------------------------------------------------


def test_ring_timeout_sends_the_call_back_to_the_head_and_the_agent_not_ready() -> None:
    engine = engine_with([queue(ring_timeout_s=15)], [agent("a1"), agent("a2")], "a1")
    engine.enqueue(request("c1"), T0)
    engine.enqueue(request("c2"), T0 + 1)
    decisions = engine.tick(T0 + 15)
    assert decisions == [
        OfferWithdrawn("c1", "a1", "ring timeout", T0 + 15),
        AgentStateChanged(
            "a1", AgentState.NOT_READY, AgentState.RESERVED, "no answer", "c1", T0 + 15
        ),
        CallQueued("c1", "sales", 0, T0, 1, T0 + 15),
    ]
    assert [c.call_id for c in engine.waiting("sales")] == ["c1", "c2"]
    assert offered_to(engine.login("a2", T0 + 16)) == [("c1", "a2")]


@pytest.mark.parametrize("failure", [OfferFailure.BUSY, OfferFailure.UNREACHABLE])
def test_busy_or_unreachable_is_a_refusal_with_that_reason(failure: OfferFailure) -> None:
    engine = engine_with([queue()], [agent("a1"), agent("a2")], "a1")
    engine.enqueue(request("c1"), T0)
    decisions = engine.offer_failed("c1", failure, T0 + 2)
    assert decisions == [
        AgentStateChanged("a1", AgentState.NOT_READY, AgentState.RESERVED, failure, "c1", T0 + 2),
        CallQueued("c1", "sales", 0, T0, 1, T0 + 2),
    ]
    assert engine.agent("a1").reason == failure.value


def test_not_ready_while_ringing_is_a_refusal() -> None:
    engine = engine_with([queue()], [agent("a1"), agent("a2")], "a1", "a2")
    engine.enqueue(request("c1"), T0)
    decisions = engine.make_not_ready("a1", "toilet", T0 + 1)
    assert kinds(decisions) == [
        "OfferWithdrawn",
        "AgentStateChanged",
        "CallQueued",
        "AgentStateChanged",
        "Offer",
    ]
    assert decisions[1] == AgentStateChanged(
        "a1", AgentState.NOT_READY, AgentState.RESERVED, "toilet", "c1", T0 + 1
    )
    assert offered_to(decisions) == [("c1", "a2")]


def test_not_ready_during_a_call_applies_at_its_end_instead_of_wrap_up() -> None:
    engine = engine_with([queue(wrap_up_s=30)], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0)
    engine.offer_accepted("c1", T0 + 1)
    assert engine.make_not_ready("a1", "lunch", T0 + 2) == []
    assert engine.agent("a1").state is AgentState.ON_CALL
    decisions = engine.call_ended("c1", T0 + 60)
    assert decisions[1] == AgentStateChanged(
        "a1", AgentState.NOT_READY, AgentState.ON_CALL, "lunch", "c1", T0 + 60
    )
    assert engine.next_deadline() is None


def test_make_available_during_a_call_cancels_a_pending_not_ready() -> None:
    engine = engine_with([queue(wrap_up_s=30)], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0)
    engine.offer_accepted("c1", T0 + 1)
    with pytest.raises(IllegalTransition):
        engine.make_available("a1", T0 + 2)
    engine.make_not_ready("a1", "lunch", T0 + 2)
    engine.make_available("a1", T0 + 3)
    (wrap_up,) = only(engine.call_ended("c1", T0 + 4), AgentStateChanged)
    assert wrap_up.state is AgentState.WRAP_UP


def test_logout_while_ringing_withdraws_and_requeues() -> None:
    engine = engine_with([queue()], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0)
    decisions = engine.logout("a1", T0 + 1)
    assert decisions == [
        OfferWithdrawn("c1", "a1", "agent logged out", T0 + 1),
        AgentStateChanged("a1", AgentState.LOGGED_OUT, AgentState.RESERVED, None, "c1", T0 + 1),
        CallQueued("c1", "sales", 0, T0, 1, T0 + 1),
    ]


def test_logout_during_a_call_applies_at_its_end() -> None:
    engine = engine_with([queue()], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0)
    engine.offer_accepted("c1", T0)
    assert engine.logout("a1", T0 + 1) == []
    assert engine.call_ended("c1", T0 + 9)[1] == AgentStateChanged(
        "a1", AgentState.LOGGED_OUT, AgentState.ON_CALL, None, "c1", T0 + 9
    )


# -- callers leaving, callbacks ---------------------------------------------------------------


def test_caller_leaves_while_waiting() -> None:
    engine = engine_with([queue()], [agent("a1")])
    engine.enqueue(request("c1"), T0)
    assert engine.caller_left("c1", T0 + 5) == [
        CallLeft("c1", "sales", CallOutcome.ABANDONED, T0 + 5)
    ]
    assert engine.waiting("sales") == []


def test_caller_leaves_while_ringing_frees_the_agent_for_the_next_call() -> None:
    engine = engine_with([queue()], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0)
    engine.enqueue(request("c2"), T0 + 1)
    decisions = engine.caller_left("c1", T0 + 2)
    assert decisions[:3] == [
        CallLeft("c1", "sales", CallOutcome.ABANDONED, T0 + 2),
        OfferWithdrawn("c1", "a1", "caller left", T0 + 2),
        AgentStateChanged("a1", AgentState.AVAILABLE, AgentState.RESERVED, None, "c1", T0 + 2),
    ]
    assert offered_to(decisions) == [("c2", "a1")]


def test_caller_leaves_during_the_call_is_a_call_end() -> None:
    engine = engine_with([queue()], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0)
    engine.offer_accepted("c1", T0 + 1)
    assert kinds(engine.caller_left("c1", T0 + 31)) == ["CallEnded", "AgentStateChanged"]


def test_a_callback_keeps_its_place_and_the_offer_carries_the_number() -> None:
    engine = engine_with([queue(wrap_up_s=0)], [agent("a1")], "a1")
    engine.enqueue(request("busy"), T0)
    engine.offer_accepted("busy", T0)
    for number in range(3):
        engine.enqueue(request(f"c{number}"), T0 + 1 + number)
    assert engine.convert_to_callback("c1", "+86 10 1234 5678", T0 + 10) == []
    view = engine.call("c1")
    assert (view.status, view.callback_number, engine.position("c1")) == (
        CallStatus.WAITING,
        "+86 10 1234 5678",
        2,
    )
    engine.call_ended("busy", T0 + 20)
    engine.offer_accepted("c0", T0 + 20)
    (offer,) = only(engine.call_ended("c0", T0 + 30), Offer)
    assert (offer.call_id, offer.callback_number) == ("c1", "+86 10 1234 5678")
    assert only(engine.offer_accepted("c1", T0 + 31), CallLeft)[0].outcome is CallOutcome.ANSWERED


def test_a_restored_callback_neither_jumps_the_line_nor_loses_its_place() -> None:
    engine = engine_with([queue()], [agent("a1")])
    engine.enqueue(request("early"), T0)
    engine.enqueue(request("late"), T0 + 100)
    engine.enqueue(request("cb", virtual_enqueued_at=T0 + 50, callback_number="95588"), T0 + 200)
    assert [c.call_id for c in engine.waiting("sales")] == ["early", "cb", "late"]


def test_a_callback_is_not_offered_a_callback_again() -> None:
    engine = RoutingEngine(
        [queue("sales", Step(10, on_expiry=(OfferCallback(),)), Step(None))], [agent("a1")]
    )
    engine.enqueue(request("c1"), T0)
    engine.convert_to_callback("c1", "10086", T0 + 1)
    assert kinds(engine.tick(T0 + 10)) == ["StepStarted"]
    with pytest.raises(IllegalTransition):
        engine.convert_to_callback("c1", "10010", T0 + 11)


# -- estimated wait ---------------------------------------------------------------------------


def test_estimated_wait_from_the_default_handle_time() -> None:
    engine = engine_with(
        [queue()], [agent("a1"), agent("a2"), agent("a3")], default_handle_time_s=120
    )
    assert engine.estimated_wait("sales", 1, T0) is None  # nobody logged in
    engine.login("a1", T0)
    engine.login("a2", T0)
    engine.login("a3", T0)
    engine.make_not_ready("a3", "meeting", T0)
    assert engine.estimated_wait("sales", 3, T0) == 3 * 120 / 2


def test_estimated_wait_follows_recent_handle_times() -> None:
    engine = engine_with([queue(wrap_up_s=30)], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0)
    engine.offer_accepted("c1", T0)
    engine.call_ended("c1", T0 + 60)
    engine.end_wrap_up("a1", T0 + 70)  # 60 s talk + 10 s wrap-up
    assert engine.estimated_wait("sales", 2, T0 + 70) == 140
    engine.enqueue(request("c2"), T0 + 70)
    engine.offer_accepted("c2", T0 + 70)
    engine.call_ended("c2", T0 + 170)
    engine.tick(T0 + 200)  # 100 s talk + 30 s wrap-up
    assert engine.estimated_wait("sales", 1, T0 + 200) == pytest.approx(70 + 0.2 * (130 - 70))


def test_estimated_wait_counts_only_agents_qualified_for_the_first_step() -> None:
    engine = engine_with(
        [queue("sales", Step(30, (SkillRequirement("sales", 8),)), Step(None))],
        [agent("a1", skills={"sales": 9}), agent("a2", skills={"sales": 2})],
        "a2",
    )
    assert engine.estimated_wait("sales", 1, T0) is None
    engine.login("a1", T0)
    assert engine.estimated_wait("sales", 1, T0) == 180


# -- business hours and staffing --------------------------------------------------------------

SHANGHAI_OFFICE = BusinessHours(
    "Asia/Shanghai",
    tuple(OpeningHours(day, time(9), time(18)) for day in range(5)),
    closed_dates=frozenset({"2026-10-01"}),
)


def shanghai(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


def test_business_hours_are_read_in_the_queues_time_zone() -> None:
    engine = RoutingEngine([queue(hours=SHANGHAI_OFFICE)], [agent("a1")])
    # 01:30 UTC on Monday is 09:30 in Shanghai.
    assert engine.is_open("sales", datetime(2026, 11, 23, 1, 30, tzinfo=UTC).timestamp())
    assert not engine.is_open("sales", shanghai(2026, 11, 23, 8, 59))
    assert not engine.is_open("sales", shanghai(2026, 11, 23, 18, 0))
    assert not engine.is_open("sales", shanghai(2026, 11, 28, 10))  # Saturday
    assert not engine.is_open("sales", shanghai(2026, 10, 1, 10))  # National Day, a Thursday
    assert engine.is_open("sales", shanghai(2026, 10, 2, 10))


def test_an_overnight_slot_runs_past_midnight() -> None:
    night = BusinessHours("Asia/Shanghai", (OpeningHours(4, time(22), time(6)),))
    engine = RoutingEngine([queue(hours=night)], [])
    assert engine.is_open("sales", shanghai(2026, 11, 27, 23))  # Friday night
    assert engine.is_open("sales", shanghai(2026, 11, 28, 5, 59))  # Saturday morning
    assert not engine.is_open("sales", shanghai(2026, 11, 28, 6))
    assert not engine.is_open("sales", shanghai(2026, 11, 27, 5))


def test_a_call_on_a_closed_queue_gets_when_closed() -> None:
    queues = [
        queue("sales", hours=SHANGHAI_OFFICE, when_closed=Overflow("night")),
        queue("night", hours=SHANGHAI_OFFICE, when_closed=ToVoicemail()),
        queue("closed", hours=SHANGHAI_OFFICE),
    ]
    engine = RoutingEngine(queues, [])
    sunday = shanghai(2026, 11, 29, 12)
    assert engine.enqueue(request("c1"), sunday) == [
        CallLeft("c1", "sales", CallOutcome.OVERFLOWED, sunday, "night"),
        CallLeft("c1", "night", CallOutcome.VOICEMAIL, sunday),
    ]
    assert engine.enqueue(request("c2", "closed"), sunday) == [
        CallLeft("c2", "closed", CallOutcome.CLOSED, sunday)
    ]
    assert kinds(engine.enqueue(request("c3"), shanghai(2026, 11, 30, 12))) == [
        "CallQueued",
        "StepStarted",
    ]


def test_overflow_loops_in_one_instant_close_the_call() -> None:
    sunday = shanghai(2026, 11, 29, 12)
    queues = [
        queue("a", hours=SHANGHAI_OFFICE, when_closed=Overflow("b")),
        queue("b", hours=SHANGHAI_OFFICE, when_closed=Overflow("a")),
    ]
    engine = RoutingEngine(queues, [])
    assert engine.enqueue(request("c1", "a"), sunday) == [
        CallLeft("c1", "a", CallOutcome.OVERFLOWED, sunday, "b"),
        CallLeft("c1", "b", CallOutcome.CLOSED, sunday),
    ]


def test_a_call_nobody_logged_in_could_serve_gets_when_unstaffed() -> None:
    engine = RoutingEngine(
        [
            queue(
                "sales",
                Step(30, (SkillRequirement("sales", 9),), on_expiry=(RelaxLevel("sales", 5),)),
                Step(None),
                when_unstaffed=ToVoicemail(),
            )
        ],
        [agent("a1", skills={"sales": 4}), agent("a2", skills={"sales": 1})],
    )
    assert only(engine.enqueue(request("c1"), T0), CallLeft)[0].outcome is CallOutcome.VOICEMAIL
    engine.login("a2", T0)  # qualifies for no step
    assert only(engine.enqueue(request("c2"), T0), CallLeft)[0].outcome is CallOutcome.VOICEMAIL
    engine.login("a1", T0)  # qualifies for step 1 only
    engine.make_not_ready("a1", "break", T0)  # still logged in: the caller may wait
    assert kinds(engine.enqueue(request("c3"), T0)) == ["CallQueued", "StepStarted"]


def test_a_closed_queue_may_offer_a_callback_instead() -> None:
    engine = RoutingEngine([queue(hours=SHANGHAI_OFFICE, when_closed=OfferCallback())], [])
    sunday = shanghai(2026, 11, 29, 12)
    assert kinds(engine.enqueue(request("c1"), sunday)) == [
        "CallQueued",
        "StepStarted",
        "CallbackOffered",
    ]


# -- reload -----------------------------------------------------------------------------------


def test_configure_keeps_states_and_calls_and_routes_with_the_new_rules() -> None:
    strict = queue("sales", Step(None, (SkillRequirement("sales", 8),)))
    engine = engine_with([strict], [agent("a1", skills={"sales": 5})], "a1")
    engine.enqueue(request("c1"), T0)
    relaxed = queue("sales", Step(None, (SkillRequirement("sales", 5),)))
    decisions = engine.configure([relaxed], [agent("a1", skills={"sales": 5})], T0 + 10)
    assert offered_to(decisions) == [("c1", "a1")]


def test_configure_logs_out_removed_agents_and_closes_removed_queues() -> None:
    queues = [queue("sales"), queue("support")]
    agents = [
        agent("a1", queues=("sales", "support")),
        agent("a2", queues=("support",)),
        agent("a3", queues=("sales",)),
    ]
    engine = engine_with(queues, agents, "a1", "a2", "a3")
    engine.enqueue(request("s1"), T0)  # a1
    engine.enqueue(request("s2"), T0 + 1)  # a3
    engine.offer_accepted("s2", T0 + 2)
    engine.enqueue(request("p1", "support"), T0 + 3)  # a2
    engine.enqueue(request("p2", "support"), T0 + 4)  # waits
    decisions = engine.configure(
        [queue("sales"), queue("new")],
        [agent("a2", queues=("sales",)), agent("a4", queues=("new",))],
        T0 + 10,
    )
    assert decisions == [
        CallLeft("p1", "support", CallOutcome.CLOSED, T0 + 10),
        OfferWithdrawn("p1", "a2", "queue removed", T0 + 10),
        AgentStateChanged("a2", AgentState.AVAILABLE, AgentState.RESERVED, None, "p1", T0 + 10),
        CallLeft("p2", "support", CallOutcome.CLOSED, T0 + 10),
        OfferWithdrawn("s1", "a1", "agent logged out", T0 + 10),
        AgentStateChanged("a1", AgentState.LOGGED_OUT, AgentState.RESERVED, None, "s1", T0 + 10),
        CallQueued("s1", "sales", 0, T0, 1, T0 + 10),
        AgentStateChanged("a2", AgentState.RESERVED, AgentState.AVAILABLE, None, "s1", T0 + 10),
        Offer("s1", "a2", "sales", "PJSIP/a2", 20, None, "", T0 + 10),
    ]
    assert engine.agent("a4").state is AgentState.LOGGED_OUT
    with pytest.raises(UnknownAgent):
        engine.agent("a1")
    # a3 is on s2: removed, they stay until the call ends, then log out and are gone.
    assert engine.agent("a3").state is AgentState.ON_CALL
    with pytest.raises(IllegalTransition):
        engine.make_not_ready("a3", "x", T0 + 11)
    assert engine.call_ended("s2", T0 + 20)[1] == AgentStateChanged(
        "a3", AgentState.LOGGED_OUT, AgentState.ON_CALL, None, "s2", T0 + 20
    )
    with pytest.raises(UnknownAgent):
        engine.agent("a3")


def test_a_step_that_ran_out_while_ringing_follows_the_reloaded_durations() -> None:
    closing = queue("sales", Step(4, on_expiry=(CloseCall(),)))
    for reloaded, agents in (
        (queue("sales"), [agent("a2")]),  # open-ended now, a1 removed while ringing
        (queue("sales"), [agent("a1")]),  # open-ended now, a1 refuses later
        (queue("sales", Step(100, on_expiry=(CloseCall(),))), [agent("a1")]),  # longer now
    ):
        engine = engine_with([closing], [agent("a1")], "a1")
        engine.enqueue(request("c1"), T0)  # a1 rings
        assert engine.tick(T0 + 5) == []  # the step ran out while ringing
        engine.configure([reloaded], agents, T0 + 6)
        if engine.call("c1").status is CallStatus.OFFERED:
            engine.offer_failed("c1", OfferFailure.NO_ANSWER, T0 + 7)
        view = engine.call("c1")
        assert (view.status, view.step) == (CallStatus.WAITING, 0), reloaded


def test_configure_rejects_an_inconsistent_configuration_without_changing_anything() -> None:
    engine = engine_with([queue()], [agent("a1")], "a1")
    before = engine.snapshot(T0)
    with pytest.raises(ValueError, match="unknown queue"):
        engine.configure([queue()], [agent("a1", queues=("nowhere",))], T0)
    with pytest.raises(ValueError, match="overflows"):
        engine.configure([queue("sales", Step(1, on_expiry=(Overflow("x"),)))], [], T0)
    assert engine.snapshot(T0) == before


@pytest.mark.parametrize(
    ("queues", "agents", "complaint"),
    [
        ([queue(), queue()], [], "configured twice"),
        ([queue()], [agent("a1"), agent("a1")], "configured twice"),
        ([queue()], [agent("a1", skills={"sales": 11})], "outside 1..10"),
        ([queue("sales", Step(None, (SkillRequirement("sales", 0),)))], [], "outside 1..10"),
        (
            [queue("sales", Step(None, conditions=(AttributeCondition("language", "~", "zh"),)))],
            [],
            "unknown operator",
        ),
        ([queue(hours=BusinessHours("Mars/Olympus_Mons", ()))], [], "unknown time zone"),
        ([queue(when_unstaffed=Overflow("elsewhere"))], [], "overflows to unknown queue"),
        ([queue(ring_timeout_s=0)], [], "ring_timeout_s"),
    ],
)
def test_an_inconsistent_configuration_is_refused(
    queues: list[QueueConfig], agents: list[AgentConfig], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        RoutingEngine(queues, agents)


def test_opening_hours_follow_daylight_saving_time() -> None:
    berlin = BusinessHours("Europe/Berlin", (OpeningHours(6, time(9), time(17)),))
    engine = RoutingEngine([queue(hours=berlin)], [])
    # Sunday 29 March 2026: clocks go from 02:00 to 03:00, Berlin is UTC+2 from then on.
    assert engine.is_open("sales", datetime(2026, 3, 29, 7, 30, tzinfo=UTC).timestamp())
    assert not engine.is_open("sales", datetime(2026, 3, 29, 6, 30, tzinfo=UTC).timestamp())
    assert not engine.is_open("sales", datetime(2026, 3, 29, 15, 0, tzinfo=UTC).timestamp())


# -- a call's own requirements and conditions -------------------------------------------------

CARDS = (SkillRequirement("cards", 3),)
ZH = (AttributeCondition("language", "=", "zh"),)


def test_a_call_needing_a_skill_skips_agents_without_it_when_it_arrives() -> None:
    engine = engine_with(
        [queue()],
        [
            agent("a1"),  # idle the longest, no cards
            agent("a2", skills={"sales": 5, "cards": 2}),  # cards, too low
            agent("a3", skills={"sales": 5, "cards": 3}),
        ],
        "a1",
        "a2",
        "a3",
    )
    assert offered_to(engine.enqueue(request("c1", requirements=CARDS), T0)) == [("c1", "a3")]
    # Plain calls still go by the policy alone.
    assert offered_to(engine.enqueue(request("c2"), T0 + 1)) == [("c2", "a1")]


def test_a_call_with_a_condition_waits_for_an_agent_who_meets_it() -> None:
    agents = [
        agent("a1", attributes={"language": "en"}),
        agent("a2", attributes={"language": "zh"}),
    ]
    engine = engine_with([queue()], agents, "a1")
    assert offered_to(engine.enqueue(request("c1", conditions=ZH), T0)) == []
    assert engine.call("c1").status is CallStatus.WAITING
    assert offered_to(engine.login("a2", T0 + 1)) == [("c1", "a2")]


def test_an_agent_freeing_up_takes_only_calls_whose_requirements_they_meet() -> None:
    engine = engine_with(
        [queue(wrap_up_s=0)],
        [agent("a1"), agent("a2", skills={"sales": 5, "cards": 3})],
        "a1",
    )
    engine.enqueue(request("c0"), T0)
    engine.offer_accepted("c0", T0)  # a1 busy, a2 logged out
    engine.enqueue(request("c1", requirements=CARDS), T0 + 1)
    engine.enqueue(request("c2", priority=1, requirements=CARDS), T0 + 2)
    assert offered_to(engine.call_ended("c0", T0 + 3)) == []  # a1 has no cards
    assert engine.agent("a1").state is AgentState.AVAILABLE
    assert offered_to(engine.login("a2", T0 + 4)) == [("c2", "a2")]


def test_a_head_of_line_call_nobody_free_can_take_does_not_block_the_next() -> None:
    engine = engine_with(
        [queue(wrap_up_s=0)],
        [agent("a1"), agent("a2", skills={"sales": 5, "cards": 3})],
        "a1",
    )
    engine.enqueue(request("c0"), T0)
    engine.offer_accepted("c0", T0)
    engine.enqueue(request("vip", priority=5, requirements=CARDS), T0 + 1)
    engine.enqueue(request("plain"), T0 + 2)
    assert [c.call_id for c in engine.waiting("sales")] == ["vip", "plain"]
    assert offered_to(engine.call_ended("c0", T0 + 3)) == [("plain", "a1")]
    assert engine.position("vip") == 1
    assert offered_to(engine.login("a2", T0 + 4)) == [("vip", "a2")]


def test_a_call_with_requirements_walks_round_robin_from_the_last_agent_offered() -> None:
    engine = engine_with(
        [queue(policy=AgentPolicy.ROUND_ROBIN, wrap_up_s=0)],
        [agent("a1", skills={"sales": 5, "cards": 3}), agent("a2"), agent("a3")],
        "a1",
        "a2",
        "a3",
    )
    for number, expected in enumerate(["a1", "a2"]):
        call_id = f"c{number}"
        assert offered_to(engine.enqueue(request(call_id), T0 + number)) == [(call_id, expected)]
        engine.offer_accepted(call_id, T0 + number)
        engine.call_ended(call_id, T0 + number)
    # a3 is next in turn but has no cards: the walk wraps around to a1.
    assert offered_to(engine.enqueue(request("c2", requirements=CARDS), T0 + 5)) == [("c2", "a1")]
    assert offered_to(engine.enqueue(request("c3"), T0 + 6)) == [("c3", "a2")]


def test_a_preferred_agent_lacking_the_calls_skill_holds_nobody() -> None:
    agents = [agent("a1"), agent("a2", skills={"sales": 5, "cards": 3})]
    engine = engine_with([queue(preferred_agent_s=60)], agents, "a1", "a2")
    engine.enqueue(request("c0"), T0)  # a1 rings: busy
    decisions = engine.enqueue(request("c1", preferred_agent="a1", requirements=CARDS), T0 + 1)
    assert offered_to(decisions) == [("c1", "a2")]
    assert engine.call("c1").held_for is None


def test_a_preferred_agent_meeting_the_calls_requirements_is_waited_for() -> None:
    agents = [agent("a1", skills={"sales": 5, "cards": 4}), agent("a2", skills={"cards": 9})]
    engine = engine_with([queue(preferred_agent_s=60)], agents, "a1", "a2")
    engine.enqueue(request("c0"), T0)  # a1 rings
    decisions = engine.enqueue(request("c1", preferred_agent="a1", requirements=CARDS), T0 + 1)
    assert offered_to(decisions) == []
    assert engine.call("c1").held_for == "a1"
    assert offered_to(engine.offer_failed("c0", OfferFailure.BUSY, T0 + 2)) == [("c0", "a2")]


def test_steps_relax_their_own_requirements_never_the_calls() -> None:
    engine = engine_with(
        [
            queue(
                "sales",
                Step(10, (SkillRequirement("sales", 8),), on_expiry=(RemoveSkill("sales"),)),
                Step(None),
            )
        ],
        [agent("a1", skills={"sales": 5}), agent("a2", skills={"sales": 6})],
        "a1",
        "a2",
    )
    own = (SkillRequirement("sales", 6),)
    assert offered_to(engine.enqueue(request("c1", requirements=own), T0)) == []
    assert offered_to(engine.tick(T0 + 10)) == [("c1", "a2")]


def test_an_overflowed_call_keeps_its_requirements() -> None:
    queues = [
        queue("sales", Step(10, on_expiry=(Overflow("support"),))),
        queue("support"),
    ]
    agents = [
        agent("s1", queues=("support",)),
        agent("s2", queues=("support",), skills={"cards": 3}),
    ]
    engine = engine_with(queues, agents, "s1")
    engine.enqueue(request("c1", requirements=CARDS, conditions=ZH), T0)
    decisions = engine.tick(T0 + 10)
    assert only(decisions, CallLeft) == [
        CallLeft("c1", "sales", CallOutcome.OVERFLOWED, T0 + 10, "support")
    ]
    assert offered_to(decisions) == []  # s1 is free but has no cards
    assert offered_to(engine.login("s2", T0 + 11)) == []  # cards, but not a zh speaker
    zh = agent("s2", queues=("support",), skills={"cards": 3}, attributes={"language": "zh"})
    assert offered_to(engine.configure(queues, [agents[0], zh], T0 + 12)) == [("c1", "s2")]


def test_reconfiguration_keeps_a_waiting_calls_requirements() -> None:
    engine = engine_with([queue()], [agent("a1"), agent("a2")], "a1", skills=["cards"])
    engine.enqueue(request("c1", requirements=CARDS), T0)
    engine.enqueue(request("c2", requirements=CARDS), T0 + 1)
    engine.convert_to_callback("c2", "10086", T0 + 2)
    # A reload that changes the queue but still gives nobody cards offers nothing.
    stricter = [queue(preferred_agent_s=30, wrap_up_s=5)]
    assert offered_to(engine.configure(stricter, [agent("a1"), agent("a2")], T0 + 3)) == []
    assert [c.call_id for c in engine.waiting("sales")] == ["c1", "c2"]
    # The next one gives a1 cards: the call is offered, then the callback.
    skilled = [agent("a1", skills={"sales": 5, "cards": 3}), agent("a2")]
    assert offered_to(engine.configure(stricter, skilled, T0 + 4)) == [("c1", "a1")]
    engine.offer_accepted("c1", T0 + 5)
    engine.call_ended("c1", T0 + 6)
    decisions = engine.end_wrap_up("a1", T0 + 7)
    assert [(o.call_id, o.agent_id, o.callback_number) for o in only(decisions, Offer)] == [
        ("c2", "a1", "10086")
    ]


def test_a_restored_agent_takes_only_the_calls_they_meet() -> None:
    engine = engine_with([queue()], [agent("a1"), agent("a2", skills={"cards": 5})])
    engine.enqueue(request("c1", requirements=CARDS), T0)
    engine.enqueue(request("c2"), T0 + 1)
    engine.restore_agent("a1", AgentState.AVAILABLE, T0 + 2)
    engine.restore_agent("a2", AgentState.AVAILABLE, T0 + 3)
    assert offered_to(engine.tick(T0 + 4)) == [("c2", "a1"), ("c1", "a2")]


def test_estimated_wait_of_a_call_counts_only_agents_meeting_its_requirements() -> None:
    engine = engine_with(
        [queue()], [agent("a1"), agent("a2"), agent("a3", skills={"cards": 3})], "a1", "a2"
    )
    engine.make_not_ready("a1", "meeting", T0)
    engine.enqueue(request("c0"), T0)  # a2 rings
    engine.enqueue(request("c1", requirements=CARDS), T0 + 1)
    assert engine.estimated_wait("sales", 1, T0 + 1) == 180
    assert engine.estimated_wait("sales", 1, T0 + 1, call_id="c1") is None
    engine.login("a3", T0 + 2)  # takes c1 at once
    engine.enqueue(request("c2", requirements=CARDS), T0 + 3)
    assert engine.estimated_wait("sales", 2, T0 + 3, call_id="c2") == 2 * 180


def test_a_call_nobody_meets_still_counts_the_queue_as_staffed() -> None:
    engine = engine_with(
        [queue(when_unstaffed=ToVoicemail())], [agent("a1")], "a1", skills=["cards"]
    )
    decisions = engine.enqueue(request("c1", requirements=CARDS), T0)
    assert kinds(decisions) == ["CallQueued", "StepStarted"]


@pytest.mark.parametrize(
    ("requirements", "conditions", "complaint"),
    [
        ((SkillRequirement("karaoke", 3),), (), "unknown skill 'karaoke'"),
        ((SkillRequirement("cards", 0),), (), "level 0 outside 1..10"),
        ((SkillRequirement("cards", 11),), (), "level 11 outside 1..10"),
        ((SkillRequirement("cards", 3), SkillRequirement("cards", 4)), (), "twice"),
        ((), (AttributeCondition("language", "~", "zh"),), "unknown operator '~'"),
        ((), (AttributeCondition("language", "in", "zh"),), "'in' needs a tuple"),
        ((), (AttributeCondition("language", "in", ()),), "'in' on 'language' needs values"),
        ((), (AttributeCondition("language", "=", ("zh",)),), "needs one value"),
    ],
)
def test_a_calls_own_criteria_are_checked_at_enqueue(
    requirements: tuple[SkillRequirement, ...],
    conditions: tuple[AttributeCondition, ...],
    complaint: str,
) -> None:
    engine = engine_with([queue()], [agent("a1", skills={"cards": 3})], "a1")
    bad = request("c1", requirements=requirements, conditions=conditions)
    with pytest.raises(ValueError, match=complaint):
        engine.check_request(bad)
    with pytest.raises(ValueError, match=complaint):
        engine.enqueue(bad, T0)
    with pytest.raises(UnknownCall):
        engine.call("c1")
    assert engine.agent("a1").state is AgentState.AVAILABLE
    assert engine.next_deadline() is None


def test_a_declared_skill_nobody_has_yet_is_accepted_and_waits() -> None:
    engine = engine_with([queue()], [agent("a1")], "a1", skills=["cantonese"])
    assert "cantonese" in engine.skills
    needs = (SkillRequirement("cantonese", 5),)
    assert offered_to(engine.enqueue(request("c1", requirements=needs), T0)) == []
    assert engine.position("c1") == 1


def test_a_calls_criteria_as_text_read_back_the_same() -> None:
    requirements = (SkillRequirement("cards", 3), SkillRequirement("粤语", 6))
    conditions = (
        AttributeCondition("language", "=", "zh"),
        AttributeCondition("region", "!=", "north,west"),
        AttributeCondition("tier", "in", ("gold", "vip")),
    )
    text = format_call_criteria(requirements, conditions)
    assert text.startswith("cards:3,粤语:6,language=zh,region!=north%2Cwest,")
    assert parse_call_criteria(text) == (requirements, conditions, [])
    assert format_call_criteria((), ()) == ""
    assert parse_call_criteria("") == ((), (), [])


def test_criteria_text_from_a_channel_is_read_item_by_item() -> None:
    text = " cards:3 ,,cards:5,level:11,billing:x,:2,lang=,=zh,vip!=a|b,lang=zh, tier = a|b "
    requirements, conditions, junk = parse_call_criteria(text)
    assert requirements == (SkillRequirement("cards", 3),)
    assert conditions == (
        AttributeCondition("lang", "=", "zh"),
        AttributeCondition("tier", "in", ("a", "b")),
    )
    assert junk == ["cards:5", "level:11", "billing:x", ":2", "lang=", "=zh", "vip!=a|b"]


def test_a_calls_criteria_in_the_journal_read_back_the_same() -> None:
    requirements = (SkillRequirement("cards", 3),)
    conditions = (
        AttributeCondition("language", "=", "zh"),
        AttributeCondition("tier", "in", ("gold", "vip")),
    )
    payload = criteria_payload(requirements, conditions)
    assert payload == {
        "skills": {"cards": 3},
        "attributes": [["language", "=", "zh"], ["tier", "in", ["gold", "vip"]]],
    }
    assert criteria_from_payload(json.loads(json.dumps(payload))) == (requirements, conditions)
    # Written before calls had criteria of their own, or damaged: nothing, or what is sound.
    assert criteria_from_payload({}) == ((), ())
    damaged = {"skills": {"cards": "3", "tech": 4}, "attributes": [["x"], ["a", "=", 5]]}
    assert criteria_from_payload(damaged) == ((SkillRequirement("tech", 4),), ())


# -- errors -----------------------------------------------------------------------------------


def test_unknown_ids_and_illegal_transitions_change_nothing() -> None:
    engine = engine_with([queue()], [agent("a1")], "a1")
    engine.enqueue(request("c1"), T0)
    before = (engine.snapshot(T0), engine.waiting("sales"), engine.next_deadline())
    with pytest.raises(UnknownAgent, match="nobody"):
        engine.login("nobody", T0)
    with pytest.raises(UnknownCall):
        engine.offer_accepted("nothing", T0)
    with pytest.raises(UnknownQueue):
        engine.waiting("nowhere")
    with pytest.raises(ValueError, match="unknown queue"):
        engine.enqueue(request("c2", "nowhere"), T0)
    with pytest.raises(ValueError, match="already"):
        engine.enqueue(request("c1"), T0)
    with pytest.raises(IllegalTransition):
        engine.call_ended("c1", T0)
    with pytest.raises(IllegalTransition):
        engine.login("a1", T0)
    assert (engine.snapshot(T0), engine.waiting("sales"), engine.next_deadline()) == before


# -- recovery ---------------------------------------------------------------------------------


def test_restored_agents_and_calls_pick_up_where_they_were() -> None:
    engine = RoutingEngine([queue(wrap_up_s=30)], [agent("a1"), agent("a2"), agent("a3")])
    engine.restore_talking("c0", "sales", "a1", T0 - 50, caller="张伟")
    engine.restore_agent("a2", AgentState.WRAP_UP, T0 - 10)
    engine.restore_agent("a3", AgentState.NOT_READY, T0 - 100, "lunch")
    assert engine.agent("a3").reason == "lunch"
    decisions = engine.enqueue(request("c1", virtual_enqueued_at=T0 - 60), T0)
    assert offered_to(decisions) == []
    assert engine.next_deadline() == T0 + 20  # a2's wrap-up
    assert offered_to(engine.tick(T0 + 20)) == [("c1", "a2")]
    assert engine.call_ended("c0", T0 + 30)[0] == CallEnded("c0", "a1", "sales", 80, T0 + 30)


def test_a_restored_available_agent_is_routed_by_the_next_input() -> None:
    engine = RoutingEngine([queue()], [agent("a1")])
    engine.enqueue(request("c1"), T0)
    engine.restore_agent("a1", AgentState.AVAILABLE, T0 + 1)
    assert engine.next_deadline() == T0 + 1
    assert offered_to(engine.tick(T0 + 2)) == [("c1", "a1")]
    with pytest.raises(ValueError, match="restore_talking"):
        engine.restore_agent("a1", AgentState.ON_CALL, T0)


# -- wallboard --------------------------------------------------------------------------------


def test_snapshot_counts_per_queue_and_lists_agents() -> None:
    engine = engine_with([queue()], [agent("a1", name="王小明"), agent("a2")], "a1")
    engine.enqueue(request("c1"), T0)
    engine.enqueue(request("c2"), T0 + 10)
    snapshot = engine.snapshot(T0 + 40)
    (sales,) = snapshot.queues
    assert (sales.waiting, sales.ringing, sales.longest_wait_s) == (1, 1, 40)
    assert sales.agents[AgentState.RESERVED] == 1
    assert sales.agents[AgentState.LOGGED_OUT] == 1
    assert sales.estimated_wait_s == 2 * 180
    assert [view.agent_id for view in snapshot.agents] == ["a1", "a2"]
