"""Real-time figures (ctiserver/metrics/live.py) equal the historical ones for the same period.

Events go through a real EventLog into the real `events` table; LiveMetrics
loads today's part at start and follows the rest as it is appended. Its
figures for today and for the sliding window are compared with
`history.historical_report` of the same period, as of the same instant.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ctiserver.acd.model import AgentState
from ctiserver.metrics.facts import MetricEvent
from ctiserver.metrics.history import historical_report
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.live import MAX_LOOP_SHARE, LiveMetrics, local_day, next_tick_delay
from ctiserver.metrics.reports import Report
from ctiserver.metrics.settings import MetricSettings
from ctiserver.sim.phones import PhonePolicy
from ctiserver.store.database import Database
from ctiserver.store.events import Event, EventLog
from tests.acd.centre import agent_block, emulated_asterisk, running_server, settings_for, write_acd
from tests.metrics.builder import T0, Log
from tests.store.test_outage import Outage, flush, new_log

# The fixture, re-exported so that pytest finds it here.
from tests.store.test_outage import outage as outage

HOUR = 3600.0
SETTINGS = MetricSettings(timezone="Asia/Shanghai")  # 09:00 UTC is 17:00 there
DAY_START, DAY_END = local_day(T0, SETTINGS)


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def as_event(e: MetricEvent) -> Event:
    return Event(
        type=e.type,
        payload=dict(e.payload),
        call_id=e.call_id,
        agent_id=e.agent_id,
        queue_id=e.queue_id,
        occurred_at=datetime.fromtimestamp(e.occurred_at, UTC),
    )


def append(log: EventLog, events: Iterable[MetricEvent]) -> None:
    for e in sorted(events, key=lambda e: e.occurred_at):
        log.append(as_event(e))


def busy_day(seed: int, start: float, end: float, prefix: str = "c") -> Log:
    """Calls to two queues between `start` and `end` (seconds from T0), as the ACD writes
    them: answers, holds, wrap-ups, transfers, abandons short and long, callbacks."""
    rng = random.Random(seed)
    log = Log()
    agents = ["A1", "A2", "A3"]
    free_at = dict.fromkeys(agents, start - 600)
    for agent in agents:
        log.state(agent, start - 600, "available")
    at = start
    n = 0
    while at < end:
        n += 1
        call, queue = f"{prefix}{n}", rng.choice(["support", "billing"])
        caller = f"55500{rng.randrange(20):02d}"
        log.enter(call, queue, at, caller=caller)
        kind = rng.random()
        if kind < 0.12:
            log.left(call, queue, at + rng.choice([2.0, 30.0]), "abandoned")
        else:
            callback = kind < 0.18
            if callback:  # the customer is called back a minute and a half later
                log.add(
                    "acd.callback_requested", at + 5, {"number": caller}, call=call, queue=queue
                )
            agent = min(agents, key=lambda a: free_at[a])
            answer = max(at + (90 if callback else rng.uniform(1, 40)), free_at[agent] + 1)
            log.answer(call, queue, agent, answer)
            talk_end = answer + rng.uniform(30, 200)
            if rng.random() < 0.3:
                log.add("acd.hold", answer + 10, {}, call=call, agent=agent, queue=queue)
                log.add("acd.unhold", answer + 20, {}, call=call, agent=agent, queue=queue)
            if rng.random() < 0.15:
                other = "billing" if queue == "support" else "support"
                log.add(
                    "acd.transferred",
                    talk_end,
                    {"from_agent": agent, "target_kind": "queue", "target": other},
                    call=call,
                    agent=agent,
                    queue=queue,
                )
                log.end(call, queue, agent, talk_end, wrap_until=talk_end + 5)
                log.enter(call, other, talk_end)
                log.left(call, other, talk_end + 12, "abandoned")
                free_at[agent] = talk_end + 5
            else:
                wrap = talk_end + rng.uniform(5, 30)
                log.end(call, queue, agent, talk_end, wrap_until=wrap)
                resolved = rng.random() < 0.7
                log.add("desktop.wrap_up", wrap - 1, {"resolved": resolved}, call=call, agent=agent)
                free_at[agent] = wrap
        at += rng.uniform(20, 120)
    return log


def flat(figures: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in figures.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def same(live: Mapping[str, Any], historical: Mapping[str, Any], what: str) -> None:
    a, b = flat(live), flat(historical)
    assert a == pytest.approx(b, abs=1e-6), what


async def history(
    db: Database, start: float, end: float, by: str, as_of: float, settings: MetricSettings
) -> Report:
    return await historical_report(
        db, start, end, by=by, grain=Grain.RANGE, settings=settings, as_of=as_of
    )


async def assert_matches_history(
    db: Database,
    snapshot: Mapping[str, Any],
    settings: MetricSettings = SETTINGS,
) -> int:
    """Today's and the window's figures equal the historical ones; the offered calls compared."""
    at = snapshot["as_of_ts"]
    day_start, day_end = local_day(at, settings)
    periods = {"today": (day_start, day_end), "window": (at - settings.window_s, at)}
    compared = 0
    for period, (start, end) in periods.items():
        queues = await history(db, start, end, "queue", at, settings)
        for row in queues.rows:
            assert row.key is not None
            same(snapshot["queues"][row.key][period], row.figures, f"{period} {row.key}")
            compared += row.figures["offered"]
        for name, entry in snapshot["queues"].items():
            if name not in {row.key for row in queues.rows}:
                assert entry[period]["offered"] == 0, (period, name)
        [centre] = (await history(db, start, end, "centre", at, settings)).rows
        live = dict(snapshot["centre"][period])
        live_agents = live.pop("agents")
        same(live, centre.figures, f"{period} centre")
        same(live_agents, centre.agent_figures or {}, f"{period} centre agents")
        agents = await history(db, start, end, "agent", at, settings)
        for row in agents.rows:
            assert row.key is not None
            same(snapshot["agents"][row.key][period], row.figures, f"{period} {row.key}")
    await assert_series_matches_history(db, snapshot, settings)
    return compared


def series(entries: Iterable[Mapping[str, Any]]) -> dict[float, tuple[Any, ...]]:
    """Interval start -> (offered, answered, service level), intervals with calls only."""
    return {
        e["start_ts"]: (
            e["offered"],
            e["answered"],
            None if e["service_level"] is None else round(e["service_level"], 9),
        )
        for e in entries
        if e["offered"] or e["answered"]
    }


async def assert_series_matches_history(
    db: Database, snapshot: Mapping[str, Any], settings: MetricSettings
) -> None:
    """Today by interval (the wallboard's chart) equals the historical interval report."""
    at = snapshot["as_of_ts"]
    day_start, _ = local_day(at, settings)
    live = snapshot["intervals"]
    for by in ("queue", "centre"):
        report = await historical_report(
            db, day_start, at + 1.0, by=by, grain=Grain.INTERVAL, settings=settings, as_of=at
        )
        wanted: dict[str | None, list[dict[str, Any]]] = {}
        for row in report.rows:
            wanted.setdefault(row.key if by == "queue" else None, []).append(
                {"start_ts": row.start, **row.figures}
            )
        if by == "centre":
            assert series(live["centre"]) == series(wanted.get(None, []))
        else:
            for name in set(wanted) | set(live["queues"]):
                got = series(live["queues"].get(name, []))
                assert got == series(wanted.get(name, [])), name


@pytest.fixture
async def event_log(db: Database, data_dir: Path) -> Any:
    log = EventLog(db, data_dir, linger=0.0)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


def live_metrics(db: Database, log: EventLog, clock: Clock, **options: Any) -> LiveMetrics:
    options.setdefault("settings", SETTINGS)
    options.setdefault("settle_s", 60.0)
    options.setdefault("series_s", 0.0)  # the interval series as of every refresh
    options.setdefault("agents_s", 0.0)  # and each agent's figures
    options.setdefault("reload_gap_s", 0.0)  # a late event's reload at once
    return LiveMetrics(db, log, clock=clock, tick_s=3600, **options)


async def test_live_figures_equal_history_after_the_same_events(
    db: Database, event_log: EventLog
) -> None:
    clock = Clock(T0 + HOUR)
    # Yesterday (not today), then the day until two hours ago: read at start; then live.
    midnight = DAY_START - T0
    append(event_log, busy_day(1, midnight - 5000, midnight - 600, "y").events)
    append(event_log, busy_day(2, midnight + 60, -2 * HOUR, "m").events)
    live = live_metrics(db, event_log, clock)
    await live.start()
    try:
        assert live.loaded and live.events_loaded > 0
        after = busy_day(3, -HOUR, HOUR - 900, "a")
        # A call still waiting and an agent still on a call at the instant compared.
        after.enter("w1", "support", HOUR - 100, caller="5559999")
        after.enter("t1", "billing", HOUR - 250, caller="5558888").answer(
            "t1", "billing", "A9", HOUR - 240
        )
        append(event_log, after.events)
        assert await live.catch_up()
        snapshot = live.snapshot()
        # The settled part of the day was folded once and left behind.
        assert live.settled_until > DAY_START
        await event_log.flush()
        assert await assert_matches_history(db, snapshot) > 20
        assert snapshot["queues"]["support"]["now"]["waiting"] == 1
        assert snapshot["queues"]["support"]["now"]["longest_wait_s"] == pytest.approx(100)
        assert snapshot["agents"]["A9"]["now"]["state"] == "on_call"
        assert snapshot["variants"] == SETTINGS.describe()
        staffing = snapshot["queues"]["support"]["staffing"]
        assert staffing["required"] >= 1 and staffing["calls_per_hour"] > 0
        # Nothing new, same second: nothing recomputed... but time moves the waits.
        assert not await live.catch_up(clock.at)
        clock.at += 1
        assert await live.catch_up()
        assert live.snapshot()["queues"]["support"]["now"]["longest_wait_s"] == pytest.approx(101)
        await assert_matches_history(db, live.snapshot())

        # Restart: a new LiveMetrics loads today's events and gives the same figures.
        again = live_metrics(db, event_log, clock)
        await again.start()
        try:
            first, second = live.snapshot(), again.snapshot()
            for period in ("today", "window"):
                same(second["centre"][period], first["centre"][period], period)
                for name in first["queues"]:
                    same(second["queues"][name][period], first["queues"][name][period], name)
                for agent in first["agents"]:
                    same(second["agents"][agent][period], first["agents"][agent][period], agent)
        finally:
            await again.close()
    finally:
        await live.close()


@pytest.mark.parametrize("fcr_minutes", [7 * 24 * 60, 20], ids=["fcr-7-days", "fcr-20-min"])
async def test_running_sums_equal_history_at_every_step(
    db: Database, event_log: EventLog, fcr_minutes: int
) -> None:
    """Events arrive as time passes, a few minutes at a time; at each step the running
    sums (calls counted again as they change, parts leaving the window, agents' time
    split at its start, holds and calls still open, FCR verdicts turning final with a
    short window) give the historical figures of the same instant."""
    settings = MetricSettings(timezone="Asia/Shanghai", fcr_window=timedelta(minutes=fcr_minutes))
    clock = Clock(T0 - 2 * HOUR)
    live = live_metrics(db, event_log, clock, settings=settings)
    await live.start()
    try:
        day = busy_day(6, -2 * HOUR, -10 * 60, "r")
        # Waits past the SL threshold between two events, and between two steps.
        day.enter("patient", "support", -2 * HOUR + 4 * 263.0 - 5, caller="5557777")
        day.left("patient", "support", -2 * HOUR + 7 * 263.0, "abandoned")
        events = sorted(day.events, key=lambda e: e.occurred_at)
        step, compared = 0, 0
        while events:
            step += 1
            clock.at += 263.0  # not a divisor of the window: parts leave it mid-step
            due = [e for e in events if e.occurred_at < clock.at]
            events = events[len(due) :]
            append(event_log, due)
            await live.catch_up()
            if step % 3 == 0 or not events:
                await event_log.flush()
                compared += await assert_matches_history(db, live.snapshot(), settings)
        assert compared > 50
        assert live.rebuilds == 1 and live.reloads == 0  # counted as it went, never again
    finally:
        await live.close()


def late_wrap_up(call_id: str, *, resolved: bool, at: float) -> Event:
    """Agent A1's wrap-up report for `call_id`, made at `at`."""
    return Event(
        "desktop.wrap_up",
        {"resolved": resolved},
        call_id=call_id,
        agent_id="A1",
        occurred_at=datetime.fromtimestamp(at, UTC),
    )


async def test_a_late_event_for_a_settled_call_rebuilds_and_stays_exact(
    db: Database, event_log: EventLog
) -> None:
    clock = Clock(T0)
    live = live_metrics(db, event_log, clock)
    await live.start()
    try:
        day = busy_day(4, -3 * HOUR, -HOUR, "s")
        append(event_log, day.events)
        await live.catch_up()
        edge, rebuilds, reloads = live.settled_until, live.rebuilds, live.reloads
        assert edge > T0 - 3 * HOUR
        # What settled before F was summed and pruned: the fold holds recent facts only.
        assert live.held_facts < len(day.events) / 10
        # A wrap-up report for the first call, long after it settled.
        event_log.append(late_wrap_up("s1", resolved=False, at=T0 - 10))
        assert await live.catch_up()
        # The call was pruned: today's events were read again, then the totals rebuilt.
        assert (live.reloads, live.rebuilds) == (reloads + 1, rebuilds + 1)
        await event_log.flush()
        await assert_matches_history(db, live.snapshot())
    finally:
        await live.close()


async def test_a_reload_during_a_database_outage_keeps_the_figures_and_retries(
    outage: Outage, data_dir: Path
) -> None:
    clock = Clock(T0)
    log = new_log(outage, data_dir)
    await log.start()
    live = live_metrics(outage.db, log, clock, flush_timeout_s=0.5)
    try:
        await live.start()
        append(log, busy_day(5, -3 * HOUR, -HOUR, "o").events)
        await live.catch_up()
        offered = live.snapshot()["centre"]["today"]["offered"]
        assert offered > 10
        reloads = live.reloads
        await outage.stop()
        # A late wrap-up for a call already pruned asks for today's events: not readable now.
        log.append(late_wrap_up("o1", resolved=True, at=T0 - 5))
        await live.catch_up()
        assert live.reloads == reloads + 1
        assert live.snapshot()["centre"]["today"]["offered"] == offered  # kept, not emptied
        await outage.start()
        await flush(log)
        assert await live.catch_up()  # tried again: read and exact
        assert live.reloads == reloads + 2
        await assert_matches_history(outage.db, live.snapshot())
    finally:
        await live.close()
        await log.close()


async def test_the_window_drops_calls_as_time_passes(db: Database, event_log: EventLog) -> None:
    clock = Clock(T0)
    live = live_metrics(db, event_log, clock)
    await live.start()
    try:
        log = Log()
        log.state("A1", -60, "available")
        log.enter("c1", "support", -600).answer("c1", "support", "A1", -590)
        log.end("c1", "support", "A1", -500, wrap_until=-490)
        append(event_log, log.events)
        await live.catch_up()
        window = live.snapshot()["queues"]["support"]["window"]
        assert (window["offered"], window["answered"]) == (1, 1)
        clock.at = T0 + 290  # the call entered 890 s ago: still in the 900 s window
        await live.catch_up()
        assert live.snapshot()["queues"]["support"]["window"]["offered"] == 1
        clock.at = T0 + 301  # 901 s: out of the window, still today
        assert await live.catch_up()
        snapshot = live.snapshot()
        assert snapshot["queues"]["support"]["window"]["offered"] == 0
        assert snapshot["queues"]["support"]["window"]["asa_s"] is None  # null, never 0
        assert snapshot["queues"]["support"]["today"]["offered"] == 1
        await event_log.flush()
        await assert_matches_history(db, snapshot)
    finally:
        await live.close()


async def test_midnight_rollover(db: Database, event_log: EventLog) -> None:
    midnight = DAY_END
    clock = Clock(midnight - 20 * 60)
    live = live_metrics(db, event_log, clock)
    await live.start()
    try:
        log = Log()
        base = midnight - T0
        log.state("A1", base - 1800, "available")
        log.enter("late", "support", base - 600).answer("late", "support", "A1", base - 590)
        log.end("late", "support", "A1", base - 400, wrap_until=base - 390)
        # Entered before midnight, still waiting after it; and one after midnight.
        log.enter("cross", "billing", base - 120)
        append(event_log, log.events)
        await live.catch_up()
        assert live.snapshot()["queues"]["support"]["today"]["offered"] == 1
        clock.at = midnight + 60
        after = Log()
        after.answer("cross", "billing", "A1", base + 30)
        after.enter("new", "support", base + 40)
        append(event_log, after.events)
        assert await live.catch_up()
        snapshot = live.snapshot()
        assert snapshot["today"]["from"].startswith(
            datetime.fromtimestamp(midnight, SETTINGS.zone).date().isoformat()
        )
        today, window = snapshot["centre"]["today"], snapshot["centre"]["window"]
        assert today["offered"] == 1  # only "new": "late" and "cross" entered yesterday
        assert window["offered"] == 3  # the last 15 minutes run across midnight
        assert snapshot["agents"]["A1"]["today"]["logged_in_s"] == pytest.approx(60)
        await event_log.flush()
        await assert_matches_history(db, snapshot)
        clock.at = midnight + 14 * 60  # the window starts a minute before midnight now
        assert await live.catch_up()
        assert live.snapshot()["centre"]["window"]["offered"] == 1  # only "new"
        await assert_matches_history(db, live.snapshot())
    finally:
        await live.close()


async def test_observers_never_block_nor_break_append(
    db: Database, event_log: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("observer bug")

    remove_broken = event_log.add_observer(broken)
    event_log.add_observer(lambda event: seen.append(event.type))
    clock = Clock(T0)
    live = live_metrics(db, event_log, clock)
    await live.start()

    listened: list[int] = []

    def slow_listener(snapshot: Mapping[str, Any]) -> None:
        listened.append(snapshot["queues"]["support"]["now"]["waiting"])
        time.sleep(0.3)  # a wallboard that takes its time

    live.add_listener(slow_listener)
    try:
        log = Log()
        for n in range(200):
            log.enter(f"c{n}", "support", -600 + n)
        append(event_log, log.events)
        assert listened == []  # append only queued the events: no listener ran in it
        assert len(seen) == 400  # caller_entered and call_queued each
        assert "observer bug" in caplog.text
        remove_broken()
        await event_log.flush()
        assert await db.fetchval("SELECT count(*) FROM events") == 400
        assert await live.catch_up()  # the slow part runs here, in the ticker's turn
        assert listened == [200]
        assert live.snapshot()["queues"]["support"]["now"]["waiting"] == 200
    finally:
        await live.close()


async def test_the_ticker_refreshes_listeners_and_is_cancelled_on_close(
    db: Database, event_log: EventLog
) -> None:
    live = LiveMetrics(db, event_log, settings=SETTINGS, tick_s=0.05)
    await live.start()
    got: list[dict[str, Any]] = []
    live.add_listener(got.append)
    event_log.append(Event("acd.caller_entered", {"caller": "5551"}, call_id="x", queue_id="q"))
    for _ in range(100):
        if got and got[-1]["queues"].get("q", {}).get("now", {}).get("waiting") == 1:
            break
        await asyncio.sleep(0.02)
    assert got[-1]["queues"]["q"]["now"]["waiting"] == 1
    task = live._task
    await live.close()
    assert task is not None and task.cancelled()
    count = len(got)
    event_log.append(Event("acd.call_left", {"outcome": "abandoned"}, call_id="x", queue_id="q"))
    await asyncio.sleep(0.15)
    assert len(got) == count  # closed: no observer, no ticker


async def test_live_equals_history_on_the_real_server(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    acd = write_acd(tmp_path, agent_block("1001", "王小明"))
    settings = MetricSettings()
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.3, talk_time=1.0))
        server_settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, server_settings, db) as centre:
            assert centre.server.events is not None
            live = LiveMetrics(
                db,
                centre.server.events,
                settings=settings,
                config=centre.acd.config,
                engine=centre.acd.engine.snapshot,
                series_s=0.0,
                agents_s=0.0,
            )
            await live.start()
            try:
                centre.acd.login("1001")
                centre.acd.make_not_ready("1001", "briefing")
                gone = await emulator.place_call("5550000", hangup_after=1.0)
                await gone.ended
                centre.acd.make_available("1001")
                call = await emulator.place_call("13800138000", "张三")
                await centre.agent_reaches("1001", AgentState.ON_CALL)
                await call.ended
                await centre.agent_reaches("1001", AgentState.AVAILABLE)
                await centre.server.events.flush()
                assert await live.catch_up(time.time())
                snapshot = live.snapshot()
                assert snapshot["source"] == "acd"
                support = snapshot["queues"]["support"]
                assert support["today"]["answered"] == 1
                assert support["today"]["short_abandoned"] == 1
                assert support["now"]["agents_logged_in"] == 1
                assert snapshot["agents"]["1001"]["now"]["state"] == "available"
                assert snapshot["agents"]["1001"]["today"]["calls_handled"] == 1
                assert await assert_matches_history(db, snapshot, settings) == 2  # today + window
            finally:
                await live.close()


def test_slow_refreshes_space_the_ticks_out() -> None:
    """Figures every tick while refreshes are quick; after a slow one, rest so that
    refreshing takes at most MAX_LOOP_SHARE of the loop."""
    assert next_tick_delay(1.0, 0.0) == 1.0
    assert next_tick_delay(1.0, 0.1) == 1.0
    slow = next_tick_delay(1.0, 0.5)
    assert slow > 1.0
    assert 0.5 / (0.5 + slow) == pytest.approx(MAX_LOOP_SHARE)
