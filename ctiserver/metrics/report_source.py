"""A historical report from the fastest source that gives exactly the event fold's figures.

1. rollup.py: 15-minute queue totals (by queue; built variants; FCR windows closed);
2. summary.py: per-stay rows aggregated in SQL (by queue or skill; ranges rebuilt
   with nothing unfinished and FCR windows looked through);
3. history.py: the events folded (every report; the reference the other two are
   tested against).
The report says which answered (`Report.source`).
"""

from __future__ import annotations

import time

from ctiserver.acd.config import AcdConfig
from ctiserver.metrics.history import historical_report
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.reports import Report
from ctiserver.metrics.rollup import rollup_report
from ctiserver.metrics.settings import MetricSettings
from ctiserver.metrics.summary import SUMMARY_KEYS, summary_complete, summary_report
from ctiserver.store.database import Database


async def report(
    database: Database,
    start: float,
    end: float,
    *,
    by: str,
    grain: Grain,
    settings: MetricSettings,
    config: AcdConfig | None = None,
    as_of: float | None = None,
) -> Report:
    """The report of [start, end) grouped `by`, per `grain` (history.historical_report's)."""
    known = time.time() if as_of is None else as_of
    if by == "queue":
        found = await rollup_report(
            database, start, end, grain=grain, settings=settings, config=config, as_of=known
        )
        if found is not None:
            return found
    if by in SUMMARY_KEYS and await summary_complete(
        database, start, end, settings=settings, as_of=known
    ):
        return await summary_report(
            database, start, end, by=by, grain=grain, settings=settings, config=config, as_of=known
        )
    return await historical_report(
        database, start, end, by=by, grain=grain, settings=settings, config=config, as_of=known
    )
