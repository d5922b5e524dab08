"""The ACD configuration in PostgreSQL: save it (one transaction), load it back checked.

Skills, agents and their skills, queues (title in `description`, every other
setting in `settings` as JSON, in the file's shape), the queues each agent
serves in offer order (`agent_queues`) and grade priorities
(`customer_grades`). Loading rebuilds the file's shape and goes through
`parse_acd_config`, so a bad row is reported as clearly as a bad file line,
with the source "database".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ctiserver.acd.config import AcdConfig, acd_config_to_data, parse_acd_config
from ctiserver.store.agents import list_agents, set_agent_skills, upsert_agent, upsert_skill
from ctiserver.store.database import Connection, Database, in_transaction
from ctiserver.store.queues import upsert_queue

DATABASE_SOURCE = "database"


@dataclass(frozen=True, slots=True)
class SavedAcdConfig:
    """What saving changed beyond the configuration itself: what it retired or removed."""

    retired_agents: tuple[str, ...]  # marked inactive: the event log refers to them
    retired_queues: tuple[str, ...]  # marked inactive: calls and interactions refer to them
    removed_skills: tuple[str, ...]


async def save_acd_config(db: Database | Connection, config: AcdConfig) -> SavedAcdConfig:
    """Make the database hold `config`, in one transaction.

    The configuration is checked first (AcdConfigError), so the database
    never holds one that would not load. Agents and queues missing from
    `config` are marked inactive, not deleted; skills and grades missing from
    it are deleted.
    """
    data = acd_config_to_data(config)
    # A configuration built in code rather than parsed is checked here.
    parse_acd_config(data, "configuration to save")
    async with in_transaction(db) as conn:
        removed_skills = await _save_skills(conn, config.skills)
        await _save_grades(conn, config.grade_priority)
        retired_queues = await _save_queues(conn, data["queues"])
        retired_agents = await _save_agents(conn, data["agents"])
        await _save_agent_queues(conn, data["agents"])
    return SavedAcdConfig(retired_agents, retired_queues, removed_skills)


async def _save_skills(conn: Connection, skills: dict[str, str]) -> tuple[str, ...]:
    for name, description in skills.items():
        await upsert_skill(conn, name, description)
    rows = await conn.fetch(
        "DELETE FROM skills WHERE name <> ALL($1::text[]) RETURNING name", list(skills)
    )
    return tuple(sorted(row["name"] for row in rows))


async def _save_grades(conn: Connection, grades: dict[str, int]) -> None:
    await conn.execute("DELETE FROM customer_grades WHERE grade <> ALL($1::text[])", list(grades))
    await conn.executemany(
        """
        INSERT INTO customer_grades (grade, priority) VALUES ($1, $2)
        ON CONFLICT (grade) DO UPDATE SET priority = EXCLUDED.priority
        WHERE customer_grades.priority <> EXCLUDED.priority
        """,
        list(grades.items()),
    )


async def _save_queues(conn: Connection, queues: list[dict[str, Any]]) -> tuple[str, ...]:
    for queue in queues:
        settings = {key: value for key, value in queue.items() if key not in ("name", "title")}
        await upsert_queue(
            conn, queue["name"], description=queue.get("title", ""), settings=settings
        )
    names = [queue["name"] for queue in queues]
    # Re-activates a queue that comes back, retires the ones that left.
    rows = await conn.fetch(
        """
        UPDATE queues SET active = (name = ANY($1::text[]))
        WHERE active IS DISTINCT FROM (name = ANY($1::text[]))
        RETURNING name, active
        """,
        names,
    )
    return tuple(sorted(row["name"] for row in rows if not row["active"]))


async def _save_agents(conn: Connection, agents: list[dict[str, Any]]) -> tuple[str, ...]:
    for agent in agents:
        await upsert_agent(
            conn,
            agent["id"],
            name=agent["name"],
            extension=agent["endpoint"],
            attributes=agent.get("attributes", {}),
            active=True,
        )
        await set_agent_skills(conn, agent["id"], agent.get("skills", {}))
    rows = await conn.fetch(
        "UPDATE agents SET active = false WHERE active AND login <> ALL($1::text[]) "
        "RETURNING login",
        [agent["id"] for agent in agents],
    )
    return tuple(sorted(row["login"] for row in rows))


async def _save_agent_queues(conn: Connection, agents: list[dict[str, Any]]) -> None:
    memberships = [
        (agent["id"], queue, rank)
        for agent in agents
        for rank, queue in enumerate(agent.get("queues", []))
    ]
    # Retired agents keep no queues: the table says who serves what now.
    await conn.execute("DELETE FROM agent_queues")
    await conn.execute(
        """
        INSERT INTO agent_queues (agent_id, queue_id, rank)
        SELECT a.id, q.id, m.rank
        FROM unnest($1::text[], $2::text[], $3::integer[]) AS m (login, queue, rank)
        JOIN agents a ON a.login = m.login
        JOIN queues q ON q.name = m.queue
        """,
        [login for login, _, _ in memberships],
        [queue for _, queue, _ in memberships],
        [rank for _, _, rank in memberships],
    )


async def load_acd_config_from_db(db: Database | Connection) -> AcdConfig:
    """The active skills, grades, queues and agents, checked like a file.

    AcdConfigError names each bad row ("database: queues[0] \"vip\" ...").
    An empty database gives an empty configuration.
    """
    async with _snapshot(db) as conn:
        skills = await conn.fetch("SELECT name, description FROM skills ORDER BY name")
        grades = await conn.fetch("SELECT grade, priority FROM customer_grades ORDER BY grade")
        queues = await conn.fetch(
            "SELECT name, description, settings FROM queues WHERE active ORDER BY name"
        )
        agents = await list_agents(conn, active_only=True)
        memberships = await conn.fetch(
            """
            SELECT a.login, q.name AS queue
            FROM agent_queues aq
            JOIN agents a ON a.id = aq.agent_id
            JOIN queues q ON q.id = aq.queue_id
            WHERE a.active AND q.active
            ORDER BY a.login, aq.rank
            """
        )
    queues_of: dict[str, list[str]] = {}
    for row in memberships:
        queues_of.setdefault(row["login"], []).append(row["queue"])
    agent_data: list[dict[str, Any]] = []
    for agent in agents:
        item: dict[str, Any] = {
            "id": agent.login,
            "name": agent.name,
            "skills": agent.skills,
            "attributes": agent.attributes,
            "queues": queues_of.get(agent.login, []),
        }
        # Left out when NULL, so the check reports "missing endpoint".
        if agent.extension is not None:
            item["endpoint"] = agent.extension
        agent_data.append(item)
    data = {
        "skills": {row["name"]: row["description"] for row in skills},
        "grades": {row["grade"]: row["priority"] for row in grades},
        "queues": [
            {**row["settings"], "name": row["name"], "title": row["description"]} for row in queues
        ],
        "agents": agent_data,
    }
    return parse_acd_config(data, DATABASE_SOURCE)


@asynccontextmanager
async def _snapshot(db: Database | Connection) -> AsyncIterator[Connection]:
    """A connection whose reads all see one state of the database."""
    if isinstance(db, Database):
        async with (
            db.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield conn
    else:  # the caller's connection, in the caller's transaction if any
        yield db
