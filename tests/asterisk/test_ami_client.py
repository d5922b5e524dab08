"""Unit tests of the AMI client against a small scriptable AMI server in this file."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from ctiserver.asterisk.ami.client import (
    AmiAuthenticationError,
    AmiClient,
    AmiClosed,
    AmiConfig,
    AmiConnectionLost,
    AmiFilter,
    AmiNotConnected,
    AmiTimeout,
    backoff_delay,
    md5_key,
)
from ctiserver.asterisk.ami.codec import FrameParser, Message

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
SECRET = "s3cret"
CHALLENGE = "840133107"


def frame(*pairs: tuple[str, str]) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n").encode("utf-8")


def response(action: Message, status: str = "Success", *pairs: tuple[str, str]) -> bytes:
    head = [("Response", status)]
    if action.action_id is not None:
        head.append(("ActionID", action.action_id))
    return frame(*head, *pairs)


@dataclass(eq=False)
class Session:
    index: int
    writer: asyncio.StreamWriter
    actions: list[Message] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def names(self) -> list[str]:
        return [a["Action"] for a in self.actions]


Handler = Callable[[Session, Message], Awaitable[None] | None]


class FakeAmi:
    """An AMI peer that answers Login/Challenge/Ping/Filter/Logoff like Asterisk 22
    (frames as in the 01 transcript) and any other action with Success,
    unless a test installs a handler for it."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.answer_pings: Callable[[Session], bool] = lambda session: True
        self.sessions: list[Session] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for session in self.sessions:
            session.writer.transport.abort()
        if self._tasks:
            # The aborts end the handlers; cancelling a start_server handler
            # would make asyncio log the CancelledError as an error.
            await asyncio.wait(self._tasks, timeout=2)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = Session(len(self.sessions), writer)
        self.sessions.append(session)
        writer.write(BANNER)
        parser = FrameParser(expect_banner=False)
        try:
            while data := await reader.read(65536):
                for action in parser.feed(data):
                    session.actions.append(action)
                    outcome = self._handle(session, action)
                    if outcome is not None:
                        await outcome
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            session.closed.set()
            writer.transport.abort()
            self._tasks.discard(task)

    def _handle(self, session: Session, action: Message) -> Awaitable[None] | None:
        name = action["Action"]
        if name in self.handlers:
            return self.handlers[name](session, action)
        if name == "Challenge":
            session.send(response(action, "Success", ("Challenge", CHALLENGE)))
        elif name == "Login":
            key = action.get("Key")
            good = action.get("Secret") == SECRET or key == md5_key(CHALLENGE, SECRET)
            if good:
                session.send(response(action, "Success", ("Message", "Authentication accepted")))
                session.send(frame(("Event", "FullyBooted"), ("Status", "Fully Booted")))
            else:
                session.send(response(action, "Error", ("Message", "Authentication failed")))
                session.writer.close()
        elif name == "Ping":
            if self.answer_pings(session):
                session.send(response(action, "Success", ("Ping", "Pong")))
        elif name == "Logoff":
            session.send(response(action, "Goodbye", ("Message", "Thanks for all the fish.")))
            session.writer.close()
        else:
            session.send(response(action, "Success", ("Message", "Success")))
        return None


@asynccontextmanager
async def fake_ami() -> AsyncIterator[FakeAmi]:
    server = FakeAmi()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def config(port: int, **overrides: object) -> AmiConfig:
    settings: dict[str, object] = {
        "port": port,
        "username": "cti",
        "secret": SECRET,
        "ping_interval": None,
        "reconnect": False,
        "action_timeout": 2.0,
        "login_timeout": 2.0,
        "logoff_timeout": 1.0,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
    }
    settings.update(overrides)
    return AmiConfig(**settings)  # type: ignore[arg-type]


async def eventually(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def client_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("ami-")]


# -- actions -------------------------------------------------------------------


async def test_actionid_prefix_and_per_connection_counter() -> None:
    async with fake_ami() as server:
        client = AmiClient(config(server.port, action_id_prefix="acd"))
        await client.connect()
        result = await client.action("CoreStatus")
        await client.close()
    assert result.action_id == "acd-2"
    assert [a.action_id for a in server.sessions[0].actions] == ["acd-1", "acd-2", "acd-3"]
    assert server.sessions[0].names() == ["Login", "CoreStatus", "Logoff"]


async def test_action_timeout_names_the_action_and_a_late_answer_is_absorbed() -> None:
    late: list[Message] = []

    def hold_back(session: Session, action: Message) -> None:
        late.append(action)  # answered later, after the client gave up

    async with fake_ami() as server:
        server.handlers["SlowThing"] = hold_back
        client = AmiClient(config(server.port))
        await client.connect()
        with pytest.raises(AmiTimeout, match=r"SlowThing \(cti-2\).*0\.1 s") as caught:
            await client.action("SlowThing", timeout=0.1)
        assert (caught.value.action, caught.value.action_id) == ("SlowThing", "cti-2")
        assert isinstance(caught.value, TimeoutError)
        server.sessions[0].send(response(late[0], "Success", ("Message", "late")))
        # The late answer must not be taken for the next action's.
        pong = await client.ping()
        assert (pong.action_id, pong.get("Ping")) == ("cti-3", "Pong")
        assert client.connected
        await client.close()


async def test_response_without_actionid_is_matched_in_order() -> None:
    async with fake_ami() as server:
        client = AmiClient(config(server.port))
        await client.connect()
        first, second = await asyncio.gather(
            client.action("Ping", send_action_id=False),
            client.action("CoreStatus", send_action_id=False),
        )
        await client.close()
    assert (first.get("Ping"), second.message) == ("Pong", "Success")
    assert [a.action_id for a in server.sessions[0].actions[1:3]] == [None, None]


async def test_event_list_and_routing_by_event_first() -> None:
    """Items with the ActionID are list results; an event with the ActionID of
    an action that is not collecting a list (UserEvent, INDEX behaviour 8) is
    an event, even when it arrives before the response."""

    def channels(session: Session, action: Message) -> None:
        aid = action.action_id or ""
        session.send(
            response(action, "Success", ("EventList", "start"), ("Message", "Channels will follow"))
        )
        session.send(frame(("Event", "Newstate"), ("Channel", "PJSIP/a-1")))  # unrelated event
        for name in ("PJSIP/a-1", "PJSIP/b-2"):
            session.send(frame(("Event", "CoreShowChannel"), ("ActionID", aid), ("Channel", name)))
        session.send(
            frame(
                ("Event", "CoreShowChannelsComplete"),
                ("ActionID", aid),
                ("EventList", "Complete"),
                ("ListItems", "2"),
            )
        )

    def user_event(session: Session, action: Message) -> None:
        aid = action.action_id or ""
        session.send(frame(("Event", "UserEvent"), ("ActionID", aid), ("UserEvent", "Early")))
        session.send(response(action, "Success", ("Message", "Event Sent")))
        session.send(frame(("Event", "UserEvent"), ("ActionID", aid), ("UserEvent", "Late")))

    events: list[Message] = []
    async with fake_ami() as server:
        server.handlers["CoreShowChannels"] = channels
        server.handlers["UserEvent"] = user_event
        client = AmiClient(config(server.port))
        client.subscribe("*", events.append)
        await client.connect()
        listing = await client.action("CoreShowChannels")
        sent = await client.action("UserEvent", {"UserEvent": "Probe"})
        await client.close()
    assert [i["Channel"] for i in listing.items] == ["PJSIP/a-1", "PJSIP/b-2"]
    assert listing.complete is not None and listing.complete["ListItems"] == "2"
    assert sent.message == "Event Sent" and not sent.is_list
    assert [(e.event, e.get("UserEvent")) for e in events] == [
        ("FullyBooted", None),
        ("Newstate", None),
        ("UserEvent", "Early"),
        ("UserEvent", "Late"),
    ]


async def test_originate_waits_for_its_originateresponse() -> None:
    def originate(session: Session, action: Message) -> None:
        aid = action.action_id or ""
        # Another action's OriginateResponse first: must not complete ours.
        session.send(frame(("Event", "OriginateResponse"), ("ActionID", "other-9")))
        # The outcome may even precede the "queued" response.
        session.send(
            frame(
                ("Event", "OriginateResponse"),
                ("Privilege", "call,all"),
                ("ActionID", aid),
                ("Response", "Success"),
                ("Channel", "PJSIP/agent1001-00000001"),
                ("Reason", "4"),
                ("Uniqueid", "1795417493.7"),
            )
        )
        session.send(response(action, "Success", ("Message", "Originate successfully queued")))

    async with fake_ami() as server:
        server.handlers["Originate"] = originate
        client = AmiClient(config(server.port))
        await client.connect()
        result = await client.originate(
            "PJSIP/agent1001",
            context="cti-hold",
            exten="agent",
            priority=1,
            ring_timeout=20,
            variables={"A": "1", "B": "2"},
        )
        await client.close()
    assert (result.success, result.reason, result.uniqueid) == (True, 4, "1795417493.7")
    assert result.channel == "PJSIP/agent1001-00000001"
    sent = server.sessions[0].actions[1]
    assert sent.values("Variable") == ["A=1", "B=2"]
    assert (sent["Timeout"], sent["Async"], sent["Priority"]) == ("20000", "true", "1")


async def test_command_output_ami11_and_legacy_follows() -> None:
    def command(session: Session, action: Message) -> None:
        if action["Command"] == "new":
            session.send(
                response(
                    action,
                    "Success",
                    ("Message", "Command output follows"),
                    ("Output", "System uptime: 6 seconds"),
                    ("Output", "Last reload: 6 seconds"),
                )
            )
        else:  # pre-AMI 2 format
            session.send(
                f"Response: Follows\r\nPrivilege: Command\r\nActionID: {action.action_id}\r\n"
                "line one\r\nline two\r\n--END COMMAND--\r\n\r\n".encode()
            )

    async with fake_ami() as server:
        server.handlers["Command"] = command
        client = AmiClient(config(server.port))
        await client.connect()
        new = await client.command("new")
        legacy = await client.command("legacy")
        await client.close()
    assert new == ["System uptime: 6 seconds", "Last reload: 6 seconds"]
    assert legacy == ["line one", "line two"]


async def test_action_refuses_line_breaks_and_needs_a_connection() -> None:
    async with fake_ami() as server:
        client = AmiClient(config(server.port))
        with pytest.raises(AmiNotConnected):
            await client.action("Ping")
        await client.connect()
        with pytest.raises(ValueError, match="line break"):
            await client.action("Setvar", {"Value": "a\r\nAction: Hangup"})
        assert (await client.ping()).action_id == "cti-2"  # nothing was sent, no id used
        await client.close()
        with pytest.raises(AmiClosed):
            await client.action("Ping")


# -- login ---------------------------------------------------------------------


async def test_md5_login_and_events_header() -> None:
    async with fake_ami() as server:
        client = AmiClient(config(server.port, auth="md5", events="off"))
        await client.connect()
        assert client.connected and client.version == "11.0.0"
        await client.close()
    challenge, login = server.sessions[0].actions[:2]
    assert (challenge["Action"], challenge["AuthType"]) == ("Challenge", "MD5")
    expected = hashlib.md5((CHALLENGE + SECRET).encode()).hexdigest()
    assert login.headers == {
        "Action": "Login",
        "ActionID": "cti-2",
        "AuthType": "MD5",
        "Username": "cti",
        "Key": expected,
        "Events": "off",
    }


async def test_failed_login_raises_and_leaves_nothing_running() -> None:
    async with fake_ami() as server:
        client = AmiClient(config(server.port, secret="wrong", reconnect=True))
        with pytest.raises(AmiAuthenticationError, match="Authentication failed"):
            await client.connect()
        assert not client.connected
        assert client_tasks() == []
        await client.close()


# -- connection loss, keep-alive, reconnect -------------------------------------


async def test_pending_action_fails_when_the_connection_is_lost() -> None:
    def drop(session: Session, action: Message) -> None:
        session.writer.transport.abort()

    async with fake_ami() as server:
        server.handlers["Hangup"] = drop
        client = AmiClient(config(server.port))
        await client.connect()
        with pytest.raises(AmiConnectionLost, match="Hangup"):
            await client.action("Hangup", {"Channel": "PJSIP/x-1"})
        assert not client.connected
        with pytest.raises(AmiNotConnected):
            await client.ping()
        await client.close()
    assert client_tasks() == []


async def test_ping_timeout_reconnects_relogs_refilters_and_resyncs() -> None:
    hooks: list[int] = []
    resynced = asyncio.Event()
    filters = (
        AmiFilter(filter="!Event: (VarSet|Newexten)"),
        AmiFilter(match_criteria="action(exclude),name(DeviceStateChange)"),
    )

    async def resync(client: AmiClient) -> None:
        hooks.append(client.logins)
        await client.action("CoreShowChannels")
        if len(hooks) == 2:
            resynced.set()

    async with fake_ami() as server:
        server.answer_pings = lambda session: session.index > 0  # the first session goes deaf
        client = AmiClient(
            config(
                server.port,
                ping_interval=0.05,
                ping_timeout=0.1,
                reconnect=True,
                filters=filters,
            )
        )
        client.add_resync_hook(resync)
        await client.connect()
        async with asyncio.timeout(5):
            await resynced.wait()
            await server.sessions[0].closed.wait()  # the client dropped the deaf session
        await client.close()

    assert hooks == [1, 2]  # after the first login too
    first, second = server.sessions[:2]
    for session in (first, second):
        assert session.names()[:4] == ["Login", "Filter", "Filter", "CoreShowChannels"]
        assert session.actions[0].action_id == "cti-1"
        assert session.actions[1]["Filter"] == "!Event: (VarSet|Newexten)"
        assert session.actions[2]["MatchCriteria"] == "action(exclude),name(DeviceStateChange)"
    assert "Ping" in first.names()
    assert client_tasks() == []


async def test_filter_added_later_is_reapplied_after_reconnect() -> None:
    async with fake_ami() as server:
        client = AmiClient(config(server.port, reconnect=True))
        await client.connect()
        added = await client.add_filter(AmiFilter(filter="!Event: RTCP.*"))
        assert added is not None and added.ok
        server.sessions[0].writer.transport.abort()
        await eventually(lambda: len(server.sessions) == 2 and client.connected)
        await client.close()
    assert server.sessions[1].names()[:2] == ["Login", "Filter"]
    assert server.sessions[1].actions[1]["Filter"] == "!Event: RTCP.*"


def test_backoff_delay_grows_exponentially_and_is_capped() -> None:
    plain = [backoff_delay(n, initial=0.5, factor=2, maximum=30, jitter=0) for n in range(9)]
    assert plain == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    rng = random.Random(3)
    jittered = [
        backoff_delay(n, initial=0.5, factor=2, maximum=30, jitter=0.2, rng=rng)
        for n in range(1000)
    ]
    assert all(0.4 <= d <= 30 for d in jittered)
    assert len({round(d, 6) for d in jittered[:6]}) == 6  # jitter spreads them
    assert backoff_delay(10_000, initial=0.5, factor=2, maximum=30, jitter=0) == 30


async def test_reconnect_backoff_grows_while_asterisk_is_down() -> None:
    delays: list[float] = []

    async def fake_sleep(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    async with fake_ami() as server:
        client = AmiClient(
            config(
                server.port,
                reconnect=True,
                backoff_initial=0.01,
                backoff_factor=2.0,
                backoff_max=0.1,
                backoff_jitter=0.0,
            )
        )
        client._sleep = fake_sleep  # observe the schedule without waiting it out
        await client.connect()
    # The server is gone: every attempt is refused.
    await eventually(lambda: len(delays) >= 6)
    await client.close()
    assert delays[:6] == [0.01, 0.02, 0.04, 0.08, 0.1, 0.1]
    assert client_tasks() == []


async def test_start_keeps_trying_until_asterisk_comes_up() -> None:
    # Reserve a port, then leave it closed: Asterisk is not running yet.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    resyncs: list[int] = []

    async def resync(client: AmiClient) -> None:
        resyncs.append(client.logins)

    client = AmiClient(config(port, reconnect=True, backoff_jitter=0.0))
    client.add_resync_hook(resync)
    await client.start()  # does not raise: the supervisor retries
    assert not client.connected
    server = FakeAmi()
    server.port = port
    await server.start()
    try:
        async with asyncio.timeout(5):
            await client.wait_ready()
        assert client.connected
        assert resyncs == [1]
        result = await client.ping()
        assert result.ok
    finally:
        await client.close()
        await server.stop()
    assert client_tasks() == []


async def test_start_without_reconnect_raises_at_once() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    client = AmiClient(config(port, reconnect=False))
    with pytest.raises(OSError):
        await client.start()
    await client.close()
    assert client_tasks() == []


# -- the byte stream -------------------------------------------------------------


async def test_malformed_frame_is_skipped_and_the_stream_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[Message] = []
    async with fake_ami() as server:
        client = AmiClient(config(server.port))
        client.subscribe("*", events.append)
        await client.connect()
        server.sessions[0].send(
            frame(("Event", "First"), ("Seq", "1"))
            + b"this line is no header\r\nNor: this one\r\n\r\n"
            + frame(("Event", "Second"), ("Seq", "2"))
            + b"Event: Bytes\r\nName: caf\xe9\r\n\r\n"  # Latin-1, not UTF-8
            + frame(("Event", "Third"), ("Seq", "3"))
        )
        await eventually(lambda: len(events) == 5)
        assert (await client.ping()).get("Ping") == "Pong"  # the session lives on
        await client.close()
    assert [e.event for e in events] == ["FullyBooted", "First", "Second", "Bytes", "Third"]
    assert events[3]["Name"] == "caf\ufffd"
    assert "malformed AMI frame" in caplog.text


async def test_utf8_chinese_value_survives_reads_split_inside_a_character() -> None:
    events: list[Message] = []
    async with fake_ami() as server:
        client = AmiClient(config(server.port))
        client.subscribe("Newchannel", events.append)
        await client.connect()
        data = frame(
            ("Event", "Newchannel"),
            ("Channel", "PJSIP/pstn-00000001"),
            ("CallerIDName", "王小明"),
        )
        cut = data.index("王".encode()) + 1  # inside the first character
        session = server.sessions[0]
        for part in (data[:cut], data[cut : cut + 2], data[cut + 2 :]):
            session.send(part)
            await session.writer.drain()
            await asyncio.sleep(0.01)
        await eventually(lambda: len(events) == 1)
        await client.action("UserEvent", {"UserEvent": "Probe", "Agent": "李四"})
        await client.close()
    assert events[0]["CallerIDName"] == "王小明"
    assert server.sessions[0].actions[1]["Agent"] == "李四"


# -- subscribers -----------------------------------------------------------------


async def test_subscribers_sync_async_raising_and_unsubscribe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    def plain(message: Message) -> None:
        seen.append(f"plain:{message['Seq']}")

    async def slow(message: Message) -> None:
        await asyncio.sleep(0.02 if message["Seq"] == "1" else 0)
        seen.append(f"async:{message['Seq']}")

    def broken(message: Message) -> None:
        raise RuntimeError("subscriber bug")

    async with fake_ami() as server:
        client = AmiClient(config(server.port))
        client.subscribe("Tick", broken)
        client.subscribe("Tick", slow)
        handle = client.subscribe("Tick", plain)
        await client.connect()
        session = server.sessions[0]
        ticks = frame(("Event", "Tick"), ("Seq", "1")) + frame(("Event", "Tick"), ("Seq", "2"))
        session.send(ticks)
        await eventually(lambda: len(seen) == 4)
        handle.unsubscribe()
        handle.unsubscribe()  # idempotent
        session.send(frame(("Event", "Tick"), ("Seq", "3")))
        await eventually(lambda: len(seen) == 5)
        await client.close()
    # Awaited in order: the slow first event delays, never reorders.
    assert seen == ["async:1", "plain:1", "async:2", "plain:2", "async:3"]
    failures = [r for r in caplog.records if r.exc_info and "subscriber bug" in str(r.exc_info[1])]
    assert len(failures) == 3  # logged once per event, the reader unharmed
    assert client.connected is False


async def test_clean_shutdown_fails_pending_and_cancels_every_task() -> None:
    before = asyncio.all_tasks()
    async with fake_ami() as server:
        server.handlers["SlowThing"] = lambda session, action: None
        client = AmiClient(config(server.port, reconnect=True, ping_interval=30.0))
        delivered: list[Message] = []

        async def stuck(message: Message) -> None:
            delivered.append(message)
            await asyncio.Event().wait()  # never returns: close() must not hang on it

        client.subscribe("FullyBooted", stuck)
        await client.connect()
        assert {t.get_name() for t in client_tasks()} == {
            "ami-dispatch",
            "ami-supervisor",
            "ami-reader-1",
            "ami-ping-1",
        }
        pending = asyncio.create_task(client.action("SlowThing", timeout=30))
        await eventually(lambda: "SlowThing" in server.sessions[0].names())
        goodbye = await client.close()
        with pytest.raises(AmiClosed):
            await pending
        assert await client.close() is None  # idempotent
    assert goodbye is not None and goodbye.response == "Goodbye"
    assert server.sessions[0].names()[-1] == "Logoff"
    assert len(delivered) == 1
    assert client_tasks() == []
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
