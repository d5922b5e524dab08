"""The Asterisk emulator's public API: start it, add phones, place calls, close it.

    emulator = AsteriskEmulator(ami_port=0, fastagi_port=4573, speed=20)
    await emulator.start()                       # AMI listening on emulator.ami_port
    emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=1, talk_time=30))
    call = await emulator.place_call("5551234", "John Doe", exten="100",
                                     dtmf=[(3.0, "1")], hangup_after=60)
    await call.ended
    await emulator.close()

To run the dialplan shipped to operators instead of the built-in one:

    plan = load_dialplan(Path("dialplans/extensions.conf"),
                         {"CTISERVER": f"127.0.0.1:{fastagi_port}"})
    emulator = AsteriskEmulator(ami_port=0, dialplan=plan, speed=20)

The emulator mirrors the PBX the transcripts were recorded on
(shared/asterisk/conf): its dialplan (from-callers 100/600/999, cti-agent,
cti-hold, cti-outbound, unless another one is given, as above), its
endpoints (agent1001, agent1002, supervisor9001, pstn, pstninfo, sipp) and
the AMI user cti/cti. Any number of further agent phones can be added.
Time runs `speed` times faster than real time; all delays are emulated
seconds.

Not emulated: CEL, Cdr and RTCP events; AMI Atxfer (answered with an error);
Local channel optimisation; media (RTPAUDIOQOS* values are fixed strings).

Where no transcript shows what Asterisk does, the emulator chooses:

- async Originate to an endpoint without contact: OriginateResponse Failure,
  Reason 0, no channel (as for an unknown technology); Originate without
  CallerID: no NewCallerid/NewConnectedLine;
- Redirect of a channel whose Dial still rings: DialEnd/DIALSTATUS CANCEL,
  the ringing leg is hung up (16), the channel continues at the target;
- a hangup during MixMonitor publishes MixMonitorStop before Hangup;
- ChanSpy when the spied channel goes: ChanSpyStop, then, as app_chanspy.c
  does, back to scanning (the spy leg stays up, silent with `q`, and spies on
  the next channel matching its prefix) unless option `E` makes it exit
  (the spy leg hangs up); the prefix is a plain name prefix; it waits
  silently while no channel matches;
- `$[...]` expressions, GotoIf and MusicOnHold(class,duration) (used by
  dialplans/extensions.conf, not by the recorded PBX) follow Asterisk's
  source: ast_expr2, pbx_builtin_gotoif, res_musiconhold;
- FastAGI server unreachable: AGISTATUS=FAILURE and the dialplan continues;
  server closing while the channel is alive: AGISTATUS=SUCCESS, no HANGUP line;
- AGI: GET DATA timing out after some digits `200 result=12 (timeout)`, `#`
  ends input; RECORD FILE only times (no file); DATABASE is per emulator;
  EXEC of an unknown application `200 result=-2`;
- Dial: only the first of `&`-separated targets rings; options t/T (DTMF
  features, keep simple_bridge) and g (continue after the callee hangs up);
- Local channels (`Local/exten@context-<n>;1/;2`): `;1` rings/answers when
  `;2` does, each half hangs up the other, no optimisation;
- AMI: a frame without `Action:` (or not `Key: value` lines) gets
  `Missing action in request`; an unknown user raises InvalidAccountID; a
  client that stops reading is dropped after 32 MB of backlog; Command knows
  core show uptime/version/channels[ concise], pjsip show contacts, reload;
  DeviceStateList lists the endpoints plus the recorded PBX's MWI/Queue
  devices; MixMonitor without File records to `<uniqueid>.wav`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from ctiserver.lifecycle import Service
from ctiserver.sim.ami_server import AmiServer
from ctiserver.sim.apps import OriginateRequest, Runner
from ctiserver.sim.clock import Clock
from ctiserver.sim.dialplan import Dialplan, builtin_dialplan
from ctiserver.sim.events import Event
from ctiserver.sim.model import Channel, Endpoint, EventListener, Pbx, PbxConfig
from ctiserver.sim.phones import (
    AUTO_ANSWER,
    Call,
    CallerScript,
    Phone,
    PhonePolicy,
    place_call,
    schedule_dtmf,
)

_AGENT = re.compile(r"^agent(\d+)$")
_SUPERVISOR = re.compile(r"^supervisor(\d+)$")


class AsteriskEmulator(Service):
    """An Asterisk 22 look-alike speaking AMI (server) and FastAGI (client)."""

    def __init__(
        self,
        ami_host: str = "127.0.0.1",
        ami_port: int = 5038,
        fastagi_host: str = "127.0.0.1",
        fastagi_port: int = 4573,
        *,
        speed: float = 1.0,
        clock: Clock | None = None,
        users: dict[str, str] | None = None,
        qos_variables: bool = True,
        dialplan: Dialplan | None = None,
    ) -> None:
        self.clock = clock or Clock(speed)
        self.config = PbxConfig(
            fastagi_host=fastagi_host, fastagi_port=fastagi_port, qos_variables=qos_variables
        )
        self.pbx = Pbx(self.clock, self.config)
        self.dialplan = dialplan or builtin_dialplan(f"agi://{fastagi_host}:{fastagi_port}")
        # The dialplan's [globals] become the PBX's global variables (a copy:
        # AMI Setvar without a channel changes them at run time).
        self.pbx.globals = dict(self.dialplan.globals)
        self.runner = Runner(self.pbx, self.dialplan)
        self.ami = AmiServer(
            self.pbx,
            self.runner,
            ami_host,
            ami_port,
            users if users is not None else {"cti": "cti"},
        )
        self.phones: dict[str, Phone] = {}
        self._define_endpoints()
        self._started = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        await self.ami.start()
        self._started = True

    async def close(self) -> None:
        """Stop listening, drop AMI sessions and FastAGI connections, cancel every task."""
        await self.ami.close()
        await self.pbx.shutdown()
        self._started = False

    @property
    def ami_port(self) -> int:
        """The AMI port actually bound (useful with ami_port=0)."""
        return self.ami.port

    # -- endpoints and phones ------------------------------------------------------

    def _define_endpoints(self) -> None:
        # pjsip.conf of the recorded PBX.
        for name in ("agent1001", "agent1002", "supervisor9001"):
            self._endpoint(name)
        self._endpoint("sipp")
        self._endpoint("pstn")
        self._endpoint("pstninfo").dtmf_mode = "info"
        for endpoint in self.pbx.endpoints.values():
            endpoint.device_state = self.pbx.device_state_of(endpoint)

    def _endpoint(self, name: str, callerid: tuple[str, str] | None = None) -> Endpoint:
        endpoint = self.pbx.endpoint(name)
        if callerid is not None:
            endpoint.callerid_num, endpoint.callerid_name = callerid
        elif not endpoint.callerid_num:
            agent = _AGENT.match(name)
            supervisor = _SUPERVISOR.match(name)
            if agent:
                endpoint.callerid_num = agent.group(1)
                endpoint.callerid_name = f"Agent {agent.group(1)}"
            elif supervisor:
                endpoint.callerid_num = supervisor.group(1)
                endpoint.callerid_name = f"Supervisor {supervisor.group(1)}"
        if not endpoint.device_state:
            endpoint.device_state = self.pbx.device_state_of(endpoint)
        return endpoint

    def add_phone(
        self,
        name: str,
        policy: PhonePolicy = AUTO_ANSWER,
        *,
        registered: bool = True,
        callerid: tuple[str, str] | None = None,
        port: int | None = None,
    ) -> Phone:
        """A SIP phone on endpoint `name` (created if new); REGISTERs unless told not to."""
        endpoint = self._endpoint(name, callerid)
        if port is not None:
            endpoint.contact_port = port
        elif endpoint.contact_port == 5060:
            # The ports the recorded SIPp phones used: agent1001 5081, supervisor9001
            # 5091, the pstn trunk 5075 (cosmetic: they only appear in contact URIs).
            digits = "".join(c for c in name if c.isdigit())
            base = 5090 if name.startswith("supervisor") else 5080
            endpoint.contact_port = base + int(digits) % 1000 if digits else 5075
        phone = Phone(endpoint, policy)
        endpoint.phone = phone
        self.phones[name] = phone
        if registered:
            self.pbx.register(endpoint)
        return phone

    def add_agent_phone(
        self, name: str, policy: PhonePolicy = AUTO_ANSWER, *, registered: bool = True
    ) -> Phone:
        """An agent's softphone (`agent1001` ... any number)."""
        return self.add_phone(name, policy, registered=registered)

    def add_supervisor_phone(
        self, name: str = "supervisor9001", policy: PhonePolicy = AUTO_ANSWER
    ) -> Phone:
        return self.add_phone(name, policy)

    def register(self, name: str) -> None:
        self.pbx.register(self._endpoint(name))

    def unregister(self, name: str) -> None:
        self.pbx.unregister(self._endpoint(name))

    def set_policy(self, name: str, policy: PhonePolicy) -> None:
        self.phones[name].policy = policy

    # -- calls ---------------------------------------------------------------------

    async def place_call(
        self,
        caller: str,
        name: str = "",
        *,
        exten: str = "100",
        dtmf: Sequence[tuple[float, str]] = (),
        hangup_after: float | None = None,
        trunk: str = "pstn",
        media: bool | None = None,
    ) -> Call:
        """A call arriving on the PSTN trunk (`pstninfo` for SIP INFO DTMF)."""
        script = CallerScript(
            caller=caller,
            name=name,
            exten=exten,
            trunk=trunk,
            dtmf=tuple(dtmf),
            hangup_after=hangup_after,
            media=media,
        )
        return place_call(self.pbx, script)

    def phone_hangup(self, name: str) -> None:
        """The user of phone `name` hangs up every call on it."""
        self.phones[name].hangup_all(self.pbx)

    def hangup(self, channel: str) -> None:
        """The far end of `channel` sends BYE."""
        chan = self.pbx.find_channel(channel)
        if chan is not None:
            self.pbx.remote_hangup(chan)

    def hold(self, channel: str, hold: bool = True) -> None:
        """The phone of `channel` puts the call on hold (re-INVITE sendonly) or resumes it."""
        chan = self.pbx.find_channel(channel)
        if chan is not None:
            if hold:
                self.pbx.phone_hold(chan)
            else:
                self.pbx.phone_unhold(chan)

    def send_dtmf(self, channel: str, digits: str, delay: float = 0.0) -> None:
        """The phone of `channel` keys digits (RFC 4733 or SIP INFO per endpoint)."""
        chan = self.pbx.find_channel(channel)
        if chan is not None:
            schedule_dtmf(self.pbx, chan, [(delay, digits)])

    async def originate(self, request: OriginateRequest) -> bool:
        """What AMI Originate does, without AMI."""
        return await self.runner.originate(request)

    # -- inspection ----------------------------------------------------------------

    @property
    def channels(self) -> list[Channel]:
        return self.pbx.channels_sorted()

    def add_listener(self, listener: EventListener) -> None:
        """Receive every published AMI event (before per-session filtering)."""
        self.pbx.listeners.append(listener)

    def remove_listener(self, listener: EventListener) -> None:
        if listener in self.pbx.listeners:
            self.pbx.listeners.remove(listener)

    async def wait_idle(self, limit: float = 10.0) -> bool:
        """Wait (real seconds) until no channel exists and no dialplan task runs."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while loop.time() < deadline:
            if not self.pbx.channels and not self.pbx.tasks:
                return True
            await asyncio.sleep(0.01)
        return not self.pbx.channels and not self.pbx.tasks


__all__ = [
    "AUTO_ANSWER",
    "AsteriskEmulator",
    "Call",
    "Event",
    "OriginateRequest",
    "PhonePolicy",
]
