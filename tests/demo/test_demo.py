"""`ctiserver demo` in-process on the test PostgreSQL: the real server, emulator, bots over
the desktop websocket and persona callers, run at a high call rate with short talks;
what they leave behind (interactions, abandons, callbacks, surveys), a person's seat
getting an offer, seeding that does not repeat, and a shutdown that leaves no task."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from ctiserver.config import (
    AmiSettings,
    DatabaseSettings,
    FastAgiSettings,
    HttpSettings,
    IvrSettings,
    ServerSettings,
    Settings,
)
from ctiserver.demo import Demo, DemoOptions
from ctiserver.demo.bots import BotTimings
from ctiserver.demo.callers import CallerMix
from ctiserver.demo.customers import HISTORY_KEY_PREFIX, SAMPLE_CUSTOMERS
from ctiserver.store.database import Database
from tests.polling import until

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 120.0  # generous: the machine is shared; nothing here is a timing claim
BOTS = {"1003", "1004", "1005", "1006"}


def demo_settings(pg_dsn: str, data_dir: Path) -> Settings:
    return Settings(
        server=ServerSettings(data_dir=str(data_dir), log_level="WARNING"),
        ami=AmiSettings(port=0, auth="md5"),
        fastagi=FastAgiSettings(port=0),
        http=HttpSettings(port=0),
        database=DatabaseSettings(dsn=pg_dsn),
        ivr=IvrSettings(flows=str(REPO / "flows"), reload_s=0),
    )


# Many short calls: bots talk 1-3 s; a third of the callers give up within 2 s of
# hearing the queue (so some abandon whatever the load); callbacks and surveys often.
BUSY = DemoOptions(
    calls_per_minute=40.0,
    bots=4,
    seed=7,
    progress_s=0,
    callers=CallerMix(
        known_share=0.7,
        travel_share=0.0,
        intents=(("cards", 5.0), ("loans", 1.0), ("callback", 2.0), ("agent", 1.0)),
        survey_share=0.8,
        impatient_share=0.35,
        impatient_s=(0.5, 2.0),
        patient_s=(60.0, 120.0),
        think_s=(0.3, 0.8),
    ),
    bot_timings=BotTimings(talk_s=(1.0, 3.0), wrap_up_s=(0.3, 1.0), break_s=2.0),
)


class Desk:
    """A person's desktop: signed in with POST /login, reading /ws/desktop."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws

    @classmethod
    async def open(cls, base: str, login: str, password: str) -> Desk:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with session.post(
            f"{base}/login", json={"login": login, "password": password}
        ) as response:
            assert response.status == 200, await response.text()
        ws = await session.ws_connect(f"{base}/ws/desktop", headers={"Origin": base})
        return cls(session, ws)

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send_str(json.dumps({"type": kind, "v": 1, **fields}, ensure_ascii=False))

    async def next(
        self,
        kind: str,
        when: Callable[[dict[str, Any]], bool] = lambda m: True,
        *,
        collect: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """The next message of `kind` matching `when`; `collect` keeps the offers seen."""
        async with asyncio.timeout(WAIT_S):
            while True:
                msg = await self.ws.receive()
                assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
                data: dict[str, Any] = json.loads(msg.data)
                if collect is not None and data["type"] == "offer" and data["pop"]["complete"]:
                    collect[data["call_id"]] = data
                if data["type"] == kind and when(data):
                    return data

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def _count(db: Database, sql: str, *args: object) -> int:
    return int(await db.fetchval(sql, *args))


async def test_demo_runs_a_centre_and_stops_cleanly(
    pg_dsn: str, db: Database, tmp_path: Path
) -> None:
    settings = demo_settings(pg_dsn, tmp_path / "data")
    printed: list[str] = []
    demo = Demo(settings, BUSY, out=printed.append)
    desk: Desk | None = None
    try:
        await demo.start()
        banner = "\n".join(demo.banner())
        assert f"{demo.base_url}/desktop" in banner and f"{demo.base_url}/wallboard" in banner
        assert "agent1001 / demo1001" in banner and "super / demosuper" in banner
        assert {bot.agent_id for bot in demo.bots} == BOTS, demo.refused_bots

        # A person takes seat 1001: signs in, goes ready, is offered a call with its pop.
        desk = await Desk.open(demo.base_url, "agent1001", "demo1001")
        assert (await desk.next("snapshot"))["agent"]["id"] == "1001"
        await desk.send("ready", id="r1")
        await desk.next("agent_state", lambda m: m["state"] == "available")
        # Offers come with their screen-pop; an impatient caller may leave while the
        # phone rings, so the seat takes the first offer that gets answered.
        offers: dict[str, dict[str, Any]] = {}
        answered = await desk.next(
            "call_progress",
            lambda m: m["stage"] == "answered" and m["call_id"] in offers,
            collect=offers,
        )
        call_id = answered["call_id"]
        pop = offers[call_id]["pop"]
        assert pop["number"] and pop["complete"]
        await desk.send("hang_up", id="h1", call_id=call_id)
        await desk.next("wrap_up", lambda m: m["call_id"] == call_id)
        await desk.send(
            "wrap_up",
            id="w1",
            call_id=call_id,
            disposition="human-seat",
            notes="人工坐席测试",
            resolved=True,
            follow_up_at=None,
        )
        await desk.next("ack", lambda m: m["re"] == "w1")
        await desk.send("logout", id="o1")
        await desk.next("agent_state", lambda m: m["state"] == "logged_out")

        # A bot whose socket drops reconnects (a new snapshot) and carries on.
        blipped = demo.bots[0]
        await blipped.drop_connection()
        await until(lambda: blipped.stats.connects == 2, "the bot reconnected", limit=WAIT_S)

        # The bots and callers meanwhile: wrap-ups, give-ups, callbacks, surveys.
        assert demo.callers is not None
        stats = demo.callers.stats
        await until(
            lambda: (
                sum(bot.stats.wrapped_up for bot in demo.bots) >= 4
                and stats.gave_up >= 1
                and stats.callbacks_asked >= 1
                and stats.surveys_answered >= 1
            ),
            "bot wrap-ups, a caller giving up, a callback and a survey",
            limit=WAIT_S,
        )
        wrapped = sum(bot.stats.wrapped_up for bot in demo.bots)
        # Every acknowledged wrap-up becomes an interaction row (written just after the ack).
        bot_rows = "SELECT count(*) FROM interactions WHERE agent_login = ANY($1::text[])" + (
            " AND disposition IS NOT NULL AND call_key NOT LIKE 'demo-history-%'"
        )
        for _ in range(int(WAIT_S / 0.1)):
            if await _count(db, bot_rows, sorted(BOTS)) >= wrapped:
                break
            await asyncio.sleep(0.1)
        assert await _count(db, bot_rows, sorted(BOTS)) >= wrapped
        human = await db.fetchrow(
            "SELECT disposition, notes, resolved FROM interactions WHERE call_key = $1"
            " AND agent_login = '1001'",
            call_id,
        )
        assert human is not None and tuple(human) == ("human-seat", "人工坐席测试", True)
        progress = demo.progress_line()
        assert "today: offered" in progress and "bot wrap-ups" in progress
    finally:
        if desk is not None:
            await desk.close()
        await demo.close()

    # What the server recorded, read back from the event log.
    assert await _count(db, "SELECT count(*) FROM events WHERE type = 'acd.offer'") >= 5
    abandoned = await _count(
        db,
        "SELECT count(*) FROM events WHERE type = 'acd.call_left'"
        " AND payload->>'outcome' = 'abandoned'",
    )
    assert abandoned >= 1
    assert await _count(db, "SELECT count(*) FROM events WHERE type = 'acd.callback_requested'")
    # The callers' keys landed: main menu choices made at the first prompt.
    keyed_at_once = await _count(
        db,
        "SELECT count(*) FROM events e, jsonb_array_elements(e.payload->'path') step"
        " WHERE e.type = 'ivr.ended' AND step->>'node' = 'main_menu'"
        " AND step->>'keys' ~ '^[0-9]$'",
    )
    assert keyed_at_once >= 5
    assert await _count(
        db,
        "SELECT count(*) FROM events WHERE type = 'ivr.survey' AND payload->>'score' IS NOT NULL",
    )
    # The bots logged out on the way down.
    states = await db.fetch(
        "SELECT DISTINCT ON (agent_id) agent_id, payload->>'state' AS state FROM events"
        " WHERE type = 'acd.agent_state' AND agent_id = ANY($1::text[])"
        " ORDER BY agent_id, id DESC",
        sorted(BOTS),
    )
    assert {row["state"] for row in states} <= {"logged_out"}, states
    # Nothing left running: every task of the demo was cancelled and awaited.
    assert asyncio.all_tasks() == {asyncio.current_task()}

    customers = await _count(db, "SELECT count(*) FROM customers")
    history = await _count(
        db, "SELECT count(*) FROM interactions WHERE call_key LIKE $1", HISTORY_KEY_PREFIX + "%"
    )
    accounts = await _count(db, "SELECT count(*) FROM accounts")
    assert customers == len(SAMPLE_CUSTOMERS)
    assert history == sum(len(c.history) for c in SAMPLE_CUSTOMERS)

    # A second run on the same data: the same customers, history and accounts, once.
    again = Demo(
        settings, DemoOptions(calls_per_minute=0, bots=4, progress_s=0), out=printed.append
    )
    wrap_ups = (
        "SELECT count(DISTINCT (call_id, agent_id)) FROM events WHERE type = 'desktop.wrap_up'"
    )
    stored = (
        "SELECT count(*) FROM interactions WHERE disposition IS NOT NULL"
        " AND call_key NOT LIKE 'demo-history-%'"
    )
    try:
        await again.start()
        assert {bot.agent_id for bot in again.bots} == BOTS
        # Every wrap-up the desktops sent (those of the shutdown too, journaled before
        # their ack) is an interaction once the server has caught up on its journal.
        journaled = await _count(db, wrap_ups)
        assert journaled >= 5
        for _ in range(int(WAIT_S / 0.1)):
            if await _count(db, stored) >= journaled:
                break
            await asyncio.sleep(0.1)
        assert await _count(db, stored) == journaled
    finally:
        await again.close()
    assert await _count(db, "SELECT count(*) FROM customers") == customers
    assert (
        await _count(
            db, "SELECT count(*) FROM interactions WHERE call_key LIKE $1", HISTORY_KEY_PREFIX + "%"
        )
        == history
    )
    assert await _count(db, "SELECT count(*) FROM accounts") == accounts
    assert asyncio.all_tasks() == {asyncio.current_task()}
