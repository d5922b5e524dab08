"""Keeping recent days' summary rows current: which days are stale, and the child process
that rebuilds them (`ctiserver metrics rebuild --stale`), over real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from ctiserver.metrics.settings import MetricSettings
from ctiserver.metrics.summary import rebuild, stale_days
from ctiserver.metrics.summary_upkeep import SummaryUpkeep
from ctiserver.store.database import Database
from tests.conftest import truncate_all
from tests.metrics.test_history import DAY, insert
from tests.metrics.test_summary import DAY_START, scenario


async def test_stale_days_are_recent_days_whose_rows_can_still_change(db: Database) -> None:
    await insert(db, scenario().events)
    settings = MetricSettings()  # FCR window: 7 days
    now = DAY_START + 12 * DAY + 3600  # 12 days on, just after midnight
    recent = await stale_days(db, now, settings)
    # Nothing built: every day from 9 days back (window + 2) to yesterday.
    assert recent == [(DAY_START + n * DAY, DAY_START + (n + 1) * DAY) for n in range(3, 12)]
    # Built once every window of the day had closed: settled for good.
    await rebuild(db, DAY_START + 3 * DAY, DAY_START + 4 * DAY, settings=settings, as_of=now)
    # Built while its windows are open: settled for a day, then rebuilt.
    yesterday = (DAY_START + 11 * DAY, DAY_START + 12 * DAY)
    await rebuild(db, *yesterday, settings=settings, as_of=now - 3600)
    recent = await stale_days(db, now, settings)
    assert (DAY_START + 3 * DAY, DAY_START + 4 * DAY) not in recent
    assert yesterday not in recent and len(recent) == 7
    assert yesterday in await stale_days(db, now + DAY, settings)
    # Built six days ago while its windows are still open: due for its daily rebuild.
    week_ago = (DAY_START + 4 * DAY, DAY_START + 5 * DAY)
    await rebuild(db, *week_ago, settings=settings, as_of=now - 6 * DAY)
    assert week_ago in await stale_days(db, now, settings)
    # Other variants than the rows were built with: stale again.
    other = MetricSettings(sl_threshold_s=45)
    assert len(await stale_days(db, now, other)) == 9


async def test_the_child_process_rebuilds_and_reports(
    pg_dsn: str,
    no_server_config: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CTISERVER_DATABASE_DSN", pg_dsn)
    monkeypatch.setenv("CTISERVER_SERVER_DATA_DIR", str(tmp_path / "data"))
    async with await Database.open(pg_dsn) as db:
        await truncate_all(db)
        await insert(db, scenario().events)
        command = (sys.executable, "-m", "ctiserver", "metrics", "rebuild", "--from", "2026-03-02")
        upkeep = SummaryUpkeep(3600, (*command, "--timezone", "UTC"), first_run_s=0)
        await upkeep.start()
        try:
            async with asyncio.timeout(120):
                await upkeep.ran.wait()
        finally:
            await upkeep.close()
        assert upkeep.last_exit == 0
        assert await db.fetchval("SELECT count(*) FROM metric_stays") == 11
        assert await db.fetchval("SELECT count(*) FROM metric_queue_intervals") > 0
        # A failing run is reported with its exit status, and the next one still runs.
        failing = SummaryUpkeep(3600, (sys.executable, "-m", "ctiserver", "metrics", "rebuild"))
        assert await failing.run_once() == 2


async def test_a_run_that_hangs_is_stopped_and_close_stops_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    sleeper = (
        sys.executable,
        "-c",
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)",
    )
    assert await SummaryUpkeep(3600, sleeper, timeout_s=0.5).run_once() is None
    pid_file.unlink(missing_ok=True)
    upkeep = SummaryUpkeep(3600, sleeper, first_run_s=0)
    await upkeep.start()
    async with asyncio.timeout(30):
        while not pid_file.exists() or not pid_file.read_text():  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.05)
        await upkeep.close()  # cancels the wait and terminates the child
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # ended and reaped
    assert upkeep.runs == 0


async def test_zero_means_never() -> None:
    upkeep = SummaryUpkeep(0)
    await upkeep.start()
    await upkeep.close()
    assert upkeep.runs == 0
