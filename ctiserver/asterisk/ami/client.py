"""Asyncio AMI client: login, actions with ActionID correlation, event lists,
event subscriptions, keep-alive, reconnect with backoff and resync hooks.

Routing (INDEX behaviours 8-10): a frame is classified by `Event:` first. An
event whose ActionID belongs to an action that is collecting an event list is
a list item; every other event (OriginateResponse and UserEvent carry the
ActionID of an earlier action too) goes to the subscribers. A `Response:`
matches its pending action by ActionID, or, for an action sent without one,
the oldest such action (AMI answers a session's actions in order).

Dispatch model: the reader task never runs subscriber code. Events go to one
unbounded queue drained by a single dispatch task owned by the client, which
calls every matching subscriber in turn and awaits coroutine subscribers
before the next one. Subscribers therefore see events strictly in wire order,
and a slow subscriber delays the others but never the reader: action
responses and keep-alive Pings keep flowing (Asterisk drops a manager session
whose socket stays unwritable for `writetimeout`, so back-pressure onto the
socket would be worse than a growing queue, which is logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import itertools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

from ctiserver.asterisk.ami.codec import FrameParser, Message, encode_action
from ctiserver.asterisk.ami.errors import (
    AmiActionError,
    AmiAuthenticationError,
    AmiClosed,
    AmiConnectionLost,
    AmiError,
    AmiNotConnected,
    AmiTimeout,
)

__all__ = [
    "ActionResult",
    "AmiActionError",
    "AmiAuthenticationError",
    "AmiClient",
    "AmiClosed",
    "AmiConfig",
    "AmiConnectionLost",
    "AmiError",
    "AmiFilter",
    "AmiNotConnected",
    "AmiTimeout",
    "EventHandler",
    "OriginateReason",
    "OriginateResult",
    "ResyncHook",
    "Subscription",
    "backoff_delay",
    "md5_key",
]

log = logging.getLogger(__name__)

Headers = Mapping[str, str | Iterable[str]]
EventHandler = Callable[[Message], Awaitable[None] | None]
ResyncHook = Callable[["AmiClient"], Awaitable[None]]

WILDCARD = "*"
_READ_SIZE = 1 << 16
# Only a warning: the queue is unbounded on purpose (see the module docstring).
_QUEUE_WARN_DEPTH = 10_000
_OK_RESPONSES = frozenset({"Success", "Goodbye", "Follows"})


@dataclass(frozen=True, slots=True)
class AmiFilter:
    """A server-side event filter (`Action: Filter`, `Operation: Add`).

    `filter` is the legacy regex form (`!Event: VarSet` excludes),
    `match_criteria` the Asterisk 21+/22 form
    (`action(exclude),name(DeviceStateChange)`). Asterisk has no remove
    operation and forgets filters with the session, so the client re-applies
    them after every reconnect.
    """

    filter: str | None = None
    match_criteria: str | None = None

    def headers(self) -> dict[str, str]:
        if self.filter is None and self.match_criteria is None:
            raise ValueError("AmiFilter needs filter or match_criteria")
        headers = {"Operation": "Add"}
        if self.match_criteria is not None:
            headers["MatchCriteria"] = self.match_criteria
        if self.filter is not None:
            headers["Filter"] = self.filter
        return headers


@dataclass(frozen=True, slots=True)
class AmiConfig:
    """Connection settings; every network wait has its own timeout (seconds)."""

    host: str = "127.0.0.1"
    port: int = 5038
    username: str = ""
    secret: str = ""
    auth: Literal["plain", "md5"] = "plain"
    # Login `Events:` header: "off", "on" or a class list ("call,user"); None = not sent.
    events: str | None = None
    action_id_prefix: str = "cti"
    connect_timeout: float = 5.0
    login_timeout: float = 5.0
    action_timeout: float = 10.0
    logoff_timeout: float = 2.0
    ping_interval: float | None = 20.0
    ping_timeout: float = 5.0
    reconnect: bool = True
    backoff_initial: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    backoff_jitter: float = 0.2
    filters: tuple[AmiFilter, ...] = ()


@dataclass(slots=True)
class ActionResult:
    """The answer to one action: its response and, for an event list, the
    items and the final `...Complete` event (`EventList: Complete`)."""

    action: str
    action_id: str | None
    response: Message
    items: list[Message] = field(default_factory=list)
    complete: Message | None = None

    @property
    def ok(self) -> bool:
        return self.response.response in _OK_RESPONSES

    @property
    def message(self) -> str | None:
        return self.response.get("Message")

    @property
    def is_list(self) -> bool:
        return self.complete is not None

    @property
    def output(self) -> list[str]:
        """Command output lines (one `Output:` header each in AMI 11)."""
        return self.response.values("Output")

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.response.get(name, default)


class OriginateReason(IntEnum):
    """`Reason:` of OriginateResponse: the last control frame Asterisk saw.

    Asterisk 22 reports busy (486) as 0, not 5, and an unknown technology as 0
    too (INDEX behaviour 11); do not rely on BUSY/CONGESTION appearing.
    """

    FAILURE = 0
    HANGUP = 1
    RING = 2
    RINGING = 3  # still ringing when Timeout expired: no answer
    ANSWERED = 4
    BUSY = 5
    CONGESTION = 8


@dataclass(frozen=True, slots=True)
class OriginateResult:
    """Outcome of `AmiClient.originate()`."""

    success: bool
    reason: int | None  # None when no OriginateResponse came (sync or refused)
    channel: str | None  # the channel name, or the dial string on failure
    uniqueid: str | None  # None for Asterisk's `<unknown>`
    action_id: str | None
    response: Message  # the action's Response
    event: Message | None  # the OriginateResponse event

    @property
    def message(self) -> str | None:
        return self.response.get("Message")


class Subscription:
    """Handle returned by `AmiClient.subscribe`; `unsubscribe()` is idempotent."""

    __slots__ = ("_client", "active", "callback", "event")

    def __init__(self, client: AmiClient, event: str, callback: EventHandler) -> None:
        self._client = client
        self.event = event
        self.callback = callback
        self.active = True

    def unsubscribe(self) -> None:
        self._client._unsubscribe(self)


def md5_key(challenge: str, secret: str) -> str:
    """The Login `Key:` for MD5 auth: hex md5(challenge + secret)."""
    return hashlib.md5((challenge + secret).encode("utf-8"), usedforsecurity=False).hexdigest()


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    factor: float,
    maximum: float,
    jitter: float,
    rng: random.Random | None = None,
) -> float:
    """Delay before reconnect attempt `attempt` (0-based): exponential, +/- jitter, capped."""
    base = min(maximum, initial * factor ** min(attempt, 64))
    spread = (rng or random).uniform(-jitter, jitter)
    return max(0.0, min(maximum, base * (1.0 + spread)))


@dataclass(eq=False)
class _Pending:
    action: str
    action_id: str | None
    future: asyncio.Future[ActionResult]
    response: Message | None = None
    items: list[Message] = field(default_factory=list)


class _Connection:
    """One TCP session: its parser, ActionID counter, pending actions and tasks."""

    def __init__(
        self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, prefix: str
    ) -> None:
        loop = asyncio.get_running_loop()
        self.number = number
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser()
        self.banner: asyncio.Future[str] = loop.create_future()
        self._prefix = prefix
        self._last_id = 0  # per connection: cti-1 is always the first action (Login)
        self.pending: dict[str, _Pending] = {}
        self.unnamed: deque[_Pending] = deque()  # actions sent without ActionID, in order
        self.originates: dict[str, asyncio.Future[Message]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.lost = asyncio.Event()
        self.authenticated = False
        self.manual = False  # opened by connect(login=False): actions allowed before login

    def peek_id(self) -> str:
        return f"{self._prefix}-{self._last_id + 1}"

    def next_id(self) -> str:
        self._last_id += 1
        return f"{self._prefix}-{self._last_id}"


class AmiClient:
    """An AMI session that stays logged in: see the module docstring for routing and dispatch."""

    def __init__(self, config: AmiConfig) -> None:
        self.config = config
        self._filters: list[AmiFilter] = list(config.filters)
        self._hooks: list[ResyncHook] = []
        self._subs: dict[str, list[Subscription]] = {}
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._conn: _Connection | None = None
        self._connections = 0
        self._logins = 0
        self._dispatcher: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._banner: str | None = None
        # Injectable so tests can observe the backoff without waiting it out.
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._rng = random.Random()

    # -- state ---------------------------------------------------------------

    @property
    def banner(self) -> str | None:
        """The last banner line, e.g. `Asterisk Call Manager/11.0.0`."""
        return self._banner

    @property
    def version(self) -> str | None:
        """The AMI version from the banner (`11.0.0`)."""
        if self._banner is None:
            return None
        return self._banner.rpartition("/")[2] or None

    @property
    def connected(self) -> bool:
        """True while a logged-in connection is up."""
        conn = self._conn
        return conn is not None and conn.authenticated and not conn.lost.is_set()

    @property
    def logins(self) -> int:
        """Successful logins so far (1 after connect, +1 per reconnect)."""
        return self._logins

    async def wait_ready(self) -> None:
        """Wait until logged in with filters applied and resync hooks run
        (wrap it in asyncio.timeout)."""
        await self._ready.wait()

    # -- configuration ---------------------------------------------------------

    def subscribe(self, event: str, callback: EventHandler) -> Subscription:
        """Call `callback(message)` for every `event` (`"*"` = every event).

        Plain functions and coroutine functions are accepted; both run in the
        dispatch task, in wire order, specific subscribers before wildcards.
        """
        sub = Subscription(self, event, callback)
        self._subs.setdefault(event, []).append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        sub.active = False
        subs = self._subs.get(sub.event)
        if subs and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[sub.event]

    def add_resync_hook(self, hook: ResyncHook) -> None:
        """Run `await hook(client)` after every successful login, the first included."""
        self._hooks.append(hook)

    async def add_filter(self, flt: AmiFilter) -> ActionResult | None:
        """Remember a filter for every future session and apply it now if connected."""
        headers = flt.headers()
        self._filters.append(flt)
        if not self.connected:
            return None
        return await self.action("Filter", headers)

    # -- lifecycle -------------------------------------------------------------

    async def connect(self, *, login: bool = True) -> None:
        """Connect, read the banner, log in, apply filters, run the resync hooks.

        One attempt: failures raise (OSError, AmiTimeout, AmiAuthenticationError).
        Once logged in, a lost connection is re-established in the background.
        With `login=False` only the connection is opened (actions go out
        unauthenticated, Asterisk answers `Permission denied`); call `login()`.
        """
        if self._closing:
            raise AmiClosed("client is closed")
        if self._conn is not None and not self._conn.lost.is_set():
            raise RuntimeError("AMI client already connected")
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="ami-dispatch")
        try:
            if login:
                await self._establish()
                self._supervise_start()
            else:
                conn = await self._open()
                conn.manual = True
        except BaseException:
            await self._stop_dispatcher(drain=False)
            raise

    async def start(self) -> None:
        """Connect now if Asterisk answers, else keep trying in the background.

        For a server that must come up whether or not Asterisk is already
        running: a failed first attempt is logged and handed to the same
        supervisor that handles later drops (backoff, re-login, resync).
        `wait_ready()` tells when the first login happened.
        """
        try:
            await self.connect()
        except (OSError, TimeoutError, AmiError) as exc:
            if self._closing or not self.config.reconnect:
                raise
            log.warning(
                "AMI %s:%d not available (%s); retrying in the background",
                self.config.host,
                self.config.port,
                exc,
            )
            if self._dispatcher is None:
                self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="ami-dispatch")
            self._supervise_start()

    async def login(self) -> None:
        """Log in on a connection opened with `connect(login=False)`."""
        conn = self._conn
        if conn is None or conn.lost.is_set():
            raise AmiNotConnected("no AMI connection to log in on")
        if conn.authenticated:
            return
        try:
            await self._login(conn)
        except BaseException:
            await self._stop_connection(conn)
            await self._stop_dispatcher(drain=True)
            raise
        await self._after_login(conn)
        self._supervise_start()

    async def close(self) -> Message | None:
        """Logoff (bounded by logoff_timeout), stop every task, fail pending actions.

        Returns the `Response: Goodbye` frame when Asterisk answered the Logoff.
        Events read before the Goodbye are still delivered to subscribers
        (bounded by logoff_timeout); what a subscriber has not finished by
        then is cancelled.
        """
        if self._closing:
            return None
        self._closing = True
        goodbye: Message | None = None
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not asyncio.current_task():
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        conn = self._conn
        if conn is not None:
            if conn.authenticated and not conn.lost.is_set():
                timeout = self.config.logoff_timeout
                try:
                    result = await self._send(conn, "Logoff", None, timeout=timeout)
                    goodbye = result.response
                    # Asterisk closes after Goodbye; the reader sees EOF.
                    async with asyncio.timeout(timeout):
                        await conn.lost.wait()
                except (AmiError, TimeoutError) as exc:
                    log.warning("AMI logoff incomplete: %s", exc)
            await self._stop_connection(conn)
        self._ready.clear()
        await self._stop_dispatcher(drain=True)
        return goodbye

    async def __aenter__(self) -> AmiClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- actions ---------------------------------------------------------------

    async def action(
        self,
        name: str,
        headers: Headers | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - see _send
        send_action_id: bool = True,
        check: bool = False,
    ) -> ActionResult:
        """Send an action and return its response (with the items for an event list).

        `send_action_id=False` sends no ActionID (the answer is matched by
        order). `check=True` raises AmiActionError on `Response: Error`.
        Do not send Logoff here: use close(), or the client reconnects.
        """
        conn = self._current()
        result = await self._send(
            conn,
            name,
            headers,
            timeout=self.config.action_timeout if timeout is None else timeout,
            send_action_id=send_action_id,
        )
        if check and not result.ok:
            raise AmiActionError(result)
        return result

    async def ping(self, *, timeout: float | None = None) -> ActionResult:  # noqa: ASYNC109
        return await self.action("Ping", timeout=timeout, check=True)

    async def command(
        self,
        command: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[str]:
        """Run a CLI command; returns its output lines."""
        result = await self.action("Command", {"Command": command}, timeout=timeout, check=True)
        return result.output

    async def originate(
        self,
        channel: str,
        *,
        context: str | None = None,
        exten: str | None = None,
        priority: int | str | None = None,
        application: str | None = None,
        data: str | None = None,
        caller_id: str | None = None,
        ring_timeout: float | None = 30.0,
        run_async: bool = True,
        channel_id: str | None = None,
        variables: Mapping[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - see _send
    ) -> OriginateResult:
        """Originate a call and wait for its outcome.

        Async (default): Asterisk answers `Originate successfully queued` at
        once, even when the call will fail; the result is built from the
        `OriginateResponse` event carrying this action's ActionID, awaited up
        to `timeout` (default: ring_timeout + action_timeout). Sync
        (`run_async=False`): the response itself is the outcome.
        `ring_timeout` becomes the `Timeout:` header (ms); None omits it.
        """
        headers: dict[str, str | list[str]] = {"Channel": channel}
        optional = {
            "Context": context,
            "Exten": exten,
            "Priority": None if priority is None else str(priority),
            "Application": application,
            "Data": data,
            "CallerID": caller_id,
            "Timeout": None if ring_timeout is None else str(round(ring_timeout * 1000)),
            "Async": "true" if run_async else None,
            "ChannelId": channel_id,
        }
        headers.update({k: v for k, v in optional.items() if v is not None})
        if variables:
            headers["Variable"] = [f"{k}={v}" for k, v in variables.items()]
        headers.update(extra or {})
        encode_action("Originate", headers)  # refuse CR/LF before an ActionID is used
        conn = self._current()
        action_id = conn.next_id()
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        conn.originates[action_id] = waiter
        try:
            send_timeout = self.config.action_timeout
            if not run_async:
                # A sync Originate answers only when the attempt ends.
                send_timeout += ring_timeout or 30.0
            result = await self._send(
                conn, "Originate", headers, timeout=send_timeout, action_id=action_id
            )
            if not run_async or not result.ok:
                return OriginateResult(
                    result.ok, None, channel, None, action_id, result.response, None
                )
            wait = timeout if timeout is not None else (ring_timeout or 30.0) + send_timeout
            try:
                async with asyncio.timeout(wait):
                    event = await waiter
            except TimeoutError:
                raise AmiTimeout("Originate (OriginateResponse)", action_id, wait) from None
        finally:
            conn.originates.pop(action_id, None)
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: no "never retrieved" noise
        uniqueid = event.get("Uniqueid")
        reason = event.get("Reason")
        return OriginateResult(
            success=event.get("Response") == "Success",
            reason=int(reason) if reason is not None and reason.isdigit() else None,
            channel=event.get("Channel"),
            uniqueid=None if uniqueid in (None, "<unknown>") else uniqueid,
            action_id=action_id,
            response=result.response,
            event=event,
        )

    # -- internals: sending ----------------------------------------------------

    def _current(self) -> _Connection:
        if self._closing:
            raise AmiClosed("AMI client is closed")
        conn = self._conn
        if conn is None or conn.lost.is_set() or not (conn.authenticated or conn.manual):
            raise AmiNotConnected("AMI is not connected")
        return conn

    async def _send(
        self,
        conn: _Connection,
        name: str,
        headers: Headers | None,
        *,
        # The deadline is applied here, not by the caller's asyncio.timeout:
        # AmiTimeout must name the action, and a timed-out entry must stay
        # behind as a tombstone to absorb the late answer.
        timeout: float,  # noqa: ASYNC109
        send_action_id: bool = True,
        action_id: str | None = None,
    ) -> ActionResult:
        if action_id is None and send_action_id:
            # Numbered only once the frame encodes: a refused action uses no id.
            frame = encode_action(name, headers, conn.peek_id())  # ValueError on CR/LF
            action_id = conn.next_id()
        else:
            frame = encode_action(name, headers, action_id)
        if conn.lost.is_set():
            raise AmiConnectionLost(f"AMI connection lost; {name} not sent")
        pending = _Pending(name, action_id, asyncio.get_running_loop().create_future())
        if action_id is None:
            conn.unnamed.append(pending)
        else:
            conn.pending[action_id] = pending
        try:
            async with asyncio.timeout(timeout):
                conn.writer.write(frame)
                await conn.writer.drain()
                return await pending.future
        except TimeoutError:
            # The entry stays as a tombstone (future cancelled) so that a late
            # answer is consumed instead of being taken for another action's.
            raise AmiTimeout(name, action_id, timeout) from None
        except OSError as exc:
            self._lost(conn, exc)
            raise AmiConnectionLost(f"AMI connection lost while sending {name}: {exc}") from exc

    # -- internals: reading and routing ----------------------------------------

    async def _read_loop(self, conn: _Connection) -> None:
        reason: BaseException | None = None
        try:
            while True:
                data = await conn.reader.read(_READ_SIZE)  # liveness: the keep-alive Ping
                if not data:
                    break
                for message in conn.parser.feed(data):
                    try:
                        self._route(conn, message)
                    except Exception:  # a bug here must not kill the session
                        log.exception("AMI: failed to route %r", message)
                if not conn.banner.done() and conn.parser.banner is not None:
                    conn.banner.set_result(conn.parser.banner)
        except OSError as exc:
            reason = exc
        finally:
            self._lost(conn, reason)

    def _route(self, conn: _Connection, msg: Message) -> None:
        event = msg.event
        if event is not None:
            # Only an action in flight can claim an event (list item,
            # OriginateResponse); with none, skip the ActionID lookup, the
            # single costliest step of routing an ordinary event.
            action_id = msg.action_id if conn.pending or conn.originates else None
            if action_id is not None:
                pending = conn.pending.get(action_id)
                if pending is not None and pending.response is not None:
                    self._list_item(conn, pending, msg)
                    return
                waiter = conn.originates.get(action_id)
                if event == "OriginateResponse" and waiter is not None and not waiter.done():
                    waiter.set_result(msg)
            self._dispatch(event, msg)
            return
        action_id = msg.action_id
        if action_id is not None:
            pending = conn.pending.get(action_id)
        else:
            pending = conn.unnamed.popleft() if conn.unnamed else None
        if pending is None:
            log.debug("AMI response for no pending action: %r", msg)
            return
        eventlist = msg.get("EventList")
        if eventlist is not None and eventlist.lower() == "start":
            pending.response = msg  # items follow; resolved by the Complete event
            return
        if action_id is not None:
            del conn.pending[action_id]
        if not pending.future.done():
            pending.future.set_result(ActionResult(pending.action, action_id, msg))

    def _list_item(self, conn: _Connection, pending: _Pending, msg: Message) -> None:
        eventlist = msg.get("EventList")
        if eventlist is None or eventlist.lower() != "complete":
            pending.items.append(msg)
            return
        assert pending.action_id is not None and pending.response is not None
        del conn.pending[pending.action_id]
        if not pending.future.done():
            result = ActionResult(
                pending.action, pending.action_id, pending.response, pending.items, msg
            )
            pending.future.set_result(result)

    def _dispatch(self, event: str, msg: Message) -> None:
        if event not in self._subs and WILDCARD not in self._subs:
            return
        self._queue.put_nowait(msg)
        depth = self._queue.qsize()
        if depth % _QUEUE_WARN_DEPTH == 0:
            log.warning("AMI event queue at %d: a subscriber is slow", depth)

    async def _dispatch_loop(self) -> None:
        queue = self._queue
        while True:
            msg = await queue.get()
            try:
                event = msg.event or ""
                subs = [*self._subs.get(event, ()), *self._subs.get(WILDCARD, ())]
                for sub in subs:
                    if not sub.active:
                        continue
                    try:
                        outcome = sub.callback(msg)
                        if inspect.isawaitable(outcome):
                            await outcome
                    except Exception:
                        log.exception("AMI subscriber %r failed on %s", sub.callback, event)
            finally:
                queue.task_done()

    # -- internals: connection lifecycle ---------------------------------------

    async def _open(self) -> _Connection:
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
        except TimeoutError:
            raise AmiTimeout("connect", None, cfg.connect_timeout) from None
        self._connections += 1
        conn = _Connection(self._connections, reader, writer, cfg.action_id_prefix)
        self._conn = conn
        conn.tasks.append(
            asyncio.create_task(self._read_loop(conn), name=f"ami-reader-{conn.number}")
        )
        try:
            async with asyncio.timeout(cfg.login_timeout):
                self._banner = await conn.banner
        except TimeoutError:
            await self._stop_connection(conn)
            raise AmiTimeout("banner", None, cfg.login_timeout) from None
        except BaseException:
            await self._stop_connection(conn)
            raise
        log.info("AMI connected to %s:%d: %s", cfg.host, cfg.port, self._banner)
        return conn

    async def _login(self, conn: _Connection) -> None:
        cfg = self.config
        headers: dict[str, str]
        if cfg.auth == "md5":
            challenge = await self._send(
                conn, "Challenge", {"AuthType": "MD5"}, timeout=cfg.login_timeout
            )
            key = challenge.get("Challenge")
            if not challenge.ok or not key:
                raise AmiAuthenticationError(f"MD5 challenge refused: {challenge.message}")
            headers = {"AuthType": "MD5", "Username": cfg.username}
            headers["Key"] = md5_key(key, cfg.secret)
        else:
            headers = {"Username": cfg.username, "Secret": cfg.secret}
        if cfg.events is not None:
            headers["Events"] = cfg.events
        result = await self._send(conn, "Login", headers, timeout=cfg.login_timeout)
        if not result.ok:
            raise AmiAuthenticationError(
                f"AMI login as {cfg.username!r} refused: {result.message or '(no message)'}"
            )
        conn.authenticated = True
        self._logins += 1

    async def _after_login(self, conn: _Connection) -> None:
        cfg = self.config
        for flt in list(self._filters):
            try:
                result = await self._send(conn, "Filter", flt.headers(), timeout=cfg.action_timeout)
                if not result.ok:
                    log.warning("AMI filter %r refused: %s", flt, result.message)
            except AmiError as exc:
                log.warning("AMI filter %r not applied: %s", flt, exc)
        if cfg.ping_interval:
            conn.tasks.append(
                asyncio.create_task(self._ping_loop(conn), name=f"ami-ping-{conn.number}")
            )
        for hook in list(self._hooks):
            try:
                await hook(self)
            except Exception:
                # A hook cut short by a new drop is redone after the next login.
                log.exception("AMI resync hook %r failed", hook)
        if not conn.lost.is_set():
            self._ready.set()

    async def _establish(self) -> None:
        conn = await self._open()
        try:
            await self._login(conn)
        except BaseException:
            await self._stop_connection(conn)
            raise
        await self._after_login(conn)

    def _supervise_start(self) -> None:
        if self._supervisor is None and self.config.reconnect:
            self._supervisor = asyncio.create_task(self._supervise(), name="ami-supervisor")

    async def _supervise(self) -> None:
        cfg = self.config
        while not self._closing:
            conn = self._conn
            if conn is not None:
                await conn.lost.wait()
                await self._stop_connection(conn)
            for attempt in itertools.count():
                delay = backoff_delay(
                    attempt,
                    initial=cfg.backoff_initial,
                    factor=cfg.backoff_factor,
                    maximum=cfg.backoff_max,
                    jitter=cfg.backoff_jitter,
                    rng=self._rng,
                )
                log.info("AMI reconnect attempt %d in %.2f s", attempt + 1, delay)
                await self._sleep(delay)
                try:
                    await self._establish()
                    break
                except AmiAuthenticationError as exc:
                    log.error("AMI re-login failed: %s", exc)
                except (OSError, AmiError) as exc:
                    log.warning("AMI reconnect failed: %r", exc)
                except Exception:  # keep the supervisor alive whatever happened
                    log.exception("AMI reconnect failed unexpectedly")

    async def _ping_loop(self, conn: _Connection) -> None:
        interval = self.config.ping_interval or 0.0
        while not conn.lost.is_set():
            await asyncio.sleep(interval)
            try:
                await self._send(conn, "Ping", None, timeout=self.config.ping_timeout)
            except AmiTimeout as exc:
                log.warning("AMI keep-alive failed (%s); dropping the connection", exc)
                self._lost(conn, exc)
                return
            except AmiConnectionLost:
                return

    def _lost(self, conn: _Connection, reason: BaseException | None) -> None:
        """Mark a connection dead and fail everything waiting on it (idempotent)."""
        if conn.lost.is_set():
            return
        conn.lost.set()
        conn.writer.transport.abort()
        if self._conn is conn:
            self._ready.clear()
        error = AmiClosed if self._closing else AmiConnectionLost
        why = f": {reason}" if reason else ""
        pendings = [*conn.pending.values(), *conn.unnamed]
        conn.pending.clear()
        conn.unnamed.clear()
        for pending in pendings:
            if not pending.future.done():
                pending.future.set_exception(
                    error(f"AMI connection lost before {pending.action} was answered{why}")
                )
        for action_id, waiter in conn.originates.items():
            if not waiter.done():
                waiter.set_exception(error(f"AMI connection lost before {action_id} finished"))
        if not conn.banner.done():
            conn.banner.set_exception(error(f"AMI connection closed before the banner{why}"))
            conn.banner.exception()  # _open awaits it; avoid "never retrieved" if it gave up
        if not self._closing:
            log.warning("AMI connection %d lost%s", conn.number, why)

    async def _stop_connection(self, conn: _Connection) -> None:
        self._lost(conn, None)
        current = asyncio.current_task()
        tasks = [t for t in conn.tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _stop_dispatcher(self, *, drain: bool) -> None:
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is None:
            return
        if drain and dispatcher is not asyncio.current_task():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.logoff_timeout):
                    await self._queue.join()
        dispatcher.cancel()
        if dispatcher is not asyncio.current_task():
            await asyncio.gather(dispatcher, return_exceptions=True)
        # A later connect() starts from an empty queue.
        self._queue = asyncio.Queue()
