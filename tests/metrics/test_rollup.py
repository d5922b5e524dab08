"""The 15-minute queue totals (rollup.py) give the event fold's report, or decline.

Real PostgreSQL: events reported by history.historical_report and, after
summary.rebuild, by rollup.rollup_report and by report_source.report.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from ctiserver.metrics.history import historical_report
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.report_source import report
from ctiserver.metrics.rollup import rollup_report
from ctiserver.metrics.settings import MetricSettings
from ctiserver.metrics.summary import rebuild
from ctiserver.store.database import Database
from tests.metrics.builder import T0
from tests.metrics.test_history import DAY, HOUR, insert, same
from tests.metrics.test_summary import AS_OF, DAY_START, VARIANTS, scenario


@pytest.mark.parametrize("settings", VARIANTS, ids=range(len(VARIANTS)))
async def test_rollup_report_equals_the_event_fold(db: Database, settings: MetricSettings) -> None:
    await insert(db, scenario().events)
    await rebuild(db, DAY_START, DAY_START + DAY, settings=settings, as_of=AS_OF)
    start, end = DAY_START, DAY_START + DAY
    for grain in (Grain.INTERVAL, Grain.DAY, Grain.RANGE):
        expected = await historical_report(
            db, start, end, by="queue", grain=grain, settings=settings, as_of=AS_OF
        )
        got = await rollup_report(
            db, start, end, grain=grain, settings=settings, config=None, as_of=AS_OF
        )
        assert got is not None and got.source == "rollup", grain
        assert got.rows
        same(got, expected)
        chosen = await report(
            db, start, end, by="queue", grain=grain, settings=settings, as_of=AS_OF
        )
        assert chosen.source == "rollup"
        same(chosen, expected)


async def test_what_the_rollup_cannot_answer_goes_to_the_stays_or_the_events(
    db: Database,
) -> None:
    await insert(db, scenario().events)
    settings = MetricSettings()
    day = (DAY_START, DAY_START + DAY)
    await rebuild(db, *day, settings=settings, as_of=AS_OF)

    async def source(start: float, end: float, by: str = "queue", **kw: object) -> str:
        chosen = kw.pop("settings", settings)
        as_of = kw.pop("as_of", AS_OF)
        got = await report(
            db,
            start,
            end,
            by=by,
            grain=Grain.RANGE,
            settings=chosen,
            as_of=as_of,  # type: ignore[arg-type]
        )
        expected = await historical_report(
            db,
            start,
            end,
            by=by,
            grain=Grain.RANGE,
            settings=chosen,
            as_of=as_of,  # type: ignore[arg-type]
        )
        same(got, expected)
        return got.source

    assert await source(*day) == "rollup"
    assert await source(*day, by="skill") == "summary"  # the rollup is by queue only
    assert await source(*day, by="centre") == "events"
    # Other variants than the rows were built with: the per-stay rows answer.
    assert await source(*day, settings=MetricSettings(sl_threshold_s=45)) == "summary"
    # Not on 15-minute edges.
    assert await source(day[0] + 60, day[1]) == "summary"
    # Asked while FCR windows are still open: the per-stay rows judge them as of then.
    assert await source(*day, as_of=T0 + 2 * DAY) == "summary"
    # Beyond the rebuilt range: only the events know.
    assert await source(day[0], day[1] + DAY) == "events"


async def test_rows_built_before_the_fcr_windows_closed_do_not_answer_later(
    db: Database,
) -> None:
    await insert(db, scenario().events)
    settings = MetricSettings(fcr_window=timedelta(days=1))
    day = (DAY_START, DAY_START + DAY)
    await rebuild(db, *day, settings=settings, as_of=T0 + HOUR * 5)
    assert (
        await rollup_report(db, *day, grain=Grain.DAY, settings=settings, config=None, as_of=AS_OF)
        is None
    )
    await rebuild(db, *day, settings=settings, as_of=AS_OF)
    assert (
        await rollup_report(db, *day, grain=Grain.DAY, settings=settings, config=None, as_of=AS_OF)
        is not None
    )
