"""Drive pyst2's real AMI framing code (Manager._receive_data) over given bytes, without
its socket or threads; shared by ami_ingest.py and library_correctness.py."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any, Protocol


class MessageQueue(Protocol):
    """What Manager._message_queue is to _receive_data(): something with put()."""

    def put(self, data: list[str] | None) -> None: ...


class ChunkedRaw(io.RawIOBase):
    """A socket-like raw stream: a read returns at most the rest of the current chunk,
    as recv() returns at most what one segment brought."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._current = memoryview(chunk)
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size


def pyst2_manager(
    chunks: Iterable[bytes], queue: MessageQueue, buffer_size: int = io.DEFAULT_BUFFER_SIZE
) -> Any:
    """A pyst2 Manager whose _receive_data() reads `chunks` and hands frames to `queue`."""
    import asterisk.manager as manager

    mgr = manager.Manager()
    # Manager.__del__ calls close(), which joins threads never started here.
    mgr.close = lambda: None
    mgr._message_queue = queue
    mgr._sock = io.BufferedReader(ChunkedRaw(chunks), buffer_size=buffer_size)
    mgr._connected.set()
    mgr._running.set()
    return mgr


def collect_pyst2(
    chunks: Iterable[bytes], buffer_size: int = io.DEFAULT_BUFFER_SIZE
) -> list[dict[str, Any]]:
    """Every message pyst2 parses from `chunks`, as header dicts."""
    import asterisk.manager as manager

    out: list[dict[str, Any]] = []

    class Collect:
        def put(self, data: list[str] | None) -> None:
            if data:
                out.append(dict(manager.ManagerMsg(data).headers))

    pyst2_manager(chunks, Collect(), buffer_size)._receive_data()  # returns at EOF
    return out[1:]  # the banner becomes a fake first message
