"""AMI replay harness: a real TCP server on 127.0.0.1 that plays recorded
ami*.jsonl transcripts to a client under test.

Per connection it plays the next transcript of the list it was given: the
banner, then for each `out` record it first sends the `in` records recorded
before it, waits for the client's next action frame and checks that it is
the recorded action. Then it goes on. Timing is not reproduced, only order.

What "the same action" means: the same `Action:` and the same other headers
and values, order-insensitive for distinct names and in order for repeated
ones (codec Message equality), `ActionID` excepted. The ActionID value may
differ (the client's prefix is configurable) but its presence must match:
an action recorded without ActionID must be sent without one. Secret and MD5
Key are compared as recorded: the tests configure the recorded credentials
(cti/cti), and the MD5 Key is deterministic once the recorded Challenge is
replayed, so a difference there is a real bug.

ActionIDs in the `in` records are rewritten to the ones the client really
used for the matching `out` record, so correlation is exercised for real.
`eof` records close the socket. A `close` record (the recorder closed without
Logoff, 13) is played as a server-side drop of the connection: for a client
that is a lost connection, which is what the reconnect test needs.

Chunking: "frame" writes one record per write; "batch" writes all records
due before the next action in one write (many frames per read); "random"
cuts that byte stream at seeded random boundaries (partial frames, frames
split inside headers and inside multi-byte characters).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ctiserver.asterisk.ami.codec import FrameParser, Message, parse_frame
from ctiserver.sim.transcript import Record

Chunking = Literal["frame", "batch", "random"]
IGNORED_HEADERS = frozenset({"ActionID"})


def action_key(message: Message) -> tuple[tuple[str, str], ...]:
    """The comparable part of an action: every header but ActionID, sorted."""
    return tuple(sorted((k, v) for k, v in message.items() if k not in IGNORED_HEADERS))


def rewrite_action_ids(data: str, id_map: dict[str, str]) -> str:
    """Replace `ActionID:` header values that the map knows; others stay."""
    if "ActionID: " not in data:
        return data
    lines = data.split("\r\n")
    for index, line in enumerate(lines):
        if line.startswith("ActionID: "):
            recorded = line[len("ActionID: ") :]
            if recorded in id_map:
                lines[index] = f"ActionID: {id_map[recorded]}"
    return "\r\n".join(lines)


@dataclass
class ReplayConnection:
    """What happened on one accepted connection."""

    transcript: int  # index into the server's transcripts
    id_map: dict[str, str] = field(default_factory=dict)  # recorded -> client's ActionID
    received: list[Message] = field(default_factory=list)  # the client's actions
    sent: list[str] = field(default_factory=list)  # frames sent (after the rewrite)
    errors: list[str] = field(default_factory=list)
    ending: str = ""  # "eof", "drop" (close record), "end", or "error"
    done: asyncio.Event = field(default_factory=asyncio.Event)


class AmiReplayServer:
    """Plays `transcripts[i]` to the i-th connection; use as an async context manager."""

    def __init__(
        self,
        transcripts: Sequence[Sequence[Record]],
        *,
        chunking: Chunking = "frame",
        seed: int = 0,
        max_chunk: int = 1500,
        action_timeout: float = 5.0,
        play_timeout: float = 10.0,
    ) -> None:
        self.transcripts = [list(t) for t in transcripts]
        self.chunking = chunking
        self.rng = random.Random(seed)
        self.max_chunk = max_chunk
        self.action_timeout = action_timeout
        self.play_timeout = play_timeout
        self.connections = [ReplayConnection(i) for i in range(len(self.transcripts))]
        self.accepted = 0
        self.extra_connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.port = 0

    @property
    def errors(self) -> list[str]:
        found = [f"conn {i + 1}: {e}" for i, c in enumerate(self.connections) for e in c.errors]
        if self.extra_connections:
            found.append(f"{self.extra_connections} connection(s) beyond the transcripts")
        return found

    async def __aenter__(self) -> AmiReplayServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._handlers.values():
            writer.transport.abort()
        if self._handlers:
            # The aborts end the handlers (cancelling a start_server handler
            # makes asyncio log the CancelledError as an error).
            await asyncio.wait(self._handlers, timeout=2)
        await self._server.wait_closed()

    async def wait_played(self, count: int | None = None) -> None:
        """Wait (up to play_timeout) until the first `count` transcripts (default:
        all) were played to their end."""
        async with asyncio.timeout(self.play_timeout):
            for conn in self.connections[:count]:
                await conn.done.wait()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = writer
        try:
            index = self.accepted
            self.accepted += 1
            if index >= len(self.transcripts):
                self.extra_connections += 1
                return
            conn = self.connections[index]
            try:
                await self._play(conn, self.transcripts[index], reader, writer)
            except (ConnectionError, TimeoutError, OSError) as exc:
                conn.errors.append(f"transport: {exc!r}")
                conn.ending = "error"
            finally:
                conn.done.set()
        finally:
            writer.transport.abort()
            self._handlers.pop(task, None)

    async def _play(
        self,
        conn: ReplayConnection,
        records: list[Record],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        parser = FrameParser(expect_banner=False)
        received: list[Message] = []
        due: list[str] = []
        for record in records:
            if record.incoming and record.eof:
                await self._send(writer, due, conn)
                conn.ending = "eof"
                writer.close()
                return
            if record.incoming:
                due.append(rewrite_action_ids(record.data, conn.id_map))
                continue
            await self._send(writer, due, conn)
            if record.close:
                conn.ending = "drop"
                return
            action = await self._next_action(reader, parser, received, conn, record)
            if action is None:
                conn.ending = "error"
                return
        await self._send(writer, due, conn)
        conn.ending = "end"

    async def _next_action(
        self,
        reader: asyncio.StreamReader,
        parser: FrameParser,
        received: list[Message],
        conn: ReplayConnection,
        record: Record,
    ) -> Message | None:
        expected = parse_frame(record.data.removesuffix("\r\n\r\n"))
        try:
            async with asyncio.timeout(self.action_timeout):
                while not received:
                    data = await reader.read(65536)
                    if not data:
                        conn.errors.append(f"client closed; expected {expected.headers}")
                        return None
                    received.extend(parser.feed(data))
        except TimeoutError:
            conn.errors.append(f"no action from the client; expected {expected.headers}")
            return None
        action = received.pop(0)
        conn.received.append(action)
        if action_key(action) != action_key(expected):
            conn.errors.append(f"action mismatch: got {action.headers}, want {expected.headers}")
            return None
        recorded_id, actual_id = expected.get("ActionID"), action.get("ActionID")
        if (recorded_id is None) != (actual_id is None):
            conn.errors.append(f"ActionID presence differs: got {actual_id}, want {recorded_id}")
            return None
        if recorded_id is not None and actual_id is not None:
            conn.id_map[recorded_id] = actual_id
        return action

    async def _send(
        self, writer: asyncio.StreamWriter, due: list[str], conn: ReplayConnection
    ) -> None:
        if not due:
            return
        conn.sent.extend(frame for frame in due if frame.endswith("\r\n\r\n"))
        payloads = [frame.encode("utf-8") for frame in due]
        due.clear()
        if self.chunking == "batch":
            payloads = [b"".join(payloads)]
        elif self.chunking == "random":
            blob = b"".join(payloads)
            payloads = []
            start = 0
            while start < len(blob):
                size = self.rng.randint(1, self.max_chunk)
                payloads.append(blob[start : start + size])
                start += size
        for payload in payloads:
            writer.write(payload)
            await writer.drain()
            if self.chunking != "batch":
                # Let the client read before the next write, so reads really
                # end where the writes do (loopback would merge them otherwise).
                await asyncio.sleep(0)
