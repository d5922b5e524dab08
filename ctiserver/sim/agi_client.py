"""AGI as the emulated Asterisk runs it: the FastAGI client and async AGI over AMI.

`FastAgiSession` connects to the FastAGI server named by `AGI(agi://host:port/
script[?query],arg1,...)`, writes the 22-line environment block (LF line ends,
then an empty line), reads one command per line and answers with res_agi's
exact reply formats. `AsyncAgiSession` runs the same commands queued by the
AMI action `AGI` and reports them as `AsyncAGIExec` events.

Hang-up behaviour (shared/asterisk/INDEX.md, behaviours 1-5): when the caller
hangs up, the channel is redirected or taken into a bridge, the pending
command answers `200 result=-1` and a `HANGUP` line follows ~44 ms later (at
once when no command is pending). The session then stays in dead-AGI mode:
channel commands get `511 Command Not Permitted on a dead channel or intercept
routine`, variable commands, VERBOSE and EXEC still answer 200. When the
server half-closes, Asterisk writes one more `HANGUP` and closes. Every
command is mirrored on AMI as AGIExecStart/AGIExecEnd, except on the hidden
surrogate of a masqueraded channel (INDEX 4), which publishes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shlex
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from ctiserver.sim import events as ev
from ctiserver.sim import sounds
from ctiserver.sim.dialplan import callerid_split, read_variable, substitute
from ctiserver.sim.expressions import leading_integer
from ctiserver.sim.model import ASTERISK_VERSION, Channel, Pbx, Sig, Signal

log = logging.getLogger(__name__)

DEAD_MESSAGE = "Command Not Permitted on a dead channel or intercept routine"
INVALID_MESSAGE = "Invalid or unknown command"
# Commands res_agi allows on a dead channel (its `dead` column).
DEAD_SAFE = {
    "exec",
    "get full variable",
    "get variable",
    "noop",
    "set variable",
    "verbose",
    "asyncagi break",
    "database get",
    "database put",
    "database del",
    "database deltree",
}
ALL_DIGITS = "0123456789*#"

# RECORD FILE (res_agi.c handle_recordfile): 20 ms voice frames at 8 kHz.
FRAME_MS = 20
FRAME_SAMPLES = sounds.RATE * FRAME_MS // 1000
DTMF_REWIND_SAMPLES = sounds.RATE * 200 // 1000  # ast_stream_rewind(fs, 200)
WAITFOR_SLICE_MS = 100_000  # ast_waitfor(chan, <0) waits in slices of this many ms

# What RECORD FILE "wrote": per emulator, `file.format` -> length in samples.
_recordings: weakref.WeakKeyDictionary[Pbx, dict[str, int]] = weakref.WeakKeyDictionary()

ExecApp = Callable[[Channel, str, str], Awaitable[int]]


@dataclass(slots=True)
class Reply:
    """A command's outcome: the line for the AGI peer and the AMI AGIExecEnd values."""

    line: str
    code: int = 200
    ami_code: int = 200
    ami_result: str = "Success"
    end_session: bool = False


def _failure(line: str) -> Reply:
    return Reply(line, 200, -1, "Failure")


@dataclass(slots=True)
class RecordRequest:
    """RECORD FILE's arguments read the way res_agi.c's handle_recordfile reads them."""

    path: str  # `file.format`
    escape: str
    timeout_ms: int  # < 0: no limit
    offset: int  # the offset argument as given (0 when absent)
    beep: bool
    silence_ms: int  # <= 0: no silence detection

    @classmethod
    def parse(cls, args: list[str]) -> RecordRequest:
        """`args` follow the verb (res_agi's argv[2:]); ValueError is its RESULT_SHOWUSAGE.

        As in res_agi.c: the timeout is sscanf("%d"); `s=` is looked for in the
        first of the three optional words that contains an `s` (then atoi,
        seconds); the first optional word is the offset when sscanf("%ld")
        reads a number there, and any first or second optional word that is
        neither a number (first) nor contains `=` asks for the beep, so
        `BEEP`, `beep` or `x` all do.
        """
        if len(args) < 4:
            raise ValueError("RECORD FILE needs file, format, escape digits and timeout")
        timeout_ms = leading_integer(args[3])
        if timeout_ms is None:
            raise ValueError(f"timeout {args[3]!r} is not a number")
        extra = args[4:7]
        silence_ms = 0
        marked = next((word[word.index("s") :] for word in extra if "s" in word), "")
        if len(marked) > 2 and marked.startswith("s="):
            silence_ms = (leading_integer(marked[2:]) or 0) * 1000
        offset = 0
        beep = False
        if extra:
            number = leading_integer(extra[0])
            if number is not None:
                offset = number
            elif "=" not in extra[0]:
                beep = True
        if len(extra) > 1 and "=" not in extra[1]:
            beep = True
        return cls(f"{args[0]}.{args[1]}", args[2], timeout_ms, offset, beep, silence_ms)


def split_command(line: str) -> list[str]:
    """Split like res_agi's parse_args: spaces separate, double quotes group, \\ escapes."""
    try:
        lexer = shlex.shlex(line, posix=True)
        lexer.whitespace_split = True
        lexer.quotes = '"'
        lexer.escape = "\\"
        lexer.commenters = ""
        return list(lexer)
    except ValueError:
        return line.split()


# Command verbs with their word counts, longest first so "GET FULL VARIABLE" wins.
_VERBS = sorted(
    [
        "answer",
        "asyncagi break",
        "channel status",
        "control stream file",
        "database del",
        "database deltree",
        "database get",
        "database put",
        "exec",
        "get data",
        "get full variable",
        "get option",
        "get variable",
        "hangup",
        "noop",
        "receive char",
        "receive text",
        "record file",
        "say alpha",
        "say date",
        "say datetime",
        "say digits",
        "say number",
        "say phonetic",
        "say time",
        "send image",
        "send text",
        "set autohangup",
        "set callerid",
        "set context",
        "set extension",
        "set music",
        "set priority",
        "set variable",
        "stream file",
        "tdd mode",
        "verbose",
        "wait for digit",
        "speech create",
        "gosub",
    ],
    key=lambda v: -len(v.split()),
)


class AgiSession:
    """The command engine shared by FastAGI and async AGI."""

    kind = "fast"

    def __init__(self, pbx: Pbx, chan: Channel, exec_app: ExecApp) -> None:
        self.pbx = pbx
        self.chan = chan
        self.exec_app = exec_app
        self.dead = False  # hung up, redirected or masqueraded
        self.surrogate = False  # masqueraded: the session runs on a hidden channel
        self.pending = False
        self.notified = False
        self._notice: asyncio.TimerHandle | None = None

    # -- interruption ------------------------------------------------------

    def channel_interrupted(self) -> None:
        """Hangup, redirect or bridge: the AGI goes dead (result=-1, then HANGUP)."""
        if self.dead:
            return
        self.dead = True
        if self.pending:
            self._notice = self.pbx.clock.call_later(
                self.pbx.config.agi_hangup_notice_delay, self.send_hangup_notice
            )
        else:
            self.send_hangup_notice()

    def masquerade(self) -> None:
        """The real channel was taken into a bridge; keep talking on a hidden surrogate."""
        self.surrogate = True
        self.channel_interrupted()
        self.chan.wake()

    def send_hangup_notice(self) -> None:
        self._notice = None
        if not self.notified and self.write_line("HANGUP"):
            self.notified = True

    def cancel_notice(self) -> None:
        if self._notice is not None:
            self._notice.cancel()
            self._notice = None

    def write_line(self, line: str) -> bool:
        """Send a line to the AGI peer; False when there is nowhere to send it."""
        raise NotImplementedError

    # -- AMI mirror --------------------------------------------------------

    def emit(self, name: str, extra: ev.Headers, privilege: str = ev.AGI) -> None:
        if not self.surrogate:
            self.pbx.emit_chan(name, self.chan, extra, privilege)

    def set_var(self, name: str, value: str) -> None:
        if self.surrogate:
            self.chan.vars[name] = value
        else:
            self.pbx.set_var(self.chan, name, value)

    # -- waiting -----------------------------------------------------------

    async def wait(self, limit: float | None) -> Signal:
        if self.dead:
            return Signal(Sig.WAKE)
        return await self.chan.receive(limit)

    async def play(self, seconds: float | None, escape: str) -> tuple[str, str | None, float]:
        """Play for `seconds` (None: until a digit or hang-up).

        Returns ("done"|"dtmf"|"hangup", digit, emulated seconds played).
        """
        clock = self.pbx.clock
        start = clock.elapsed()
        self.chan.want_dtmf = bool(escape)
        try:
            while True:
                played = clock.elapsed() - start
                if self.dead:
                    return "hangup", None, played
                if seconds is not None and played >= seconds:
                    return "done", None, seconds
                signal = await self.wait(None if seconds is None else seconds - played)
                if signal.kind is Sig.TIMEOUT:
                    continue
                if signal.kind is Sig.DTMF and signal.value in escape:
                    return "dtmf", str(signal.value), clock.elapsed() - start
        finally:
            self.chan.want_dtmf = False

    async def wait_digit(self, limit: float | None) -> tuple[str, str | None]:
        """Wait for any DTMF digit: ("dtmf", d), ("timeout", None) or ("hangup", None)."""
        clock = self.pbx.clock
        deadline = None if limit is None else clock.elapsed() + limit
        self.chan.want_dtmf = True
        try:
            while True:
                if self.dead:
                    return "hangup", None
                remaining = None if deadline is None else deadline - clock.elapsed()
                if remaining is not None and remaining <= 0:
                    return "timeout", None
                signal = await self.wait(remaining)
                if signal.kind is Sig.DTMF:
                    return "dtmf", str(signal.value)
        finally:
            self.chan.want_dtmf = False

    # -- dispatch ------------------------------------------------------------

    async def execute(self, line: str) -> Reply:
        """Run one command line; publishes AGIExecStart/End and returns the reply."""
        command_id = str(random.randint(1, 2147483647))
        self.emit("AGIExecStart", [("CommandId", command_id), ("Command", line)])
        words = split_command(line)
        lowered = [w.lower() for w in words]
        verb = ""
        for candidate in _VERBS:
            size = len(candidate.split())
            if " ".join(lowered[:size]) == candidate:
                verb = candidate
                break
        args = words[len(verb.split()) :] if verb else []
        handler = _HANDLERS.get(verb)
        self.pending = True
        try:
            if handler is None:
                reply = Reply(f"510 {INVALID_MESSAGE}", 510, 510, INVALID_MESSAGE)
            elif self.dead and verb not in DEAD_SAFE:
                reply = Reply(f"511 {DEAD_MESSAGE}", 511, 511, DEAD_MESSAGE)
            else:
                try:
                    reply = await handler(self, args)
                except (IndexError, ValueError):
                    reply = Reply(
                        "520-Invalid command syntax.  Proper usage follows:\n"
                        f"Usage: {verb.upper()}\n520 End of proper usage.",
                        520,
                        520,
                        "Usage",
                    )
        finally:
            self.pending = False
        self.emit(
            "AGIExecEnd",
            [
                ("CommandId", command_id),
                ("Command", line),
                ("ResultCode", str(reply.ami_code)),
                ("Result", reply.ami_result),
            ],
        )
        return reply

    # -- commands --------------------------------------------------------------

    async def cmd_answer(self, args: list[str]) -> Reply:
        if not self.chan.up:
            self.pbx.answer(self.chan)
        return Reply("200 result=0")

    async def cmd_hangup(self, args: list[str]) -> Reply:
        if args:
            target = self.pbx.find_channel(args[0])
            if target is None:
                return Reply("200 result=-1")
            self.pbx.soft_hangup(target, 32)
            return Reply("200 result=1")
        self.pbx.soft_hangup(self.chan, 32)
        return Reply("200 result=1")

    async def cmd_noop(self, args: list[str]) -> Reply:
        return Reply("200 result=0")

    async def cmd_verbose(self, args: list[str]) -> Reply:
        return Reply("200 result=1")

    async def cmd_get_variable(self, args: list[str]) -> Reply:
        value = read_variable(self.pbx, self.chan, args[0])
        if value is None:
            return Reply("200 result=0")
        return Reply(f"200 result=1 ({value})")

    async def cmd_get_full_variable(self, args: list[str]) -> Reply:
        chan: Channel | None = self.chan
        if len(args) > 1:
            chan = self.pbx.find_channel(args[1])
            if chan is None:
                return Reply("200 result=0")
        return Reply(f"200 result=1 ({substitute(self.pbx, chan, args[0])})")

    async def cmd_set_variable(self, args: list[str]) -> Reply:
        name, value = args[0], args[1] if len(args) > 1 else ""
        upper = name.upper()
        if upper.startswith("CALLERID(") and not self.surrogate:
            field = upper[9:-1].lower()
            num, cname = self.chan.caller_num, self.chan.caller_name
            if field in ("num", "number"):
                num = value
            elif field == "name":
                cname = value
            else:
                num, cname = callerid_split(value)
            self.pbx.set_callerid(self.chan, num, cname)
        elif upper == "CHANNEL(LANGUAGE)" and not self.surrogate:
            # func_channel.c: sets the channel's language (the `Language:` of its events).
            self.chan.language = value
        else:
            self.set_var(name, value)
        return Reply("200 result=1")

    async def cmd_set_music(self, args: list[str]) -> Reply:
        if args[0].lower() == "on":
            self.pbx.moh_start(self.chan, args[1] if len(args) > 1 else "default")
        else:
            self.pbx.moh_stop(self.chan)
        return Reply("200 result=0")

    async def cmd_channel_status(self, args: list[str]) -> Reply:
        chan = self.pbx.find_channel(args[0]) if args else self.chan
        if chan is None:
            return Reply("200 result=-1")
        return Reply(f"200 result={chan.state}")

    async def cmd_set_callerid(self, args: list[str]) -> Reply:
        num, name = callerid_split(args[0])
        self.pbx.set_callerid(self.chan, num, name)
        return Reply("200 result=1")

    async def cmd_set_context(self, args: list[str]) -> Reply:
        self.chan.context = args[0]
        return Reply("200 result=0")

    async def cmd_set_extension(self, args: list[str]) -> Reply:
        self.chan.exten = args[0]
        return Reply("200 result=0")

    async def cmd_set_priority(self, args: list[str]) -> Reply:
        self.chan.priority = int(args[0])
        return Reply("200 result=0")

    async def cmd_set_autohangup(self, args: list[str]) -> Reply:
        seconds = float(args[0])
        if seconds > 0:
            chan = self.chan
            chan.add_timer(self.pbx.clock.call_later(seconds, self.pbx.soft_hangup, chan, 8))
        return Reply("200 result=0")

    async def cmd_database_get(self, args: list[str]) -> Reply:
        value = self.pbx.astdb.get((args[0], args[1]))
        return Reply("200 result=0" if value is None else f"200 result=1 ({value})")

    async def cmd_database_put(self, args: list[str]) -> Reply:
        self.pbx.astdb[(args[0], args[1])] = args[2]
        return Reply("200 result=1")

    async def cmd_database_del(self, args: list[str]) -> Reply:
        found = self.pbx.astdb.pop((args[0], args[1]), None)
        return Reply("200 result=1" if found is not None else "200 result=0")

    async def cmd_database_deltree(self, args: list[str]) -> Reply:
        for key in [k for k in self.pbx.astdb if k[0] == args[0]]:
            del self.pbx.astdb[key]
        return Reply("200 result=1")

    async def cmd_stream_file(self, args: list[str]) -> Reply:
        name = args[0]
        escape = args[1] if len(args) > 1 else ""
        offset = int(args[2]) if len(args) > 2 and args[2] else 0
        return await self._stream(name, escape, offset)

    async def _stream(self, name: str, escape: str, offset: int) -> Reply:
        total = sounds.samples(name)
        offset = min(max(0, offset), total)
        outcome, digit, played = await self.play((total - offset) / sounds.RATE, escape)
        endpos = offset + min(total - offset, int(played * sounds.RATE) // 160 * 160)
        if outcome == "done":
            endpos = total
            self.set_var("PLAYBACKSTATUS", "SUCCESS")
            return Reply(f"200 result=0 endpos={endpos}")
        self.set_var("PLAYBACKSTATUS", "FAILED")
        if outcome == "dtmf" and digit is not None:
            return Reply(f"200 result={ord(digit)} endpos={endpos}")
        return _failure(f"200 result=-1 endpos={endpos}")

    async def cmd_control_stream_file(self, args: list[str]) -> Reply:
        return await self.cmd_stream_file(args)

    async def cmd_get_option(self, args: list[str]) -> Reply:
        name, escape = args[0], args[1] if len(args) > 1 else ""
        timeout = float(args[2]) / 1000 if len(args) > 2 else 5.0
        reply = await self._stream(name, escape, 0)
        if reply.line.startswith("200 result=0 ") and not self.dead:
            outcome, digit = await self.wait_digit(timeout if timeout > 0 else None)
            endpos = reply.line.rsplit("=", 1)[1]
            if outcome == "dtmf" and digit is not None and digit in escape:
                return Reply(f"200 result={ord(digit)} endpos={endpos}")
            if outcome == "hangup":
                return _failure(f"200 result=-1 endpos={endpos}")
        return reply

    async def cmd_get_data(self, args: list[str]) -> Reply:
        prompt = args[0]
        timeout = float(args[1]) / 1000 if len(args) > 1 and args[1] else 0.0
        maxdigits = int(args[2]) if len(args) > 2 and args[2] else 1024
        first_timeout = timeout if timeout > 0 else 6.0
        between = timeout if timeout > 0 else 2.0
        digits = ""
        outcome, digit, _ = await self.play(sounds.seconds(prompt), ALL_DIGITS)
        if outcome == "hangup":
            return Reply("200 result=-1")
        if outcome == "dtmf" and digit is not None:
            if digit == "#":
                return Reply("200 result=")
            digits = digit
        wait = first_timeout if not digits else between
        while len(digits) < maxdigits:
            outcome, digit = await self.wait_digit(wait)
            if outcome == "hangup":
                return Reply("200 result=-1")
            if outcome == "timeout" or digit is None:
                return Reply(f"200 result={digits} (timeout)")
            if digit == "#":
                break
            digits += digit
            wait = between
        return Reply(f"200 result={digits}")

    async def cmd_wait_for_digit(self, args: list[str]) -> Reply:
        milliseconds = float(args[0])
        outcome, digit = await self.wait_digit(None if milliseconds < 0 else milliseconds / 1000)
        if outcome == "hangup":
            return _failure("200 result=-1")
        if outcome == "dtmf" and digit is not None:
            return Reply(f"200 result={ord(digit)}")
        return Reply("200 result=0")

    async def _say_files(self, files: list[str], escape: str) -> Reply:
        for name in files:
            outcome, digit, _ = await self.play(sounds.seconds(name), escape)
            if outcome == "hangup":
                return _failure("200 result=-1")
            if outcome == "dtmf" and digit is not None:
                return Reply(f"200 result={ord(digit)}")
        return Reply("200 result=0")

    async def cmd_say_digits(self, args: list[str]) -> Reply:
        escape = args[1] if len(args) > 1 else ""
        return await self._say_files([sounds.digit_file(c) for c in args[0]], escape)

    async def cmd_say_alpha(self, args: list[str]) -> Reply:
        escape = args[1] if len(args) > 1 else ""
        files = [
            sounds.digit_file(c) if c in ALL_DIGITS else f"letters/{c.lower()}" for c in args[0]
        ]
        return await self._say_files(files, escape)

    async def cmd_say_number(self, args: list[str]) -> Reply:
        escape = args[1] if len(args) > 1 else ""
        return await self._say_files(sounds.number_files(int(args[0])), escape)

    async def cmd_say_date(self, args: list[str]) -> Reply:
        """SAY DATE <epoch> <escape>: weekday, month, day, year as say.c's English says it
        (the PBX's zone taken as UTC here; no transcript)."""
        escape = args[1] if len(args) > 1 else ""
        moment = time.gmtime(int(args[0]))
        files = [f"digits/day-{(moment.tm_wday + 1) % 7}", f"digits/mon-{moment.tm_mon - 1}"]
        files += sounds.number_files(moment.tm_mday) + sounds.number_files(moment.tm_year)
        return await self._say_files(files, escape)

    async def cmd_record_file(self, args: list[str]) -> Reply:
        """RECORD FILE <file> <format> <escape digits> <timeout ms> [offset] [BEEP] [s=secs].

        No transcript records RECORD FILE: this follows res_agi.c's
        handle_recordfile (Asterisk 22); see `RecordRequest` for the argument
        quirks. Nothing is written: the caller's audio is taken to be 20 ms
        voice frames of silence from the start of the recording (even for a
        caller modelled without RTP), the file only exists as a length per
        emulator so that an offset can append to an earlier recording.

        - BEEP: ast_streamfile + ast_waitstream(escape digits) first; an escape
          digit or a hang-up during the beep answers `200 result=<ascii>|-1
          (randomerror) endpos=<offset argument>` (AGIExecEnd Success).
        - An escape digit (at the end of the key, like every emulated digit):
          the file is rewound 200 ms (ast_stream_rewind(fs, 200)), so
          `200 result=<ascii> (dtmf) endpos=<frames * 160 - 1600>`. Voice
          frames Asterisk drops while an RFC 4733 key is held are counted.
        - Timeout (-1: none; 0: ends at once): `200 result=0 (timeout)
          endpos=<offset + whole 20 ms frames>`.
        - s=N: the DSP counts N s of silence only with the frame after them,
          the file is rewound N-1 s and the reply is the same `(timeout)` line,
          but `result=` is the last ast_waitfor() return, the ms left: the
          timeout minus the time recorded, or 99980 without a timeout (it
          waits in 100000 ms slices). For the silent caller that is
          `endpos=8160` (1.02 s kept). Digits are out of band (RFC 4733 / SIP
          INFO), so they do not break the silence.
        - Hang-up (or redirect/bridge): `200 result=-1 (hangup)
          endpos=<offset + frames>` (AGIExecEnd Failure), then the HANGUP line.
        `endpos` is the offset argument as given while no frame has been
        written (ms 0, a hang-up before the first frame).
        """
        request = RecordRequest.parse(args)
        if request.beep:
            outcome, digit, _ = await self.play(sounds.seconds("beep"), request.escape)
            if outcome != "done":
                code = ord(digit) if digit is not None else -1
                return Reply(f"200 result={code} (randomerror) endpos={request.offset}")
        # ast_writefile truncates unless an offset is given; ast_seekstream then
        # stops at the end of what the file already holds.
        files = _recordings.setdefault(self.pbx, {})
        base = min(max(request.offset, 0), files.get(request.path, 0)) if request.offset else 0
        limit_ms = request.timeout_ms if request.timeout_ms >= 0 else None
        silence_ends = False
        if request.silence_ms > 0:
            at_ms = (request.silence_ms // FRAME_MS + 1) * FRAME_MS
            if limit_ms is None or at_ms <= limit_ms:
                limit_ms, silence_ends = at_ms, True
        outcome, digit, played = await self.play(
            None if limit_ms is None else limit_ms / 1000, request.escape
        )
        frames = int(played * 1000 / FRAME_MS + 1e-6)
        if limit_ms is not None:
            frames = min(frames, limit_ms // FRAME_MS)
        position = base + frames * FRAME_SAMPLES
        # res_agi's sample_offset: the argument until a frame is written, then the position.
        sample_offset = position if frames else request.offset
        if outcome == "dtmf" and digit is not None:
            files[request.path] = endpos = max(0, position - DTMF_REWIND_SAMPLES)
            return Reply(f"200 result={ord(digit)} (dtmf) endpos={endpos}")
        if outcome == "hangup":
            files[request.path] = position
            return _failure(f"200 result=-1 (hangup) endpos={sample_offset}")
        if silence_ends:
            assert limit_ms is not None
            kept = max(0, position - (request.silence_ms - 1000) * sounds.RATE // 1000)
            files[request.path] = kept
            if request.timeout_ms >= 0:
                left = request.timeout_ms - limit_ms
            else:
                left = WAITFOR_SLICE_MS - FRAME_MS  # the slice minus the wait for the frame
            return Reply(f"200 result={left} (timeout) endpos={kept}")
        files[request.path] = position
        return Reply(f"200 result=0 (timeout) endpos={sample_offset}")

    async def cmd_exec(self, args: list[str]) -> Reply:
        app = args[0]
        data = " ".join(args[1:])
        if app.lower() in ("playback", "background") and self.dead:
            self.set_var("PLAYBACKSTATUS", "FAILED")
            return Reply("200 result=0")
        if self.surrogate:
            return Reply("200 result=-1")
        result = await self.exec_app(self.chan, app, data)
        if result == -2:
            return Reply("200 result=-2", ami_code=-1, ami_result="Failure")
        if result < 0:
            return _failure(f"200 result={result}")
        return Reply(f"200 result={result}")

    async def cmd_asyncagi_break(self, args: list[str]) -> Reply:
        return Reply("200 result=0", end_session=self.kind == "async")


_HANDLERS: dict[str, Callable[[AgiSession, list[str]], Awaitable[Reply]]] = {
    "answer": AgiSession.cmd_answer,
    "asyncagi break": AgiSession.cmd_asyncagi_break,
    "channel status": AgiSession.cmd_channel_status,
    "control stream file": AgiSession.cmd_control_stream_file,
    "database del": AgiSession.cmd_database_del,
    "database deltree": AgiSession.cmd_database_deltree,
    "database get": AgiSession.cmd_database_get,
    "database put": AgiSession.cmd_database_put,
    "exec": AgiSession.cmd_exec,
    "get data": AgiSession.cmd_get_data,
    "get full variable": AgiSession.cmd_get_full_variable,
    "get option": AgiSession.cmd_get_option,
    "get variable": AgiSession.cmd_get_variable,
    "hangup": AgiSession.cmd_hangup,
    "noop": AgiSession.cmd_noop,
    "record file": AgiSession.cmd_record_file,
    "say alpha": AgiSession.cmd_say_alpha,
    "say digits": AgiSession.cmd_say_digits,
    "say number": AgiSession.cmd_say_number,
    "say date": AgiSession.cmd_say_date,
    "set autohangup": AgiSession.cmd_set_autohangup,
    "set callerid": AgiSession.cmd_set_callerid,
    "set context": AgiSession.cmd_set_context,
    "set extension": AgiSession.cmd_set_extension,
    "set music": AgiSession.cmd_set_music,
    "set priority": AgiSession.cmd_set_priority,
    "set variable": AgiSession.cmd_set_variable,
    "stream file": AgiSession.cmd_stream_file,
    "verbose": AgiSession.cmd_verbose,
    "wait for digit": AgiSession.cmd_wait_for_digit,
}


def environment(
    chan: Channel, request: str, args: list[str], thread_id: int, network_script: str | None
) -> list[tuple[str, str]]:
    """The agi_* variables in Asterisk's order (agi_network lines only for FastAGI)."""
    pairs: list[tuple[str, str]] = []
    if network_script is not None:
        pairs += [("agi_network", "yes"), ("agi_network_script", network_script)]
    pairs += [
        ("agi_request", request),
        ("agi_channel", chan.name),
        ("agi_language", chan.language),
        ("agi_type", chan.tech),
        ("agi_uniqueid", chan.uniqueid),
        ("agi_version", ASTERISK_VERSION),
        ("agi_callerid", chan.caller_num or "unknown"),
        ("agi_calleridname", chan.caller_name or "unknown"),
        ("agi_callingpres", "0"),
        ("agi_callingani2", "0"),
        ("agi_callington", "0"),
        ("agi_callingtns", "0"),
        ("agi_dnid", chan.dnid or "unknown"),
        ("agi_rdnis", "unknown"),
        ("agi_context", chan.context),
        ("agi_extension", chan.exten),
        ("agi_priority", str(chan.priority)),
        ("agi_enhanced", "0.0"),
        ("agi_accountcode", chan.accountcode),
        ("agi_threadid", str(thread_id)),
    ]
    pairs += [(f"agi_arg_{n}", value) for n, value in enumerate(args, start=1)]
    return pairs


class FastAgiSession(AgiSession):
    """AGI(agi://host:port/script,...): a TCP connection to the CTI's FastAGI server."""

    def __init__(
        self, pbx: Pbx, chan: Channel, exec_app: ExecApp, url: str, args: list[str], thread_id: int
    ) -> None:
        super().__init__(pbx, chan, exec_app)
        self.url = url
        self.args = args
        self.thread_id = thread_id
        self._writer: asyncio.StreamWriter | None = None

    def write_line(self, line: str) -> bool:
        writer = self._writer
        if writer is None or writer.is_closing():
            return False
        writer.write((line + "\n").encode("utf-8"))
        return True

    async def run(self) -> str:
        """Run the session; returns AGISTATUS (SUCCESS, FAILURE or HANGUP)."""
        parts = urlsplit(self.url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 4573
        script = self.url.split("/", 3)[3] if self.url.count("/") >= 3 else ""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port),
                self.pbx.config.agi_connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            log.warning("FastAGI %s unreachable for %s: %s", self.url, self.chan.name, exc)
            return "FAILURE"
        self._writer = writer
        self.chan.agi = self
        try:
            block = "".join(
                f"{k}: {v}\n"
                for k, v in environment(self.chan, self.url, self.args, self.thread_id, script)
            )
            writer.write((block + "\n").encode("utf-8"))
            if self.dead and not self.notified:
                # Hung up while connecting: nothing pending, say so at once.
                self.send_hangup_notice()
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    continue
                reply = await self.execute(line)
                self.write_line(reply.line)
        except (ConnectionError, OSError) as exc:
            log.info("FastAGI connection of %s lost: %s", self.chan.name, exc)
        finally:
            if self.chan.agi is self:
                self.chan.agi = None
            self.cancel_notice()
            if self.dead:
                # The server closed (or half-closed): one more HANGUP, then close.
                self.notified = False
                self.send_hangup_notice()
            self._writer = None
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        return "HANGUP" if self.dead else "SUCCESS"


def url_encode(text: str) -> str:
    """ast_uri_encode with the HTTP spec: unreserved characters and ()!*' stay."""
    return quote(text, safe="-_.!~*'()")


class AsyncAgiSession(AgiSession):
    """AGI(agi:async): commands arrive with the AMI action `AGI`, results as AsyncAGIExec."""

    kind = "async"
    POLL = 0.1  # res_agi checks its queue on a 100 ms ast_waitfor when idle

    def __init__(
        self, pbx: Pbx, chan: Channel, exec_app: ExecApp, args: list[str], thread_id: int
    ) -> None:
        super().__init__(pbx, chan, exec_app)
        self.args = args
        self.thread_id = thread_id
        self.queue: deque[tuple[str, str | None]] = deque()
        self._started = 0.0

    def write_line(self, line: str) -> bool:
        # Async AGI has no socket: a hangup shows as result=-1 and AsyncAGIEnd only.
        return False

    def enqueue(self, command: str, command_id: str | None) -> None:
        self.queue.append((command, command_id))
        if not self.pending:
            # res_agi looks at its queue every 100 ms while idle: wake at the
            # next such tick instead of polling.
            clock = self.pbx.clock
            delay = self.POLL - (clock.elapsed() - self._started) % self.POLL
            self.chan.add_timer(clock.call_later(delay, self.chan.wake))

    async def run(self) -> str:
        self.chan.agi = self
        self._started = self.pbx.clock.elapsed()
        env = "".join(
            f"{k}: {v}\n"
            for k, v in environment(self.chan, "async", self.args, self.thread_id, None)
        )
        self.emit("AsyncAGIStart", [("Env", url_encode(env + "\n"))])
        status = "SUCCESS"
        try:
            while True:
                if self.dead:
                    status = "HANGUP"
                    break
                if not self.queue:
                    await self.chan.receive(None)
                    continue
                command, command_id = self.queue.popleft()
                reply = await self.execute(command)
                extra = [("Result", url_encode(reply.line + "\n"))]
                if command_id:
                    extra.append(("CommandId", command_id))
                self.emit("AsyncAGIExec", extra)
                if reply.end_session:
                    break
        finally:
            if self.chan.agi is self:
                self.chan.agi = None
        self.emit("AsyncAGIEnd", [])
        return status
