"""Behaviour of the emulator beyond the recorded scenarios: load, UTF-8, robustness, API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ctiserver.asterisk.agi.codec import parse_environment, parse_response
from ctiserver.sim.clock import Clock
from ctiserver.sim.conformance import Frame
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.phones import PhonePolicy
from ctiserver.sim.testkit import AgiPeer, AgiScriptServer, AmiProbe

LOGIN = "Action: Login\r\nActionID: login\r\nUsername: cti\r\nSecret: cti\r\n\r\n"


class Rig:
    """An emulator with a scripted FastAGI server and a logged-in AMI probe."""

    def __init__(self, speed: float) -> None:
        self.clock = Clock(speed)
        self.script: Callable[[AgiPeer], Awaitable[None]] = _hangup_script
        self.agi = AgiScriptServer(self.clock, self._handle)
        self.emulator: AsteriskEmulator | None = None
        self.ami = AmiProbe(self.clock)

    async def _handle(self, peer: AgiPeer) -> None:
        await self.script(peer)

    async def start(self) -> AsteriskEmulator:
        await self.agi.start()
        self.emulator = AsteriskEmulator(ami_port=0, fastagi_port=self.agi.port, clock=self.clock)
        await self.emulator.start()
        await self.ami.connect("127.0.0.1", self.emulator.ami_port)
        response = await self.ami.action(LOGIN)
        assert response.get("Message") == "Authentication accepted"
        return self.emulator

    async def close(self) -> None:
        await self.ami.close()
        if self.emulator is not None:
            await self.emulator.close()
        await self.agi.close()

    def events(self, name: str) -> list[Frame]:
        return [f for f in self.ami.frames if f.is_event and f.name == name]


async def keyed(rig: Rig, peer: AgiPeer, command: str, digits: str) -> str:
    """Send `command`; once AMI shows it running, the caller keys `digits`."""
    channel = peer.environment["agi_channel"]
    start = len(peer.items)
    peer.send(command + "\n")
    await rig.ami.wait_for(
        lambda f: (
            f.name == "AGIExecStart" and f.get("Channel") == channel and f.get("Command") == command
        )
    )
    assert rig.emulator is not None
    rig.emulator.send_dtmf(channel, digits)
    return await peer.reply(start)


async def _hangup_script(peer: AgiPeer) -> None:
    await peer.command("HANGUP")
    peer.half_close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    setup = Rig(speed=20)
    yield setup
    await setup.close()


async def _wait_until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_hundred_concurrent_ivr_calls_end_cleanly(rig: Rig) -> None:
    replies: list[str] = []

    async def ivr(peer: AgiPeer) -> None:
        await peer.command("ANSWER")
        await peer.command('STREAM FILE beep ""')
        replies.append(await keyed(rig, peer, "GET DATA vm-enter-num-to-call 60000 4", "1234"))
        await peer.command("SET VARIABLE CTI_ACCOUNT 1234")
        await peer.command("HANGUP")
        peer.half_close()

    rig.script = ivr
    emulator = await rig.start()
    calls = [await emulator.place_call(f"5550{i:03d}", f"Caller {i}") for i in range(100)]
    await asyncio.wait_for(asyncio.gather(*(c.ended for c in calls)), 60)
    assert await emulator.wait_idle(10)
    assert emulator.channels == []
    assert not emulator.pbx.tasks
    assert not emulator.pbx.bridges
    assert replies == ["200 result=1234"] * 100
    await _wait_until(lambda: len(rig.events("Hangup")) == 100)
    assert {f.get("Cause") for f in rig.events("Hangup")} == {"0"}


async def test_callers_redirected_to_twenty_agents(rig: Rig) -> None:
    async def queue(peer: AgiPeer) -> None:
        await peer.command("ANSWER")
        await peer.command("SET MUSIC ON default")
        # Wait until the Redirect shows as result=-1 / HANGUP, then close at once.
        while "HANGUP" not in peer.items:
            reply = await peer.command("WAIT FOR DIGIT 1000")
            if not reply or parse_response(reply).result_int != 0:
                break
        peer.half_close()

    rig.script = queue
    emulator = await rig.start()
    agents = [f"agent{2001 + i}" for i in range(20)]
    for name in agents:
        emulator.add_agent_phone(name, PhonePolicy(ring_time=0.5, talk_time=2.0))
    calls = [await emulator.place_call(f"55590{i:02d}", f"Customer {i}") for i in range(20)]
    for index, call in enumerate(calls):
        await rig.ami.wait_for(
            lambda f, name=call.name: f.name == "MusicOnHoldStart" and f.get("Channel") == name
        )
        await rig.ami.action(
            f"Action: Redirect\r\nActionID: r{index}\r\nChannel: {call.name}\r\n"
            f"Context: cti-agent\r\nExten: {agents[index]}\r\nPriority: 1\r\n\r\n"
        )
    await asyncio.wait_for(asyncio.gather(*(c.ended for c in calls)), 60)
    assert await emulator.wait_idle(10)
    await _wait_until(lambda: len(rig.events("BridgeDestroy")) == 20)
    dial_ends = [f for f in rig.events("DialEnd") if f.get("DialStatus") == "ANSWER"]
    assert len(dial_ends) == 20
    assert len(rig.events("Hangup")) == 40
    assert all(f.get("Cause") == "16" for f in rig.events("Hangup"))
    states = {f.get("Device"): f.get("State") for f in rig.events("DeviceStateChange")}
    assert all(states[f"PJSIP/{a}"] == "NOT_INUSE" for a in agents)


async def test_utf8_caller_name_reaches_ami_and_agi(rig: Rig) -> None:
    seen: dict[str, str] = {}

    async def script(peer: AgiPeer) -> None:
        seen.update(parse_environment("\n".join(peer.lines)).variables)
        seen["full"] = await peer.command("GET FULL VARIABLE ${CALLERID(name)}")
        await peer.command("HANGUP")
        peer.half_close()

    rig.script = script
    emulator = await rig.start()
    call = await emulator.place_call("5551234", "王小明")
    await asyncio.wait_for(call.ended, 10)
    newchannel = await rig.ami.wait_for(lambda f: f.name == "Newchannel")
    assert newchannel.get("CallerIDName") == "王小明"
    newexten = await rig.ami.wait_for(lambda f: f.name == "Newexten")
    assert newexten.get("AppData") == f'IVR call from "王小明" <5551234> on {call.name}'
    assert seen["agi_calleridname"] == "王小明"
    assert parse_response(seen["full"]).data == "王小明"


async def test_malformed_action_frames_get_errors_and_session_lives(rig: Rig) -> None:
    await rig.start()
    start = len(rig.ami.frames)
    rig.ami.send("this line is no header\r\n\r\n")
    error = await rig.ami.wait_for(lambda f: not f.is_event, start=start)
    assert error.headers == (("Response", "Error"), ("Message", "Missing action in request"))
    start = len(rig.ami.frames)
    rig.ami.send("Foo: bar\r\nActionID: x1\r\n\r\n")
    error = await rig.ami.wait_for(lambda f: not f.is_event, start=start)
    assert error.headers == (
        ("Response", "Error"),
        ("ActionID", "x1"),
        ("Message", "Missing action in request"),
    )
    pong = await rig.ami.action("Action: Ping\r\nActionID: p1\r\n\r\n")
    assert pong.get("Ping") == "Pong"


async def test_agi_commands_outside_the_transcripts(rig: Rig) -> None:
    replies: dict[str, str] = {}

    async def script(peer: AgiPeer) -> None:
        replies["GET DATA beep 2000 4"] = await keyed(rig, peer, "GET DATA beep 2000 4", "12")
        for command in (
            "ANSWER",
            "CHANNEL STATUS",
            "GET VARIABLE NOPE",
            'SAY NUMBER 42 ""',
            "EXEC NoSuchApp x",
            "EXEC Set FOO=bar",
            "GET VARIABLE FOO",
            "RECORD FILE /tmp/x wav # 1000",
            "NOT A COMMAND",
        ):
            replies[command] = await peer.command(command)
        await peer.command("HANGUP")
        peer.half_close()

    rig.script = script
    emulator = await rig.start()
    call = await emulator.place_call("5551234", "John Doe")
    await asyncio.wait_for(call.ended, 20)
    assert replies["CHANNEL STATUS"] == "200 result=6"
    assert replies["GET VARIABLE NOPE"] == "200 result=0"
    assert replies['SAY NUMBER 42 ""'] == "200 result=0"
    assert replies["GET DATA beep 2000 4"] == "200 result=12 (timeout)"
    assert replies["EXEC NoSuchApp x"] == "200 result=-2"
    assert replies["EXEC Set FOO=bar"] == "200 result=0"
    assert replies["GET VARIABLE FOO"] == "200 result=1 (bar)"
    assert replies["RECORD FILE /tmp/x wav # 1000"].startswith("200 result=0 (timeout) endpos=")
    assert replies["NOT A COMMAND"] == "510 Invalid or unknown command"


async def test_unreachable_fastagi_server_continues_dialplan() -> None:
    clock = Clock(20)
    emulator = AsteriskEmulator(ami_port=0, fastagi_port=1, clock=clock)
    await emulator.start()
    probe = AmiProbe(clock)
    try:
        await probe.connect("127.0.0.1", emulator.ami_port)
        await probe.action(LOGIN)
        call = await emulator.place_call("5551234", "John Doe")
        await asyncio.wait_for(call.ended, 10)
        status = await probe.wait_for(lambda f: f.get("Variable") == "AGISTATUS")
        assert status.get("Value") == "FAILURE"
        hangup = await probe.wait_for(lambda f: f.name == "Hangup")
        assert (hangup.get("Priority"), hangup.get("Cause")) == ("4", "16")
    finally:
        await probe.close()
        await emulator.close()


async def test_close_cancels_calls_stuck_in_agi(rig: Rig) -> None:
    async def silent(peer: AgiPeer) -> None:
        await asyncio.sleep(3600)

    rig.script = silent
    emulator = await rig.start()
    for i in range(5):
        await emulator.place_call(f"555000{i}", "Waiting")
    await _wait_until(lambda: len(rig.agi.peers) == 5)
    await emulator.close()
    assert not emulator.pbx.tasks
    await rig.ami.wait_closed(5)
    assert rig.ami.closed


async def test_originate_outcomes_without_transcripts(rig: Rig) -> None:
    emulator = await rig.start()
    emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.5))
    response = await rig.ami.action(
        "Action: Originate\r\nActionID: o1\r\nChannel: PJSIP/agent1001\r\n"
        "Context: cti-hold\r\nExten: agent\r\nPriority: 1\r\nTimeout: 5000\r\n\r\n"
    )
    assert (response.get("Response"), response.get("Message")) == (
        "Success",
        "Originate successfully queued",
    )
    response = await rig.ami.action(
        "Action: Originate\r\nActionID: o2\r\nChannel: PJSIP/agent1002\r\n"
        "Context: cti-hold\r\nExten: agent\r\nPriority: 1\r\nAsync: true\r\n\r\n"
    )
    assert response.get("Message") == "Originate successfully queued"
    result = await rig.ami.wait_for(
        lambda f: f.name == "OriginateResponse" and f.get("ActionID") == "o2"
    )
    assert (result.get("Response"), result.get("Reason")) == ("Failure", "0")
    hangup = await rig.ami.action(
        "Action: Hangup\r\nActionID: h1\r\nChannel: /^PJSIP\\/agent1001-.*$/\r\n\r\n"
    )
    assert hangup.get("EventList") == "start"
    assert await emulator.wait_idle(10)


async def test_event_filters_are_per_session(rig: Rig) -> None:
    emulator = await rig.start()
    other = AmiProbe(rig.clock)
    await other.connect("127.0.0.1", emulator.ami_port)
    try:
        await other.action(LOGIN)
        await other.action(
            "Action: Filter\r\nActionID: f1\r\nOperation: Add\r\n"
            "MatchCriteria: action(include),name(Hangup)\r\n\r\n"
        )
        call = await emulator.place_call("5551234", "John Doe", exten="999", hangup_after=1)
        await asyncio.wait_for(call.ended, 10)
        await other.wait_for(lambda f: f.name == "Hangup")
        await rig.ami.wait_for(lambda f: f.name == "Hangup")
        names = {f.name for f in other.frames if f.is_event and f.get("Privilege")}
        assert names - {"FullyBooted", "SuccessfulAuth"} == {"Hangup"}
        assert any(f.name == "Newexten" for f in rig.ami.frames)
    finally:
        await other.close()


async def test_local_channel_pair_from_originate(rig: Rig) -> None:
    emulator = await rig.start()
    response = await rig.ami.action(
        "Action: Originate\r\nActionID: l1\r\nChannel: Local/999@from-callers\r\n"
        "Application: Wait\r\nData: 2\r\nAsync: true\r\n\r\n"
    )
    assert response.get("Message") == "Originate successfully queued"
    result = await rig.ami.wait_for(lambda f: f.name == "OriginateResponse")
    assert (result.get("Response"), result.get("Channel")) == (
        "Success",
        "Local/999@from-callers-00000000;1",
    )
    assert await emulator.wait_idle(10)
    await rig.ami.wait_for(lambda f: f.name == "Hangup" and (f.get("Channel") or "").endswith(";2"))
    names = [f.get("Channel") for f in rig.events("Newchannel")]
    assert names == ["Local/999@from-callers-00000000;1", "Local/999@from-callers-00000000;2"]
    bridge = rig.events("LocalBridge")[0]
    assert (bridge.get("Context"), bridge.get("Exten"), bridge.get("LocalOptimization")) == (
        "from-callers",
        "999",
        "Yes",
    )
    two = [f for f in rig.events("Newexten") if (f.get("Channel") or "").endswith(";2")]
    assert [f.get("Application") for f in two] == ["Answer", "Wait"]


async def test_local_channel_dialling_an_agent(rig: Rig) -> None:
    emulator = await rig.start()
    emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=1.0, talk_time=2.0))
    await rig.ami.action(
        "Action: Originate\r\nActionID: l2\r\nChannel: Local/agent1001@cti-agent\r\n"
        'Application: Wait\r\nData: 30\r\nCallerID: "Ann" <5550000>\r\nAsync: true\r\n\r\n'
    )
    result = await rig.ami.wait_for(lambda f: f.name == "OriginateResponse")
    assert result.get("Response") == "Success"
    assert await emulator.wait_idle(10)
    await _wait_until(lambda: len(rig.events("Hangup")) == 3)
    dial = [f for f in rig.events("DialEnd") if f.get("Channel")]
    assert [(f.get("Channel"), f.get("DestChannel"), f.get("DialStatus")) for f in dial] == [
        ("Local/agent1001@cti-agent-00000000;2", "PJSIP/agent1001-00000000", "ANSWER")
    ]
    assert {f.get("Cause") for f in rig.events("Hangup")} == {"16"}


async def test_two_thousand_agents_register_and_list(rig: Rig) -> None:
    emulator = await rig.start()
    for number in range(2000):
        emulator.add_agent_phone(f"agent{5000 + number}")
    emulator.unregister("agent5000")
    start = len(rig.ami.frames)
    await rig.ami.action("Action: DeviceStateList\r\nActionID: d1\r\n\r\n")
    complete = await rig.ami.wait_for(lambda f: f.name == "DeviceStateListComplete", start=start)
    items = [
        f for f in rig.ami.frames[start:] if f.name == "DeviceStateChange" and f.get("ActionID")
    ]
    assert int(complete.get("ListItems") or 0) == len(items)
    states = {f.get("Device"): f.get("State") for f in items}
    assert states["PJSIP/agent5001"] == "NOT_INUSE"
    assert states["PJSIP/agent5000"] == "UNAVAILABLE"
    agents = {f"PJSIP/agent{5000 + number}" for number in range(2000)}
    assert agents <= set(states)
    assert len(rig.events("PeerStatus")) == 2001


async def _spy(rig: Rig, action_id: str, data: str) -> str:
    """Originate supervisor9001 into ChanSpy(`data`) as 10 does; the spy leg's name."""
    await rig.ami.action(
        f"Action: Originate\r\nActionID: {action_id}\r\nChannel: PJSIP/supervisor9001\r\n"
        f"Application: ChanSpy\r\nData: {data}\r\n"
        'CallerID: "Monitor pstn" <9001>\r\nTimeout: 20000\r\nAsync: true\r\n\r\n'
    )
    result = await rig.ami.wait_for(
        lambda f: f.name == "OriginateResponse" and f.get("ActionID") == action_id
    )
    assert result.get("Response") == "Success"
    return result.get("Channel") or ""


async def test_chanspy_without_e_scans_on_after_the_spied_call_ends(rig: Rig) -> None:
    """app_chanspy.c: without `E` the spy leg outlives the spied channel and spies on
    the next channel of its prefix; no transcript shows it (10 always hangs up first)."""
    emulator = await rig.start()
    emulator.add_supervisor_phone("supervisor9001", PhonePolicy(ring_time=0.2))
    first = await emulator.place_call("5551234", "John Doe", exten="999", hangup_after=3)
    await _wait_until(lambda: first.channel is not None and first.channel.up)
    spy = await _spy(rig, "s1", "PJSIP/pstn,qw")
    start = await rig.ami.wait_for(lambda f: f.name == "ChanSpyStart")
    assert (start.get("SpyerChannel"), start.get("SpyeeChannel")) == (spy, first.name)
    await asyncio.wait_for(first.ended, 10)
    stop = await rig.ami.wait_for(lambda f: f.name == "ChanSpyStop")
    assert stop.get("SpyeeChannel") == first.name
    spy_leg = emulator.pbx.find_channel(spy)
    assert spy_leg is not None and not spy_leg.gone  # still up, scanning
    second = await emulator.place_call("5559876", "Jane Roe", exten="999", hangup_after=30)
    await rig.ami.wait_for(
        lambda f: f.name == "ChanSpyStart" and f.get("SpyeeChannel") == second.name
    )
    response = await rig.ami.action(f"Action: Hangup\r\nActionID: h1\r\nChannel: {spy}\r\n\r\n")
    assert response.get("Response") == "Success"
    await rig.ami.wait_for(
        lambda f: f.name == "ChanSpyStop" and f.get("SpyeeChannel") == second.name
    )
    await rig.ami.wait_for(lambda f: f.name == "Hangup" and f.get("Channel") == spy)
    assert not second.ended.done()


async def test_chanspy_with_e_exits_when_the_spied_call_ends(rig: Rig) -> None:
    emulator = await rig.start()
    emulator.add_supervisor_phone("supervisor9001", PhonePolicy(ring_time=0.2))
    call = await emulator.place_call("5551234", "John Doe", exten="999", hangup_after=3)
    await _wait_until(lambda: call.channel is not None and call.channel.up)
    spy = await _spy(rig, "s1", "PJSIP/pstn,qBE")
    await rig.ami.wait_for(lambda f: f.name == "ChanSpyStart")
    await asyncio.wait_for(call.ended, 10)
    await rig.ami.wait_for(lambda f: f.name == "ChanSpyStop")
    await rig.ami.wait_for(lambda f: f.name == "Hangup" and f.get("Channel") == spy)


async def test_chanspy_prefix_is_a_plain_name_prefix(rig: Rig) -> None:
    """As Asterisk's channel iterator by name prefix: `PJSIP/pst` matches PJSIP/pstn-..."""
    emulator = await rig.start()
    emulator.add_supervisor_phone("supervisor9001", PhonePolicy(ring_time=0.2))
    call = await emulator.place_call("5551234", "John Doe", exten="999", hangup_after=30)
    await _wait_until(lambda: call.channel is not None and call.channel.up)
    spy = await _spy(rig, "s1", "PJSIP/pst,q")
    start = await rig.ami.wait_for(lambda f: f.name == "ChanSpyStart")
    assert start.get("SpyeeChannel") == call.name
    await rig.ami.action(f"Action: Hangup\r\nActionID: h1\r\nChannel: {spy}\r\n\r\n")
    await rig.ami.wait_for(lambda f: f.name == "Hangup" and f.get("Channel") == spy)
