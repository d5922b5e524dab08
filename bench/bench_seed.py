"""What the desktop benchmarks share (bench/screen_pop.py, bench/e2e.py): process limits,
the local PostgreSQL, a centre seeded with customers, history and agent sessions, and the
plumbing of their processes (the server's settings, the emulator, loop-lag sampling, the
desktop clients' sign-in and pings)."""

from __future__ import annotations

import asyncio
import json
import random
import resource
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from ctiserver.config import (
    AcdSettings,
    AmiSettings,
    DatabaseSettings,
    FastAgiSettings,
    HttpSettings,
    IvrSettings,
    ServerSettings,
    Settings,
)
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.store.database import Database

REPO = Path(__file__).resolve().parents[1]
FIRST_AGENT = 1001
PING_S = 30.0  # how often a desktop client pings, as the page does
_DISPOSITIONS = ("billing-question", "card-blocked", "address-change", "complaint", "sale")


def raise_nofile(wanted: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def phone_of(customer: int) -> str:
    return f"139{customer:08d}"


def local_pg_listens() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


def bench_settings(cfg: dict[str, Any], flows: str) -> Settings:
    """The server's settings in a bench: its data folder, the emulator's AMI, the bench
    database and ACD file, any free FastAGI and HTTP port, `flows` never reloaded."""
    return Settings(
        server=ServerSettings(data_dir=cfg["data_dir"], log_level="ERROR"),
        ami=AmiSettings(port=cfg["ami_port"], auth="plain"),
        fastagi=FastAgiSettings(port=0, command_timeout=60.0),
        http=HttpSettings(port=0),
        database=DatabaseSettings(dsn=cfg["dsn"]),
        acd=AcdSettings(config=cfg["acd"]),
        ivr=IvrSettings(flows=flows, reload_s=0),
    )


async def start_emulator() -> AsteriskEmulator:
    """The Asterisk emulator on any free AMI port, running the shipped dialplan."""
    from ctiserver.sim.dialplan_file import load_dialplan

    dialplan = load_dialplan(REPO / "dialplans" / "extensions.conf", {"CTISERVER": "0:0"})
    emulator = AsteriskEmulator("127.0.0.1", 0, dialplan=dialplan)
    await emulator.start()
    return emulator


async def wait_for_ami(server: Any, polls: int = 600, every_s: float = 0.05) -> None:
    """Until the server's AMI client has logged in (the emulator is up already)."""
    for _ in range(polls):
        if server.ami.connected:
            return
        await asyncio.sleep(every_s)


async def watch_lag(lags: list[float], every_s: float = 0.02) -> None:
    """Append to `lags` how late the loop runs a callback due every `every_s` (until cancelled)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every_s
        await asyncio.sleep(every_s)
        lags.append(max(0.0, loop.time() - due))


async def keep_pinging(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Ping every PING_S, as the page does, from a random start (until the socket closes)."""
    await asyncio.sleep(random.uniform(0, PING_S))
    while not ws.closed:
        await ws.send_str('{"type": "ping", "v": 1}')
        await asyncio.sleep(PING_S)


async def open_ready_desk(
    session: aiohttp.ClientSession, base: str, token: str, **ws_options: Any
) -> aiohttp.ClientWebSocketResponse | str:
    """A desktop's socket, signed in by its session cookie, its snapshot read and the agent
    made ready; else what failed ("close <code>" or the exception's name)."""
    try:
        ws: aiohttp.ClientWebSocketResponse = await session.ws_connect(
            f"{base}/ws/desktop",
            headers={"Origin": base, "Cookie": f"cti_session={token}"},
            **ws_options,
        )
        first = await ws.receive(timeout=30)
        if first.type is not aiohttp.WSMsgType.TEXT:
            return f"close {ws.close_code}"
        assert json.loads(first.data)["type"] == "snapshot"
        await ws.send_str('{"type": "ready", "v": 1, "id": "r"}')
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return type(exc).__name__
    return ws


async def admin_execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement, timeout=120)
    finally:
        await conn.close()


async def seed_centre(
    dsn: str,
    *,
    customers: int,
    history: int,
    agents: int,
    queue: str,
    notes: str,
    recordings: bool,
    agent_name: Callable[[str], str],
) -> dict[str, str]:
    """Migrate the database at `dsn`; `customers` with `history` interactions each (with a
    recording file name when `recordings`); an account and a session per agent from
    FIRST_AGENT. Returns {agent id: session token}."""
    from ctiserver.store.accounts import create_account, create_session
    from ctiserver.store.customers import create_customer
    from ctiserver.store.interactions import record_interaction

    db = await Database.open(dsn, max_size=8)
    now = datetime.now(UTC)
    rng = random.Random(11)
    tokens: dict[str, str] = {}
    try:

        async def one_customer(i: int) -> None:
            customer = await create_customer(
                db,
                name=f"客户 {i:05d}",
                phones=[(phone_of(i), "mobile")],
                accounts=[(f"6222 0000 {i:08d}", "card")],
                grade=("vip", "standard", "standard")[i % 3],
                language="zh",
                preferred_channel="phone",
                notes="偏好下午联系；上次投诉已处理。",
            )
            for h in range(history):
                await record_interaction(
                    db,
                    call_key=f"seed-{i}-{h}",
                    customer_id=customer.id,
                    channel="phone",
                    direction="inbound",
                    started_at=now - timedelta(days=1 + h * 5, minutes=rng.randrange(600)),
                    queue_name=queue,
                    agent_login=str(FIRST_AGENT + rng.randrange(max(1, agents))),
                    disposition=_DISPOSITIONS[(i + h) % len(_DISPOSITIONS)],
                    notes=notes,
                    resolved=h > 0,
                    recording_path=f"cti-seed-{i}-{h}.wav" if recordings else None,
                )

        async def one_agent(number: int) -> None:
            agent = str(number)
            account = await create_account(
                db,
                f"agent{agent}",
                role="agent",
                # Never checked: sessions are opened directly (no argon2 sign-in per agent).
                password_hash="$argon2id$v=19$m=65536,t=3,p=4$bench$bench",
                name=agent_name(agent),
                agent_login=agent,
            )
            tokens[agent] = await create_session(db, account.id, now=now, idle=timedelta(days=1))

        async def in_batches(jobs: list[Any]) -> None:
            for start in range(0, len(jobs), 64):
                await asyncio.gather(*jobs[start : start + 64])

        await in_batches([one_customer(i) for i in range(customers)])
        await in_batches([one_agent(n) for n in range(FIRST_AGENT, FIRST_AGENT + agents)])
        await db.execute("ANALYZE")
    finally:
        await db.close()
    return tokens
