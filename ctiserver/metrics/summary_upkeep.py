"""Keeps the summary rows of recent days current: `ctiserver metrics rebuild --stale`, periodically.

The rebuild folds a day of events in Python (seconds per busy day), so it runs in
a child process: the server's event loop, which answers calls, never waits on it.
The child reads the same configuration (its environment is the server's) and
joins the same database, embedded or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from typing import Final

log = logging.getLogger(__name__)

REBUILD_COMMAND: Final = (sys.executable, "-m", "ctiserver", "metrics", "rebuild", "--stale")
# The first run waits this long at most, so a starting server is not slowed by it.
_FIRST_RUN_S: Final = 300.0
_STOP_S: Final = 10.0


class SummaryUpkeep:
    """Runs `command` every `every_s` seconds (0: never), each run bounded by `timeout_s`."""

    def __init__(
        self,
        every_s: float,
        command: Sequence[str] = REBUILD_COMMAND,
        *,
        timeout_s: float | None = None,
        first_run_s: float = _FIRST_RUN_S,
    ) -> None:
        self.every_s = every_s
        self.command = tuple(command)
        self.timeout_s = timeout_s if timeout_s is not None else max(every_s, 60.0)
        self.first_run_s = min(first_run_s, every_s)
        self.runs = 0
        self.last_exit: int | None = None
        self.ran = asyncio.Event()  # set after each finished run
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.every_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="metrics-summary-upkeep")

    async def _loop(self) -> None:
        await asyncio.sleep(self.first_run_s)
        while True:
            try:
                await self.run_once()
            except OSError:
                log.exception("metrics summary upkeep: could not start %s", self.command[0])
            await asyncio.sleep(self.every_s)

    async def run_once(self) -> int | None:
        """One rebuild; its output goes to the log. The exit status (None: timed out)."""
        process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self.timeout_s)
        except TimeoutError:
            log.warning("metrics summary upkeep: no end after %.0f s; stopped", self.timeout_s)
            await self._stop(process)
            return None
        except asyncio.CancelledError:  # the server is closing: the child goes with it
            await self._stop(process)
            raise
        self.runs += 1
        self.last_exit = process.returncode
        self.ran.set()
        text = output.decode("utf-8", "replace").strip()
        if process.returncode:
            log.error("metrics summary upkeep failed (exit %s): %s", process.returncode, text)
        elif text:
            log.info("metrics summary rows rebuilt: %s", text.replace("\n", "; "))
        return process.returncode

    @staticmethod
    async def _stop(process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), _STOP_S)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
