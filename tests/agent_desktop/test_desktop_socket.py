"""The desktop websocket end to end: the real Server (PostgreSQL, event log, FastAGI,
AMI, ACD, its call controls and desktop hub, its HTTP app with sign-in) and the
Asterisk emulator, on real sockets. Desktops sign in with POST /login."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from argon2 import PasswordHasher

from ctiserver.acd.call_controls import CallControls
from ctiserver.acd.model import AgentState
from ctiserver.agent_desktop import screen_pop
from ctiserver.agent_desktop.websocket import DesktopService
from ctiserver.auth.passwords import hash_password
from ctiserver.config import Settings
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.phones import PhonePolicy
from ctiserver.store.accounts import create_account
from ctiserver.store.customers import Customer, create_customer, find_customers_by_phone
from ctiserver.store.database import Database
from ctiserver.store.interactions import interaction_for_call, record_interaction
from tests.acd.centre import (
    Centre,
    agent_block,
    emulated_asterisk,
    running_server,
    settings_for,
    until,
    write_acd,
)

WAIT_S = 15.0
# Accounts signed in with POST /login on the server's own HTTP app.
PASSWORD = "desk-pass-123"
ACCOUNTS = {
    "1001": ("wang", "agent", "王小明", "1001"),
    "1002": ("li", "agent", "李华", "1002"),
    "boss": ("boss", "supervisor", "主管", None),
}
# Cheap argon2 parameters: the tests need a password, not its strength.
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


async def add_accounts(db: Database) -> None:
    password_hash = await hash_password(PASSWORD, CHEAP)
    for login, role, name, agent in ACCOUNTS.values():
        await create_account(
            db, login, role=role, name=name, agent_login=agent, password_hash=password_hash
        )


@dataclass
class Desktops:
    """The running server's own desktop service, call controls and HTTP app."""

    centre: Centre
    base: str
    sessions: dict[str | None, aiohttp.ClientSession] = field(default_factory=dict)

    @property
    def service(self) -> DesktopService:
        assert self.centre.server.desktop is not None
        return self.centre.server.desktop

    @property
    def controls(self) -> CallControls:
        assert self.centre.server.controls is not None
        return self.centre.server.controls

    async def session(self, who: str | None) -> aiohttp.ClientSession:
        """A browser for `who` (a key of ACCOUNTS), signed in; None: never signed in."""
        session = self.sessions.get(who)
        if session is None:
            # unsafe: the jar keeps cookies of an IP address host (127.0.0.1).
            session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            self.sessions[who] = session
            if who is not None:
                login = ACCOUNTS[who][0]
                async with session.post(
                    f"{self.base}/login", json={"login": login, "password": PASSWORD}
                ) as response:
                    assert response.status == 200, await response.text()
        return session

    async def open(
        self, login: str | None = "1001", *, query: str = "", origin: str | None = None
    ) -> Socket:
        session = await self.session(login)
        ws = await session.ws_connect(
            f"{self.base}/ws/desktop{query}",
            headers={"Origin": origin or self.base},
            timeout=aiohttp.ClientWSTimeout(ws_close=5),
        )
        return Socket(ws)

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()
        self.sessions.clear()


class Socket:
    """A desktop: sends commands, waits for a message of a type (skipping others)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send_str(json.dumps({"type": kind, "v": 1, **fields}, ensure_ascii=False))

    async def next(
        self, kind: str, when: Callable[[dict[str, Any]], bool] = lambda m: True
    ) -> dict[str, Any]:
        """The first message of `kind` (matching `when`) not taken yet, in arrival order."""
        for data in self.seen:
            if data["type"] == kind and when(data):
                self.seen.remove(data)
                return data
        async with asyncio.timeout(WAIT_S):
            while True:
                msg = await self.ws.receive()
                assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
                got: dict[str, Any] = json.loads(msg.data)
                assert got["v"] == 1
                if got["type"] == kind and when(got):
                    return got
                self.seen.append(got)

    async def settle(self) -> list[dict[str, Any]]:
        """Everything received and not taken yet, up to the answer to a ping."""
        await self.send("ping")
        await self.next("pong")
        return self.seen

    async def closed_with(self) -> int | None:
        async with asyncio.timeout(WAIT_S):
            while True:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return self.ws.close_code


def centre_settings(tmp_path: Path, dsn: str, ami_port: int) -> Settings:
    acd = write_acd(tmp_path, agent_block("1001", "王小明") + agent_block("1002", "李华"))
    return settings_for(tmp_path, dsn, ami_port, acd)


def add_phones(emulator: AsteriskEmulator, ring_time: float, talk_time: float | None) -> None:
    policy = PhonePolicy(ring_time=ring_time, talk_time=talk_time)
    emulator.add_agent_phone("agent1001", policy)
    emulator.add_agent_phone("agent1002", policy)
    emulator.add_phone("pstn", PhonePolicy(ring_time=0.2))  # the carrier trunk


@contextlib.asynccontextmanager
async def signed_in(centre: Centre) -> AsyncIterator[Desktops]:
    """Desktops of the running server: its own hub and call controls, behind its own
    HTTP app and sign-in (accounts must exist: add_accounts)."""
    desktops = Desktops(centre, f"http://127.0.0.1:{centre.server.http_port}")
    try:
        yield desktops
    finally:
        await desktops.close()


@contextlib.asynccontextmanager
async def desktops(
    tmp_path: Path,
    pg_dsn: str,
    db: Database,
    *,
    ring_time: float = 0.3,
    talk_time: float | None = 1.0,
) -> AsyncIterator[Desktops]:
    """Agents 1001 and 1002, their phones, the pstn trunk, their accounts and the server:
    the desktop as Server.start() wires it (CallControls, DesktopService, /ws/desktop)."""
    await add_accounts(db)
    async with emulated_asterisk() as emulator:
        add_phones(emulator, ring_time, talk_time)
        settings = centre_settings(tmp_path, pg_dsn, emulator.ami_port)
        async with running_server(emulator, settings, db) as centre, signed_in(centre) as d:
            yield d


async def seed_customer(db: Database) -> int:
    customer = await create_customer(
        db,
        name="张三",
        phones=[("+86 138 0013 8000", "mobile")],
        grade="vip",
        language="zh",
        preferred_channel="phone",
        notes="偏好下午联系",
    )
    await record_interaction(
        db,
        call_key="old-call-1",
        customer_id=customer.id,
        channel="phone",
        direction="inbound",
        started_at=datetime.now(UTC) - timedelta(days=3),
        queue_name="support",
        agent_login="1002",
        disposition="billing-question",
        notes="账单有误，待核实",
        resolved=False,
        recording_path="cti-old-call-1.wav",
    )
    return customer.id


async def test_call_from_offer_to_wrap_up_and_the_next_pop_shows_it(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    customer_id = await seed_customer(db)
    # The look-up ends while the phone rings (test_pop_after_the_answer...: it does not).
    async with desktops(tmp_path, pg_dsn, db, ring_time=1.0, talk_time=1.0) as d:
        desk = await d.open("1001")
        snapshot = await desk.next("snapshot")
        assert snapshot["agent"]["state"] == "logged_out"
        assert snapshot["agent"]["name"] == "王小明"
        assert snapshot["offer"] is None and snapshot["read_only"] is False
        assert snapshot["features"] == {"call_controls": True, "scheduled_callbacks": False}
        assert [q["queue"] for q in snapshot["queues"]] == ["support"]

        await desk.send("ready", id="r1")
        assert (await desk.next("ack"))["re"] == "r1"
        assert (await desk.next("agent_state"))["state"] == "available"

        call = await d.centre.emulator.place_call("13800138000", "张三")
        # An agent was free: the offer went out with the call, before the profile arrived;
        # it is sent again, complete, the moment the prefetch ends.
        first = await desk.next("offer")
        offer = await desk.next("offer", lambda m: m["pop"]["complete"])
        assert first["call_id"] == offer["call_id"]
        pop = offer["pop"]
        assert offer["call_id"] == call.uniqueid and offer["queue_title"] == "客户服务"
        assert pop["complete"] is True
        assert pop["customer"]["id"] == customer_id
        assert pop["customer"]["name"] == "张三" and pop["customer"]["notes"] == "偏好下午联系"
        assert pop["customer"]["numbers"] == [{"number": "+86 138 0013 8000", "label": "mobile"}]
        [old] = pop["interactions"]
        assert old["notes"] == "账单有误，待核实" and old["resolved"] is False
        # Agents see that a recording exists; only supervisors get a link to play it.
        assert old["recording"] == {"available": True, "url": None}
        assert pop["reason"]["text"] == "follow-up on billing-question"
        assert pop["reason"]["rule"] == "unresolved_recent"
        assert pop["unknown_caller"] is None and pop["waited_s"] >= 0

        # A reload while the phone rings: the snapshot has the offer again.
        again = await d.open("1001")
        reloaded = await again.next("snapshot")
        assert reloaded["agent"]["state"] == "reserved"
        assert reloaded["offer"]["call_id"] == call.uniqueid
        assert reloaded["offer"]["pop"]["customer"]["name"] == "张三"
        # A supervisor watching the agent sees the same offer, recordings playable.
        watcher = await d.open("boss", query="?agent=1001")
        watched = await watcher.next("snapshot")
        assert watched["read_only"] is True
        url = watched["offer"]["pop"]["interactions"][0]["recording"]["url"]
        assert url and url.startswith("/api/")
        await watcher.send("ready", id="w")
        assert (await watcher.next("error"))["code"] == "read_only"

        answered = await desk.next("call_progress", lambda m: m["stage"] == "answered")
        assert answered["call_id"] == call.uniqueid
        await again.next("call_progress", lambda m: m["stage"] == "answered")
        # A call control naming a call that is not the agent's is refused before Asterisk.
        await desk.send("hang_up", id="h1", call_id="someone-elses")
        error = await desk.next("error")
        assert (error["code"], error["re"], error["for"]) == ("not_your_call", "h1", "hang_up")
        # Another agent cannot wrap up this call.
        other = await d.open("1002")
        await other.next("snapshot")
        await other.send(
            "wrap_up", id="x", call_id=call.uniqueid, disposition="sale", notes="",
            resolved=True, follow_up_at=None,
        )  # fmt: skip
        assert (await other.next("error"))["code"] == "not_your_call"

        ended = await desk.next("call_progress", lambda m: m["stage"] == "ended")
        assert ended["detail"]["talk_s"] > 0
        wrap = await desk.next("wrap_up")
        assert wrap["call_id"] == call.uniqueid and wrap["wrap_up_s"] == 0.5

        follow_up = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        await desk.send(
            "wrap_up", id="w1", call_id=call.uniqueid, disposition="billing-fixed",
            notes="已为客户更正账单。谢谢！", resolved=True, follow_up_at=follow_up,
        )  # fmt: skip
        ack = await desk.next("ack", lambda m: m["re"] == "w1")
        assert ack["detail"] == {
            "call_id": call.uniqueid,
            "journaled": True,
            "saved": "database",  # the database is up: the ack waited for the table
            "follow_up": "stored",
        }
        await d.centre.agent_reaches("1001", AgentState.AVAILABLE)
        # The background writer takes it to the interactions table.
        await until(lambda: d.service.hub.pending_wrap_ups == 0, "wrap-up written")
        stored = await interaction_for_call(db, call.uniqueid)
        assert stored is not None
        assert stored.notes == "已为客户更正账单。谢谢！"
        assert (stored.disposition, stored.resolved) == ("billing-fixed", True)
        assert (stored.customer_id, stored.agent_login, stored.queue_name) == (
            customer_id,
            "1001",
            "support",
        )
        assert stored.follow_up_at is not None and stored.address == "13800138000"

        await desk.send("list_callbacks", id="cb")
        listed = await desk.next("callbacks")
        assert [(c["call_id"], c["status"]) for c in listed["callbacks"]] == [
            (call.uniqueid, "scheduled")
        ]

        second = await d.centre.emulator.place_call("13800138000", "张三")
        offer2 = await desk.next(
            "offer", lambda m: m["call_id"] == second.uniqueid and m["pop"]["complete"]
        )
        latest = offer2["pop"]["interactions"][0]
        assert latest["disposition"] == "billing-fixed"
        assert latest["notes"] == "已为客户更正账单。谢谢！"
        assert offer2["pop"]["reason"]["rule"] == "repeat_today"
        await desk.ws.close()
        await again.ws.close()
        await watcher.ws.close()
        await other.ws.close()


async def test_unknown_caller_gets_a_pop_offering_to_create_a_customer(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with desktops(tmp_path, pg_dsn, db) as d:
        desk = await d.open("1002")
        await desk.next("snapshot")
        await desk.send("ready")
        await desk.next("agent_state")
        await d.centre.emulator.place_call("02155550000")
        pop = (await desk.next("offer", lambda m: m["pop"]["complete"]))["pop"]
        assert pop["customer"] is None and pop["interactions"] == []
        assert pop["unknown_caller"]["number"] == "02155550000"
        assert pop["unknown_caller"]["create"] == "/api/customers"
        # Linking the number to a customer is a PATCH of that customer (what the page does).
        assert pop["unknown_caller"]["link"] == {
            "method": "PATCH",
            "url": "/api/customers/{id}",
            "body": {"add_phones": [{"number": "02155550000", "label": ""}]},
        }
        customer = await create_customer(db, name="李四", phones=[("13900001111", "")])
        link = pop["unknown_caller"]["link"]
        browser = await d.session("1002")
        async with browser.request(
            link["method"],
            d.base + link["url"].format(id=customer.id),
            json=link["body"],
            headers={"Origin": d.base},
        ) as response:
            assert response.status == 200, await response.text()
            numbers = [p["number"] for p in (await response.json())["phones"]]
        assert "02155550000" in numbers
        assert pop["reason"]["rule"] == "queue"
        await desk.ws.close()


async def test_state_changes_and_malformed_input_keep_the_connection(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with desktops(tmp_path, pg_dsn, db) as d:
        desk = await d.open("1001")
        await desk.next("snapshot")
        await desk.ws.send_str("{junk")
        assert (await desk.next("error"))["code"] == "bad_json"
        await desk.ws.send_bytes(b"\x00\x01")
        assert (await desk.next("error"))["code"] == "binary_frame"
        await desk.ws.send_str(json.dumps({"type": "ping", "v": 1, "pad": "x" * 70_000}))
        assert (await desk.next("error"))["code"] == "too_large"
        await desk.send("not_ready", id="n0", reason="nap")
        error = await desk.next("error")
        assert (error["code"], error["field"], error["re"]) == ("bad_reason_code", "reason", "n0")
        await desk.send("hold", id="h", call_id="someone-elses")
        assert (await desk.next("error"))["code"] == "not_your_call"
        # The ACD refuses "ready" twice over? No: first it logs the agent in.
        await desk.send("ready")
        assert (await desk.next("agent_state"))["state"] == "available"
        await desk.send("not_ready", id="n1", reason="lunch")
        state = await desk.next("agent_state")
        assert (state["state"], state["reason"]) == ("not_ready", "lunch")
        await desk.send("ping")
        await desk.next("pong")
        await desk.send("get_snapshot")
        snap = await desk.next("snapshot")
        assert (snap["agent"]["state"], snap["agent"]["reason"]) == ("not_ready", "lunch")
        await desk.send("logout", id="o")
        assert (await desk.next("agent_state"))["state"] == "logged_out"
        await desk.send("logout", id="o2")
        assert (await desk.next("error"))["code"] == "illegal_state"
        await desk.send("dial", id="d", number="+86 138 0013 8000")
        error = await desk.next("error")
        assert (error["code"], error["for"]) == ("illegal_state", "dial")  # logged out
        assert "log in" in error["message"]
        await desk.ws.close()


async def test_refused_connections_close_with_their_codes(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with desktops(tmp_path, pg_dsn, db) as d:
        # Not signed in: the server's sign-in middleware refuses the upgrade itself.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await d.open(None)
        assert refused.value.status == 401
        assert await (await d.open("1001", origin="http://evil.example")).closed_with() == 4403
        assert await (await d.open("1001", query="?agent=1002")).closed_with() == 4403
        assert await (await d.open("boss")).closed_with() == 4403
        assert await (await d.open("boss", query="?agent=9999")).closed_with() == 4403
        # The agent's state is untouched by any of it.
        assert d.centre.acd.agent_state("1001") is AgentState.LOGGED_OUT


async def test_queue_figures_are_pushed_and_a_closed_desktop_leaves_state_alone(
    tmp_path: Path, pg_dsn: str, db: Database
) -> None:
    async with desktops(tmp_path, pg_dsn, db) as d:
        desk = await d.open("1002")
        await desk.next("snapshot")
        await d.centre.emulator.place_call("13900001111")  # nobody ready: it waits
        figures = await desk.next("queue_figures", lambda m: m["queues"][0]["waiting"] >= 1)
        assert figures["queues"][0]["title"] == "客户服务"
        # The profile was fetched while the call waited: the offer's pop is complete at once.
        await desk.send("ready")
        offer = await desk.next("offer")
        assert offer["pop"]["complete"] is True and offer["pop"]["unknown_caller"] is not None
        await desk.ws.close()
        await until(lambda: d.service.hub.connections("1002") == 0, "desktop detached")


async def test_pop_after_the_answer_comes_as_a_pop_message(
    tmp_path: Path, pg_dsn: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The customer look-up ends after the agent answered (a slow database): the complete
    pop is sent for the call on the desk, and a reload shows it too."""
    customer_id = await seed_customer(db)
    looked_up = asyncio.Event()

    async def slow_lookup(database: Database, number: str) -> list[Customer]:
        await asyncio.sleep(1.5)  # longer than the 0.3 s ring
        try:
            return await find_customers_by_phone(database, number)
        finally:
            looked_up.set()

    monkeypatch.setattr(screen_pop, "find_customers_by_phone", slow_lookup)
    async with desktops(tmp_path, pg_dsn, db, ring_time=0.3, talk_time=None) as d:
        desk = await d.open("1001")
        await desk.next("snapshot")
        await desk.send("ready", id="r1")
        await desk.next("ack")
        call = await d.centre.emulator.place_call("13800138000", "张三")
        offer = await desk.next("offer")
        assert offer["call_id"] == call.uniqueid and offer["pop"]["complete"] is False
        answered = await desk.next("call_progress", lambda m: m["stage"] == "answered")
        assert answered["call_id"] == call.uniqueid and not looked_up.is_set()
        pop = await desk.next("pop")
        assert pop["call_id"] == call.uniqueid
        assert pop["pop"]["complete"] is True
        assert pop["pop"]["customer"]["id"] == customer_id
        assert pop["pop"]["customer"]["name"] == "张三"
        assert pop["pop"]["interactions"][0]["recording"] == {"available": True, "url": None}
        # A reload: the snapshot's call carries the complete pop.
        again = await d.open("1001")
        [on_desk] = (await again.next("snapshot"))["calls"]
        assert on_desk["call_id"] == call.uniqueid and on_desk["pop"]["complete"] is True
