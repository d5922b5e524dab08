"""The flows in service: one folder of `*.yaml` files, reloaded while calls run.

A file's id is its name without `.yaml`; its version is a hash of its text.
The folder is polled (stat in a worker thread, never on the event loop); a
changed file is checked and swapped in as a whole, so new calls get the new
version while calls in progress keep the `Flow` object they started with.
A file that no longer passes the checks keeps its previous version in service
and its problems are logged and shown in /health.

Which flow a call gets (`pick`): `flow=` in the AGI URL
(`agi://host/ivr?flow=bank_hotline`), else the flow whose `numbers` list the
dialled number, else the configured default, else the only flow there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ctiserver.asterisk.agi.codec import AgiEnvironment
from ctiserver.ivr.flow import Flow
from ctiserver.ivr.loader import FlowError, parse_flow
from ctiserver.lifecycle import Service
from ctiserver.problems import read_text_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedFlow:
    id: str
    flow: Flow
    version: str  # the first 12 hex digits of the text's SHA-256


# Per file: (modification time ns, size) — what the poll compares.
_Stamp = tuple[int, int]


def _stamps(folder: Path) -> dict[Path, _Stamp]:
    found: dict[Path, _Stamp] = {}
    with contextlib.suppress(FileNotFoundError):
        for path in folder.glob("*.yaml"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


def _read(path: Path) -> tuple[str | None, str]:
    text, problem = read_text_file(path)
    return text, problem or ""


class FlowLibrary(Service):
    """The flows of a folder, current versions only."""

    def __init__(self, folder: Path, *, default: str = "", poll_s: float = 1.0) -> None:
        self.folder = folder
        self.default = default
        self.poll_s = poll_s
        self._flows: dict[str, LoadedFlow] = {}
        self._stamps: dict[Path, _Stamp] = {}
        self.problems: dict[str, list[str]] = {}  # file id -> problems of its last edit
        self._task: asyncio.Task[None] | None = None

    @property
    def flows(self) -> Mapping[str, LoadedFlow]:
        return self._flows

    async def start(self) -> None:
        await self.refresh()
        if not self._flows:
            log.warning("IVR: no usable flow in %s", self.folder)
        if self.poll_s > 0:
            self._task = asyncio.create_task(self._poll(), name="ivr-flow-reload")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.refresh()
            except Exception:
                log.exception(
                    "IVR: reloading flows from %s failed; keeping the current ones", self.folder
                )

    async def refresh(self) -> list[str]:
        """Load what changed since the last look; the ids of flows swapped in or removed."""
        stamps = await asyncio.to_thread(_stamps, self.folder)
        changed: list[str] = []
        for path in sorted(set(self._stamps) - set(stamps)):
            flow_id = path.stem
            if self._flows.pop(flow_id, None) is not None:
                log.info("IVR: flow %s removed (%s)", flow_id, path)
                changed.append(flow_id)
            self.problems.pop(flow_id, None)
        for path, stamp in sorted(stamps.items()):
            if self._stamps.get(path) == stamp:
                continue
            if await self._load(path):
                changed.append(path.stem)
        self._stamps = stamps
        return changed

    async def _load(self, path: Path) -> bool:
        flow_id = path.stem
        text, problem = await asyncio.to_thread(_read, path)
        if text is None:
            self._reject(flow_id, [problem])
            return False
        version = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        current = self._flows.get(flow_id)
        if current is not None and current.version == version:
            return False
        try:
            flow = parse_flow(text, str(path))
        except FlowError as exc:
            self._reject(flow_id, exc.problems)
            return False
        self._flows[flow_id] = LoadedFlow(flow_id, flow, version)
        self.problems.pop(flow_id, None)
        log.info(
            "IVR: flow %s version %s in service (%s)",
            flow_id,
            version,
            "new" if current is None else f"was {current.version}",
        )
        return True

    def _reject(self, flow_id: str, problems: list[str]) -> None:
        self.problems[flow_id] = problems
        kept = self._flows.get(flow_id)
        keeping = f"keeping version {kept.version}" if kept else "not in service"
        log.error("IVR: flow %s not loaded (%s):\n  %s", flow_id, keeping, "\n  ".join(problems))

    def pick(self, env: AgiEnvironment) -> LoadedFlow | None:
        """The flow for a new call (see the module docstring)."""
        wanted = env.arguments.get("flow", "")
        if wanted:
            return self._flows.get(wanted)
        for dialled in (env.dnid, env.extension):
            if dialled and dialled != "unknown":
                for loaded in self._flows.values():
                    if dialled in loaded.flow.numbers:
                        return loaded
        if self.default:
            return self._flows.get(self.default)
        if len(self._flows) == 1:
            return next(iter(self._flows.values()))
        return None
