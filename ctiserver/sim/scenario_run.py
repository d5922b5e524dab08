"""Run a scenario (scenario.py) through the real server and the Asterisk emulator, then report.

    report = await run_scenario(load_scenario(Path("scenarios/tiny.yaml")), settings, speed=20)

What a run does:

1. a fresh PostgreSQL database (`ctiserver_sim_<random>`) on the server the
   settings name (the embedded one when `database.dsn` is empty), dropped at
   the end: every run folds exactly its own events, so reruns give the same
   figures and the operational database never sees emulated calls;
2. the scenario's ACD stored in it, read by the server as `ctiserver acd
   import` would have it;
3. one emulated clock (IdleClock) for the emulator, the ACD's timers,
   the IVR and every `acd.*` / `ivr.*` event. It moves only when nothing is
   in progress, so processing takes no emulated time: the same scenario gives
   the same events at the same instants, hence the same figures, at any
   `speed` (which only paces the run) and on any machine load;
4. the emulator runs the shipped dialplan (dialplans/extensions.conf: any
   number goes to the IVR) plus one `queue-NAME` extension per queue the
   scenario calls directly (`AGI(.../queue?queue=NAME)`);
5. agents log in through the ACD controller as the desktop would
   (login = ready). Their emulated phones ring `answer_delay` seconds;
   the agent ends wrap-up after `wrap_up_s` as the desktop's "ready" would;
   no-answer is drawn per offer from the seed (and the call, the agent and the
   attempt, so the draw does not depend on the order of events);
6. calls are placed at their times. Once an agent answers, the agent's phone
   holds and resumes at `hold_at`/`hold_at + hold` and the caller hangs up
   after talk + hold; a caller still in queue after `patience` hangs up;
7. when every call has ended and no agent is on a call or in wrap-up, time
   stops; the report of [start, end) is computed from the event log with
   as_of = end, so agents still logged in count as available up to the end.

`end` is start + `duration`, else the instant the run settled rounded up to the
next whole minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ctiserver.acd.config_store import save_acd_config
from ctiserver.acd.controller import CallController
from ctiserver.acd.decisions import AgentStateChanged, CallQueued, Decision, Offer
from ctiserver.acd.model import AgentState
from ctiserver.app import Server
from ctiserver.config import Settings
from ctiserver.metrics.history import historical_report
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.reports import centre_timezone
from ctiserver.metrics.settings import MetricSettings
from ctiserver.shipped import shipped_path
from ctiserver.sim.dialplan import Step
from ctiserver.sim.dialplan_file import load_dialplan
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.idle_clock import IdleClock
from ctiserver.sim.phones import Call, PhonePolicy
from ctiserver.sim.scenario import Scenario, ScenarioAgent, ScenarioCall
from ctiserver.store.database import Database

log = logging.getLogger(__name__)

SHIPPED_DIALPLAN = shipped_path("dialplans/extensions.conf")
REPORT_BY = ("centre", "queue", "agent", "skill")
# Emulated seconds a run may take beyond its last call's scripted end before it
# is declared stuck (IVR menus, ring timeouts, RONA retries, wrap-up timers).
_SETTLE_MARGIN_S = 900.0
# Real seconds emulated time may stand still before the run is declared stuck.
_STALL_S = 60.0
_SETTLED = (AgentState.AVAILABLE, AgentState.NOT_READY, AgentState.LOGGED_OUT)
# How figures are printed (see `rounded`): seconds whole, ratios to RATIO_DIGITS.
RATIO_DIGITS = 3


class ScenarioStuck(RuntimeError):
    """The run did not settle in time; the message says what was still going on."""


@dataclass
class _Agent:
    script: ScenarioAgent
    # Identifies the agent's current wrap-up / not-ready so a late timer does not end the next.
    token: object = field(default_factory=object)
    offers: int = 0


@dataclass
class _Placed:
    script: ScenarioCall
    call: Call
    patience: asyncio.TimerHandle | None = None
    answered: bool = False


class _Director:
    """Plays the scenario's people: agents' phones and desktops, callers' patience and talk."""

    def __init__(
        self,
        scenario: Scenario,
        emulator: AsteriskEmulator,
        controller: CallController,
        clock: IdleClock,
    ) -> None:
        self.scenario = scenario
        self.emulator = emulator
        self.controller = controller
        self.clock = clock
        self.agents = {a.agent_id: _Agent(a) for a in scenario.agents}
        self.placed: dict[str, _Placed] = {}  # by call id (the caller channel's Uniqueid)
        self.timers: list[asyncio.TimerHandle] = []
        self.failures: list[str] = []

    def later(self, seconds: float, callback: Callable[[], None]) -> None:
        self.timers.append(self.clock.call_later(seconds, self._guarded, callback))

    def _guarded(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception as exc:  # a scenario step that failed must not stop the run
            log.exception("scenario step failed")
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        for timer in self.timers:
            timer.cancel()
        for placed in self.placed.values():
            if placed.patience is not None:
                placed.patience.cancel()

    # -- agents -------------------------------------------------------------------------

    def log_in(self, agent_id: str) -> None:
        script = self.agents[agent_id].script
        self.emulator.add_agent_phone(script.phone, PhonePolicy(ring_time=script.answer_delay))
        self.controller.login(agent_id)

    def on_decision(self, decision: Decision) -> None:
        try:
            match decision:
                case Offer():
                    self._offered(decision)
                case CallQueued():
                    self._queued(decision)
                case AgentStateChanged():
                    self._agent_changed(decision)
        except Exception as exc:
            log.exception("scenario reaction to %r failed", decision)
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def _offered(self, offer: Offer) -> None:
        agent = self.agents.get(offer.agent_id)
        if agent is None:
            return
        agent.offers += 1
        script = agent.script
        rings_out = False
        if script.no_answer >= 1:
            rings_out = True
        elif script.no_answer > 0:
            # Seeded by what the offer is, not by how many draws came before.
            placed = self.placed.get(offer.call_id)
            number = placed.script.number if placed is not None else 0
            draw = random.Random(
                f"{self.scenario.seed}:no_answer:{script.agent_id}:{number}:{agent.offers}"
            )
            rings_out = draw.random() < script.no_answer
        # Set before the Originate reaches the phone: the ring task has not run yet.
        self.emulator.set_policy(
            script.phone, PhonePolicy(ring_time=None if rings_out else script.answer_delay)
        )

    def _queued(self, queued: CallQueued) -> None:
        placed = self.placed.get(queued.call_id)
        if placed is None or placed.patience is not None or placed.script.patience is None:
            return
        placed.patience = self.clock.call_later(placed.script.patience, self._give_up, placed)

    def _give_up(self, placed: _Placed) -> None:
        if not placed.answered and not placed.call.ended.done():
            self.emulator.hangup(placed.call.name)

    def _agent_changed(self, change: AgentStateChanged) -> None:
        agent = self.agents.get(change.agent_id)
        if agent is None:
            return
        token = agent.token = object()
        script = agent.script
        if change.state is AgentState.ON_CALL and change.call_id is not None:
            self._talk(agent, change.call_id)
        elif change.state is AgentState.WRAP_UP and script.wrap_up_s is not None:
            self.later(script.wrap_up_s, lambda: self._end_wrap_up(agent, token))
        elif (
            change.state is AgentState.NOT_READY
            and change.previous is AgentState.RESERVED
            and script.ready_after_rona is not None
        ):
            self.later(script.ready_after_rona, lambda: self._ready_again(agent, token))

    def _end_wrap_up(self, agent: _Agent, token: object) -> None:
        agent_id = agent.script.agent_id
        if agent.token is token and self.controller.agent_state(agent_id) is AgentState.WRAP_UP:
            self.controller.end_wrap_up(agent_id)

    def _ready_again(self, agent: _Agent, token: object) -> None:
        agent_id = agent.script.agent_id
        if agent.token is token and self.controller.agent_state(agent_id) is AgentState.NOT_READY:
            self.controller.make_available(agent_id)

    def _talk(self, agent: _Agent, call_id: str) -> None:
        """The agent answered: hold and resume on the agent's phone, then the caller hangs up."""
        placed = self.placed.get(call_id)
        if placed is None:
            return
        placed.answered = True
        if placed.patience is not None:
            placed.patience.cancel()
        call = placed.script
        talk = call.talk if call.talk is not None else agent.script.talk_time
        talk = talk if talk is not None else DEFAULT_TALK_S
        live = self.controller.calls.get(call_id)
        agent_channel = live.leg.channel if live is not None and live.leg is not None else None
        if call.hold > 0 and agent_channel is not None:
            hold_at = call.hold_at if call.hold_at is not None else talk / 2
            hold_at = min(hold_at, talk)
            self.later(hold_at, lambda: self.emulator.hold(agent_channel, True))
            self.later(hold_at + call.hold, lambda: self.emulator.hold(agent_channel, False))
        caller = placed.call.name
        self.later(talk + call.hold, lambda: self.emulator.hangup(caller))

    # -- calls -------------------------------------------------------------------------

    async def place_calls(self) -> None:
        for script in self.scenario.calls:
            wait = script.at - self.clock.at()
            if wait > 0:
                await self.clock.sleep(wait)
            call = await self.emulator.place_call(
                script.caller, script.name, exten=script.dialled, dtmf=script.keys
            )
            self.placed[call.uniqueid] = _Placed(script, call)

    # -- settling ------------------------------------------------------------------------

    def unsettled(self) -> list[str]:
        """What is still going on: calls not ended, agents on a call or in wrap-up."""
        busy: list[str] = []
        for placed in self.placed.values():
            if not placed.call.ended.done():
                s = placed.script
                busy.append(f"call {s.number} from {s.caller} (at {s.at:g} s) not ended")
        for agent_id in self.agents:
            state = self.controller.agent_state(agent_id)
            if state not in _SETTLED:
                busy.append(f"agent {agent_id} {state.value}")
        if self.controller.calls:
            busy.append(f"{len(self.controller.calls)} calls in the ACD")
        return busy


# Talk time of a call whose script and agent give none.
DEFAULT_TALK_S = 60.0


async def run_scenario(
    scenario: Scenario,
    settings: Settings,
    *,
    speed: float = 1.0,
    by: tuple[str, ...] = ("centre", "queue"),
    keep_database: bool = False,
) -> dict[str, Any]:
    """Play `scenario` and return its report (JSON-ready): see the module docstring."""
    if speed <= 0:
        raise ValueError(f"speed must be positive, not {speed}")
    unknown = [b for b in by if b not in REPORT_BY]
    if unknown:
        raise ValueError(f"unknown report grouping {unknown}; one of {', '.join(REPORT_BY)}")
    async with _fresh_database(settings, keep=keep_database) as dsn:
        database = await Database.open(dsn, connect_timeout=settings.database.connect_timeout)
        try:
            await save_acd_config(database, scenario.acd)
        finally:
            await database.close()
        # A data folder of its own: the event log's spill file is one process's alone.
        data_dir = await asyncio.to_thread(tempfile.mkdtemp, prefix="ctiserver-sim-")
        try:
            run_settings = _settings_for(settings, scenario, dsn, data_dir)
            return await _play(scenario, run_settings, speed, by)
        finally:
            await asyncio.to_thread(shutil.rmtree, data_dir, True)


def _settings_for(settings: Settings, scenario: Scenario, dsn: str, data_dir: str) -> Settings:
    flows = str(scenario.flows) if scenario.flows is not None else settings.ivr.flows
    return replace(
        settings,
        server=replace(settings.server, data_dir=data_dir),
        database=replace(settings.database, dsn=dsn),
        acd=replace(settings.acd, config=""),
        ivr=replace(settings.ivr, flows=flows, reload_s=0.0, default=""),
        fastagi=replace(settings.fastagi, host="127.0.0.1", port=_free_port()),
        http=replace(settings.http, host="127.0.0.1", port=0),
        ami=replace(settings.ami, host="127.0.0.1", port=0),
        # The upkeep's child process would read the configured database, not this run's.
        metrics=replace(settings.metrics, summary_every_s=0.0),
    )


async def _play(
    scenario: Scenario, settings: Settings, speed: float, by: tuple[str, ...]
) -> dict[str, Any]:
    clock = IdleClock(speed, scenario.start)
    emulator = AsteriskEmulator(
        "127.0.0.1",
        0,
        settings.fastagi.host,
        settings.fastagi.port,
        clock=clock,
        users={settings.ami.username: settings.ami.secret},
        dialplan=_dialplan(scenario, f"{settings.fastagi.host}:{settings.fastagi.port}"),
    )
    server: Server | None = None
    clock.start(lambda: _queries_out(server))
    director: _Director | None = None
    placing: asyncio.Task[None] | None = None
    try:
        await emulator.start()
        settings = replace(settings, ami=replace(settings.ami, port=emulator.ami_port))
        server = Server(settings, clock=clock.time, call_later=clock.call_later)
        await server.start()
        async with asyncio.timeout(settings.ami.connect_timeout * 3):
            await server.ami.wait_ready()
        controller = server.acd
        assert controller is not None and server.database is not None
        assert server.events is not None
        director = _Director(scenario, emulator, controller, clock)
        controller.add_listener(director.on_decision)
        placing = asyncio.create_task(director.place_calls(), name="scenario-calls")
        await _settle(scenario, director, placing, clock)
        finished = clock.time()
        await server.events.flush()
        end = _report_end(scenario, finished)
        if finished > end:
            log.warning(
                "the scenario ran %.0f s past its duration; later events are not reported",
                finished - end,
            )
        config = controller.config
        metric_settings = MetricSettings(timezone=centre_timezone(config) or "UTC")
        reports: dict[str, Any] = {}
        for grouping in by:
            report = await historical_report(
                server.database,
                scenario.start,
                end,
                by=grouping,
                grain=Grain.RANGE,
                settings=metric_settings,
                config=config,
                as_of=end,
            )
            reports[grouping] = rounded(report.as_json())
        return {
            "scenario": scenario.name,
            "file": scenario.source,
            "seed": scenario.seed,
            "speed": speed,
            "start": scenario.start_text,
            "end_s": end - scenario.start,
            "settled_s": round(finished - scenario.start, 3),
            "calls": len(scenario.calls),
            "agents": len(scenario.agents),
            "rounding": {"seconds": 0, "ratios": RATIO_DIGITS},
            "problems": director.failures,
            "reports": reports,
        }
    finally:
        await clock.close()
        if placing is not None:
            placing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await placing
        if director is not None:
            director.close()
        try:
            if server is not None:
                await server.close()
        finally:
            await emulator.close()


def _queries_out(server: Server | None) -> bool:
    """Whether a database query is in progress (its answer is real-time work)."""
    if server is None or server.database is None:
        return False
    pool = server.database.pool
    return bool(pool.get_size() - pool.get_idle_size() > 0)


async def _settle(
    scenario: Scenario, director: _Director, placing: asyncio.Task[None], clock: IdleClock
) -> None:
    """Log the agents in, play until every call ended and no agent is busy (time stops
    there), or raise ScenarioStuck saying what is still going on."""
    last = max(
        (c.at + (c.patience or 0) + (c.talk or DEFAULT_TALK_S) + c.hold for c in scenario.calls),
        default=0.0,
    )
    wrap = max((a.wrap_up_s or 0) for a in scenario.agents)
    limit = last + wrap + _SETTLE_MARGIN_S
    clock.begin(lambda: placing.done() and not director.unsettled(), limit)
    for agent in scenario.agents:
        if agent.login_at > 0:
            director.later(agent.login_at, functools.partial(director.log_in, agent.agent_id))
        else:
            director.log_in(agent.agent_id)
    # A real-time guard too: emulated time that stops moving (never idle, nothing
    # scheduled) for _STALL_S real seconds ends the run.
    seen = clock.now
    while not clock.stopped.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STALL_S):
                await clock.stopped.wait()
        if not clock.stopped.is_set() and clock.now == seen:
            clock.overran = True
            break
        seen = clock.now
    if placing.done() and not placing.cancelled() and placing.exception() is not None:
        placing.result()  # a failure to place a call ends the run with it
    if clock.overran:
        busy = director.unsettled() or ["calls still being placed"]
        raise ScenarioStuck(
            f"{scenario.source}: not settled after {clock.at():.0f} emulated s: "
            + "; ".join(busy[:20])
            + (f" (and {len(busy) - 20} more)" if len(busy) > 20 else "")
        )


def _report_end(scenario: Scenario, finished: float) -> float:
    if scenario.duration is not None:
        return scenario.start + scenario.duration
    ran = max(finished - scenario.start, 1.0)
    return scenario.start + math.ceil(ran / 60.0) * 60.0


def _dialplan(scenario: Scenario, fastagi: str) -> Any:
    plan = load_dialplan(SHIPPED_DIALPLAN, {"CTISERVER": fastagi})
    for queue in sorted({c.queue for c in scenario.calls if c.queue is not None}):
        # A caller sent straight to a queue, as an operator's dialplan would
        # (the ACD section of the README), resuming like an IVR caller.
        plan.add(
            "from-callers",
            f"queue-{queue}",
            Step("Answer"),
            Step("AGI", f"agi://${{CTISERVER}}/queue?queue={queue}"),
            Step("Goto", "cti-after-agi,s,1"),
        )
    return plan


def rounded(report: dict[str, Any]) -> dict[str, Any]:
    """A report's figures as printed: seconds whole, ratios to RATIO_DIGITS digits
    (the emulator's own milliseconds, e.g. 14 ms from answer to FastAGI, do not show)."""
    rows = []
    for row in report.get("rows", []):
        row = dict(row)
        for part in ("figures", "agents"):
            if isinstance(row.get(part), dict):
                row[part] = {key: _rounded(key, value) for key, value in row[part].items()}
        rows.append(row)
    return {**report, "rows": rows}


def _rounded(key: str, value: Any) -> Any:
    if isinstance(value, dict):  # not-ready seconds by reason
        return {k: _rounded(key, v) for k, v in value.items()}
    if not isinstance(value, float):
        return value
    if key.endswith("_s") or key.endswith("_reason"):
        return round(value)
    return round(value, RATIO_DIGITS)


def _free_port() -> int:
    """A TCP port free on the loopback now (the emulator must know FastAGI's before it binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def _fresh_database(settings: Settings, *, keep: bool = False) -> AsyncIterator[str]:
    """A new, empty database for one run (its DSN), dropped afterwards unless `keep`."""
    name = f"ctiserver_sim_{uuid.uuid4().hex[:12]}"
    embedded = None
    if settings.database.dsn:
        admin_dsn = settings.database.dsn
        parts = urlsplit(admin_dsn)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("simulate needs database.dsn as a postgresql:// URL")
        dsn = urlunsplit(parts._replace(path=f"/{name}"))
    else:
        from ctiserver.store.embedded import acquire_embedded

        settings.data_path.mkdir(parents=True, exist_ok=True)
        embedded = await acquire_embedded(settings.data_path / "pgdata")
        admin_dsn = embedded.uri("postgres")
        dsn = embedded.uri(name)
    try:
        await _admin(admin_dsn, f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        try:
            yield dsn
        finally:
            if keep:
                log.info("simulation database kept: %s", name)
            else:
                await _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        if embedded is not None:
            await embedded.release()


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(statement, timeout=60)
    finally:
        await conn.close(timeout=5)
