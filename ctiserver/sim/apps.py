"""Dialplan execution: the PBX loop of a channel, its applications, and AMI Originate.

A channel running dialplan has one task (`Runner.run_dialplan`), the
emulator's equivalent of Asterisk's PBX thread. It walks the priorities of
the built-in dialplan, publishes `Newexten` when the location changes and
awaits each application. Applications wait on the channel mailbox, so a
hangup, an AMI Redirect (async goto) or an AMI Bridge (the channel is taken
over: `Channel.pbx_generation` moves on) ends them at once.

The dialled legs of `Dial()` have no task: the caller's Dial drives them, and
once bridged a leg is hung up when the bridge dissolves. Channels taken into
a bridge by the AMI `Bridge` action or the `Bridge` application continue at
the priority after their application when the bridge ends (INDEX 4).

Originate runs in a task per request; the originated channel then runs its
dialplan (Context/Exten) or application (ChanSpy, Bridge, ...) in that task.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ctiserver.sim import events as ev
from ctiserver.sim import sounds
from ctiserver.sim.agi_client import AsyncAgiSession, FastAgiSession
from ctiserver.sim.dialplan import Dialplan, callerid_split, split_args, substitute
from ctiserver.sim.expressions import leading_integer
from ctiserver.sim.model import Bridge, Channel, Pbx, Sig

log = logging.getLogger(__name__)

JUMP = 1  # an application moved the channel (Goto): do not advance the priority
UNKNOWN_APP = -2

DIAL_VARIABLES = (
    "DIALSTATUS",
    "DIALEDPEERNUMBER",
    "DIALEDPEERNAME",
    "ANSWEREDTIME",
    "ANSWEREDTIME_MS",
    "DIALEDTIME",
    "DIALEDTIME_MS",
    "RINGTIME",
    "RINGTIME_MS",
    "PROGRESSTIME",
    "PROGRESSTIME_MS",
)
# Hangup cause of a refused dialled leg -> DIALSTATUS (anything else: CHANUNAVAIL).
DIAL_FAILURES = {17: "BUSY", 21: "BUSY", 34: "CONGESTION", 19: "NOANSWER", 18: "NOANSWER"}


@dataclass
class AppContext:
    """What an application needs: the runner, the channel and the run that owns it."""

    runner: Runner
    chan: Channel
    gen: int

    @property
    def pbx(self) -> Pbx:
        return self.runner.pbx

    @property
    def stopped(self) -> bool:
        chan = self.chan
        return chan.interrupted or chan.pbx_generation != self.gen or chan.gone

    async def sleep(self, seconds: float) -> bool:
        """Wait, interruptibly; True when the full time passed."""
        clock = self.pbx.clock
        deadline = clock.elapsed() + seconds
        while not self.stopped:
            remaining = deadline - clock.elapsed()
            if remaining <= 0:
                return True
            await self.chan.receive(remaining)
        return False


App = Callable[[AppContext, str], Awaitable[int]]


@dataclass
class OriginateRequest:
    """The parameters of the AMI Originate action."""

    channel: str
    context: str = ""
    exten: str = ""
    priority: int = 1
    application: str = ""
    data: str = ""
    callerid: tuple[str, str] | None = None
    timeout: float = 30.0
    variables: list[tuple[str, str]] = field(default_factory=list)
    channel_id: str | None = None
    action_id: str | None = None
    is_async: bool = False


class Runner:
    """Runs dialplan and applications on channels."""

    def __init__(self, pbx: Pbx, dialplan: Dialplan) -> None:
        self.pbx = pbx
        self.dialplan = dialplan
        self._thread_ids = itertools.count(140307823429312, 8392704)
        pbx.start_pbx = self.start
        self.apps: dict[str, App] = {
            "noop": app_noop,
            "verbose": app_noop,
            "log": app_noop,
            "answer": app_answer,
            "wait": app_wait,
            "hangup": app_hangup,
            "set": app_set,
            "goto": app_goto,
            "gotoif": app_gotoif,
            "userevent": app_userevent,
            "playback": app_playback,
            "echo": app_echo,
            "musiconhold": app_musiconhold,
            "ringing": app_ringing,
            "progress": app_noop,
            "agi": app_agi,
            "dial": app_dial,
            "bridge": app_bridge,
            "chanspy": app_chanspy,
        }

    # -- runs --------------------------------------------------------------

    def claim(self, chan: Channel, kind: str) -> int:
        chan.pbx_generation += 1
        chan.pbx_kind = kind
        chan.drain(Sig.WAKE, Sig.DTMF, Sig.BRIDGE_EXIT, Sig.TIMEOUT)
        return chan.pbx_generation

    def start(self, chan: Channel, context: str, exten: str, priority: int) -> None:
        """Start a dialplan task on `chan` at a location."""
        if self.pbx.closing or chan.gone:
            return
        gen = self.claim(chan, "dialplan")
        self.pbx.spawn(self.run_dialplan(chan, gen, context, exten, priority), f"pbx {chan.name}")

    def thread_id(self) -> int:
        return next(self._thread_ids)

    async def run_dialplan(
        self, chan: Channel, gen: int, context: str, exten: str, priority: int
    ) -> None:
        pbx = self.pbx
        pbx.processed_calls += 1
        try:
            await self._loop(AppContext(self, chan, gen), context, exten, priority)
        finally:
            if chan.pbx_generation == gen and not pbx.closing:
                chan.pbx_kind = ""
                if not chan.gone:
                    pbx.pbx_end_softhangup(chan)
                    pbx.hangup(chan)

    async def _loop(self, ctx: AppContext, context: str, exten: str, priority: int) -> None:
        pbx, chan = self.pbx, ctx.chan
        pbx.set_location(chan, context, exten, priority)
        while True:
            if chan.goto_target is not None:
                target, chan.goto_target = chan.goto_target, None
                if self.dialplan.lookup(*target) is None:
                    # "sent to invalid extension but no invalid handler" (04c): the
                    # request shows the old location, the Hangup the new one.
                    log.warning("%s redirected to missing %s", chan.name, target)
                    pbx.pbx_end_softhangup(chan)
                    if chan.up:
                        pbx.emit_qos(chan)
                    pbx.set_location(chan, *target)
                    return
                pbx.set_location(chan, *target)
            if chan.hangup_requested or chan.gone:
                return
            step = self.dialplan.lookup(chan.context, chan.exten, chan.priority)
            if step is None:
                return
            data = substitute(pbx, chan, step.data)
            pbx.newexten(chan, step.app, data)
            result = await self.execute(ctx, step.app, data)
            if chan.pbx_generation != ctx.gen:
                return
            if chan.goto_target is not None:
                continue
            if result < 0 or chan.hangup_requested:
                return
            if result != JUMP:
                chan.priority += 1

    async def execute(self, ctx: AppContext, app: str, data: str) -> int:
        handler = self.apps.get(app.lower())
        if handler is None:
            log.warning("no application %r emulated (channel %s)", app, ctx.chan.name)
            return UNKNOWN_APP
        return await handler(ctx, data)

    async def exec_from_agi(self, chan: Channel, app: str, data: str) -> int:
        """AGI EXEC: run an application inside the current run of the channel."""
        return await self.execute(AppContext(self, chan, chan.pbx_generation), app, data)

    # -- taking a channel into a bridge (AMI Bridge, Bridge()) -----------------

    def take_for_bridge(self, chan: Channel) -> None:
        """Pull `chan` out of its application; it resumes after it once the bridge ends."""
        pbx = self.pbx
        pbx.moh_stop(chan)
        if chan.bridge is not None:
            pbx.bridge_leave(chan)
        if chan.pbx_kind:
            if chan.pbx_kind == "dialplan":
                chan.priority += 1
                chan.after_goto = (chan.context, chan.exten, chan.priority)
            chan.pbx_generation += 1
            chan.pbx_kind = ""
            session = chan.agi
            if isinstance(session, FastAgiSession):
                # Masquerade: the FastAGI session carries on with a hidden surrogate.
                chan.agi = None
                session.masquerade()
            else:
                chan.wake()
        if not chan.up:
            pbx.answer(chan)

    def join(self, bridge: Bridge, first: Channel, second: Channel, *, take: bool = False) -> None:
        """Put both channels in `bridge`; with `take`, each is first pulled out of
        its application (AMI Bridge), just before it enters, as Asterisk orders it."""
        pbx = self.pbx
        for chan in (first, second):
            if take:
                self.take_for_bridge(chan)
            pbx.bridge_enter(bridge, chan)
        pbx.bridge_configured(bridge)
        for member in (first, second):
            peer = member.peer()
            if peer is not None:
                pbx.set_connected(member, peer.caller_num, peer.caller_name)

    # -- originate -----------------------------------------------------------

    async def originate(self, req: OriginateRequest) -> bool:
        """Place the call; True when answered. Async requests report OriginateResponse."""
        pbx = self.pbx
        tech, _, resource = req.channel.partition("/")
        number, _, host = resource.partition("@")
        second: Channel | None = None
        if tech.lower() == "local":
            context = host.split("/", 1)[0]
            if self.dialplan.find(context, number) is None:
                self._originate_response(req, None, "Failure", 0)
                return False
            chan, second = pbx.new_local_pair(number, context, optimize=not host.endswith("/n"))
        else:
            endpoint = pbx.endpoints.get(host or number) if tech.upper() == "PJSIP" else None
            if endpoint is None or not endpoint.registered:
                # Unknown technology, unknown endpoint or no contact: no channel at all.
                self._originate_response(req, None, "Failure", 0)
                return False
            chan = pbx.new_channel(endpoint, uniqueid=req.channel_id)
        gen = self.claim(chan, "app")
        if second is not None:
            if req.callerid is not None:
                second.caller_num, second.caller_name = req.callerid
            self.start(second, second.context, second.exten, 1)
        try:
            return await self._originate_call(req, chan, gen, resource)
        finally:
            if chan.pbx_generation == gen and not pbx.closing:
                chan.pbx_kind = ""
                if not chan.gone:
                    pbx.hangup(chan)

    async def _originate_call(
        self, req: OriginateRequest, chan: Channel, gen: int, dial_string: str
    ) -> bool:
        pbx = self.pbx
        clock = pbx.clock
        pbx.newexten(chan, "AppDial2", "(Outgoing Line)")
        for name, value in req.variables:
            pbx.set_var(chan, name, value)
        if req.callerid is not None:
            pbx.set_callerid(chan, *req.callerid)
            pbx.set_connected(chan, *req.callerid)
        pbx.emit("DialBegin", ev.CALL, [*chan.snapshot("Dest"), ("DialString", dial_string)])
        if chan.endpoint is not None and chan.endpoint.phone is not None:
            chan.endpoint.phone.on_invite(pbx, chan)
        deadline = clock.elapsed() + req.timeout
        while True:
            if chan.hangup_requested or chan.gone:
                status = "BUSY" if chan.hangupcause == 17 else "CONGESTION"
                pbx.emit("DialEnd", ev.CALL, [*chan.snapshot("Dest"), ("DialStatus", status)])
                pbx.hangup(chan)
                self._originate_response(req, None, "Failure", 0)
                return False
            signal = await chan.receive(deadline - clock.elapsed())
            if signal.kind is Sig.RINGING:
                pbx.emit("DialState", ev.CALL, [*chan.snapshot("Dest"), ("DialStatus", "RINGING")])
            elif signal.kind is Sig.ANSWER:
                break
            elif signal.kind is Sig.TIMEOUT and clock.elapsed() >= deadline - 1e-6:
                self._originate_response(req, None, "Failure", 3)
                chan.hangupcause, chan.techcause = 19, 480
                pbx.hangup(chan)
                return False
        if req.application:
            self._originate_response(req, chan, "Success", 4)
            pbx.emit("DialEnd", ev.CALL, [*chan.snapshot("Dest"), ("DialStatus", "ANSWER")])
            ctx = AppContext(self, chan, gen)
            await self.execute(ctx, req.application, req.data)
            return True
        pbx.emit("DialEnd", ev.CALL, [*chan.snapshot("Dest"), ("DialStatus", "ANSWER")])
        # OriginateResponse follows the first steps of the dialplan (05, 15).
        asyncio.get_running_loop().call_soon(self._originate_response, req, chan, "Success", 4)
        gen = self.claim(chan, "dialplan")
        await self.run_dialplan(chan, gen, req.context, req.exten, req.priority)
        return True

    def _originate_response(
        self, req: OriginateRequest, chan: Channel | None, response: str, reason: int
    ) -> None:
        if not req.is_async:
            return
        headers: ev.Headers = []
        if req.action_id is not None:
            headers.append(("ActionID", req.action_id))
        headers += [("Response", response), ("Channel", chan.name if chan else req.channel)]
        if req.application:
            headers += [("Application", req.application), ("Data", req.data)]
        else:
            headers += [("Context", req.context), ("Exten", req.exten)]
        num, name = req.callerid or ("", "")
        headers += [
            ("Reason", str(reason)),
            ("Uniqueid", chan.uniqueid if chan else "<unknown>"),
            ("CallerIDNum", num or "<unknown>"),
            ("CallerIDName", name or "<unknown>"),
        ]
        self.pbx.emit("OriginateResponse", ev.CALL, headers)


# -- simple applications -----------------------------------------------------


async def app_noop(ctx: AppContext, data: str) -> int:
    return 0


async def app_answer(ctx: AppContext, data: str) -> int:
    chan, pbx = ctx.chan, ctx.pbx
    if chan.up:
        return 0
    pbx.answer(chan)
    config = pbx.config
    delay = config.answer_delay if chan.media else config.answer_delay_no_media
    return 0 if await ctx.sleep(delay) else -1


async def app_wait(ctx: AppContext, data: str) -> int:
    seconds = float(data or 0)
    await ctx.sleep(seconds)
    return -1 if ctx.chan.hangup_requested else 0


async def app_echo(ctx: AppContext, data: str) -> int:
    while not ctx.stopped:
        await ctx.chan.receive(None)
    return -1


async def app_ringing(ctx: AppContext, data: str) -> int:
    if ctx.chan.state not in (ev.UP, ev.RINGING):
        ctx.pbx.set_state(ctx.chan, ev.RINGING)
    return 0


async def app_hangup(ctx: AppContext, data: str) -> int:
    chan = ctx.chan
    if data.strip().isdigit():
        chan.hangupcause = int(data)
    elif not chan.hangupcause:
        chan.hangupcause = 16
    return -1


def _party_update(what: str, value: str, num: str, name: str) -> tuple[str, str]:
    """CALLERID(num|name|all)=value applied to a (number, name) pair."""
    if what in ("num", "number"):
        return value, name
    if what == "name":
        return num, value
    return callerid_split(value)


async def app_set(ctx: AppContext, data: str) -> int:
    name, _, value = data.partition("=")
    name = name.strip()
    upper = name.upper()
    pbx, chan = ctx.pbx, ctx.chan
    if upper.startswith("CALLERID(") and upper.endswith(")"):
        num, cname = _party_update(upper[9:-1].lower(), value, chan.caller_num, chan.caller_name)
        pbx.set_callerid(chan, num, cname)
    elif upper.startswith("CONNECTEDLINE(") and upper.endswith(")"):
        num, cname = _party_update(upper[14:-1].lower(), value, chan.conn_num, chan.conn_name)
        pbx.set_connected(chan, num, cname)
    elif name:
        pbx.set_var(chan, name, value)
    return 0


async def app_goto(ctx: AppContext, data: str) -> int:
    args = [a.strip() for a in split_args(data)]
    chan = ctx.chan
    if len(args) == 3:
        chan.context, chan.exten, chan.priority = args[0], args[1], int(args[2])
    elif len(args) == 2:
        chan.exten, chan.priority = args[0], int(args[1])
    else:
        chan.priority = int(args[0])
    return JUMP


async def app_gotoif(ctx: AppContext, data: str) -> int:
    """GotoIf(condition?[label_if_true][:label_if_false]), as pbx_builtin_gotoif."""
    condition, _, branches = data.partition("?")
    if_true, _, if_false = branches.partition(":")
    branch = if_true if _condition_is_true(condition) else if_false
    if not branch:
        return 0  # no label for this outcome: carry on at the next priority
    return await app_goto(ctx, branch)


def _condition_is_true(condition: str) -> bool:
    """pbx_checkcondition: empty is false, a leading integer is its truth, other text true."""
    if not condition:
        return False
    number = leading_integer(condition)
    return number is None or number != 0


async def app_userevent(ctx: AppContext, data: str) -> int:
    name, *pairs = split_args(data)
    extra: ev.Headers = [("UserEvent", name)]
    for pair in pairs:
        key, _, value = pair.partition(":")
        extra.append((key.strip(), value.strip()))
    ctx.pbx.emit_chan("UserEvent", ctx.chan, extra, ev.USER)
    return 0


async def app_playback(ctx: AppContext, data: str) -> int:
    pbx, chan = ctx.pbx, ctx.chan
    files = split_args(data)[0].split("&")
    if ctx.stopped:
        pbx.set_var(chan, "PLAYBACKSTATUS", "FAILED")
        return -1 if chan.hangup_requested else 0
    for name in files:
        if not await ctx.sleep(sounds.seconds(name)):
            pbx.set_var(chan, "PLAYBACKSTATUS", "FAILED")
            return -1 if chan.hangup_requested else 0
    pbx.set_var(chan, "PLAYBACKSTATUS", "SUCCESS")
    return 0


async def app_musiconhold(ctx: AppContext, data: str) -> int:
    """MusicOnHold(class[,duration]): music for `duration` whole seconds (res_musiconhold
    reads it with %d), for ever when it is missing, 0 or not a number."""
    args = split_args(data)
    ctx.pbx.moh_start(ctx.chan, args[0] or "default")
    seconds = (leading_integer(args[1]) if len(args) > 1 else None) or 0
    if seconds <= 0:
        while not ctx.stopped:
            await ctx.chan.receive(None)
    else:
        await ctx.sleep(seconds)
    ctx.pbx.moh_stop(ctx.chan)
    return -1 if ctx.chan.hangup_requested else 0


async def app_agi(ctx: AppContext, data: str) -> int:
    url, *args = split_args(data)
    runner, chan = ctx.runner, ctx.chan
    session: FastAgiSession | AsyncAgiSession
    if url.strip().lower().startswith("agi:async"):
        session = AsyncAgiSession(ctx.pbx, chan, runner.exec_from_agi, args, runner.thread_id())
    else:
        session = FastAgiSession(
            ctx.pbx, chan, runner.exec_from_agi, url.strip(), args, runner.thread_id()
        )
    chan.agi = session
    if chan.interrupted:
        session.dead = True
    status = await session.run()
    if chan.agi is session:
        chan.agi = None
    if chan.pbx_generation != ctx.gen:
        return -1  # masqueraded into a bridge: the run is over for this task
    session.set_var("AGISTATUS", status)
    return -1 if status == "HANGUP" else 0


# -- Dial ----------------------------------------------------------------------


async def app_dial(ctx: AppContext, data: str) -> int:
    pbx, chan = ctx.pbx, ctx.chan
    clock = pbx.clock
    args = split_args(data)
    target = args[0].split("&")[0].strip()
    timeout = float(args[1]) if len(args) > 1 and args[1].strip() else None
    options = args[2] if len(args) > 2 else ""
    for name in DIAL_VARIABLES:
        pbx.set_var(chan, name, "")
    tech, _, resource = target.partition("/")
    number, _, host = resource.partition("@")
    local = tech.lower() == "local"
    endpoint = pbx.endpoints.get(host or number) if tech.upper() == "PJSIP" else None
    if local:
        context = host.split("/", 1)[0]
        if ctx.runner.dialplan.find(context, number) is None:
            pbx.set_var(chan, "DIALSTATUS", "CHANUNAVAIL")
            return 0
    elif endpoint is None or not endpoint.registered:
        # No contact: Dial fails before creating a channel (06, CHANUNAVAIL).
        chan.hangupcause, chan.techcause = 3, 404
        pbx.set_var(chan, "DIALSTATUS", "CHANUNAVAIL")
        return 0
    started = clock.elapsed()
    if local:
        callee, second = pbx.new_local_pair(
            number, context, linked=chan, optimize=not host.endswith("/n")
        )
        second.caller_num, second.caller_name = chan.caller_num, chan.caller_name
    else:
        assert endpoint is not None
        callee = pbx.new_channel(endpoint, linked=chan)
    callee.dial_owner = chan
    callee.features = "t" in options
    chan.features = "T" in options
    pbx.set_var(callee, "DIALEDPEERNUMBER", resource)
    callee.exten = number
    callee.conn_num, callee.conn_name = chan.caller_num, chan.caller_name
    inherit_cid = not local and endpoint is not None and not endpoint.callerid_num
    if inherit_cid:
        callee.caller_num, callee.caller_name = chan.conn_num, chan.conn_name
    pbx.newexten(callee, "AppDial", "(Outgoing Line)")
    if inherit_cid:
        pbx.emit_chan(
            "NewCallerid", callee, [("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")]
        )
    pbx.emit_chan("NewConnectedLine", callee)
    pbx.emit_chan("DialBegin", chan, [*callee.snapshot("Dest"), ("DialString", resource)])
    pbx.set_connected(chan, callee.caller_num, callee.caller_name)
    if local:
        ctx.runner.start(second, context, number, 1)
    elif endpoint is not None and endpoint.phone is not None:
        endpoint.phone.on_invite(pbx, callee)

    def dial_end(status: str) -> None:
        pbx.emit_chan("DialEnd", chan, [*callee.snapshot("Dest"), ("DialStatus", status)])

    deadline = None if timeout is None else started + timeout
    while True:
        if chan.hangup_requested or chan.goto_target is not None or ctx.stopped:
            dial_end("CANCEL")
            pbx.set_var(chan, "DIALSTATUS", "CANCEL")
            callee.dial_owner = None
            callee.hangupcause = 16
            pbx.hangup(callee)
            return -1 if chan.hangup_requested else 0
        if callee.gone or callee.hangup_requested:
            cause = callee.hangupcause
            status = DIAL_FAILURES.get(cause, "CHANUNAVAIL")
            dial_end(status)
            pbx.set_var(chan, "DIALSTATUS", status)
            chan.hangupcause, chan.techcause = cause, callee.techcause
            callee.dial_owner = None
            pbx.hangup(callee)
            return 0
        remaining = None if deadline is None else deadline - clock.elapsed()
        if remaining is not None and remaining <= 0:
            dial_end("NOANSWER")
            pbx.set_var(chan, "DIALSTATUS", "NOANSWER")
            callee.dial_owner = None
            callee.hangupcause = 0
            pbx.hangup(callee)
            return 0
        signal = await chan.receive(remaining)
        if signal.source is not callee:
            continue
        if signal.kind is Sig.RINGING:
            if chan.local_peer is not None and not chan.up:
                pbx.ringing(chan.local_peer)
            ring = clock.elapsed() - started
            pbx.set_var(chan, "RINGTIME", str(int(ring)))
            pbx.set_var(chan, "RINGTIME_MS", str(max(1, int(ring * 1000))))
            dial_end_state = [*callee.snapshot("Dest"), ("DialStatus", "RINGING")]
            pbx.emit_chan("DialState", chan, dial_end_state)
        elif signal.kind is Sig.ANSWER:
            break
    # Answered. A caller still ringing is answered now (an inbound leg, a Local;2).
    if not chan.up:
        pbx.answer(chan)
    pbx.set_var(chan, "DIALSTATUS", "ANSWER")
    pbx.set_var(chan, "DIALEDPEERNAME", callee.name)
    pbx.set_var(chan, "DIALEDPEERNUMBER", resource)
    callee.exten = ""
    dial_end("ANSWER")
    chan.hangupcause = callee.hangupcause = 16
    callee.dial_owner = None
    bridge = pbx.create_bridge()
    pbx.newexten(callee, "AppDial", "(Outgoing Line)")
    pbx.bridge_enter(bridge, callee)
    pbx.bridge_enter(bridge, chan)
    pbx.bridge_configured(bridge)
    while chan.bridge is bridge and not ctx.stopped:
        await chan.receive(None)
    if chan.bridge is not None:
        pbx.bridge_leave(chan)
    if chan.goto_target is not None:
        # Redirect / blind transfer out of the bridge: Dial ends early (08a, 08c).
        pbx.set_var(chan, "DIALSTATUS", "ANSWER")
        return 0
    now = clock.elapsed()
    answered = now - (chan.answered_at if chan.answered_at is not None else now)
    dialed = now - chan.created
    pbx.set_var(chan, "ANSWEREDTIME", str(int(answered)))
    pbx.set_var(chan, "ANSWEREDTIME_MS", str(int(answered * 1000)))
    pbx.set_var(chan, "DIALEDTIME", str(int(dialed)))
    pbx.set_var(chan, "DIALEDTIME_MS", str(int(dialed * 1000)))
    pbx.set_var(chan, "DIALSTATUS", "ANSWER")
    if chan.hangup_requested:
        return -1
    return 0 if "g" in options else -1


# -- Bridge() and ChanSpy() ------------------------------------------------------


async def app_bridge(ctx: AppContext, data: str) -> int:
    pbx, chan = ctx.pbx, ctx.chan
    other = pbx.find_channel(split_args(data)[0].strip())
    if other is None or other is chan:
        pbx.set_var(chan, "BRIDGERESULT", "NONEXISTENT")
        return 0
    ctx.runner.take_for_bridge(other)
    if not chan.up:
        pbx.answer(chan)
    bridge = pbx.create_bridge()
    ctx.runner.join(bridge, other, chan)
    while chan.bridge is bridge and not ctx.stopped:
        await chan.receive(None)
    if chan.bridge is not None:
        pbx.bridge_leave(chan)
    pbx.set_var(chan, "BRIDGERESULT", "SUCCESS")
    return -1 if chan.hangup_requested else 0


async def app_chanspy(ctx: AppContext, data: str) -> int:
    """ChanSpy(prefix,options) as app_chanspy.c's common_exec runs it.

    Scans for an answered channel whose name starts with `prefix` (a plain
    name prefix, as Asterisk's channel iterator: `PJSIP/agent100` also
    matches `PJSIP/agent1001-...`), spies on it (ChanSpyStart), and when it
    goes (ChanSpyStop) either exits (option `E`: the spy leg hangs up) or
    goes back to scanning for the next matching channel (no `E`: the spy leg
    stays up, waiting silently with `q`). Whisper (`w`) and barge (`B`) are
    not visible in the events (10); barge only adds a BRIDGEPEER round.
    """
    chan = ctx.chan
    args = split_args(data)
    prefix = args[0].strip()
    if prefix == "all":
        prefix = ""
    options = args[1] if len(args) > 1 else ""
    barge = "B" in options
    exit_on_hangup = "E" in options
    if not await ctx.sleep(0.1):
        return -1
    while not ctx.stopped:
        spyee = await _next_spyee(ctx, prefix)
        if spyee is None:
            return -1
        await _spy_on(ctx, spyee, barge)
        if chan.hangup_requested or ctx.stopped or exit_on_hangup:
            return -1
    return -1


async def _next_spyee(ctx: AppContext, prefix: str) -> Channel | None:
    """The first answered channel matching `prefix`, waiting until one exists."""
    pbx, chan = ctx.pbx, ctx.chan
    while not ctx.stopped:
        for candidate in pbx.channels_sorted():
            if (
                candidate is not chan
                and candidate.up
                and not candidate.gone
                and not candidate.hangup_requested
                and candidate.name.startswith(prefix)
            ):
                return candidate
        # Nothing to spy on yet: look again when woken (or every second).
        await chan.receive(1.0)
    return None


async def _spy_on(ctx: AppContext, spyee: Channel, barge: bool) -> None:
    pbx, chan = ctx.pbx, ctx.chan

    def spy_blocks() -> ev.Headers:
        return chan.snapshot("Spyer") + spyee.snapshot("Spyee")

    def refresh() -> None:
        if spyee.bridge is not None:
            pbx.bridge_peer_round(spyee.bridge)

    pbx.emit("ChanSpyStart", ev.CALL, spy_blocks())
    spyee.spied_by.append(chan)
    refresh()
    if barge:
        chan.add_timer(pbx.clock.call_later(0.07, refresh))
    while not ctx.stopped and not spyee.gone:
        await chan.receive(None)
    if chan.hangup_requested and not spyee.gone:
        refresh()
        if barge:
            refresh()
        # The audiohooks detach on the next frames (~15 ms with RTP flowing).
        await pbx.clock.sleep(0.015)
        refresh()
    pbx.emit("ChanSpyStop", ev.CALL, spy_blocks())
    if chan in spyee.spied_by:
        spyee.spied_by.remove(chan)
