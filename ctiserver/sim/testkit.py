"""Drive the emulator over real sockets the way the transcript recorder drove Asterisk.

- `AmiProbe`: a tiny AMI client that records every frame it receives.
- `AgiScriptServer`: a FastAGI server running a coroutine per connection
  (`AgiPeer` offers `command()`, `read_line()`, `half_close()`).
- `replay_scenario`: replays a recorded scenario against a fresh emulator:
  each AMI connection sends its recorded actions, each one after the frame
  that preceded it in the recording has arrived (plus the recorded pause);
  each FastAGI connection answers with the recorded commands in the same
  way; phones and callers are set up by the caller of `replay_scenario`.
  The result holds the emulator's frames and FastAGI lines for
  `ctiserver.sim.conformance`.

No dependency on ctiserver's own AMI client or FastAGI server: those are
what the emulator is meant to test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctiserver.sim.clock import Clock
from ctiserver.sim.conformance import (
    BRIDGE_ID,
    CHANNEL_NAME,
    NOT_MODELLED,
    UNIQUEID,
    Frame,
    Roles,
    frames_from_records,
    normalise_frame,
    parse_frame_text,
)
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.idle_clock import IdleClock
from ctiserver.sim.transcript import Record, Scenario

log = logging.getLogger(__name__)

WAIT_LIMIT = 15.0  # real seconds to wait for any one expected frame or line


async def _wait_reader(task: asyncio.Task[None] | None, limit: float) -> None:
    """Wait up to `limit` for a connection's reader task to see EOF (it keeps running)."""
    if task is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), limit)


async def _close_connection(
    writer: asyncio.StreamWriter | None, task: asyncio.Task[None] | None
) -> None:
    """Close the socket (bounded wait), then cancel and reap its reader task."""
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class AmiProbe:
    """A raw AMI connection that keeps every received frame (with emulated time)."""

    def __init__(
        self, clock: Clock, shared: Roles | None = None, *, signatures: bool = False
    ) -> None:
        self.clock = clock
        self.shared = shared
        self.track = signatures
        self.frames: list[Frame] = []
        self.banner = ""
        self.closed = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._roles = Roles()
        self.signatures: Counter[tuple[str, ...]] = Counter()

    async def connect(self, host: str, port: int) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), WAIT_LIMIT
        )
        self._task = asyncio.get_running_loop().create_task(self._read(), name="ami probe")

    async def _read(self) -> None:
        assert self._reader is not None
        buffer = b""
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                buffer += data
                if not self.banner and b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    self.banner = line.decode()
                    self._append(Frame(self.clock.elapsed(), (), banner=self.banner))
                while b"\r\n\r\n" in buffer:
                    raw, buffer = buffer.split(b"\r\n\r\n", 1)
                    text = raw.decode("utf-8", "replace")
                    self._append(Frame(self.clock.elapsed(), parse_frame_text(text)))
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self._append(Frame(self.clock.elapsed(), (), eof=True))

    def _append(self, frame: Frame) -> None:
        self.frames.append(frame)
        if self.track:
            # Only the replay needs these (normalising costs ~0.3 ms a frame).
            self.signatures[signature(self._roles, frame)] += 1
        if self.shared is not None and frame.headers:
            normalise_frame(self.shared, frame)
        self._changed.set()

    def send(self, text: str) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(text.encode("utf-8"))

    async def action(self, text: str) -> Frame:
        """Send an action (with an ActionID) and return its response frame."""
        action_id = ""
        for line in text.split("\r\n"):
            if line.lower().startswith("actionid:"):
                action_id = line.split(":", 1)[1].strip()
        start = len(self.frames)
        self.send(text if text.endswith("\r\n\r\n") else text.rstrip("\r\n") + "\r\n\r\n")
        return await self.wait_for(
            lambda f: not f.is_event and f.get("ActionID") == action_id, start=start
        )

    async def wait_for(
        self, predicate: Callable[[Frame], bool], *, start: int = 0, limit: float = WAIT_LIMIT
    ) -> Frame:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        index = start
        while True:
            while index < len(self.frames):
                frame = self.frames[index]
                index += 1
                if predicate(frame):
                    return frame
            if self.closed:
                raise ConnectionError("AMI connection closed")
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("expected AMI frame did not arrive")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_signature(
        self, wanted: tuple[str, ...], occurrence: int, limit: float = WAIT_LIMIT
    ) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            if self.signatures[wanted] >= occurrence:
                return True
            if self.closed:
                return False
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_closed(self, limit: float = WAIT_LIMIT) -> None:
        await _wait_reader(self._task, limit)

    async def close(self) -> None:
        await _close_connection(self._writer, self._task)


SIGNATURE_HEADERS = (
    "Channel",
    "ChannelStateDesc",
    "Command",
    "Variable",
    "Application",
    "DialStatus",
    "Response",
    "Message",
    "EventList",
    "UserEvent",
    "Digit",
    "Device",
    "State",
)


def signature(roles: Roles, frame: Frame) -> tuple[str, ...]:
    """What identifies a frame as the same moment in two runs."""
    if frame.banner:
        return ("<banner>",)
    if frame.eof:
        return ("<eof>",)
    pairs = dict(normalise_frame(roles, frame))
    return (frame.name, *(f"{k}={pairs.get(k, '')}" for k in SIGNATURE_HEADERS))


# -- FastAGI -------------------------------------------------------------------------


class AgiPeer:
    """The server side of one FastAGI connection (what the CTI's FastAGI server sees)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, clock: Clock
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.clock = clock
        self.environment: dict[str, str] = {}
        self.items: list[str] = []  # env block (one item), then every line, then <EOF>
        self.lines: list[str] = []  # every line as received, env lines included
        self.eof = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            raw = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), WAIT_LIMIT)
        except asyncio.IncompleteReadError:
            self.eof = True
            return
        block = raw.decode("utf-8", "replace").rstrip("\n").split("\n")
        for line in block:
            key, _, value = line.partition(": ")
            self.environment[key] = value
        self.lines.extend(block)
        self.lines.append("")
        self.items.append("\n".join(block))
        self._task = asyncio.get_running_loop().create_task(self._read(), name="agi peer")

    async def _read(self) -> None:
        try:
            while True:
                raw = await self.reader.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(line)
                self.items.append(line)
                self._changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.eof = True
            self.lines.append("<EOF>")
            self._changed.set()

    async def wait_items(self, count: int, limit: float = WAIT_LIMIT) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while len(self.items) < count and not self.eof:
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return len(self.items) >= count

    def send(self, line: str) -> None:
        """Write raw text (a command line must end with a newline)."""
        if not self.writer.is_closing():
            self.writer.write(line.encode("utf-8"))

    async def command(self, line: str, limit: float = WAIT_LIMIT) -> str:
        """Send a command line, return its reply line (HANGUP notices are skipped)."""
        start = len(self.items)
        self.send(line + "\n")
        return await self.reply(start, limit)

    async def reply(self, start: int, limit: float = WAIT_LIMIT) -> str:
        """The first line other than HANGUP received after item `start` ("" at EOF)."""
        index = start
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            while index < len(self.items):
                item = self.items[index]
                index += 1
                if item != "HANGUP":
                    return item
            if self.eof:
                return ""
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("no reply from the emulator")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def half_close(self) -> None:
        if not self.writer.is_closing() and self.writer.can_write_eof():
            self.writer.write_eof()

    async def wait_eof(self, limit: float = WAIT_LIMIT) -> None:
        await _wait_reader(self._task, limit)

    async def close(self) -> None:
        await _close_connection(self.writer, self._task)


AgiHandler = Callable[[AgiPeer], Awaitable[None]]


class AgiScriptServer:
    """A FastAGI server for tests: `handler(peer)` runs for each connection."""

    def __init__(self, clock: Clock, handler: AgiHandler, host: str = "127.0.0.1") -> None:
        self.clock = clock
        self.handler = handler
        self.host = host
        self.port = 0
        self.peers: list[AgiPeer] = []
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = AgiPeer(reader, writer, self.clock)
        self.peers.append(peer)
        try:
            await peer.start()
            await self.handler(peer)
            await peer.wait_eof()
        except Exception:  # a failing script must not kill the server
            log.exception("FastAGI test script failed")
        finally:
            await peer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


# -- replaying a recorded scenario -----------------------------------------------------


@dataclass
class ReplayResult:
    ami: dict[str, list[Frame]] = field(default_factory=dict)
    agi: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


Setup = Sequence[tuple[float, Callable[[AsteriskEmulator], Any]]]


def _is_anchor(frame: Frame) -> bool:
    if frame.eof:
        return False
    if frame.is_event and (frame.name in NOT_MODELLED or frame.name == "DeviceStateChange"):
        return False
    return not (
        frame.is_event
        and frame.name == "VarSet"
        and (frame.get("Variable") or "").startswith("RTPAUDIOQOS")
    )


def _with_md5_key(action: str, probe: AmiProbe, secret: str = "cti") -> str:
    """A recorded MD5 Login carries the key for the recorded challenge: recompute it."""
    if "\r\nKey: " not in action:
        return action
    challenge = ""
    for frame in probe.frames:
        challenge = frame.get("Challenge") or challenge
    key = hashlib.md5((challenge + secret).encode()).hexdigest()
    return re.sub(r"\r\nKey: [0-9a-fA-F]*", f"\r\nKey: {key}", action)


class Timeline:
    """Maps recorded scenario times onto the emulator clock.

    The origin is the moment the first AMI connection got its first answer
    (Login): everything else (phones, callers, further connections) is
    scheduled relative to it, as the recorder did.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ready = asyncio.Event()
        self.origin = 0.0
        self.recorded_origin = 0.0

    def mark(self, recorded_t: float) -> None:
        if not self.ready.is_set():
            self.origin = self.clock.elapsed()
            self.recorded_origin = recorded_t
            self.ready.set()

    async def until(self, recorded_t: float) -> None:
        await asyncio.wait_for(self.ready.wait(), WAIT_LIMIT)
        elapsed = self.clock.elapsed() - self.origin
        await self.clock.sleep(recorded_t - self.recorded_origin - elapsed)


def _first_answer(records: list[Record], sent: Record) -> Frame | None:
    after = records[records.index(sent) + 1 :]
    for frame in frames_from_records(after):
        if frame.headers:
            return frame
    return None


class Translator:
    """Rewrites recorded channel names, Uniqueids and bridge ids into the live ones."""

    def __init__(self, recorded: Roles, live: Roles) -> None:
        self.recorded = recorded
        self.live = live

    def _lookup(self, recorded: dict[str, str], live: dict[str, str], value: str) -> str:
        role = recorded.get(value)
        if role is None:
            return value
        for live_value, live_role in live.items():
            if live_role == role:
                return live_value
        return value

    def __call__(self, text: str) -> str:
        rec, live = self.recorded, self.live
        text = CHANNEL_NAME.sub(lambda m: self._lookup(rec.channels, live.channels, m[0]), text)
        text = BRIDGE_ID.sub(lambda m: self._lookup(rec.bridges, live.bridges, m[0]), text)
        return UNIQUEID.sub(lambda m: self._lookup(rec.uniqueids, live.uniqueids, m[0]), text)


def recorded_roles(scenario: Scenario) -> Roles:
    """Roles over every AMI connection of a scenario, in time order."""
    roles = Roles()
    merged = sorted(
        (r for path in scenario.ami_files for r in scenario.ami(path.name)), key=lambda r: r.t
    )
    for frame in frames_from_records(merged):
        if frame.headers:
            normalise_frame(roles, frame)
    return roles


async def _replay_ami(
    emulator: AsteriskEmulator,
    records: list[Record],
    timeline: Timeline,
    result: ReplayResult,
    file_name: str,
    translate: Translator,
) -> None:
    """Replay one recorded AMI connection.

    Each recorded action is sent once the emulator has produced the frame that
    preceded it in the recording (the "anchor": same event, channel role,
    command/variable/status; its n-th occurrence), then after the recorded
    pause since that frame. Frames whose position is a race in Asterisk
    (DeviceStateChange) or that are not modelled never serve as anchors.
    """
    clock = emulator.clock
    probe = AmiProbe(clock, translate.live, signatures=True)
    if timeline.ready.is_set() or file_name != "ami.jsonl":
        await timeline.until(records[0].t)
    await probe.connect("127.0.0.1", emulator.ami_port)
    roles = Roles()
    seen: list[tuple[tuple[str, ...], float]] = []
    try:
        for record in records:
            if record.incoming:
                frame = (frames_from_records([record]) or [Frame(record.t, ())])[0]
                sig = signature(roles, frame)
                if _is_anchor(frame):
                    seen.append((sig, record.t))
                continue
            if seen:
                anchor, anchor_t = seen[-1]
                occurrence = sum(1 for s, _ in seen if s == anchor)
                if not await probe.wait_signature(anchor, occurrence):
                    result.notes.append(
                        f"{file_name}: {anchor[0]} never came before {record.data[:40]!r}"
                    )
                gap = record.t - anchor_t
                if gap > 0.02:
                    await clock.sleep(gap)
            if record.close:
                break
            probe.send(_with_md5_key(translate(record.data), probe))
            if not timeline.ready.is_set() and file_name == "ami.jsonl":
                # The first answer on the main connection fixes the time origin.
                first = _first_answer(records, record)
                if first is not None:
                    await probe.wait_signature(signature(Roles(), first), 1)
                    timeline.mark(first.t)
        else:
            await probe.wait_closed()
    finally:
        await probe.close()
        result.ami[file_name] = probe.frames


def agi_connections_from_ami(records: list[Record]) -> dict[int, list[Record]]:
    """FastAGI scripts rebuilt from AGIExecStart/End on AMI (14 did not record FastAGI).

    The replies are placeholders: the replayer only counts them. A session ends
    like the recorder's: after `result=-1` it waits for HANGUP and half-closes.
    """
    connections: dict[int, list[Record]] = {}
    by_channel: dict[str, int] = {}
    for frame in frames_from_records(records):
        channel = frame.get("Channel") or ""
        if frame.name == "Newexten" and (frame.get("AppData") or "").startswith("agi://"):
            by_channel[channel] = len(by_channel) + 1
            connections[by_channel[channel]] = [Record(frame.t, "in", "agi_env\n\n")]
            continue
        conn = by_channel.get(channel)
        if conn is None:
            continue
        script = connections[conn]
        if frame.name == "AGIExecStart":
            script.append(Record(frame.t, "out", (frame.get("Command") or "") + "\n", conn))
        elif frame.name == "AGIExecEnd":
            script.append(Record(frame.t, "in", "reply\n", conn))
            if frame.get("ResultCode") == "-1":
                script.append(Record(frame.t + 0.044, "in", "HANGUP\n", conn))
                script.append(Record(frame.t + 0.045, "out", "", conn, shutdown_wr=True))
                del by_channel[channel]
    return connections


def agi_replayer(connections: dict[int, list[Record]], result: ReplayResult) -> AgiHandler:
    """A FastAGI handler sending each connection's recorded commands in turn."""
    order = sorted(connections)
    accepted: list[AgiPeer] = []

    async def handler(peer: AgiPeer) -> None:
        accepted.append(peer)
        index = len(accepted) - 1
        if index >= len(order):
            result.notes.append(f"unexpected FastAGI connection #{index + 1}")
            return
        records = connections[order[index]]
        incoming = 0
        last_in_t = records[0].t
        for record in records:
            if record.incoming:
                if not record.eof:
                    incoming += 1
                    last_in_t = record.t
                continue
            if not await peer.wait_items(incoming):
                result.notes.append(f"agi#{index + 1}: reply {incoming} never came")
            gap = record.t - last_in_t
            if gap > 0.02:
                await peer.clock.sleep(gap)
            if record.shutdown_wr:
                peer.half_close()
            elif record.close:
                break
            else:
                peer.send(record.data)

    return handler


async def replay_scenario(
    scenario: Scenario,
    setup: Setup = (),
    *,
    speed: float = 10.0,
    limit: float = 120.0,
) -> ReplayResult:
    """Replay `scenario` against a fresh emulator; `setup` schedules phones and callers.

    Emulated time moves only while nothing is in progress (IdleClock): the replay
    takes no emulated time of its own, so a race the recording settled by a few
    hundred milliseconds (twenty 1 s WAIT FOR DIGIT loops against the callers'
    BYE in 14) settles the same way on a loaded machine. `speed` only paces it.
    """
    clock = IdleClock(speed, time.time())
    clock.start(busy=lambda: False)
    clock.begin(done=lambda: False, limit_s=math.inf)
    result = ReplayResult()
    connections = scenario.agi_connections() or agi_connections_from_ami(scenario.ami())
    agi = AgiScriptServer(clock, agi_replayer(connections, result))
    await agi.start()
    emulator = AsteriskEmulator(ami_port=0, fastagi_port=agi.port, clock=clock)
    await emulator.start()
    timeline = Timeline(clock)

    async def at(t: float, step: Callable[[AsteriskEmulator], Any]) -> None:
        await timeline.until(t)
        outcome = step(emulator)
        if asyncio.iscoroutine(outcome):
            await outcome

    translate = Translator(recorded_roles(scenario), Roles())
    jobs = [
        _replay_ami(emulator, scenario.ami(p.name), timeline, result, p.name, translate)
        for p in scenario.ami_files
    ]
    jobs += [at(t, step) for t, step in setup]
    try:
        await asyncio.wait_for(asyncio.gather(*jobs), limit)
        for peer in agi.peers:
            await peer.wait_eof()
    finally:
        result.agi = [peer.lines for peer in agi.peers]
        await emulator.close()
        await agi.close()
        await clock.close()
    return result


PLAIN_LOGIN = "Action: Login\r\nActionID: login\r\nUsername: cti\r\nSecret: cti\r\n\r\n"


@contextlib.asynccontextmanager
async def logged_in_probe(emulator: AsteriskEmulator, clock: Clock) -> AsyncIterator[AmiProbe]:
    """Start `emulator` and log an AMI probe in as cti; both closed afterwards."""
    await emulator.start()
    ami = AmiProbe(clock)
    try:
        await ami.connect("127.0.0.1", emulator.ami_port)
        response = await ami.action(PLAIN_LOGIN)
        assert response.get("Message") == "Authentication accepted"
        yield ami
    finally:
        await ami.close()
        await emulator.close()
