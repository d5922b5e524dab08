"""Agents and skills: upsert, list, and each agent's skill proficiencies (SQL only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ctiserver.store.database import Connection, Database, in_transaction

MIN_PROFICIENCY = 1
MAX_PROFICIENCY = 10


@dataclass(frozen=True, slots=True)
class Skill:
    id: int
    name: str
    description: str


@dataclass(frozen=True, slots=True)
class Agent:
    id: int
    login: str  # the stable id the event log uses
    name: str
    extension: str | None  # Asterisk endpoint, e.g. PJSIP/1001
    attributes: dict[str, Any]  # routing attributes: language, team...
    active: bool
    skills: dict[str, int]  # skill name -> proficiency 1..10
    created_at: datetime
    updated_at: datetime


_SELECT = """
SELECT a.id, a.login, a.name, a.extension, a.attributes, a.active, a.created_at, a.updated_at,
       sk.names AS skill_names, sk.levels AS skill_levels
FROM agents a
CROSS JOIN LATERAL (
    SELECT array_agg(s.name ORDER BY s.name) AS names,
           array_agg(ask.proficiency ORDER BY s.name) AS levels
    FROM agent_skills ask JOIN skills s ON s.id = ask.skill_id
    WHERE ask.agent_id = a.id
) sk
"""


def _agent(row: Any) -> Agent:
    return Agent(
        id=row["id"],
        login=row["login"],
        name=row["name"],
        extension=row["extension"],
        attributes=row["attributes"],
        active=row["active"],
        skills=dict(zip(row["skill_names"] or (), row["skill_levels"] or (), strict=True)),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def upsert_agent(
    db: Database | Connection,
    login: str,
    *,
    name: str = "",
    extension: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    active: bool = True,
) -> Agent:
    """Create the agent `login`, or set every given field of the existing one (skills untouched)."""
    if not login.strip():
        raise ValueError("agent login must not be empty")
    async with in_transaction(db) as conn:
        await conn.execute(
            """
            INSERT INTO agents (login, name, extension, attributes, active)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (login) DO UPDATE SET
                name = EXCLUDED.name, extension = EXCLUDED.extension,
                attributes = EXCLUDED.attributes, active = EXCLUDED.active
            """,
            login.strip(),
            name,
            extension,
            dict(attributes or {}),
            active,
        )
        row = await conn.fetchrow(_SELECT + " WHERE a.login = $1", login.strip())
    return _agent(row)


async def get_agent(db: Database | Connection, login: str) -> Agent | None:
    row = await db.fetchrow(_SELECT + " WHERE a.login = $1", login)
    return None if row is None else _agent(row)


async def list_agents(db: Database | Connection, *, active_only: bool = False) -> list[Agent]:
    """Every agent (or the active ones), by login."""
    where = " WHERE a.active" if active_only else ""
    return [_agent(row) for row in await db.fetch(_SELECT + where + " ORDER BY a.login")]


async def upsert_skill(db: Database | Connection, name: str, description: str = "") -> Skill:
    """Create the skill `name`, or update its description."""
    if not name.strip():
        raise ValueError("skill name must not be empty")
    row = await db.fetchrow(
        """
        INSERT INTO skills (name, description) VALUES ($1, $2)
        ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description
        RETURNING id, name, description
        """,
        name.strip(),
        description,
    )
    return Skill(row["id"], row["name"], row["description"])


async def list_skills(db: Database | Connection) -> list[Skill]:
    rows = await db.fetch("SELECT id, name, description FROM skills ORDER BY name")
    return [Skill(row["id"], row["name"], row["description"]) for row in rows]


async def set_agent_skills(
    db: Database | Connection, login: str, skills: Mapping[str, int]
) -> Agent:
    """Replace the skills of agent `login` with `skills` (name -> proficiency 1..10).

    ValueError, naming every problem, for a proficiency out of range, a skill
    that does not exist, or an unknown agent.
    """
    problems = [
        f"proficiency of {name!r} must be {MIN_PROFICIENCY}..{MAX_PROFICIENCY}, got {level!r}"
        for name, level in skills.items()
        if isinstance(level, bool)
        or not isinstance(level, int)
        or not MIN_PROFICIENCY <= level <= MAX_PROFICIENCY
    ]
    if problems:
        raise ValueError(f"agent {login}: " + "; ".join(problems))
    async with in_transaction(db) as conn:
        agent_id = await conn.fetchval("SELECT id FROM agents WHERE login = $1 FOR UPDATE", login)
        if agent_id is None:
            raise ValueError(f"no agent with login {login!r}")
        rows = await conn.fetch(
            "SELECT id, name FROM skills WHERE name = ANY($1::text[])", list(skills)
        )
        ids = {row["name"]: row["id"] for row in rows}
        unknown = sorted(set(skills) - set(ids))
        if unknown:
            raise ValueError(f"agent {login}: unknown skills {', '.join(unknown)}")
        await conn.execute("DELETE FROM agent_skills WHERE agent_id = $1", agent_id)
        await conn.executemany(
            "INSERT INTO agent_skills (agent_id, skill_id, proficiency) VALUES ($1, $2, $3)",
            [(agent_id, ids[name], level) for name, level in skills.items()],
        )
        row = await conn.fetchrow(_SELECT + " WHERE a.id = $1", agent_id)
    return _agent(row)
