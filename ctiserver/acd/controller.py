"""Call controller: routing decisions become AMI actions, Asterisk events become routing inputs.

How a waiting caller is connected to an agent (chosen with the transcripts):
the caller stays in its FastAGI session (music, announcements, "press 1 for
a callback") while the controller originates the agent's leg into
`[cti-hold]` with a `ChannelId` it chose, and on answer joins both with AMI
`Bridge` (05). Compared with the alternatives:

- AMI Redirect into `Dial()` (04, 06, 07) takes the caller out of FastAGI
  before the agent answers: the caller hears ringing instead of the queue,
  the ring timeout is fixed in the dialplan, and every RONA needs a second
  FastAGI session (`after-dial`) to bring the caller back.
- Async AGI (12) polls commands every ~100 ms and its hang-up only shows as
  AsyncAGIExec/AsyncAGIEnd events: slower offers, no gain.
- Originate + Bridge keeps the caller's queue experience until the agent
  really answered, lets each queue choose its ring timeout (Originate
  `Timeout`), and names the agent leg up front (ChannelId), so the ring, the
  answer and the hang-up are recognised by Uniqueid without lookups. Its
  quirk (05): Bridge pulls the caller out of FastAGI with a masquerade that
  looks like a hang-up on the socket (`result=-1`, `HANGUP`); the controller
  knows it issued the Bridge, so that session end is not an abandonment.

Outcomes of the agent leg (05, 05c): OriginateResponse Success = answered;
Reason 3 = still ringing at the timeout (no answer); Reason 0 = busy (a
channel had been created: Newchannel with our ChannelId) or unreachable (no
channel at all). Asterisk reports busy as 0, not 5 (05c).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ctiserver.acd.config import AcdConfig
from ctiserver.acd.criteria import format_call_criteria
from ctiserver.acd.decisions import (
    AgentStateChanged,
    CallbackOffered,
    CallEnded,
    CallLeft,
    Decision,
    Offer,
    OfferWithdrawn,
)
from ctiserver.acd.engine import RoutingEngine
from ctiserver.acd.errors import IllegalTransition
from ctiserver.acd.journal import call_event, criteria_payload, decision_event
from ctiserver.acd.model import (
    AgentState,
    CallOutcome,
    CallRequest,
    OfferFailure,
    QueueConfig,
)
from ctiserver.acd.prompts import Prompts
from ctiserver.asterisk.agi.session import AgiCommandError, AgiHangup, AgiSession
from ctiserver.asterisk.ami.client import AmiClient, OriginateResult
from ctiserver.asterisk.ami.codec import Message
from ctiserver.asterisk.ami.errors import AmiError
from ctiserver.lifecycle import Service
from ctiserver.store.events import Event, EventLog

log = logging.getLogger(__name__)

# Channel variables shared with the shipped dialplan (dialplans/extensions.conf).
STATE_VARIABLE = "CTI_QUEUE_STATE"
QUEUE_VARIABLE = "CTI_QUEUE"
ENQUEUED_AT_VARIABLE = "CTI_ENQUEUED_AT"
PRIORITY_VARIABLE = "CTI_PRIORITY"
PREFERRED_AGENT_VARIABLE = "CTI_PREFERRED_AGENT"
# The call's own requirements and conditions (criteria.format_call_criteria).
REQUIREMENTS_VARIABLE = "CTI_REQUIREMENTS"

DecisionListener = Callable[[Decision], None]
# Runs a callback after a delay in the controller clock's seconds; the handle cancels it.
TimerScheduler = Callable[[float, Callable[[], None]], asyncio.TimerHandle]


def _loop_call_later(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, callback)


# Called once per agent leg with its offer and the real seconds from the routing
# decision to Asterisk's `Newstate Ringing` of that leg (05): the offer latency.
RingingListener = Callable[[Offer, float], None]


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    hold_context: str = "cti-hold"
    hold_exten: str = "agent"
    outbound_context: str = "cti-outbound"
    # How often the waiting caller's FastAGI loop looks at its call (ms).
    poll_ms: int = 1000
    # Recordings, relative to Asterisk's monitor spool (11: /var/spool/asterisk/monitor).
    recording_prefix: str = "cti-"
    # Voicemail left in a queue: RECORD FILE needs an existing folder, so the
    # monitor spool every Asterisk has.
    voicemail_dir: str = "/var/spool/asterisk/monitor"
    voicemail_prefix: str = "cti-vm-"
    voicemail_max_s: int = 120
    # Seconds an Originate may take beyond its ring timeout before we give up on it.
    originate_grace_s: float = 5.0
    prompts: Prompts = field(default_factory=Prompts)


@dataclass(eq=False)
class AgentLeg:
    """One ring of an agent's phone for one call (one Offer)."""

    offer: Offer
    uniqueid: str  # the ChannelId we gave the Originate
    channel: str | None = None  # learnt from Newchannel / OriginateResponse
    created: bool = False  # a channel existed (tells busy from unreachable)
    withdrawn: bool = False
    answered: bool = False
    # perf_counter() when the offer was decided, for the offer latency (until Ringing).
    offered_at: float = field(default_factory=time.perf_counter)
    rang: bool = False


@dataclass(eq=False)
class LiveCall:
    """A call the controller is handling: waiting, ringing an agent, or talking."""

    call_id: str  # the caller channel's Uniqueid
    queue: str
    caller: str
    channel: str | None  # None once a callback's caller hung up
    session: AgiSession | None = None
    leg: AgentLeg | None = None
    connecting: bool = False  # our Bridge is taking the caller out of FastAGI
    talking: bool = False
    ended: bool = False
    callback_offered: bool = False
    callback_prompted: bool = False
    outcome: CallOutcome | None = None  # VOICEMAIL / CLOSED: the waiting loop acts on it
    uniqueids: list[str] = field(default_factory=list)  # its keys in _by_uniqueid
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class CallController(Service):
    """Owns the routing engine and every live call; the only writer of ACD state."""

    def __init__(
        self,
        config: AcdConfig,
        ami: AmiClient,
        *,
        events: EventLog | None = None,
        settings: ControllerSettings | None = None,
        clock: Callable[[], float] = time.time,
        call_later: TimerScheduler | None = None,
    ) -> None:
        """`clock` gives every instant the controller journals and routes with;
        `call_later(seconds, callback)` runs its routing timers (ring steps, wrap-up)
        after that many of the clock's seconds: the loop's timers by default, the
        emulator's clock in `ctiserver simulate`."""
        self.config = config
        self.ami = ami
        self.events = events
        self.settings = settings or ControllerSettings()
        self.clock = clock
        self._call_later = call_later or _loop_call_later
        self._timer_due = False
        self.engine = RoutingEngine(config.queues, config.agents, skills=config.skills)
        self.calls: dict[str, LiveCall] = {}
        self._by_uniqueid: dict[str, LiveCall] = {}  # caller and agent-leg uniqueids
        self._legs: dict[str, AgentLeg] = {}  # agent legs being originated, by ChannelId
        self._listeners: list[DecisionListener] = []
        self._ringing_listeners: list[RingingListener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        # Waiting callers of a previous process, until they resume or vanish.
        self._awaiting_resume: dict[str, str] = {}
        # Agent legs a previous process left ringing: hung up on the next AMI login.
        self._stale_legs: set[str] = set()
        self._rearm = asyncio.Event()
        self._subscriptions = [
            ami.subscribe("Newchannel", self._on_newchannel),
            ami.subscribe("Hangup", self._on_hangup),
            ami.subscribe("Newstate", self._on_newstate),
        ]
        ami.add_resync_hook(self._reconcile_with_asterisk)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self._timer is None:
            self._timer = asyncio.create_task(self._run_timer(), name="acd-timer")

    async def close(self) -> None:
        for subscription in self._subscriptions:
            subscription.unsubscribe()
        tasks = [t for t in (self._timer, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._timer = None
        self._tasks.clear()

    def add_listener(self, listener: DecisionListener) -> None:
        """Called with every decision, in order (the desktop's screen-pop uses Offer)."""
        self._listeners.append(listener)

    def add_ringing_listener(self, listener: RingingListener) -> None:
        """Called when an agent's phone starts ringing (the /metrics offer latency)."""
        self._ringing_listeners.append(listener)

    def queue_config(self, name: str) -> QueueConfig:
        return self.config.queue(name)

    # -- agent inputs (the desktop calls these) ------------------------------------

    def login(self, agent_id: str) -> list[Decision]:
        return self._apply(self.engine.login(agent_id, self.clock()))

    def logout(self, agent_id: str) -> list[Decision]:
        return self._apply(self.engine.logout(agent_id, self.clock()))

    def make_available(self, agent_id: str) -> list[Decision]:
        return self._apply(self.engine.make_available(agent_id, self.clock()))

    def make_not_ready(self, agent_id: str, reason: str) -> list[Decision]:
        return self._apply(self.engine.make_not_ready(agent_id, reason, self.clock()))

    def end_wrap_up(self, agent_id: str) -> list[Decision]:
        return self._apply(self.engine.end_wrap_up(agent_id, self.clock()))

    def reconfigure(self, config: AcdConfig) -> list[Decision]:
        self.config = config
        return self._apply(
            self.engine.configure(config.queues, config.agents, self.clock(), skills=config.skills)
        )

    # -- callers (FastAGI) -------------------------------------------------------------

    async def serve_caller(self, session: AgiSession, request: CallRequest) -> CallOutcome | None:
        """Hold the caller in `request.queue` until an agent takes it or it leaves.

        Runs inside the caller's FastAGI session (the IVR's queue step or the
        `queue` script). Returns how the caller's stay ended; None when
        ctiserver is shutting down (the dialplan then resumes the caller).
        KeyError for an unknown queue, ValueError for criteria the engine
        refuses (RoutingEngine.check_request), before anything is said or logged.
        """
        self.queue_config(request.queue)  # KeyError: unknown queue
        self.engine.check_request(request)
        channel = session.env.channel
        now = self.clock()
        virtual = request.virtual_enqueued_at if request.virtual_enqueued_at is not None else now
        virtual = round(virtual, 3)  # what CTI_ENQUEUED_AT can carry, so a resume is exact
        request = replace(request, virtual_enqueued_at=virtual)
        self._awaiting_resume.pop(request.call_id, None)
        live = self.calls.get(request.call_id)
        if live is not None and not live.ended and live.session is None and live.channel:
            # The same caller back after its FastAGI session dropped (ctiserver
            # stayed up): reattach, it never left the engine.
            live.session = session
        else:
            # The dialplan resumes a caller that was "waiting" when ctiserver
            # went away; these variables give it back its place (dialplans/).
            for name, value in (
                (QUEUE_VARIABLE, request.queue),
                (ENQUEUED_AT_VARIABLE, f"{virtual:.3f}"),
                (PRIORITY_VARIABLE, str(request.priority)),
                (PREFERRED_AGENT_VARIABLE, request.preferred_agent or ""),
                (
                    REQUIREMENTS_VARIABLE,
                    format_call_criteria(request.requirements, request.conditions),
                ),
                (STATE_VARIABLE, "waiting"),
            ):
                await session.set_variable(name, value)
            live = LiveCall(request.call_id, request.queue, request.caller, channel, session)
            self._track(live, session.env.uniqueid or request.call_id)
            self.journal(_caller_entered(request, channel, now))
            try:
                self._apply(self.engine.enqueue(request, now))
            except (KeyError, ValueError):
                self._forget(live)  # refused (unknown queue, duplicate call): not tracked
                raise
        try:
            return await self._wait_in_queue(live)
        except AgiHangup:
            if live.channel is None:
                return CallOutcome.CALLBACK  # hung up after leaving a number: kept
            if live.connecting or live.talking:
                return CallOutcome.ANSWERED  # our Bridge took the caller (05)
            self._caller_gone(live)
            return CallOutcome.ABANDONED
        except asyncio.CancelledError:
            # ctiserver is stopping: the caller keeps its place through the
            # dialplan's resume loop; only the session is detached.
            live.session = None
            raise
        finally:
            if live.session is session:
                live.session = None

    async def _wait_in_queue(self, live: LiveCall) -> CallOutcome | None:
        session = live.session
        assert session is not None
        settings = self.settings
        music_on = False
        next_announcement = self.clock()
        while True:
            queue = self.queue_config(live.queue)  # an overflow may have moved the call
            if live.talking:
                return CallOutcome.ANSWERED
            if live.connecting:
                # Our Bridge is on its way: hold the session until it takes the caller
                # (AgiHangup, 05). Ending it now would run the dialplan after AGI()
                # with CTI_QUEUE_STATE "connected", which hangs the caller up before
                # the Bridge gets there.
                await session.wait_for_digit(settings.poll_ms)
                continue
            if live.outcome is not None:
                await self._finish_in_queue(live, session)
                return live.outcome
            if live.ended:
                return CallOutcome.ABANDONED
            key: str | None = None
            if live.callback_offered and not live.callback_prompted:
                live.callback_prompted = True
                music_on = await self._music(session, music_on, False, queue)
                key = await self._play(session, settings.prompts.callback_offer, "1")
            elif queue.announce_every_s > 0 and self.clock() >= next_announcement:
                next_announcement = self.clock() + queue.announce_every_s
                music_on = await self._music(session, music_on, False, queue)
                key = await self._announce(live, session)
            if key is None:
                music_on = await self._music(session, music_on, True, queue)
                if live.connecting or live.talking or live.outcome is not None:
                    continue
                key = await session.wait_for_digit(settings.poll_ms)
            wants_callback = key == "1" and live.callback_offered and not live.connecting
            if wants_callback and await self._take_callback(live, session):
                return CallOutcome.CALLBACK

    async def _music(
        self, session: AgiSession, playing: bool, wanted: bool, queue: QueueConfig
    ) -> bool:
        if playing != wanted:
            await session.set_music(wanted, queue.music_class if wanted else None)
        return wanted

    async def _play(self, session: AgiSession, files: Iterable[str], escape: str) -> str | None:
        for file in files:
            key, _ = await session.stream_file(file, escape)
            if key is not None:
                return key
        return None

    async def _announce(self, live: LiveCall, session: AgiSession) -> str | None:
        """Position and estimated wait, worded as app_queue does."""
        try:
            position = self.engine.position(live.call_id)
        except KeyError:
            return None  # no longer waiting
        prompts = self.settings.prompts
        escape = "1" if live.callback_offered else ""
        if position <= 1:
            key = await self._play(session, [prompts.you_are_next], escape)
        else:
            key = await self._play(session, [prompts.there_are], escape)
            key = key or await session.say_number(position - 1, escape)
            key = key or await self._play(session, [prompts.calls_waiting], escape)
        if key:
            return key
        wait = self.engine.estimated_wait(live.queue, position, self.clock(), call_id=live.call_id)
        if wait is None or wait <= 0:
            return None
        minutes = round(wait / 60)
        key = await self._play(session, [prompts.hold_time], escape)
        if minutes < 1:
            key = key or await self._play(session, [prompts.less_than], escape)
            minutes = 1
        key = key or await session.say_number(minutes, escape)
        return key or await self._play(session, [prompts.minutes], escape)

    async def _take_callback(self, live: LiveCall, session: AgiSession) -> bool:
        """The caller pressed 1: keep the place in line, call back, let the caller go.

        False when the caller stays on the line instead: no usable number, or
        an agent is already ringing for this call.
        """
        prompts = self.settings.prompts
        number = "".join(ch for ch in live.caller if ch.isdigit())
        if len(number) < 3:  # anonymous or junk caller id: ask for the number
            number = await session.get_data(prompts.callback_enter_number, 7000, 20) or ""
        if len(number) < 3:
            live.callback_prompted = False  # no number: stay in line, offer again later
            return False
        try:
            decisions = self.engine.convert_to_callback(live.call_id, number, self.clock())
        except IllegalTransition:
            return False  # offered meanwhile: the agent's answer is moments away
        self.journal(
            call_event(
                "callback_requested",
                live.call_id,
                self.clock(),
                {"number": number},
                queue=live.queue,
            )
        )
        self._apply(decisions)
        # From here the call is a kept callback: the caller's channel ending
        # is expected, not an abandonment.
        self._by_uniqueid.pop(session.env.uniqueid or live.call_id, None)
        live.session = None
        live.channel = None
        await session.set_variable(STATE_VARIABLE, "done")
        await self._play(session, [prompts.callback_confirmed], "")
        await session.hangup()
        return True

    async def _finish_in_queue(self, live: LiveCall, session: AgiSession) -> None:
        """Voicemail or closing message: the call's stay in the queue is over."""
        prompts = self.settings.prompts
        await session.set_variable(STATE_VARIABLE, "done")
        await session.set_music(False)
        if live.outcome is CallOutcome.VOICEMAIL:
            await self._play(session, [prompts.voicemail_intro], "")
            settings = self.settings
            path = f"{settings.voicemail_dir}/{settings.voicemail_prefix}{live.call_id}"
            try:
                _, samples = await session.record_file(
                    path, "wav", "#", settings.voicemail_max_s * 1000, beep=True, silence=5
                )
            except AgiCommandError as exc:
                log.error("voicemail of %s not recorded: %s", live.call_id, exc)
            else:
                self.journal(
                    call_event(
                        "voicemail",
                        live.call_id,
                        self.clock(),
                        {"file": f"{path}.wav", "samples": samples},
                        queue=live.queue,
                    )
                )
            await self._play(session, [prompts.goodbye], "")
        else:
            await self._play(session, [prompts.closed, prompts.goodbye], "")
        self._forget(live)
        await session.hangup()

    def _caller_gone(self, live: LiveCall) -> None:
        """The caller hung up (waiting or while an agent rang): tell the engine."""
        if live.ended or live.talking:
            return
        # KeyError: its stay had already ended (closed, voicemail).
        with contextlib.suppress(KeyError):
            self._apply(self.engine.caller_left(live.call_id, self.clock()))
        self._forget(live)

    # -- decisions ----------------------------------------------------------------------------

    def _apply(self, decisions: list[Decision]) -> list[Decision]:
        for decision in decisions:
            leg_id = None
            if isinstance(decision, Offer):
                leg_id = self._start_offer(decision)
            self.journal(decision_event(decision, agent_leg=leg_id))
            match decision:
                case OfferWithdrawn():
                    self._withdraw(decision)
                case CallbackOffered():
                    live = self.calls.get(decision.call_id)
                    if live is not None:
                        live.callback_offered = True
                case CallLeft(outcome=CallOutcome.OVERFLOWED, target_queue=target):
                    live = self.calls.get(decision.call_id)
                    if live is not None and target:
                        live.queue = target
                case CallLeft(outcome=CallOutcome.VOICEMAIL | CallOutcome.CLOSED):
                    live = self.calls.get(decision.call_id)
                    if live is not None:
                        live.outcome = decision.outcome
                        if live.session is None:
                            self._forget(live)  # a callback nobody could serve
                case CallEnded():
                    live = self.calls.get(decision.call_id)
                    if live is not None:
                        self._forget(live)
            for listener in self._listeners:
                try:
                    listener(decision)
                except Exception:
                    log.exception("ACD listener failed on %r", decision)
        self._rearm.set()
        return decisions

    def journal(self, event: Event) -> None:
        if self.events is not None:
            self.events.append(event)

    def _track(self, live: LiveCall, uniqueid: str) -> None:
        self.calls[live.call_id] = live
        self._watch(live, uniqueid)

    def _watch(self, live: LiveCall, uniqueid: str) -> None:
        """Route AMI events of channel `uniqueid` (caller or agent leg) to `live`."""
        self._by_uniqueid[uniqueid] = live
        live.uniqueids.append(uniqueid)

    def _forget(self, live: LiveCall) -> None:
        live.ended = True
        if self.calls.get(live.call_id) is live:
            del self.calls[live.call_id]
        for key in live.uniqueids:
            if self._by_uniqueid.get(key) is live:
                del self._by_uniqueid[key]

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ACD task %s failed", task.get_name(), exc_info=task.exception())

    # -- ringing the agent ----------------------------------------------------------------

    def _start_offer(self, offer: Offer) -> str | None:
        live = self.calls.get(offer.call_id)
        if live is None:
            log.error("offer for unknown call %s: declining", offer.call_id)
            return None
        leg = AgentLeg(offer, f"cti-leg-{uuid.uuid4().hex[:20]}")
        live.leg = leg
        self._watch(live, leg.uniqueid)
        self._legs[leg.uniqueid] = leg
        self._spawn(self._ring(live, leg), f"acd-ring-{offer.call_id}")
        return leg.uniqueid

    async def _ring(self, live: LiveCall, leg: AgentLeg) -> None:
        try:
            await self._ring_until_outcome(live, leg)
        finally:
            # The OriginateResponse comes after Newchannel (05): no later
            # event needs the leg by its id, except a talking call's Hangup.
            self._legs.pop(leg.uniqueid, None)

    async def _ring_until_outcome(self, live: LiveCall, leg: AgentLeg) -> None:
        offer = leg.offer
        try:
            result = await self._originate(live, leg)
        except (AmiError, TimeoutError) as exc:
            log.warning(
                "originate to %s for %s failed: %s",
                offer.endpoint,
                live.call_id,
                exc,
                extra={"call_id": live.call_id, "agent_id": offer.agent_id, "queue": offer.queue},
            )
            await self._hangup_leg(leg)
            self._leg_failed(live, leg, OfferFailure.UNREACHABLE)
            return
        if result.channel and result.success:
            leg.channel = result.channel
        if leg.withdrawn or live.leg is not leg:
            await self._hangup_leg(leg)  # answered too late: the offer is gone
            return
        if not result.success:
            if result.reason == 3:
                failure = OfferFailure.NO_ANSWER
            elif leg.created:
                failure = OfferFailure.BUSY
            else:
                failure = OfferFailure.UNREACHABLE
            self._leg_failed(live, leg, failure)
            return
        leg.answered = True
        if offer.callback_number is not None:
            self._connected(live, leg)
            return
        await self._bridge(live, leg)

    async def _originate(self, live: LiveCall, leg: AgentLeg) -> OriginateResult:
        offer = leg.offer
        settings = self.settings
        timeout = offer.ring_timeout_s + self.ami.config.action_timeout + settings.originate_grace_s
        variables = {"CTI_CALL_ID": live.call_id, "CTI_QUEUE": offer.queue}
        if offer.callback_number is not None:
            # The agent's phone rings first; once answered the dialplan calls the customer (15).
            return await self.ami.originate(
                offer.endpoint,
                context=settings.outbound_context,
                exten=offer.callback_number,
                priority=1,
                caller_id=f'"Callback" <{offer.callback_number}>',
                ring_timeout=offer.ring_timeout_s,
                channel_id=leg.uniqueid,
                variables=variables,
                timeout=timeout,
            )
        if live.channel:
            variables["CTI_CALLER_CHANNEL"] = live.channel
        return await self.ami.originate(
            offer.endpoint,
            context=settings.hold_context,
            exten=settings.hold_exten,
            priority=1,
            caller_id=_caller_id(offer.caller),
            ring_timeout=offer.ring_timeout_s,
            channel_id=leg.uniqueid,
            variables=variables,
            timeout=timeout,
        )

    async def _bridge(self, live: LiveCall, leg: AgentLeg) -> None:
        assert leg.channel is not None and live.channel is not None
        live.connecting = True
        try:
            # Before the Bridge: when the bridge ends the caller runs the
            # dialplan after AGI(), which must hang up, not resume (dialplans/).
            await self.ami.action(
                "Setvar",
                {"Channel": live.channel, "Variable": STATE_VARIABLE, "Value": "connected"},
            )
            result = await self.ami.action(
                "Bridge", {"Channel1": live.channel, "Channel2": leg.channel, "Tone": "no"}
            )
        except (AmiError, TimeoutError) as exc:
            log.warning(
                "bridge of %s failed: %s",
                live.call_id,
                exc,
                extra={
                    "call_id": live.call_id,
                    "agent_id": leg.offer.agent_id,
                    "queue": live.queue,
                },
            )
            result = None
        if result is None or not result.ok:
            # The caller left between the answer and the Bridge.
            live.connecting = False
            await self._hangup_leg(leg)
            self._caller_gone(live)
            return
        self._connected(live, leg)
        if self.queue_config(live.queue).record:
            await self._record(live)

    def _connected(self, live: LiveCall, leg: AgentLeg) -> None:
        live.talking = True
        live.connecting = False
        self.journal(
            call_event(
                "connected",
                live.call_id,
                self.clock(),
                {
                    "caller_channel": live.channel,
                    "agent_channel": leg.channel,
                    "agent_leg": leg.uniqueid,
                    "callback_number": leg.offer.callback_number,
                },
                agent_id=leg.offer.agent_id,
                queue=live.queue,
            )
        )
        self._apply(self.engine.offer_accepted(live.call_id, self.clock()))

    async def _record(self, live: LiveCall) -> None:
        """MixMonitor on the caller channel, `b`: only while bridged (11)."""
        assert live.channel is not None
        file = f"{self.settings.recording_prefix}{live.call_id}.wav"
        try:
            result = await self.ami.action(
                "MixMonitor", {"Channel": live.channel, "File": file, "Options": "b"}
            )
        except (AmiError, TimeoutError) as exc:
            log.warning("recording of %s not started: %s", live.call_id, exc)
            return
        if not result.ok:
            log.warning("recording of %s refused: %s", live.call_id, result.message)
            return
        self.journal(
            call_event(
                "recording",
                live.call_id,
                self.clock(),
                {"channel": live.channel, "file": file},
                queue=live.queue,
            )
        )

    def _leg_failed(self, live: LiveCall, leg: AgentLeg, failure: OfferFailure) -> None:
        if leg.withdrawn or live.leg is not leg or live.ended:
            return
        live.leg = None
        self.journal(
            call_event(
                "offer_failed",
                live.call_id,
                self.clock(),
                {"failure": failure.value, "agent_leg": leg.uniqueid},
                agent_id=leg.offer.agent_id,
                queue=live.queue,
            )
        )
        self._apply(self.engine.offer_failed(live.call_id, failure, self.clock()))

    def _withdraw(self, withdrawn: OfferWithdrawn) -> None:
        live = self.calls.get(withdrawn.call_id)
        if live is None or live.leg is None:
            return
        leg, live.leg = live.leg, None
        leg.withdrawn = True
        if leg.channel is not None:
            self._spawn(self._hangup_leg(leg), f"acd-cancel-{leg.uniqueid}")

    async def _hangup_leg(self, leg: AgentLeg) -> None:
        if leg.channel is None:
            return  # never created, or Newchannel still to come (_on_newchannel hangs it up)
        await self._hangup_channel(leg.channel)

    async def _hangup_channel(self, channel: str) -> None:
        try:
            await self.ami.action("Hangup", {"Channel": channel, "Cause": "16"})
        except (AmiError, TimeoutError) as exc:
            log.warning("could not hang up %s: %s", channel, exc)

    # -- Asterisk events ----------------------------------------------------------------------

    def _on_newchannel(self, message: Message) -> None:
        uniqueid = message.get("Uniqueid") or ""
        leg = self._legs.get(uniqueid)
        if leg is None:
            return
        leg.channel = message.get("Channel")
        leg.created = True
        if leg.withdrawn:  # withdrawn before Asterisk even created it
            self._spawn(self._hangup_leg(leg), f"acd-cancel-{uniqueid}")
            return
        self.journal(
            call_event(
                "agent_ringing",
                leg.offer.call_id,
                self.clock(),
                {"agent_channel": leg.channel, "agent_leg": uniqueid},
                agent_id=leg.offer.agent_id,
                queue=leg.offer.queue,
            )
        )

    def _on_newstate(self, message: Message) -> None:
        leg = self._legs.get(message.get("Uniqueid") or "")
        if leg is None or leg.rang or message.get("ChannelStateDesc") != "Ringing":
            return
        leg.rang = True
        elapsed = time.perf_counter() - leg.offered_at
        for listener in self._ringing_listeners:
            try:
                listener(leg.offer, elapsed)
            except Exception:
                log.exception("ACD ringing listener failed for %s", leg.uniqueid)

    def _on_hangup(self, message: Message) -> None:
        uniqueid = message.get("Uniqueid") or ""
        live = self._by_uniqueid.get(uniqueid)
        if live is None:
            self._resume_lost(uniqueid)
            return
        if live.leg is not None and live.leg.uniqueid == uniqueid and not live.talking:
            live.leg.created = True
            return  # a ringing leg ended: the OriginateResponse tells why
        if live.talking:
            self._call_over(live)
        elif uniqueid != (live.leg.uniqueid if live.leg else None) and live.session is None:
            # The caller's channel is gone while no FastAGI session holds it
            # (between sessions, or a restored call): it left.
            self._caller_gone(live)

    def _call_over(self, live: LiveCall) -> None:
        if live.ended:
            return
        live.ended = True
        self._apply(self.engine.call_ended(live.call_id, self.clock()))
        self._forget(live)

    # -- timer ------------------------------------------------------------------------------------

    async def _run_timer(self) -> None:
        while True:
            deadline = self.engine.next_deadline()
            self._rearm.clear()
            self._timer_due = False
            handle = None
            if deadline is not None:
                handle = self._call_later(max(0.0, deadline - self.clock()), self._deadline_due)
            try:
                await self._rearm.wait()
            finally:
                if handle is not None:
                    handle.cancel()
            if not self._timer_due:
                continue  # new decisions: the next deadline may have changed
            try:
                self._apply(self.engine.tick(self.clock()))
            except Exception:
                log.exception("ACD tick failed")

    def _deadline_due(self) -> None:
        self._timer_due = True
        self._rearm.set()

    # -- recovery -----------------------------------------------------------------------------

    async def _reconcile_with_asterisk(self, client: AmiClient) -> None:
        """After every AMI (re)login: end calls whose channels vanished meanwhile.

        Asterisk replays nothing after a drop (13); a Hangup missed while the
        link was down would leave an agent on a call that no longer exists.
        """
        try:
            result = await client.action("CoreShowChannels")
        except (AmiError, TimeoutError) as exc:
            log.warning("ACD reconciliation skipped, no channel list: %s", exc)
            return
        live_ids = {item.get("Uniqueid") or "" for item in result.items}
        for call_id in [c for c in self._awaiting_resume if c not in live_ids]:
            self._resume_lost(call_id)
        for item in result.items:
            if (item.get("Uniqueid") or "") in self._stale_legs:
                await self._hangup_channel(item.get("Channel") or "")
        self._stale_legs.clear()
        for live in list(self.calls.values()):
            leg_id = live.leg.uniqueid if live.leg else None
            if live.talking and live.call_id not in live_ids and leg_id not in live_ids:
                self._call_over(live)
            elif (
                not live.talking
                and live.session is None
                and live.channel is not None
                and live.call_id not in live_ids
            ):
                self._caller_gone(live)

    def restore_talking(
        self,
        call_id: str,
        queue: str,
        agent_id: str,
        answered_at: float,
        *,
        caller: str,
        caller_channel: str | None,
        agent_leg: str | None,
    ) -> None:
        """A call the log shows connected: the agent stays on it until Asterisk says otherwise."""
        self.engine.restore_talking(call_id, queue, agent_id, answered_at, caller=caller)
        live = LiveCall(call_id, queue, caller, caller_channel, talking=True)
        self._track(live, call_id)
        if agent_leg:
            self._watch(live, agent_leg)

    # -- hooks for agent call controls (call_controls.py) ------------------------------

    def end_talk(self, call_id: str) -> bool:
        """End a talking call now, as its Hangup would (the agent goes to wrap-up).

        For a transfer: the caller leaves for another queue or agent before the
        agent leg's Hangup arrives. False when no such call is talking.
        """
        live = self.calls.get(call_id)
        if live is None or not live.talking or live.ended:
            return False
        self._call_over(live)
        return True

    def start_talk(
        self,
        call_id: str,
        queue: str,
        agent_id: str,
        *,
        caller: str,
        caller_channel: str | None,
        agent_leg: str,
        reason: str,
    ) -> None:
        """An agent is on a call the ACD did not offer (click-to-dial, a transfer to them).

        The engine holds it like an answered call (its end brings wrap-up);
        the agent's transition is journaled and told to listeners with `reason`.
        A Hangup of `agent_leg` or of the caller's channel ends it. Raises
        IllegalTransition when the agent is ringing or on a call already.
        """
        previous = self.engine.agent(agent_id).state
        now = self.clock()
        self.engine.restore_talking(call_id, queue, agent_id, now, caller=caller)
        live = LiveCall(call_id, queue, caller, caller_channel, talking=True)
        self._track(live, call_id)
        if agent_leg != call_id:
            self._watch(live, agent_leg)
        changed = AgentStateChanged(agent_id, AgentState.ON_CALL, previous, reason, call_id, now)
        self._apply([changed])

    def restore_callback(self, request: CallRequest) -> None:
        """A kept callback back in line at its original virtual enqueue time."""
        live = LiveCall(request.call_id, request.queue, request.caller, None)
        self.calls[live.call_id] = live
        self._apply(self.engine.enqueue(request, self.clock()))

    def request_callback(self, request: CallRequest) -> bool:
        """A caller who left `request.callback_number` instead of waiting (the IVR).

        The call is kept in line as a callback, journaled as if the caller had
        pressed 1 while waiting (caller_entered, then callback_requested), so
        recovery keeps it across a restart. False, with nothing kept, when the
        request is refused (no number, unknown queue, criteria the engine
        refuses, a call already here) or the queue turns it away at once
        (closed or unstaffed: closing or voicemail, which a callback cannot use).
        """
        number = request.callback_number
        try:
            if not number:
                raise ValueError("a callback needs a number")
            self.queue_config(request.queue)
            self.engine.check_request(request)
            if request.call_id in self.calls:
                raise ValueError(f"call {request.call_id!r} is already handled")
        except (KeyError, ValueError) as exc:
            log.error("callback for %s refused: %s", request.call_id, exc)
            return False
        now = self.clock()
        virtual = request.virtual_enqueued_at if request.virtual_enqueued_at is not None else now
        request = replace(request, virtual_enqueued_at=round(virtual, 3))
        live = LiveCall(request.call_id, request.queue, request.caller, None)
        self.calls[live.call_id] = live  # before the decisions: an Offer looks it up
        try:
            decisions = self.engine.enqueue(request, now)
        except ValueError as exc:  # the engine still has a call of that id
            del self.calls[live.call_id]
            log.error("callback for %s refused: %s", request.call_id, exc)
            return False
        self.journal(_caller_entered(request, None, now))
        self.journal(
            call_event(
                "callback_requested", live.call_id, now, {"number": number}, queue=live.queue
            )
        )
        self._apply(decisions)
        turned_away = (CallOutcome.CLOSED, CallOutcome.VOICEMAIL)
        return not any(
            isinstance(d, CallLeft) and d.call_id == live.call_id and d.outcome in turned_away
            for d in decisions
        )

    def expect_resume(self, call_id: str, queue: str) -> None:
        """A caller that was waiting when the previous process ended.

        It comes back through the dialplan's resume loop (then serve_caller
        takes it); if its channel is gone instead, it is recorded as abandoned.
        """
        self._awaiting_resume[call_id] = queue

    def silence_stale_leg(self, uniqueid: str) -> None:
        """An agent leg of a dead offer: hang it up if Asterisk still has it."""
        self._stale_legs.add(uniqueid)

    def journal_call_end(self, call_id: str, queue: str, agent_id: str, now: float) -> None:
        """Close a logged call whose end was missed (ctiserver was down when it ended)."""
        self.journal(
            call_event(
                "call_ended",
                call_id,
                now,
                {"talk_s": None, "reason": "ended while ctiserver was away"},
                agent_id=agent_id,
                queue=queue,
            )
        )

    def _resume_lost(self, call_id: str) -> None:
        queue = self._awaiting_resume.pop(call_id, None)
        if queue is not None:
            self.journal(
                call_event(
                    "call_left",
                    call_id,
                    self.clock(),
                    {
                        "outcome": CallOutcome.ABANDONED.value,
                        "target_queue": None,
                        "reason": "left while ctiserver was away",
                    },
                    queue=queue,
                )
            )

    def agent_state(self, agent_id: str) -> AgentState:
        return self.engine.agent(agent_id).state


def _caller_id(caller: str) -> str:
    """What the agent's phone shows: the caller's number (CallerID header)."""
    return f'"{caller}" <{caller}>' if caller else '"Caller" <>'


def _caller_entered(request: CallRequest, channel: str | None, now: float) -> Event:
    """What recovery rebuilds a waiting call from (recovery._OPEN_WAITS)."""
    return call_event(
        "caller_entered",
        request.call_id,
        now,
        {
            "caller": request.caller,
            "channel": channel,
            "priority": request.priority,
            "virtual_enqueued_at": request.virtual_enqueued_at,
            "preferred_agent": request.preferred_agent,
            **criteria_payload(request.requirements, request.conditions),
        },
        queue=request.queue,
    )
