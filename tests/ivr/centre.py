"""A contact centre for IVR tests: the real Server (PostgreSQL, event log, FastAGI, AMI,
ACD, IVR) and the Asterisk emulator running the shipped dialplan, on real sockets.

Callers are driven by what the IVR does, not by a timetable: a test waits until
the call's run reaches a node, then keys digits or hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctiserver.app import Server
from ctiserver.config import IvrSettings
from ctiserver.ivr.runner import FlowRun
from ctiserver.ivr.service import IvrService
from ctiserver.sim.dialplan_file import load_dialplan
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.events import Event as AmiEvent
from ctiserver.sim.phones import Call
from ctiserver.store.database import Database
from tests.acd.centre import SHIPPED_DIALPLAN, settings_for, until

# Emulated seconds per real second: a 2 s prompt plays in 0.2 s.
SPEED = 10.0

ACD = """
[grades]
vip = 10

[skills]
mandarin = "普通话"
english = "English"

[[queues]]
name = "support"
ring_timeout = 5
wrap_up = 0.5
{agents}
"""


def agent(agent_id: str, *, skills: str = "mandarin = 5", attributes: str = "") -> str:
    return f"""
[[agents]]
id = "{agent_id}"
name = "坐席 {agent_id}"
endpoint = "PJSIP/agent{agent_id}"
skills = {{ {skills} }}
attributes = {{ {attributes} }}
queues = ["support"]
"""


@dataclass
class IvrCentre:
    server: Server
    emulator: AsteriskEmulator
    database: Database
    flows: Path
    # AGI commands as AMI's AGIExecStart shows them, per channel name.
    commands: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ivr(self) -> IvrService:
        assert self.server.ivr is not None
        return self.server.ivr

    async def call(
        self, caller: str = "13800138000", name: str = "张三", *, exten: str = "95588"
    ) -> Call:
        return await self.emulator.place_call(caller, name, exten=exten)

    async def reaches(self, call: Call, node: str) -> FlowRun:
        """Wait until the call's flow is running `node`."""

        def there() -> bool:
            run = self.ivr.active.get(call.uniqueid)
            return run is not None and run.node.id == node

        await until(there, f"call {call.uniqueid} at node {node!r}")
        return self.ivr.active[call.uniqueid]

    def press(self, call: Call, digits: str) -> None:
        self.emulator.send_dtmf(call.name, digits)

    def hang_up(self, call: Call) -> None:
        self.emulator.hangup(call.name)

    async def events(self, call: Call, prefix: str = "ivr.") -> list[dict[str, Any]]:
        assert self.server.events is not None
        await self.server.events.flush()
        rows = await self.database.fetch(
            "SELECT type, agent_id, queue_id, payload FROM events"
            " WHERE call_id = $1 AND type LIKE $2 ORDER BY occurred_at, id",
            call.uniqueid,
            prefix + "%",
        )
        return [dict(row) for row in rows]

    async def record(self, call: Call) -> dict[str, Any]:
        """The call's IVR record (its `ivr.ended` event), once written."""
        found: list[dict[str, Any]] = []

        async def ended() -> bool:
            events = await self.events(call, "ivr.ended")
            found[:] = [e["payload"] for e in events]
            return bool(found)

        for _ in range(150):
            if await ended():
                return found[-1]
            await asyncio.sleep(0.1)
        raise AssertionError(f"no ivr.ended for call {call.uniqueid}")

    def sent(self, call: Call) -> list[str]:
        return self.commands.get(call.name, [])

    async def until_sent(self, call: Call, command: str, times: int = 1) -> None:
        """Wait until Asterisk got `times` AGI commands starting with `command` on the call."""

        def sent() -> bool:
            return sum(c.startswith(command) for c in self.sent(call)) >= times

        await until(sent, f"{command} x{times}")


def write_flows(folder: Path, flows: Mapping[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for flow_id, text in flows.items():
        (folder / f"{flow_id}.yaml").write_text(text, encoding="utf-8")
    return folder


@contextlib.asynccontextmanager
async def ivr_centre(
    tmp: Path,
    dsn: str,
    database: Database,
    flows: Mapping[str, str],
    *,
    agents: str = "",
    default: str = "",
    speed: float = SPEED,
) -> AsyncIterator[IvrCentre]:
    folder = write_flows(tmp / "flows", flows)
    acd = tmp / "acd.toml"
    acd.write_text(ACD.format(agents=agents), encoding="utf-8")
    emulator = AsteriskEmulator(
        "127.0.0.1", 0, dialplan=load_dialplan(SHIPPED_DIALPLAN), speed=speed
    )
    await emulator.start()
    try:
        settings = dataclasses.replace(
            settings_for(tmp, dsn, emulator.ami_port, acd),
            ivr=IvrSettings(flows=str(folder), default=default, reload_s=0.1),
        )
        server = Server(settings)
        await server.start()
        try:
            emulator.pbx.globals["CTISERVER"] = f"127.0.0.1:{server.agi.port}"
            centre = IvrCentre(server, emulator, database, folder)

            def note(event: AmiEvent) -> None:
                if event.name == "AGIExecStart":
                    headers = dict(event.headers)
                    centre.commands.setdefault(headers.get("Channel", ""), []).append(
                        headers.get("Command", "")
                    )

            emulator.add_listener(note)
            await until(lambda: server.ami.connected, "AMI connected")
            yield centre
        finally:
            await server.close()
    finally:
        await emulator.close()
