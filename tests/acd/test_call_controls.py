"""Agent call controls end to end: the real Server against the emulator running the
shipped dialplan, over real sockets (hang up, hold, transfer, click-to-dial)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ctiserver.acd.call_controls import (
    CallControlError,
    CallControls,
    CallProgress,
    ProgressStage,
    TransferTarget,
    _Talk,
    _Talks,
)
from ctiserver.acd.model import AgentState
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.phones import PhonePolicy
from ctiserver.store.database import Database
from tests.acd.centre import (
    Centre,
    actions_sent,
    agent_block,
    emulated_asterisk,
    running_server,
    settings_for,
    until,
    write_acd,
)


@contextlib.asynccontextmanager
async def centre_with_controls(
    tmp_path: Path, pg_dsn: str, db: Database, agents: tuple[str, ...] = ("1001",)
) -> AsyncIterator[tuple[Centre, AsteriskEmulator, CallControls, list[CallProgress]]]:
    acd = write_acd(tmp_path, "".join(agent_block(a) for a in agents))
    async with emulated_asterisk() as emulator:
        for agent in agents:
            emulator.add_agent_phone(f"agent{agent}", PhonePolicy(ring_time=0.2))
        emulator.add_phone("pstn", PhonePolicy(ring_time=0.2))  # the carrier trunk
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            # The server's own controls: a second instance would journal every fact twice.
            controls = centre.server.controls
            assert controls is not None
            progress: list[CallProgress] = []
            controls.add_progress_listener(progress.append)
            yield centre, emulator, controls, progress


def stages(progress: list[CallProgress], agent_id: str) -> list[str]:
    return [p.stage.value for p in progress if p.agent_id == agent_id]


def kinds(events: list[dict[str, object]]) -> list[str]:
    return [str(e["type"]) for e in events]


async def test_hang_up_ends_the_call_like_the_phone(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with centre_with_controls(tmp_path, pg_dsn, db) as (centre, emulator, controls, progress):
        call = await centre.answered_call("1001")
        [info] = controls.calls("1001")
        assert (info.call_id, info.caller, info.queue) == (call.uniqueid, "5551234", "support")
        assert info.answered_at is not None and not info.on_hold
        agent_leg = centre.acd.calls[call.uniqueid].leg
        assert agent_leg is not None
        result = await controls.hang_up("1001")
        assert result.call_id == call.uniqueid
        await call.ended
        await centre.agent_reaches("1001", AgentState.WRAP_UP)
        assert controls.calls("1001") == []
        [hangup] = actions_sent(emulator, "Hangup")
        assert hangup["Channel"] == agent_leg.channel
        events = await centre.events(call.uniqueid)
        with pytest.raises(CallControlError) as refused:
            await controls.hang_up("1001")
        assert refused.value.code == "no_call"
    assert "acd.call_ended" in kinds(events)
    assert stages(progress, "1001") == ["ringing", "answered", "ended"]


async def test_hold_unhold_redirects_both_legs_then_bridges_them_again(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with centre_with_controls(tmp_path, pg_dsn, db) as (centre, emulator, controls, progress):
        call = await centre.answered_call("1001")
        leg = centre.acd.calls[call.uniqueid].leg
        assert leg is not None and leg.channel is not None
        with pytest.raises(CallControlError) as refused:
            await controls.unhold("1001")
        assert refused.value.code == "not_on_hold"
        await controls.hold("1001")
        [redirect] = actions_sent(emulator, "Redirect")
        assert redirect["Channel"] == call.name
        assert (redirect["Context"], redirect["Exten"], redirect["Priority"]) == (
            "cti-held",
            "s",
            "1",
        )
        assert redirect["ExtraChannel"] == leg.channel
        assert redirect["ExtraContext"] == "cti-agent-held"
        await until(lambda: call.channel.context == "cti-held", "caller in cti-held")
        agent_chan = emulator.pbx.find_channel(leg.channel)
        assert agent_chan is not None
        await until(lambda: agent_chan.context == "cti-agent-held", "agent leg parked")
        assert call.channel.bridge is None and not agent_chan.gone
        [info] = controls.calls("1001")
        assert info.on_hold and info.held_by == "cti"
        assert centre.acd.agent_state("1001") is AgentState.ON_CALL
        with pytest.raises(CallControlError) as twice:
            await controls.hold("1001")
        assert twice.value.code == "already_on_hold"
        await controls.unhold("1001")
        bridges = actions_sent(emulator, "Bridge")
        assert (bridges[-1]["Channel1"], bridges[-1]["Channel2"]) == (call.name, leg.channel)
        await until(
            lambda: call.channel.bridge is not None and call.channel.bridge is agent_chan.bridge,
            "bridged again",
        )
        assert not controls.calls("1001")[0].on_hold
        await controls.hang_up("1001")
        await call.ended
        await centre.agent_reaches("1001", AgentState.WRAP_UP)
        events = await centre.events(call.uniqueid)
    assert [e["payload"]["by"] for e in events if e["type"] in ("acd.hold", "acd.unhold")] == [  # type: ignore[index]
        "cti",
        "cti",
    ]
    assert stages(progress, "1001") == [
        "ringing",
        "answered",
        "on_hold",
        "off_hold",
        "ended",
    ]


async def test_caller_hangs_up_while_held(tmp_path: Path, pg_dsn: str, db: Database) -> None:
    async with centre_with_controls(tmp_path, pg_dsn, db) as (centre, emulator, controls, _):
        call = await centre.answered_call("1001")
        leg = centre.acd.calls[call.uniqueid].leg
        assert leg is not None and leg.channel is not None
        await controls.hold("1001")
        await until(lambda: call.channel.context == "cti-held", "caller in cti-held")
        emulator.hangup(call.name)  # the caller's BYE
        await call.ended
        await centre.agent_reaches("1001", AgentState.WRAP_UP)
        # Nobody is left waiting in [cti-agent-held].
        await until(lambda: emulator.pbx.find_channel(leg.channel) is None, "agent leg gone")
        assert any(h["Channel"] == leg.channel for h in actions_sent(emulator, "Hangup"))
        assert controls.calls("1001") == []


async def test_agent_phone_hangs_up_while_customer_held(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with centre_with_controls(tmp_path, pg_dsn, db) as (centre, emulator, controls, _):
        call = await centre.answered_call("1001")
        await controls.hold("1001")
        await until(lambda: call.channel.context == "cti-held", "caller in cti-held")
        emulator.phone_hangup("agent1001")
        await call.ended  # not left on music for an hour
        await centre.agent_reaches("1001", AgentState.WRAP_UP)


async def test_phone_hold_is_tracked_and_not_resumed_by_the_cti(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with centre_with_controls(tmp_path, pg_dsn, db) as (centre, emulator, controls, progress):
        call = await centre.answered_call("1001")
        leg = centre.acd.calls[call.uniqueid].leg
        assert leg is not None and leg.channel is not None
        emulator.hold(leg.channel)  # re-INVITE sendonly from the phone (09)
        await until(lambda: controls.calls("1001")[0].on_hold, "hold seen")
        assert controls.calls("1001")[0].held_by == "phone"
        with pytest.raises(CallControlError) as refused:
            await controls.unhold("1001")
        assert refused.value.code == "held_by_phone"
        emulator.hold(leg.channel, hold=False)
        await until(lambda: not controls.calls("1001")[0].on_hold, "unhold seen")
        assert actions_sent(emulator, "Redirect") == []
        emulator.hangup(call.name)
        await centre.agent_reaches("1001", AgentState.WRAP_UP)
        events = await centre.events(call.uniqueid)
    held = [e["payload"]["by"] for e in events if e["type"] in ("acd.hold", "acd.unhold")]  # type: ignore[index]
    assert held == ["phone", "phone"]
    assert "on_hold" in stages(progress, "1001") and "off_hold" in stages(progress, "1001")


async def test_blind_transfer_to_a_queue_is_a_new_stay(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    agents = ("1001", "1002")
    async with centre_with_controls(tmp_path, pg_dsn, db, agents) as (
        centre,
        emulator,
        controls,
        progress,
    ):
        call = await centre.answered_call("1001")
        centre.acd.login("1002")
        await controls.blind_transfer("1001", TransferTarget.queue("support"))
        await centre.agent_reaches("1001", AgentState.WRAP_UP)
        await centre.agent_reaches("1002", AgentState.ON_CALL)
        [setvar] = [
            a for a in actions_sent(emulator, "Setvar") if a["Variable"] == "CTI_TRANSFER_QUEUE"
        ]
        assert (setvar["Channel"], setvar["Value"]) == (call.name, "support")
        [redirect] = actions_sent(emulator, "Redirect")
        assert (redirect["Channel"], redirect["Context"]) == (call.name, "cti-transfer-queue")
        assert "ExtraChannel" not in redirect
        await controls.hang_up("1002")
        await call.ended
        await centre.agent_reaches("1002", AgentState.WRAP_UP)
        events = await centre.events(call.uniqueid)
    names = kinds(events)
    [transferred] = [e for e in events if e["type"] == "acd.transferred"]
    assert transferred["agent_id"] == "1001"
    assert transferred["payload"] == {  # type: ignore[comparison-overlap]
        "from_agent": "1001",
        "target_kind": "queue",
        "target": "support",
        "caller_channel": call.name,
    }
    assert names.count("acd.caller_entered") == 2
    assert names.count("acd.call_ended") == 2
    assert names.index("acd.transferred") < names.index("acd.call_ended")
    assert "transferred" in stages(progress, "1001")


async def test_blind_transfer_to_an_agent_rings_their_phone(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    agents = ("1001", "1002")
    async with centre_with_controls(tmp_path, pg_dsn, db, agents) as (
        centre,
        emulator,
        controls,
        progress,
    ):
        call = await centre.answered_call("1001")
        with pytest.raises(CallControlError) as unavailable:
            await controls.blind_transfer("1001", TransferTarget.agent("1002"))
        assert unavailable.value.code == "target_unavailable"  # logged out
        centre.acd.login("1002")
        await controls.blind_transfer("1001", TransferTarget.agent("1002"))
        [redirect] = actions_sent(emulator, "Redirect")
        assert (redirect["Context"], redirect["Exten"]) == ("cti-transfer-agent", "agent1002")
        await centre.agent_reaches("1001", AgentState.WRAP_UP)
        await centre.agent_reaches("1002", AgentState.ON_CALL)
        [info] = controls.calls("1002")
        assert info.call_id == call.uniqueid
        await controls.hang_up("1002")
        await call.ended
        await centre.agent_reaches("1002", AgentState.WRAP_UP)
        events = await centre.events(call.uniqueid)
        every = await centre.events()
    states_1002 = [
        e["payload"]["state"]  # type: ignore[index]
        for e in every
        if e["type"] == "acd.agent_state" and e["agent_id"] == "1002"
    ]
    assert states_1002[:4] == ["available", "not_ready", "on_call", "wrap_up"]
    connected = [e for e in events if e["type"] == "acd.connected"]
    assert [c["agent_id"] for c in connected] == ["1001", "1002"]
    assert stages(progress, "1002") == ["ringing", "answered", "ended"]


async def test_blind_transfer_to_an_agent_who_does_not_answer_frees_them(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    agents = ("1001", "1002")
    async with centre_with_controls(tmp_path, pg_dsn, db, agents) as (
        centre,
        emulator,
        controls,
        _,
    ):
        call = await centre.answered_call("1001")
        emulator.set_policy("agent1002", PhonePolicy(ring_time=None, reject=486))
        centre.acd.login("1002")
        centre.acd.make_not_ready("1001", "after transfer")  # 1001 takes no more calls
        await controls.blind_transfer("1001", TransferTarget.agent("1002"))
        await until(lambda: centre.acd.agent_state("1002") is AgentState.NOT_READY, "reserved")
        # Busy: 1002 is free again and the caller is back in the queue (a new stay).
        await until(
            lambda: (
                centre.acd.agent_state("1002") is not AgentState.NOT_READY
                or centre.acd.engine.agent("1002").reason != "transfer"
            ),
            "released",
        )
        await until(lambda: call.uniqueid in centre.acd.calls, "back in the queue")
        emulator.hangup(call.name)
        await call.ended


async def test_blind_transfer_to_a_number_and_refusals(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with centre_with_controls(tmp_path, pg_dsn, db) as (centre, emulator, controls, _):
        call = await centre.answered_call("1001")
        for target, code in (
            (TransferTarget.queue("nowhere"), "unknown_target"),
            (TransferTarget.agent("9999"), "unknown_target"),
            (TransferTarget.agent("1001"), "unknown_target"),
            (TransferTarget.number("abc"), "bad_number"),
            (TransferTarget.number("1002"), "bad_number"),
        ):
            with pytest.raises(CallControlError) as refused:
                await controls.blind_transfer("1001", target)
            assert refused.value.code == code, target
        assert actions_sent(emulator, "Redirect") == []
        await controls.blind_transfer("1001", TransferTarget.number("+86 138 0013 8000"))
        [redirect] = actions_sent(emulator, "Redirect")
        assert (redirect["Context"], redirect["Exten"]) == ("cti-transfer", "8613800138000")
        await centre.agent_reaches("1001", AgentState.WRAP_UP)
        # The trunk phone answers the Dial of [cti-transfer]: the caller talks to it.
        await until(lambda: call.channel.bridge is not None, "bridged to the number")
        emulator.hangup(call.name)
        await call.ended
        events = await centre.events(call.uniqueid)
    [transferred] = [e for e in events if e["type"] == "acd.transferred"]
    assert transferred["payload"]["target_kind"] == "number"  # type: ignore[index]


async def test_click_to_dial(tmp_path: Path, pg_dsn: str, db: Database) -> None:
    async with centre_with_controls(tmp_path, pg_dsn, db) as (centre, emulator, controls, progress):
        with pytest.raises(CallControlError) as logged_out:
            await controls.click_to_dial("1001", "5559999")
        assert logged_out.value.code == "not_logged_in"
        centre.acd.login("1001")
        with pytest.raises(CallControlError) as no_digits:
            await controls.click_to_dial("1001", "call me")
        assert no_digits.value.code == "bad_number"
        result = await controls.click_to_dial("1001", "+1 555-9999")
        call_id = result.call_id
        assert centre.acd.agent_state("1001") is AgentState.ON_CALL
        [originate] = actions_sent(emulator, "Originate")
        assert originate["Channel"] == "PJSIP/agent1001"
        assert (originate["Context"], originate["Exten"]) == ("cti-outbound", "15559999")
        assert originate["ChannelId"] == call_id
        await until(lambda: controls.calls("1001")[0].on_hold is False, "listed")
        [info] = controls.calls("1001")
        assert (info.direction, info.caller) == ("outbound", "15559999")
        with pytest.raises(CallControlError) as busy:
            await controls.click_to_dial("1001", "5550000")
        assert busy.value.code == "busy"
        await until(lambda: "answered" in stages(progress, "1001"), "customer answered")
        # Hold works on the outbound call too: the customer leg is known from DialEnd (15).
        await controls.hold("1001")
        await controls.unhold("1001")
        await controls.hang_up("1001")
        await centre.agent_reaches("1001", AgentState.WRAP_UP)
        assert await emulator.wait_idle()
        events = await centre.events(call_id)
    names = kinds(events)
    for expected in (
        "acd.outbound_started",
        "acd.agent_state",
        "acd.outbound_answered",
        "acd.call_ended",
    ):
        assert expected in names, (expected, names)
    on_call = next(e for e in events if e["type"] == "acd.agent_state")
    assert on_call["payload"]["state"] == "on_call"  # type: ignore[index]
    assert on_call["payload"]["reason"] == "outbound call"  # type: ignore[index]
    assert "acd.connected" not in names and "acd.caller_entered" not in names
    assert stages(progress, "1001")[-1] == ProgressStage.ENDED.value


async def test_click_to_dial_unanswered_agent_phone(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with centre_with_controls(tmp_path, pg_dsn, db) as (centre, emulator, controls, _):
        emulator.unregister("agent1001")
        centre.acd.login("1001")
        with pytest.raises(CallControlError) as unreachable:
            await controls.click_to_dial("1001", "5559999")
        assert unreachable.value.code == "no_answer"
        await centre.agent_reaches("1001", AgentState.WRAP_UP)
        assert controls.calls("1001") == []


def test_talk_lookups_follow_puts_pops_and_the_agent_channel() -> None:
    """The look-ups by agent leg, channel and agent stay true to the talks held."""
    talks = _Talks()
    inbound = _Talk("c1", "1001", "support", "5551", "inbound", 0.0, agent_uid="u1")
    inbound.agent_channel = "PJSIP/agent1001-01"
    outbound = _Talk("leg2", "1002", "support", "5552", "outbound", 0.0, agent_uid="leg2")
    talks.put(inbound)
    talks.put(outbound)
    assert talks.by_agent_uid("u1") is inbound
    assert talks.by_agent_channel("PJSIP/agent1001-01") is inbound
    assert talks.by_agent_channel("PJSIP/agent1002-02") is None  # not known yet
    talks.set_agent_channel(outbound, "PJSIP/agent1002-02")  # its Newchannel came
    assert talks.by_agent_channel("PJSIP/agent1002-02") is outbound
    assert talks.of_agent("1002") == [outbound]
    # The same call put again (a transfer's new agent): the old entry's look-ups go.
    transferred = _Talk("c1", "1003", "support", "5551", "inbound", 1.0, agent_uid="u3")
    talks.put(transferred)
    assert talks.by_agent_uid("u1") is None and talks.of_agent("1001") == []
    assert talks.by_agent_channel("PJSIP/agent1001-01") is None
    assert talks.get("c1") is transferred and len(talks) == 2
    assert talks.pop("leg2") is outbound and talks.pop("leg2") is None
    assert talks.by_agent_uid("leg2") is None and talks.of_agent("1002") == []
    assert talks.by_agent_channel("PJSIP/agent1002-02") is None
