"""glibc's heap under asyncio's socket reads and uvloop's, in one run.

    python bench/recv_heap.py                 # 200,000 messages on each loop (~10 s)
    python bench/recv_heap.py --messages 50000

Each loop runs in a fresh process (its own allocator state): a socket pair, a Protocol
that keeps a slice of every message it receives in a FIFO of `--kept` (as parsers and
caches keep pieces of what arrives, for a while), messages of 100-3,000 random bytes
sent one at a time. asyncio's selector transport reads each with recv(256 KiB) and
shrinks the result; uvloop reads into one buffer and copies what arrived. Printed: the
time a message, and glibc's heap (mallinfo2: its size and what is in use) at the end.
Last line JSON: {"asyncio": {...}, "uvloop": {...}, "messages", "kept"}.
Why this matters: ctiserver/event_loop.py; the e2e runs: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import multiprocessing
import random
import socket
import sys
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

MIN_MESSAGE, MAX_MESSAGE = 100, 3000


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def glibc_heap_mb() -> tuple[float, float, float] | None:
    """glibc's heap (MB): its size, how much of it is in use, and the blocks glibc mapped
    on their own, outside the heap (mallinfo2); None off glibc. The size growing while the
    use stays flat is fragmentation (bench/e2e.py reports it for the server too)."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return (
        round(info.arena / 2**20, 1),
        round(info.uordblks / 2**20, 1),
        round(info.hblkhd / 2**20, 1),
    )


class Keeper(asyncio.Protocol):
    """Keeps a piece of each message for a while; wakes the sender after each one."""

    def __init__(self, kept: int) -> None:
        self.kept: deque[bytes] = deque(maxlen=kept)
        self.arrived = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.kept.append(data[: 600 + len(data) % 1400])
        self.arrived.set()


async def pump(messages: int, kept: int) -> float:
    loop = asyncio.get_running_loop()
    sender, receiver = socket.socketpair()
    sender.setblocking(False)
    keeper = Keeper(kept)
    transport, _ = await loop.connect_accepted_socket(lambda: keeper, receiver)
    rng = random.Random(1)
    started = time.perf_counter()
    try:
        for _ in range(messages):
            keeper.arrived.clear()
            # A fresh message each time: short-lived allocations between the reads, as a
            # server makes while it handles what arrived.
            sender.send(rng.randbytes(rng.randint(MIN_MESSAGE, MAX_MESSAGE)))
            async with asyncio.timeout(5):
                await keeper.arrived.wait()
    finally:
        transport.close()
        sender.close()
    return time.perf_counter() - started


def measure(conn: Connection, loop_name: str, messages: int, kept: int) -> None:
    # A large block freed first raises glibc's dynamic mmap threshold, as a running server's
    # big lists and buffers do: from then on 256 KiB reads come from the heap.
    scratch = bytearray(4 << 20)
    del scratch
    if loop_name == "uvloop":
        import uvloop

        seconds = uvloop.run(pump(messages, kept))
    else:
        seconds = asyncio.run(pump(messages, kept))
    heap, in_use, _mapped = glibc_heap_mb() or (None, None, None)
    conn.send(
        {"us_per_message": round(seconds / messages * 1e6, 1), "heap_mb": heap, "in_use_mb": in_use}
    )


def run_in_process(loop_name: str, messages: int, kept: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=measure, args=(child, loop_name, messages, kept))
    process.start()
    child.close()
    if not parent.poll(600):
        process.kill()
        raise TimeoutError(f"{loop_name}: no result within 600 s")
    result: dict[str, Any] = parent.recv()
    process.join(30)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--kept", type=int, default=5000, help="slices kept (a FIFO)")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for loop_name in ("asyncio", "uvloop"):
        results[loop_name] = run_in_process(loop_name, args.messages, args.kept)
        figures = results[loop_name]
        print(
            f"{loop_name:8} {figures['us_per_message']:6.1f} us a message; glibc heap"
            f" {figures['heap_mb']} MB, {figures['in_use_mb']} MB of it in use",
            flush=True,
        )
    print(json.dumps({**results, "messages": args.messages, "kept": args.kept}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
