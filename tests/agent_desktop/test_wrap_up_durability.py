"""A wrap-up the server acknowledged is never lost: submitted over the websocket while
PostgreSQL is down, the server then dying without saving its memory, it becomes the
interaction once a new Server on the same data folder has the database back.

The real Server, its desktop and sign-in, the Asterisk emulator, and an embedded
PostgreSQL that the test stops and starts (as tests/store/test_outage.py does).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from ctiserver import app
from ctiserver.acd.model import AgentState
from ctiserver.store.database import Database
from ctiserver.store.embedded import acquire_embedded, release_embedded
from ctiserver.store.events import DURABLE_FILE, SPILL_FILE, EventLog
from ctiserver.store.interactions import interaction_for_call
from tests.acd.centre import emulated_asterisk, running_server, until
from tests.agent_desktop.test_desktop_socket import (
    add_accounts,
    add_phones,
    centre_settings,
    signed_in,
)


async def until_async_db(condition: Callable[[], Awaitable[bool]], limit: float = 20.0) -> None:
    """Poll an async `condition` (a database query) until true; fail after `limit` s."""
    for _ in range(int(limit / 0.1)):
        if await condition():
            return
        await asyncio.sleep(0.1)
    pytest.fail("the journaled wrap-up never became an interaction")


def lose_memory_on_close(events: EventLog) -> None:
    """What a crash (SIGKILL, power loss) does to the event log: whatever it held in
    memory is gone; only its files in the data folder remain."""

    async def crash() -> None:
        events._memory.clear()

    events._save_memory_on_close = crash  # type: ignore[method-assign]


async def test_wrap_up_acked_during_an_outage_survives_a_crash_and_is_applied(
    tmp_path: Path, embedded_pgdata: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "_CLOSE_S", 1.0)  # closing during the outage: do not wait long
    server_pg = await acquire_embedded(embedded_pgdata)
    name = f"durable_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_pg.uri("postgres"), timeout=10)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    dsn = server_pg.uri(name)
    db = await Database.open(dsn, connect_timeout=2)
    pg_running = True
    try:
        await add_accounts(db)
        async with emulated_asterisk() as emulator:
            add_phones(emulator, ring_time=0.3, talk_time=1.0)
            settings = centre_settings(tmp_path, dsn, emulator.ami_port)
            data = settings.data_path
            async with running_server(emulator, settings, db) as centre:
                async with signed_in(centre) as d:
                    desk = await d.open("1001")
                    await desk.next("snapshot")
                    await desk.send("ready")
                    await desk.next("agent_state", lambda m: m["state"] == "available")
                    call = await emulator.place_call("13800138000")
                    cid = call.uniqueid
                    await desk.next("wrap_up", lambda m: m["call_id"] == cid)
                    await call.ended

                    await release_embedded(server_pg)  # PostgreSQL goes away
                    pg_running = False
                    await desk.send(
                        "wrap_up", id="w1", call_id=cid, disposition="complaint",
                        notes="客户投诉：等待太久", resolved=False, follow_up_at=None,
                    )  # fmt: skip
                    ack = await desk.next("ack", lambda m: m["re"] == "w1")
                    # Acked because it is on disk: the database did not confirm it.
                    assert ack["detail"]["saved"] == "disk"
                    lines = (data / DURABLE_FILE).read_text(encoding="utf-8").splitlines()
                    kept = [json.loads(line) for line in lines]
                    assert [(e["type"], e["call_id"]) for e in kept][-1] == (
                        "desktop.wrap_up",
                        cid,
                    )
                    assert kept[-1]["payload"]["notes"] == "客户投诉：等待太久"
                    await desk.ws.close()
                assert centre.server.events is not None
                lose_memory_on_close(centre.server.events)
            # The crashed server left the copy; nothing of its memory.
            assert (data / DURABLE_FILE).exists() and not (data / SPILL_FILE).exists()

            server_pg = await acquire_embedded(embedded_pgdata)  # PostgreSQL is back
            pg_running = True
            assert await interaction_for_call(db, cid) is None
            async with running_server(emulator, settings, db) as centre:
                assert centre.server.desktop is not None
                hub = centre.server.desktop.hub

                async def applied() -> bool:
                    return await interaction_for_call(db, cid, "1001") is not None

                await until_async_db(applied)
                await until(lambda: hub.pending_wrap_ups == 0, "re-applied wrap-up written")
                stored = await interaction_for_call(db, cid, "1001")
                assert stored is not None
                assert (stored.disposition, stored.notes, stored.resolved) == (
                    "complaint",
                    "客户投诉：等待太久",
                    False,
                )
                assert (stored.queue_name, stored.address) == ("support", "13800138000")
                # The journal entry reached the events table once, the file is gone.
                count = await db.fetchval(
                    "SELECT count(*) FROM events WHERE type = 'desktop.wrap_up' AND call_id = $1",
                    cid,
                )
                assert count == 1
                assert not (data / DURABLE_FILE).exists()
                assert centre.acd.agent_state("1001") is not AgentState.ON_CALL
    finally:
        await db.close()
        if pg_running:
            await release_embedded(server_pg)
