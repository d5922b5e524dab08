"""Emulated time for the Asterisk emulator: a wall clock that may run faster than real time.

Every delay inside the emulator (ring times, prompt lengths, Dial timeouts, the
~44 ms before an AGI `HANGUP` line) is expressed in emulated seconds and goes
through one `Clock`. With `speed=1` the emulator behaves in real time (demo);
with `speed=50` a 20 s Dial timeout takes 0.4 s of real time (tests, load
runs). Timers are plain `loop.call_later` handles: nothing polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class Clock:
    """Scaled clock: `time()` is emulated epoch seconds, `elapsed()` seconds since start."""

    __slots__ = ("_epoch0", "_mono0", "speed")

    def __init__(self, speed: float = 1.0, epoch: float | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, not {speed}")
        self.speed = float(speed)
        self._mono0 = time.monotonic()
        self._epoch0 = time.time() if epoch is None else epoch

    def elapsed(self) -> float:
        """Emulated seconds since the clock was created."""
        return (time.monotonic() - self._mono0) * self.speed

    def time(self) -> float:
        """Emulated Unix time (what Asterisk would print in `Timestamp:` and Uniqueids)."""
        return self._epoch0 + self.elapsed()

    def real(self, seconds: float) -> float:
        """Real seconds corresponding to an emulated duration."""
        return max(0.0, seconds) / self.speed

    def call_later(
        self, seconds: float, callback: Callable[..., Any], *args: Any
    ) -> asyncio.TimerHandle:
        """Run `callback(*args)` after an emulated delay (on the running loop)."""
        return asyncio.get_running_loop().call_later(self.real(seconds), callback, *args)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(self.real(seconds))
