"""`ctiserver report` against real PostgreSQL: table, CSV and JSON, with the variants printed."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctiserver.cli import main
from ctiserver.metrics.settings import MetricSettings
from ctiserver.store.database import Database
from tests.acd.centre import agent_block, write_acd
from tests.conftest import truncate_all
from tests.metrics.test_history import crossing_range, insert

RANGE = ["--from", "2026-03-02T09:00", "--to", "2026-03-02T10:00", "--timezone", "UTC"]


async def _fill(dsn: str) -> None:
    async with await Database.open(dsn) as db:
        await truncate_all(db)
        await insert(db, crossing_range().events)


@pytest.fixture
def stored(
    pg_dsn: str, no_server_config: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    acd = write_acd(tmp_path, agent_block("A1", "王小明") + agent_block("A2", "李娜"))
    monkeypatch.setenv("CTISERVER_DATABASE_DSN", pg_dsn)
    monkeypatch.setenv("CTISERVER_ACD_CONFIG", str(acd))
    monkeypatch.setenv("CTISERVER_SERVER_DATA_DIR", str(tmp_path / "data"))
    asyncio.run(_fill(pg_dsn))
    yield


def test_table_prints_the_variants_and_the_main_figures(
    stored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", *RANGE, "--grain", "range"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1] == f"variants: {MetricSettings().summary()}"
    support = next(line for line in lines if line.startswith("2026-03-02") and "support" in line)
    assert "客户服务" in support
    assert support.split()[4:7] == ["3", "3", "0"]  # offered, answered, abandoned


def test_csv_by_agent_per_interval_with_chinese_names(
    stored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["report", *RANGE, "--by", "agent", "--grain", "interval", "--format", "csv"])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 8  # two agents x four quarter-hours
    assert {row["name"] for row in rows} == {"王小明", "李娜"}
    assert {row["variants"] for row in rows} == {MetricSettings().summary()}
    assert rows[0]["start"] == "2026-03-02T09:00:00+00:00"


def test_json_by_skill_and_centre_with_a_variant(
    stored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", *RANGE, "--grain", "range", "--format", "json"]
    assert main([*args, "--by", "skill", "--set", "sl_mode=answered"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variants"]["sl_mode"] == "answered"
    assert {row["skill"] for row in report["rows"]} >= {"billing", "mandarin"}
    assert main([*args, "--by", "centre"]) == 0
    [row] = json.loads(capsys.readouterr().out)["rows"]
    assert row["figures"]["offered"] == 4 and row["agents"]["occupancy"] is not None


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--from", "someday"], "--from"),
        (["--from", "2026-03-02", "--to", "2026-03-01"], "--to"),
        (["--from", "2026-03-02", "--set", "sl_mode=never"], "--set sl_mode"),
        (["--from", "2026-03-02", "--set", "colour=red"], "--set colour"),
        (["--from", "2026-03-02", "--timezone", "Nowhere/Land"], "--timezone"),
    ],
)
def test_bad_arguments_exit_2_naming_them(
    stored: None, capsys: pytest.CaptureFixture[str], extra: list[str], flag: str
) -> None:
    assert main(["report", *extra]) == 2
    assert capsys.readouterr().err.startswith(f"ctiserver: {flag}: ")
