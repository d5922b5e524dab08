"""The summary path (metric_stays aggregated in SQL) gives the event fold's report.

Real PostgreSQL: the same events are reported by history.historical_report
(every event folded) and, after `summary.rebuild`, by summary.summary_report.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from ctiserver.cli import main
from ctiserver.metrics.history import historical_report
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.settings import MetricSettings
from ctiserver.metrics.summary import rebuild, summary_complete, summary_report
from ctiserver.store.database import Database
from tests.conftest import truncate_all
from tests.metrics.builder import T0, Log
from tests.metrics.test_history import DAY, HOUR, crossing_range, insert, same

DAY_START = T0 - 9 * HOUR  # local (UTC) midnight of T0's day
AS_OF = T0 + 10 * DAY


def scenario() -> Log:
    """crossing_range, plus a callback, an overflow, and c1's caller transferred later."""
    log = crossing_range()
    log.enter("d1", "billing", 3 * HOUR, caller="5550001")
    log.add("acd.callback_requested", 3 * HOUR + 30, {}, call="d1", queue="billing")
    log.answer("d1", "billing", "A2", 3 * HOUR + 600)
    log.end("d1", "billing", "A2", 3 * HOUR + 700, wrap_until=3 * HOUR + 720)
    log.add("desktop.wrap_up", 3 * HOUR + 710, {"resolved": False}, call="d1", agent="A2")
    log.enter("d2", "support", 4 * HOUR, caller="5550222").left(
        "d2", "support", 4 * HOUR + 40, "overflowed", target="billing"
    )
    log.add("acd.call_queued", 4 * HOUR + 40, {"caller": "5550222"}, call="d2", queue="billing")
    log.answer("d2", "billing", "A1", 4 * HOUR + 50)
    log.end("d2", "billing", "A1", 4 * HOUR + 90)
    at = 2 * DAY
    log.enter("c9", "billing", at, caller="5550001").answer("c9", "billing", "A1", at + 10)
    log.add(
        "acd.transferred",
        at + 60,
        {"from_agent": "A1", "target_kind": "queue", "target": "support"},
        call="c9",
        agent="A1",
        queue="billing",
    )
    log.end("c9", "billing", "A1", at + 60, wrap_until=at + 70)
    log.enter("c9", "support", at + 60).answer("c9", "support", "A2", at + 80)
    log.end("c9", "support", "A2", at + 200, wrap_until=at + 230)
    return log


VARIANTS = [
    MetricSettings(),
    MetricSettings(sl_mode="answered", sl_threshold_s=45),  # type: ignore[arg-type]
    MetricSettings(count_short_abandons=True, short_abandon_s=2),
    MetricSettings(callback_wait="connected_only"),  # type: ignore[arg-type]
    MetricSettings(fcr_scope="any", fcr_window=timedelta(days=1)),  # type: ignore[arg-type]
    MetricSettings(timezone="America/New_York", interval_s=1800),
]


@pytest.mark.parametrize("settings", VARIANTS, ids=range(len(VARIANTS)))
async def test_summary_report_equals_the_event_fold(db: Database, settings: MetricSettings) -> None:
    await insert(db, scenario().events)
    built = await rebuild(db, DAY_START, DAY_START + DAY, settings=settings, as_of=AS_OF)
    assert built.unfinished == 0 and built.stays
    day = (DAY_START, DAY_START + DAY)
    assert await summary_complete(db, *day, settings=settings, as_of=AS_OF)
    assert not await summary_complete(db, day[0], day[1] + 1, settings=settings, as_of=AS_OF)
    for start, end in ((DAY_START, DAY_START + DAY), (T0, T0 + HOUR)):
        for by in ("queue", "skill"):
            for grain in (Grain.INTERVAL, Grain.DAY, Grain.RANGE):
                expected = await historical_report(
                    db, start, end, by=by, grain=grain, settings=settings, as_of=AS_OF
                )
                got = await summary_report(
                    db, start, end, by=by, grain=grain, settings=settings, as_of=AS_OF
                )
                assert got.rows, (by, grain)
                same(got, expected)


async def test_pending_fcr_from_the_summary(db: Database) -> None:
    await insert(db, scenario().events)
    settings = MetricSettings()
    await rebuild(db, DAY_START, DAY_START + DAY, settings=settings, as_of=AS_OF)
    as_of = T0 + 2 * DAY  # c1's window is still open then
    got = await summary_report(
        db, T0, T0 + HOUR, by="queue", grain=Grain.RANGE, settings=settings, as_of=as_of
    )
    support = next(row.figures for row in got.rows if row.key == "support")
    assert support["fcr_pending"] == 3 and support["fcr_repeat_contact"] is None


def test_cli_rebuild_writes_a_day_of_summary_rows(
    pg_dsn: str,
    no_server_config: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CTISERVER_DATABASE_DSN", pg_dsn)
    monkeypatch.setenv("CTISERVER_SERVER_DATA_DIR", str(tmp_path / "data"))

    async def fill() -> None:
        async with await Database.open(pg_dsn) as db:
            await truncate_all(db)
            await insert(db, scenario().events)

    asyncio.run(fill())
    argv = ["metrics", "rebuild", "--from", "2026-03-02", "--timezone", "UTC"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("2026-03-02: 11 stays, ") and out.endswith(" 0 unfinished\n")

    async def count() -> int:
        async with await Database.open(pg_dsn) as db:
            return int(await db.fetchval("SELECT count(*) FROM metric_stays"))

    assert asyncio.run(count()) == 11  # c0-c5, c7, d1, d2 (c3 and d2 twice)


async def test_completeness_of_the_summary(db: Database) -> None:
    log = scenario()
    log.enter("w1", "support", 5 * HOUR, caller="5550999")  # still waiting
    await insert(db, log.events)
    settings = MetricSettings()
    day = (DAY_START, DAY_START + DAY)
    built = await rebuild(db, *day, settings=settings, as_of=AS_OF)
    assert built.unfinished == 1
    assert not await summary_complete(db, *day, settings=settings, as_of=AS_OF)
    # Rebuilding one hour of it keeps the rest of the day's bookkeeping.
    await rebuild(db, T0, T0 + HOUR, settings=settings, as_of=AS_OF)
    assert await summary_complete(db, T0, T0 + HOUR, settings=settings, as_of=AS_OF)
    assert not await summary_complete(db, *day, settings=settings, as_of=AS_OF)
    # A longer FCR window than the rebuild looked through: not known from the rows.
    longer = MetricSettings(fcr_window=timedelta(days=30))
    assert not await summary_complete(db, T0, T0 + HOUR, settings=longer, as_of=T0 + 40 * DAY)
    # Built before the windows closed, asked after: the rows cannot say.
    await rebuild(db, T0, T0 + HOUR, settings=settings, as_of=T0 + DAY)
    assert not await summary_complete(db, T0, T0 + HOUR, settings=settings, as_of=AS_OF)
    assert await summary_complete(db, T0, T0 + HOUR, settings=settings, as_of=T0 + DAY)


async def test_rebuild_ranges_run_between_quarter_hours(db: Database) -> None:
    with pytest.raises(ValueError):
        await rebuild(db, T0 + 60, T0 + HOUR, settings=MetricSettings(), as_of=AS_OF)
