"""PBX state of the Asterisk emulator: endpoints, channels, bridges and the events they publish.

This module is the single owner of call state. Everything that changes a
channel (a phone answering, the dialplan running an application, an AMI
action) goes through a `Pbx` method, which updates the state and publishes
the AMI events in the order Asterisk 22 does (see shared/asterisk/INDEX.md):

- channel names `PJSIP/<endpoint>-<8 hex>` from one global counter,
  Uniqueid `<epoch>.<n>`, Linkedid of the first channel of a call, the
  oldest Linkedid winning when channels meet in a bridge;
- `HangupRequest` for a BYE (with `Cause` only when the channel already had
  a hangup cause, e.g. after Dial answered), `SoftHangupRequest` for local
  hangups, `Hangup` with the causes of INDEX 13;
- device state per endpoint aggregated from its channels (`ONHOLD` on the
  held party), published as `DeviceStateChange` when it changes;
- basic bridges that dissolve when a member hangs up, `BRIDGEPEER` /
  `BRIDGEPVTCALLID` refreshed whenever the bridge is reconfigured.

Applications and the phones never sleep on their own timers: a channel's
dialplan task waits on the channel's mailbox (`Channel.receive`), and
phones schedule `Clock.call_later` handles that are cancelled with the
channel. Simplified or omitted, on purpose: CEL, Cdr and RTCP events are
not emitted; `RTPAUDIOQOS*` variables are emitted with fixed plausible
values (switch them off with `PbxConfig.qos_variables`).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from ctiserver.sim import events as ev
from ctiserver.sim.clock import Clock
from ctiserver.sim.events import Event, Headers

log = logging.getLogger(__name__)

ASTERISK_VERSION = "22.10.1"
AMI_VERSION = "11.0.0"
SPOOL_DIR = "/var/spool/asterisk"


class Sig(enum.Enum):
    """Why a waiting application was woken up."""

    TIMEOUT = "timeout"
    WAKE = "wake"  # a flag changed (hangup, goto, run taken over): re-check the channel
    DTMF = "dtmf"
    RINGING = "ringing"
    ANSWER = "answer"
    CALLEE_GONE = "callee_gone"  # a dialled leg refused the call or hung up
    BRIDGE_EXIT = "bridge_exit"


@dataclass(slots=True)
class Signal:
    kind: Sig
    value: Any = None
    source: Channel | None = None


TIMEOUT_SIGNAL = Signal(Sig.TIMEOUT)


class Phone(Protocol):
    """What the PBX needs from an emulated SIP phone (see phones.py)."""

    def on_invite(self, pbx: Pbx, channel: Channel) -> None:
        """A new outgoing channel rings this phone (INVITE sent)."""

    def on_hangup(self, pbx: Pbx, channel: Channel) -> None:
        """The PBX ended the call on this phone (BYE/CANCEL sent)."""


@dataclass(eq=False)
class Endpoint:
    """A PJSIP endpoint (pjsip.conf section) and, when registered, its contact."""

    name: str
    context: str = "from-callers"
    callerid_num: str = ""
    callerid_name: str = ""
    dtmf_mode: str = "rfc4733"
    contact_port: int = 5060
    user_agent: str = ""
    registered: bool = False
    registered_at: float = 0.0
    phone: Phone | None = None
    channels: set[Channel] = field(default_factory=set)
    device_state: str = ""
    kinds: dict[str, int] = field(default_factory=dict)  # device-state kind -> channels

    @property
    def device(self) -> str:
        return f"PJSIP/{self.name}"

    @property
    def contact_uri(self) -> str:
        return f"sip:{self.name}@127.0.0.1:{self.contact_port}"


class Channel:
    """One Asterisk channel and everything its AMI snapshot shows."""

    def __init__(
        self,
        pbx: Pbx,
        name: str,
        uniqueid: str,
        linkedid: str,
        endpoint: Endpoint | None,
        tech: str = "PJSIP",
    ) -> None:
        self.pbx = pbx
        self.name = name
        self.uniqueid = uniqueid
        self.linkedid = linkedid
        # Creation time of the channel whose Uniqueid is our Linkedid: the
        # oldest one wins when channels are bridged.
        self.linked_age = pbx.clock.elapsed()
        self.endpoint = endpoint
        self.tech = tech
        self.state = ev.DOWN
        self.caller_num = ""
        self.caller_name = ""
        self.conn_num = ""
        self.conn_name = ""
        self.language = "en"
        self.accountcode = ""
        self.context = endpoint.context if endpoint else "default"
        self.exten = "s"
        self.priority = 1
        self.app = ""
        self.appdata = ""
        self.dnid = ""
        self.vars: dict[str, str] = {}
        self.created = pbx.clock.elapsed()
        self.answered_at: float | None = None
        self.hangupcause = 0
        self.techcause: int | None = None
        self.sip_callid = ""
        self.media = True  # the phone streams RTP (affects Answer() and QOS variables)
        self.bridge: Bridge | None = None
        self.features = False  # DTMF features active in a bridge (Dial option t/T)
        self.last_cep: tuple[str, str, int] | None = None
        self.moh_class: str | None = None
        self.held = False  # the party held by the other side (device state ONHOLD)
        self.hangup_requested = False
        self.soft16_sent = False
        self.qos_sent = False
        self.gone = False
        self.goto_target: tuple[str, str, int] | None = None
        self.pbx_generation = 0  # bumped for every dialplan/app run that owns the channel
        self.pbx_kind = ""  # "dialplan", "app" or "" (no PBX: a dialled leg)
        self.want_dtmf = False
        self.dial_owner: Channel | None = None  # the caller whose Dial created this leg
        self.local_peer: Channel | None = None  # the other half of a Local channel pair
        self.device_kind = ""  # this channel's share of its endpoint's device state
        self.after_goto: tuple[str, str, int] | None = None  # where to go after a bridge
        self.mixmonitor: str | None = None
        self.spied_by: list[Channel] = []
        self.timers: list[asyncio.TimerHandle] = []
        self.agi: Any = None  # the FastAGI / async AGI session running on the channel
        self.on_up: Callable[[Channel], None] | None = None  # a caller's script starts
        self.on_gone: list[Callable[[Channel], None]] = []
        self._mail: deque[Signal] = deque()
        self._waiter: asyncio.Future[None] | None = None

    # -- mailbox -----------------------------------------------------------

    def post(self, signal: Signal) -> None:
        self._mail.append(signal)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake(self) -> None:
        self.post(Signal(Sig.WAKE))

    def drain(self, *kinds: Sig) -> None:
        """Drop queued signals of the given kinds (stale DTMF, old wake-ups)."""
        if self._mail:
            self._mail = deque(s for s in self._mail if s.kind not in kinds)

    async def receive(self, limit: float | None) -> Signal:
        """The next signal, or TIMEOUT after `limit` emulated seconds (None: wait forever)."""
        if self._mail:
            return self._mail.popleft()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        handle = None
        if limit is not None:
            handle = self.pbx.clock.call_later(max(0.0, limit), _resolve, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()
        return self._mail.popleft() if self._mail else TIMEOUT_SIGNAL

    # -- helpers -----------------------------------------------------------

    @property
    def interrupted(self) -> bool:
        """The running application must stop: hangup or async goto."""
        return self.hangup_requested or self.goto_target is not None

    @property
    def up(self) -> bool:
        return self.state == ev.UP

    def add_timer(self, handle: asyncio.TimerHandle) -> None:
        self.timers.append(handle)

    def cancel_timers(self) -> None:
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()

    def peer(self) -> Channel | None:
        """The other channel of a two-party bridge."""
        if self.bridge is None:
            return None
        for other in self.bridge.channels:
            if other is not self:
                return other
        return None

    def snapshot(self, prefix: str = "") -> Headers:
        return [
            (prefix + "Channel", self.name),
            (prefix + "ChannelState", str(self.state)),
            (prefix + "ChannelStateDesc", ev.STATE_DESC.get(self.state, "Unknown")),
            (prefix + "CallerIDNum", self.caller_num or "<unknown>"),
            (prefix + "CallerIDName", self.caller_name or "<unknown>"),
            (prefix + "ConnectedLineNum", self.conn_num or "<unknown>"),
            (prefix + "ConnectedLineName", self.conn_name or "<unknown>"),
            (prefix + "Language", self.language),
            (prefix + "AccountCode", self.accountcode),
            (prefix + "Context", self.context),
            (prefix + "Exten", self.exten),
            (prefix + "Priority", str(self.priority)),
            (prefix + "Uniqueid", self.uniqueid),
            (prefix + "Linkedid", self.linkedid),
        ]

    def __repr__(self) -> str:
        return f"<Channel {self.name} {ev.STATE_DESC.get(self.state)}>"


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Bridge:
    """A basic bridge (two-party mixing); dissolves when a member hangs up."""

    def __init__(self, pbx: Pbx, bridge_id: str) -> None:
        self.pbx = pbx
        self.id = bridge_id
        self.type = "basic"
        self.technology = "simple_bridge"
        self.channels: list[Channel] = []
        self.created = pbx.clock.elapsed()
        self.destroyed = False
        self.peers_cleared = False

    def snapshot(self, prefix: str = "") -> Headers:
        return [
            (prefix + "BridgeUniqueid", self.id),
            (prefix + "BridgeType", self.type),
            (prefix + "BridgeTechnology", self.technology),
            (prefix + "BridgeCreator", "<unknown>"),
            (prefix + "BridgeName", "<unknown>"),
            (prefix + "BridgeNumChannels", str(len(self.channels))),
            (prefix + "BridgeVideoSourceMode", "none"),
        ]


@dataclass
class PbxConfig:
    """Tunables of the emulated PBX."""

    fastagi_host: str = "127.0.0.1"
    fastagi_port: int = 4573
    # Emit RTPAUDIOQOS* VarSets at the end of answered PJSIP legs, like Asterisk.
    qos_variables: bool = True
    # Delay of Answer() before the next priority (Asterisk waits for the first
    # voice frame, up to 500 ms when the phone sends no RTP).
    answer_delay: float = 0.014
    answer_delay_no_media: float = 0.5
    # Gap between a command's result=-1 and the unsolicited HANGUP line.
    agi_hangup_notice_delay: float = 0.044
    agi_connect_timeout: float = 5.0


EventListener = Callable[[Event], None]


class Pbx:
    """The emulated Asterisk: registries, counters and the state-changing operations."""

    def __init__(self, clock: Clock, config: PbxConfig | None = None) -> None:
        self.clock = clock
        self.config = config or PbxConfig()
        self.started = clock.time()
        self.channels: dict[str, Channel] = {}
        self.by_uniqueid: dict[str, Channel] = {}
        self.bridges: dict[str, Bridge] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.globals: dict[str, str] = {
            "FASTAGI": f"agi://{self.config.fastagi_host}:{self.config.fastagi_port}/ivr"
        }
        self.listeners: list[EventListener] = []
        self.astdb: dict[tuple[str, str], str] = {}  # AGI DATABASE GET/PUT
        self.tasks: set[asyncio.Task[Any]] = set()
        self.processed_calls = 0
        self._chan_counter = itertools.count()
        self._local_counter = itertools.count()
        self._uid_counter = itertools.count()
        self._sip_callid_counter = itertools.count(1)
        self.closing = False
        # Hooks set by the other modules (kept here to avoid import cycles).
        self.start_pbx: Callable[[Channel, str, str, int], None] | None = None

    # -- tasks -------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a task the PBX owns (cancelled by `shutdown`)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("emulator task %s failed", task.get_name(), exc_info=task.exception())

    async def shutdown(self) -> None:
        self.closing = True
        for chan in list(self.channels.values()):
            chan.cancel_timers()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- publishing --------------------------------------------------------

    def emit(self, name: str, privilege: str, headers: Headers) -> None:
        if not self.listeners:
            return
        event = Event(name, privilege, headers, self.clock.time())
        for listener in list(self.listeners):
            listener(event)

    def emit_chan(
        self, name: str, chan: Channel, extra: Headers | None = None, privilege: str = ev.CALL
    ) -> None:
        if chan.gone and name not in ("Hangup",):
            return
        if not self.listeners:
            return
        headers = chan.snapshot()
        if extra:
            headers.extend(extra)
        self.emit(name, privilege, headers)

    # -- identities --------------------------------------------------------

    def new_uniqueid(self) -> str:
        return f"{int(self.clock.time())}.{next(self._uid_counter)}"

    def new_sip_callid(self, from_phone: bool) -> str:
        # Phones (SIPp) use "<n>-<pid>@host"; Asterisk generates UUIDs.
        if from_phone:
            return f"{next(self._sip_callid_counter)}-4242@127.0.0.1"
        return str(uuid.uuid4())

    def endpoint(self, name: str) -> Endpoint:
        found = self.endpoints.get(name)
        if found is None:
            found = Endpoint(name=name)
            self.endpoints[name] = found
        return found

    def find_channel(self, name: str) -> Channel | None:
        return self.channels.get(name)

    # -- channels ----------------------------------------------------------

    def new_channel(
        self,
        endpoint: Endpoint,
        *,
        state: int = ev.DOWN,
        caller: tuple[str, str] | None = None,
        context: str | None = None,
        exten: str = "s",
        linked: Channel | None = None,
        uniqueid: str | None = None,
        incoming: bool = False,
    ) -> Channel:
        """Create a PJSIP channel and publish Newchannel (plus SIPDOMAIN for incoming calls)."""
        name = f"PJSIP/{endpoint.name}-{next(self._chan_counter):08x}"
        uid = uniqueid or self.new_uniqueid()
        chan = Channel(self, name, uid, linked.linkedid if linked else uid, endpoint)
        if linked is not None:
            chan.linked_age = linked.linked_age
        chan.state = state
        if caller is not None:
            chan.caller_num, chan.caller_name = caller
        else:
            chan.caller_num, chan.caller_name = endpoint.callerid_num, endpoint.callerid_name
        if context is not None:
            chan.context = context
        chan.exten = exten
        chan.sip_callid = self.new_sip_callid(from_phone=incoming)
        self.channels[name] = chan
        self.by_uniqueid[uid] = chan
        endpoint.channels.add(chan)
        self.emit_chan("Newchannel", chan)
        if incoming:
            self.set_var(chan, "SIPDOMAIN", "127.0.0.1")
        self.update_device(endpoint, chan)
        return chan

    def new_local_pair(
        self, exten: str, context: str, *, linked: Channel | None = None, optimize: bool = True
    ) -> tuple[Channel, Channel]:
        """`Local/<exten>@<context>-<n>;1` (the outward half) and `;2` (runs the dialplan)."""
        base = f"Local/{exten}@{context}-{next(self._local_counter):08x}"
        halves: list[Channel] = []
        for suffix, state in ((";1", ev.DOWN), (";2", ev.RING)):
            uid = self.new_uniqueid()
            linkedid = linked.linkedid if linked else (halves[0].linkedid if halves else uid)
            chan = Channel(self, base + suffix, uid, linkedid, None, tech="Local")
            if linked is not None:
                chan.linked_age = linked.linked_age
            elif halves:
                chan.linked_age = halves[0].linked_age
            chan.state = state
            chan.context, chan.exten, chan.priority = context, exten, 1
            self.channels[chan.name] = chan
            self.by_uniqueid[uid] = chan
            self.emit_chan("Newchannel", chan)
            halves.append(chan)
        one, two = halves
        one.local_peer, two.local_peer = two, one
        self.emit(
            "LocalBridge",
            ev.CALL,
            [
                *one.snapshot("LocalOne"),
                *two.snapshot("LocalTwo"),
                ("Context", context),
                ("Exten", exten),
                ("LocalOptimization", "Yes" if optimize else "No"),
            ],
        )
        return one, two

    def set_state(self, chan: Channel, state: int) -> None:
        if chan.state == state or chan.gone:
            return
        chan.state = state
        if state == ev.UP and chan.answered_at is None:
            chan.answered_at = self.clock.elapsed()
        self.emit_chan("Newstate", chan)
        if chan.endpoint is not None:
            self.update_device(chan.endpoint, chan)
        if state == ev.UP and chan.on_up is not None:
            callback, chan.on_up = chan.on_up, None
            callback(chan)
        other = chan.local_peer
        if other is not None and chan.name.endswith(";2") and state in (ev.UP, ev.RINGING):
            # ;2 answering (or ringing) in the dialplan is ;1 answering for its caller.
            if state == ev.UP:
                self.phone_answer(other)
            else:
                self.ringing(other)

    def ringing(self, chan: Channel) -> None:
        """The phone sent 180 Ringing."""
        if chan.gone or chan.hangup_requested or chan.state == ev.RINGING:
            return
        self.set_state(chan, ev.RINGING)
        (chan.dial_owner or chan).post(Signal(Sig.RINGING, source=chan))

    def phone_answer(self, chan: Channel) -> None:
        """The phone sent 200 OK to our INVITE."""
        if chan.gone or chan.hangup_requested or chan.up:
            return
        self.answer(chan)
        (chan.dial_owner or chan).post(Signal(Sig.ANSWER, source=chan))

    def set_var(self, chan: Channel, name: str, value: str) -> None:
        chan.vars[name] = value
        self.emit_chan("VarSet", chan, [("Variable", name), ("Value", value)], ev.DIALPLAN)

    def set_location(self, chan: Channel, context: str, exten: str, priority: int) -> None:
        chan.context, chan.exten, chan.priority = context, exten, priority

    def newexten(self, chan: Channel, app: str, data: str) -> None:
        """Run `app` at the channel's location: Newexten only when the location changed."""
        chan.app, chan.appdata = app, data
        cep = (chan.context, chan.exten, chan.priority)
        if cep != chan.last_cep:
            chan.last_cep = cep
            self.emit_chan(
                "Newexten",
                chan,
                [("Extension", chan.exten), ("Application", app), ("AppData", data)],
                ev.DIALPLAN,
            )

    def publish_location(self, chan: Channel) -> None:
        """A snapshot with a new location but the old application (async goto in a bridge)."""
        cep = (chan.context, chan.exten, chan.priority)
        if cep != chan.last_cep:
            chan.last_cep = cep
            self.emit_chan(
                "Newexten",
                chan,
                [("Extension", chan.exten), ("Application", chan.app), ("AppData", chan.appdata)],
                ev.DIALPLAN,
            )

    def set_callerid(self, chan: Channel, num: str, name: str) -> None:
        if (chan.caller_num, chan.caller_name) == (num, name):
            return
        chan.caller_num, chan.caller_name = num, name
        self.emit_chan(
            "NewCallerid", chan, [("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")]
        )

    def set_connected(self, chan: Channel, num: str, name: str, force: bool = False) -> None:
        if (chan.conn_num, chan.conn_name) == (num, name) and not force:
            return
        chan.conn_num, chan.conn_name = num, name
        self.emit_chan("NewConnectedLine", chan)

    def answer(self, chan: Channel) -> None:
        self.set_state(chan, ev.UP)

    # -- media-ish events ----------------------------------------------------

    def moh_start(self, chan: Channel, music_class: str = "default") -> None:
        if chan.moh_class is not None:
            return
        chan.moh_class = music_class or "default"
        self.emit_chan("MusicOnHoldStart", chan, [("Class", chan.moh_class)])

    def moh_stop(self, chan: Channel) -> None:
        if chan.moh_class is None:
            return
        chan.moh_class = None
        self.emit_chan("MusicOnHoldStop", chan)

    def dtmf(self, chan: Channel, digit: str, duration_ms: int, begin: bool) -> None:
        """Publish a received DTMF digit; at the end of the digit, hand it to the application."""
        if chan.gone or chan.hangup_requested:
            return
        if begin:
            self.emit_chan(
                "DTMFBegin", chan, [("Digit", digit), ("Direction", "Received")], ev.DTMF
            )
            return
        self.emit_chan(
            "DTMFEnd",
            chan,
            [("Digit", digit), ("DurationMs", str(duration_ms)), ("Direction", "Received")],
            ev.DTMF,
        )
        if chan.want_dtmf:
            chan.post(Signal(Sig.DTMF, digit))

    def emit_qos(self, chan: Channel) -> None:
        """RTPAUDIOQOS* variables when the RTP session ends (simplified values)."""
        if chan.qos_sent or chan.answered_at is None or chan.tech != "PJSIP":
            return
        chan.qos_sent = True
        if not self.config.qos_variables:
            return
        peer = chan.peer()
        seconds = max(0.0, self.clock.elapsed() - chan.answered_at)
        packets = int(seconds * 50)
        values = _qos_values(packets)
        for suffix, value in values:
            self.set_var(chan, "RTPAUDIOQOS" + suffix, value)
            if peer is not None and not peer.gone:
                self.set_var(peer, "RTPAUDIOQOS" + suffix + "BRIDGED", value)

    # -- hangups -----------------------------------------------------------

    def remote_hangup(
        self, chan: Channel, cause: int | None = None, techcause: int | None = None
    ) -> None:
        """The phone sent BYE (or rejected an INVITE with `cause`)."""
        if chan.gone or chan.hangup_requested:
            return
        if chan.up:
            self.emit_qos(chan)
        if cause is not None:
            chan.hangupcause = cause
            chan.techcause = techcause
        extra: Headers = []
        if chan.hangupcause:
            extra.append(("Cause", str(chan.hangupcause)))
            if chan.techcause is not None:
                extra.append(("TechCause", str(chan.techcause)))
        self.emit_chan("HangupRequest", chan, extra)
        chan.hangup_requested = True
        if chan.bridge is not None and not chan.hangupcause:
            chan.hangupcause = 16
        self._interrupt(chan)

    def soft_hangup(self, chan: Channel, flag: int = 16, cause: int | None = None) -> None:
        """A local hangup request (AMI Hangup, AGI HANGUP): SoftHangupRequest and unwind."""
        if chan.gone:
            return
        if cause is not None:
            chan.hangupcause = cause
        deferred = chan.bridge is not None and chan.pbx_kind == "dialplan" and flag == 16
        if not deferred:
            self.emit_chan("SoftHangupRequest", chan, [("Cause", str(flag))])
            if flag == 16:
                chan.soft16_sent = True
        chan.hangup_requested = True
        self._interrupt(chan)

    def _interrupt(self, chan: Channel) -> None:
        """Make whoever drives the channel notice a hangup request."""
        self.moh_stop_if_playing(chan)
        if chan.agi is not None:
            chan.agi.channel_interrupted()
        if chan.pbx_generation and chan.pbx_kind:
            chan.wake()
            return
        if chan.bridge is not None:
            self.bridge_leave(chan, hangup=True)
            return
        owner = chan.dial_owner
        if owner is not None and not owner.gone:
            owner.post(Signal(Sig.CALLEE_GONE, source=chan))
            return
        self.hangup(chan)

    def moh_stop_if_playing(self, chan: Channel) -> None:
        if chan.moh_class is not None and not chan.held:
            self.moh_stop(chan)

    def pbx_end_softhangup(self, chan: Channel) -> None:
        if not chan.soft16_sent:
            chan.soft16_sent = True
            self.emit_chan("SoftHangupRequest", chan, [("Cause", "16")])

    def hangup(self, chan: Channel) -> None:
        """Destroy the channel: Hangup event, device state, phone notified (BYE/CANCEL)."""
        if chan.gone:
            return
        chan.cancel_timers()
        chan.hangup_requested = True
        if chan.bridge is not None:
            self.bridge_leave(chan, hangup=True, destroying=True)
        for spy in list(chan.spied_by):
            spy.wake()
        if chan.mixmonitor is not None:
            chan.mixmonitor = None
            self.emit_chan("MixMonitorStop", chan)
        if chan.moh_class is not None:
            chan.moh_class = None
            self.emit_chan("MusicOnHoldStop", chan)
        if chan.up:
            self.emit_qos(chan)
        extra: Headers = [
            ("Cause", str(chan.hangupcause)),
            ("Cause-txt", ev.cause_text(chan.hangupcause)),
        ]
        if chan.techcause is not None:
            extra.append(("TechCause", str(chan.techcause)))
        self.emit_chan("Hangup", chan, extra)
        chan.gone = True
        self.channels.pop(chan.name, None)
        self.by_uniqueid.pop(chan.uniqueid, None)
        if chan.agi is not None:
            chan.agi.channel_interrupted()
        for callback in chan.on_gone:
            callback(chan)
        chan.on_gone.clear()
        endpoint = chan.endpoint
        if endpoint is not None:
            endpoint.channels.discard(chan)
            self.update_device(endpoint, chan)
            if endpoint.phone is not None:
                endpoint.phone.on_hangup(self, chan)
        owner = chan.dial_owner
        if owner is not None and not owner.gone:
            owner.post(Signal(Sig.CALLEE_GONE, source=chan))
        other = chan.local_peer
        if other is not None and not other.gone:
            # The two halves of a Local channel live and die together.
            chan.local_peer = other.local_peer = None
            if not other.hangupcause:
                other.hangupcause = chan.hangupcause
            self.soft_hangup(other, 16)

    # -- async goto ----------------------------------------------------------

    def async_goto(self, chan: Channel, context: str, exten: str, priority: int) -> None:
        """Redirect / BlindTransfer target: the channel continues at a new location."""
        if chan.bridge is not None:
            # In a bridge the location is applied (and published) at once, with
            # the application it is still in (INDEX 17).
            bridge = chan.bridge
            self.bridge_clear_peers(bridge, first=chan)
            self.set_location(chan, context, exten, priority)
            self.publish_location(chan)
            chan.goto_target = (context, exten, priority)
            if not chan.pbx_kind:
                # A dialled leg without a PBX: leave the bridge and start one.
                self.bridge_leave(chan, cleared=True)
                chan.goto_target = None
                self._start_pbx_at(chan, context, exten, priority)
                return
            self.bridge_leave(chan, cleared=True)
            chan.wake()
            return
        chan.goto_target = (context, exten, priority)
        self.moh_stop_if_playing(chan)
        if chan.agi is not None:
            chan.agi.channel_interrupted()
        if chan.pbx_kind:
            chan.wake()
        else:
            chan.goto_target = None
            self._start_pbx_at(chan, context, exten, priority)

    def _start_pbx_at(self, chan: Channel, context: str, exten: str, priority: int) -> None:
        if self.start_pbx is not None:
            self.start_pbx(chan, context, exten, priority)

    # -- bridges -------------------------------------------------------------

    def create_bridge(self) -> Bridge:
        bridge = Bridge(self, str(uuid.uuid4()))
        self.bridges[bridge.id] = bridge
        self.emit("BridgeCreate", ev.CALL, bridge.snapshot())
        return bridge

    def bridge_enter(self, bridge: Bridge, chan: Channel, swap: Channel | None = None) -> None:
        if chan.bridge is not None and chan.bridge is not bridge:
            self.bridge_leave(chan)
        chan.bridge = bridge
        bridge.channels.append(chan)
        self._merge_linkedid(bridge)
        extra = [("SwapUniqueid", swap.uniqueid)] if swap is not None else []
        self.emit("BridgeEnter", ev.CALL, bridge.snapshot() + chan.snapshot() + extra)
        if chan.vars.get("BLINDTRANSFER"):
            self.set_var(chan, "BLINDTRANSFER", "")

    def _merge_linkedid(self, bridge: Bridge) -> None:
        oldest = min(bridge.channels, key=lambda c: c.linked_age)
        for member in bridge.channels:
            if member.linkedid != oldest.linkedid:
                member.linkedid = oldest.linkedid
                member.linked_age = oldest.linked_age

    def bridge_peer_round(self, bridge: Bridge) -> None:
        """BRIDGEPEER / BRIDGEPVTCALLID refreshed on every member (container order)."""
        if len(bridge.channels) != 2:
            return
        for chan in sorted(bridge.channels, key=lambda c: c.name):
            peer = chan.peer()
            if peer is None:
                continue
            self.set_var(chan, "BRIDGEPEER", peer.name)
            self.set_var(chan, "BRIDGEPVTCALLID", peer.sip_callid)

    def bridge_clear_peers(self, bridge: Bridge, first: Channel) -> None:
        if len(bridge.channels) != 2 or bridge.peers_cleared:
            return
        bridge.peers_cleared = True
        for chan in [first] + [c for c in bridge.channels if c is not first]:
            self.set_var(chan, "BRIDGEPEER", "")
            self.set_var(chan, "BRIDGEPVTCALLID", "")

    def bridge_configured(self, bridge: Bridge) -> None:
        """Both parties are in: peer variables; native RTP when no DTMF feature needs the core."""
        if bridge.destroyed:
            return
        bridge.peers_cleared = False
        self.bridge_peer_round(bridge)
        if len(bridge.channels) == 2 and not any(c.features for c in bridge.channels):
            # Switching to native_rtp reconfigures the bridge twice (INDEX: 05, 15).
            bridge.technology = "native_rtp"
            self.bridge_peer_round(bridge)
            self.bridge_peer_round(bridge)

    def bridge_leave(
        self,
        chan: Channel,
        *,
        hangup: bool = False,
        cleared: bool = False,
        destroying: bool = False,
    ) -> None:
        """Take `chan` out of its bridge; a basic bridge left with one member dissolves."""
        bridge = chan.bridge
        if bridge is None:
            return
        if not cleared:
            self.bridge_clear_peers(bridge, first=chan)
        bridge.channels.remove(chan)
        chan.bridge = None
        self.emit("BridgeLeave", ev.CALL, bridge.snapshot() + chan.snapshot())
        if hangup and not chan.pbx_kind and not destroying:
            self.hangup(chan)
        if len(bridge.channels) <= 1:
            self._dissolve(bridge)

    def _dissolve(self, bridge: Bridge) -> None:
        if bridge.destroyed:
            return
        bridge.destroyed = True
        kicked = list(bridge.channels)
        for other in kicked:
            bridge.channels.remove(other)
            other.bridge = None
            self.emit("BridgeLeave", ev.CALL, bridge.snapshot() + other.snapshot())
        self.bridges.pop(bridge.id, None)
        self.emit("BridgeDestroy", ev.CALL, bridge.snapshot())
        for other in kicked:
            self._after_bridge(other)

    def _after_bridge(self, chan: Channel) -> None:
        """A channel pushed out of a dissolved bridge."""
        if chan.gone:
            return
        if chan.pbx_kind:
            chan.post(Signal(Sig.BRIDGE_EXIT))
        elif chan.after_goto is not None:
            target, chan.after_goto = chan.after_goto, None
            self._start_pbx_at(chan, *target)
        else:
            if not chan.hangupcause:
                chan.hangupcause = 16
            self.hangup(chan)

    # -- hold (re-INVITE from a phone) ----------------------------------------

    def phone_hold(self, chan: Channel, music_class: str = "default") -> None:
        peer = chan.peer()
        if chan.bridge is not None:
            self.bridge_peer_round(chan.bridge)
        self.emit_chan("Hold", chan, [("MusicClass", music_class)])
        if peer is not None:
            peer.held = True
            peer.moh_class = None
            self.moh_start(peer, music_class)
            if peer.endpoint is not None:
                self.update_device(peer.endpoint, peer)

    def phone_unhold(self, chan: Channel) -> None:
        peer = chan.peer()
        self.emit_chan("Unhold", chan)
        if chan.bridge is not None:
            self.bridge_peer_round(chan.bridge)
        if peer is not None and peer.held:
            peer.held = False
            self.moh_stop(peer)
            if peer.endpoint is not None:
                self.update_device(peer.endpoint, peer)

    # -- device state ----------------------------------------------------------

    @staticmethod
    def _device_kind(chan: Channel) -> str:
        """What one channel contributes to its endpoint's device state."""
        if chan.gone:
            return ""
        if chan.held:
            return "ONHOLD"
        if chan.state == ev.RINGING:
            return "RINGING"
        if chan.state in (ev.UP, ev.RING):
            return "INUSE"
        if chan.state == ev.BUSY:
            return "BUSY"
        return ""

    def device_state_of(self, endpoint: Endpoint) -> str:
        """ast_devstate_aggregate over the endpoint's channels (counted, not scanned)."""
        counts = endpoint.kinds
        ringing = counts.get("RINGING", 0) > 0
        if ringing and (counts.get("INUSE", 0) or counts.get("ONHOLD", 0)):
            return "RINGINUSE"
        for state in ("RINGING", "INUSE", "ONHOLD", "BUSY"):
            if counts.get(state, 0) > 0:
                return state
        return "NOT_INUSE" if endpoint.registered else "UNAVAILABLE"

    def update_device(self, endpoint: Endpoint, chan: Channel | None = None) -> None:
        """Recount `chan` (a trunk carries thousands of channels: no scans), publish changes."""
        if chan is not None:
            kind = "" if chan.endpoint is not endpoint else self._device_kind(chan)
            if kind != chan.device_kind:
                if chan.device_kind:
                    endpoint.kinds[chan.device_kind] -= 1
                if kind:
                    endpoint.kinds[kind] = endpoint.kinds.get(kind, 0) + 1
                chan.device_kind = kind
        state = self.device_state_of(endpoint)
        if state != endpoint.device_state:
            first = endpoint.device_state == ""
            endpoint.device_state = state
            if not first:
                self.emit(
                    "DeviceStateChange", ev.CALL, [("Device", endpoint.device), ("State", state)]
                )

    # -- registration ----------------------------------------------------------

    def register(self, endpoint: Endpoint) -> None:
        if endpoint.registered:
            return
        endpoint.registered = True
        endpoint.registered_at = self.clock.time()
        self._announce_contact(endpoint, "Reachable", "NonQualified")

    def unregister(self, endpoint: Endpoint) -> None:
        if not endpoint.registered:
            return
        endpoint.registered = False
        self._announce_contact(endpoint, "Unreachable", "Removed")

    def _announce_contact(self, endpoint: Endpoint, peer_status: str, contact_status: str) -> None:
        """PeerStatus, the device's new state, then ContactStatus, as on a REGISTER (04)."""
        self.emit(
            "PeerStatus",
            ev.SYSTEM,
            [("ChannelType", "PJSIP"), ("Peer", endpoint.device), ("PeerStatus", peer_status)],
        )
        self.update_device(endpoint)
        self.emit(
            "ContactStatus",
            ev.SYSTEM,
            [
                ("URI", endpoint.contact_uri),
                ("ContactStatus", contact_status),
                ("AOR", endpoint.name),
                ("EndpointName", endpoint.name),
                ("RoundtripUsec", "0"),
            ],
        )

    # -- lookups for AMI -------------------------------------------------------

    def channels_sorted(self) -> list[Channel]:
        return sorted(self.channels.values(), key=lambda c: c.name)


def _qos_values(packets: int) -> list[tuple[str, str]]:
    return [
        (
            "",
            f"ssrc=1295489512;themssrc=3390111744;lp=0;rxjitter=0.000000;rxcount={packets};"
            f"txjitter=0.000375;txcount={packets};rlp=0;rtt=0.000000;rxmes=0.000000;"
            "txmes=0.000000",
        ),
        (
            "JITTER",
            "minrxjitter=000.000000;maxrxjitter=000.000500;avgrxjitter=000.000280;"
            "stdevrxjitter=000.000128;mintxjitter=000.000000;maxtxjitter=000.000000;"
            "avgtxjitter=000.000000;stdevtxjitter=000.000000;",
        ),
        (
            "LOSS",
            "  minrxlost=000.000000;  maxrxlost=000.000000;  avgrxlost=000.000000;  "
            "stdevrxlost=000.000000;  mintxlost=000.000000;  maxtxlost=000.000000;  "
            "avgtxlost=000.000000;  stdevtxlost=000.000000;",
        ),
        (
            "RTT",
            "     minrtt=000.000000;     maxrtt=000.000000;     avgrtt=000.000000;     "
            "stdevrtt=000.000000;",
        ),
        (
            "MES",
            "   minrxmes=000.000000;   maxrxmes=000.000000;   avgrxmes=000.000000;   "
            "stdevrxmes=000.000000;   mintxmes=000.000000;   maxtxmes=000.000000;   "
            "avgtxmes=000.000000;   stdevtxmes=000.000000;",
        ),
    ]
