"""FastAGI session: one connection from Asterisk, its commands, and how a hang-up shows.

A background reader owns the socket's read side for the whole session: it
hands each reply to the command waiting for it and notices the `HANGUP` line
Asterisk writes on its own (after a hang-up or redirect, even while no command
is pending). Commands go one at a time; a caller hang-up in any of its forms
(`200 result=-1` on a channel command, `HANGUP`, `511`, EOF) becomes AgiHangup.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ctiserver.asterisk.agi.codec import (
    DEAD_CHANNEL_CODE,
    HANGUP_LINE,
    AgiEnvironment,
    AgiProtocolError,
    AgiResponse,
    encode_command,
    is_usage_end,
    is_usage_start,
    parse_environment,
    parse_response,
    usage_response,
)

log = logging.getLogger(__name__)

AgiHandler = Callable[["AgiSession"], Awaitable[object]]

# 22 lines in Asterisk 22 plus agi_arg_N; far more is not Asterisk talking.
MAX_ENVIRONMENT_LINES = 256
MAX_USAGE_LINES = 500

# Commands whose `200 result=-1` means the channel went away (hang-up, AMI
# Redirect, bridge masquerade). Recorded for STREAM FILE, GET DATA and WAIT FOR
# DIGIT (03a-c, 04-07); the others return -1 on hang-up per res_agi.c (no
# transcript). Elsewhere -1 means something else (CHANNEL STATUS of an unknown
# channel, GOSUB label not found).
_HANGUP_ON_MINUS_ONE = (
    ("ANSWER",),
    ("STREAM", "FILE"),
    ("CONTROL", "STREAM", "FILE"),
    ("GET", "DATA"),
    ("GET", "OPTION"),
    ("WAIT", "FOR", "DIGIT"),
    ("SAY",),
    ("RECORD", "FILE"),
    ("RECEIVE", "CHAR"),
    ("EXEC",),
)


class AgiError(Exception):
    """Base of the FastAGI session errors."""


class AgiHangup(AgiError):
    """The channel has left this AGI session.

    This is what a caller hang-up looks like, but an AMI Redirect and an AMI
    Bridge (masquerade) look byte for byte the same on the socket (INDEX
    behaviours 3 and 4): the call may well live on. Only the AMI side (our own
    Redirect/Bridge, or the absence of a Hangup event) can tell them apart.
    Either way the handler should return promptly: the dialplan moves on only
    once the session is closed (04b).

    Per res_agi.c (no transcript), STREAM FILE of a missing sound file also
    answers `200 result=-1 endpos=0`; it is reported here too.
    `response` is the reply that showed it (None for a HANGUP line or EOF).
    """

    def __init__(self, reason: str, response: AgiResponse | None = None) -> None:
        super().__init__(reason)
        self.response = response


class AgiTimeout(AgiError):
    """A command got no reply in time. Its late reply, if any, is discarded."""

    def __init__(self, command: str, timeout: float) -> None:
        super().__init__(f"no reply to {command!r} within {timeout:g} s")
        self.command = command
        self.timeout = timeout


class AgiCommandError(AgiError):
    """Asterisk refused a command (510 unknown, 520 usage, ...) or it failed."""

    def __init__(self, command: str, response: AgiResponse) -> None:
        detail = response.message or f"result={response.result}"
        if response.data is not None:
            detail += f" ({response.data})"
        super().__init__(f"{command!r} -> {response.code} {detail}")
        self.command = command
        self.response = response


def _hangup_reply(words: tuple[str, ...], response: AgiResponse) -> bool:
    if response.code != 200 or response.result != "-1":
        return False
    tokens = [*words[0].upper().split(), *(w.upper() for w in words[1:3])]
    if tokens[:2] == ["RECORD", "FILE"] and response.data == "writefile":
        return False  # could not create the file: a real error, not a hang-up
    return any(tuple(tokens[: len(verb)]) == verb for verb in _HANGUP_ON_MINUS_ONE)


def _number(words: tuple[str, ...] | list[str], response: AgiResponse) -> int:
    value = response.result_int
    if value is None:
        raise AgiCommandError(" ".join(words), response)
    return value


def _digit(words: tuple[str, ...] | list[str], response: AgiResponse) -> str | None:
    """`result=49` -> '1'; `result=0` -> None (no key pressed)."""
    code = _number(words, response)
    return chr(code) if 0 < code < 0x110000 else None


class AgiSession:
    """One FastAGI connection. Handlers get it as their only argument.

    `env` is the `agi_*` environment (script, arguments, channel, ...).
    `command_timeout` bounds commands that Asterisk answers at once;
    media commands (playback, prompts, EXEC) default to `media_timeout`.
    Every helper takes `reply_timeout=` (seconds) to override.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        command_timeout: float = 60.0,
        media_timeout: float = 3600.0,
        drain_timeout: float = 2.0,
    ) -> None:
        self.env = AgiEnvironment({})
        self.command_timeout = command_timeout
        self.media_timeout = media_timeout
        self.drain_timeout = drain_timeout
        self.hangup_reason = ""
        self._reader = reader
        self._writer = writer
        self._pending: deque[asyncio.Future[AgiResponse]] = deque()
        self._lock = asyncio.Lock()
        self._hangup = asyncio.Event()
        self._eof = False
        self._failure: AgiProtocolError | None = None
        self._closing = False
        self._reader_task: asyncio.Task[None] | None = None
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def __repr__(self) -> str:
        return f"<AgiSession {self.env.script or '?'} {self.env.channel or self.peer}>"

    # -- state -----------------------------------------------------------

    @property
    def hung_up(self) -> bool:
        """Asterisk said the channel left (HANGUP line, result=-1, 511 or EOF)."""
        return self._hangup.is_set()

    @property
    def failure(self) -> AgiProtocolError | None:
        """Set when the peer sent something that is not FastAGI."""
        return self._failure

    async def wait_hangup(self, within: float | None = None) -> bool:
        """Wait until the channel has left; False if `within` seconds passed first."""
        if within is None:
            await self._hangup.wait()
            return True
        try:
            async with asyncio.timeout(within):
                await self._hangup.wait()
        except TimeoutError:
            return False
        return True

    def _note_hangup(self, reason: str) -> None:
        if not self._hangup.is_set():
            self.hangup_reason = reason
            self._hangup.set()
            log.debug("FastAGI %s: channel gone (%s)", self, reason)

    # -- reading ---------------------------------------------------------

    async def _readline(self) -> str | None:
        """One line without its end, or None at EOF (a partial last line is dropped)."""
        try:
            raw = await self._reader.readline()
        except ValueError as exc:  # the StreamReader limit: no line end in sight
            raise AgiProtocolError("line longer than the read limit") from exc
        except ConnectionError:
            return None
        if not raw.endswith(b"\n"):
            return None
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")

    async def read_environment(self, within: float) -> AgiEnvironment:
        """Read the `agi_*` block; AgiProtocolError if it is not one, TimeoutError if late."""
        lines: list[str] = []
        async with asyncio.timeout(within):
            while True:
                line = await self._readline()
                if line is None:
                    raise AgiProtocolError(
                        f"connection closed after {len(lines)} environment lines"
                    )
                if not line:
                    break
                if not line.startswith("agi_"):
                    raise AgiProtocolError(f"not an agi_* environment line: {line[:100]!r}")
                lines.append(line)
                if len(lines) > MAX_ENVIRONMENT_LINES:
                    raise AgiProtocolError(f"more than {MAX_ENVIRONMENT_LINES} environment lines")
        self.env = parse_environment("\n".join(lines))
        return self.env

    def start(self) -> None:
        """Start the background reader (once the environment has been read)."""
        if self._reader_task is None:
            self._reader_task = asyncio.create_task(
                self._read_loop(), name=f"fastagi-reader {self.env.channel or self.peer}"
            )

    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self._readline()
                if line is None:
                    break
                if line == HANGUP_LINE:
                    self._note_hangup("HANGUP line")
                    continue
                if is_usage_start(line):
                    response = await self._read_usage(line)
                else:
                    response = parse_response(line)
                if response.code == 100:
                    # Provisional (GOSUB `100 result=0 Trying...`), the 200 follows;
                    # res_agi.c, no transcript has one.
                    continue
                self._deliver(response)
        except Exception as exc:
            failure = exc if isinstance(exc, AgiProtocolError) else AgiProtocolError(repr(exc))
            self._failure = failure
            log.error(
                "FastAGI %s from %s (script %r): %s; closing the session",
                self.env.channel or "?",
                self.peer,
                self.env.script,
                failure,
                exc_info=not isinstance(exc, AgiProtocolError),
            )
            self._fail_pending(failure)
            return
        self._eof = True
        self._note_hangup("Asterisk closed the connection")
        self._fail_pending(AgiHangup("Asterisk closed the connection"))

    async def _read_usage(self, first: str) -> AgiResponse:
        # No transcript has a 520; the shape follows res_agi.c (see is_usage_end).
        lines = [first]
        while not is_usage_end(lines[-1]):
            line = await self._readline()
            if line is None:
                raise AgiProtocolError("connection closed inside a 520 usage reply")
            lines.append(line)
            if len(lines) > MAX_USAGE_LINES:
                raise AgiProtocolError("520 usage reply without its end line")
        return usage_response(lines)

    def _deliver(self, response: AgiResponse) -> None:
        if not self._pending:
            log.warning("FastAGI %s: reply %r with no command pending; ignored", self, response)
            return
        future = self._pending.popleft()
        if future.done():
            # The command timed out or was cancelled: this is its late reply.
            log.debug("FastAGI %s: late reply %r discarded", self, response)
            return
        future.set_result(response)

    def _fail_pending(self, exc: BaseException) -> None:
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(exc)

    # -- commands --------------------------------------------------------

    async def command(self, *words: str, reply_timeout: float | None = None) -> AgiResponse:
        """Send one command and return its reply.

        `command("STREAM FILE", "beep", "")` sends `STREAM FILE beep ""`.
        Raises AgiHangup when the reply shows the channel left (511, or
        `result=-1` on a channel command; `.response` has the reply),
        AgiTimeout, or AgiProtocolError. Other replies (510, 520, ...) are
        returned as they are; the typed helpers raise AgiCommandError for them.
        """
        if not words:
            raise ValueError("command() needs at least the command verb")
        line = encode_command(*words)
        name = line.decode("utf-8").rstrip("\n")
        limit = self.command_timeout if reply_timeout is None else reply_timeout
        async with self._lock:
            if self._failure is not None:
                raise AgiProtocolError(f"session unusable: {self._failure}")
            if self._closing:
                raise AgiError(f"{name!r}: the session is closed")
            if self._eof:
                raise AgiHangup(f"{name!r}: Asterisk closed the connection")
            future: asyncio.Future[AgiResponse] = asyncio.get_running_loop().create_future()
            self._pending.append(future)
            try:
                async with asyncio.timeout(limit):
                    self._writer.write(line)
                    await self._writer.drain()
                    response = await future
            except TimeoutError:
                future.cancel()  # keeps its place in the queue; the reader drops its reply
                raise AgiTimeout(name, limit) from None
            except ConnectionError as exc:
                future.cancel()
                self._note_hangup("connection lost")
                raise AgiHangup(f"{name!r}: connection lost ({exc})") from exc
        if response.code == DEAD_CHANNEL_CODE:
            self._note_hangup(f"511 to {name}")
            raise AgiHangup(f"{name!r}: dead channel (511)", response)
        if _hangup_reply(words, response):
            self._note_hangup(f"result=-1 to {name}")
            raise AgiHangup(f"{name!r}: channel gone (result=-1)", response)
        return response

    async def _ok(self, *words: str, reply_timeout: float | None = None) -> AgiResponse:
        response = await self.command(*words, reply_timeout=reply_timeout)
        if response.code != 200:
            raise AgiCommandError(" ".join(words), response)
        return response

    def _media(self, reply_timeout: float | None) -> float:
        return self.media_timeout if reply_timeout is None else reply_timeout

    def _waiting(self, timeout_ms: int | None, reply_timeout: float | None) -> float:
        """A bound for a command that waits up to `timeout_ms` for the caller."""
        if reply_timeout is not None:
            return reply_timeout
        if timeout_ms is None or timeout_ms < 0:
            return self.media_timeout
        return timeout_ms / 1000 + self.command_timeout

    async def answer(self) -> None:
        await self._ok("ANSWER")

    async def hangup(self, channel: str | None = None) -> None:
        """Hang up this channel (or another by name). Asterisk then sends `HANGUP` (02)."""
        words = ("HANGUP", channel) if channel else ("HANGUP",)
        response = await self._ok(*words)
        if response.result != "1":
            raise AgiCommandError(" ".join(words), response)

    async def stream_file(
        self,
        file: str,
        escape_digits: str = "",
        *,
        offset: int | None = None,
        reply_timeout: float | None = None,
    ) -> tuple[str | None, int | None]:
        """Play a file: (key that interrupted it or None, sample offset it stopped at)."""
        words = ["STREAM FILE", file, escape_digits]
        if offset is not None:
            words.append(str(offset))
        response = await self._ok(*words, reply_timeout=self._media(reply_timeout))
        return _digit(words, response), response.endpos

    async def get_data(
        self,
        file: str,
        timeout_ms: int | None = None,
        max_digits: int | None = None,
        *,
        reply_timeout: float | None = None,
    ) -> str | None:
        """Play a prompt and collect digits: '1234', or None when nothing was keyed.

        On a timeout after some digits Asterisk answers `result=12 (timeout)`
        (res_agi.c; no transcript has it): those digits are returned.
        """
        words = ["GET DATA", file]
        if timeout_ms is not None or max_digits is not None:
            words.append(str(timeout_ms if timeout_ms is not None else 0))
        if max_digits is not None:
            words.append(str(max_digits))
        response = await self._ok(*words, reply_timeout=self._media(reply_timeout))
        return response.result or None

    async def wait_for_digit(
        self, timeout_ms: int = -1, *, reply_timeout: float | None = None
    ) -> str | None:
        """Wait for one key ('5', '#') or None after `timeout_ms` (-1: forever)."""
        words = ("WAIT FOR DIGIT", str(timeout_ms))
        response = await self._ok(*words, reply_timeout=self._waiting(timeout_ms, reply_timeout))
        return _digit(words, response)

    async def say_digits(
        self, digits: str, escape_digits: str = "", *, reply_timeout: float | None = None
    ) -> str | None:
        words = ("SAY DIGITS", digits, escape_digits)
        response = await self._ok(*words, reply_timeout=self._media(reply_timeout))
        return _digit(words, response)

    async def say_number(
        self,
        number: int,
        escape_digits: str = "",
        gender: str | None = None,
        *,
        reply_timeout: float | None = None,
    ) -> str | None:
        """SAY NUMBER (res_agi docs; no transcript): the key that interrupted it or None."""
        words = ["SAY NUMBER", str(number), escape_digits]
        if gender:
            words.append(gender)
        response = await self._ok(*words, reply_timeout=self._media(reply_timeout))
        return _digit(words, response)

    async def say_date(
        self, epoch: int, escape_digits: str = "", *, reply_timeout: float | None = None
    ) -> str | None:
        """SAY DATE (res_agi docs; no transcript): the date of `epoch` in the channel's
        language and the PBX's zone; the key that interrupted it or None."""
        words = ("SAY DATE", str(epoch), escape_digits)
        response = await self._ok(*words, reply_timeout=self._media(reply_timeout))
        return _digit(words, response)

    async def get_variable(self, name: str) -> str | None:
        """A channel variable or function (`CALLERID(num)`); None when unset (`result=0`)."""
        response = await self._ok("GET VARIABLE", name)
        return response.data if response.result == "1" else None

    async def get_full_variable(self, expression: str, channel: str | None = None) -> str | None:
        """Evaluate `${...}` expressions: `${DIALSTATUS}|${HANGUPCAUSE}` -> 'BUSY|17'."""
        words = ["GET FULL VARIABLE", expression]
        if channel:
            words.append(channel)
        response = await self._ok(*words)
        return response.data if response.result == "1" else None

    async def set_variable(self, name: str, value: str) -> None:
        await self._ok("SET VARIABLE", name, value)

    async def exec(self, app: str, *args: str, reply_timeout: float | None = None) -> int:
        """Run a dialplan application; its return value (0 usually).

        res_agi passes a single option string, so `args` are joined with
        commas: exec("Dial", "PJSIP/1001", "20", "t") -> `EXEC Dial PJSIP/1001,20,t`
        (res_agi.c; the transcripts only have `EXEC Playback beep`). An app
        that returns -1 (the channel hung up under it) raises AgiHangup.
        """
        words = ["EXEC", app]
        if args:
            words.append(",".join(args))
        response = await self._ok(*words, reply_timeout=self._media(reply_timeout))
        if response.result == "-2":
            raise AgiCommandError(" ".join(words), response)  # no such application
        return _number(words, response)

    async def set_music(self, on: bool = True, moh_class: str | None = None) -> None:
        """Music on hold on/off (`SET MUSIC ON default`); it plays across later commands."""
        words = ["SET MUSIC", "ON" if on else "OFF"]
        if on and moh_class:
            words.append(moh_class)
        await self._ok(*words)

    async def record_file(
        self,
        file: str,
        format: str = "wav",
        escape_digits: str = "#",
        timeout_ms: int = -1,
        *,
        beep: bool = False,
        silence: int | None = None,
        offset: int | None = None,
        reply_timeout: float | None = None,
    ) -> tuple[str | None, int | None]:
        """Record to `file.format`: (key that ended it or None, samples recorded).

        Argument order and result forms (`(dtmf)`, `(timeout)`, `(hangup)`,
        `(writefile)`) follow res_agi.c; no transcript records RECORD FILE.
        `silence` is in seconds, `timeout_ms` -1 means no limit.
        """
        words = ["RECORD FILE", file, format, escape_digits, str(timeout_ms)]
        if offset is not None:
            words.append(str(offset))
        if beep:
            words.append("BEEP")
        if silence:
            words.append(f"s={silence}")
        response = await self._ok(*words, reply_timeout=self._waiting(timeout_ms, reply_timeout))
        if response.result.startswith("-"):
            raise AgiCommandError(" ".join(words), response)
        # Only `(dtmf)` carries a key; after silence res_agi.c prints the
        # milliseconds left as `result=`, which is no key at all.
        key = _digit(words, response) if response.data == "dtmf" else None
        return key, response.endpos

    async def verbose(self, message: str, level: int = 1) -> None:
        await self._ok("VERBOSE", message, str(level))

    async def channel_status(self, channel: str | None = None) -> int:
        """Channel state number (6 = up); AgiHangup (511) once the caller left (03a)."""
        words = ("CHANNEL STATUS", channel) if channel else ("CHANNEL STATUS",)
        response = await self._ok(*words)
        if response.result == "-1":
            raise AgiCommandError(" ".join(words), response)  # no such channel
        return _number(words, response)

    # -- lifecycle -------------------------------------------------------

    async def run(self, handler: AgiHandler) -> None:
        """Run `handler` on this session, then close it; never raises for handler errors.

        A protocol error from the peer cancels the handler. If this task is
        cancelled (server shutdown) the handler is cancelled too.
        """
        self.start()
        assert self._reader_task is not None
        handler_task = asyncio.create_task(
            self._call(handler), name=f"fastagi-handler {self.env.script} {self.env.channel}"
        )
        try:
            while not handler_task.done():
                waiters: set[asyncio.Future[Any]] = {handler_task}
                if not self._reader_task.done():
                    waiters.add(self._reader_task)
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if self._failure is not None and not handler_task.done():
                    handler_task.cancel()
                    await asyncio.wait({handler_task}, timeout=self.drain_timeout)
                    break
            self._report(handler_task)
        finally:
            if not handler_task.done():
                handler_task.cancel()
                done, _ = await asyncio.wait({handler_task}, timeout=self.drain_timeout)
                if not done:
                    log.warning("FastAGI %s: handler ignores cancellation", self)
            await self.close()

    async def _call(self, handler: AgiHandler) -> None:
        await handler(self)

    def _report(self, task: asyncio.Task[None]) -> None:
        if not task.done() or task.cancelled():
            return  # cancelled after a protocol error, which the reader logged
        exc = task.exception()
        if exc is None:
            log.debug("FastAGI %s: handler done", self)
        elif isinstance(exc, AgiHangup):
            log.info("FastAGI %s: channel left (%s); hang-up or redirect", self, exc)
        elif self._failure is not None and isinstance(exc, AgiProtocolError):
            pass  # the reader logged it
        else:
            log.error(
                "FastAGI handler for script %r on channel %s failed",
                self.env.script,
                self.env.channel,
                exc_info=exc,
            )

    async def close(self) -> None:
        """Half-close, let Asterisk finish (its last `HANGUP`, then EOF), close.

        The half-close is what lets the dialplan continue after a hang-up or a
        Redirect (04b), so it comes first and at once.
        """
        if self._closing:
            return
        self._closing = True
        writer = self._writer
        task = self._reader_task
        try:
            if not writer.is_closing() and writer.can_write_eof():
                writer.write_eof()
            if task is not None and not task.done():
                await asyncio.wait({task}, timeout=self.drain_timeout)
        except (OSError, RuntimeError):
            pass  # the peer is already gone
        finally:
            # Even when cancelled mid-drain (server shutdown) the socket gets closed.
            if task is not None and not task.done():
                task.cancel()
            writer.close()
            self._fail_pending(AgiError("session closed"))
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self.drain_timeout)
        try:
            async with asyncio.timeout(self.drain_timeout):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            pass
