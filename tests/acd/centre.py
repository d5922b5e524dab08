"""A contact centre for end-to-end tests: the real Server (PostgreSQL, event log, FastAGI,
AMI, ACD) against the Asterisk emulator running the shipped dialplan, on real sockets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctiserver.acd.controller import CallController
from ctiserver.acd.model import AgentState, AttributeCondition, SkillRequirement
from ctiserver.app import Server
from ctiserver.config import (
    AcdSettings,
    AmiSettings,
    DatabaseSettings,
    FastAgiSettings,
    HttpSettings,
    ServerSettings,
    Settings,
)
from ctiserver.sim.dialplan_file import load_dialplan
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.phones import Call
from ctiserver.store.database import Database
from tests.polling import until as wait_until

REPO = Path(__file__).resolve().parents[2]
SHIPPED_DIALPLAN = REPO / "dialplans" / "extensions.conf"
LIMIT_S = 15.0

BASE_ACD = """
[grades]
vip = 10

[skills]
billing = "账单 Billing"
cards = "信用卡 Cards"

[[queues]]
name = "support"
title = "客户服务"
ring_timeout = {ring_timeout}
wrap_up = 0.5
announce_every = {announce_every}
{queue_extra}
{steps}
{agents}
"""

OPEN_STEP = """
[[queues.steps]]
require = { billing = 1 }
"""

# One second in line, then "press 1 for a callback"; agents qualify throughout.
CALLBACK_STEPS = """
[[queues.steps]]
duration = 1
require = { billing = 1 }
then = ["callback"]

[[queues.steps]]
"""


def write_acd(
    folder: Path,
    agents: str,
    *,
    steps: str = OPEN_STEP,
    queue_extra: str = "",
    ring_timeout: float = 2,
    announce_every: float = 0,
) -> Path:
    path = folder / "acd.toml"
    text = BASE_ACD.format(
        agents=agents,
        steps=steps,
        queue_extra=queue_extra,
        ring_timeout=ring_timeout,
        announce_every=announce_every,
    )
    path.write_text(text, encoding="utf-8")
    return path


def agent_block(
    agent_id: str,
    name: str = "王小明",
    level: int = 5,
    *,
    cards: int | None = None,
    language: str | None = None,
) -> str:
    """An agent of "support" with billing at `level` (and cards, a language, if given)."""
    skills = f"billing = {level}" + (f", cards = {cards}" if cards is not None else "")
    attributes = f'{{ language = "{language}" }}' if language is not None else "{}"
    return f"""
[[agents]]
id = "{agent_id}"
name = "{name}"
endpoint = "PJSIP/agent{agent_id}"
skills = {{ {skills} }}
attributes = {attributes}
queues = ["support"]
"""


@dataclass
class Centre:
    server: Server
    emulator: AsteriskEmulator
    database: Database

    @property
    def acd(self) -> CallController:
        assert self.server.acd is not None
        return self.server.acd

    async def events(self, call_id: str | None = None) -> list[dict[str, Any]]:
        """The ACD events stored so far (flushed first), oldest first."""
        assert self.server.events is not None
        await self.server.events.flush()
        rows = await self.database.fetch(
            "SELECT type, call_id, agent_id, queue_id, payload FROM events"
            " WHERE type LIKE 'acd.%' AND ($1::text IS NULL OR call_id = $1)"
            " ORDER BY occurred_at, id",
            call_id,
        )
        return [dict(row) for row in rows]

    async def answered_call(self, agent_id: str = "1001", caller: str = "5551234") -> Call:
        """`agent_id` logs in and takes a call from `caller`; the caller's Call."""
        self.acd.login(agent_id)
        call = await self.emulator.place_call(caller)
        await self.agent_reaches(agent_id, AgentState.ON_CALL)
        return call

    async def agent_reaches(self, agent_id: str, state: AgentState) -> None:
        await until(lambda: self.acd.agent_state(agent_id) is state, f"{agent_id} -> {state}")


async def until(condition: Callable[[], bool], what: str, limit: float = LIMIT_S) -> None:
    await wait_until(condition, what, limit)


def settings_for(
    tmp: Path, dsn: str, ami_port: int, acd_file: Path, *, fastagi_port: int = 0
) -> Settings:
    return Settings(
        server=ServerSettings(data_dir=str(tmp / "data")),
        ami=AmiSettings(port=ami_port, auth="plain", ping_interval=5.0, action_timeout=5.0),
        fastagi=FastAgiSettings(port=fastagi_port, command_timeout=10.0),
        http=HttpSettings(port=0),
        database=DatabaseSettings(dsn=dsn),
        acd=AcdSettings(config=str(acd_file)),
    )


@contextlib.asynccontextmanager
async def emulated_asterisk(
    *, resume_wait: int = 1, resume_limit: int = 30
) -> AsyncIterator[AsteriskEmulator]:
    dialplan = load_dialplan(
        SHIPPED_DIALPLAN,
        {"CTI_RESUME_WAIT": str(resume_wait), "CTI_RESUME_LIMIT": str(resume_limit)},
    )
    emulator = AsteriskEmulator("127.0.0.1", 0, dialplan=dialplan)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.close()


@contextlib.asynccontextmanager
async def running_server(
    emulator: AsteriskEmulator,
    settings: Settings,
    database: Database,
    *,
    requirements: tuple[SkillRequirement, ...] = (),
    conditions: tuple[AttributeCondition, ...] = (),
) -> AsyncIterator[Centre]:
    """The server started and the emulator's dialplan pointed at its FastAGI port.

    Callers go straight to the support queue, with `requirements` and
    `conditions` of their own as an IVR's queue step would hand them over.
    """
    server = Server(settings)
    await server.start()
    try:
        assert server.queue_entry is not None
        entry = server.queue_entry
        server.agi.route(
            "ivr",
            lambda session: entry.enter(
                session, "support", requirements=requirements, conditions=conditions
            ),
        )
        emulator.pbx.globals["CTISERVER"] = f"127.0.0.1:{server.agi.port}"
        await until(lambda: server.ami.connected, "AMI connected")
        yield Centre(server, emulator, database)
    finally:
        await server.close()


def actions_sent(emulator: AsteriskEmulator, name: str) -> list[dict[str, str]]:
    """The AMI actions called `name` the emulator received, oldest first, as header dicts."""
    return [
        {key: value for key, value in message.items()}
        for message in emulator.ami.received
        if (message.get("Action") or "").lower() == name.lower()
    ]
