"""What callers hear and where they go: closed queues, announcements, overflow, VIP priority."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ctiserver.acd.model import AgentState
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.events import Event as AmiEvent
from ctiserver.sim.phones import PhonePolicy
from ctiserver.store.customers import create_customer
from ctiserver.store.database import Database
from tests.acd.centre import (
    agent_block,
    emulated_asterisk,
    running_server,
    settings_for,
    until,
    write_acd,
)


class AgiCommands:
    """The FastAGI commands each channel ran, from the emulator's AGIExecStart events."""

    def __init__(self, emulator: AsteriskEmulator) -> None:
        self.by_channel: dict[str, list[str]] = {}
        emulator.add_listener(self._seen)

    def _seen(self, event: AmiEvent) -> None:
        if event.name == "AGIExecStart":
            channel = event.get("Channel") or ""
            self.by_channel.setdefault(channel, []).append(event.get("Command") or "")


async def test_closed_queue_says_so_and_lets_the_caller_go(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    hours = f"""
when_closed = "close"
[queues.hours]
timezone = "UTC"
mon-sun = "00:00-24:00"
closed = ["{today}"]
"""
    acd = write_acd(tmp_path, agent_block("1001"), queue_extra=hours)
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001")
        commands = AgiCommands(emulator)
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            centre.acd.login("1001")
            call = await emulator.place_call("5551234")
            await call.ended
            events = await centre.events(call.uniqueid)
            assert centre.acd.agent_state("1001") is AgentState.AVAILABLE
    outcomes = [e["payload"]["outcome"] for e in events if e["type"] == "acd.call_left"]  # type: ignore[index]
    assert outcomes == ["closed"]
    played = commands.by_channel[call.name]
    assert any(c.startswith("STREAM FILE tt-allbusy") for c in played), played
    assert played[-1] == "HANGUP"


async def test_waiting_callers_hear_their_position(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001"), announce_every=30)
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001")
        commands = AgiCommands(emulator)
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            first = await emulator.place_call("5551111")
            await until(lambda: first.uniqueid in centre.acd.calls, "first queued")
            second = await emulator.place_call("5552222")
            await until(
                lambda: "SET MUSIC ON default" in commands.by_channel.get(second.name, []),
                "second caller's announcement done",
            )
    assert any(
        c.startswith("STREAM FILE queue-youarenext") for c in commands.by_channel[first.name]
    )
    heard = commands.by_channel[second.name]
    there_are = next(i for i, c in enumerate(heard) if c.startswith("STREAM FILE queue-thereare"))
    assert heard[there_are + 1].startswith("SAY NUMBER 1 ")
    assert heard[there_are + 2].startswith("STREAM FILE queue-callswaiting")


async def test_vip_caller_is_served_before_an_earlier_standard_caller(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    await create_customer(db, name="陈大文", phones=["+86 139 0013 9000"], grade="vip")
    acd = write_acd(tmp_path, agent_block("1001"))
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.2, talk_time=0.3))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            standard = await emulator.place_call("5551234")
            await until(lambda: standard.uniqueid in centre.acd.calls, "standard queued")
            vip = await emulator.place_call("13900139000", "陈大文")
            await until(lambda: vip.uniqueid in centre.acd.calls, "vip queued")
            assert centre.acd.engine.call(vip.uniqueid).priority == 10
            centre.acd.login("1001")
            await standard.ended
            events = await centre.events()
    offered = [e["call_id"] for e in events if e["type"] == "acd.offer"]
    assert offered == [vip.uniqueid, standard.uniqueid]


OVERFLOW_ACD = """
[skills]
billing = "账单"
sales = "销售"

[[queues]]
name = "support"
ring_timeout = 2
wrap_up = 0
announce_every = 0

[[queues.steps]]
duration = 1
require = { billing = 1 }
then = ["overflow sales"]

[[queues]]
name = "sales"
ring_timeout = 2
wrap_up = 0
announce_every = 0

[[queues.steps]]
require = { sales = 1 }

[[agents]]
id = "1001"
name = "账单组"
endpoint = "PJSIP/agent1001"
skills = { billing = 5 }
queues = ["support"]

[[agents]]
id = "1002"
name = "销售组"
endpoint = "PJSIP/agent1002"
skills = { sales = 5 }
queues = ["sales"]
"""


async def test_unanswered_call_overflows_and_keeps_its_wait(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = tmp_path / "acd.toml"
    acd.write_text(OVERFLOW_ACD, encoding="utf-8")
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001")
        emulator.add_agent_phone("agent1002", PhonePolicy(ring_time=0.2, talk_time=0.3))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            centre.acd.login("1002")  # nobody for billing: after 1 s the call moves to sales
            call = await emulator.place_call("5551234")
            await call.ended
            events = await centre.events(call.uniqueid)
    left = [e["payload"] for e in events if e["type"] == "acd.call_left"]
    assert [(p["outcome"], p["target_queue"]) for p in left] == [  # type: ignore[index]
        ("overflowed", "sales"),
        ("answered", None),
    ]
    queued = [e for e in events if e["type"] == "acd.call_queued"]
    assert [e["queue_id"] for e in queued] == ["support", "sales"]
    waits = {e["payload"]["virtual_enqueued_at"] for e in queued}  # type: ignore[index]
    assert len(waits) == 1
    offers = [e["agent_id"] for e in events if e["type"] == "acd.offer"]
    assert offers == ["1002"]


async def test_unstaffed_queue_takes_a_voicemail_linked_to_the_call(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001"), queue_extra='when_unstaffed = "voicemail"')
    async with emulated_asterisk() as emulator:
        commands = AgiCommands(emulator)
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            # Nobody logged in: the caller is not left waiting for nobody.
            call = await emulator.place_call("13800138000", "张三")
            await call.ended
            events = await centre.events(call.uniqueid)
    outcomes = [e["payload"]["outcome"] for e in events if e["type"] == "acd.call_left"]  # type: ignore[index]
    assert outcomes == ["voicemail"]
    [voicemail] = [e["payload"] for e in events if e["type"] == "acd.voicemail"]
    assert voicemail["file"] == f"/var/spool/asterisk/monitor/cti-vm-{call.uniqueid}.wav"  # type: ignore[index]
    assert voicemail["samples"] > 0  # type: ignore[index]
    heard = commands.by_channel[call.name]
    assert any(c.startswith("RECORD FILE /var/spool/asterisk/monitor/cti-vm-") for c in heard)
