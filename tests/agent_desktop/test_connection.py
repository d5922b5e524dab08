"""A slow desktop is dropped, not buffered without limit, and never holds up the others."""

from __future__ import annotations

import asyncio

from ctiserver.agent_desktop.hub import Connection
from ctiserver.agent_desktop.protocol import CloseCode


class StuckSocket:
    """A peer that never reads: every send hangs until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent: list[str] = []
        self.closed_with: int | None = None

    async def send_str(self, data: str, compress: int | None = None) -> None:
        await self.release.wait()
        self.sent.append(data)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed_with = code
        return True


class FastSocket(StuckSocket):
    async def send_str(self, data: str, compress: int | None = None) -> None:
        self.sent.append(data)


async def test_overflowing_send_queue_closes_the_slow_connection_only() -> None:
    slow_socket, fast_socket = StuckSocket(), FastSocket()
    slow = Connection(slow_socket, "1001", send_queue=4, send_timeout_s=5)
    fast = Connection(fast_socket, "1001", send_queue=4, send_timeout_s=5)
    writers = [asyncio.create_task(c.run_writer()) for c in (slow, fast)]
    for n in range(10):
        for conn in (slow, fast):
            conn.send_text(f"m{n}")
        await asyncio.sleep(0)
    assert slow.close_code == CloseCode.TOO_SLOW
    assert fast.close_code is None and fast_socket.sent == [f"m{n}" for n in range(10)]
    slow_socket.release.set()
    await asyncio.wait_for(writers[0], 5)
    assert slow_socket.closed_with == CloseCode.TOO_SLOW
    # Only what was being sent when it overflowed went out; the backlog was dropped.
    assert len(slow_socket.sent) <= 1
    fast.close(CloseCode.NORMAL, "bye")
    await asyncio.wait_for(writers[1], 5)
    assert fast_socket.closed_with == CloseCode.NORMAL


async def test_a_send_that_hangs_times_out_and_closes() -> None:
    socket = StuckSocket()
    conn = Connection(socket, "1001", send_timeout_s=0.05)
    writer = asyncio.create_task(conn.run_writer())
    conn.send_text("hello")
    await asyncio.wait_for(writer, 5)
    assert socket.closed_with == CloseCode.TOO_SLOW and socket.sent == []
