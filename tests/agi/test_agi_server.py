"""FastAGI server and session over real sockets, with a scripted stand-in for Asterisk."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ctiserver.asterisk.agi.codec import AgiProtocolError, AgiResponse
from ctiserver.asterisk.agi.server import FastAgiServer
from ctiserver.asterisk.agi.session import (
    AgiCommandError,
    AgiHangup,
    AgiSession,
    AgiTimeout,
)
from tests.polling import until as wait_until

Handler = Callable[[AgiSession], Awaitable[None]]
IO_TIMEOUT = 5.0


def environment(
    script: str = "ivr", channel: str = "PJSIP/pstn-00000001", name: str = "John Doe"
) -> bytes:
    return (
        f"agi_network: yes\nagi_network_script: {script}\n"
        f"agi_request: agi://127.0.0.1:4573/{script}\nagi_channel: {channel}\n"
        f"agi_language: en\nagi_type: PJSIP\nagi_uniqueid: 1795417377.2\n"
        f"agi_callerid: 5551234\nagi_calleridname: {name}\nagi_context: from-callers\n"
        f"agi_extension: 100\nagi_priority: 3\n\n"
    ).encode()


class FakeAsterisk:
    """The Asterisk end of one FastAGI connection, driven step by step by a test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: FastAgiServer, env: bytes | None = None) -> FakeAsterisk:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        fake = cls(reader, writer)
        await fake.send(environment() if env is None else env)
        return fake

    async def send(self, *chunks: str | bytes) -> None:
        for chunk in chunks:
            self.writer.write(chunk.encode() if isinstance(chunk, str) else chunk)
        await self.writer.drain()

    async def expect(self, line: str | bytes) -> None:
        async with asyncio.timeout(IO_TIMEOUT):
            got = await self.reader.readline()
        assert got == (line.encode() if isinstance(line, str) else line)

    async def eof(self) -> bytes:
        """Read until the server half-closes (or closes); return what came before."""
        async with asyncio.timeout(IO_TIMEOUT):
            return await self.reader.read()

    async def finish(self) -> None:
        """What Asterisk does at the end: after the half-close, one more HANGUP, close."""
        assert await self.eof() == b""
        await self.send("HANGUP\n")
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):
            pass


async def until(predicate: Callable[[], bool]) -> None:
    await wait_until(predicate, limit=IO_TIMEOUT)


@pytest.fixture
async def server() -> AsyncIterator[FastAgiServer]:
    srv = FastAgiServer(
        "127.0.0.1", 0, command_timeout=IO_TIMEOUT, environment_timeout=1.0, drain_timeout=1.0
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def serve(server: FastAgiServer, handler: Handler, script: str = "ivr") -> list[BaseException]:
    """Route `script` to `handler`; returns the list its unexpected errors land in."""
    failures: list[BaseException] = []

    async def wrapped(session: AgiSession) -> None:
        try:
            await handler(session)
        except (AgiHangup, asyncio.CancelledError):
            raise
        except BaseException as exc:
            failures.append(exc)
            raise

    server.route(script, wrapped)
    return failures


async def done(server: FastAgiServer, failures: list[BaseException]) -> None:
    await until(lambda: server.connection_count == 0)
    if failures:
        raise failures[0]


async def test_bound_port_and_routing_by_url_path(server: FastAgiServer) -> None:
    assert server.port > 0
    seen: list[tuple[str, dict[str, str]]] = []

    async def handler(session: AgiSession) -> None:
        seen.append((session.env.script, session.env.arguments))

    failures = serve(server, handler, "queue")
    env = environment("queue?skill=billing&lang=zh").replace(
        b"agi_network_script: queue?skill=billing&lang=zh", b"agi_network_script: queue"
    )
    fake = await FakeAsterisk.connect(server, env)
    await fake.finish()
    await done(server, failures)
    assert seen == [("queue", {"skill": "billing", "lang": "zh"})]


@pytest.mark.parametrize(
    "usage",
    [
        "520-Invalid command syntax.  Proper usage follows:\n"
        " Usage: VERBOSE <message> <level>\n\n  Sends <message> to the console.\n"
        "520 End of proper usage.\n",
        # The usage text may lack its final newline (res_agi.c prints it with "%s").
        "520-Invalid command syntax.  Proper usage follows:\n"
        "Sends message to the console.520 End of proper usage.\n",
    ],
)
async def test_520_usage_reply_spans_lines_and_keeps_the_session_in_step(
    server: FastAgiServer, usage: str
) -> None:
    # No transcript has a 520; its shape follows res_agi.c.
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        response = await session.command("VERBOSE")
        seen.append(response.code)
        seen.append("VERBOSE" in response.message or "console" in response.message)
        with pytest.raises(AgiCommandError) as caught:
            await session.verbose("x")
        seen.append(caught.value.response.code)
        seen.append(await session.get_variable("AFTER"))

    failures = serve(server, handler)
    fake = await FakeAsterisk.connect(server)
    await fake.expect("VERBOSE\n")
    await fake.send(usage)
    await fake.expect("VERBOSE x 1\n")
    await fake.send(usage)
    await fake.expect("GET VARIABLE AFTER\n")
    await fake.send("200 result=1 (in step)\n")
    await fake.finish()
    await done(server, failures)
    assert seen == [520, True, 520, "in step"]


async def test_510_unknown_command(server: FastAgiServer) -> None:
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        seen.append(await session.command("NO SUCH", "thing"))
        with pytest.raises(AgiCommandError, match="510"):
            await session.set_music(False)

    failures = serve(server, handler)
    fake = await FakeAsterisk.connect(server)
    await fake.expect("NO SUCH thing\n")
    await fake.send("510 Invalid or unknown command\n")
    await fake.expect("SET MUSIC OFF\n")
    await fake.send("510 Invalid or unknown command\n")
    await fake.finish()
    await done(server, failures)
    assert seen == [AgiResponse(510, message="Invalid or unknown command")]


async def test_per_command_timeout_names_the_command_and_drops_the_late_reply(
    server: FastAgiServer,
) -> None:
    timed_out = asyncio.Event()
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        with pytest.raises(AgiTimeout) as caught:
            await session.command("GET VARIABLE", "SLOW", reply_timeout=0.1)
        seen.append(str(caught.value))
        timed_out.set()
        seen.append(await session.get_variable("NEXT"))

    failures = serve(server, handler)
    fake = await FakeAsterisk.connect(server)
    await fake.expect("GET VARIABLE SLOW\n")
    async with asyncio.timeout(IO_TIMEOUT):
        await timed_out.wait()
    await fake.expect("GET VARIABLE NEXT\n")
    await fake.send("200 result=1 (late)\n", "200 result=1 (next)\n")
    await fake.finish()
    await done(server, failures)
    assert "GET VARIABLE SLOW" in str(seen[0])
    assert seen[1] == "next"


async def test_200_concurrent_sessions(server: FastAgiServer) -> None:
    results: dict[str, str | None] = {}

    async def handler(session: AgiSession) -> None:
        number = await session.get_variable("CALLERID(num)")
        await session.set_variable("CTI_ECHO", f"{session.env.channel}={number}")
        results[session.env.channel] = number

    failures = serve(server, handler)

    async def call(index: int) -> None:
        channel = f"PJSIP/pstn-{index:08x}"
        fake = await FakeAsterisk.connect(server, environment(channel=channel))
        await fake.expect("GET VARIABLE CALLERID(num)\n")
        await fake.send(f"200 result=1 ({index})\n")
        await fake.expect(f"SET VARIABLE CTI_ECHO {channel}={index}\n")
        await fake.send("200 result=1\n")
        await fake.finish()

    await asyncio.gather(*(call(i) for i in range(200)))
    await done(server, failures)
    assert results == {f"PJSIP/pstn-{i:08x}": str(i) for i in range(200)}


async def test_unknown_script_is_logged_and_ended(
    server: FastAgiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    fake = await FakeAsterisk.connect(server, environment("no-such-flow"))
    await fake.finish()  # no command: half-closed at once, so the dialplan continues
    await until(lambda: server.connection_count == 0)
    assert "no handler for script 'no-such-flow'" in caplog.text


async def test_garbage_environment_closes_that_session_only(
    server: FastAgiServer, caplog: pytest.LogCaptureFixture
) -> None:
    answered: list[bool] = []

    async def handler(session: AgiSession) -> None:
        await session.answer()
        answered.append(True)

    failures = serve(server, handler)
    bad = await FakeAsterisk.connect(server, b"GET / HTTP/1.1\r\nHost: pbx\r\n\r\n")
    assert await bad.eof() == b""
    await bad.close()
    assert "bad environment block" in caplog.text

    good = await FakeAsterisk.connect(server)
    await good.expect("ANSWER\n")
    await good.send("200 result=0\n")
    await good.finish()
    await done(server, failures)
    assert answered == [True]


async def test_environment_block_read_has_a_timeout(caplog: pytest.LogCaptureFixture) -> None:
    async with FastAgiServer("127.0.0.1", 0, environment_timeout=0.2) as srv:
        fake = await FakeAsterisk.connect(srv, b"agi_network: yes\n")
        assert await fake.eof() == b""
        await fake.close()
        await until(lambda: srv.connection_count == 0)
    assert "no complete environment block" in caplog.text


async def test_non_agi_reply_line_ends_the_session(
    server: FastAgiServer, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []

    async def handler(session: AgiSession) -> None:
        try:
            await session.answer()
        except AgiProtocolError as exc:
            errors.append(exc)
            raise

    serve(server, handler)
    fake = await FakeAsterisk.connect(server)
    await fake.expect("ANSWER\n")
    await fake.send("this is not AGI\n")
    await fake.finish()
    await until(lambda: server.connection_count == 0)
    assert len(errors) == 1 and "not an AGI reply line" in str(errors[0])
    assert "closing the session" in caplog.text


async def test_garbage_while_idle_cancels_the_handler(server: FastAgiServer) -> None:
    cancelled = asyncio.Event()

    async def handler(session: AgiSession) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    serve(server, handler)
    fake = await FakeAsterisk.connect(server)
    await fake.send("\x00\x01garbage\n")
    await fake.finish()
    await until(lambda: server.connection_count == 0)
    assert cancelled.is_set()


async def test_utf8_both_ways(server: FastAgiServer) -> None:
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        seen.append(session.env.calleridname)
        await session.set_variable("CTI_NAME", "张三 李四")
        seen.append(await session.get_variable("CTI_NAME"))
        seen.append(await session.get_variable("BROKEN"))

    failures = serve(server, handler)
    fake = await FakeAsterisk.connect(server, environment(name="王五"))
    await fake.expect('SET VARIABLE CTI_NAME "张三 李四"\n'.encode())
    await fake.send("200 result=1\n")
    await fake.expect("GET VARIABLE CTI_NAME\n")
    await fake.send("200 result=1 (张三 李四)\n".encode())
    await fake.expect("GET VARIABLE BROKEN\n")
    await fake.send(b"200 result=1 (\xff\xe5\xbc)\n")  # not UTF-8: replaced, no crash
    await fake.finish()
    await done(server, failures)
    assert seen == ["王五", "张三 李四", "\ufffd\ufffd"]


async def test_handler_exception_is_logged_and_session_closed_cleanly(
    server: FastAgiServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(session: AgiSession) -> None:
        await session.answer()
        raise RuntimeError("boom")

    server.route("ivr", handler)
    fake = await FakeAsterisk.connect(server)
    await fake.expect("ANSWER\n")
    await fake.send("200 result=0\n")
    await fake.finish()
    await until(lambda: server.connection_count == 0)
    assert "handler for script 'ivr' on channel PJSIP/pstn-00000001 failed" in caplog.text
    assert "boom" in caplog.text


async def test_half_close_then_drain_the_last_hangup() -> None:
    sessions: list[AgiSession] = []

    async def handler(session: AgiSession) -> None:
        sessions.append(session)

    async with FastAgiServer("127.0.0.1", 0, drain_timeout=30.0) as srv:
        srv.route("ivr", handler)
        fake = await FakeAsterisk.connect(srv)
        assert await fake.eof() == b""  # the half-close
        await asyncio.sleep(0.05)
        assert srv.connection_count == 1  # still reading: Asterisk has more to say
        await fake.send("HANGUP\n")
        await fake.close()
        await until(lambda: srv.connection_count == 0)  # EOF ends the drain, not its timeout
    assert sessions[0].hangup_reason == "HANGUP line"  # read after our half-close


async def test_eof_is_a_hangup(server: FastAgiServer) -> None:
    seen: list[object] = []
    pending = asyncio.Event()

    async def handler(session: AgiSession) -> None:
        pending.set()
        with pytest.raises(AgiHangup):
            await session.wait_for_digit(5000)
        seen.append(await session.wait_hangup(within=1))
        seen.append(session.hangup_reason)
        with pytest.raises(AgiHangup):
            await session.get_variable("X")  # nothing left to talk to

    failures = serve(server, handler)
    fake = await FakeAsterisk.connect(server)
    await fake.expect("WAIT FOR DIGIT 5000\n")
    await fake.close()
    await done(server, failures)
    assert seen == [True, "Asterisk closed the connection"]


async def test_minus_one_is_a_hangup_only_on_channel_commands(server: FastAgiServer) -> None:
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        with pytest.raises(AgiCommandError):
            await session.channel_status("PJSIP/gone-1")  # -1: no such channel
        response = await session.command("GOSUB", "sub", "s", "1")
        seen.append((response.code, response.result, response.message))
        assert not session.hung_up
        with pytest.raises(AgiHangup) as caught:
            await session.stream_file("demo-congrats", "#")
        seen.append(caught.value.response)
        assert session.hung_up

    failures = serve(server, handler)
    fake = await FakeAsterisk.connect(server)
    await fake.expect("CHANNEL STATUS PJSIP/gone-1\n")
    await fake.send("200 result=-1\n")
    await fake.expect("GOSUB sub s 1\n")
    await fake.send("100 result=0 Trying...\n", "200 result=0 Gosub complete\n")
    await fake.expect("STREAM FILE demo-congrats #\n")
    await fake.send("200 result=-1 endpos=1600\n", "HANGUP\n")
    await fake.finish()
    await done(server, failures)
    assert seen == [(200, "0", "Gosub complete"), AgiResponse(200, "-1", endpos=1600)]


async def test_documented_commands_without_transcripts(server: FastAgiServer) -> None:
    # RECORD FILE, SAY NUMBER and multi-argument EXEC follow res_agi.c / its docs.
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        seen.append(await session.record_file("/tmp/msg", "wav", "#", 5000, beep=True, silence=3))
        # Ended by silence: res_agi.c prints the milliseconds left, not a key.
        seen.append(await session.record_file("/tmp/quiet", "wav", "#", 10000, silence=3))
        seen.append(await session.say_number(42))
        seen.append(await session.exec("Dial", "PJSIP/agent1001", "20", "t"))
        with pytest.raises(AgiCommandError):
            await session.exec("NoSuchApp")
        with pytest.raises(AgiCommandError):
            await session.record_file("/readonly/msg")
        with pytest.raises(AgiHangup):
            await session.record_file("/tmp/msg2", "gsm", "", -1)

    failures = serve(server, handler)
    fake = await FakeAsterisk.connect(server)
    await fake.expect("RECORD FILE /tmp/msg wav # 5000 BEEP s=3\n")
    await fake.send("200 result=35 (dtmf) endpos=16000\n")
    await fake.expect("RECORD FILE /tmp/quiet wav # 10000 s=3\n")
    await fake.send("200 result=6980 (timeout) endpos=8160\n")
    await fake.expect('SAY NUMBER 42 ""\n')
    await fake.send("200 result=0\n")
    await fake.expect("EXEC Dial PJSIP/agent1001,20,t\n")
    await fake.send("200 result=0\n")
    await fake.expect("EXEC NoSuchApp\n")
    await fake.send("200 result=-2\n")
    await fake.expect("RECORD FILE /readonly/msg wav # -1\n")
    await fake.send("200 result=-1 (writefile)\n")
    await fake.expect('RECORD FILE /tmp/msg2 gsm "" -1\n')
    await fake.send("200 result=-1 (hangup) endpos=800\n", "HANGUP\n")
    await fake.finish()
    await done(server, failures)
    assert seen == [("#", 16000), (None, 8160), None, 0]


async def test_close_with_live_sessions_leaves_no_tasks() -> None:
    started = 0
    cancelled: list[str] = []

    async def busy(session: AgiSession) -> None:
        nonlocal started
        started += 1
        try:
            if session.env.channel.endswith("1"):
                await session.wait_for_digit(60000)  # a command in flight
            elif session.env.channel.endswith("2"):
                await session.wait_hangup()  # idle, watching for the caller
            else:
                await asyncio.sleep(60)  # busy elsewhere
        except asyncio.CancelledError:
            cancelled.append(session.env.channel)
            raise

    srv = FastAgiServer("127.0.0.1", 0, drain_timeout=0.2)
    await srv.start()
    srv.route("ivr", busy)
    fakes = [
        await FakeAsterisk.connect(srv, environment(channel=f"PJSIP/pstn-{i}")) for i in (1, 2, 3)
    ]
    await fakes[0].expect("WAIT FOR DIGIT 60000\n")
    await until(lambda: started == 3)
    port = srv.port
    await srv.close()
    assert sorted(cancelled) == ["PJSIP/pstn-1", "PJSIP/pstn-2", "PJSIP/pstn-3"]
    assert srv.connection_count == 0
    for fake in fakes:
        assert await fake.eof() == b""
        await fake.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
