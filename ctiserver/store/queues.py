"""Queues and their settings: upsert, get, list (SQL only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ctiserver.store.database import Connection, Database


@dataclass(frozen=True, slots=True)
class Queue:
    id: int
    name: str  # the stable id the event log uses
    description: str
    settings: dict[str, Any]  # routing steps, policy, thresholds: the ACD's to define
    created_at: datetime
    updated_at: datetime


_COLUMNS = "id, name, description, settings, created_at, updated_at"


def _queue(row: Any) -> Queue:
    return Queue(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        settings=row["settings"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def upsert_queue(
    db: Database | Connection,
    name: str,
    *,
    description: str = "",
    settings: Mapping[str, Any] | None = None,
) -> Queue:
    """Create the queue `name`, or replace its description and settings."""
    if not name.strip():
        raise ValueError("queue name must not be empty")
    row = await db.fetchrow(
        f"""
        INSERT INTO queues (name, description, settings) VALUES ($1, $2, $3)
        ON CONFLICT (name) DO UPDATE SET
            description = EXCLUDED.description, settings = EXCLUDED.settings
        RETURNING {_COLUMNS}
        """,
        name.strip(),
        description,
        dict(settings or {}),
    )
    return _queue(row)


async def get_queue(db: Database | Connection, name: str) -> Queue | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM queues WHERE name = $1", name)
    return None if row is None else _queue(row)


async def list_queues(db: Database | Connection) -> list[Queue]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM queues ORDER BY name")
    return [_queue(row) for row in rows]
