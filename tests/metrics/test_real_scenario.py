"""Events written by the real server (ACD against the Asterisk emulator, tests/acd/centre.py)
folded into figures: the fold understands what the system really writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctiserver.acd.model import AgentState
from ctiserver.metrics.facts import MetricEvent
from ctiserver.metrics.figures import agent_report, queue_report
from ctiserver.metrics.fold import MetricFold
from ctiserver.metrics.settings import MetricSettings
from ctiserver.sim.phones import PhonePolicy
from ctiserver.store.database import Database
from tests.acd.centre import (
    CALLBACK_STEPS,
    Centre,
    agent_block,
    emulated_asterisk,
    running_server,
    settings_for,
    until,
    write_acd,
)


async def stored_events(centre: Centre) -> list[MetricEvent]:
    """Every event as the historical part will read them: table order."""
    assert centre.server.events is not None
    await centre.server.events.flush()
    rows = await centre.database.fetch(
        "SELECT event_key, occurred_at, type, call_id, agent_id, queue_id, payload"
        " FROM events ORDER BY occurred_at, id"
    )
    return [MetricEvent.from_row(dict(row)) for row in rows]


async def test_answered_call_and_short_abandon_from_the_real_server(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001", "王小明"))
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.3, talk_time=1.0))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            centre.acd.login("1001")
            centre.acd.make_not_ready("1001", "briefing")
            gone = await emulator.place_call("5550000", hangup_after=1.0)
            await gone.ended
            await until(lambda: gone.uniqueid not in centre.acd.calls, "abandon forgotten")
            centre.acd.make_available("1001")
            call = await emulator.place_call("13800138000", "张三")
            await centre.agent_reaches("1001", AgentState.ON_CALL)
            await call.ended
            await centre.agent_reaches("1001", AgentState.WRAP_UP)
            await centre.agent_reaches("1001", AgentState.AVAILABLE)
            events = await stored_events(centre)
    fold = MetricFold()
    fold.apply_all(events)
    assert not fold.skipped, fold.unknown_types  # every event it reads was understood
    first, last = events[0].occurred_at, events[-1].occurred_at
    metric_settings = MetricSettings()
    [row] = queue_report(fold, first - 1, last + 1, settings=metric_settings, as_of=last + 1)
    f = row.figures
    assert row.key == "support"
    assert (f["short_abandoned"], f["offered"], f["answered"], f["abandoned"]) == (1, 1, 1, 0)
    stay = next(s for s in fold.stays if s.call_id == call.uniqueid)
    connected = next(e for e in events if e.type == "acd.connected" and e.call_id == call.uniqueid)
    assert stay.answered_at == connected.occurred_at and stay.agent_id == "1001"
    assert f["asa_s"] == pytest.approx(connected.occurred_at - stay.entered_at)
    assert 0.3 <= f["asa_s"] < 5  # the agent's phone rang 0.3 s: part of the wait
    [handling] = fold.handlings
    assert handling.complete
    assert 0.3 <= handling.acw_s < 2  # wrap-up of 0.5 s, ended by its timer
    assert f["aht_s"] == pytest.approx(handling.talk_s + handling.acw_s)
    [agent] = agent_report(fold, first - 1, last + 1, settings=metric_settings, as_of=last + 1)
    a = agent.figures
    assert a["calls_handled"] == 1
    assert a["not_ready_by_reason"]["briefing"] > 1.0
    # State time runs from the engine's instants, the handling from acd.connected
    # (the controller's clock): they differ by well under a millisecond.
    assert a["talk_s"] == pytest.approx(handling.talk_s, abs=0.01)
    assert a["acw_s"] == pytest.approx(handling.acw_s, abs=0.01)
    assert 0 < a["occupancy"] < 1


async def test_callback_from_the_real_server_is_answered_with_its_whole_wait(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001", "王小明"), steps=CALLBACK_STEPS)
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.2, talk_time=0.5))
        emulator.add_phone("pstn", PhonePolicy(ring_time=0.2))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            first = await emulator.place_call("5551234", "张三", dtmf=[(3.0, "1")])
            await first.ended
            await until(
                lambda: centre.acd.engine.call(first.uniqueid).callback_number == "5551234",
                "callback kept",
            )
            centre.acd.login("1001")
            await until(lambda: first.uniqueid not in centre.acd.calls, "callback served")
            await centre.agent_reaches("1001", AgentState.AVAILABLE)
            events = await stored_events(centre)
    fold = MetricFold()
    fold.apply_all(events)
    assert not fold.skipped, fold.skipped
    [stay] = fold.stays
    assert stay.callback and stay.outcome == "answered"
    end = events[-1].occurred_at + 1
    [row] = queue_report(fold, stay.entered_at, end, settings=MetricSettings(), as_of=end)
    assert (row.figures["answered"], row.figures["abandoned"], row.figures["callbacks"]) == (
        1,
        0,
        1,
    )
    assert stay.answered_at is not None and stay.callback_requested_at is not None
    assert row.figures["asa_s"] == pytest.approx(stay.answered_at - stay.entered_at)
    assert row.figures["asa_s"] > stay.callback_requested_at - stay.entered_at
