"""Call controls an agent's desktop asks for: hang up, hold, unhold, blind transfer,
click-to-dial, the agent's current calls and a feed of their progress.

Each control is an async method that returns a `ControlResult` once Asterisk
accepted the action, or raises `CallControlError` with a message an agent can
read ("no call", "already on hold", "Asterisk refused: ..."). The ACD's state
(agent on call, wrap-up) changes through the CallController exactly as for a
phone's own actions; the controls only add the AMI actions and the journal
entries (`acd.hold`, `acd.unhold`, `acd.transferred`, `acd.outbound_started`,
`acd.outbound_answered`, see journal.py).

Which transcript each step rests on (shared/asterisk/scenarios):

- hang_up: AMI `Hangup` of the agent leg (01: `Response: Success`, `Channel
  Hungup`; 08b ends a call the same way). The agent leg's `Hangup` event then
  ends the call in the controller as when the phone hangs up (05: the caller
  leaves the bridge and runs the dialplan after AGI(), which hangs it up).
- hold: a phone's hold is a re-INVITE with no AMI action (09), so the CTI
  hold button is one AMI `Redirect` that moves both legs out of the bridge at
  once: `Channel` = the customer to `[cti-held]` (music on hold), `ExtraChannel`
  = the agent leg to `[cti-agent-held]` (silence). Redirecting only the
  customer would end the agent leg: 08c shows the remaining party of a
  bridge left alone and hung up. Unhold bridges both again with AMI `Bridge`
  (05: Bridge pulls each channel out of the application it runs).
  NOT covered by any transcript: `Redirect` with `ExtraChannel` (no scenario
  uses it), a `Bridge` of two channels that were bridged before, and what
  MixMonitor option `b` (11) records across the hold (it records only while
  bridged, so the hold is left out). The emulator implements them as
  Asterisk's manager.c does.
- holds from the phone: `Hold` / `Unhold` events on the agent leg (09) set
  the call's `on_hold` too (held_by "phone"); the CTI cannot resume those
  (no AMI action does a phone's re-INVITE) and says so.
- blind_transfer: AMI `Redirect` of the customer's channel (08c), in or out
  of a bridge; the agent leg is then hung up (08c shows Asterisk does it for
  a dialled leg; an originated leg in `[cti-hold]` would run on to its
  Hangup(), a held one waits in `[cti-agent-held]`, so we send `Hangup`
  ourselves and ignore "No such channel"). Redirect generates no transfer
  event (08a/08c): `acd.transferred` {from_agent, target_kind, target} is
  journaled here. Targets:
  * a queue: `Setvar CTI_TRANSFER_QUEUE`, Redirect to `[cti-transfer-queue]`,
    whose FastAGI `queue` script starts a new stay in that queue (caller
    entered, queued, ... as any call; no place kept).
  * an agent: rung directly by Redirect to `[cti-transfer-agent]` exten
    `agentNNNN`, `Dial(...,20,t)` as `[cti-agent]` does (04, 08c). Not
    through the ACD's offer path: the engine cannot offer a call to one named
    agent. So that the ACD does not offer the target another call meanwhile,
    the target must be available and is made not-ready ("transfer") while it
    rings; `DialEnd` ANSWER (04, 08c: Channel = the caller, Dest* = the
    agent leg) puts the target on the call (acd.connected, then wrap-up after
    it like any answered call); any other DialStatus (06, 07) makes the
    target available again and the dialplan sends the caller back to its
    queue (`CTI_QUEUE`) for a new stay.
  * an external number: Redirect to `[cti-transfer]` (the IVR's transfer
    context: more than four digits go out over the trunk).
  The transferring agent's call ends at once (CallController.end_talk):
  wrap-up, and the caller's next FastAGI session is a new call to the ACD.
- click_to_dial: AMI `Originate` of the agent's endpoint into
  `[cti-outbound]` with the customer's number as Exten (15: agent leg first,
  then the dialplan dials the customer over the trunk; `DialEnd` with
  Channel = the agent leg tells the customer answered). We add a `ChannelId`
  (05) so the agent leg is known before it answers. The agent is on the call
  from the click (CallController.start_talk, reason "outbound call") until
  the agent leg's Hangup; wrap-up follows as after any call. The events
  `acd.outbound_started` / `acd.outbound_answered` carry the same call id
  (the agent leg's ChannelId) as the `acd.agent_state` and `acd.call_ended`
  of the call, so metrics can tell outbound from inbound. No transcript
  covers an agent leg that never answers in this pattern; 05c shows the
  Originate outcomes it then gets (Reason 3 / 0).

Cases no transcript covers, handled conservatively: the caller hanging up
while held by the CTI (its Hangup ends the call; we hang up the agent leg
waiting in `[cti-agent-held]`), the agent's phone hanging up while the
customer is held (we hang up the customer), a transfer requested while the
customer is held (the Redirect takes the customer from `[cti-held]`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ctiserver.acd.controller import CallController
from ctiserver.acd.decisions import AgentStateChanged, CallEnded, Decision, Offer
from ctiserver.acd.errors import IllegalTransition
from ctiserver.acd.journal import call_event
from ctiserver.acd.model import AgentState
from ctiserver.asterisk.ami.client import ActionResult
from ctiserver.asterisk.ami.codec import Message
from ctiserver.asterisk.ami.errors import AmiError
from ctiserver.lifecycle import Service

log = logging.getLogger(__name__)

# Dialplan contexts of dialplans/extensions.conf.
HELD_CONTEXT = "cti-held"
AGENT_HELD_CONTEXT = "cti-agent-held"
TRANSFER_QUEUE_CONTEXT = "cti-transfer-queue"
TRANSFER_AGENT_CONTEXT = "cti-transfer-agent"
TRANSFER_NUMBER_CONTEXT = "cti-transfer"
TRANSFER_QUEUE_VARIABLE = "CTI_TRANSFER_QUEUE"
# [cti-transfer-agent] dials for 20 s; then the caller goes back to its queue.
TRANSFER_RING_S = 20.0
TRANSFER_REASON = "transfer"
OUTBOUND_REASON = "outbound call"
# [cti-transfer] sends four digits to an agent phone: an external number is longer.
MIN_EXTERNAL_DIGITS = 5


class CallControlError(Exception):
    """A control the agent asked for cannot be done; `str()` is for the agent to read.

    `code` is stable for programs: no_call, not_your_call, already_on_hold,
    not_on_hold, held_by_phone, not_logged_in, busy, bad_number,
    unknown_target, target_unavailable, in_progress, refused, unreachable,
    no_answer.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ProgressStage(StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    ON_HOLD = "on_hold"
    OFF_HOLD = "off_hold"
    TRANSFERRED = "transferred"
    ENDED = "ended"


class TransferKind(StrEnum):
    QUEUE = "queue"
    AGENT = "agent"
    NUMBER = "number"


@dataclass(frozen=True, slots=True)
class TransferTarget:
    kind: TransferKind
    value: str  # queue name, agent id or phone number

    @classmethod
    def queue(cls, name: str) -> TransferTarget:
        return cls(TransferKind.QUEUE, name)

    @classmethod
    def agent(cls, agent_id: str) -> TransferTarget:
        return cls(TransferKind.AGENT, agent_id)

    @classmethod
    def number(cls, number: str) -> TransferTarget:
        return cls(TransferKind.NUMBER, number)


@dataclass(frozen=True, slots=True)
class CallProgress:
    """One step of a call as an agent's desktop shows it."""

    agent_id: str
    call_id: str
    stage: ProgressStage
    at: float
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallInfo:
    """An agent's current call: ringing (answered_at None) or answered."""

    call_id: str
    agent_id: str
    caller: str  # the caller's number; the dialled number of an outbound call
    queue: str
    direction: str  # "inbound" | "outbound"
    answered_at: float | None
    on_hold: bool
    held_by: str | None  # "cti" | "phone" | None


@dataclass(frozen=True, slots=True)
class ControlResult:
    """What a control did: the call and the AMI action Asterisk accepted."""

    agent_id: str
    call_id: str
    action: str
    detail: Mapping[str, Any] = field(default_factory=dict)


ProgressListener = Callable[[CallProgress], None]


@dataclass(eq=False)
class _Talk:
    """An answered call of one agent, with both of its channels once known."""

    call_id: str
    agent_id: str
    queue: str
    caller: str
    direction: str
    answered_at: float
    agent_uid: str | None = None
    agent_channel: str | None = None
    customer_uid: str | None = None
    customer_channel: str | None = None
    held_by: str | None = None


class _Talks:
    """The answered calls by call id, with the look-ups Asterisk events and desktops
    need (by the agent leg's Uniqueid or channel, by agent): at 50 calls/s a scan
    of every talk per Newchannel was 7 % of the server's time."""

    def __init__(self) -> None:
        self._by_call: dict[str, _Talk] = {}
        self._by_agent_uid: dict[str, _Talk] = {}
        self._by_agent_channel: dict[str, _Talk] = {}
        self._by_agent: dict[str, dict[str, _Talk]] = {}

    def __len__(self) -> int:
        return len(self._by_call)

    def get(self, call_id: str) -> _Talk | None:
        return self._by_call.get(call_id)

    def put(self, talk: _Talk) -> None:
        self.pop(talk.call_id)
        self._by_call[talk.call_id] = talk
        self._by_agent.setdefault(talk.agent_id, {})[talk.call_id] = talk
        if talk.agent_uid:
            self._by_agent_uid[talk.agent_uid] = talk
        if talk.agent_channel:
            self._by_agent_channel[talk.agent_channel] = talk

    def pop(self, call_id: str) -> _Talk | None:
        talk = self._by_call.pop(call_id, None)
        if talk is None:
            return None
        calls = self._by_agent.get(talk.agent_id, {})
        calls.pop(call_id, None)
        if not calls:
            self._by_agent.pop(talk.agent_id, None)
        if talk.agent_uid and self._by_agent_uid.get(talk.agent_uid) is talk:
            del self._by_agent_uid[talk.agent_uid]
        if talk.agent_channel and self._by_agent_channel.get(talk.agent_channel) is talk:
            del self._by_agent_channel[talk.agent_channel]
        return talk

    def set_agent_channel(self, talk: _Talk, channel: str) -> None:
        talk.agent_channel = channel
        if self._by_call.get(talk.call_id) is talk:
            self._by_agent_channel[channel] = talk

    def by_agent_uid(self, uniqueid: str) -> _Talk | None:
        return self._by_agent_uid.get(uniqueid)

    def by_agent_channel(self, channel: str) -> _Talk | None:
        return self._by_agent_channel.get(channel)

    def of_agent(self, agent_id: str) -> list[_Talk]:
        return list(self._by_agent.get(agent_id, {}).values())


@dataclass(eq=False)
class _PendingTransfer:
    """A caller redirected to an agent's phone, until its Dial ends."""

    call_id: str
    target: str  # agent id
    endpoint: str  # "PJSIP/agent1002"
    customer_channel: str
    customer_uid: str
    queue: str
    caller: str
    timer: asyncio.Task[None] | None = None


class CallControls(Service):
    """Agent call controls on top of a CallController (one per controller)."""

    def __init__(self, controller: CallController) -> None:
        self.controller = controller
        self.ami = controller.ami
        self._talks = _Talks()
        self._transfers: dict[str, _PendingTransfer] = {}  # by caller channel
        self._listeners: list[ProgressListener] = []
        self._busy: set[str] = set()  # agents with a control in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        controller.add_listener(self._on_decision)
        self._subscriptions = [
            self.ami.subscribe("Newchannel", self._on_newchannel),
            self.ami.subscribe("Hold", self._on_hold),
            self.ami.subscribe("Unhold", self._on_unhold),
            self.ami.subscribe("DialEnd", self._on_dial_end),
        ]

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for subscription in self._subscriptions:
            subscription.unsubscribe()
        self._subscriptions = []
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def add_progress_listener(self, listener: ProgressListener) -> None:
        """Called synchronously with every CallProgress, in order."""
        self._listeners.append(listener)

    # -- state ---------------------------------------------------------------------

    def calls(self, agent_id: str) -> list[CallInfo]:
        """The agent's current calls: the one ringing or answered (at most one today)."""
        out = [
            CallInfo(
                talk.call_id,
                agent_id,
                talk.caller,
                talk.queue,
                talk.direction,
                talk.answered_at,
                talk.held_by is not None,
                talk.held_by,
            )
            for talk in self._talks.of_agent(agent_id)
        ]
        if not out:
            view = self.controller.engine.agent(agent_id)
            if view.state is AgentState.RESERVED and view.call_id is not None:
                live = self.controller.calls.get(view.call_id)
                caller = live.caller if live is not None else ""
                queue = view.queue or (live.queue if live is not None else "")
                out.append(
                    CallInfo(view.call_id, agent_id, caller, queue, "inbound", None, False, None)
                )
        return out

    # -- controls ------------------------------------------------------------------

    async def hang_up(self, agent_id: str) -> ControlResult:
        """Hang up the agent's call (AMI Hangup of the agent leg); wrap-up follows."""
        with self._exclusive(agent_id):
            talk = self._talk_of(agent_id)
            channel = self._need(talk.agent_channel, "your phone's channel is not known yet")
            await self._act("Hangup", {"Channel": channel, "Cause": "16"})
            return ControlResult(agent_id, talk.call_id, "Hangup", {"channel": channel})

    async def hold(self, agent_id: str) -> ControlResult:
        """Customer to music, agent leg to silence: one Redirect with ExtraChannel."""
        with self._exclusive(agent_id):
            talk = self._talk_of(agent_id)
            if talk.held_by is not None:
                raise CallControlError("already_on_hold", "the call is already on hold")
            customer = self._need(talk.customer_channel, "the customer is not connected yet")
            agent = self._need(talk.agent_channel, "your phone's channel is not known yet")
            await self._act(
                "Redirect",
                {
                    "Channel": customer,
                    "Context": HELD_CONTEXT,
                    "Exten": "s",
                    "Priority": "1",
                    "ExtraChannel": agent,
                    "ExtraContext": AGENT_HELD_CONTEXT,
                    "ExtraExten": "s",
                    "ExtraPriority": "1",
                },
            )
            self._set_hold(talk, "cti")
            return ControlResult(agent_id, talk.call_id, "Redirect", {"channel": customer})

    async def unhold(self, agent_id: str) -> ControlResult:
        """Bridge the held customer and the agent leg again (AMI Bridge, 05)."""
        with self._exclusive(agent_id):
            talk = self._talk_of(agent_id)
            if talk.held_by is None:
                raise CallControlError("not_on_hold", "the call is not on hold")
            if talk.held_by == "phone":
                raise CallControlError(
                    "held_by_phone", "the call is on hold at your phone: resume it there"
                )
            customer = self._need(talk.customer_channel, "the customer is gone")
            agent = self._need(talk.agent_channel, "your phone's channel is gone")
            await self._act("Bridge", {"Channel1": customer, "Channel2": agent, "Tone": "no"})
            self._set_hold(talk, None)
            return ControlResult(agent_id, talk.call_id, "Bridge", {"channel": customer})

    async def blind_transfer(self, agent_id: str, target: TransferTarget) -> ControlResult:
        """Send the customer to a queue, an agent or a number; the agent's call ends."""
        with self._exclusive(agent_id):
            talk = self._talk_of(agent_id)
            customer = self._need(talk.customer_channel, "the customer is not connected yet")
            kind = TransferKind(target.kind)
            pending: _PendingTransfer | None = None
            if kind is TransferKind.QUEUE:
                try:
                    self.controller.queue_config(target.value)
                except KeyError:
                    raise CallControlError(
                        "unknown_target", f"there is no queue {target.value!r}"
                    ) from None
                await self._act(
                    "Setvar",
                    {
                        "Channel": customer,
                        "Variable": TRANSFER_QUEUE_VARIABLE,
                        "Value": target.value,
                    },
                )
                context, exten, value = TRANSFER_QUEUE_CONTEXT, "s", target.value
            elif kind is TransferKind.AGENT:
                pending = self._reserve_target(talk, target.value, customer)
                context, value = TRANSFER_AGENT_CONTEXT, target.value
                exten = pending.endpoint.removeprefix("PJSIP/")
                self._transfers[customer] = pending
            else:
                exten = _external_number(target.value)
                context, value = TRANSFER_NUMBER_CONTEXT, exten
            try:
                if pending is not None:
                    # Back to this queue if the target does not answer ([cti-transfer-agent]).
                    await self._act(
                        "Setvar",
                        {"Channel": customer, "Variable": "CTI_QUEUE", "Value": talk.queue},
                    )
                await self._act(
                    "Redirect",
                    {"Channel": customer, "Context": context, "Exten": exten, "Priority": "1"},
                )
            except CallControlError:
                if pending is not None:
                    self._release_target(pending, "transfer failed")
                raise
            self._transferred(talk, kind, value)
            if pending is not None:
                pending.timer = self._spawn(
                    self._transfer_deadline(pending), f"acd-transfer-{talk.call_id}"
                )
                self._emit(
                    pending.target, talk.call_id, ProgressStage.RINGING, {"caller": talk.caller}
                )
            if talk.agent_channel:
                await self._hangup_quietly(talk.agent_channel)
            detail = {"target_kind": kind.value, "target": value, "context": context}
            return ControlResult(agent_id, talk.call_id, "Redirect", detail)

    async def click_to_dial(self, agent_id: str, number: str) -> ControlResult:
        """Ring the agent's phone, then the dialplan calls `number` (15)."""
        digits = "".join(ch for ch in number if ch.isdigit())
        if not digits:
            raise CallControlError("bad_number", f"{number!r} has no digits to dial")
        with self._exclusive(agent_id):
            controller = self.controller
            try:
                view = controller.engine.agent(agent_id)
                agent = controller.config.agent(agent_id)
            except KeyError:
                raise CallControlError("unknown_target", f"unknown agent {agent_id!r}") from None
            if view.state is AgentState.LOGGED_OUT:
                raise CallControlError("not_logged_in", "log in before dialling")
            if view.state not in (AgentState.AVAILABLE, AgentState.NOT_READY):
                raise CallControlError("busy", f"you cannot dial while {view.state.value}")
            if not agent.queues:
                raise CallControlError("refused", "you serve no queue to place the call in")
            queue = controller.queue_config(agent.queues[0])
            leg = f"cti-out-{uuid.uuid4().hex[:20]}"
            now = controller.clock()
            talk = _Talk(leg, agent_id, queue.name, digits, "outbound", now, agent_uid=leg)
            self._talks.put(talk)
            controller.journal(
                call_event(
                    "outbound_started",
                    leg,
                    now,
                    {"number": digits, "endpoint": agent.endpoint, "agent_leg": leg},
                    agent_id=agent_id,
                    queue=queue.name,
                )
            )
            try:
                controller.start_talk(
                    leg,
                    queue.name,
                    agent_id,
                    caller=digits,
                    caller_channel=None,
                    agent_leg=leg,
                    reason=OUTBOUND_REASON,
                )
            except (IllegalTransition, KeyError) as exc:
                self._talks.pop(leg)
                raise CallControlError("busy", f"you cannot dial now: {exc}") from None
        # The exclusive section ends here: the agent may hang up while it rings.
        ami = self.ami
        timeout = queue.ring_timeout_s + ami.config.action_timeout + 5.0
        try:
            result = await ami.originate(
                agent.endpoint,
                context=controller.settings.outbound_context,
                exten=digits,
                priority=1,
                caller_id=f'"Call {digits}" <{digits}>',
                ring_timeout=queue.ring_timeout_s,
                channel_id=leg,
                variables={"CTI_CALL_ID": leg, "CTI_QUEUE": queue.name},
                timeout=timeout,
            )
        except (AmiError, TimeoutError) as exc:
            controller.end_talk(leg)
            raise CallControlError("unreachable", f"Asterisk unreachable: {exc}") from None
        if not result.success:
            controller.end_talk(leg)
            if (result.response.get("Response") or "").lower() != "success":
                raise CallControlError("refused", f"Asterisk refused: {result.message}")
            raise CallControlError("no_answer", "your phone did not answer")
        if result.channel:
            talk.agent_channel = result.channel
        self._emit(agent_id, leg, ProgressStage.RINGING, {"party": "customer", "number": digits})
        return ControlResult(agent_id, leg, "Originate", {"channel": talk.agent_channel})

    # -- helpers -----------------------------------------------------------------------

    def _exclusive(self, agent_id: str) -> _Exclusive:
        return _Exclusive(self._busy, agent_id)

    def _talk_of(self, agent_id: str) -> _Talk:
        talks = self._talks.of_agent(agent_id)
        if talks:
            return talks[0]
        try:
            view = self.controller.engine.agent(agent_id)
        except KeyError:
            raise CallControlError("unknown_target", f"unknown agent {agent_id!r}") from None
        if view.state is AgentState.RESERVED:
            raise CallControlError("no_call", "your phone is ringing: answer it first")
        raise CallControlError("no_call", "no call")

    @staticmethod
    def _need(value: str | None, why: str) -> str:
        if not value:
            raise CallControlError("no_call", why)
        return value

    async def _act(self, action: str, headers: dict[str, str]) -> ActionResult:
        try:
            result = await self.ami.action(action, headers)
        except (AmiError, TimeoutError) as exc:
            raise CallControlError("unreachable", f"Asterisk unreachable: {exc}") from None
        if not result.ok:
            raise CallControlError("refused", f"Asterisk refused: {result.message}")
        return result

    async def _hangup_quietly(self, channel: str) -> None:
        try:
            await self.ami.action("Hangup", {"Channel": channel, "Cause": "16"})
        except (AmiError, TimeoutError) as exc:
            log.warning("could not hang up %s: %s", channel, exc)

    def _set_hold(self, talk: _Talk, by: str | None) -> None:
        was, talk.held_by = talk.held_by, by
        now = self.controller.clock()
        kind = "hold" if by is not None else "unhold"
        self.controller.journal(
            call_event(
                kind,
                talk.call_id,
                now,
                {"by": by or was},
                agent_id=talk.agent_id,
                queue=talk.queue,
            )
        )
        stage = ProgressStage.ON_HOLD if by is not None else ProgressStage.OFF_HOLD
        self._emit(talk.agent_id, talk.call_id, stage, {"by": by or was})

    def _transferred(self, talk: _Talk, kind: TransferKind, target: str) -> None:
        controller = self.controller
        # Forgotten first: this call's end must not hang up the transferred customer.
        self._talks.pop(talk.call_id)
        controller.journal(
            call_event(
                "transferred",
                talk.call_id,
                controller.clock(),
                {
                    "from_agent": talk.agent_id,
                    "target_kind": kind.value,
                    "target": target,
                    "caller_channel": talk.customer_channel,
                },
                agent_id=talk.agent_id,
                queue=talk.queue,
            )
        )
        detail = {"target_kind": kind.value, "target": target}
        self._emit(talk.agent_id, talk.call_id, ProgressStage.TRANSFERRED, detail)
        # Before the caller's next FastAGI session can arrive with the same call id.
        controller.end_talk(talk.call_id)

    def _reserve_target(self, talk: _Talk, target: str, customer: str) -> _PendingTransfer:
        controller = self.controller
        try:
            agent = controller.config.agent(target)
        except KeyError:
            raise CallControlError("unknown_target", f"there is no agent {target!r}") from None
        if target == talk.agent_id:
            raise CallControlError("unknown_target", "you cannot transfer a call to yourself")
        exten = agent.endpoint.removeprefix("PJSIP/")
        if not agent.endpoint.startswith("PJSIP/agent") or not exten[len("agent") :]:
            raise CallControlError("refused", f"agent {target}'s phone cannot take transfers")
        if controller.agent_state(target) is not AgentState.AVAILABLE:
            raise CallControlError("target_unavailable", f"agent {target} is not available")
        if talk.customer_uid is None:
            raise CallControlError("no_call", "the customer is not connected yet")
        controller.make_not_ready(target, TRANSFER_REASON)
        return _PendingTransfer(
            talk.call_id,
            target,
            agent.endpoint,
            customer,
            talk.customer_uid,
            talk.queue,
            talk.caller,
        )

    def _release_target(self, pending: _PendingTransfer, why: str) -> None:
        """The transfer did not reach the target: available again, as before."""
        if self._transfers.get(pending.customer_channel) is pending:
            del self._transfers[pending.customer_channel]
        if pending.timer is not None and pending.timer is not asyncio.current_task():
            pending.timer.cancel()
        view = self.controller.engine.agent(pending.target)
        if view.state is AgentState.NOT_READY and view.reason == TRANSFER_REASON:
            self.controller.make_available(pending.target)
        self._emit(pending.target, pending.call_id, ProgressStage.ENDED, {"reason": why})

    async def _transfer_deadline(self, pending: _PendingTransfer) -> None:
        await asyncio.sleep(TRANSFER_RING_S + self.ami.config.action_timeout + 5.0)
        if self._transfers.get(pending.customer_channel) is pending:
            self._release_target(pending, "no answer")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call control task %s failed", task.get_name(), exc_info=task.exception())

    def _emit(
        self, agent_id: str, call_id: str, stage: ProgressStage, detail: Mapping[str, Any]
    ) -> None:
        progress = CallProgress(agent_id, call_id, stage, self.controller.clock(), dict(detail))
        for listener in self._listeners:
            try:
                listener(progress)
            except Exception:
                log.exception("call progress listener failed on %r", progress)

    # -- what the ACD decided ------------------------------------------------------------

    def _on_decision(self, decision: Decision) -> None:
        if self._closed:
            return
        match decision:
            case Offer():
                detail = {"queue": decision.queue, "caller": decision.caller}
                if decision.callback_number is not None:
                    detail["callback_number"] = decision.callback_number
                self._emit(decision.agent_id, decision.call_id, ProgressStage.RINGING, detail)
            case AgentStateChanged(state=AgentState.ON_CALL, call_id=str() as call_id):
                self._answered(decision, call_id)
            case AgentStateChanged(previous=AgentState.RESERVED, call_id=str() as call_id):
                detail = {"reason": decision.reason or decision.state.value}
                self._emit(decision.agent_id, call_id, ProgressStage.ENDED, detail)
            case CallEnded():
                self._ended(decision)

    def _answered(self, decision: AgentStateChanged, call_id: str) -> None:
        talk = self._talks.get(call_id)
        if talk is not None and talk.agent_id == decision.agent_id:
            return  # ours (click-to-dial, transfer): already described
        live = self.controller.calls.get(call_id)
        if live is None:
            return
        talk = _Talk(call_id, decision.agent_id, live.queue, live.caller, "inbound", decision.at)
        if live.leg is not None:
            talk.agent_uid = live.leg.uniqueid
            talk.agent_channel = live.leg.channel
        if live.channel is not None:
            talk.customer_uid = call_id  # the caller channel's Uniqueid
            talk.customer_channel = live.channel
        self._talks.put(talk)
        self._emit(decision.agent_id, call_id, ProgressStage.ANSWERED, {"queue": live.queue})

    def _ended(self, decision: CallEnded) -> None:
        talk = self._talks.get(decision.call_id)
        if talk is None or talk.agent_id != decision.agent_id:
            return
        self._talks.pop(decision.call_id)
        if talk.held_by == "cti":
            # One side hung up while held: the other waits in [cti-held] or
            # [cti-agent-held] for nobody (no transcript covers it).
            for channel in (talk.customer_channel, talk.agent_channel):
                if channel:
                    self._spawn(self._hangup_quietly(channel), f"acd-held-hangup-{channel}")
        detail = {"talk_s": round(decision.talk_s, 3)}
        self._emit(decision.agent_id, decision.call_id, ProgressStage.ENDED, detail)

    # -- Asterisk events --------------------------------------------------------------------

    def _on_newchannel(self, message: Message) -> None:
        talk = self._talks.by_agent_uid(message.get("Uniqueid") or "")
        channel = message.get("Channel")
        if talk is None or talk.agent_channel is not None or not channel:
            return
        self._talks.set_agent_channel(talk, channel)
        if talk.direction == "outbound":
            self._emit(talk.agent_id, talk.call_id, ProgressStage.RINGING, {"party": "agent"})

    def _on_hold(self, message: Message) -> None:
        """The agent's phone put the call on hold (re-INVITE sendonly, 09)."""
        talk = self._talks.by_agent_uid(message.get("Uniqueid") or "")
        if talk is not None and talk.held_by is None:
            self._set_hold(talk, "phone")

    def _on_unhold(self, message: Message) -> None:
        talk = self._talks.by_agent_uid(message.get("Uniqueid") or "")
        if talk is not None and talk.held_by == "phone":
            self._set_hold(talk, None)

    def _on_dial_end(self, message: Message) -> None:
        channel = message.get("Channel") or ""
        status = message.get("DialStatus") or ""
        dest_channel = message.get("DestChannel") or ""
        dest_uid = message.get("DestUniqueid") or ""
        pending = self._transfers.get(channel)
        if pending is not None and dest_channel.startswith(pending.endpoint + "-"):
            if status == "ANSWER":
                self._transfer_answered(pending, dest_channel, dest_uid)
            else:
                self._release_target(pending, status.lower() or "not answered")
            return
        if status != "ANSWER" or not channel:
            return
        talk = self._talks.by_agent_channel(channel)
        if talk is None or talk.customer_channel is not None:
            return
        # Click-to-dial or callback: the customer answered (15).
        talk.customer_channel, talk.customer_uid = dest_channel, dest_uid
        if talk.direction == "outbound":
            self.controller.journal(
                call_event(
                    "outbound_answered",
                    talk.call_id,
                    self.controller.clock(),
                    {"number": talk.caller, "customer_channel": dest_channel},
                    agent_id=talk.agent_id,
                    queue=talk.queue,
                )
            )
        detail = {"party": "customer", "number": talk.caller}
        self._emit(talk.agent_id, talk.call_id, ProgressStage.ANSWERED, detail)

    def _transfer_answered(self, pending: _PendingTransfer, leg: str, leg_uid: str) -> None:
        del self._transfers[pending.customer_channel]
        if pending.timer is not None:
            pending.timer.cancel()
        controller = self.controller
        talk = _Talk(
            pending.call_id,
            pending.target,
            pending.queue,
            pending.caller,
            "inbound",
            controller.clock(),
            agent_uid=leg_uid,
            agent_channel=leg,
            customer_uid=pending.customer_uid,
            customer_channel=pending.customer_channel,
        )
        self._talks.put(talk)
        try:
            controller.start_talk(
                pending.call_id,
                pending.queue,
                pending.target,
                caller=pending.caller,
                caller_channel=pending.customer_channel,
                agent_leg=leg_uid,
                reason=TRANSFER_REASON,
            )
        except (IllegalTransition, KeyError) as exc:
            # The call id is still in the engine (its first agent's end was
            # not seen) or the target is on another call: leave it to Asterisk.
            log.error("transfer of %s to %s not tracked: %s", pending.call_id, pending.target, exc)
            self._talks.pop(pending.call_id)
            return
        controller.journal(
            call_event(
                "connected",
                pending.call_id,
                controller.clock(),
                {
                    "caller_channel": pending.customer_channel,
                    "agent_channel": leg,
                    "agent_leg": leg_uid,
                    "callback_number": None,
                    "transferred": True,
                },
                agent_id=pending.target,
                queue=pending.queue,
            )
        )
        self._emit(pending.target, pending.call_id, ProgressStage.ANSWERED, {"transferred": True})


class _Exclusive:
    """One control at a time per agent: a second click meanwhile is refused."""

    def __init__(self, busy: set[str], agent_id: str) -> None:
        self.busy = busy
        self.agent_id = agent_id

    def __enter__(self) -> None:
        if self.agent_id in self.busy:
            raise CallControlError("in_progress", "your previous request is still in progress")
        self.busy.add(self.agent_id)

    def __exit__(self, *exc_info: object) -> None:
        self.busy.discard(self.agent_id)


def _external_number(target: str) -> str:
    digits = "".join(ch for ch in target if ch.isdigit())
    if not digits:
        raise CallControlError("bad_number", f"{target!r} has no digits to dial")
    if len(digits) < MIN_EXTERNAL_DIGITS:
        raise CallControlError(
            "bad_number", f"{digits} is an internal extension: transfer to the agent instead"
        )
    return digits
