"""Scenario files: the shipped examples load, every problem is named with file and line,
random draws come from the seed alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctiserver.sim.scenario import ScenarioError, load_scenario, parse_scenario

REPO = Path(__file__).resolve().parents[2]

ACD = """
acd:
  skills: {cards: 信用卡 Cards}
  queues:
    - name: support
      steps: [{require: {cards: 1}}]
"""


def _parse(text: str, tmp_path: Path, *, seed: int | None = None) -> object:
    return parse_scenario(text, "s.yaml", base=tmp_path, seed=seed)


def _problems(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        _parse(text, tmp_path)
    return caught.value.problems


def test_the_shipped_scenarios_load() -> None:
    tiny = load_scenario(REPO / "scenarios" / "tiny.yaml")
    assert [agent.agent_id for agent in tiny.agents] == ["1001"]
    assert tiny.acd.agent("1001").name == "王小明"
    assert tiny.calls[0].queue == "support" and tiny.calls[0].talk == 30
    rush = load_scenario(REPO / "scenarios" / "morning_rush.yaml")
    assert 30 <= len(rush.calls) <= 60
    assert len(rush.agents) == 4
    assert any(agent.no_answer > 0 for agent in rush.agents)
    assert any(call.exten for call in rush.calls) and rush.flows is not None
    assert {"张伟", "郭晶晶", "马超"} <= {call.name for call in rush.calls}
    # Sorted by arrival, numbered in file order.
    assert [call.at for call in rush.calls] == sorted(call.at for call in rush.calls)


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    text = f"""seed: 1
start: 2026-11-23T09:00:00
{ACD}
agents:
  - id: "1001"
    skils: {{cards: 5}}
  - id: "1002"
    skills: {{cards: 5}}
    no_answer: 2
calls:
  - at: 0
    caller: "13800138000"
    queue: suport
  - at: 1
    caller: 13800138001
    queue: support
    exten: "95588"
  - at: x
    caller: "1"
    queue: support
    keys: [[1, "A"]]
"""
    problems = _problems(text, tmp_path)
    expected = [
        "s.yaml:2: start: 2026-11-23 09:00:00 has no UTC offset",
        "s.yaml:11: agent 1001: not in the ACD: give its skills (and queues)",
        "s.yaml:12: agents[0]: unknown key 'skils' (did you mean 'skills'?)",
        "s.yaml:15: agent 1002: no_answer: true, false or a chance from 0 to 1",
        "s.yaml:19: calls[0]: no queue 'suport' in the ACD (did you mean 'support'?)",
        "s.yaml:20: calls[1]: either queue (no IVR) or exten (the IVR), not both",
        "s.yaml:27: calls[2]: keys: a list of [seconds after answer, digits]",
        "s.yaml:24: calls[2]: at: seconds (a number >= 0, or [min, max]), not 'x'",
    ]
    assert len(problems) == len(expected), problems
    for line, problem in zip(expected, problems, strict=True):
        assert problem.startswith(line), (line, problems)


def test_broken_yaml_and_missing_files_name_the_place(tmp_path: Path) -> None:
    assert _problems("seed: 1\ncalls: [\n", tmp_path)[0].startswith("s.yaml:3: invalid YAML")
    duplicate = _problems("seed: 1\nseed: 2\n", tmp_path)
    assert duplicate[0].startswith("s.yaml:2: invalid YAML") and "duplicate key" in duplicate[0]
    missing = _problems(
        "start: 2026-11-23T09:00:00Z\nacd: nowhere.toml\nagents: []\ncalls: []\n", tmp_path
    )
    assert f"s.yaml:2: acd: {tmp_path / 'nowhere.toml'}: no such file" in missing
    with pytest.raises(ScenarioError) as caught:
        load_scenario(tmp_path / "absent.yaml")
    assert caught.value.problems == [f"{tmp_path / 'absent.yaml'}: no such file"]


def test_acd_problems_come_from_the_acd_reader(tmp_path: Path) -> None:
    text = f"""start: 2026-11-23T09:00:00Z
{ACD}
agents:
  - {{id: "1001", skills: {{cardz: 5}}}}
calls:
  - {{at: 0, caller: "1", queue: support}}
"""
    problems = _problems(text, tmp_path)
    assert any("s.yaml:3: acd" in p and "cardz" in p for p in problems), problems


def test_an_acd_file_defines_agents_the_scenario_only_directs(tmp_path: Path) -> None:
    text = """start: 2026-11-23T09:00:00+08:00
acd: acd.toml
agents:
  - {id: "1001", answer_delay: 2}
  - {id: "1002", skills: {cards: 3}}
calls:
  - {at: 0, caller: "1", queue: support}
"""
    (tmp_path / "acd.toml").write_text((REPO / "acd.example.toml").read_text(encoding="utf-8"))
    problems = _problems(text, tmp_path)
    assert problems == ["s.yaml:5: agent 1002: skills comes from the ACD, which defines this agent"]
    scenario = load_scenario_text(text.replace(", skills: {cards: 3}", ""), tmp_path)
    assert scenario.agent("1001").phone == "agent1001"
    assert scenario.agent("1001").answer_delay == 2


def load_scenario_text(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return load_scenario(path)


RANGES = f"""start: 2026-11-23T09:00:00+08:00
seed: 5
{ACD}
defaults:
  talk: [30, 300]
agents:
  - {{id: "1001", skills: {{cards: 5}}, wrap_up_s: [5, 50]}}
calls:
  - {{at: 0, count: 3, every: 10, caller: "1380000{{n:04d}}", name: [张伟, 王芳], queue: support}}
  - {{at: [100, 200], caller: "2", queue: support, patience: [10, 90]}}
"""


def test_ranges_are_drawn_from_the_seed_alone(tmp_path: Path) -> None:
    first = load_scenario_text(RANGES, tmp_path)
    again = load_scenario_text(RANGES, tmp_path)
    assert first.calls == again.calls and first.agents == again.agents
    assert [call.caller for call in first.calls[:3]] == [
        "13800000001",
        "13800000002",
        "13800000003",
    ]
    assert [call.name for call in first.calls[:3]] == ["张伟", "王芳", "张伟"]
    assert [call.at for call in first.calls[:3]] == [0, 10, 20]
    for call in first.calls:
        assert call.talk is not None and 30 <= call.talk <= 300 and call.talk == int(call.talk)
    last = first.calls[3]
    assert 100 <= last.at <= 200 and last.patience is not None and 10 <= last.patience <= 90
    wrap = first.agent("1001").wrap_up_s
    assert wrap is not None and 5 <= wrap <= 50
    # Another seed, other draws; a call added at the end leaves the others' draws alone.
    other = parse_scenario(RANGES, "s.yaml", base=tmp_path, seed=6)
    assert [c.talk for c in other.calls] != [c.talk for c in first.calls]
    more = load_scenario_text(RANGES + '  - {at: 500, caller: "3", queue: support}\n', tmp_path)
    assert more.calls[:4] == first.calls


def test_ivr_calls_need_flows(tmp_path: Path) -> None:
    text = f"""start: 2026-11-23T09:00:00Z
{ACD}
agents:
  - {{id: "1001", skills: {{cards: 5}}}}
calls:
  - {{at: 0, caller: "1", exten: "95588", keys: [[2, "1"]]}}
"""
    problems = _problems(text, tmp_path)
    assert problems == ["s.yaml:1: calls with `exten` go through the IVR: name `flows`"]
    (tmp_path / "flows").mkdir()
    scenario = load_scenario_text(text.replace("acd:", "flows: flows\nacd:", 1), tmp_path)
    assert scenario.calls[0].dialled == "95588" and scenario.calls[0].keys == ((2.0, "1"),)
