"""FastAGI server against the recorded Asterisk 22 transcripts (every agi.jsonl connection)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from ctiserver.asterisk.agi.codec import (
    AgiResponse,
    encode_command,
    parse_environment,
    parse_response,
)
from ctiserver.asterisk.agi.server import FastAgiServer
from ctiserver.asterisk.agi.session import AgiHangup, AgiSession
from ctiserver.sim.transcript import Record, scenario, scenarios
from tests.agi_replay.harness import Gate, ReplayResult, expected_commands, replay_connection

Handler = Callable[[AgiSession], Awaitable[None]]


def _connections() -> list[tuple[str, int, list[Record]]]:
    found = []
    for sc in scenarios():
        for conn, records in sc.agi_connections().items():
            found.append((sc.name, conn, records))
    return found


CONNECTIONS = _connections()


def split_command(line: str) -> list[str]:
    """Split a recorded command line the way res_agi's parse_args does (quotes, backslash)."""
    words: list[str] = []
    current: list[str] = []
    quoted = escaped = in_word = False
    for char in line.rstrip("\n"):
        if escaped:
            current.append(char)
            escaped, in_word = False, True
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted, in_word = not quoted, True
        elif char in " \t" and not quoted:
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(char)
            in_word = True
    if in_word:
        words.append("".join(current))
    return words


@dataclass
class Step:
    """One recorded command with its reply."""

    command: str
    reply: str = ""
    hangup_line_before: bool = False  # a HANGUP line came while the script sent nothing


def steps_of(records: list[Record]) -> list[Step]:
    steps: list[Step] = []
    hangup_pending = False
    for record in records[1:]:
        if record.incoming and record.data == "HANGUP\n":
            hangup_pending = True
        elif record.incoming and record.data and steps and not steps[-1].reply:
            steps[-1].reply = record.data
        elif not record.incoming and record.data:
            steps.append(Step(record.data, hangup_line_before=hangup_pending))
            hangup_pending = False
    return steps


def shows_hangup(reply: str) -> bool:
    """Where the transcript says the channel left: result=-1 on a command, or 511."""
    response = parse_response(reply)
    return response.code == 511 or response.result == "-1"


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll `predicate` for up to 5 s (the server has no event for 'all sessions gone')."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached within 5 s")


async def replay(
    name: str,
    handlers: dict[int, Handler],
    *,
    gates: dict[int, Gate] | None = None,
) -> dict[int, ReplayResult]:
    """Replay the FastAGI connections of a scenario named in `handlers`, in order.

    `handlers[conn]` serves connection `conn`; any exception other than
    AgiHangup escaping a handler fails the test (the server would only log it).
    """
    recorded = scenario(name).agi_connections()
    connections = {conn: recorded[conn] for conn in sorted(handlers)}
    current = 0
    failures: list[BaseException] = []

    async def dispatch(session: AgiSession) -> None:
        try:
            await handlers[current](session)
        except AgiHangup:
            raise
        except BaseException as exc:
            failures.append(exc)
            raise

    results: dict[int, ReplayResult] = {}
    server = FastAgiServer("127.0.0.1", 0, drain_timeout=5.0)
    for records in connections.values():
        server.route(parse_environment(records[0].data).script, dispatch)
    async with server:
        for conn, records in connections.items():
            current = conn
            result = await replay_connection(
                "127.0.0.1", server.port, records, gate=(gates or {}).get(conn)
            )
            await _until(lambda: server.connection_count == 0)
            if failures:
                raise failures[0]
            assert result.ok, f"{name} conn {conn}: {result.errors}"
            assert result.sent == expected_commands(records)
            assert result.half_closed and result.half_closed_after == len(result.sent)
            results[conn] = result
    return results


# -- generic: every connection, raw commands ------------------------------


@pytest.mark.parametrize(
    ("name", "conn", "records"),
    CONNECTIONS,
    ids=[f"{name.split('_')[0]}-conn{conn}" for name, conn, _ in CONNECTIONS],
)
async def test_every_connection_replays_through_raw_commands(
    name: str, conn: int, records: list[Record]
) -> None:
    steps = steps_of(records)
    outcomes: list[tuple[AgiResponse | None, bool]] = []
    idle_hangups: list[bool] = []

    async def handler(session: AgiSession) -> None:
        assert session.env.channel.startswith("PJSIP/")
        last: AgiHangup | None = None
        for step in steps:
            if step.hangup_line_before:
                # The HANGUP line came with no command pending: the reader must see it.
                idle_hangups.append(await session.wait_hangup(within=5))
            last = None
            try:
                outcomes.append((await session.command(*split_command(step.command)), False))
            except AgiHangup as exc:
                outcomes.append((exc.response, True))
                last = exc
        if last is not None:
            raise last  # a script ends on a hang-up by letting it propagate

    await replay(name, {conn: handler})

    assert len(outcomes) == len(steps)
    for step, (response, raised) in zip(steps, outcomes, strict=True):
        assert response == parse_response(step.reply), step.command
        assert raised == shows_hangup(step.reply), step.command
    assert idle_hangups == [True] * sum(s.hangup_line_before for s in steps)


def test_recorded_command_lines_round_trip_through_encode_command() -> None:
    lines = {r.data for _, _, records in CONNECTIONS for r in records if not r.incoming and r.data}
    assert len(lines) > 20
    for line in lines:
        assert encode_command(*split_command(line)) == line.encode(), line


def test_every_scenario_with_fastagi_is_replayed() -> None:
    names = {name for name, _, _ in CONNECTIONS}
    assert len(CONNECTIONS) == 24
    assert {"02_ivr_dtmf_rfc4733", "03d_hangup_while_agi_idle", "13_ami_reconnect_resync"} <= names


# -- scenario-specific, through the typed helpers ----------------------------


def _ivr(endpos: int) -> tuple[Handler, dict[str, object]]:
    seen: dict[str, object] = {}

    async def ivr(session: AgiSession) -> None:
        await session.answer()
        seen["greeting"] = await session.stream_file("demo-congrats", "0123456789*#")
        account = await session.get_data("vm-enter-num-to-call", 10000, 4)
        assert account is not None
        seen["account"] = account
        await session.say_digits(account)
        await session.set_variable("CTI_ACCOUNT", account)
        seen["stored"] = await session.get_variable("CTI_ACCOUNT")
        seen["unset"] = await session.get_variable("NO_SUCH_VARIABLE")
        seen["full"] = await session.get_full_variable(
            "${CALLERID(num)}|${CALLERID(name)}|${CTI_ACCOUNT}"
        )
        seen["no_input"] = await session.get_data("beep", 3000, 1)
        seen["exec"] = await session.exec("Playback", "beep")
        await session.verbose(f"CTI IVR done for account {account}", 1)
        assert not session.hung_up
        await session.hangup()
        # Behaviour 5: our own HANGUP is answered result=1, then a HANGUP line.
        seen["hangup_line"] = await session.wait_hangup(within=5)

    seen["endpos"] = endpos
    return ivr, seen


@pytest.mark.parametrize(("name", "endpos"), [("02", 24000), ("02b", 20000)])
async def test_ivr_with_dtmf(name: str, endpos: int) -> None:
    ivr, seen = _ivr(endpos)
    await replay(name, {1: ivr})
    assert seen["greeting"] == ("1", endpos)  # `200 result=49 endpos=N`: '1' interrupted
    assert seen["account"] == "1234"
    assert seen["stored"] == "1234"
    assert seen["unset"] is None  # `200 result=0`
    assert seen["full"] == "5551234|John Doe|1234"
    assert seen["no_input"] is None  # `200 result= (timeout)`
    assert seen["exec"] == 0
    assert seen["hangup_line"] is True


async def test_03a_hangup_during_stream_file_then_dead_channel_commands() -> None:
    seen: dict[str, object] = {}

    async def handler(session: AgiSession) -> None:
        await session.answer()
        with pytest.raises(AgiHangup) as caught:
            await session.stream_file("demo-congrats")
        assert caught.value.response is not None
        seen["endpos"] = caught.value.response.endpos
        assert session.hung_up
        # Behaviour 2: channel commands get 511, variables / EXEC / VERBOSE still work.
        with pytest.raises(AgiHangup) as dead:
            await session.stream_file("beep")
        assert dead.value.response is not None and dead.value.response.code == 511
        seen["callerid"] = await session.get_variable("CALLERID(num)")
        seen["cause"] = await session.get_full_variable("${HANGUPCAUSE}")
        await session.set_variable("CTI_RESULT", "abandoned")
        seen["result"] = await session.get_variable("CTI_RESULT")
        seen["exec"] = await session.exec("Playback", "beep")
        await session.verbose("caller gone", 1)
        with pytest.raises(AgiHangup):
            await session.channel_status()
        with pytest.raises(AgiHangup):
            await session.hangup()

    await replay("03a", {1: handler})
    assert seen == {
        "endpos": 24000,
        "callerid": "5551234",
        "cause": "0",
        "result": "abandoned",
        "exec": 0,
    }


async def test_03b_hangup_during_get_data_loses_partial_digits() -> None:
    caught: list[AgiHangup] = []

    async def handler(session: AgiSession) -> None:
        await session.answer()
        try:
            await session.get_data("vm-enter-num-to-call", 10000, 4)
        except AgiHangup as exc:
            caught.append(exc)
            raise

    await replay("03b", {1: handler})
    assert len(caught) == 1
    assert caught[0].response == AgiResponse(code=200, result="-1")  # the keyed "12" is gone


def _queue_wait(
    digits: list[str | None], before: Callable[[AgiSession], Awaitable[None]] | None = None
) -> Handler:
    """The recorder's queue wait: prompt, MOH, WAIT FOR DIGIT until the channel leaves."""

    async def handler(session: AgiSession) -> None:
        if before is not None:
            await before(session)
        await session.answer()
        assert await session.stream_file("pls-hold-while-try") == (None, 19398)
        await session.set_music(True, "default")
        while True:
            digits.append(await session.wait_for_digit(1000))

    return handler


QUEUE_SCENARIOS = [
    "03c",
    "04",
    "04b",
    "04c",
    "05",
    "05b",
    "07",
    "08a",
    "08b",
    "08c",
    "09",
    "10",
    "11",
]


@pytest.mark.parametrize("name", QUEUE_SCENARIOS)
async def test_queue_wait_ends_in_agi_hangup(name: str) -> None:
    """Caller hang-up (03c, 07), Redirect (04*, 08*...) and Bridge (05*) look the same."""
    digits: list[str | None] = []
    records = scenario(name).agi_connections()[1]
    waits = sum(r.data == "WAIT FOR DIGIT 1000\n" for r in records)
    results = await replay(name, {1: _queue_wait(digits)})
    assert digits == [None] * (waits - 1)  # every wait but the last timed out
    assert results[1].half_closed_after == len(expected_commands(records))


async def test_03d_idle_session_notices_unsolicited_hangup() -> None:
    idle = asyncio.Event()
    seen: dict[str, object] = {}

    async def handler(session: AgiSession) -> None:
        await session.answer()
        await session.set_music(True, "default")
        seen["before"] = session.hung_up
        idle.set()  # now busy elsewhere (a CRM lookup): no command outstanding
        seen["noticed"] = await session.wait_hangup(within=5)
        seen["reason"] = session.hangup_reason
        with pytest.raises(AgiHangup):
            await session.stream_file("queue-thankyou")  # 511
        seen["callerid"] = await session.get_variable("CALLERID(num)")

    async def gate(record: Record) -> None:
        if record.data == "HANGUP\n":
            async with asyncio.timeout(5):
                await idle.wait()

    await replay("03d", {1: handler}, gates={1: gate})
    assert seen == {
        "before": False,
        "noticed": True,
        "reason": "HANGUP line",
        "callerid": "5551234",
    }


@pytest.mark.parametrize("name", ["05", "05b"])
async def test_bridge_masquerade_gives_result_minus_one_then_hangup_line(name: str) -> None:
    seen: list[object] = []

    async def handler(session: AgiSession) -> None:
        try:
            await _queue_wait([])(session)
        except AgiHangup as exc:
            seen.append(exc.response)
            seen.append(await session.wait_hangup(within=5))
            raise

    await replay(name, {1: handler})
    assert seen == [AgiResponse(code=200, result="-1"), True]


async def test_06_redirect_then_after_dial_reads_dialstatus() -> None:
    statuses: dict[int, tuple[str | None, str | None]] = {}
    goodbye: list[object] = []

    def after_dial(conn: int) -> Handler:
        async def read_status(session: AgiSession) -> None:
            assert session.env.script == "after-dial"
            statuses[conn] = (
                await session.get_variable("DIALSTATUS"),
                await session.get_full_variable(
                    "${DIALSTATUS}|${HANGUPCAUSE}|${DIALEDTIME}|${ANSWEREDTIME}|${DIALEDPEERNUMBER}"
                ),
            )

        return read_status

    async def unavailable(session: AgiSession) -> None:
        await after_dial(4)(session)
        goodbye.append(await session.stream_file("number-not-answering"))
        goodbye.append(await session.stream_file("goodbye"))
        await session.hangup()
        goodbye.append(await session.wait_hangup(within=5))

    await replay(
        "06",
        {
            1: _queue_wait([]),
            2: _queue_wait([], before=after_dial(2)),
            3: _queue_wait([], before=after_dial(3)),
            4: unavailable,
        },
    )
    assert statuses == {
        2: ("NOANSWER", "NOANSWER|0|||"),
        3: ("BUSY", "BUSY|17|||"),
        4: ("CHANUNAVAIL", "CHANUNAVAIL|3|||"),
    }
    assert goodbye == [(None, 13179), (None, 7459), True]


async def test_13_two_queued_calls_with_variables_first() -> None:
    async def tag(session: AgiSession) -> None:
        await session.set_variable("CTI_STATE", "queued")
        await session.set_variable("CTI_SKILL", "billing")

    first: list[str | None] = []
    second: list[str | None] = []
    await replay("13", {1: _queue_wait(first, tag), 2: _queue_wait(second, tag)})
    assert first == [None]
    assert second == [None] * 3
