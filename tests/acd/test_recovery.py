"""Restart and AMI-reconnect recovery, end to end: nothing stuck, nothing forgotten."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ctiserver.acd.decisions import Offer
from ctiserver.acd.model import AgentState, AttributeCondition, CallRequest, SkillRequirement
from ctiserver.acd.views import CallStatus
from ctiserver.config import Settings
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.phones import NO_ANSWER, PhonePolicy
from ctiserver.store.database import Database
from tests.acd.centre import (
    Centre,
    agent_block,
    emulated_asterisk,
    running_server,
    settings_for,
    until,
    write_acd,
)


def same_fastagi_port(settings: Settings, centre: Centre) -> Settings:
    """The restarted server listens where the dialplan's resume loop connects."""
    fastagi = dataclasses.replace(settings.fastagi, port=centre.server.agi.port)
    return dataclasses.replace(settings, fastagi=fastagi)


def payloads(events: list[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [e["payload"] for e in events if e["type"] == kind]  # type: ignore[misc]


async def test_waiting_caller_keeps_its_place_across_a_restart(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001", "王小明"))
    async with emulated_asterisk(resume_wait=1) as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.2, talk_time=0.5))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as before:
            before.acd.login("1001")
            before.acd.make_not_ready("1001", "会议")
            call = await emulator.place_call("13800138000", "张三")
            await until(lambda: call.uniqueid in before.acd.calls, "queued")
            restarted = same_fastagi_port(settings, before)
        # ctiserver is down: the caller hears music in the dialplan's resume loop.
        assert not call.ended.done()
        async with running_server(emulator, restarted, db) as after:
            await until(lambda: call.uniqueid in after.acd.calls, "resumed into the queue")
            agent = after.acd.engine.agent("1001")
            assert (agent.state, agent.reason) == (AgentState.NOT_READY, "会议")
            after.acd.make_available("1001")
            await call.ended
            events = await after.events(call.uniqueid)
    entered = payloads(events, "acd.caller_entered")
    assert len(entered) == 2
    assert entered[0]["virtual_enqueued_at"] == entered[1]["virtual_enqueued_at"]
    assert [p["outcome"] for p in payloads(events, "acd.call_left")] == ["answered"]


CARDS = (SkillRequirement("cards", 3),)
MANDARIN = (AttributeCondition("language", "=", "zh"),)


async def test_waiting_callers_own_requirements_survive_a_restart(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    agents = agent_block("1001", "王小明", cards=5) + agent_block(
        "1002", "李四", cards=3, language="zh"
    )
    acd = write_acd(tmp_path, agents)
    async with emulated_asterisk(resume_wait=1) as emulator:
        emulator.add_agent_phone("agent1002", PhonePolicy(ring_time=0.2, talk_time=0.5))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(
            emulator, settings, db, requirements=CARDS, conditions=MANDARIN
        ) as before:
            before.acd.login("1001")  # free, with cards, but no Mandarin
            call = await emulator.place_call("13800138000", "张三")
            await until(lambda: call.uniqueid in before.acd.calls, "queued")
            assert before.acd.engine.call(call.uniqueid).status is CallStatus.WAITING
            assert call.channel.vars["CTI_REQUIREMENTS"] == "cards:3,language=zh"
            restarted = same_fastagi_port(settings, before)
        # The restarted server's own callers would have no needs: this one brings
        # its own back from the channel (CTI_REQUIREMENTS) through the resume loop.
        async with running_server(emulator, restarted, db) as after:
            await until(lambda: call.uniqueid in after.acd.calls, "resumed into the queue")
            assert after.acd.agent_state("1001") is AgentState.AVAILABLE
            assert after.acd.engine.call(call.uniqueid).status is CallStatus.WAITING
            after.acd.login("1002")
            await call.ended
            events = await after.events(call.uniqueid)
    entered = payloads(events, "acd.caller_entered")
    assert [(p["skills"], p["attributes"]) for p in entered] == [
        ({"cards": 3}, [["language", "=", "zh"]]),
        ({"cards": 3}, [["language", "=", "zh"]]),
    ]
    assert [e["agent_id"] for e in events if e["type"] == "acd.offer"] == ["1002"]
    assert [p["outcome"] for p in payloads(events, "acd.call_left")] == ["answered"]


async def test_kept_callbacks_own_requirements_survive_a_restart(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    agents = agent_block("1001", "王小明") + agent_block("1002", "李四", cards=4)
    acd = write_acd(tmp_path, agents)
    async with emulated_asterisk() as emulator:
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        callback = CallRequest(
            "cb-1", "support", caller="13800138000", callback_number="13800138000"
        )
        async with running_server(emulator, settings, db) as before:
            before.acd.login("1001")  # free, but without cards
            assert before.acd.request_callback(dataclasses.replace(callback, requirements=CARDS))
            assert before.acd.engine.call("cb-1").status is CallStatus.WAITING
            # Refused, nothing kept: the same call again, no number, a skill nobody knows.
            karaoke = (SkillRequirement("karaoke", 1),)
            for refused in (
                callback,
                dataclasses.replace(callback, call_id="cb-2", callback_number=None),
                dataclasses.replace(callback, call_id="cb-3", requirements=karaoke),
            ):
                assert not before.acd.request_callback(refused)
            assert set(before.acd.calls) == {"cb-1"}
        async with running_server(emulator, settings, db) as after:
            assert after.acd.agent_state("1001") is AgentState.AVAILABLE
            assert after.acd.engine.call("cb-1").status is CallStatus.WAITING
            # The restored 1001 is routed by the timer or, at the latest, by this login.
            offers = [d for d in after.acd.login("1002") if isinstance(d, Offer)]
    assert [(o.call_id, o.agent_id, o.callback_number) for o in offers] == [
        ("cb-1", "1002", "13800138000")
    ]


async def test_talking_call_survives_a_restart_and_its_end_is_recorded(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001"))
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.2))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as before:
            call = await before.answered_call()
        async with running_server(emulator, settings, db) as after:
            assert after.acd.agent_state("1001") is AgentState.ON_CALL
            emulator.phone_hangup("agent1001")
            await call.ended
            await after.agent_reaches("1001", AgentState.WRAP_UP)
            events = await after.events(call.uniqueid)
    assert len(payloads(events, "acd.call_ended")) == 1


async def test_call_that_ended_while_ctiserver_was_down_frees_the_agent(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001"))
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.2))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as before:
            call = await before.answered_call()
        emulator.phone_hangup("agent1001")
        await call.ended
        async with running_server(emulator, settings, db) as after:
            # Restored on_call from the log, then the first AMI login shows the
            # channels are gone: the call ends, the agent goes to wrap-up.
            await after.agent_reaches("1001", AgentState.AVAILABLE)
            events = await after.events(call.uniqueid)
    ended = payloads(events, "acd.call_ended")
    assert len(ended) == 1


async def test_agent_ringing_at_restart_is_not_left_reserved(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001"), ring_timeout=30)
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", NO_ANSWER)
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as before:
            before.acd.login("1001")
            call = await emulator.place_call("5551234", hangup_after=1.5)
            await before.agent_reaches("1001", AgentState.RESERVED)
        await call.ended  # the caller gave up while ctiserver was away
        async with running_server(emulator, settings, db) as after:
            assert after.acd.agent_state("1001") is AgentState.AVAILABLE
            # The phone that rang for the dead offer is silenced on the first AMI login.
            await until(lambda: not agent_channels(emulator), "stale agent leg hung up")
            await until(lambda: call.uniqueid not in after.acd.calls, "caller forgotten")
            events = await after.events()
    corrections = [p for p in payloads(events, "acd.agent_state") if p["previous"] == "reserved"]
    assert any(p["reason"] == "recovered after restart" for p in corrections)
    left = [p["outcome"] for p in payloads(events, "acd.call_left")]
    assert left == ["abandoned"]


async def test_hangup_missed_during_an_ami_drop_is_noticed_on_reconnect(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001"))
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.2))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            call = await centre.answered_call()
            logins = centre.server.ami.logins
            for session in list(emulator.ami.sessions):
                session.writer.transport.abort()
            emulator.phone_hangup("agent1001")  # its Hangup event goes nowhere
            await call.ended
            await until(lambda: centre.server.ami.logins > logins, "AMI logged in again")
            await centre.agent_reaches("1001", AgentState.WRAP_UP)


def agent_channels(emulator: AsteriskEmulator) -> list[str]:
    return [c.name for c in emulator.channels if c.name.startswith("PJSIP/agent1001")]
