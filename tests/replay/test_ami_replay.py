"""Replay tests: the AMI client against every recorded Asterisk 22 AMI transcript.

The generic test plays each ami*.jsonl file through the replay harness
(tests/replay/ami_replay.py) and checks that the client sends exactly the
recorded actions and hands back exactly the recorded answers and events.
The scenario tests below assert what the frames mean (INDEX behaviours 8-11).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from ctiserver.asterisk.ami.client import (
    ActionResult,
    AmiActionError,
    AmiAuthenticationError,
    AmiClient,
    AmiConfig,
    AmiFilter,
    OriginateReason,
    OriginateResult,
)
from ctiserver.asterisk.ami.codec import Message, parse_frame
from ctiserver.sim.transcript import Scenario, scenario, scenarios
from tests.replay.ami_replay import AmiReplayServer, Chunking

# The recorded manager.conf user (conf/manager.conf): cti / cti. The MD5
# transcript holds only the Key; replaying its Challenge with this secret
# must reproduce that Key byte for byte.
USERNAME, SECRET = "cti", "cti"

# Transcripts the generic test cannot play, and which test covers them instead.
SPECIFIC = {
    ("01_ami_basics", "ami-login-failure.jsonl"): (
        "an action is sent before Login and the Login fails: test_01_login_failure"
    ),
    ("13_ami_reconnect_resync", "ami.jsonl"): (
        "ends with a client-side close (no Logoff) and continues on a second "
        "connection: test_13_reconnect_resync plays it with ami2.jsonl"
    ),
}


def frame(data: str) -> Message:
    return parse_frame(data.removesuffix("\r\n\r\n"))


def pairs(messages: Sequence[Message | None]) -> list[list[tuple[str, str]] | None]:
    """Messages as header lists: readable pytest diffs, repeated headers in order."""
    return [None if m is None else list(m.items()) for m in messages]


def config(port: int, **overrides: object) -> AmiConfig:
    settings: dict[str, object] = {
        "port": port,
        "username": USERNAME,
        "secret": SECRET,
        "ping_interval": None,  # a keep-alive Ping is not in any transcript
        "reconnect": False,
        # Upper bounds only: a slow machine must not turn a backlog into a failure.
        "action_timeout": 10.0,
        "login_timeout": 10.0,
        "logoff_timeout": 10.0,
    }
    settings.update(overrides)
    return AmiConfig(**settings)  # type: ignore[arg-type]


@dataclass
class Expected:
    """What the recorded frames say the client must hand back."""

    results: dict[str, ActionResult] = field(default_factory=dict)  # by the client's ActionID
    unnamed: list[Message] = field(default_factory=list)  # responses without ActionID, in order
    events: list[Message] = field(default_factory=list)  # for subscribers


def expected_outcome(sent: list[str]) -> Expected:
    """Classify the frames the harness sent, from their headers alone."""
    expected = Expected()
    collecting: set[str] = set()
    for data in sent:
        message = frame(data)
        action_id = message.get("ActionID")
        if "Event" not in message:
            if action_id is None:
                expected.unnamed.append(message)
                continue
            expected.results[action_id] = ActionResult("", action_id, message)
            if message.get("EventList") == "start":
                collecting.add(action_id)
        elif action_id in collecting:
            assert action_id is not None
            result = expected.results[action_id]
            if message.get("EventList") == "Complete":
                result.complete = message
                collecting.discard(action_id)
            else:
                result.items.append(message)
        else:
            expected.events.append(message)
    assert not collecting, "a recorded event list never completed"
    return expected


def action_headers(message: Message) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for key, value in message.items():
        if key not in ("Action", "ActionID"):
            headers.setdefault(key, []).append(value)
    return headers


def generic_params() -> list[object]:
    params: list[object] = []
    for scen in scenarios():
        for path in scen.ami_files:
            for chunking in ("frame", "batch", "random"):
                reason = SPECIFIC.get((scen.name, path.name))
                marks = [pytest.mark.skip(reason=reason)] if reason else []
                name = f"{scen.name}/{path.name}-{chunking}"
                params.append(pytest.param(scen, path.name, chunking, marks=marks, id=name))
    return params


@pytest.mark.parametrize(("scen", "file_name", "chunking"), generic_params())
async def test_generic_replay(scen: Scenario, file_name: str, chunking: Chunking) -> None:
    records = scen.ami(file_name)
    outs = [frame(r.data) for r in records if not r.incoming and r.data]
    md5 = outs[0]["Action"] == "Challenge"
    login = outs[1] if md5 else outs[0]
    assert login["Action"] == "Login"
    assert md5 or login["Secret"] == SECRET
    actions = outs[2:] if md5 else outs[1:]
    assert actions[-1]["Action"] == "Logoff"

    events: list[Message] = []
    results: list[ActionResult] = []
    async with AmiReplayServer([records], chunking=chunking, seed=len(records)) as server:
        # A prefix other than the recorded "cti" proves the ActionID rewrite.
        client = AmiClient(
            config(
                server.port,
                username=login["Username"],
                auth="md5" if md5 else "plain",
                events=login.get("Events"),
                action_id_prefix="rp",
            )
        )
        client.subscribe("*", events.append)
        await client.connect()
        for out in actions[:-1]:
            results.append(
                await client.action(
                    out["Action"], action_headers(out), send_action_id="ActionID" in out
                )
            )
        goodbye = await client.close()
        await server.wait_played()

    assert server.errors == []
    conn = server.connections[0]
    assert conn.ending == "eof"
    assert client.banner == records[0].data.removesuffix("\r\n")
    # Per-connection counter from 1, same numbering as the recorder's cti-<n>.
    assert conn.id_map == {k: "rp-" + k.removeprefix("cti-") for k in conn.id_map}
    expected = expected_outcome(conn.sent)
    unnamed = iter(expected.unnamed)
    for result in results:
        if result.action_id is None:
            want = ActionResult(result.action, None, next(unnamed))
        else:
            want = expected.results[result.action_id]
        assert pairs([result.response, result.complete]) == pairs([want.response, want.complete])
        assert pairs(result.items) == pairs(want.items)
    assert goodbye is not None
    assert goodbye == expected.results[goodbye["ActionID"]].response
    assert goodbye.response == "Goodbye"
    assert pairs(events) == pairs(expected.events)


def test_every_transcript_is_covered() -> None:
    """A new ami*.jsonl lands in the generic test unless listed as specific."""
    files = {(s.name, p.name) for s in scenarios() for p in s.ami_files}
    assert len(files) >= 29
    assert set(SPECIFIC) <= files


# -- 01 ----------------------------------------------------------------------


async def test_01_ami_basics() -> None:
    records = scenario("01").ami("ami.jsonl")
    events: list[Message] = []
    user_events: list[Message] = []
    async with AmiReplayServer([records], chunking="random", seed=1) as server:
        client = AmiClient(config(server.port))
        client.subscribe("*", events.append)
        client.subscribe("UserEvent", user_events.append)
        await client.connect()
        assert client.banner == "Asterisk Call Manager/11.0.0"
        assert client.version == "11.0.0"

        ping = await client.ping()
        assert (ping.action_id, ping.get("Ping")) == ("cti-2", "Pong")
        # Without ActionID the response has none either; matched by order.
        bare = await client.action("Ping", send_action_id=False)
        assert bare.action_id is None and bare.response.action_id is None
        assert bare.get("Ping") == "Pong"

        status = await client.action("CoreStatus")
        assert status.ok and status.get("CoreCurrentCalls") == "0"
        settings = await client.action("CoreSettings")
        assert settings.get("AsteriskVersion") == "22.10.1"
        assert settings.get("AMIversion") == "11.0.0"

        unknown = await client.action("FooBar")
        assert not unknown.ok
        assert unknown.message == (
            "Invalid/unknown command: FooBar. Use Action: ListCommands to show available commands."
        )
        missing = await client.action("Hangup")
        assert (missing.ok, missing.message) == (False, "No channel specified")
        getvar = await client.action("Getvar", {"Variable": "FASTAGI"})
        assert getvar.get("Value") == "agi://127.0.0.1:4573/ivr"

        output = await client.command("core show uptime")
        assert output == ["System uptime: 6 seconds", "Last reload: 6 seconds"]

        channels = await client.action("CoreShowChannels")
        assert channels.message == "Channels will follow"
        assert [item.event for item in channels.items] == ["CoreShowChannel"] * 2
        assert [item["Channel"] for item in channels.items] == [
            "PJSIP/pstn-00000000",
            "PJSIP/pstn-00000001",
        ]
        assert [item.get("BridgeId") for item in channels.items] == ["", ""]
        assert channels.complete is not None
        assert channels.complete.event == "CoreShowChannelsComplete"
        assert channels.complete["ListItems"] == "2"

        off = await client.action("Events", {"EventMask": "off"})
        assert off.get("Events") == "Off"
        sent = await client.action("UserEvent", {"UserEvent": "CTIProbe", "Phase": "events-off"})
        assert sent.message == "Event Sent"
        on = await client.action("Events", {"EventMask": "on"})
        assert on.get("Events") == "On"
        await client.action("UserEvent", {"UserEvent": "CTIProbe", "Phase": "events-on"})
        mask = await client.action("Events", {"EventMask": "call,user"})
        assert mask.get("Events") == "On"
        await client.action("UserEvent", {"UserEvent": "CTIProbe", "Phase": "mask-call-user"})
        await client.action("Events", {"EventMask": "on"})

        legacy = await client.add_filter(
            AmiFilter(filter="!Event: (VarSet|CEL|Cdr|RTCPSent|RTCPReceived|Newexten)")
        )
        criteria = await client.add_filter(
            AmiFilter(match_criteria="action(exclude),name(DeviceStateChange)")
        )
        assert legacy is not None and criteria is not None
        assert (legacy.message, criteria.message) == ("Success", "Success")

        first = await client.action("Hangup", {"Channel": "PJSIP/pstn-00000000", "Cause": "16"})
        assert first.message == "Channel Hungup" and not first.is_list
        regex = await client.action("Hangup", {"Channel": "/^PJSIP\\/pstn-.*$/"})
        assert regex.message == "Channels hung up will follow"
        assert [(i.event, i["Channel"]) for i in regex.items] == [
            ("ChannelHungup", "PJSIP/pstn-00000001")
        ]
        assert regex.complete is not None
        assert regex.complete.event == "ChannelsHungupListComplete"
        assert regex.complete["ListItems"] == "1"
        nosuch = await client.action("Hangup", {"Channel": "PJSIP/nosuch-00000000"})
        assert (nosuch.ok, nosuch.message) == (False, "No such channel")

        goodbye = await client.close()
        await server.wait_played()

    assert server.errors == []
    assert goodbye is not None
    assert (goodbye.response, goodbye.get("Message")) == ("Goodbye", "Thanks for all the fish.")
    assert server.connections[0].ending == "eof"
    assert not client.connected

    # UserEvent events carry the ActionID of their action and still reach
    # subscribers; the one sent while events were off never arrives.
    assert [(e["Phase"], e.action_id) for e in user_events] == [
        ("events-on", "cti-13"),
        ("mask-call-user", "cti-15"),
    ]
    names = [e.event for e in events]
    assert names[:2] == ["FullyBooted", "SuccessfulAuth"]
    assert "RequestBadFormat" in names
    # List items are results, never events.
    assert "CoreShowChannel" not in names and "ChannelHungup" not in names
    hangups = [(e["Channel"], e["Cause"], e["Cause-txt"]) for e in events if e.event == "Hangup"]
    assert hangups == [
        ("PJSIP/pstn-00000000", "16", "Normal Clearing"),
        ("PJSIP/pstn-00000001", "0", "Unknown"),
    ]


async def test_01_login_failure() -> None:
    """Not generic: an action before Login, then a Login that Asterisk refuses and closes."""
    records = scenario("01").ami("ami-login-failure.jsonl")
    async with AmiReplayServer([records]) as server:
        client = AmiClient(config(server.port, secret="wrong"))
        await client.connect(login=False)
        denied = await client.action("CoreStatus")
        assert (denied.ok, denied.message) == (False, "Permission denied")
        with pytest.raises(AmiAuthenticationError, match="Authentication failed"):
            await client.login()
        assert not client.connected
        await server.wait_played()
        await client.close()
    assert server.errors == []
    assert server.connections[0].ending == "eof"


async def test_01_md5_login_with_events_off() -> None:
    records = scenario("01").ami("ami-md5-login.jsonl")
    events: list[Message] = []
    async with AmiReplayServer([records], chunking="random", seed=7) as server:
        client = AmiClient(config(server.port, auth="md5", events="off"))
        client.subscribe("*", events.append)
        await client.connect()
        pong = await client.ping()
        goodbye = await client.close()
        await server.wait_played()
    # The harness compared the Login's Key with the recorded one.
    assert server.errors == []
    login = server.connections[0].received[1]
    assert login["Key"] == "a35770430b3c9d9a2ab340e4c5720197"
    assert login["Events"] == "off"
    assert pong.get("Ping") == "Pong"
    assert goodbye is not None and goodbye.response == "Goodbye"
    assert events == []  # Events: off at login: responses only


# -- 05, 05c, 15: originate() -------------------------------------------------

JOHN = '"John Doe" <5551234>'


async def originate_to_hold(
    client: AmiClient, channel: str, ring_timeout: float | None, run_async: bool = True
) -> OriginateResult:
    """The 05c Originate: the agent leg into [cti-hold] as the recorder sent it."""
    return await client.originate(
        channel,
        context="cti-hold",
        exten="agent",
        priority=1,
        caller_id=JOHN,
        ring_timeout=ring_timeout,
        run_async=run_async,
    )


async def test_05c_originate_failures() -> None:
    records = scenario("05c").ami()
    async with AmiReplayServer([records], chunking="batch") as server:
        client = AmiClient(config(server.port))
        await client.connect()

        busy = await originate_to_hold(client, "PJSIP/agent1001", 15)
        assert busy.message == "Originate successfully queued"
        assert (busy.success, busy.reason) == (False, OriginateReason.FAILURE)  # 486 -> 0, not 5
        assert (busy.channel, busy.uniqueid) == ("PJSIP/agent1001", None)  # dial string, <unknown>

        no_answer = await originate_to_hold(client, "PJSIP/agent1001", 6)
        assert (no_answer.success, no_answer.reason) == (False, OriginateReason.RINGING)

        sync = await originate_to_hold(client, "PJSIP/agent1002", 6, run_async=False)
        assert (sync.success, sync.reason, sync.event) == (False, None, None)
        assert sync.message == "Originate failed"

        bad_tech = await originate_to_hold(client, "NoSuchTech/foo", None)
        assert (bad_tech.success, bad_tech.reason) == (False, 0)
        assert bad_tech.channel == "NoSuchTech/foo"
        assert bad_tech.event is not None and bad_tech.event.action_id == "cti-5"

        await client.close()
        await server.wait_played()
    assert server.errors == []


async def test_05_originate_answered_then_bridge() -> None:
    records = scenario("05").ami()
    responses: list[Message] = []
    async with AmiReplayServer([records], chunking="random", seed=5) as server:
        client = AmiClient(config(server.port))
        client.subscribe("OriginateResponse", responses.append)
        await client.connect()
        leg = await client.originate(
            "PJSIP/agent1001",
            context="cti-hold",
            exten="agent",
            priority=1,
            caller_id=JOHN,
            ring_timeout=20,
            channel_id="cti-agentleg-0001",
            variables={"CTI_CALLER_CHANNEL": "PJSIP/pstn-0000000d"},
        )
        assert (leg.success, leg.reason) == (True, OriginateReason.ANSWERED)
        assert leg.channel == "PJSIP/agent1001-0000000e"
        assert leg.uniqueid == "cti-agentleg-0001"  # ChannelId sets the Uniqueid
        bridge = await client.action(
            "Bridge",
            {"Channel1": "PJSIP/pstn-0000000d", "Channel2": leg.channel, "Tone": "no"},
            check=True,
        )
        assert bridge.ok
        await client.close()
        await server.wait_played()
    assert server.errors == []
    # The event that completed originate() also reached the subscribers.
    assert [r.action_id for r in responses] == ["cti-2"]


async def test_15_click_to_dial() -> None:
    records = scenario("15").ami()
    async with AmiReplayServer([records]) as server:
        client = AmiClient(config(server.port))
        await client.connect()
        call = await client.originate(
            "PJSIP/agent1001",
            context="cti-outbound",
            exten="5559999",
            priority=1,
            caller_id='"Callback 5559999" <5559999>',
            ring_timeout=20,
            variables={"CTI_TASK": "callback-42"},
            extra={"Codecs": "ulaw"},
        )
        await client.close()
        await server.wait_played()
    assert server.errors == []
    assert (call.success, call.reason) == (True, 4)
    assert call.channel is not None and call.channel.startswith("PJSIP/agent1001-")


# -- 13: reconnect and resync -----------------------------------------------


@dataclass
class Resync:
    calls: int = 0
    results: dict[str, ActionResult] = field(default_factory=dict)
    vanished_error: str = ""


async def test_13_reconnect_resync() -> None:
    """Not generic: ami.jsonl ends with a drop (played by the harness as a
    server-side close), and the session continues on ami2.jsonl."""
    scen = scenario("13")
    first, second = scen.ami("ami.jsonl"), scen.ami("ami2.jsonl")
    state = Resync()
    resynced = asyncio.Event()
    events: list[Message] = []

    async def resync(client: AmiClient) -> None:
        state.calls += 1
        if state.calls == 1:
            return  # the first login: nothing to resync (ami.jsonl sends no actions)
        got = state.results
        got["CoreStatus"] = await client.action("CoreStatus")
        got["CoreShowChannels"] = await client.action("CoreShowChannels")
        got["Status"] = await client.action(
            "Status", {"Variables": "CTI_STATE,CTI_SKILL,BRIDGEPEER"}
        )
        got["BridgeList"] = await client.action("BridgeList")
        bridge_id = got["BridgeList"].items[0]["BridgeUniqueid"]
        got["BridgeInfo"] = await client.action("BridgeInfo", {"BridgeUniqueid": bridge_id})
        caller = got["CoreShowChannels"].items[1]["Channel"]
        got["Getvar"] = await client.action("Getvar", {"Channel": caller, "Variable": "CTI_STATE"})
        try:
            await client.action(
                "Getvar", {"Channel": "PJSIP/pstn-0000002d", "Variable": "CTI_STATE"}, check=True
            )
        except AmiActionError as exc:
            state.vanished_error = exc.result.message or ""
        got["DeviceStateList"] = await client.action("DeviceStateList")
        got["PJSIPShowContacts"] = await client.action("PJSIPShowContacts")
        resynced.set()

    async with AmiReplayServer([first, second], chunking="random", seed=13) as server:
        client = AmiClient(
            config(server.port, reconnect=True, backoff_initial=0.01, backoff_max=0.05)
        )
        client.subscribe("*", events.append)
        client.add_resync_hook(resync)
        await client.connect()
        assert state.calls == 1
        redirect = await client.action(
            "Redirect",
            {
                "Channel": "PJSIP/pstn-0000002b",
                "Context": "cti-agent",
                "Exten": "agent1001",
                "Priority": "1",
            },
        )
        assert redirect.message == "Redirect successful"
        # The harness drops connection 1 where the recorder closed it; the
        # client reconnects, logs in again and runs the hook a second time.
        await server.wait_played(1)
        async with asyncio.timeout(5):
            await resynced.wait()
        goodbye = await client.close()
        await server.wait_played()

    assert server.errors == []
    assert [c.ending for c in server.connections] == ["drop", "eof"]
    # Each connection numbers its ActionIDs from 1 again (cti-1 = Login).
    assert [c.received[0].action_id for c in server.connections] == ["cti-1", "cti-1"]
    assert state.calls == 2 and client.logins == 2
    assert goodbye is not None and goodbye.response == "Goodbye"

    got = state.results
    assert got["CoreStatus"].get("CoreCurrentCalls") is not None
    assert [i["Channel"] for i in got["CoreShowChannels"].items] == [
        "PJSIP/agent1001-0000002c",
        "PJSIP/pstn-0000002b",
    ]
    status = got["Status"]
    assert [i.event for i in status.items] == ["Status", "Status"]
    assert all(i["Privilege"] == "Call" for i in status.items)
    agent, caller = status.items
    assert agent.variables() == {
        "CTI_STATE": "(null)",
        "CTI_SKILL": "(null)",
        "BRIDGEPEER": "PJSIP/pstn-0000002b",
    }
    assert caller.variables() == {
        "CTI_STATE": "queued",
        "CTI_SKILL": "billing",
        "BRIDGEPEER": "PJSIP/agent1001-0000002c",
    }
    # BridgeID here, BridgeId in CoreShowChannel: get() ignores the case.
    assert caller.get("BridgeId") == "f42d3442-3702-4ead-93f8-4c8067d03b9c"
    assert status.complete is not None
    assert (status.complete["ListItems"], status.complete["Items"]) == ("2", "2")

    bridges = got["BridgeList"]
    assert [i.event for i in bridges.items] == ["BridgeListItem"]
    assert bridges.items[0]["BridgeNumChannels"] == "2"
    info = got["BridgeInfo"]
    assert sorted(i["Channel"] for i in info.items) == [
        "PJSIP/agent1001-0000002c",
        "PJSIP/pstn-0000002b",
    ]
    assert info.complete is not None and info.complete.event == "BridgeInfoComplete"
    assert got["Getvar"].get("Value") == "queued"
    assert state.vanished_error == "No such channel"
    devices = {i["Device"]: i["State"] for i in got["DeviceStateList"].items}
    assert len(devices) == 9
    assert devices["PJSIP/agent1001"] == "INUSE" and devices["PJSIP/agent1002"] == "UNAVAILABLE"
    assert {"MWI:1001@default", "MWI:1002@default", "Queue:support_avail"} <= set(devices)
    contacts = got["PJSIPShowContacts"].items
    assert [(c.event, c["Status"]) for c in contacts] == [("ContactList", "NonQualified")]

    # Events of both sessions arrived in order; list items stayed results.
    names = [e.event for e in events]
    assert names.count("FullyBooted") == 2
    assert "DeviceStateChange" in names[: names.index("FullyBooted", 1)]
    assert names[-1] == "DeviceStateChange"
    hangups = [e["Channel"] for e in events if e.event == "Hangup"]
    assert hangups == ["PJSIP/agent1001-0000002c", "PJSIP/pstn-0000002b"]
    assert "CoreShowChannel" not in names and "ContactList" not in names


# -- 14: load ------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "max_chunk"), [(14, 64), (1400, 4096)])
async def test_14_load_every_event_in_order(seed: int, max_chunk: int) -> None:
    scen = scenario("14")
    records = scen.ami()
    stats = json.loads((scen.path / "stats.json").read_text())
    events: list[Message] = []
    async with AmiReplayServer(
        [records], chunking="random", seed=seed, max_chunk=max_chunk, play_timeout=60
    ) as server:
        # Logoff is answered after the whole backlog: give it time.
        client = AmiClient(config(server.port, logoff_timeout=60.0))
        client.subscribe("*", events.append)
        await client.connect()
        await client.close()
        await server.wait_played()
    assert server.errors == []
    assert len(events) == stats["events_total"] == 1684
    assert Counter(e.event for e in events) == Counter(stats["events_by_type"])
    recorded = [frame(r.data) for r in records if r.incoming and r.data.startswith("Event: ")]
    assert pairs(events) == pairs(recorded)
