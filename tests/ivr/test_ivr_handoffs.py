"""Where a flow hands the call on: an ACD queue (with skills, priority, attributes and a
preferred agent), the post-call survey, a callback, and transfers — end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctiserver.acd.model import AgentState
from ctiserver.sim.events import Event as AmiEvent
from ctiserver.sim.phones import PhonePolicy
from ctiserver.store.call_history import survey_answers
from ctiserver.store.customers import create_customer
from ctiserver.store.database import Database
from tests.ivr.centre import agent, ivr_centre
from tests.polling import until

QUEUE_FLOW = """
name: 排队 Queue test
start: who
nodes:
  who: {type: lookup, by: caller, next: route, not_found: route}
  route:
    type: branch
    when: [{tier: [vip], next: vip}]
    else: standard
  vip:
    type: queue
    queue: support
    priority: "urgency + 3"
    skills: {english: 5}
    attributes: {language: "${customer_language}"}
    preferred_agent: last_agent
    survey: rate
  standard: {type: queue, queue: support, skills: {mandarin: 5}, survey: rate}
  rate: {type: survey, prompt: test/rate, variable: csat}
"""

ENGLISH_AGENT = agent("1002", skills="english = 8", attributes='language = "en"')


async def test_a_vip_goes_to_the_agent_with_the_skill_then_rates_the_call(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    await create_customer(db, name="Emily 周", phones=["13800138000"], grade="vip", language="en")
    agents = agent("1001") + ENGLISH_AGENT
    async with ivr_centre(tmp_path, pg_dsn, db, {"q": QUEUE_FLOW}, agents=agents) as centre:
        talk = PhonePolicy(ring_time=0.5, talk_time=3.0)  # then the agent hangs up
        centre.emulator.add_agent_phone("agent1001", talk)
        centre.emulator.add_agent_phone("agent1002", talk)
        acd = centre.server.acd
        assert acd is not None
        acd.login("1001")  # idle the longest, but without English
        acd.login("1002")
        call = await centre.call("13800138000", "Emily 周")
        await until(lambda: acd.agent_state("1002") is AgentState.RESERVED, "1002 offered")
        # While the agent's phone rings, the screen-pop can show the IVR path.
        popped = centre.ivr.record_of(call.uniqueid)
        assert popped is not None and popped["outcome"] == "queued"
        assert [step["node"] for step in popped["path"]] == ["who", "route", "vip"]
        assert acd.agent_state("1001") is AgentState.AVAILABLE
        await centre.until_sent(call, "STREAM FILE test/rate")
        centre.press(call, "4")
        await call.ended
        acd_events = await centre.events(call, "acd.")
        answers = await survey_answers(db, call.uniqueid)
        sent = centre.sent(call)
    entered: dict[str, Any] = next(e for e in acd_events if e["type"] == "acd.caller_entered")[
        "payload"
    ]
    assert entered["priority"] == 13  # "urgency + 3" with urgency unset, plus grade vip 10
    assert entered["skills"] == {"english": 5}
    connected = next(e for e in acd_events if e["type"] == "acd.connected")
    assert connected["agent_id"] == "1002"
    assert len(answers) == 1
    assert answers[0]["score"] == 4
    assert answers[0]["agent_id"] == "1002"
    assert answers[0]["queue"] == "support"
    assert answers[0]["flow"] == "q"
    assert "SET VARIABLE CTI_SURVEY q/rate" in sent
    assert sent[-2:] == ['STREAM FILE auth-thankyou ""', "HANGUP"]


async def test_no_survey_when_the_caller_hangs_up_first(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with ivr_centre(tmp_path, pg_dsn, db, {"q": QUEUE_FLOW}, agents=agent("1001")) as centre:
        centre.emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.5))
        acd = centre.server.acd
        assert acd is not None
        acd.login("1001")
        call = await centre.call("13900000000", "李四")
        await until(lambda: acd.agent_state("1001") is AgentState.ON_CALL, "talking")
        centre.hang_up(call)
        await call.ended
        answers = await survey_answers(db, call.uniqueid)
    assert answers == []


CALLBACK_FLOW = """
name: 回电 Callback test
start: ask
nodes:
  ask: {type: callback, queue: support}
"""


async def test_a_confirmed_callback_keeps_its_place_and_rings_the_agent_first(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with ivr_centre(
        tmp_path, pg_dsn, db, {"cb": CALLBACK_FLOW}, agents=agent("1001")
    ) as centre:
        centre.emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.5, talk_time=1.0))
        call = await centre.call("13800138000", "张三")
        await centre.until_sent(call, 'SAY DIGITS 13800138000 ""')
        await centre.until_sent(call, "STREAM FILE vm-toenternumber")
        centre.press(call, "1")
        await call.ended
        record = await centre.record(call)
        acd = centre.server.acd
        assert acd is not None
        assert acd.engine.call(call.uniqueid).callback_number == "13800138000"
        acd.login("1001")
        await until(lambda: acd.agent_state("1001") is AgentState.ON_CALL, "calling back")
        acd_events = await centre.events(call, "acd.")
    assert (record["outcome"], record["ended_at_node"]) == ("callback", "ask")
    assert record["path"][0]["input"] == "13800138000"
    offer = next(e for e in acd_events if e["type"] == "acd.offer")
    assert offer["payload"]["callback_number"] == "13800138000"


async def test_a_callback_to_another_number_is_keyed_in(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with ivr_centre(tmp_path, pg_dsn, db, {"cb": CALLBACK_FLOW}) as centre:
        call = await centre.call("13800138000", "张三")
        await centre.until_sent(call, "STREAM FILE vm-toenternumber")
        centre.press(call, "2")
        await centre.until_sent(call, "GET DATA vm-enter-num-to-call")
        centre.press(call, "02112345678#")
        await call.ended
        record = await centre.record(call)
        acd = centre.server.acd
        assert acd is not None
        kept = acd.engine.call(call.uniqueid)
    assert record["outcome"] == "callback"
    assert kept.callback_number == "02112345678"


TRANSFER_FLOW = """
name: 转接 Transfer test
start: menu
nodes:
  menu:
    type: menu
    prompt: test/menu
    options: {"1": desk, "2": partner}
    timeout: 5
  desk: {type: transfer, destination: "1002"}
  partner: {type: transfer, destination: "4008889999"}
"""


async def test_transfers_ring_an_extension_or_go_out_over_the_trunk(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    dialled: list[str] = []

    def note(event: AmiEvent) -> None:
        if event.name == "DialBegin":
            dialled.append(event.get("DialString") or "")

    async with ivr_centre(tmp_path, pg_dsn, db, {"t": TRANSFER_FLOW}) as centre:
        centre.emulator.add_agent_phone("agent1002", PhonePolicy(ring_time=0.5, talk_time=0.5))
        # The carrier's side of the trunk: reachable, so Dial gets as far as DialBegin.
        centre.emulator.add_phone("pstn", PhonePolicy(ring_time=0.5, talk_time=0.5))
        centre.emulator.add_listener(note)
        records = []
        for calls, key in enumerate(("1", "2"), start=1):
            call = await centre.call()
            await centre.reaches(call, "menu")
            centre.press(call, key)
            await until(lambda n=calls: len(dialled) >= n, f"Dial after key {key}")
            centre.hang_up(call)
            await call.ended
            records.append(await centre.record(call))
    assert dialled == ["agent1002", "4008889999@pstn"]
    assert [(r["outcome"], r["ended_at_node"]) for r in records] == [
        ("transferred", "desk"),
        ("transferred", "partner"),
    ]
