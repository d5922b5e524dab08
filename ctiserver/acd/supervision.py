"""Supervisor actions: listen to, whisper to or barge in on an agent's call; force an
agent not ready or logged out.

    supervision = Supervision(controller, call_controls)   # a Service: start()/close()
    await supervision.listen(principal, "1001")   # the supervisor's phone rings, then spies
    await supervision.whisper(principal, "1001")  # a new spy leg replaces it (see below)
    await supervision.stop(principal)
    await supervision.force_not_ready(principal, "1001", "meeting")
    await supervision.force_logout(principal, "1001")

Only a principal with at least the supervisor role may act (`forbidden`
otherwise). Each action returns a `SupervisorResult` once it is done, or
raises `SupervisionError` whose `code` is stable for programs (see there).

The supervisor's phone: accounts have no phone, so the supervisor's endpoint
is `PJSIP/<login>` (the recorded PBX's `supervisor9001` is the login
"supervisor9001"), unless `endpoints` maps the login to another endpoint
(`Supervision(..., endpoints={"alice": "PJSIP/desk12"})`).

Which transcript each step rests on (shared/asterisk/scenarios):

- listen / whisper / barge: one AMI `Originate` of the supervisor's endpoint
  with `Application: ChanSpy`, `Data: <agent endpoint>,<options>`, `CallerID:
  "Monitor <agent>" <supervisor number>`, `Timeout: 20000`, `Async: true`
  (10: `Data: PJSIP/agent1001,qw` whispers, `qB` barges). Options: `q` (no
  beep, no channel name read out) plus nothing (listen), `w` (whisper to the
  agent) or `B` (barge: talk to both parties). The spy target is the agent's
  endpoint as in 10 (a plain name prefix in Asterisk: when another agent's
  endpoint starts with it, e.g. PJSIP/agent100 and PJSIP/agent1001, a `-` is
  appended so only this agent's channels match). We add a `ChannelId` (05:
  Originate accepts one) so the spy leg is known from its Newchannel on and a
  `stop` while it still rings can hang it up. OriginateResponse Success =
  the supervisor answered (10); Reason 0 without a channel = unreachable,
  Reason 0 with one = busy, Reason 3 = no answer (05c).
- the spy itself: `ChanSpyStart` ~100 ms after the answer, `ChanSpyStop`
  when it ends, each with Spyer*/Spyee* blocks (10). The mode is not visible
  in the events, so it is remembered here.
- switching mode (listen -> whisper -> barge): 10 shows no way to change the
  options of a running ChanSpy through AMI (its DTMF mode switch, option `d`,
  needs digits from the supervisor's own phone), only a spy leg ending and a
  new Originate with other options. So a switch hangs up the current spy leg
  (AMI `Hangup`, 01/10) and originates a new one: the supervisor's phone
  rings again.
- stop: AMI `Hangup` of the spy leg (01: Hangup of a channel; 10: Hangup of
  the caller). The supervisor hanging up the phone ends it too (10:
  HangupRequest, ChanSpyStop, Hangup cause 0).
- the agent's call ending: no transcript shows it (in 10 the supervisor
  always hung up first). app_chanspy.c without option `E` goes back to
  scanning for the next channel of the prefix, so the spy leg would stay up
  and spy on the agent's next call. We keep 10's options and hang the spy
  leg up ourselves (AMI `Hangup`) when the controller reports the agent's
  call ended (CallEnded, also after a transfer); the emulator scans on as
  Asterisk does, so the tests see that hang-up.
- force_not_ready / force_logout: no AMI action. Through the controller like
  the agent's own request: at once when idle or in wrap-up; while ringing
  it is a refusal (the call goes back to its place); during a call the engine
  keeps it pending and applies it when the call ends (no wrap-up), as for an
  agent's own logout during a call. The agent may still cancel a pending
  not-ready by going ready during the call (the engine's rule).

Journal (`acd.*` events, `agent_id` = the agent, `call_id` = the agent's call
when there is one, payload `supervisor` = the supervisor's login):

- `acd.supervisor_listen` / `acd.supervisor_whisper` / `acd.supervisor_barge`
  {supervisor, mode, endpoint, spy_channel, spy_target} when the
  supervisor's phone answered and the spy runs;
- `acd.supervisor_spy_failed` {supervisor, mode, endpoint, code, reason};
- `acd.supervisor_spy_ended` {supervisor, mode, spy_channel, reason:
  "stopped" | "switched" | "call_ended" | "supervisor_hung_up", spy_s};
- `acd.supervisor_not_ready` {supervisor, reason, previous, deferred};
- `acd.supervisor_logout` {supervisor, previous, deferred}.

The screen-pop a supervisor sees is the agent's desktop watched read-only
(`/ws/desktop?agent=`, agent_desktop); `calls(agent_id)` here gives the
agent's current call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ctiserver.acd.call_controls import CallControls, CallInfo
from ctiserver.acd.controller import CallController
from ctiserver.acd.decisions import CallEnded, Decision
from ctiserver.acd.errors import IllegalTransition
from ctiserver.acd.journal import instant
from ctiserver.acd.model import AgentState
from ctiserver.asterisk.ami.codec import Message
from ctiserver.asterisk.ami.errors import AmiError
from ctiserver.auth.principal import Principal, Role
from ctiserver.lifecycle import Service
from ctiserver.store.events import Event

log = logging.getLogger(__name__)

# 10: the Originate's Timeout header (ms) and the monitoring CallerID.
SPY_RING_TIMEOUT_S = 20.0
SPY_APPLICATION = "ChanSpy"
# What the supervisor's endpoint is when `endpoints` does not name one.
DEFAULT_ENDPOINT_TEMPLATE = "PJSIP/{login}"
_ENDPOINT = re.compile(r"^[A-Za-z][A-Za-z0-9]*/[A-Za-z0-9_.@+-]+$")


class SpyMode(StrEnum):
    LISTEN = "listen"
    WHISPER = "whisper"
    BARGE = "barge"


# ChanSpy options per mode (10: "qw" whisper, "qB" barge; listen is q alone).
SPY_OPTIONS: Mapping[SpyMode, str] = {
    SpyMode.LISTEN: "q",
    SpyMode.WHISPER: "qw",
    SpyMode.BARGE: "qB",
}


class SupervisionError(Exception):
    """A supervisor action cannot be done; `str()` is for the supervisor to read.

    `code` is stable for programs: forbidden, unknown_agent, not_logged_in,
    no_call, no_spy, in_progress, bad_reason, bad_endpoint, own_call,
    supervisor_phone_unreachable, supervisor_phone_busy,
    supervisor_no_answer, refused, unreachable (Asterisk).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class SupervisorResult:
    """What an action did: for spies, the spy leg; for forced states, whether deferred."""

    supervisor: str  # login
    agent_id: str
    action: str  # listen | whisper | barge | stop | not_ready | logout
    call_id: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpyInfo:
    """A supervisor's current spy as `spies()` reports it."""

    supervisor: str
    agent_id: str
    call_id: str
    mode: SpyMode
    endpoint: str  # the supervisor's phone
    channel: str | None  # the spy leg, once Asterisk created it
    answered: bool
    spying: bool  # between ChanSpyStart and ChanSpyStop


@dataclass(eq=False)
class _Spy:
    supervisor: str
    agent_id: str
    call_id: str
    mode: SpyMode
    endpoint: str
    target: str
    uniqueid: str  # the ChannelId we gave the Originate
    channel: str | None = None
    answered_at: float | None = None
    spying: bool = False
    ending: str | None = None  # why we hang it up (stopped, switched, call_ended)
    ended: bool = False
    gone: asyncio.Event = field(default_factory=asyncio.Event)


class Supervision(Service):
    """Supervisor actions on top of a CallController and its CallControls."""

    def __init__(
        self,
        controller: CallController,
        call_controls: CallControls,
        *,
        endpoints: Mapping[str, str] | None = None,
    ) -> None:
        self.controller = controller
        self.controls = call_controls
        self.ami = controller.ami
        self.endpoints = dict(endpoints or {})
        self._spies: dict[str, _Spy] = {}  # by supervisor login
        self._by_uid: dict[str, _Spy] = {}  # by the spy leg's ChannelId
        self._busy: set[str] = set()  # supervisors with an action in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        controller.add_listener(self._on_decision)
        self._subscriptions = [
            self.ami.subscribe("Newchannel", self._on_newchannel),
            self.ami.subscribe("Hangup", self._on_hangup),
            self.ami.subscribe("ChanSpyStart", self._on_spy_start),
            self.ami.subscribe("ChanSpyStop", self._on_spy_stop),
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

    # -- state ---------------------------------------------------------------------

    def endpoint_of(self, login: str) -> str:
        """The supervisor's phone: configured, else `PJSIP/<login>`."""
        endpoint = self.endpoints.get(login) or DEFAULT_ENDPOINT_TEMPLATE.format(login=login)
        if not _ENDPOINT.match(endpoint):
            raise SupervisionError(
                "bad_endpoint", f"{endpoint!r} is not a phone endpoint ChanSpy can ring"
            )
        return endpoint

    def spies(self) -> list[SpyInfo]:
        """Every running spy (ringing the supervisor or spying)."""
        return [_info(spy) for spy in self._spies.values() if not spy.ended]

    def spy_of(self, supervisor: str) -> SpyInfo | None:
        spy = self._spies.get(supervisor)
        return None if spy is None or spy.ended else _info(spy)

    def calls(self, agent_id: str) -> list[CallInfo]:
        """The agent's current call, as the agent's desktop shows it."""
        return self.controls.calls(agent_id)

    # -- spying --------------------------------------------------------------------

    async def listen(self, supervisor: Principal, agent_id: str) -> SupervisorResult:
        """Hear the agent's call; nobody hears the supervisor."""
        return await self._spy(supervisor, agent_id, SpyMode.LISTEN)

    async def whisper(self, supervisor: Principal, agent_id: str) -> SupervisorResult:
        """Hear the call and talk to the agent only (ChanSpy `w`)."""
        return await self._spy(supervisor, agent_id, SpyMode.WHISPER)

    async def barge(self, supervisor: Principal, agent_id: str) -> SupervisorResult:
        """Hear the call and talk to both parties (ChanSpy `B`)."""
        return await self._spy(supervisor, agent_id, SpyMode.BARGE)

    async def stop(self, supervisor: Principal) -> SupervisorResult:
        """End the supervisor's spy: AMI Hangup of the spy leg."""
        login = _supervisor_login(supervisor)
        # Not exclusive: it may cancel a spy whose phone is still ringing.
        spy = self._spies.get(login)
        if spy is None or spy.ended or spy.ending is not None:
            raise SupervisionError("no_spy", "you are not listening to any call")
        await self._end_spy(spy, "stopped")
        detail = {"mode": spy.mode.value, "spy_channel": spy.channel}
        return SupervisorResult(login, spy.agent_id, "stop", spy.call_id, detail)

    async def _spy(self, supervisor: Principal, agent_id: str, mode: SpyMode) -> SupervisorResult:
        login = _supervisor_login(supervisor)
        with _Exclusive(self._busy, login):
            endpoint = self.endpoint_of(login)
            call_id, agent_endpoint = self._call_to_spy(agent_id)
            if agent_endpoint == endpoint:
                raise SupervisionError("own_call", "you cannot listen to your own phone")
            current = self._spies.get(login)
            if current is not None and not current.ended:
                if (current.agent_id, current.call_id, current.mode) == (agent_id, call_id, mode):
                    return _spy_result(current)  # already doing exactly that
                # No AMI way to change a running ChanSpy's options (10): a new leg.
                await self._end_spy(current, "switched")
            spy = _Spy(
                login,
                agent_id,
                call_id,
                mode,
                endpoint,
                self._spy_target(agent_id, agent_endpoint),
                f"cti-spy-{uuid.uuid4().hex[:20]}",
            )
            self._spies[login] = spy
            self._by_uid[spy.uniqueid] = spy
            try:
                await self._originate(spy, agent_id)
            except SupervisionError as exc:
                self._forget(spy)
                self._journal(
                    "supervisor_spy_failed",
                    spy,
                    {
                        "supervisor": login,
                        "mode": mode.value,
                        "endpoint": endpoint,
                        "code": exc.code,
                        "reason": str(exc),
                    },
                )
                raise
            spy.answered_at = self.controller.clock()
            self._journal(
                f"supervisor_{mode.value}",
                spy,
                {
                    "supervisor": login,
                    "mode": mode.value,
                    "endpoint": endpoint,
                    "spy_channel": spy.channel,
                    "spy_target": spy.target,
                },
            )
            return _spy_result(spy)

    async def _originate(self, spy: _Spy, agent_id: str) -> None:
        ami = self.ami
        number = "".join(ch for ch in spy.endpoint.split("/", 1)[1] if ch.isdigit())
        agent_name = spy.target.split("/", 1)[-1].rstrip("-")
        timeout = SPY_RING_TIMEOUT_S + ami.config.action_timeout + 5.0
        try:
            result = await ami.originate(
                spy.endpoint,
                application=SPY_APPLICATION,
                data=f"{spy.target},{SPY_OPTIONS[spy.mode]}",
                caller_id=f'"Monitor {agent_name}" <{number}>',
                ring_timeout=SPY_RING_TIMEOUT_S,
                channel_id=spy.uniqueid,
                timeout=timeout,
            )
        except (AmiError, TimeoutError) as exc:
            if spy.channel is not None:
                await self._hangup_quietly(spy.channel)
            raise SupervisionError("unreachable", f"Asterisk unreachable: {exc}") from None
        if result.success:
            if result.channel and spy.channel is None:
                spy.channel = result.channel
            if spy.ending == "call_ended" or self._ended_meanwhile(spy, agent_id):
                await self._hangup_quietly(spy.channel or spy.uniqueid)
                raise SupervisionError("no_call", f"agent {agent_id}'s call ended meanwhile")
            if spy.ending is not None or spy.ended:
                raise SupervisionError("no_spy", "the spy was stopped before it began")
            return
        if (result.response.get("Response") or "").lower() != "success":
            raise SupervisionError("refused", f"Asterisk refused: {result.message}")
        if spy.ending == "call_ended":
            raise SupervisionError("no_call", f"agent {agent_id}'s call ended meanwhile")
        if spy.ending is not None:
            raise SupervisionError("no_spy", "the spy was stopped before your phone answered")
        if result.reason == 3:
            raise SupervisionError("supervisor_no_answer", "your phone did not answer")
        if spy.channel is not None:  # a channel existed: it refused (05c: busy is Reason 0)
            raise SupervisionError("supervisor_phone_busy", f"your phone {spy.endpoint} is busy")
        raise SupervisionError(
            "supervisor_phone_unreachable", f"your phone {spy.endpoint} is not reachable"
        )

    def _ended_meanwhile(self, spy: _Spy, agent_id: str) -> bool:
        view = self.controller.engine.agent(agent_id)
        return view.state is not AgentState.ON_CALL or view.call_id != spy.call_id

    def _call_to_spy(self, agent_id: str) -> tuple[str, str]:
        """The agent's answered call and endpoint, or why there is none."""
        controller = self.controller
        try:
            view = controller.engine.agent(agent_id)
            agent = controller.config.agent(agent_id)
        except KeyError:
            raise SupervisionError("unknown_agent", f"there is no agent {agent_id!r}") from None
        if view.state is AgentState.LOGGED_OUT:
            raise SupervisionError("not_logged_in", f"agent {agent_id} is not logged in")
        if view.state is not AgentState.ON_CALL or view.call_id is None:
            what = "still ringing" if view.state is AgentState.RESERVED else view.state.value
            raise SupervisionError("no_call", f"agent {agent_id} is not on a call ({what})")
        return view.call_id, agent.endpoint

    def _spy_target(self, agent_id: str, endpoint: str) -> str:
        """ChanSpy's prefix: the endpoint (10), with `-` if it is a prefix of another's."""
        others = [
            a.endpoint for a in self.controller.config.agents if a.agent_id != agent_id
        ] + list(self.endpoints.values())
        if any(other != endpoint and other.startswith(endpoint) for other in others):
            return endpoint + "-"
        return endpoint

    async def _end_spy(self, spy: _Spy, why: str) -> None:
        """Hang up the spy leg and wait (briefly) for its Hangup event."""
        if spy.ended:
            return
        spy.ending = spy.ending or why
        channel = spy.channel
        if channel is None:
            # Not created yet (the Originate is queued): its Newchannel hangs it
            # up, and listen() sees `ending` when the OriginateResponse comes.
            return
        try:
            result = await self.ami.action("Hangup", {"Channel": channel, "Cause": "16"})
        except (AmiError, TimeoutError) as exc:
            raise SupervisionError("unreachable", f"Asterisk unreachable: {exc}") from None
        if not result.ok:
            # "No such channel": it went meanwhile; its Hangup event ends it.
            log.info("spy leg %s: %s", channel, result.message)
        try:
            async with asyncio.timeout(self.ami.config.action_timeout):
                await spy.gone.wait()
        except TimeoutError:
            self._finish(spy, why)

    async def _hangup_quietly(self, channel: str) -> None:
        try:
            await self.ami.action("Hangup", {"Channel": channel, "Cause": "16"})
        except (AmiError, TimeoutError) as exc:
            log.warning("could not hang up the spy leg %s: %s", channel, exc)

    def _finish(self, spy: _Spy, why: str) -> None:
        """The spy is over (its leg hung up, or given up on): journal it once."""
        if spy.ended:
            return
        spy.ended = True
        spy.spying = False
        spy.gone.set()
        self._forget(spy)
        if spy.answered_at is None:
            return  # never answered: listen() raised and journaled the failure
        spy_s = round(max(0.0, self.controller.clock() - spy.answered_at), 3)
        self._journal(
            "supervisor_spy_ended",
            spy,
            {
                "supervisor": spy.supervisor,
                "mode": spy.mode.value,
                "spy_channel": spy.channel,
                "reason": spy.ending or why,
                "spy_s": spy_s,
            },
        )

    def _forget(self, spy: _Spy) -> None:
        if self._spies.get(spy.supervisor) is spy:
            del self._spies[spy.supervisor]
        if self._by_uid.get(spy.uniqueid) is spy:
            del self._by_uid[spy.uniqueid]

    # -- forced agent states ------------------------------------------------------------

    async def force_not_ready(
        self, supervisor: Principal, agent_id: str, reason: str
    ) -> SupervisorResult:
        """The agent goes not ready with `reason`: now, or when the current call ends."""
        login = _supervisor_login(supervisor)
        reason = reason.strip()
        if not reason:
            raise SupervisionError("bad_reason", "give a reason code for not ready")
        previous, call_id = self._logged_in(agent_id)
        deferred = previous is AgentState.ON_CALL
        self._journal_agent(
            "supervisor_not_ready",
            agent_id,
            call_id,
            {
                "supervisor": login,
                "reason": reason,
                "previous": previous.value,
                "deferred": deferred,
            },
        )
        try:
            self.controller.make_not_ready(agent_id, reason)
        except (IllegalTransition, KeyError) as exc:
            raise SupervisionError("refused", f"agent {agent_id}: {exc}") from None
        detail = {"reason": reason, "previous": previous.value, "deferred": deferred}
        return SupervisorResult(login, agent_id, "not_ready", call_id, detail)

    async def force_logout(self, supervisor: Principal, agent_id: str) -> SupervisorResult:
        """The agent is logged out: now, or when the current call ends (no wrap-up)."""
        login = _supervisor_login(supervisor)
        previous, call_id = self._logged_in(agent_id)
        deferred = previous is AgentState.ON_CALL
        self._journal_agent(
            "supervisor_logout",
            agent_id,
            call_id,
            {"supervisor": login, "previous": previous.value, "deferred": deferred},
        )
        try:
            self.controller.logout(agent_id)
        except (IllegalTransition, KeyError) as exc:
            raise SupervisionError("refused", f"agent {agent_id}: {exc}") from None
        detail = {"previous": previous.value, "deferred": deferred}
        return SupervisorResult(login, agent_id, "logout", call_id, detail)

    def _logged_in(self, agent_id: str) -> tuple[AgentState, str | None]:
        try:
            view = self.controller.engine.agent(agent_id)
        except KeyError:
            raise SupervisionError("unknown_agent", f"there is no agent {agent_id!r}") from None
        if view.state is AgentState.LOGGED_OUT:
            raise SupervisionError("not_logged_in", f"agent {agent_id} is not logged in")
        return view.state, view.call_id

    # -- journal ------------------------------------------------------------------------

    def _journal(self, kind: str, spy: _Spy, payload: dict[str, Any]) -> None:
        self._journal_agent(kind, spy.agent_id, spy.call_id, payload)

    def _journal_agent(
        self, kind: str, agent_id: str, call_id: str | None, payload: dict[str, Any]
    ) -> None:
        queue = None
        if call_id is not None:
            live = self.controller.calls.get(call_id)
            queue = live.queue if live is not None else None
        self.controller.journal(
            Event(
                f"acd.{kind}",
                payload,
                call_id=call_id,
                agent_id=agent_id,
                queue_id=queue,
                occurred_at=instant(self.controller.clock()),
            )
        )

    # -- events ---------------------------------------------------------------------------

    def _on_decision(self, decision: Decision) -> None:
        if self._closed or not isinstance(decision, CallEnded):
            return
        for spy in list(self._spies.values()):
            if spy.call_id == decision.call_id and not spy.ended and spy.ending is None:
                # ChanSpy without `E` would scan on and spy on the agent's next call.
                spy.ending = "call_ended"
                if spy.channel is not None:
                    self._spawn(self._hangup_quietly(spy.channel), f"acd-spy-end-{spy.uniqueid}")

    def _on_newchannel(self, message: Message) -> None:
        spy = self._by_uid.get(message.get("Uniqueid") or "")
        if spy is not None and spy.channel is None:
            spy.channel = message.get("Channel")
            if spy.ending is not None:  # stopped (or the call ended) while queued
                self._spawn(self._hangup_quietly(spy.channel or ""), f"acd-spy-{spy.uniqueid}")

    def _on_hangup(self, message: Message) -> None:
        spy = self._by_uid.get(message.get("Uniqueid") or "")
        if spy is not None:
            self._finish(spy, "supervisor_hung_up")

    def _on_spy_start(self, message: Message) -> None:
        spy = self._by_uid.get(message.get("SpyerUniqueid") or "")
        if spy is not None:
            spy.spying = True

    def _on_spy_stop(self, message: Message) -> None:
        spy = self._by_uid.get(message.get("SpyerUniqueid") or "")
        if spy is not None:
            spy.spying = False

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _supervisor_login(principal: Principal) -> str:
    if not principal.at_least(Role.SUPERVISOR):
        raise SupervisionError("forbidden", "only supervisors may do this")
    return principal.login


def _info(spy: _Spy) -> SpyInfo:
    return SpyInfo(
        spy.supervisor,
        spy.agent_id,
        spy.call_id,
        spy.mode,
        spy.endpoint,
        spy.channel,
        spy.answered_at is not None,
        spy.spying,
    )


def _spy_result(spy: _Spy) -> SupervisorResult:
    detail = {
        "mode": spy.mode.value,
        "endpoint": spy.endpoint,
        "spy_channel": spy.channel,
        "spy_target": spy.target,
        "options": SPY_OPTIONS[spy.mode],
    }
    return SupervisorResult(spy.supervisor, spy.agent_id, spy.mode.value, spy.call_id, detail)


class _Exclusive:
    """One action at a time per supervisor: a second click meanwhile is refused."""

    def __init__(self, busy: set[str], login: str) -> None:
        self.busy = busy
        self.login = login

    def __enter__(self) -> None:
        if self.login in self.busy:
            raise SupervisionError("in_progress", "your previous request is still in progress")
        self.busy.add(self.login)

    def __exit__(self, *exc_info: object) -> None:
        self.busy.discard(self.login)
