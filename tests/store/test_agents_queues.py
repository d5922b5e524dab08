"""Agents, skills with proficiency 1..10, and queues with settings."""

from __future__ import annotations

import asyncpg
import pytest

from ctiserver.store.agents import (
    get_agent,
    list_agents,
    list_skills,
    set_agent_skills,
    upsert_agent,
    upsert_skill,
)
from ctiserver.store.database import Database
from ctiserver.store.queues import get_queue, list_queues, upsert_queue


async def test_upsert_agent_creates_then_updates(db: Database) -> None:
    created = await upsert_agent(
        db, "1001", name="张丽", extension="PJSIP/1001", attributes={"language": ["zh", "en"]}
    )
    updated = await upsert_agent(db, "1001", name="张丽", extension="PJSIP/2001", active=False)
    assert updated.id == created.id
    assert (updated.extension, updated.active, updated.attributes) == ("PJSIP/2001", False, {})
    assert updated.updated_at >= created.updated_at
    assert await get_agent(db, "1001") == updated
    assert await get_agent(db, "9999") is None


async def test_list_agents_by_login_and_active_only(db: Database) -> None:
    await upsert_agent(db, "1002", name="B")
    await upsert_agent(db, "1001", name="A")
    await upsert_agent(db, "1003", name="C", active=False)
    assert [a.login for a in await list_agents(db)] == ["1001", "1002", "1003"]
    assert [a.login for a in await list_agents(db, active_only=True)] == ["1001", "1002"]


async def test_skills_upsert_list_and_assign(db: Database) -> None:
    await upsert_skill(db, "mandarin", "普通话")
    await upsert_skill(db, "billing")
    updated = await upsert_skill(db, "billing", "账单")
    assert updated.description == "账单"
    assert [s.name for s in await list_skills(db)] == ["billing", "mandarin"]

    await upsert_agent(db, "1001", name="张丽")
    agent = await set_agent_skills(db, "1001", {"mandarin": 10, "billing": 1})
    assert agent.skills == {"billing": 1, "mandarin": 10}
    # Replaces the whole set.
    agent = await set_agent_skills(db, "1001", {"billing": 7})
    assert agent.skills == {"billing": 7}
    [listed] = await list_agents(db)
    assert listed.skills == {"billing": 7}


@pytest.mark.parametrize("level", [0, 11, -1, 3.5, True])
async def test_proficiency_out_of_range_is_refused(db: Database, level: object) -> None:
    await upsert_skill(db, "billing")
    await upsert_agent(db, "1001")
    await set_agent_skills(db, "1001", {"billing": 5})
    with pytest.raises(ValueError, match=r"proficiency of 'billing' must be 1\.\.10"):
        await set_agent_skills(db, "1001", {"billing": level})  # type: ignore[dict-item]
    agent = await get_agent(db, "1001")
    assert agent is not None and agent.skills == {"billing": 5}


@pytest.mark.parametrize("level", [0, 11])
async def test_database_itself_refuses_proficiency_out_of_range(db: Database, level: int) -> None:
    skill = await upsert_skill(db, "billing")
    agent = await upsert_agent(db, "1001")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO agent_skills (agent_id, skill_id, proficiency) VALUES ($1, $2, $3)",
            agent.id,
            skill.id,
            level,
        )


async def test_unknown_skill_or_agent_is_refused(db: Database) -> None:
    await upsert_agent(db, "1001")
    with pytest.raises(ValueError, match="unknown skills cantonese, french"):
        await set_agent_skills(db, "1001", {"cantonese": 5, "french": 2})
    with pytest.raises(ValueError, match="no agent with login '9999'"):
        await set_agent_skills(db, "9999", {})


async def test_queue_upsert_keeps_settings_as_json(db: Database) -> None:
    settings = {
        "policy": "longest_idle",
        "steps": [{"skills": {"mandarin": 5}, "timeout_s": 30}, {"skills": {"mandarin": 1}}],
        "sl_threshold_s": 20,
        "name_zh": "贵宾队列",
    }
    created = await upsert_queue(db, "vip", description="VIP line", settings=settings)
    assert created.settings == settings
    changed = await upsert_queue(db, "vip", settings={"policy": "round_robin"})
    assert changed.id == created.id
    assert (changed.description, changed.settings) == ("", {"policy": "round_robin"})
    await upsert_queue(db, "general")
    assert [q.name for q in await list_queues(db)] == ["general", "vip"]
    assert await get_queue(db, "vip") == changed
    assert await get_queue(db, "nope") is None
