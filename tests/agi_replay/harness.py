"""Asterisk side of a FastAGI replay: plays one recorded agi.jsonl connection over TCP.

It connects to our FastAGI server like Asterisk does, sends the recorded
environment block, and for every recorded command (`out` record) reads the
server's next line and compares it byte for byte; the `in` records after it
(replies, `HANGUP` lines) are then written in recorded order. At the recorded
`shutdown_wr` it expects the server's half-close (EOF while the socket stays
writable), writes the bytes Asterisk sent after it (the second `HANGUP`) and
closes, as Asterisk does (INDEX behaviour 1).

Recorded time gaps are not slept, except that an `in` record that followed
another one after a long gap (the unsolicited HANGUP of 03d, arriving while
the script is idle) is written after a short pause, or when `gate` says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ctiserver.sim.transcript import Record

# A recorded gap above this between two `in` records means the script was
# idle in between; the replay then pauses IDLE_PAUSE before the second one.
IDLE_GAP = 0.2
IDLE_PAUSE = 0.05

Gate = Callable[[Record], Awaitable[None]]


@dataclass
class ReplayResult:
    """What the server did on one replayed connection."""

    sent: list[bytes] = field(default_factory=list)  # every command line, as received
    half_closed: bool = False
    half_closed_after: int | None = None  # commands received before the half-close
    half_close_delay: float | None = None  # seconds from our last write to the half-close
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def expected_commands(records: list[Record]) -> list[bytes]:
    return [r.data.encode() for r in records if not r.incoming and r.data]


async def replay_connection(
    host: str,
    port: int,
    records: list[Record],
    *,
    gate: Gate | None = None,
    io_timeout: float = 5.0,
) -> ReplayResult:
    """Play one connection's records against the server at host:port."""
    result = ReplayResult()
    env, *rest = records
    if not (env.incoming and env.data.startswith("agi_")):
        raise ValueError("a FastAGI connection starts with the environment block")
    reader, writer = await asyncio.open_connection(host, port)
    last_write = time.monotonic()
    previous = env
    try:
        writer.write(env.data.encode())
        await writer.drain()
        for record in rest:
            if record.incoming:
                if record.eof:
                    break  # Asterisk closes: done in `finally`
                if gate is not None:
                    await gate(record)
                elif previous.incoming and record.t - previous.t > IDLE_GAP:
                    await asyncio.sleep(IDLE_PAUSE)
                writer.write(record.data.encode())
                await writer.drain()
                last_write = time.monotonic()
            elif record.shutdown_wr:
                extra = await _read_to_eof(reader, io_timeout)
                if extra is None:
                    result.errors.append(f"server did not half-close within {io_timeout} s")
                    break
                if extra:
                    result.errors.append(f"server sent {extra!r} instead of half-closing")
                result.half_closed = True
                result.half_closed_after = len(result.sent)
                result.half_close_delay = time.monotonic() - last_write
            else:
                try:
                    async with asyncio.timeout(io_timeout):
                        line = await reader.readline()
                except TimeoutError:
                    result.errors.append(
                        f"no command within {io_timeout} s, wanted {record.data!r}"
                    )
                    break
                if not line:
                    result.errors.append(f"server closed its side, wanted {record.data!r}")
                    break
                result.sent.append(line)
                if line != record.data.encode():
                    result.errors.append(f"server sent {line!r}, recorded {record.data!r}")
                    break
            previous = record
    except (ConnectionError, OSError) as exc:
        result.errors.append(f"connection error: {exc!r}")
    finally:
        await _close(writer, io_timeout)
    return result


async def _close(writer: asyncio.StreamWriter, within: float) -> None:
    writer.close()
    try:
        async with asyncio.timeout(within):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        pass


async def _read_to_eof(reader: asyncio.StreamReader, within: float) -> bytes | None:
    """Everything up to EOF, or None when EOF did not come `within` seconds."""
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(4096):
                chunks.append(chunk)
    except TimeoutError:
        return None
    return b"".join(chunks)


async def replay_as_subsequence(
    host: str, port: int, records: list[Record], *, io_timeout: float = 5.0
) -> ReplayResult:
    """Answer a script whose commands are a subsequence of the recorded ones.

    A flow does not send every command the recorder's script sent (the
    recorder also exercised GET FULL VARIABLE, VERBOSE...). Each line the
    server sends must be the next recorded command with those exact bytes,
    later recorded commands skipped; it gets what Asterisk wrote after that
    command (its reply and any HANGUP line). When the server half-closes,
    the bytes Asterisk wrote after the recorded half-close follow, then close.
    """
    result = ReplayResult()
    env, *rest = records
    commands = [i for i, r in enumerate(rest) if not r.incoming and r.data]
    half_close = next((i for i, r in enumerate(rest) if r.shutdown_wr), len(rest))

    def written_after(index: int) -> bytes:
        """The `in` records after rest[index], up to the next thing the CTI side did."""
        out = []
        for record in rest[index + 1 :]:
            if not record.incoming or record.eof:
                break
            out.append(record.data.encode())
        return b"".join(out)

    reader, writer = await asyncio.open_connection(host, port)
    position = 0  # index into `commands` of the next candidate
    try:
        writer.write(env.data.encode())
        await writer.drain()
        while True:
            try:
                async with asyncio.timeout(io_timeout):
                    line = await reader.readline()
            except TimeoutError:
                result.errors.append(f"no command or half-close within {io_timeout} s")
                break
            if not line:
                result.half_closed = True
                result.half_closed_after = len(result.sent)
                writer.write(written_after(half_close))
                await writer.drain()
                break
            result.sent.append(line)
            found = next(
                (
                    k
                    for k in range(position, len(commands))
                    if rest[commands[k]].data.encode() == line
                ),
                None,
            )
            if found is None:
                result.errors.append(f"server sent {line!r}, not among the recorded commands left")
                break
            position = found + 1
            writer.write(written_after(commands[found]))
            await writer.drain()
    except (ConnectionError, OSError) as exc:
        result.errors.append(f"connection error: {exc!r}")
    finally:
        await _close(writer, io_timeout)
    return result
