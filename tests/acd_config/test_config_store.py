"""The ACD configuration in PostgreSQL: round trip, retirement, one transaction, clear errors."""

from __future__ import annotations

import asyncio
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ctiserver.acd import config_store
from ctiserver.acd.config import AcdConfig, AcdConfigError, load_acd_config, parse_acd_config
from ctiserver.acd.config_store import load_acd_config_from_db, save_acd_config
from ctiserver.acd.model import AgentConfig, QueueConfig, SkillRequirement, Step
from ctiserver.cli import main
from ctiserver.store.agents import get_agent, set_agent_skills, upsert_agent
from ctiserver.store.database import Database
from ctiserver.store.queues import upsert_queue

EXAMPLE = Path(__file__).resolve().parents[2] / "acd.example.toml"


@pytest.fixture
def example() -> AcdConfig:
    return load_acd_config(EXAMPLE)


async def test_save_then_load_gives_an_equal_configuration(
    db: Database, example: AcdConfig
) -> None:
    saved = await save_acd_config(db, example)
    assert saved == config_store.SavedAcdConfig((), (), ())
    loaded = await load_acd_config_from_db(db)
    assert loaded == example
    assert loaded.agent("1001").name == "王小明"
    assert loaded.skills["cards"] == "信用卡挂失、激活 Card loss and activation"
    assert loaded.queue("vip").title == "贵宾专线 VIP line"


async def test_rows_are_where_other_code_expects_them(db: Database, example: AcdConfig) -> None:
    await save_acd_config(db, example)
    agent = await get_agent(db, "1002")
    assert agent is not None
    assert (agent.name, agent.extension, agent.active) == ("李娜", "PJSIP/agent1002", True)
    assert agent.skills == {"mandarin": 9, "english": 8, "billing": 9}
    ranks = await db.fetch(
        "SELECT q.name, aq.rank FROM agent_queues aq JOIN agents a ON a.id = aq.agent_id "
        "JOIN queues q ON q.id = aq.queue_id WHERE a.login = '1002' ORDER BY aq.rank"
    )
    assert [(row["name"], row["rank"]) for row in ranks] == [("billing", 0), ("support", 1)]
    queue = await db.fetchrow("SELECT description, settings FROM queues WHERE name = 'sales'")
    assert queue["description"] == "贷款销售 Loan sales"
    assert queue["settings"]["policy"] == "least_occupied"
    assert queue["settings"]["steps"][0] == {
        "duration": 120,
        "require": {"loans": 4},
        "where": ["language != en"],
    }
    grades = await db.fetch("SELECT grade, priority FROM customer_grades ORDER BY priority")
    assert [(row["grade"], row["priority"]) for row in grades] == [
        ("standard", 0),
        ("gold", 5),
        ("vip", 10),
    ]


async def test_an_empty_database_is_an_empty_configuration(db: Database) -> None:
    assert await load_acd_config_from_db(db) == AcdConfig()


async def test_saving_again_retires_what_left_and_brings_back_what_returns(
    db: Database, example: AcdConfig
) -> None:
    await save_acd_config(db, example)
    smaller = replace(
        example,
        skills={name: text for name, text in example.skills.items() if name != "loans"},
        queues=tuple(queue for queue in example.queues if queue.name != "sales"),
        agents=tuple(agent for agent in example.agents if agent.agent_id != "1004"),
        grade_priority={"vip": 20, "standard": 0},
    )
    saved = await save_acd_config(db, smaller)
    assert saved == config_store.SavedAcdConfig(
        retired_agents=("1004",), retired_queues=("sales",), removed_skills=("loans",)
    )
    assert await load_acd_config_from_db(db) == smaller
    # Retired, not deleted: the event log and call history refer to them.
    retired = await get_agent(db, "1004")
    assert retired is not None and retired.active is False
    assert await db.fetchval("SELECT active FROM queues WHERE name = 'sales'") is False
    assert await db.fetchval("SELECT count(*) FROM skills WHERE name = 'loans'") == 0

    saved = await save_acd_config(db, example)
    assert saved == config_store.SavedAcdConfig((), (), ())
    assert await load_acd_config_from_db(db) == example


async def test_saving_is_one_transaction(
    db: Database, example: AcdConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await save_acd_config(db, example)
    renamed = replace(
        example,
        agents=tuple(replace(agent, name=f"{agent.name} (new)") for agent in example.agents),
    )
    calls = 0

    async def fail_on_the_third_agent(conn: Any, login: str, skills: dict[str, int]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ConnectionResetError("connection lost")
        return await set_agent_skills(conn, login, skills)

    monkeypatch.setattr(config_store, "set_agent_skills", fail_on_the_third_agent)
    with pytest.raises(ConnectionResetError):
        await save_acd_config(db, renamed)
    assert await load_acd_config_from_db(db) == example


async def test_a_configuration_built_in_code_is_checked_before_saving(db: Database) -> None:
    bad = AcdConfig(
        skills={"billing": ""},
        queues=(
            QueueConfig(
                name="support",
                steps=(Step(duration_s=None, requirements=(SkillRequirement("french", 3),)),),
            ),
        ),
        agents=(AgentConfig(agent_id="1001", name="", endpoint="PJSIP/1001", queues=("nope",)),),
    )
    with pytest.raises(AcdConfigError) as caught:
        await save_acd_config(db, bad)
    assert caught.value.problems == [
        'configuration to save: queues[0] "support" steps[0].require.french: '
        "unknown skill 'french'; declare it under [skills]",
        "configuration to save: agents[0] \"1001\" queues[0]: unknown queue 'nope'",
    ]
    assert await db.fetchval("SELECT count(*) FROM skills") == 0


async def test_bad_rows_are_reported_like_bad_lines(db: Database) -> None:
    await upsert_queue(
        db, "vip", description="贵宾", settings={"steps": [{"timeout_s": 30}], "policy": "fifo"}
    )
    await upsert_agent(db, "1001", name="王小明", attributes={"language": ["zh", "en"]})
    with pytest.raises(AcdConfigError) as caught:
        await load_acd_config_from_db(db)
    assert caught.value.problems == [
        "database: queues[0] \"vip\" policy: unknown policy 'fifo'; "
        "one of: longest_idle, most_skilled, least_occupied, round_robin",
        "database: queues[0] \"vip\" steps[0].timeout_s: unknown key 'timeout_s'; "
        "expected one of: duration, require, where, then",
        'database: agents[0] "1001": missing endpoint: the agent\'s phone, e.g. "PJSIP/agent1001"',
        "database: agents[0] \"1001\" attributes.language: expected a string, got ['zh', 'en']",
    ]


async def test_the_database_refuses_a_negative_rank(db: Database) -> None:
    agent = await upsert_agent(db, "1001")
    queue = await upsert_queue(db, "support")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO agent_queues (agent_id, queue_id, rank) VALUES ($1, $2, -1)",
            agent.id,
            queue.id,
        )


# -- ctiserver acd import / export ----------------------------------------------------


@pytest.fixture
def server_config(tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ctiserver.toml pointing at the test database."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CTISERVER_CONFIG", raising=False)
    path = tmp_path / "ctiserver.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[database]\ndsn = "{pg_dsn}"\n',
        encoding="utf-8",
    )
    return path


async def test_cli_import_then_export(
    db: Database,
    example: AcdConfig,
    server_config: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # main() runs its own event loop: give it a thread.
    assert (
        await asyncio.to_thread(
            main, ["--config", str(server_config), "acd", "import", str(EXAMPLE)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "saved to the database at" in out
    assert f"{EXAMPLE}: 7 skills, 4 queues, 6 agents, 3 grades" in out
    assert await load_acd_config_from_db(db) == example

    assert await asyncio.to_thread(main, ["--config", str(server_config), "acd", "export"]) == 0
    exported = capsys.readouterr().out
    assert exported.startswith("# ACD configuration exported from the database")
    assert parse_acd_config(tomllib.loads(exported), "export") == example


async def test_cli_import_of_a_bad_file_writes_nothing(
    db: Database, tmp_path: Path, server_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[skills]\nbilling = "x"\n[[agents]]\nid = "1001"\n', encoding="utf-8")
    status = await asyncio.to_thread(
        main, ["--config", str(server_config), "acd", "import", str(bad)]
    )
    assert status == 1
    assert f'{bad}: agents[0] "1001": missing endpoint' in capsys.readouterr().err
    assert await db.fetchval("SELECT count(*) FROM skills") == 0
