"""The emulator running dialplans/extensions.conf, the dialplan shipped to operators.

Parsing (sim.dialplan_file), `$[...]` expressions (sim.expressions) and
global variables are checked on their own; the call flows run over real
sockets: the emulator's AMI (an AmiProbe) and ctiserver's own FastAGI server.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ctiserver.asterisk.agi.server import FastAgiServer
from ctiserver.asterisk.agi.session import AgiSession
from ctiserver.sim.apps import Runner
from ctiserver.sim.clock import Clock
from ctiserver.sim.dialplan import Step, substitute
from ctiserver.sim.dialplan_file import DialplanFileError, load_dialplan
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.expressions import ExpressionError, UnsupportedExpressionError, evaluate
from ctiserver.sim.model import Pbx
from ctiserver.sim.phones import Call
from ctiserver.sim.testkit import AmiProbe, logged_in_probe

SHIPPED = Path(__file__).resolve().parents[2] / "dialplans" / "extensions.conf"
LOGIN = "Action: Login\r\nActionID: login\r\nUsername: cti\r\nSecret: cti\r\n\r\n"
SPEED = 20.0  # emulated seconds per real second: the retry test takes ~5 emulated seconds
CALL_LIMIT = 10.0  # real seconds any one call of these tests may take

Location = tuple[str | None, str | None, str | None, str | None]


# -- expressions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("0 + 1", "1"),  # CTI_RESUME_TRIES unset: $[0${CTI_RESUME_TRIES} + 1]
        ("01 + 1", "2"),  # leading zeros are numbers
        ("1 > 60", "0"),
        ("61 > 60", "1"),
        ("9 < 10", "1"),  # numeric, not text, comparison
        ("abc < abd", "1"),  # text comparison when a side is not a number
        ('"waiting" = "waiting"', "1"),
        ('"" = "waiting"', "0"),
        ('"done" != "waiting"', "1"),
        ('"5" = 5', "0"),  # a quoted string keeps its quotes, so it is text
        ("10 <= 10", "1"),
        ("10 >= 11", "0"),
        ("1 == 1", "1"),
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("7 / 2", "3.5"),
        ("1 / 3", "0.333333333333333333"),
        ("-7 % 3", "-1"),
        ("5 / 0", "2147483647"),
        ("2 - -1", "3"),
        ("abc + 1", "1"),  # a non-numeric operand of + is ignored
        ("abc * 2", "0"),
        ("0 | 5", "5"),
        ("3 | 5", "3"),  # | and & give an operand, not a boolean
        ("2 & 5", "2"),
        ("2 & 0", "0"),
        ("1 = 1 & 2 > 1", "1"),  # & binds looser than comparisons
        ("!abc", "1"),
        ("01", "01"),  # a lone number comes back as written
        ("abc", "abc"),
        ("", ""),
    ],
)
def test_expression_values(expression: str, value: str) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize("expression", ["= waiting", "1 +", "(1 + 2", "1 2", ") 1"])
def test_expression_syntax_errors(expression: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expression)


@pytest.mark.parametrize("expression", ["1 ? 2 :: 3", "abc : a", "abc =~ b", "LEN(abc)"])
def test_expression_operators_not_emulated(expression: str) -> None:
    with pytest.raises(UnsupportedExpressionError):
        evaluate(expression)


def test_substitution_evaluates_expressions_after_variables() -> None:
    pbx = Pbx(Clock())
    chan = pbx.new_channel(pbx.endpoint("pstn"), caller=("5551234", "John Doe"), exten="100")
    pbx.globals.update({"CTI_RESUME_LIMIT": "60", "CTISERVER": "127.0.0.1:4573"})
    assert substitute(pbx, chan, "$[0${CTI_RESUME_TRIES} + 1]") == "1"
    chan.vars["CTI_RESUME_TRIES"] = "1"
    assert substitute(pbx, chan, "$[0${CTI_RESUME_TRIES} + 1]") == "2"
    assert substitute(pbx, chan, "$[${CTI_RESUME_TRIES} > ${CTI_RESUME_LIMIT}]?x") == "0?x"
    assert substitute(pbx, chan, '$["${CTI_QUEUE_STATE}" = "waiting"]') == "0"
    chan.vars["CTI_QUEUE_STATE"] = "waiting"
    assert substitute(pbx, chan, '$["${CTI_QUEUE_STATE}" = "waiting"]') == "1"
    # An empty variable without quotes leaves Asterisk a syntax error: 0.
    assert substitute(pbx, chan, "$[${NOPE} = waiting]") == "0"
    # Globals answer when the channel has no variable of the name; a channel variable wins.
    assert substitute(pbx, chan, "agi://${CTISERVER}/ivr") == "agi://127.0.0.1:4573/ivr"
    chan.vars["CTI_RESUME_LIMIT"] = "3"
    assert substitute(pbx, chan, "${CTI_RESUME_LIMIT}") == "3"


# -- parsing ---------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extensions.conf"
    path.write_text(text, encoding="utf-8")
    return path


def test_parses_the_syntax_asterisk_accepts(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[general]\n"
        "static = yes\n"
        "[globals]\n"
        "HOST = 10.0.0.1 ; where ctiserver runs\n"
        "URL = agi://${HOST}:4573\n"
        "WAIT=$[2 * 3]\n"
        ";-- a block comment\n"
        "exten => nothing,1,Hangup\n"
        "--;\n"
        ";--- three dashes: an ordinary comment\n"
        "[in]\n"
        "exten=>_X.,1,NoOp(semi\\;colon) ; comment\n"
        " same => n,Hangup\n"
        "exten => s,1,Answer()\n"
        "exten => s,2,Set(A=(1))\n"
        "exten => s,n, Wait(1)\n",
    )
    plan = load_dialplan(path)
    assert plan.globals == {"HOST": "10.0.0.1", "URL": "agi://10.0.0.1:4573", "WAIT": "6"}
    assert plan.lookup("in", "555", 1) == Step("NoOp", "semi;colon")
    assert plan.lookup("in", "555", 2) == Step("Hangup")
    assert [plan.lookup("in", "s", p) for p in (1, 2, 3)] == [
        Step("Answer"),
        Step("Set", "A=(1)"),
        Step("Wait", "1"),
    ]
    assert "globals" not in plan.contexts and "general" not in plan.contexts


def test_overrides_replace_globals_before_later_ones_use_them(tmp_path: Path) -> None:
    path = _write(tmp_path, "[globals]\nHOST = 10.0.0.1\nURL = agi://${HOST}\n")
    plan = load_dialplan(path, {"HOST": "127.0.0.1:45731"})
    assert plan.globals == {"HOST": "127.0.0.1:45731", "URL": "agi://127.0.0.1:45731"}
    with pytest.raises(ValueError, match="HOTS"):
        load_dialplan(path, {"HOTS": "typo"})


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("exten => 100,1,NoOp()\n", 1, "outside any [context]"),
        ("[c]\n\nexten => 100,1,NoOp(\n", 3, "does not end with ')'"),
        ("[c]\nexten => 100,n,NoOp()\n", 2, "starts with 'n'"),
        ("[c]\nexten => 100,1,NoOp()\nexten => 100,3,NoOp()\n", 3, "gaps are not emulated"),
        ("[c]\nexten => 100,1,NoOp()\nexten => 100,1,NoOp()\n", 3, "defined twice"),
        ("[c]\nexten => a,1,NoOp()\nexten => b,1,NoOp()\nexten => a,n,NoOp()\n", 4, "'n'"),
        ("[c]\nsame => n,NoOp()\n", 2, "without an 'exten =>'"),
        ("[c]\nexten => 100,n(start),NoOp()\n", 2, "labels"),
        ("[c]\nexten => 100,hint,PJSIP/100\n", 2, "hints"),
        ("[c]\ninclude => other\n", 2, "'include =>' is not emulated"),
        ("[c]\nexten => 100/555,1,NoOp()\n", 2, "caller-id"),
        ("[c]\nexten => 100,1,No Op()\n", 2, "not an application name"),
        ("[c]\nthis is not a line\n", 2, "neither a [context]"),
        ("[c](!)\n", 1, "templates"),
        ("#include other.conf\n", 1, "#include"),
        ("[general]\nautofallthrough = no\n", 2, "'autofallthrough' is not emulated"),
        ("[c]\n;-- never closed\nexten => 1,1,NoOp()\n", 2, "never closed"),
    ],
)
def test_parse_errors_name_file_line_and_text(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DialplanFileError) as caught:
        load_dialplan(path)
    error = caught.value
    assert (error.path, error.line) == (str(path), line)
    assert problem in error.problem
    assert error.text == text.splitlines()[line - 1].strip()
    assert str(error).startswith(f"{path}:{line}: ")


def test_shipped_dialplan_loads_with_only_emulated_applications() -> None:
    plan = load_dialplan(SHIPPED)
    assert set(plan.contexts) == {
        "from-callers",
        "cti-after-agi",
        "cti-survey",
        "cti-transfer",
        "cti-resume",
        "cti-agent",
        "cti-hold",
        "cti-held",
        "cti-agent-held",
        "cti-transfer-queue",
        "cti-transfer-agent",
        "cti-outbound",
        "from-agents",
        "cti-fallback",
    }
    assert plan.globals == {
        "CTISERVER": "127.0.0.1:4573",
        "CTI_RESUME_WAIT": "5",
        "CTI_RESUME_LIMIT": "60",
    }
    assert plan.lookup("from-callers", "100", 3) == Step("AGI", "agi://${CTISERVER}/ivr")
    assert plan.lookup("cti-agent", "agent1001", 2) == Step("Dial", "PJSIP/${EXTEN},20,t")
    emulated = set(Runner(Pbx(Clock()), plan).apps)
    used = {step.app.lower() for ext in plan.contexts.values() for e in ext for step in e.steps}
    assert used <= emulated, f"not emulated: {used - emulated}"


# -- calls through the shipped dialplan ---------------------------------------------------


@dataclass
class AgiVisit:
    """What a FastAGI script saw of its channel."""

    script: str
    context: str
    extension: str
    priority: str
    request: str
    variables: dict[str, str | None] = field(default_factory=dict)


@dataclass
class ShippedPbx:
    emulator: AsteriskEmulator
    ami: AmiProbe

    def locations(self, channel: str) -> list[Location]:
        """(context, exten, priority, application) of every Newexten of `channel`."""
        return [
            (f.get("Context"), f.get("Exten"), f.get("Priority"), f.get("Application"))
            for f in self.ami.frames
            if f.is_event and f.name == "Newexten" and f.get("Channel") == channel
        ]

    def values(self, channel: str, variable: str) -> list[str | None]:
        """Every value `variable` was set to on `channel` (VarSet events)."""
        return [
            f.get("Value")
            for f in self.ami.frames
            if f.name == "VarSet" and f.get("Channel") == channel and f.get("Variable") == variable
        ]

    async def call(self) -> str:
        """Place a call to 100 and wait until it has ended (AMI Hangup included)."""
        call = await self.emulator.place_call("5551234", "John Doe", exten="100")
        return await self.ended(call)

    async def ended(self, call: Call) -> str:
        """Wait until `call` has ended and AMI has told its Hangup; its channel name."""
        await asyncio.wait_for(call.ended, CALL_LIMIT)
        await self.ami.wait_for(lambda f: f.name == "Hangup" and f.get("Channel") == call.name)
        return call.name


def visit(session: AgiSession) -> AgiVisit:
    env = session.env
    return AgiVisit(env.script, env.context, env.extension, env.priority, env.request)


@asynccontextmanager
async def shipped_pbx(fastagi_port: int, overrides: Mapping[str, str]) -> AsyncIterator[ShippedPbx]:
    """The emulator on the shipped dialplan pointed at `fastagi_port`, with an AMI probe."""
    clock = Clock(SPEED)
    plan = load_dialplan(SHIPPED, {"CTISERVER": f"127.0.0.1:{fastagi_port}", **overrides})
    emulator = AsteriskEmulator(ami_port=0, clock=clock, dialplan=plan)
    async with logged_in_probe(emulator, clock) as ami:
        yield ShippedPbx(emulator, ami)


@asynccontextmanager
async def fastagi_server() -> AsyncIterator[FastAgiServer]:
    server = FastAgiServer("127.0.0.1", 0, drain_timeout=1.0, close_timeout=2.0)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def closed_port() -> int:
    """A local TCP port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def run_of(context: str, exten: str, *apps: str) -> list[Location]:
    """The Newexten locations of `apps` run at priorities 1, 2, ... of one extension."""
    return [(context, exten, str(priority), app) for priority, app in enumerate(apps, start=1)]


IVR_ENTRY = run_of("from-callers", "100", "NoOp", "Answer", "AGI", "Goto")
AFTER_AGI_HANGUP = run_of("cti-after-agi", "s", "GotoIf", "GotoIf", "GotoIf", "GotoIf", "Hangup")
AFTER_AGI_WAITING = run_of("cti-after-agi", "s", "GotoIf")
FALLBACK = run_of("cti-fallback", "s", "NoOp", "Playback", "Dial", "Hangup")
RESUME = ("Set", "GotoIf", "AGI", "GotoIf", "Set", "MusicOnHold", "Goto")


async def test_inbound_call_reaches_the_ivr_script_and_done_hangs_up() -> None:
    async with fastagi_server() as server:
        visits: list[AgiVisit] = []

        async def ivr(session: AgiSession) -> None:
            visits.append(visit(session))
            await session.set_variable("CTI_QUEUE_STATE", "done")

        server.route("ivr", ivr)
        async with shipped_pbx(server.port, {}) as pbx:
            channel = await pbx.call()

            assert visits == [
                AgiVisit("ivr", "from-callers", "100", "3", f"agi://127.0.0.1:{server.port}/ivr")
            ]
            assert pbx.locations(channel) == IVR_ENTRY + AFTER_AGI_HANGUP
            noop = await pbx.ami.wait_for(
                lambda f: f.name == "Newexten" and f.get("Application") == "NoOp"
            )
            assert noop.get("AppData") == f'Inbound "John Doe" <5551234> to 100 on {channel}'
            assert pbx.values(channel, "AGISTATUS") == ["SUCCESS"]


async def test_waiting_caller_left_by_ctiserver_resumes_with_its_variables() -> None:
    async with fastagi_server() as server:
        visits: list[AgiVisit] = []

        async def ivr(session: AgiSession) -> None:
            visits.append(visit(session))
            await session.set_variable("CTI_QUEUE", "sales")
            await session.set_variable("CTI_ENQUEUED_AT", "1795417372.5")
            await session.set_variable("CTI_QUEUE_STATE", "waiting")
            # ...and the session ends with the caller still waiting (ctiserver restarts).

        async def queue_resume(session: AgiSession) -> None:
            seen = visit(session)
            for name in ("CTI_QUEUE", "CTI_ENQUEUED_AT", "CTI_QUEUE_STATE", "CTI_RESUME_TRIES"):
                seen.variables[name] = await session.get_variable(name)
            visits.append(seen)
            await session.set_variable("CTI_QUEUE_STATE", "done")

        server.route("ivr", ivr)
        server.route("queue-resume", queue_resume)
        async with shipped_pbx(server.port, {}) as pbx:
            channel = await pbx.call()

            assert [(v.script, v.context, v.priority) for v in visits] == [
                ("ivr", "from-callers", "3"),
                ("queue-resume", "cti-resume", "3"),
            ]
            assert visits[1].variables == {
                "CTI_QUEUE": "sales",
                "CTI_ENQUEUED_AT": "1795417372.5",
                "CTI_QUEUE_STATE": "waiting",
                "CTI_RESUME_TRIES": "1",
            }
            # queue-resume set "done": out of cti-resume at its priority 4.
            assert pbx.locations(channel) == (
                IVR_ENTRY
                + AFTER_AGI_WAITING
                + run_of("cti-resume", "s", *RESUME[:4])
                + AFTER_AGI_HANGUP
            )


async def test_waiting_caller_retries_with_music_then_falls_back_when_ctiserver_is_gone() -> None:
    async with fastagi_server() as server:
        queued = asyncio.Event()

        async def ivr(session: AgiSession) -> None:
            await session.set_variable("CTI_QUEUE_STATE", "waiting")
            queued.set()
            await session.wait_hangup()  # the caller waits in the queue

        server.route("ivr", ivr)
        overrides = {"CTI_RESUME_LIMIT": "2", "CTI_RESUME_WAIT": "1"}
        async with shipped_pbx(server.port, overrides) as pbx:
            call = await pbx.emulator.place_call("5551234", "John Doe", exten="100")
            await asyncio.wait_for(queued.wait(), CALL_LIMIT)
            # ctiserver goes away: its sessions are closed and its port refuses connections.
            await server.close()
            channel = await pbx.ended(call)

            # Tries 1 and 2 fail and play music; try 3 exceeds CTI_RESUME_LIMIT.
            attempt = run_of("cti-resume", "s", *RESUME)
            assert pbx.locations(channel) == (
                IVR_ENTRY
                + AFTER_AGI_WAITING
                + attempt
                + attempt
                + run_of("cti-resume", "s", *RESUME[:2])
                + FALLBACK
            )
            assert pbx.values(channel, "CTI_RESUME_TRIES") == ["1", "1", "2", "2", "3"]
            assert pbx.values(channel, "AGISTATUS") == ["SUCCESS", "FAILURE", "FAILURE"]
            assert pbx.values(channel, "DIALSTATUS")[-1] == "CHANUNAVAIL"
            music = [
                f
                for f in pbx.ami.frames
                if f.name in ("MusicOnHoldStart", "MusicOnHoldStop") and f.get("Channel") == channel
            ]
            assert [f.name for f in music] == ["MusicOnHoldStart", "MusicOnHoldStop"] * 2
            for start, stop in zip(music[::2], music[1::2], strict=True):
                # CTI_RESUME_WAIT emulated seconds (Timestamp is the emulated clock).
                played = float(stop.get("Timestamp") or 0) - float(start.get("Timestamp") or 0)
                assert 0.999 <= played < 1.3


async def test_unreachable_ctiserver_sends_a_new_caller_to_the_fallback() -> None:
    async with shipped_pbx(closed_port(), {}) as pbx:
        channel = await pbx.call()

        # Not waiting, AGISTATUS=FAILURE: the second GotoIf of cti-after-agi jumps.
        assert pbx.locations(channel) == (
            IVR_ENTRY
            + run_of("cti-after-agi", "s", "GotoIf", "GotoIf", "GotoIf", "GotoIf")
            + FALLBACK
        )
        assert pbx.values(channel, "AGISTATUS") == ["FAILURE"]
