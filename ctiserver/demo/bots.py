"""Bot agents for the demo: real clients of the agent desktop's websocket.

Each bot signs in with `POST /login` as its agent account, opens `/ws/desktop` like
the page does (same-origin `Origin`, the session cookie, a `ping` every 30 s) and
speaks docs/desktop-protocol.md: `ready` once connected, nothing on an `offer` (its
emulated phone answers after its ring time), on `call_progress` `answered` it talks
for a while and then sends `hang_up`; in wrap-up it sends `wrap_up` with a
disposition, notes in the customer's language, resolved or not (sometimes a
follow-up time), which ends wrap-up and makes it available again. Put not ready
(no answer, or a supervisor on the wallboard) or logged out, it comes back after a
break. A dropped socket is reopened with backoff; the snapshot says where it was.

So the demo's traffic goes through the same sign-in, hub, call controls, wrap-up
journal and interaction writer a person's desktop uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from ctiserver.acd.model import AgentConfig
from ctiserver.agent_desktop.protocol import CloseCode

log = logging.getLogger(__name__)

PING_S = 30.0  # as the page does (the server closes a socket silent for 120 s)
CONNECT_TIMEOUT_S = 10.0
RECONNECT_MAX_S = 30.0
HANG_UP_TRIES = 5


class SignInRefused(Exception):
    """The bot's account did not sign in (wrong password, no account, deactivated)."""


@dataclass(frozen=True, slots=True)
class BotTimings:
    talk_s: tuple[float, float] = (15.0, 60.0)
    wrap_up_s: tuple[float, float] = (3.0, 10.0)
    break_s: float = 20.0  # back to ready after being put not ready or logged out
    resolved_share: float = 0.8
    follow_up_share: float = 0.4  # of the unresolved calls: a follow-up promised


@dataclass
class BotStats:
    connects: int = 0  # desktop sockets opened (more than one: it reconnected)
    offers: int = 0
    answered: int = 0
    hung_up: int = 0
    wrapped_up: int = 0  # acknowledged wrap-ups
    errors: int = 0


# Dispositions by what the IVR learnt (`pop.ivr.variables.product`, urgency) or the queue.
_NOTES = {
    "card-enquiry": ("信用卡业务咨询，已解答。", "Card enquiry answered."),
    "lost-card": (
        "卡片挂失，已冻结并安排补卡。",
        "Card reported lost: blocked, replacement ordered.",
    ),
    "loan-enquiry": (
        "贷款咨询，已介绍产品并发送资料。",
        "Loan enquiry: products explained, brochure sent.",
    ),
    "vip-service": ("贵宾客户来电，需求已处理。", "VIP request handled."),
    "callback-done": ("按预约回电，客户问题已处理。", "Called back as requested; issue handled."),
    "billing-question": ("账单问题，已解释明细。", "Billing question: statement explained."),
    "travel-booking": ("旅游线路咨询与预订。", "Travel booking enquiry."),
}
_UNRESOLVED = ("需进一步核实，待回电。", "Needs checking; will call back.")


def wrap_up_for(
    offer: dict[str, Any] | None, rng: random.Random, timings: BotTimings, now: datetime
) -> dict[str, Any]:
    """The `wrap_up` fields a bot sends for the call it was offered."""
    pop = (offer or {}).get("pop") or {}
    variables = (pop.get("ivr") or {}).get("variables") or {}
    customer = pop.get("customer") or {}
    queue = (offer or {}).get("queue") or ""
    if (offer or {}).get("callback_number"):
        disposition = "callback-done"
    elif variables.get("urgency") == "5":
        disposition = "lost-card"
    elif variables.get("product") == "loans" or queue == "sales":
        disposition = "loan-enquiry"
    elif queue == "vip":
        disposition = "vip-service"
    elif queue == "billing":
        disposition = "billing-question"
    elif (pop.get("ivr") or {}).get("flow") == "travel_line":
        disposition = "travel-booking"
    else:
        disposition = "card-enquiry"
    english = (customer.get("language") or (pop.get("ivr") or {}).get("language")) == "en"
    resolved = rng.random() < timings.resolved_share
    notes = _NOTES[disposition][1 if english else 0]
    follow_up_at: str | None = None
    if not resolved:
        notes += " " + _UNRESOLVED[1 if english else 0]
        if rng.random() < timings.follow_up_share:
            when = now + timedelta(days=1, hours=rng.randrange(1, 8))
            follow_up_at = when.isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "disposition": disposition,
        "notes": notes,
        "resolved": resolved,
        "follow_up_at": follow_up_at,
    }


class BotAgent:
    """One agent account driven over the desktop websocket (see the module docstring)."""

    def __init__(
        self,
        agent: AgentConfig,
        base_url: str,
        login: str,
        password: str,
        timings: BotTimings,
        rng: random.Random,
    ) -> None:
        self.agent = agent
        self.base_url = base_url
        self.login = login
        self.password = password
        self.timings = timings
        self.rng = rng
        self.stats = BotStats()
        self.state = "logged_out"
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._offers: dict[str, dict[str, Any]] = {}
        self._talks: dict[str, asyncio.Task[None]] = {}
        self._wrap_ups: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self._logged_out = asyncio.Event()
        # Set while stopping: wrap-ups go out at once instead of after the usual pause.
        self._hurry = asyncio.Event()
        self._unacked: set[str] = set()  # ids of wrap-ups sent and not yet answered
        self._all_acked = asyncio.Event()
        self._all_acked.set()

    @property
    def agent_id(self) -> str:
        return self.agent.agent_id

    async def start(self) -> None:
        """Sign in and connect (SignInRefused, aiohttp.ClientError when that fails), then
        keep the desktop going in a task of its own."""
        # unsafe: the jar keeps the cookie of a host given as an IP address (127.0.0.1).
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S),
        )
        await self._sign_in()
        ws = await self._connect()
        self._main = asyncio.create_task(self._run(ws), name=f"demo-bot-{self.agent_id}")

    def stop_taking_calls(self) -> None:
        """From now on: no `ready` any more, and wrap-ups go out at once."""
        self._stopping = True
        self._hurry.set()

    async def log_out(self, limit_s: float = 3.0) -> bool:
        """Stop taking calls: log out (after the current call, if any) and wrap up the calls
        that end meanwhile; True once the server confirmed both within `limit_s`."""
        self.stop_taking_calls()
        try:
            async with asyncio.timeout(limit_s):
                if self.state != "logged_out":
                    self._logged_out.clear()
                    await self._send("logout")
                    await self._logged_out.wait()
                # A call ended by the logout is wrapped up (call_progress `ended`).
                while self._wrap_ups:
                    await asyncio.gather(*self._wrap_ups.values(), return_exceptions=True)
                await self._all_acked.wait()
        except (TimeoutError, ConnectionError, aiohttp.ClientError, RuntimeError):
            return False
        return True

    async def close(self) -> None:
        self._stopping = True
        tasks = [*self._tasks, *([self._main] if self._main is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    # -- the connection ---------------------------------------------------------------------

    async def _sign_in(self) -> None:
        assert self._session is not None
        async with self._session.post(
            f"{self.base_url}/login", json={"login": self.login, "password": self.password}
        ) as response:
            if response.status != 200:
                raise SignInRefused(f"{self.login}: HTTP {response.status} {await response.text()}")

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        ws = await self._session.ws_connect(
            f"{self.base_url}/ws/desktop",
            headers={"Origin": self.base_url},
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            heartbeat=None,  # the server pings; the client answers by itself
        )
        self._ws = ws
        self.stats.connects += 1
        return ws

    async def drop_connection(self) -> None:
        """Close the desktop socket as a network blip would; the bot reconnects."""
        if self._ws is not None:
            await self._ws.close()

    async def _run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        backoff = 1.0
        pinger = self._spawn(self._ping(), "ping")
        try:
            while True:
                await self._read(ws)
                if self._stopping:
                    return
                code = ws.close_code
                if code == CloseCode.FORBIDDEN:
                    log.warning("bot %s: desktop refused (4403); the bot stops", self.agent_id)
                    return
                log.info("bot %s: desktop socket closed (%s); reconnecting", self.agent_id, code)
                while True:
                    await asyncio.sleep(backoff * self.rng.uniform(1.0, 1.3))
                    backoff = min(RECONNECT_MAX_S, backoff * 2)
                    try:
                        if code == CloseCode.UNAUTHENTICATED:  # the session ended: sign in again
                            await self._sign_in()
                        ws = await self._connect()
                        break
                    except (SignInRefused, aiohttp.ClientError, OSError, TimeoutError) as exc:
                        log.info("bot %s: reconnect failed: %s", self.agent_id, exc)
                backoff = 1.0
        finally:
            pinger.cancel()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(data, dict):
                await self._on_message(data)

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(PING_S)
            with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                await self._send("ping")

    def _next_id(self) -> str:
        return f"{self.agent_id}-{next(self._ids)}"

    async def _send(self, kind: str, *, ident: str | None = None, **fields: Any) -> str:
        """Send a desktop command; its id (the `re` of the answer)."""
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionError("the desktop socket is closed")
        ident = ident or self._next_id()
        text = json.dumps({"type": kind, "v": 1, "id": ident, **fields}, ensure_ascii=False)
        async with self._send_lock:
            await ws.send_str(text)
        return ident

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guarded(coro), name=f"demo-bot-{self.agent_id}-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        """A bot's side task: a socket gone meanwhile ends it quietly (the reader reconnects)."""
        try:
            await coro
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            log.debug("bot %s: %s", self.agent_id, exc)

    # -- the protocol ----------------------------------------------------------------------

    async def _on_message(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "snapshot":
            await self._on_snapshot(data)
        elif kind == "agent_state":
            self._on_state(str(data.get("state")), self.timings.break_s)
        elif kind == "offer":
            call_id = str(data.get("call_id"))
            if call_id not in self._offers:
                self.stats.offers += 1
            self._offers[call_id] = data  # a complete pop replaces the first one
        elif kind == "call_progress":
            call_id, stage = str(data.get("call_id")), data.get("stage")
            if stage == "answered" and call_id not in self._talks:
                self.stats.answered += 1
                self._talks[call_id] = self._spawn(self._talk(call_id), f"talk-{call_id}")
            elif stage == "ended":
                talk = self._talks.get(call_id)
                if talk is not None:
                    talk.cancel()  # the caller hung up first
                if self._stopping:
                    # Logging out: no wrap-up state may follow, the wrap-up goes now.
                    self._start_wrap_up(call_id)
        elif kind == "offer_withdrawn":
            self._offers.pop(str(data.get("call_id")), None)
        elif kind == "wrap_up":
            self._start_wrap_up(str(data.get("call_id")))
        elif kind == "ack" and data.get("for") == "wrap_up":
            self.stats.wrapped_up += 1
            self._answered(data.get("re"))
            call_id = str((data.get("detail") or {}).get("call_id"))
            self._offers.pop(call_id, None)
            self._talks.pop(call_id, None)
        elif kind == "error":
            self.stats.errors += 1
            self._answered(data.get("re"))
            log.debug("bot %s: %s", self.agent_id, data)

    async def _on_snapshot(self, data: dict[str, Any]) -> None:
        agent = data.get("agent") or {}
        offer = data.get("offer")
        if offer:
            self._offers[str(offer.get("call_id"))] = offer
        for call in data.get("calls") or []:
            call_id = str(call.get("call_id"))
            if call.get("stage") == "answered" and call_id not in self._talks:
                self._talks[call_id] = self._spawn(self._talk(call_id), f"talk-{call_id}")
        wrap_up = data.get("wrap_up")
        if wrap_up:
            self._start_wrap_up(str(wrap_up.get("call_id")))
        # Just connected: ready at once, whatever the state was.
        self._on_state(str(agent.get("state")), 0.0)

    def _on_state(self, state: str, ready_after_s: float) -> None:
        """Follow the agent's state; logged out or not ready, ready again after a while."""
        self.state = state
        if state == "logged_out":
            self._logged_out.set()
        if self._stopping or state not in ("logged_out", "not_ready"):
            return
        if not self._tasks_named("ready"):
            self._spawn(self._ready_after(ready_after_s), "ready")

    def _tasks_named(self, what: str) -> bool:
        suffix = f"-{what}"
        return any(task.get_name().endswith(suffix) for task in self._tasks)

    async def _ready_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.state in ("logged_out", "not_ready") and not self._stopping:
            await self._send("ready")

    async def _talk(self, call_id: str) -> None:
        await asyncio.sleep(self.rng.uniform(*self.timings.talk_s))
        for _ in range(HANG_UP_TRIES):
            if self.state != "on_call":
                return
            await self._send("hang_up", call_id=call_id)
            self.stats.hung_up += 1
            # A refusal (the call just ended, or a control is under way) shows as the
            # state staying on_call; try again a little later.
            await asyncio.sleep(2.0)

    def _start_wrap_up(self, call_id: str) -> None:
        if call_id in self._wrap_ups and not self._wrap_ups[call_id].done():
            return
        self._wrap_ups[call_id] = self._spawn(self._wrap_up(call_id), f"wrap-{call_id}")

    async def _wrap_up(self, call_id: str) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.rng.uniform(*self.timings.wrap_up_s)):
                    await self._hurry.wait()
            fields = wrap_up_for(
                self._offers.get(call_id), self.rng, self.timings, datetime.now(UTC)
            )
            # Counted before sending: the answer may be read while the send is under way.
            ident = self._next_id()
            self._unacked.add(ident)
            self._all_acked.clear()
            try:
                await self._send("wrap_up", ident=ident, call_id=call_id, **fields)
            except BaseException:
                self._answered(ident)
                raise
        finally:
            self._wrap_ups.pop(call_id, None)

    def _answered(self, ident: object) -> None:
        self._unacked.discard(str(ident))
        if not self._unacked:
            self._all_acked.set()
