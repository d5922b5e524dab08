"""`ctiserver simulate`: scenarios played through the real server, the emulator and
PostgreSQL; figures pinned, repeatable, and the same at any speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ctiserver import cli
from ctiserver.config import DatabaseSettings, ServerSettings, Settings, WallboardSettings
from ctiserver.sim import scenario_run
from ctiserver.sim.scenario import load_scenario
from ctiserver.sim.scenario_run import ScenarioStuck, run_scenario

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "scenarios" / "tiny.yaml"

# Two agents (one always rings out, RONA), a held call, an abandon after 7 s in
# queue, a caller through an IVR menu: about 15 emulated seconds.
QUICK = """
name: 快速 Quick
seed: 3
start: 2026-11-23T09:00:00+08:00
duration: 40
flows: flows
acd:
  skills: {cards: 信用卡 Cards}
  queues:
    - name: support
      title: 客户服务 Support
      ring_timeout: 2
      wrap_up: 30
      steps: [{require: {cards: 1}}]
agents:
  - {id: "1001", name: 王小明, skills: {cards: 9}, answer_delay: 1, wrap_up_s: 1}
  - id: "1002"
    name: 李娜
    skills: {cards: 5}
    answer_delay: 2
    no_answer: true
    ready_after_rona: 3
calls:
  - {at: 0, caller: "13800000001", name: 张伟, queue: support, talk: 3, hold: 1, hold_at: 1}
  - {at: 1, caller: "13800000002", name: 王芳, queue: support, talk: 2}
  - {at: 2, caller: "13800000003", name: 刘洋, queue: support, talk: 2, patience: 6}
  - {at: 3, caller: "13800000005", name: 赵敏, queue: support, talk: 2, patience: 7}
  - {at: 12, caller: "13800000004", name: 陈静, exten: "4000000000", keys: [[1, "1"]], talk: 2}
"""

TEST_LINE = """
name: 测试专线 Test line
numbers: ["4000000000"]
start: menu
nodes:
  menu:
    type: menu
    prompt: test/menu
    options: {"1": support}
    timeout: 3
    retries: 1
    default: support
  support:
    type: queue
    queue: support
"""


@pytest.fixture
def settings(pg_dsn: str, tmp_path: Path) -> Settings:
    return Settings(
        server=ServerSettings(data_dir=str(tmp_path / "data")),
        database=DatabaseSettings(dsn=pg_dsn),
        wallboard=WallboardSettings(thresholds=str(tmp_path / "none.toml")),
    )


@pytest.fixture
def quick(tmp_path: Path) -> Path:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "test_line.yaml").write_text(TEST_LINE, encoding="utf-8")
    path = tmp_path / "quick.yaml"
    path.write_text(QUICK, encoding="utf-8")
    return path


def _rows(report: dict[str, Any], by: str) -> dict[str, dict[str, Any]]:
    """Each row's figures by group (the centre's with its agents' under "agents")."""
    rows = {}
    for row in report["reports"][by]["rows"]:
        figures = dict(row["figures"])
        if "agents" in row:
            figures["agents"] = row["agents"]
        rows[row.get(by, "centre")] = figures
    return rows


async def _sim_databases(pg_dsn: str) -> set[str]:
    conn = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'ctiserver_sim_%'"
        )
    finally:
        await conn.close()
    return {row["datname"] for row in rows}


async def test_one_call_gives_the_figures_metrics_md_defines_every_run(
    settings: Settings, pg_dsn: str
) -> None:
    """Rings 5 s, talks 30 s, wraps up 10 s: ASA 5, AHT 40 (talk + hold + ACW)."""
    before = await _sim_databases(pg_dsn)
    scenario = load_scenario(TINY)
    first = await run_scenario(scenario, settings, speed=50, by=("centre", "queue", "agent"))
    support = _rows(first, "queue")["support"]
    assert support["offered"] == 1 and support["answered"] == 1 and support["abandoned"] == 0
    assert support["asa_s"] == 5
    assert support["avg_talk_s"] == 30 and support["avg_hold_s"] == 0
    assert support["avg_acw_s"] == 10 and support["aht_s"] == 40
    assert support["service_level"] == 1.0
    agent = _rows(first, "agent")["1001"]
    assert agent["ring_s"] == 5 and agent["acw_s"] == 10 and agent["aht_s"] == 40
    assert agent["logged_in_s"] == 120  # logged in at start, the range is 120 s
    assert first["reports"]["agent"]["rows"][0]["name"] == "王小明"
    assert first["problems"] == []
    # Again: a fresh database, the same figures to the digit.
    again = await run_scenario(scenario, settings, speed=50, by=("centre", "queue", "agent"))
    assert again["reports"] == first["reports"]
    # Each run's database is gone afterwards.
    assert await _sim_databases(pg_dsn) == before


async def test_speed_changes_no_figure(settings: Settings, quick: Path) -> None:
    """Emulated time stands still while the server works: any speed, the same figures."""
    scenario = load_scenario(quick)
    by = ("centre", "queue", "agent")
    slow = await run_scenario(scenario, settings, speed=1, by=by)
    fast = await run_scenario(scenario, settings, speed=1000, by=by)
    centre = _rows(slow, "centre")["centre"]
    # What the scenario scripts happened.
    assert centre["offered"] == 5 and centre["answered"] == 4 and centre["abandoned"] == 1
    assert centre["avg_time_to_abandon_s"] == 7  # patience counts from entering the queue
    assert centre["agents"]["hold_s"] == 1
    assert centre["agents"]["not_ready_by_reason"].get("no answer", 0) > 0  # RONA
    assert _rows(slow, "agent")["1002"]["calls_handled"] == 0
    assert slow["problems"] == [] and fast["problems"] == []
    assert slow["settled_s"] == fast["settled_s"]
    assert fast["reports"] == slow["reports"]


async def test_a_run_that_does_not_settle_says_what_is_stuck(
    settings: Settings, tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call no logged-in agent can take waits forever: the run stops and names it."""
    monkeypatch.setattr(scenario_run, "_SETTLE_MARGIN_S", 0.0)
    path = tmp_path / "stuck.yaml"
    path.write_text(
        """start: 2026-11-23T09:00:00Z
acd:
  skills: {cards: Cards, loans: Loans}
  queues:
    - {name: loans, steps: [{require: {loans: 1}}]}
    - {name: cards, steps: [{require: {cards: 1}}]}
agents:
  - {id: "1001", skills: {cards: 5}, queues: [cards]}
calls:
  - {at: 0, caller: "13800000001", queue: loans, talk: 1}
""",
        encoding="utf-8",
    )
    before = await _sim_databases(pg_dsn)
    with pytest.raises(ScenarioStuck) as caught:
        await run_scenario(load_scenario(path), settings, speed=100)
    assert "call 1 from 13800000001 (at 0 s) not ended" in str(caught.value)
    assert await _sim_databases(pg_dsn) == before


def test_the_command_prints_the_report_as_json(
    pg_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_server_config: None,
) -> None:
    monkeypatch.setenv("CTISERVER_DATABASE_DSN", pg_dsn)
    code = cli.main(["simulate", str(TINY), "--speed", "20", "--by", "agent", "--seed", "9"])
    output = capsys.readouterr()
    assert code == 0, output.err
    report = json.loads(output.out)
    assert report["seed"] == 9 and report["speed"] == 20
    assert list(report["reports"]) == ["agent"]
    assert report["reports"]["agent"]["rows"][0]["figures"]["calls_handled"] == 1
    # A broken file: every problem on stderr with its line, exit 1.
    broken = tmp_path / "broken.yaml"
    broken.write_text("start: soon\n", encoding="utf-8")
    assert cli.main(["simulate", str(broken)]) == 1
    problems = capsys.readouterr().err.splitlines()
    assert f"{broken}:1: start: 'soon' is not an ISO time (2026-11-23T09:00:00+08:00)" in problems
