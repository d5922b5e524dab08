"""Emulated time that stands still while anything is in progress (simulations, conformance).

sim/clock.py's scaled wall clock lets real processing time pass as emulated
time, so which of two nearly simultaneous things happens first depends on the
machine's load. IdleClock moves only once the event loop has nothing ready to
run: every step takes no emulated time, and a run is the same on any machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from ctiserver.sim.clock import Clock

# The clock moves on after this many consecutive idle passes of the event loop.
_QUIET_PASSES = 3
_BUSY_POLL_S = 0.0005
_MIN_STEP_S = 1e-6


class IdleClock(Clock):
    """Emulated time that advances only when the server and the emulator are idle.

    A scaled wall clock (sim/clock.py) lets the real time a step takes (an AMI
    round trip, a database write) pass as emulated time, `speed` times over:
    at speed 50 ten milliseconds of processing become half a second of wait,
    and which of two nearly simultaneous things happens first (a caller's
    patience running out, an agent becoming free) depends on the machine's
    load. Here emulated time stands still while anything is in progress; the
    clock's driver moves it to the next timer only once the event loop has no
    work ready and no database connection is busy, so every step takes no
    emulated time and the order of events is the scenario's own. `speed` only
    paces the run: timer t fires no sooner than t / speed real seconds after
    `begin()`, which changes no figure.

    Timers are asyncio.TimerHandle objects (cancellable like the loop's) kept in
    a heap of (due, sequence): equal instants fire in scheduling order.
    """

    def __init__(self, speed: float, start: float) -> None:
        super().__init__(speed, epoch=start)
        # Emulated seconds since the clock was made: relative, for the precision the
        # emulator's own deadlines need (an epoch float's step is 0.24 microseconds).
        self.now = 0.0
        self._begun_at = 0.0  # `now` at begin(): scenario t = 0
        self._real0 = 0.0
        self._heap: list[_Timer] = []
        self._sequence = itertools.count()
        self._busy: Callable[[], bool] = lambda: False
        self._done: Callable[[], bool] = lambda: False
        self._limit = math.inf
        self._driver: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.stopped = asyncio.Event()
        self.overran = False

    # -- Clock ---------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.now

    def time(self) -> float:
        return self._epoch0 + self.now

    def real(self, seconds: float) -> float:
        # Only real-time guards ask (an AMI login deadline): paced as the timers are.
        return max(0.0, seconds) / self.speed

    def call_later(
        self, seconds: float, callback: Callable[..., Any], *args: Any
    ) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        # A positive delay moves time by at least a microsecond: code that waits for
        # "deadline - elapsed()" again and again (sim/agi_client.py play) must see its
        # deadline reached, not a remainder lost in the float's rounding.
        due = self.now + (max(seconds, _MIN_STEP_S) if seconds > 0 else 0.0)
        handle = asyncio.TimerHandle(due, callback, args, loop)
        heapq.heappush(self._heap, _Timer(due, next(self._sequence), handle, callback, args))
        self._wake.set()
        return handle

    async def sleep(self, seconds: float) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = self.call_later(seconds, _resolve, done)
        try:
            await done
        finally:
            handle.cancel()

    # -- driving -------------------------------------------------------------------------

    def at(self) -> float:
        """Seconds since begin() (t = 0 of a scenario)."""
        return self.now - self._begun_at

    def start(self, busy: Callable[[], bool]) -> None:
        """Start moving time; `busy()` tells of work the event loop cannot see (queries)."""
        self._busy = busy
        self._driver = asyncio.create_task(self._drive(), name="idle-clock")

    def begin(self, done: Callable[[], bool], limit_s: float) -> None:
        """t = 0: the scenario's start instant and the pace's origin. Time stops for good
        (`stopped` is set) at the first idle instant `done()` is true, or past `limit_s`
        scenario seconds (`overran`)."""
        self._begun_at = self.now
        self._real0 = asyncio.get_running_loop().time()
        self._done = done
        self._limit = limit_s
        self._wake.set()

    async def close(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
            self._driver = None

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._settled(loop)
            if self._done() or self.at() > self._limit:
                self.overran = not self._done()
                self.stopped.set()
                return
            head = self._next_due()
            if head is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            pace = self._real0 + (head - self._begun_at) / self.speed - loop.time()
            if pace > 0:
                # Real time to wait for the pace; anything scheduled meanwhile is looked at.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pace):
                        await self._wake.wait()
                continue
            self.now = max(self.now, head)
            while self._heap and self._heap[0].due <= self.now:
                timer = heapq.heappop(self._heap)
                if timer.handle.cancelled():
                    continue
                try:
                    timer.callback(*timer.args)
                except Exception as exc:  # as the loop does for its own timers
                    loop.call_exception_handler(
                        {"message": "idle clock timer failed", "exception": exc}
                    )

    def _next_due(self) -> float | None:
        while self._heap and self._heap[0].handle.cancelled():
            heapq.heappop(self._heap)
        return self._heap[0].due if self._heap else None

    async def _settled(self, loop: asyncio.AbstractEventLoop) -> None:
        """Return once nothing is ready to run in the loop and no query is out, a few
        passes in a row: messages between the emulator and the server (loopback
        sockets in this process) are readable at once, so their handling is ready work."""
        ready = getattr(loop, "_ready", None)  # the loop's run queue (CPython's loops)
        quiet = 0
        while quiet < _QUIET_PASSES:
            await asyncio.sleep(0)
            if (ready is not None and len(ready) > 0) or self._busy():
                quiet = 0
                if self._busy():
                    await asyncio.sleep(_BUSY_POLL_S)  # a query: PostgreSQL answers in real time
            else:
                quiet += 1
            if ready is None:
                await asyncio.sleep(_BUSY_POLL_S)  # another loop: a short real pause instead


class _Timer(NamedTuple):
    due: float
    sequence: int  # equal instants: scheduling order
    handle: asyncio.TimerHandle  # what the caller holds to cancel
    callback: Callable[..., Any]
    args: tuple[Any, ...]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
