"""The server process's event loop: uvloop by default, asyncio's own on request.

Why uvloop (bench/README.md, "Memory"): asyncio's selector transports read every socket
with `recv(256 KiB)` and shrink the result. glibc serves the 256 KiB from its heap, and
the longer-lived objects allocated in the tail of that chunk are in the way of the next
one, so under load the heap keeps growing while what is in use stays flat (50 calls/s:
+0.2 MB/s, 104 of 131 MB free). uvloop reads into one reusable buffer and copies exactly what
arrived, so the heap stays flat. It also costs less CPU per call (8.9 against 11.0-11.4 ms
at 50 calls/s).

`ctiserver run` and `ctiserver demo` use it; `ctiserver simulate` stays on asyncio's loop,
whose run queue its idle clock watches (sim/idle_clock.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

log = logging.getLogger(__name__)

EVENT_LOOPS: Final = ("uvloop", "asyncio")

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `choice` (one of EVENT_LOOPS); None means asyncio's default.
    uvloop missing (a platform without its wheel) falls back to asyncio, with a warning:
    the server works either way."""
    if choice not in EVENT_LOOPS:
        raise ValueError(f"event loop {choice!r} is not one of {list(EVENT_LOOPS)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed: running on asyncio's event loop")
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """Run `main` to completion on a new loop of the chosen kind (as asyncio.run does)."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """ "uvloop" or "asyncio": which loop runs the caller (for logs and reports)."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
