"""End to end over real sockets: caller -> shipped dialplan -> FastAGI -> queue -> agent
rings -> answer -> talk -> hang-up -> wrap-up, and every way it can go otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctiserver.acd.model import AgentState, SkillRequirement
from ctiserver.sim.phones import BUSY, NO_ANSWER, PhonePolicy
from ctiserver.store.database import Database
from tests.acd.centre import (
    CALLBACK_STEPS,
    agent_block,
    emulated_asterisk,
    running_server,
    settings_for,
    until,
    write_acd,
)


def types(events: list[dict[str, object]]) -> list[str]:
    return [str(e["type"]) for e in events]


async def test_inbound_call_reaches_agent_then_wrap_up(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001", "王小明"))
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.3, talk_time=1.0))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            centre.acd.login("1001")
            call = await emulator.place_call("13800138000", "张三")
            await centre.agent_reaches("1001", AgentState.ON_CALL)
            await call.ended
            await centre.agent_reaches("1001", AgentState.WRAP_UP)
            await centre.agent_reaches("1001", AgentState.AVAILABLE)
            events = await centre.events(call.uniqueid)
    kinds = types(events)
    for expected in (
        "acd.caller_entered",
        "acd.call_queued",
        "acd.offer",
        "acd.agent_ringing",
        "acd.connected",
        "acd.call_left",
        "acd.call_ended",
    ):
        assert expected in kinds, (expected, kinds)
    assert (
        kinds.index("acd.offer") < kinds.index("acd.agent_ringing") < kinds.index("acd.connected")
    )
    entered = events[kinds.index("acd.caller_entered")]["payload"]
    assert entered["caller"] == "13800138000"  # type: ignore[index]
    left = events[kinds.index("acd.call_left")]["payload"]
    assert left["outcome"] == "answered"  # type: ignore[index]
    states = [
        e["payload"]["state"]  # type: ignore[index]
        for e in events
        if e["type"] == "acd.agent_state"
    ]
    assert states[:3] == ["reserved", "on_call", "wrap_up"]


@pytest.mark.parametrize(
    ("policy", "registered", "reason"),
    [
        (NO_ANSWER, True, "no answer"),
        (BUSY, True, "busy"),
        (PhonePolicy(), False, "unreachable"),
    ],
)
async def test_agent_that_does_not_take_the_call_goes_not_ready_and_call_moves_on(
    tmp_path: Path,
    pg_dsn: str,
    db: Database,
    policy: PhonePolicy,
    registered: bool,
    reason: str,
) -> None:
    acd = write_acd(tmp_path, agent_block("1001", "李雷") + agent_block("1002", "韩梅梅"))
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", policy, registered=registered)
        emulator.add_agent_phone("agent1002", PhonePolicy(ring_time=0.2, talk_time=0.5))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            centre.acd.login("1001")
            call = await emulator.place_call("5551234")
            await until(lambda: centre.acd.calls.get(call.uniqueid) is not None, "queued")
            # 1001 is the longest idle: offered first. 1002 logs in while it rings.
            centre.acd.login("1002")
            await centre.agent_reaches("1001", AgentState.NOT_READY)
            assert centre.acd.engine.agent("1001").reason == reason
            await centre.agent_reaches("1002", AgentState.ON_CALL)
            await call.ended
            events = await centre.events(call.uniqueid)
    offers = [e for e in events if e["type"] == "acd.offer"]
    assert [o["agent_id"] for o in offers] == ["1001", "1002"]
    assert [e["payload"]["outcome"] for e in events if e["type"] == "acd.call_left"] == [  # type: ignore[index]
        "answered"
    ]


async def test_caller_abandons_while_waiting(tmp_path: Path, pg_dsn: str, db: Database) -> None:
    acd = write_acd(tmp_path, agent_block("1001"))
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001")
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            centre.acd.login("1001")
            centre.acd.make_not_ready("1001", "lunch")
            call = await emulator.place_call("5551234", hangup_after=1.0)
            await call.ended
            await until(lambda: call.uniqueid not in centre.acd.calls, "forgotten")
            events = await centre.events(call.uniqueid)
            assert centre.acd.agent_state("1001") is AgentState.NOT_READY
    left = [e["payload"]["outcome"] for e in events if e["type"] == "acd.call_left"]  # type: ignore[index]
    assert left == ["abandoned"]
    assert "acd.offer" not in types(events)


async def test_caller_abandons_while_agent_rings(tmp_path: Path, pg_dsn: str, db: Database) -> None:
    acd = write_acd(tmp_path, agent_block("1001"))
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", NO_ANSWER)
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            centre.acd.login("1001")
            call = await emulator.place_call("5551234", hangup_after=1.0)
            await centre.agent_reaches("1001", AgentState.RESERVED)
            await call.ended
            # The agent did nothing wrong: straight back to available, phone stops ringing.
            await centre.agent_reaches("1001", AgentState.AVAILABLE)
            await until(
                lambda: not any(c.name.startswith("PJSIP/agent1001") for c in emulator.channels),
                "agent leg hung up",
            )
            events = await centre.events(call.uniqueid)
    kinds = types(events)
    assert "acd.offer_withdrawn" in kinds
    left = [e["payload"]["outcome"] for e in events if e["type"] == "acd.call_left"]  # type: ignore[index]
    assert left == ["abandoned"]


async def test_callback_keeps_its_place_and_rings_the_agent_before_the_customer(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001", "王小明"), steps=CALLBACK_STEPS)
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.2, talk_time=0.5))
        emulator.add_phone("pstn", PhonePolicy(ring_time=0.2))  # the carrier trunk
        seen: list[tuple[str, str, str]] = []
        emulator.add_listener(
            lambda event: (
                seen.append(
                    (event.name, event.get("Channel") or "", event.get("ChannelStateDesc") or "")
                )
                if event.name in ("Newchannel", "Newstate")
                else None
            )
        )
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            # Nobody logged in: the first caller waits, hears the offer, presses 1.
            first = await emulator.place_call("5551234", "张三", dtmf=[(3.0, "1")])
            await first.ended
            await until(
                lambda: centre.acd.engine.call(first.uniqueid).callback_number == "5551234",
                "callback kept",
            )
            second = await emulator.place_call("5559876", "李四")
            await until(lambda: second.uniqueid in centre.acd.calls, "second caller queued")
            centre.acd.login("1001")
            # The callback is older: the agent gets it first, then the second caller.
            await second.ended
            events = await centre.events()
    offers = [e for e in events if e["type"] == "acd.offer"]
    assert [o["call_id"] for o in offers] == [first.uniqueid, second.uniqueid]
    assert offers[0]["payload"]["callback_number"] == "5551234"  # type: ignore[index]
    first_kinds = types([e for e in events if e["call_id"] == first.uniqueid])
    assert first_kinds.index("acd.callback_offered") < first_kinds.index("acd.callback_requested")
    assert first_kinds.index("acd.offer") < first_kinds.index("acd.connected")
    assert "acd.call_ended" in first_kinds
    # Agent first: the outbound leg to the customer appears only once the agent answered.
    agent_up = next(
        i
        for i, (name, chan, state) in enumerate(seen)
        if name == "Newstate" and chan.startswith("PJSIP/agent1001") and state == "Up"
    )
    dialled = [
        i
        for i, (name, chan, _) in enumerate(seen)
        if name == "Newchannel" and chan.startswith("PJSIP/pstn") and i > 0
    ]
    outbound = [i for i in dialled if i > agent_up]
    assert outbound, seen


async def test_caller_asking_for_a_skill_nobody_knows_is_not_left_waiting(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001"))
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001")
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        karaoke = (SkillRequirement("karaoke", 3),)
        async with running_server(emulator, settings, db, requirements=karaoke) as centre:
            centre.acd.login("1001")
            call = await emulator.place_call("5551234")
            await call.ended  # the closing message, then hung up: no resume loop
            assert call.channel.vars.get("CTI_QUEUE_STATE") == "done"
            events = await centre.events(call.uniqueid)
            assert centre.acd.agent_state("1001") is AgentState.AVAILABLE
    assert events == []
