"""Emulated SIP endpoints: agents' and supervisors' phones, and callers on the `pstn` trunk.

There is no SIP on the wire; a phone is a policy that reacts to the PBX the
way the recorded SIPp phones did. A phone that rings answers after
`PhonePolicy.ring_time`, or rejects with a SIP code (486 -> busy), or never
answers; once answered it may put the call on hold and back (re-INVITE
sendonly/sendrecv) and hang up after `talk_time`. A caller arrives on the
`pstn` (RFC 4733 DTMF) or `pstninfo` (SIP INFO DTMF) trunk, sends DTMF at
given times after the call is answered and may hang up after a patience.

All timing is `Clock.call_later` handles attached to the channel, cancelled
when the channel goes: a phone costs no task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from ctiserver.sim import events as ev
from ctiserver.sim.model import Channel, Endpoint, Pbx

# SIP final responses a phone may answer an INVITE with -> Asterisk hangup cause.
SIP_CAUSES = {486: 17, 600: 17, 603: 21, 480: 19, 404: 1, 503: 34, 408: 18}

# How the recorded SIPp phones sent DTMF: (digit length, gap to the next digit) seconds.
RFC4733_TIMING = (0.2, 0.2)
SIP_INFO_TIMING = (0.16, 0.092)


@dataclass
class PhonePolicy:
    """How a registered phone handles calls to it.

    ring_time: seconds of ringing before it answers; None = never answers.
    reject: SIP code to refuse with instead (486 busy, 603 decline, ...).
    reject_after: seconds before the refusal.
    talk_time: seconds after answering until the phone hangs up; None = stays
        until the other side ends the call.
    holds: (seconds after answering, True=hold / False=resume) re-INVITEs.
    """

    ring_time: float | None = 1.0
    reject: int | None = None
    reject_after: float = 0.5
    talk_time: float | None = None
    holds: Sequence[tuple[float, bool]] = ()
    media: bool = True


AUTO_ANSWER = PhonePolicy()
NO_ANSWER = PhonePolicy(ring_time=None)
BUSY = PhonePolicy(ring_time=None, reject=486)


class Phone:
    """A registered SIP phone driven by a `PhonePolicy` (agents, supervisors, a customer)."""

    def __init__(self, endpoint: Endpoint, policy: PhonePolicy) -> None:
        self.endpoint = endpoint
        self.policy = policy
        self.calls: list[Channel] = []
        self.answered = 0

    def on_invite(self, pbx: Pbx, channel: Channel) -> None:
        policy = self.policy
        clock = pbx.clock
        channel.media = policy.media
        self.calls.append(channel)
        # 180 Ringing comes back a couple of milliseconds after the INVITE.
        channel.add_timer(clock.call_later(0.002, pbx.ringing, channel))
        if policy.reject is not None:
            code = policy.reject
            channel.add_timer(
                clock.call_later(
                    max(0.003, policy.reject_after),
                    pbx.remote_hangup,
                    channel,
                    SIP_CAUSES.get(code, 21),
                    code,
                )
            )
        elif policy.ring_time is not None:
            channel.add_timer(
                clock.call_later(max(0.003, policy.ring_time), self._answer, pbx, channel)
            )

    def _answer(self, pbx: Pbx, channel: Channel) -> None:
        if channel.gone:
            return
        pbx.phone_answer(channel)
        self.answered += 1
        clock = pbx.clock
        for at, hold in self.policy.holds:
            action = pbx.phone_hold if hold else pbx.phone_unhold
            channel.add_timer(clock.call_later(at, _if_alive, action, channel))
        if self.policy.talk_time is not None:
            channel.add_timer(clock.call_later(self.policy.talk_time, pbx.remote_hangup, channel))

    def on_hangup(self, pbx: Pbx, channel: Channel) -> None:
        if channel in self.calls:
            self.calls.remove(channel)

    def hangup_all(self, pbx: Pbx) -> None:
        """The user presses the hang-up button on every call of this phone."""
        for channel in list(self.calls):
            pbx.remote_hangup(channel)


def _if_alive(action: object, channel: Channel) -> None:
    if not channel.gone and callable(action):
        action(channel)


@dataclass
class CallerScript:
    """A caller on the PSTN trunk.

    dtmf: (seconds after answer, digits) - each string is keyed digit by digit.
    hangup_after: seconds after answer until the caller hangs up; None = waits
        for the PBX to end the call. Times count from the answer, as the SIPp
        scripts of the recordings did (they started after the ACK).
    """

    caller: str
    name: str = ""
    exten: str = "100"
    trunk: str = "pstn"
    dtmf: Sequence[tuple[float, str]] = ()
    hangup_after: float | None = None
    media: bool | None = None  # default: no voice RTP when sending RFC 4733 DTMF


@dataclass
class Call:
    """A caller's channel as the emulator API hands it out."""

    channel: Channel
    script: CallerScript
    ended: asyncio.Future[None] = field(repr=False)

    @property
    def name(self) -> str:
        return self.channel.name

    @property
    def uniqueid(self) -> str:
        return self.channel.uniqueid


def place_call(pbx: Pbx, script: CallerScript) -> Call:
    """A new inbound call on a trunk: Newchannel (Ring) and the dialplan starts."""
    endpoint = pbx.endpoint(script.trunk)
    chan = pbx.new_channel(
        endpoint,
        state=ev.RING,
        caller=(script.caller, script.name),
        exten=script.exten,
        incoming=True,
    )
    chan.dnid = script.exten
    chan.media = script.media if script.media is not None else not script.dtmf
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    chan.on_gone.append(lambda _c: _resolve(ended))
    chan.on_up = lambda c: _caller_answered(pbx, c, script)
    if pbx.start_pbx is not None:
        pbx.start_pbx(chan, chan.context, script.exten, 1)
    return Call(chan, script, ended)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _caller_answered(pbx: Pbx, chan: Channel, script: CallerScript) -> None:
    schedule_dtmf(pbx, chan, script.dtmf)
    if script.hangup_after is not None:
        chan.add_timer(pbx.clock.call_later(script.hangup_after, pbx.remote_hangup, chan))


def schedule_dtmf(pbx: Pbx, chan: Channel, keys: Sequence[tuple[float, str]]) -> None:
    """Key digits on `chan` at (seconds from now, digits), per its endpoint's DTMF mode.

    RFC 4733 gives DTMFBegin then DTMFEnd 200 ms later; SIP INFO only DTMFEnd
    (Duration 160); digits follow each other as the recorded SIPp phones sent them.
    """
    clock = pbx.clock
    info = chan.endpoint is not None and chan.endpoint.dtmf_mode == "info"
    length, gap = SIP_INFO_TIMING if info else RFC4733_TIMING
    milliseconds = int(length * 1000)
    for at, digits in keys:
        when = at
        for digit in digits:
            if info:
                chan.add_timer(clock.call_later(when, pbx.dtmf, chan, digit, milliseconds, False))
            else:
                chan.add_timer(clock.call_later(when, pbx.dtmf, chan, digit, 0, True))
                chan.add_timer(
                    clock.call_later(when + length, pbx.dtmf, chan, digit, milliseconds, False)
                )
            when += length + gap
