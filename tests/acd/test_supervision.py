"""Supervisor actions end to end: the real Server against the emulator running the
shipped dialplan, over real sockets (listen, whisper, barge, stop, forced states)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ctiserver.acd.model import AgentState
from ctiserver.acd.supervision import Supervision, SupervisionError
from ctiserver.auth.principal import Principal, Role
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.events import Event as SimEvent
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

SUPERVISOR = Principal(1, "supervisor9001", "陈主管 Supervisor", Role.SUPERVISOR)
AGENT_ACCOUNT = Principal(2, "agent1002", "Agent", Role.AGENT, agent_id="1002")
QUICK = PhonePolicy(ring_time=0.2)


@contextlib.asynccontextmanager
async def supervised_centre(
    tmp_path: Path,
    pg_dsn: str,
    db: Database,
    *,
    supervisor_phone: PhonePolicy | None = QUICK,
) -> AsyncIterator[tuple[Centre, AsteriskEmulator, Supervision, list[SimEvent]]]:
    acd = write_acd(tmp_path, agent_block("1001") + agent_block("1002", "李四"))
    async with emulated_asterisk() as emulator:
        for agent in ("1001", "1002"):
            emulator.add_agent_phone(f"agent{agent}", PhonePolicy(ring_time=0.2))
        if supervisor_phone is not None:
            emulator.add_supervisor_phone("supervisor9001", supervisor_phone)
        else:
            emulator.unregister("supervisor9001")
        published: list[SimEvent] = []
        emulator.add_listener(published.append)
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            # The server's own: a second instance would act on every call end twice.
            supervision = centre.server.supervision
            assert supervision is not None
            yield centre, emulator, supervision, published


def named(published: list[SimEvent], name: str) -> list[dict[str, str]]:
    return [dict(e.headers) for e in published if e.name == name]


def supervisor_events(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(e["type"], e["payload"]) for e in events if e["type"].startswith("acd.supervisor_")]


def spy_originates(emulator: AsteriskEmulator) -> list[dict[str, str]]:
    return [o for o in actions_sent(emulator, "Originate") if o.get("Application") == "ChanSpy"]


async def test_listen_whisper_barge_then_stop(tmp_path: Path, pg_dsn: str, db: Database) -> None:
    async with supervised_centre(tmp_path, pg_dsn, db) as (centre, emulator, sup, published):
        call = await centre.answered_call("1001")
        leg = centre.acd.calls[call.uniqueid].leg
        assert leg is not None and leg.channel is not None

        listened = await sup.listen(SUPERVISOR, "1001")
        assert (listened.action, listened.call_id) == ("listen", call.uniqueid)
        await until(lambda: len(named(published, "ChanSpyStart")) == 1, "ChanSpyStart")
        [originate] = spy_originates(emulator)
        # 10's Originate, header for header, plus our ChannelId (05).
        assert {k: v for k, v in originate.items() if k not in ("ActionID", "ChannelId")} == {
            "Action": "Originate",
            "Channel": "PJSIP/supervisor9001",
            "Application": "ChanSpy",
            "Data": "PJSIP/agent1001,q",
            "CallerID": '"Monitor agent1001" <9001>',
            "Timeout": "20000",
            "Async": "true",
        }
        assert originate["ChannelId"].startswith("cti-spy-")
        first_leg = listened.detail["spy_channel"]
        assert first_leg.startswith("PJSIP/supervisor9001-")
        [start] = named(published, "ChanSpyStart")
        assert (start["SpyerChannel"], start["SpyeeChannel"]) == (first_leg, leg.channel)
        assert start["SpyeeLinkedid"] == call.uniqueid
        # The emulator published ChanSpyStart; the server reads it from AMI a moment later.
        await until(lambda: (spy := sup.spy_of("supervisor9001")) is not None and spy.spying, "spy")
        info = sup.spy_of("supervisor9001")
        assert info is not None and info.answered and info.spying
        spy_chan = emulator.pbx.find_channel(first_leg)
        assert spy_chan is not None and spy_chan.bridge is None  # never in the agent's bridge

        # Same request again: nothing new is originated.
        again = await sup.listen(SUPERVISOR, "1001")
        assert again.detail["spy_channel"] == first_leg and len(spy_originates(emulator)) == 1

        whispered = await sup.whisper(SUPERVISOR, "1001")
        hangups = [h["Channel"] for h in actions_sent(emulator, "Hangup")]
        assert hangups == [first_leg]  # the listen leg ended before the new Originate
        assert spy_originates(emulator)[-1]["Data"] == "PJSIP/agent1001,qw"
        await until(lambda: len(named(published, "ChanSpyStart")) == 2, "second ChanSpyStart")
        barged = await sup.barge(SUPERVISOR, "1001")
        assert spy_originates(emulator)[-1]["Data"] == "PJSIP/agent1001,qB"
        barge_leg = barged.detail["spy_channel"]
        await until(lambda: len(named(published, "ChanSpyStart")) == 3, "third ChanSpyStart")

        stopped = await sup.stop(SUPERVISOR)
        assert stopped.action == "stop"
        assert [h["Channel"] for h in actions_sent(emulator, "Hangup")] == [
            first_leg,
            whispered.detail["spy_channel"],
            barge_leg,
        ]
        assert sup.spy_of("supervisor9001") is None
        stops = named(published, "ChanSpyStop")
        assert [s["SpyerChannel"] for s in stops] == [
            first_leg,
            whispered.detail["spy_channel"],
            barge_leg,
        ]
        # The agent's call went on throughout.
        assert centre.acd.agent_state("1001") is AgentState.ON_CALL and not call.ended.done()
        with pytest.raises(SupervisionError) as nothing:
            await sup.stop(SUPERVISOR)
        assert nothing.value.code == "no_spy"
        events = await centre.events(call.uniqueid)
    got = supervisor_events(events)
    assert [(kind, p.get("mode"), p.get("reason")) for kind, p in got] == [
        ("acd.supervisor_listen", "listen", None),
        ("acd.supervisor_spy_ended", "listen", "switched"),
        ("acd.supervisor_whisper", "whisper", None),
        ("acd.supervisor_spy_ended", "whisper", "switched"),
        ("acd.supervisor_barge", "barge", None),
        ("acd.supervisor_spy_ended", "barge", "stopped"),
    ]
    assert {p["supervisor"] for _, p in got} == {"supervisor9001"}
    assert got[0][1]["endpoint"] == "PJSIP/supervisor9001"
    assert {e["agent_id"] for e in events if e["type"].startswith("acd.supervisor_")} == {"1001"}


async def test_the_agents_call_ending_ends_the_spy(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with supervised_centre(tmp_path, pg_dsn, db) as (centre, emulator, sup, published):
        call = await centre.answered_call("1001")
        result = await sup.whisper(SUPERVISOR, "1001")
        spy_leg = result.detail["spy_channel"]
        await until(lambda: bool(named(published, "ChanSpyStart")), "ChanSpyStart")
        await centre.server.controls.hang_up("1001")  # type: ignore[union-attr]
        await call.ended
        # ChanSpy without E would scan on (app_chanspy.c): ctiserver hangs the leg up.
        await until(lambda: emulator.pbx.find_channel(spy_leg) is None, "spy leg gone")
        assert spy_leg in [h["Channel"] for h in actions_sent(emulator, "Hangup")]
        await until(lambda: sup.spy_of("supervisor9001") is None, "spy forgotten")
        events = await centre.events(call.uniqueid)
        # The agent's next call is not spied on.
        await centre.agent_reaches("1001", AgentState.AVAILABLE)
        await centre.emulator.place_call("5559876")
        await centre.agent_reaches("1001", AgentState.ON_CALL)
        assert len(named(published, "ChanSpyStart")) == 1
    ended = [p for kind, p in supervisor_events(events) if kind == "acd.supervisor_spy_ended"]
    assert [(p["mode"], p["reason"]) for p in ended] == [("whisper", "call_ended")]


async def test_supervisor_hanging_up_ends_the_spy(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    policy = PhonePolicy(ring_time=0.2, talk_time=1.0)
    async with supervised_centre(tmp_path, pg_dsn, db, supervisor_phone=policy) as (
        centre,
        _emulator,
        sup,
        published,
    ):
        call = await centre.answered_call("1001")
        await sup.barge(SUPERVISOR, "1001")
        await until(lambda: sup.spy_of("supervisor9001") is None, "supervisor hung up")
        assert len(named(published, "ChanSpyStop")) == 1
        assert centre.acd.agent_state("1001") is AgentState.ON_CALL
        events = await centre.events(call.uniqueid)
    ended = [p for kind, p in supervisor_events(events) if kind == "acd.supervisor_spy_ended"]
    assert [p["reason"] for p in ended] == ["supervisor_hung_up"]


async def test_force_not_ready_and_logout(tmp_path: Path, pg_dsn: str, db: Database) -> None:
    async with supervised_centre(tmp_path, pg_dsn, db) as (centre, _emulator, sup, _published):
        # Idle agents: at once.
        centre.acd.login("1002")
        result = await sup.force_not_ready(SUPERVISOR, "1002", "meeting")
        assert result.detail == {"reason": "meeting", "previous": "available", "deferred": False}
        view = centre.acd.engine.agent("1002")
        assert (view.state, view.reason) == (AgentState.NOT_READY, "meeting")
        await sup.force_logout(SUPERVISOR, "1002")
        assert centre.acd.agent_state("1002") is AgentState.LOGGED_OUT

        # On a call: when the call ends, without wrap-up.
        call = await centre.answered_call("1001")
        result = await sup.force_not_ready(SUPERVISOR, "1001", "coaching")
        assert result.detail["deferred"] is True and result.call_id == call.uniqueid
        assert centre.acd.agent_state("1001") is AgentState.ON_CALL
        await centre.server.controls.hang_up("1001")  # type: ignore[union-attr]
        await centre.agent_reaches("1001", AgentState.NOT_READY)
        assert centre.acd.engine.agent("1001").reason == "coaching"

        centre.acd.make_available("1001")
        await centre.emulator.place_call("5559876")
        await centre.agent_reaches("1001", AgentState.ON_CALL)
        result = await sup.force_logout(SUPERVISOR, "1001")
        assert result.detail == {"previous": "on_call", "deferred": True}
        await centre.server.controls.hang_up("1001")  # type: ignore[union-attr]
        await centre.agent_reaches("1001", AgentState.LOGGED_OUT)
        events = await centre.events()
    got = [(e["type"], e["agent_id"], e["payload"]) for e in events]
    forced = [(k, a, p.get("reason"), p["deferred"]) for k, a, p in got if "supervisor_" in k]
    assert forced == [
        ("acd.supervisor_not_ready", "1002", "meeting", False),
        ("acd.supervisor_logout", "1002", None, False),
        ("acd.supervisor_not_ready", "1001", "coaching", True),
        ("acd.supervisor_logout", "1001", None, True),
    ]
    assert all(p["supervisor"] == "supervisor9001" for k, _, p in got if "supervisor_" in k)
    states = [p["state"] for k, a, p in got if k == "acd.agent_state" and a == "1001"]
    assert "wrap_up" not in states and states[-1] == "logged_out"


async def test_refusals(tmp_path: Path, pg_dsn: str, db: Database) -> None:
    async with supervised_centre(tmp_path, pg_dsn, db, supervisor_phone=None) as (
        centre,
        emulator,
        sup,
        _published,
    ):

        async def code_of(coro: Any) -> str:
            with pytest.raises(SupervisionError) as refused:
                await coro
            return refused.value.code

        assert await code_of(sup.listen(AGENT_ACCOUNT, "1001")) == "forbidden"
        assert await code_of(sup.force_logout(AGENT_ACCOUNT, "1001")) == "forbidden"
        assert await code_of(sup.listen(SUPERVISOR, "9999")) == "unknown_agent"
        assert await code_of(sup.listen(SUPERVISOR, "1001")) == "not_logged_in"
        assert await code_of(sup.force_not_ready(SUPERVISOR, "1001", "x")) == "not_logged_in"
        assert await code_of(sup.force_logout(SUPERVISOR, "1001")) == "not_logged_in"
        centre.acd.login("1002")
        assert await code_of(sup.whisper(SUPERVISOR, "1002")) == "no_call"
        assert await code_of(sup.force_not_ready(SUPERVISOR, "1002", "  ")) == "bad_reason"
        assert await code_of(sup.stop(SUPERVISOR)) == "no_spy"
        centre.acd.logout("1002")
        # The supervisor's phone is not registered: Originate fails (05c, Reason 0).
        call = await centre.answered_call("1001")
        assert await code_of(sup.barge(SUPERVISOR, "1001")) == "supervisor_phone_unreachable"
        assert sup.spy_of("supervisor9001") is None
        assert emulator.pbx.find_channel(call.name) is not None
        events = await centre.events(call.uniqueid)
    [(kind, payload)] = supervisor_events(events)
    assert kind == "acd.supervisor_spy_failed"
    assert (payload["code"], payload["mode"]) == ("supervisor_phone_unreachable", "barge")
