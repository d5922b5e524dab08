"""RECORD FILE on the emulator, as res_agi.c's handle_recordfile runs it.

No transcript records RECORD FILE, so the expected lines come from res_agi.c
(see AgiSession.cmd_record_file). The calls run over real sockets: the
emulator's FastAGI client against ctiserver's FastAgiServer (the client's
`record_file()`), or against the testkit's raw server where the bare lines
matter, with an AmiProbe on the emulator's AMI.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from ctiserver.asterisk.agi.codec import AgiResponse
from ctiserver.asterisk.agi.server import FastAgiServer
from ctiserver.asterisk.agi.session import AgiHandler, AgiHangup, AgiSession
from ctiserver.sim import sounds
from ctiserver.sim.agi_client import RecordRequest
from ctiserver.sim.clock import Clock
from ctiserver.sim.conformance import Frame
from ctiserver.sim.emulator import AsteriskEmulator, Event
from ctiserver.sim.testkit import AgiPeer, AgiScriptServer, AmiProbe, logged_in_probe

LOGIN = "Action: Login\r\nActionID: login\r\nUsername: cti\r\nSecret: cti\r\n\r\n"
SPEED = 10.0  # emulated seconds per real second
CALL_LIMIT = 10.0  # real seconds a call may take
SLACK_SAMPLES = 800  # 100 ms emulated (10 ms real) of timer jitter where the caller acts
SLACK_SECONDS = 0.1
BEEP = sounds.seconds("beep")  # 0.423 s


@dataclass
class Rig:
    emulator: AsteriskEmulator
    ami: AmiProbe

    def on_start(self, command: str, action: Callable[[str], object]) -> None:
        """Run `action(channel)` the moment `command` starts (its AGIExecStart)."""

        def listener(event: Event) -> None:
            if event.name == "AGIExecStart" and event.get("Command") == command:
                action(event.get("Channel") or "")

        self.emulator.add_listener(listener)

    def key(self, command: str, digits: str, after: float) -> None:
        """The caller keys `digits` `after` emulated seconds into `command`."""
        self.on_start(command, lambda channel: self.emulator.send_dtmf(channel, digits, after))

    def hang_up(self, command: str, after: float) -> None:
        """The caller hangs up `after` emulated seconds into `command`."""
        clock, hangup = self.emulator.pbx.clock, self.emulator.hangup
        self.on_start(command, lambda channel: clock.call_later(after, hangup, channel))

    async def call(self) -> None:
        call = await self.emulator.place_call("5551234", "John Doe")
        await asyncio.wait_for(call.ended, CALL_LIMIT)

    async def exec_frames(self, command: str) -> tuple[Frame, Frame]:
        """The AGIExecStart and AGIExecEnd frames of `command`."""
        start = await self.ami.wait_for(
            lambda f: f.name == "AGIExecStart" and f.get("Command") == command
        )
        end = await self.ami.wait_for(
            lambda f: f.name == "AGIExecEnd" and f.get("Command") == command
        )
        return start, end

    async def result(self, command: str) -> tuple[str | None, str | None]:
        """AGIExecEnd's ResultCode and Result for `command`."""
        _, end = await self.exec_frames(command)
        return end.get("ResultCode"), end.get("Result")

    async def duration(self, command: str) -> float:
        """Emulated seconds from AGIExecStart to AGIExecEnd of `command`."""
        start, end = await self.exec_frames(command)
        return end.t - start.t


@asynccontextmanager
async def emulated(fastagi_port: int, clock: Clock) -> AsyncIterator[Rig]:
    emulator = AsteriskEmulator(ami_port=0, fastagi_port=fastagi_port, clock=clock)
    async with logged_in_probe(emulator, clock) as ami:
        yield Rig(emulator, ami)


@asynccontextmanager
async def with_fastagi_server(handler: AgiHandler) -> AsyncIterator[Rig]:
    """The emulator's built-in dialplan (exten 100 runs AGI .../ivr) on ctiserver's server."""
    server = FastAgiServer("127.0.0.1", 0, drain_timeout=1.0, close_timeout=2.0)
    server.route("ivr", handler)
    await server.start()
    try:
        async with emulated(server.port, Clock(SPEED)) as rig:
            yield rig
    finally:
        await server.close()


def outcome(response: AgiResponse) -> tuple[int, str, str | None, int | None]:
    return response.code, response.result, response.data, response.endpos


# -- arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["m", "wav", "#", "5000"], ("m.wav", "#", 5000, 0, False, 0)),
        (["m", "gsm", "", "-1", "BEEP", "s=3"], ("m.gsm", "", -1, 0, True, 3000)),
        (["m", "wav", "#", "5000", "8000", "BEEP"], ("m.wav", "#", 5000, 8000, True, 0)),
        (["m", "wav", "#", "5000", "8000"], ("m.wav", "#", 5000, 8000, False, 0)),
        (["m", "wav", "#", "5000", "s=3"], ("m.wav", "#", 5000, 0, False, 3000)),
        # any non-number without '=' first or second asks for the beep...
        (["m", "wav", "#", "5000", "x"], ("m.wav", "#", 5000, 0, True, 0)),
        # ...but a third optional word is only looked at for s=
        (["m", "wav", "#", "5000", "0", "s=2", "BEEP"], ("m.wav", "#", 5000, 0, False, 2000)),
        # the first optional word holding an 's' decides, even when it is no s=
        (["m", "wav", "#", "5000", "beeps", "s=2"], ("m.wav", "#", 5000, 0, True, 0)),
        (["m", "wav", "#", "5000ms", "s=0"], ("m.wav", "#", 5000, 0, False, 0)),
    ],
)
def test_arguments_are_read_like_res_agi(
    args: list[str], expected: tuple[str, str, int, int, bool, int]
) -> None:
    request = RecordRequest.parse(args)
    assert (
        request.path,
        request.escape,
        request.timeout_ms,
        request.offset,
        request.beep,
        request.silence_ms,
    ) == expected


@pytest.mark.parametrize("args", [["m", "wav", "#"], ["m", "wav", "#", "soon"]])
def test_missing_or_bad_timeout_is_a_usage_error(args: list[str]) -> None:
    with pytest.raises(ValueError):
        RecordRequest.parse(args)


# -- over the sockets --------------------------------------------------------------------


async def test_escape_digit_ends_the_recording() -> None:
    seen: list[tuple[str | None, int | None]] = []

    async def ivr(session: AgiSession) -> None:
        seen.append(await session.record_file("/tmp/msg", "wav", "#*", -1))

    command = "RECORD FILE /tmp/msg wav #* -1"
    async with with_fastagi_server(ivr) as rig:
        rig.key(command, "1", 0.5)  # not an escape digit: ignored
        rig.key(command, "#", 2.0)
        await rig.call()
        assert await rig.result(command) == ("200", "Success")
        # The key shows at its DTMFEnd, 2.2 s in (RFC 4733: 200 ms).
        assert abs(await rig.duration(command) - 2.2) < SLACK_SECONDS
    [(key, samples)] = seen
    assert key == "#"
    # 2.2 s of 20 ms frames, less the 200 ms res_agi rewinds: 17600 - 1600.
    assert samples is not None
    assert abs(samples - 16000) <= SLACK_SAMPLES


async def test_timeout_ends_the_recording_and_offsets_append() -> None:
    seen: list[tuple[str | None, int | None]] = []
    replies: list[AgiResponse] = []

    async def ivr(session: AgiSession) -> None:
        seen.append(await session.record_file("/tmp/t", "wav", "#", 3000))
        # An offset keeps the file up to it (O_APPEND, seek, truncate)...
        seen.append(await session.record_file("/tmp/t", "wav", "#", 1000, offset=8000))
        # ...and the seek stops at the end of what the file holds (16000 now).
        seen.append(await session.record_file("/tmp/t", "wav", "#", 1000, offset=99999))
        # A file that was never recorded has nothing to keep.
        seen.append(await session.record_file("/tmp/new", "wav", "#", 1000, offset=8000))
        # Timeout 0: no frame is read, endpos is the offset argument as given.
        replies.append(await session.command("RECORD FILE", "/tmp/t", "wav", "#", "0", "4000"))

    async with with_fastagi_server(ivr) as rig:
        await rig.call()
        assert await rig.result("RECORD FILE /tmp/t wav # 3000") == ("200", "Success")
        assert abs(await rig.duration("RECORD FILE /tmp/t wav # 3000") - 3.0) < SLACK_SECONDS
    assert seen == [(None, 24000), (None, 16000), (None, 24000), (None, 8000)]
    assert [outcome(r) for r in replies] == [(200, "0", "timeout", 4000)]


async def test_silence_ends_the_recording_as_a_timeout() -> None:
    replies: list[AgiResponse] = []
    voicemail: list[tuple[str | None, int | None]] = []

    async def ivr(session: AgiSession) -> None:
        for words in (("-1", "s=2"), ("10000", "s=3"), ("1500", "s=2")):
            replies.append(await session.command("RECORD FILE", "/tmp/s", "wav", "#", *words))
        # What ctiserver's voicemail asks for.
        voicemail.append(
            await session.record_file("/tmp/vm", "wav", "#", 120000, beep=True, silence=5)
        )

    async with with_fastagi_server(ivr) as rig:
        # Keys are out of band (RFC 4733): they do not break the silence.
        rig.key("RECORD FILE /tmp/s wav # -1 s=2", "5", 1.0)
        await rig.call()
        # More than 2 s of silence shows with the frame at 2.02 s.
        assert abs(await rig.duration("RECORD FILE /tmp/s wav # -1 s=2") - 2.02) < SLACK_SECONDS
        assert await rig.result("RECORD FILE /tmp/s wav # -1 s=2") == ("200", "Success")
    # result= is what the last ast_waitfor() left: a 100000 ms slice less 20 ms,
    # or the timeout less the 3.02 s recorded; 1 s of the silence is kept.
    assert [outcome(r) for r in replies] == [
        (200, "99980", "timeout", 8160),
        (200, "6980", "timeout", 8160),
        (200, "0", "timeout", 12000),  # the timeout came first
    ]
    assert [samples for _, samples in voicemail] == [8160]


async def test_hangup_during_recording_answers_minus_one_then_hangup() -> None:
    lines: list[str] = []
    command = "RECORD FILE /tmp/h wav # -1"

    async def script(peer: AgiPeer) -> None:
        start = len(peer.items)
        peer.send(command + "\n")
        await peer.wait_items(start + 2)
        lines.extend(peer.items[start:])
        peer.half_close()

    clock = Clock(SPEED)
    server = AgiScriptServer(clock, script)
    await server.start()
    try:
        async with emulated(server.port, clock) as rig:
            rig.hang_up(command, 1.5)
            await rig.call()
            assert await rig.result(command) == ("-1", "Failure")
    finally:
        await server.close()
    reply, notice = lines[:2]
    prefix = "200 result=-1 (hangup) endpos="
    assert reply.startswith(prefix)
    assert abs(int(reply.removeprefix(prefix)) - 12000) <= SLACK_SAMPLES
    assert notice == "HANGUP"


async def test_hangup_during_recording_is_agihangup_for_the_client() -> None:
    caught: list[AgiHangup] = []

    async def ivr(session: AgiSession) -> None:
        with pytest.raises(AgiHangup) as info:
            await session.record_file("/tmp/h", "wav", "#", 10000, beep=True)
        caught.append(info.value)

    async with with_fastagi_server(ivr) as rig:
        rig.hang_up("RECORD FILE /tmp/h wav # 10000 BEEP", BEEP + 1.0)
        await rig.call()
    [error] = caught
    assert error.response is not None
    assert error.response.data == "hangup"
    assert error.response.endpos is not None
    assert abs(error.response.endpos - 8000) <= SLACK_SAMPLES


async def test_beep_plays_before_the_recording() -> None:
    seen: list[tuple[str | None, int | None]] = []
    replies: list[AgiResponse] = []

    async def ivr(session: AgiSession) -> None:
        seen.append(await session.record_file("/tmp/a", "wav", "#", 1000))
        seen.append(await session.record_file("/tmp/b", "wav", "#", 1000, beep=True))
        replies.append(await session.command("RECORD FILE", "/tmp/c", "wav", "#", "1000", "BEEP"))

    async with with_fastagi_server(ivr) as rig:
        # An escape digit during the beep (ast_waitstream) ends the command there.
        rig.key("RECORD FILE /tmp/c wav # 1000 BEEP", "#", 0.05)
        await rig.call()
        plain = await rig.duration("RECORD FILE /tmp/a wav # 1000")
        beeped = await rig.duration("RECORD FILE /tmp/b wav # 1000 BEEP")
        assert await rig.result("RECORD FILE /tmp/c wav # 1000 BEEP") == ("200", "Success")
    assert seen == [(None, 8000), (None, 8000)]  # the beep is not recorded
    assert abs(plain - 1.0) < SLACK_SECONDS
    assert abs(beeped - (BEEP + 1.0)) < SLACK_SECONDS
    assert [outcome(r) for r in replies] == [(200, "35", "randomerror", 0)]


async def test_usage_error_answers_520() -> None:
    replies: list[AgiResponse] = []

    async def ivr(session: AgiSession) -> None:
        replies.append(await session.command("RECORD FILE", "/tmp/u", "wav", "#"))

    async with with_fastagi_server(ivr) as rig:
        await rig.call()
        assert await rig.result("RECORD FILE /tmp/u wav #") == ("520", "Usage")
    assert [r.code for r in replies] == [520]
