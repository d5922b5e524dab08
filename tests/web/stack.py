"""A whole contact centre for browser tests: the real Server (PostgreSQL, event log,
FastAGI, AMI, ACD, IVR, HTTP with sign-in, the desktop websocket, the customer API and
the web pages) against the Asterisk emulator running the shipped dialplan, on real
sockets, on fixed ports so that it can be stopped and started again under an open page.

Callers go through a small IVR flow (a menu: "2" for billing) into the `support` queue,
so the screen-pop has an IVR path.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from argon2 import PasswordHasher

from ctiserver.app import Server
from ctiserver.auth.passwords import hash_password
from ctiserver.config import HttpSettings, IvrSettings, Settings
from ctiserver.sim.dialplan_file import load_dialplan
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.phones import Call, PhonePolicy
from ctiserver.store.accounts import create_account
from ctiserver.store.customers import create_customer
from ctiserver.store.database import Database
from ctiserver.store.interactions import record_interaction
from tests.acd.centre import SHIPPED_DIALPLAN, agent_block, settings_for, until, write_acd

# Emulated seconds per real second (prompts, the agent phone's ringing).
SPEED = 10.0
# The agent's phone rings this many emulated seconds (1.5 s real) before it answers:
# long enough to see the offer, short of the queue's ring timeout.
RING_S = 15.0

AGENT_LOGIN = "wang"
AGENT_PASSWORD = "wang-pass-1001"
AGENT_NAME = "王小明"
AGENT_ID = "1001"

CUSTOMER_NAME = "张三"
CUSTOMER_NUMBER = "+86 138 0013 8000"
CALLER = "13800138000"
OLD_NOTES = "账单有误，待核实"
CUSTOMER_NOTES = "偏好下午联系"
HTML_NAME = '<img src=x onerror="window.__xss=1"><b>李四</b>'
HTML_NOTES = "<script>window.__xss=2</script>备注"
HTML_CALLER = "13900139000"

FLOW = """
name: 测试热线 Test line
start: menu
nodes:
  menu:
    type: menu
    prompt: test/menu
    options: {"2": billing}
    timeout: 5
    retries: 1
    default: billing
  billing: {type: queue, queue: support}
"""

# Cheap argon2 parameters: the tests need a password, not its strength.
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Stack:
    """The centre: `start()`, `stop()` (the page sees the server go away), `start()` again."""

    tmp: Path
    dsn: str
    database: Database
    emulator: AsteriskEmulator
    settings: Settings
    server: Server | None = None
    customer_id: int = 0
    calls: list[Call] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.settings.http.port}"

    async def start(self) -> None:
        server = Server(self.settings)
        await server.start()
        self.server = server
        self.emulator.pbx.globals["CTISERVER"] = f"127.0.0.1:{server.agi.port}"
        await until(lambda: server.ami.connected, "AMI connected")
        await self.check_wiring()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def check_wiring(self) -> None:
        """Fail at once, saying what is missing, when the server does not serve the desktop."""
        missing: list[str] = []
        # unsafe: the jar keeps cookies of an IP address host (127.0.0.1).
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            signed_in = await session.post(
                f"{self.base}/login", json={"login": AGENT_LOGIN, "password": AGENT_PASSWORD}
            )
            if signed_in.status != 200:
                missing.append(f"POST /login answered {signed_in.status}")
            for path, what in (
                ("/desktop", "the page (ctiserver.http.static.add_web_routes)"),
                ("/static/desktop.js", "the page's files (add_web_routes)"),
                ("/api/customers?q=x", "the customer API (add_customer_routes)"),
            ):
                async with session.get(f"{self.base}{path}", allow_redirects=False) as response:
                    if response.status != 200:
                        missing.append(f"GET {path} -> {response.status}: {what}")
            try:
                ws = await session.ws_connect(
                    f"{self.base}/ws/desktop", headers={"Origin": self.base}
                )
                first = await ws.receive(timeout=10)
                await ws.close()
                if first.type is not aiohttp.WSMsgType.TEXT or '"snapshot"' not in first.data:
                    missing.append(f"/ws/desktop sent {first.type} {first.data!r}")
            except aiohttp.WSServerHandshakeError as exc:
                missing.append(
                    f"/ws/desktop -> {exc.status}: the desktop websocket "
                    "(ctiserver.agent_desktop.websocket.add_desktop_routes)"
                )
        if missing:
            raise AssertionError(
                "ctiserver.app.Server does not serve the agent desktop yet: " + "; ".join(missing)
            )

    async def call(
        self, caller: str = CALLER, name: str = CUSTOMER_NAME, *, keys: str = "2"
    ) -> Call:
        """A customer calls and presses `keys` in the menu (emulated 1 s after the prompt)."""
        dtmf: Sequence[tuple[float, str]] = [(2.0, keys)] if keys else ()
        call = await self.emulator.place_call(caller, name, dtmf=dtmf)
        self.calls.append(call)
        return call

    def caller_hangs_up(self, call: Call) -> None:
        self.emulator.hangup(call.name)


async def seed(database: Database) -> int:
    """The agent's account, a customer with a Chinese name and history, an HTML-named one."""
    await create_account(
        database,
        AGENT_LOGIN,
        role="agent",
        password_hash=await hash_password(AGENT_PASSWORD, CHEAP),
        name=AGENT_NAME,
        agent_login=AGENT_ID,
    )
    customer = await create_customer(
        database,
        name=CUSTOMER_NAME,
        phones=[(CUSTOMER_NUMBER, "mobile")],
        grade="vip",
        language="zh",
        preferred_channel="phone",
        notes=CUSTOMER_NOTES,
    )
    await record_interaction(
        database,
        call_key="old-call-1",
        customer_id=customer.id,
        channel="phone",
        direction="inbound",
        started_at=datetime.now(UTC) - timedelta(days=3),
        queue_name="support",
        agent_login="1002",
        disposition="billing-question",
        notes=OLD_NOTES,
        resolved=False,
        recording_path="cti-old-call-1.wav",
    )
    await create_customer(database, name=HTML_NAME, phones=[HTML_CALLER], notes=HTML_NOTES)
    return customer.id


async def make_stack(tmp: Path, dsn: str, database: Database) -> Stack:
    """The emulator started and the centre configured; call `start()` to run the server."""
    acd = write_acd(
        tmp, agent_block(AGENT_ID, AGENT_NAME) + agent_block("1002", "李华"), ring_timeout=20
    )
    flows = tmp / "flows"
    flows.mkdir()
    (flows / "line.yaml").write_text(FLOW, encoding="utf-8")
    emulator = AsteriskEmulator(
        "127.0.0.1", 0, dialplan=load_dialplan(SHIPPED_DIALPLAN), speed=SPEED
    )
    await emulator.start()
    emulator.add_agent_phone(f"agent{AGENT_ID}", PhonePolicy(ring_time=RING_S, talk_time=None))
    emulator.add_agent_phone("agent1002", PhonePolicy(ring_time=RING_S, talk_time=None))
    settings = dataclasses.replace(
        settings_for(tmp, dsn, emulator.ami_port, acd, fastagi_port=free_port()),
        http=HttpSettings(host="127.0.0.1", port=free_port()),
        ivr=IvrSettings(flows=str(flows), default="line", reload_s=0),
    )
    customer_id = await seed(database)
    return Stack(tmp, dsn, database, emulator, settings, customer_id=customer_id)
