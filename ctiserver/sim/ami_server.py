"""The emulator's AMI server: real TCP, the banner, login, actions, per-session event streams.

Wire behaviour copied from the transcripts (shared/asterisk/scenarios/01, 13):
banner `Asterisk Call Manager/11.0.0\\r\\n`; `ActionID` echoed as the second
header of every response; Login plain or MD5 (Challenge); a wrong secret is
answered `Authentication failed` after ~1 s and the connection is closed; an
action before Login gets `Permission denied`; `Events: off` (Login header or
the Events action) drops events for that session - nothing is queued;
`Filter` (legacy regex with `!` to exclude, and 22.x `MatchCriteria`) applies
to that session only; event lists (`EventList: start` ... `...Complete`) for
CoreShowChannels, Status, BridgeList, BridgeInfo, DeviceStateList,
PJSIPShowContacts and a regex Hangup.

A session whose client stops reading is dropped once its unsent output
exceeds `MAX_BACKLOG` (Asterisk's writetimeout does the same job).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ctiserver.asterisk.ami.codec import FrameParser, Message
from ctiserver.sim import events as ev
from ctiserver.sim.agi_client import AsyncAgiSession
from ctiserver.sim.apps import OriginateRequest, Runner
from ctiserver.sim.dialplan import callerid_split, read_variable
from ctiserver.sim.events import Event, Headers, encode_frame
from ctiserver.sim.model import AMI_VERSION, ASTERISK_VERSION, SPOOL_DIR, Channel, Pbx

log = logging.getLogger(__name__)

BANNER = f"Asterisk Call Manager/{AMI_VERSION}\r\n".encode()
MAX_BACKLOG = 32 * 1024 * 1024
AUTH_FAILURE_DELAY = 1.0
AUTH_TIMEOUT = 30.0
# Actions allowed before Login.
UNAUTHENTICATED = {"login", "challenge", "logoff"}
EVENT_CLASSES = {
    "system",
    "call",
    "log",
    "verbose",
    "command",
    "agent",
    "user",
    "config",
    "dtmf",
    "reporting",
    "cdr",
    "dialplan",
    "originate",
    "agi",
    "cc",
    "aoc",
    "test",
    "security",
    "message",
}
# Devices Asterisk listed besides the PJSIP endpoints (voicemail boxes, the queue).
EXTRA_DEVICES = [
    ("MWI:1001@default", "NOT_INUSE"),
    ("MWI:1002@default", "NOT_INUSE"),
    ("Queue:support_avail", "INUSE"),
]


def _tv(epoch: float) -> str:
    """EventTV / SessionTV: 2026-11-23T07:02:50.974+0000."""
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
    return f"{base}.{int(epoch * 1000) % 1000:03d}+0000"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    parts = []
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    parts.append(f"{seconds} second{'s' if seconds != 1 else ''}")
    return ", ".join(parts)


@dataclass
class EventFilter:
    """One Filter of a session: include/exclude, on the event name, a header or the text."""

    include: bool
    regex: re.Pattern[str] | None = None
    name: str | None = None
    header: str | None = None
    method: str = "regex"
    value: str = ""

    def matches(self, event: Event) -> bool:
        if self.name is not None and event.name != self.name:
            return False
        if self.header is not None:
            data = event.get(self.header)
            if data is None:
                return False
            return self._compare(data)
        if self.regex is not None:
            return self.regex.search(event.text) is not None
        if self.method != "regex" and self.value:
            return self._compare(event.text)
        return True

    def _compare(self, data: str) -> bool:
        if self.method == "exact":
            return data == self.value
        if self.method == "starts_with":
            return data.startswith(self.value)
        if self.method == "ends_with":
            return data.endswith(self.value)
        if self.method == "contains":
            return self.value in data
        if self.method == "none" or not self.value:
            return True
        return re.search(self.value, data) is not None


@dataclass(eq=False)
class Session:
    """One AMI connection."""

    server: AmiServer
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    id: str
    remote: str
    authenticated: bool = False
    username: str = ""
    events_on: bool = True
    mask: frozenset[str] | None = None  # None: every class
    filters: list[EventFilter] = field(default_factory=list)
    challenge: str = ""
    login_time: float = 0.0
    closing: bool = False

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        transport = self.writer.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_BACKLOG:
            log.warning("AMI session %s is not reading; dropping it", self.id)
            self.closing = True
            transport.abort()
            return
        self.writer.write(data)

    def respond(self, message: Message | None, status: str, *pairs: tuple[str, str]) -> None:
        items: list[tuple[str, str]] = [("Response", status)]
        action_id = message.get("ActionID") if message is not None else None
        if action_id is not None:
            items.append(("ActionID", action_id))
        items.extend(pairs)
        self.write(encode_frame(items))

    def error(self, message: Message | None, text: str) -> None:
        self.respond(message, "Error", ("Message", text))

    def wants(self, event: Event) -> bool:
        if not self.authenticated or not self.events_on or self.closing:
            return False
        if self.mask is not None and not (event.classes & self.mask):
            return False
        if not self.filters:
            return True
        includes = [f for f in self.filters if f.include]
        for flt in self.filters:
            if not flt.include and flt.matches(event):
                return False
        return not includes or any(f.matches(event) for f in includes)


Handler = Callable[["AmiServer", Session, Message], Awaitable[None]]


class AmiServer:
    """Listens for AMI clients and serves them from the PBX model."""

    def __init__(
        self, pbx: Pbx, runner: Runner, host: str, port: int, users: dict[str, str]
    ) -> None:
        self.pbx = pbx
        self.runner = runner
        self.host = host
        self.port = port
        self.users = users
        self.sessions: set[Session] = set()
        # The last actions received, in order (tests assert on what a client sent).
        self.received: collections.deque[Message] = collections.deque(maxlen=2000)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        pbx.listeners.append(self.publish)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.closing = True
            session.writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def publish(self, event: Event) -> None:
        frame: bytes | None = None
        for session in self.sessions:
            if session.wants(event):
                if frame is None:
                    frame = event.frame
                session.write(frame)

    # -- connections -----------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The stream callback returns at once; the session runs in a task we own
        # (cancelling asyncio's own callback task would log spurious errors).
        task = asyncio.get_running_loop().create_task(
            self._serve(reader, writer), name="ami session"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("127.0.0.1", 0)
        session = Session(
            self,
            reader,
            writer,
            id=f"0x{random.getrandbits(44):x}",
            remote=f"IPV4/TCP/{peer[0]}/{peer[1]}",
        )
        self.sessions.add(session)
        writer.write(BANNER)
        parser = FrameParser(expect_banner=False)
        login_deadline = self.pbx.clock.elapsed() + AUTH_TIMEOUT
        try:
            while not session.closing:
                if session.authenticated:
                    data = await reader.read(65536)
                else:
                    # manager.conf authtimeout: log in within 30 s or be dropped.
                    remaining = self.pbx.clock.real(login_deadline - self.pbx.clock.elapsed())
                    try:
                        data = await asyncio.wait_for(reader.read(65536), remaining)
                    except TimeoutError:
                        break
                if not data:
                    break
                before = parser.malformed
                messages = parser.feed(data)
                for _ in range(parser.malformed - before):
                    # A frame that is not `Key: value` lines has no action to run.
                    session.error(None, "Missing action in request")
                for message in messages:
                    await self._dispatch(session, message)
                    if session.closing:
                        break
        except (ConnectionError, OSError):
            pass
        finally:
            self.sessions.discard(session)
            session.closing = True
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _dispatch(self, session: Session, message: Message) -> None:
        self.received.append(message)
        action = (message.get("Action") or "").strip()
        if not action:
            session.error(message, "Missing action in request")
            return
        lowered = action.lower()
        if not session.authenticated and lowered not in UNAUTHENTICATED:
            session.error(message, "Permission denied")
            self._security(
                "RequestNotAllowed",
                session,
                [
                    ("AccountID", session.username),
                    ("SessionID", session.id),
                    ("LocalAddress", f"IPV4/TCP/{self.host}/{self.port}"),
                    ("RemoteAddress", session.remote),
                    ("RequestType", f"Action: {action}"),
                    ("SessionTV", _tv(0)),
                ],
                version="1",
                order_account_first=True,
            )
            return
        handler = ACTIONS.get(lowered)
        if handler is None:
            session.error(
                message,
                f"Invalid/unknown command: {action}. "
                "Use Action: ListCommands to show available commands.",
            )
            self._security(
                "RequestBadFormat",
                session,
                [
                    ("SessionID", session.id),
                    ("LocalAddress", f"IPV4/TCP/{self.host}/{self.port}"),
                    ("RemoteAddress", session.remote),
                    ("RequestType", f"Action: {action}"),
                    ("SessionTV", _tv(session.login_time)),
                    ("AccountID", session.username),
                ],
                version="1",
            )
            return
        try:
            await handler(self, session, message)
        except (ValueError, KeyError) as exc:
            session.error(message, f"Invalid parameter: {exc}")

    def _security(
        self,
        name: str,
        session: Session,
        tail: Headers,
        version: str,
        severity: str = "Error",
        order_account_first: bool = False,
    ) -> None:
        now = self.pbx.clock.time()
        headers: Headers = [
            ("EventTV", _tv(now)),
            ("Severity", severity),
            ("Service", "AMI"),
            ("EventVersion", version),
        ]
        headers.extend(tail)
        self.pbx.emit(name, ev.SECURITY, headers)

    # -- helpers -----------------------------------------------------------------

    def uptime(self) -> float:
        return self.pbx.clock.time() - self.pbx.started

    def channel(
        self,
        session: Session,
        message: Message,
        header: str = "Channel",
        missing: str = "No channel specified",
        unknown: str = "No such channel",
    ) -> Channel | None:
        name = (message.get(header) or "").strip()
        if not name:
            session.error(message, missing)
            return None
        chan = self.pbx.find_channel(name)
        if chan is None:
            session.error(message, unknown.format(name=name))
        return chan


def _ok(session: Session, message: Message, text: str | None = None) -> None:
    if text is None:
        session.respond(message, "Success")
    else:
        session.respond(message, "Success", ("Message", text))


def _list_start(session: Session, message: Message, text: str) -> None:
    session.respond(message, "Success", ("EventList", "start"), ("Message", text))


def _list_item(
    session: Session,
    message: Message,
    name: str,
    pairs: Headers,
    action_first: bool = True,
    privilege: str | None = None,
) -> None:
    items: Headers = [("Event", name)]
    if privilege is not None:
        items.append(("Privilege", privilege))
    action_id = message.get("ActionID")
    if action_first and action_id is not None:
        items.append(("ActionID", action_id))
    items.extend(pairs)
    if not action_first and action_id is not None:
        items.append(("ActionID", action_id))
    session.write(encode_frame(items))


def _list_complete(
    session: Session, message: Message, name: str, count: int, extra: Headers | None = None
) -> None:
    items: Headers = [("Event", name)]
    action_id = message.get("ActionID")
    if action_id is not None:
        items.append(("ActionID", action_id))
    items += [("EventList", "Complete"), ("ListItems", str(count))]
    items.extend(extra or [])
    session.write(encode_frame(items))


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on", "y")


# -- actions -----------------------------------------------------------------------


async def action_login(server: AmiServer, session: Session, message: Message) -> None:
    username = message.get("Username") or ""
    secret = server.users.get(username)
    ok = False
    using_password = "0"
    if secret is not None:
        if (message.get("AuthType") or "").lower() == "md5":
            key = hashlib.md5((session.challenge + secret).encode()).hexdigest()
            ok = bool(session.challenge) and (message.get("Key") or "").lower() == key
        else:
            ok = message.get("Secret") == secret
    if not ok:
        server._security(
            "InvalidPassword" if secret is not None else "InvalidAccountID",
            session,
            [
                ("AccountID", username),
                ("SessionID", session.id),
                ("LocalAddress", f"IPV4/TCP/{server.host}/{server.port}"),
                ("RemoteAddress", session.remote),
                ("SessionTV", _tv(0)),
            ],
            version="2",
        )
        await server.pbx.clock.sleep(AUTH_FAILURE_DELAY)
        session.error(message, "Authentication failed")
        session.closing = True
        return
    session.authenticated = True
    session.username = username
    session.login_time = server.pbx.clock.time()
    _apply_event_mask(session, message.get("Events"))
    _ok(session, message, "Authentication accepted")
    uptime = str(int(server.uptime()))
    booted = Event(
        "FullyBooted",
        ev.SYSTEM,
        [("Uptime", uptime), ("LastReload", uptime), ("Status", "Fully Booted")],
        None,
    )
    if session.wants(booted):
        session.write(booted.frame)
    server._security(
        "SuccessfulAuth",
        session,
        [
            ("AccountID", username),
            ("SessionID", session.id),
            ("LocalAddress", f"IPV4/TCP/{server.host}/{server.port}"),
            ("RemoteAddress", session.remote),
            ("UsingPassword", using_password),
            ("SessionTV", _tv(session.login_time)),
        ],
        version="1",
        severity="Informational",
    )


def _apply_event_mask(session: Session, value: str | None) -> str:
    """Login `Events:` / action Events `EventMask:`; returns On or Off."""
    if value is None:
        return "On" if session.events_on else "Off"
    text = value.strip().lower()
    if text in ("off", "no", "false", "0", "none"):
        session.events_on = False
        return "Off"
    session.events_on = True
    if text in ("on", "yes", "true", "1", "all", ""):
        session.mask = None
    else:
        session.mask = frozenset(c.strip() for c in text.split(",") if c.strip())
    return "On"


async def action_challenge(server: AmiServer, session: Session, message: Message) -> None:
    if (message.get("AuthType") or "").lower() != "md5":
        session.error(message, "Must specify AuthType")
        return
    session.challenge = str(random.randint(100000000, 999999999))
    session.respond(message, "Success", ("Challenge", session.challenge))


async def action_logoff(server: AmiServer, session: Session, message: Message) -> None:
    session.respond(message, "Goodbye", ("Message", "Thanks for all the fish."))
    session.closing = True


async def action_ping(server: AmiServer, session: Session, message: Message) -> None:
    session.respond(
        message, "Success", ("Ping", "Pong"), ("Timestamp", f"{server.pbx.clock.time():.6f}")
    )


async def action_events(server: AmiServer, session: Session, message: Message) -> None:
    state = _apply_event_mask(session, message.get("EventMask") or "off")
    session.respond(message, "Success", ("Events", state))


async def action_filter(server: AmiServer, session: Session, message: Message) -> None:
    operation = (message.get("Operation") or "Add").lower()
    if operation != "add":
        session.error(message, "Unknown operation")
        return
    criteria = message.get("MatchCriteria")
    text = message.get("Filter") or ""
    try:
        if criteria:
            flt = _criteria_filter(criteria, text)
        else:
            if not text:
                session.error(message, "Filter not specified")
                return
            include = not text.startswith("!")
            flt = EventFilter(include, regex=re.compile(text if include else text[1:]))
    except re.error:
        session.error(message, "Filter Not Added")
        return
    session.filters.append(flt)
    _ok(session, message, "Success")


def _criteria_filter(criteria: str, value: str) -> EventFilter:
    include = True
    flt = EventFilter(include=True, value=value)
    for part in re.findall(r"(\w+)\(([^)]*)\)", criteria):
        key, arg = part[0].lower(), part[1]
        if key == "action":
            include = arg.lower() != "exclude"
        elif key == "name":
            flt.name = arg
        elif key == "header":
            flt.header = arg
        elif key == "method":
            flt.method = arg.lower()
    flt.include = include
    if flt.header is None and flt.method == "regex" and value:
        flt.regex = re.compile(value)
    return flt


async def action_corestatus(server: AmiServer, session: Session, message: Message) -> None:
    started = time.gmtime(server.pbx.started)
    session.respond(
        message,
        "Success",
        ("CoreStartupDate", time.strftime("%Y-%m-%d", started)),
        ("CoreStartupTime", time.strftime("%H:%M:%S", started)),
        ("CoreReloadDate", time.strftime("%Y-%m-%d", started)),
        ("CoreReloadTime", time.strftime("%H:%M:%S", started)),
        ("CoreCurrentCalls", str(len(server.pbx.channels))),
        ("CoreProcessedCalls", str(server.pbx.processed_calls)),
    )


async def action_coresettings(server: AmiServer, session: Session, message: Message) -> None:
    session.respond(
        message,
        "Success",
        ("AMIversion", AMI_VERSION),
        ("AsteriskVersion", ASTERISK_VERSION),
        ("SystemName", ""),
        ("CoreMaxCalls", "0"),
        ("CoreMaxLoadAvg", "0.000000"),
        ("CoreRunUser", ""),
        ("CoreRunGroup", ""),
        ("CoreMaxFilehandles", "0"),
        ("CoreRealTimeEnabled", "No"),
        ("CoreCDRenabled", "Yes"),
        ("CoreHTTPenabled", "No"),
        ("SoundsSearchCustomDir", "No"),
    )


async def action_command(server: AmiServer, session: Session, message: Message) -> None:
    command = " ".join((message.get("Command") or "").split())
    output = _cli(server, command)
    if output is None:
        session.respond(
            message,
            "Error",
            ("Message", "Command output follows"),
            (
                "Output",
                f"No such command '{command}' (type 'core show help "
                f"{command}' for other possible commands)",
            ),
        )
        return
    session.respond(
        message,
        "Success",
        ("Message", "Command output follows"),
        *[("Output", line) for line in output],
    )


def _cli(server: AmiServer, command: str) -> list[str] | None:
    pbx = server.pbx
    lowered = command.lower()
    if lowered == "core show uptime":
        uptime = _uptime(server.uptime())
        return [f"System uptime: {uptime}", f"Last reload: {uptime}"]
    if lowered == "core show version":
        return [f"Asterisk {ASTERISK_VERSION} built by emulator on a ctiserver test host"]
    if lowered in ("core show channels", "core show channels concise"):
        channels = pbx.channels_sorted()
        if lowered.endswith("concise"):
            return [
                "!".join(
                    [
                        c.name,
                        c.context,
                        c.exten,
                        str(c.priority),
                        ev.STATE_DESC.get(c.state, ""),
                        c.app,
                        c.appdata,
                        c.caller_num,
                        c.accountcode,
                        "",
                        "3",
                        str(int(pbx.clock.elapsed() - c.created)),
                        c.bridge.id if c.bridge else "(None)",
                        c.uniqueid,
                    ]
                )
                for c in channels
            ]
        lines = ["Channel              Location             State   Application(Data)"]
        for c in channels:
            lines.append(
                f"{c.name:<20} {c.exten}@{c.context}:{c.priority:<8} "
                f"{ev.STATE_DESC.get(c.state, ''):<7} {c.app}({c.appdata})"
            )
        calls = len(channels)
        lines += [
            f"{calls} active channel{'s' if calls != 1 else ''}",
            f"{calls} active call{'s' if calls != 1 else ''}",
            f"{pbx.processed_calls} call{'s' if pbx.processed_calls != 1 else ''} processed",
        ]
        return lines
    if lowered in ("dialplan reload", "module reload", "reload"):
        return [""]
    if lowered.startswith("pjsip show contacts"):
        return [
            f"  Contact:  {e.name}/{e.contact_uri}  NonQual  nan"
            for e in sorted(pbx.endpoints.values(), key=lambda e: e.name)
            if e.registered
        ]
    return None


async def action_getvar(server: AmiServer, session: Session, message: Message) -> None:
    variable = message.get("Variable")
    if not variable:
        session.error(message, "No variable specified")
        return
    chan: Channel | None = None
    if message.get("Channel"):
        chan = server.pbx.find_channel(message.get("Channel") or "")
        if chan is None:
            session.error(message, "No such channel")
            return
    value = read_variable(server.pbx, chan, variable)
    session.respond(message, "Success", ("Variable", variable), ("Value", value or ""))


async def action_setvar(server: AmiServer, session: Session, message: Message) -> None:
    variable = message.get("Variable")
    if not variable:
        session.error(message, "No variable specified")
        return
    value = message.get("Value") or ""
    if message.get("Channel"):
        chan = server.pbx.find_channel(message.get("Channel") or "")
        if chan is None:
            session.error(message, "No such channel")
            return
        _ok(session, message, "Variable Set")
        server.pbx.set_var(chan, variable, value)
        return
    server.pbx.globals[variable] = value
    _ok(session, message, "Variable Set")


async def action_userevent(server: AmiServer, session: Session, message: Message) -> None:
    name = message.get("UserEvent")
    if not name:
        session.error(message, "UserEvent header missing")
        return
    _ok(session, message, "Event Sent")
    headers: Headers = [("UserEvent", name)]
    headers += [(k, v) for k, v in message.items() if k.lower() not in ("action", "userevent")]
    server.pbx.emit("UserEvent", ev.USER, headers)


async def action_originate(server: AmiServer, session: Session, message: Message) -> None:
    channel = (message.get("Channel") or "").strip()
    if not channel:
        session.error(message, "Channel not specified")
        return
    application = (message.get("Application") or "").strip()
    exten = (message.get("Exten") or "").strip()
    if not application and not exten:
        session.error(message, "Originate with neither Application nor Exten")
        return
    timeout_ms = message.get("Timeout")
    callerid = message.get("CallerID")
    variables: list[tuple[str, str]] = []
    for item in message.values("Variable"):
        for part in item.split(","):
            key, sep, value = part.partition("=")
            if sep:
                variables.append((key.strip(), value))
    request = OriginateRequest(
        channel=channel,
        context=(message.get("Context") or "default").strip(),
        exten=exten,
        priority=int(message.get("Priority") or 1),
        application=application,
        data=message.get("Data") or "",
        callerid=callerid_split(callerid) if callerid else None,
        timeout=float(timeout_ms) / 1000 if timeout_ms else 30.0,
        variables=variables,
        channel_id=(message.get("ChannelId") or "").strip() or None,
        action_id=message.get("ActionID"),
        is_async=_truthy(message.get("Async")),
    )
    if request.is_async:
        _ok(session, message, "Originate successfully queued")
        server.pbx.spawn(server.runner.originate(request), f"originate {channel}")
        return
    if await server.runner.originate(request):
        _ok(session, message, "Originate successfully queued")
    else:
        session.error(message, "Originate failed")


async def action_redirect(server: AmiServer, session: Session, message: Message) -> None:
    name = (message.get("Channel") or "").strip()
    context = (message.get("Context") or "").strip()
    exten = (message.get("Exten") or "").strip()
    priority_text = (message.get("Priority") or "").strip()
    if not name:
        session.error(message, "Channel not specified")
        return
    if not context:
        session.error(message, "Context not specified")
        return
    if not exten:
        session.error(message, "Exten not specified")
        return
    if not priority_text:
        session.error(message, "Priority not specified")
        return
    if not priority_text.isdigit() or int(priority_text) < 1:
        session.error(message, "Priority is invalid")
        return
    chan = server.pbx.find_channel(name)
    if chan is None:
        session.error(message, f"Channel does not exist: {name}")
        return
    extra_name = (message.get("ExtraChannel") or "").strip()
    extra = server.pbx.find_channel(extra_name) if extra_name else None
    if extra_name and extra is None:
        session.error(message, f"ExtraChannel does not exist: {extra_name}")
        return
    _ok(session, message, "Redirect successful")
    server.pbx.async_goto(chan, context, exten, int(priority_text))
    if extra is not None:
        server.pbx.async_goto(
            extra,
            (message.get("ExtraContext") or context).strip(),
            (message.get("ExtraExten") or exten).strip(),
            int(message.get("ExtraPriority") or priority_text),
        )


async def action_hangup(server: AmiServer, session: Session, message: Message) -> None:
    name = (message.get("Channel") or "").strip()
    if not name:
        session.error(message, "No channel specified")
        return
    cause_text = (message.get("Cause") or "").strip()
    cause = int(cause_text) if cause_text.isdigit() else None
    pbx = server.pbx
    if len(name) > 2 and name.startswith("/") and name.endswith("/"):
        try:
            pattern = re.compile(name[1:-1])
        except re.error:
            session.error(message, "Regex compile failed on: " + name)
            return
        matched = [c for c in pbx.channels_sorted() if pattern.search(c.name)]
        _list_start(session, message, "Channels hung up will follow")
        for chan in matched:
            _list_item(
                session, message, "ChannelHungup", [("Channel", chan.name)], action_first=False
            )
        _list_complete(session, message, "ChannelsHungupListComplete", len(matched))
        for chan in matched:
            pbx.soft_hangup(chan, 16, cause)
        return
    target = pbx.find_channel(name)
    if target is None:
        session.error(message, "No such channel")
        return
    _ok(session, message, "Channel Hungup")
    pbx.soft_hangup(target, 16, cause)


async def action_bridge(server: AmiServer, session: Session, message: Message) -> None:
    first_name = (message.get("Channel1") or "").strip()
    second_name = (message.get("Channel2") or "").strip()
    if not first_name or not second_name:
        session.error(message, "Missing channel parameter in request")
        return
    pbx = server.pbx
    first = pbx.find_channel(first_name)
    if first is None:
        session.error(message, f"Channel1 does not exist: {first_name}")
        return
    second = pbx.find_channel(second_name)
    if second is None:
        session.error(message, f"Channel2 does not exist: {second_name}")
        return
    _ok(session, message, "Channels have been bridged")
    server.runner.join(pbx.create_bridge(), first, second, take=True)


async def action_blindtransfer(server: AmiServer, session: Session, message: Message) -> None:
    chan = server.channel(session, message, unknown="Channel specified does not exist")
    if chan is None:
        return
    exten = (message.get("Exten") or "").strip()
    if not exten:
        session.error(message, "No extension specified")
        return
    context = (message.get("Context") or chan.context).strip()
    pbx = server.pbx
    bridge = chan.bridge
    transferee = chan.peer()
    if bridge is None or transferee is None:
        session.error(message, "Transfer invalid")
        return
    _ok(session, message, "Transfer succeeded")
    pbx.emit_chan("Unhold", chan)
    pbx.set_var(transferee, "BLINDTRANSFER", chan.name)
    pbx.set_var(chan, "BLINDTRANSFER", transferee.name)
    pbx.bridge_clear_peers(bridge, first=chan)
    # The event shows the transferee where it was before the transfer.
    transfer = [
        ("Result", "Success"),
        *chan.snapshot("Transferer"),
        *transferee.snapshot("Transferee"),
        *bridge.snapshot(),
        ("IsExternal", "Yes"),
        ("Context", context),
        ("Extension", exten),
    ]
    pbx.set_location(transferee, context, exten, 1)
    pbx.publish_location(transferee)
    if transferee.pbx_kind:
        transferee.goto_target = (context, exten, 1)
    else:
        transferee.after_goto = (context, exten, 1)
    pbx.bridge_leave(chan, cleared=True, destroying=True)
    pbx.emit("BlindTransfer", ev.CALL, transfer)
    chan.hangupcause = chan.hangupcause or 16
    pbx.hangup(chan)


async def action_atxfer(server: AmiServer, session: Session, message: Message) -> None:
    session.error(
        message, "Atxfer is not emulated (attended transfer needs Local channel optimisation)"
    )


async def action_mixmonitor(server: AmiServer, session: Session, message: Message) -> None:
    chan = server.channel(session, message)
    if chan is None:
        return
    filename = (message.get("File") or f"{chan.uniqueid}.wav").strip()
    if not filename.startswith("/"):
        filename = f"{SPOOL_DIR}/monitor/{filename}"
    _ok(session, message)
    pbx = server.pbx
    chan.mixmonitor = filename
    pbx.set_var(chan, "MIXMONITOR_FILENAME", filename)
    pbx.emit_chan("MixMonitorStart", chan)
    if chan.bridge is not None:
        pbx.bridge_peer_round(chan.bridge)


async def action_mixmonitormute(server: AmiServer, session: Session, message: Message) -> None:
    chan = server.channel(session, message)
    if chan is None:
        return
    direction = (message.get("Direction") or "both").strip()
    state = "1" if _truthy(message.get("State")) else "0"
    _ok(session, message)
    server.pbx.emit_chan("MixMonitorMute", chan, [("Direction", direction), ("State", state)])


async def action_stopmixmonitor(server: AmiServer, session: Session, message: Message) -> None:
    chan = server.channel(session, message)
    if chan is None:
        return
    if chan.mixmonitor is None:
        session.error(message, "Could not stop monitoring channel")
        return
    _ok(session, message)
    pbx = server.pbx
    chan.mixmonitor = None
    pbx.emit_chan("MixMonitorStop", chan)
    bridge = chan.bridge
    if bridge is not None:
        # The audiohook leaves the bridge a few milliseconds later.
        chan.add_timer(pbx.clock.call_later(0.007, _refresh_bridge, pbx, chan))


def _refresh_bridge(pbx: Pbx, chan: Channel) -> None:
    if chan.bridge is not None:
        pbx.bridge_peer_round(chan.bridge)


async def action_coreshowchannels(server: AmiServer, session: Session, message: Message) -> None:
    pbx = server.pbx
    channels = pbx.channels_sorted()
    _list_start(session, message, "Channels will follow")
    now = pbx.clock.elapsed()
    for chan in channels:
        _list_item(
            session,
            message,
            "CoreShowChannel",
            [
                *chan.snapshot(),
                ("Application", chan.app),
                ("ApplicationData", chan.appdata),
                ("Duration", _duration(now - chan.created)),
                ("BridgeId", chan.bridge.id if chan.bridge else ""),
            ],
        )
    _list_complete(session, message, "CoreShowChannelsComplete", len(channels))


async def action_status(server: AmiServer, session: Session, message: Message) -> None:
    pbx = server.pbx
    name = (message.get("Channel") or "").strip()
    if name:
        chan = pbx.find_channel(name)
        if chan is None:
            session.error(message, "No such channel")
            return
        channels = [chan]
    else:
        channels = pbx.channels_sorted()
    wanted = [v.strip() for v in (message.get("Variables") or "").split(",") if v.strip()]
    _list_start(session, message, "Channel status will follow")
    now = pbx.clock.elapsed()
    for chan in channels:
        pairs = [
            *chan.snapshot(),
            ("Type", chan.tech),
            ("DNID", chan.dnid),
            ("EffectiveConnectedLineNum", chan.conn_num or "<unknown>"),
            ("EffectiveConnectedLineName", chan.conn_name or "<unknown>"),
            ("TimeToHangup", "0"),
            ("BridgeID", chan.bridge.id if chan.bridge else ""),
            ("Application", chan.app),
            ("Data", chan.appdata),
            ("Nativeformats", "(ulaw)"),
            ("Readformat", "ulaw"),
            ("Readtrans", ""),
            ("Writeformat", "ulaw"),
            ("Writetrans", ""),
            ("Callgroup", "0"),
            ("Pickupgroup", "0"),
            ("Seconds", str(int(now - chan.created))),
        ]
        for variable in wanted:
            value = read_variable(pbx, chan, variable)
            pairs.append(("Variable", f"{variable}={value if value is not None else '(null)'}"))
        _list_item(session, message, "Status", pairs, action_first=False, privilege="Call")
    _list_complete(
        session, message, "StatusComplete", len(channels), [("Items", str(len(channels)))]
    )


async def action_bridgelist(server: AmiServer, session: Session, message: Message) -> None:
    bridges = list(server.pbx.bridges.values())
    _list_start(session, message, "Bridge listing will follow")
    for bridge in bridges:
        _list_item(session, message, "BridgeListItem", bridge.snapshot())
    _list_complete(session, message, "BridgeListComplete", len(bridges))


async def action_bridgeinfo(server: AmiServer, session: Session, message: Message) -> None:
    bridge_id = (message.get("BridgeUniqueid") or "").strip()
    if not bridge_id:
        session.error(message, "BridgeUniqueid must be provided")
        return
    bridge = server.pbx.bridges.get(bridge_id)
    if bridge is None:
        session.error(message, f"Bridge {bridge_id} not found")
        return
    _list_start(session, message, "Bridge channel listing will follow")
    members = list(reversed(bridge.channels))
    for chan in members:
        _list_item(session, message, "BridgeInfoChannel", chan.snapshot())
    _list_complete(session, message, "BridgeInfoComplete", len(members), bridge.snapshot())


async def action_devicestatelist(server: AmiServer, session: Session, message: Message) -> None:
    pbx = server.pbx
    devices = [
        (e.device, pbx.device_state_of(e))
        for e in sorted(pbx.endpoints.values(), key=lambda e: e.name)
    ]
    devices += EXTRA_DEVICES
    _list_start(session, message, "Device State Changes will follow")
    for device, state in devices:
        _list_item(session, message, "DeviceStateChange", [("Device", device), ("State", state)])
    _list_complete(session, message, "DeviceStateListComplete", len(devices))


async def action_pjsipshowcontacts(server: AmiServer, session: Session, message: Message) -> None:
    pbx = server.pbx
    endpoints = [e for e in sorted(pbx.endpoints.values(), key=lambda e: e.name) if e.registered]
    _list_start(session, message, "A listing of Contacts follows, presented as ContactList events")
    for endpoint in endpoints:
        digest = hashlib.md5(endpoint.contact_uri.encode()).hexdigest()
        _list_item(
            session,
            message,
            "ContactList",
            [
                ("ObjectType", "contact"),
                ("ObjectName", f"{endpoint.name};@{digest}"),
                ("ViaAddr", "127.0.0.1"),
                ("QualifyTimeout", "3.000000"),
                ("Qualify2xxOnly", "false"),
                ("CallId", f"{abs(hash(endpoint.name)) % 100000}-4242@127.0.0.1"),
                ("RegServer", ""),
                ("PruneOnBoot", "no"),
                ("Path", ""),
                ("Endpoint", endpoint.name),
                ("ViaPort", str(endpoint.contact_port)),
                ("AuthenticateQualify", "no"),
                ("Uri", endpoint.contact_uri),
                ("QualifyFrequency", "0"),
                ("UserAgent", endpoint.user_agent or f"SIPp-{endpoint.name}"),
                ("ExpirationTime", str(int(endpoint.registered_at) + 3600)),
                ("OutboundProxy", ""),
                ("Status", "NonQualified"),
                ("RoundtripUsec", "N/A"),
            ],
        )
    _list_complete(session, message, "ContactListComplete", len(endpoints))


async def action_agi(server: AmiServer, session: Session, message: Message) -> None:
    name = (message.get("Channel") or "").strip()
    command = (message.get("Command") or "").strip()
    if not name or not command:
        session.error(message, "Channel and Command are required")
        return
    chan = server.pbx.find_channel(name)
    if chan is None:
        session.error(message, f"Channel {name} does not exist.")
        return
    agi = chan.agi
    if not isinstance(agi, AsyncAgiSession):
        session.error(message, f"Failed to add AGI command to channel {name} queue")
        return
    agi.enqueue(command, message.get("CommandID"))
    _ok(session, message, "Added AGI command to queue")


async def action_listcommands(server: AmiServer, session: Session, message: Message) -> None:
    session.respond(
        message, "Success", *[(name, f"{name} (Priv: <none>)") for name in sorted(ACTION_NAMES)]
    )


ACTION_NAMES = {
    "Login": action_login,
    "Challenge": action_challenge,
    "Logoff": action_logoff,
    "Ping": action_ping,
    "Events": action_events,
    "Filter": action_filter,
    "CoreStatus": action_corestatus,
    "CoreSettings": action_coresettings,
    "Command": action_command,
    "Getvar": action_getvar,
    "Setvar": action_setvar,
    "UserEvent": action_userevent,
    "Originate": action_originate,
    "Redirect": action_redirect,
    "Hangup": action_hangup,
    "Bridge": action_bridge,
    "BlindTransfer": action_blindtransfer,
    "Atxfer": action_atxfer,
    "MixMonitor": action_mixmonitor,
    "MixMonitorMute": action_mixmonitormute,
    "StopMixMonitor": action_stopmixmonitor,
    "CoreShowChannels": action_coreshowchannels,
    "Status": action_status,
    "BridgeList": action_bridgelist,
    "BridgeInfo": action_bridgeinfo,
    "DeviceStateList": action_devicestatelist,
    "PJSIPShowContacts": action_pjsipshowcontacts,
    "AGI": action_agi,
    "ListCommands": action_listcommands,
}
ACTIONS: dict[str, Handler] = {name.lower(): handler for name, handler in ACTION_NAMES.items()}
