"""`ctiserver demo`: a whole contact centre on one machine, with traffic.

It starts, in this order: the Asterisk emulator (AMI, running the shipped
dialplans/extensions.conf so callers go through the IVR flows of flows/), the
server as `ctiserver run` builds it (PostgreSQL, embedded when `database.dsn`
is empty, the ACD, IVR, desktop, wallboard, metrics) on the demo centre
(centre.py), the sample customers (customers.py), emulated phones for every
agent and a far end on the trunk for callbacks, bot agents (bots.py) on every
agent but the human seats, and Poisson callers (callers.py). It prints where to
sign in, then a progress line every `progress_s` with the server's live figures
(metrics/live.py: today's offered, answered, abandoned; calls waiting; agents by
state), until Ctrl-C (SIGINT), SIGTERM or the duration; then it closes
everything in order and the embedded PostgreSQL stops with the database.

Time is real: the server's ACD, desktop and metrics run on the wall clock, so an
emulator running faster would not be a faster centre but a different one
(ring times shorter than they look, wrap-ups longer); there is no speed option.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ctiserver.app import Server
from ctiserver.auth.demo import demo_password
from ctiserver.auth.passwords import hash_password, verify_password
from ctiserver.config import Settings
from ctiserver.demo.bots import BotAgent, BotTimings, SignInRefused
from ctiserver.demo.callers import CallerMix, SyntheticCallers
from ctiserver.demo.centre import (
    BANK_LINE,
    TRAVEL_LINE,
    DemoCentre,
    demo_centre,
    load_example,
    shipped_file,
    write_demo_centre,
)
from ctiserver.demo.customers import SAMPLE_CUSTOMERS, seed_customers
from ctiserver.lifecycle import Service
from ctiserver.sim.dialplan_file import load_dialplan
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.phones import PhonePolicy
from ctiserver.store.accounts import AccountExists, create_account, get_account

log = logging.getLogger(__name__)

DEFAULT_BOTS = 4  # the sample centre's agents 1003-1006
AMI_READY_S = 15.0
LOG_OUT_S = 3.0
# Ring times of the emulated phones: a person's seat rings long enough to see the pop.
HUMAN_RING_S = 3.0
BOT_RING_S = (1.5, 4.0)
# The far end of the trunk: customers called back (and transfers out) answer after this
# and hang up at the latest after the cap, so no call outlives its agent.
FAR_END = PhonePolicy(ring_time=4.0, talk_time=600.0)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    calls_per_minute: float = 3.0
    bots: int = DEFAULT_BOTS
    duration_s: float | None = None  # None: until Ctrl-C
    seed: int | None = None
    progress_s: float = 10.0
    callers: CallerMix | None = None  # None: CallerMix(calls_per_minute)
    bot_timings: BotTimings = field(default_factory=BotTimings)

    def mix(self) -> CallerMix:
        if self.callers is not None:
            return dataclasses.replace(self.callers, calls_per_minute=self.calls_per_minute)
        return CallerMix(calls_per_minute=self.calls_per_minute)


def agent_login(agent_id: str) -> str:
    """The demo account of an ACD agent (auth/demo.py names them so)."""
    return f"agent{agent_id}" if agent_id.isdigit() else agent_id


def _print(line: str) -> None:
    print(line, flush=True)


class Demo(Service):
    """The running demo; `start()` brings it all up, `close()` takes it all down."""

    def __init__(
        self, settings: Settings, options: DemoOptions, *, out: Callable[[str], None] = _print
    ) -> None:
        self.options = options
        self.out = out
        self.rng = random.Random(options.seed)
        self.settings = settings
        self.centre: DemoCentre | None = None
        self.emulator: AsteriskEmulator | None = None
        self.server: Server | None = None
        self.callers: SyntheticCallers | None = None
        self.bots: list[BotAgent] = []
        self.refused_bots: dict[str, str] = {}  # agent id -> why it is not playing
        self.human_logins: dict[str, bool] = {}  # login -> its demo password works
        self._progress: asyncio.Task[None] | None = None
        self._started_at = 0.0

    @property
    def base_url(self) -> str:
        assert self.server is not None
        host = self.settings.http.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.server.http_port}"

    # -- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        await asyncio.to_thread(settings.data_path.mkdir, parents=True, exist_ok=True)
        example, source = await asyncio.to_thread(load_example)
        centre = demo_centre(example, self.options.bots)
        self.centre = centre
        acd_file = await asyncio.to_thread(write_demo_centre, centre, settings.data_path, source)
        flows = Path(settings.ivr.flows)
        if not await asyncio.to_thread(flows.is_dir):
            flows = shipped_file("flows")
        dialplan_file = shipped_file("dialplans/extensions.conf")
        fastagi = f"{settings.fastagi.host}:{settings.fastagi.port}"
        dialplan = await asyncio.to_thread(load_dialplan, dialplan_file, {"CTISERVER": fastagi})
        self.emulator = AsteriskEmulator(
            settings.ami.host,
            settings.ami.port,
            settings.fastagi.host,
            settings.fastagi.port,
            users={settings.ami.username: settings.ami.secret},
            dialplan=dialplan,
        )
        await self.emulator.start()
        # Phones registered before the server's first AMI login sees the endpoints.
        self._add_phones(centre)
        settings = dataclasses.replace(
            settings,
            ami=dataclasses.replace(settings.ami, port=self.emulator.ami_port),
            acd=dataclasses.replace(settings.acd, config=str(acd_file)),
            ivr=dataclasses.replace(settings.ivr, flows=str(flows)),
        )
        self.settings = settings
        self.server = Server(settings, demo_accounts=True)
        await self.server.start()
        # The dialplan reaches the FastAGI port actually bound (0 in tests).
        self.emulator.pbx.globals["CTISERVER"] = f"{settings.fastagi.host}:{self.server.agi.port}"
        database = self.server.database
        assert database is not None
        seeded = await seed_customers(database)
        report = seeded.customers
        log.info(
            "demo customers: %d created, %d updated, %d already there; %d past interactions",
            report.created,
            report.updated,
            report.unchanged,
            seeded.history,
        )
        await self._check_accounts(centre)
        async with asyncio.timeout(AMI_READY_S):
            await self.server.ami.wait_ready()
        await self._start_bots(centre)
        self.callers = SyntheticCallers(
            self.emulator, self.options.mix(), random.Random(self.rng.random()), SAMPLE_CUSTOMERS
        )
        await self.callers.start()
        self._started_at = time.monotonic()  # progress lines count from the first caller
        if self.options.progress_s > 0:
            self._progress = asyncio.create_task(self._report_progress(), name="demo-progress")

    def _add_phones(self, centre: DemoCentre) -> None:
        assert self.emulator is not None
        bots = {agent.agent_id for agent in centre.bots}
        for agent in centre.config.agents:
            tech, _, endpoint = agent.endpoint.partition("/")
            if tech.upper() != "PJSIP" or not endpoint:
                continue
            ring = self.rng.uniform(*BOT_RING_S) if agent.agent_id in bots else HUMAN_RING_S
            # Stays on the call until the desktop (or the caller) hangs up.
            self.emulator.add_agent_phone(endpoint, PhonePolicy(ring_time=ring))
        self.emulator.add_phone("pstn", FAR_END)

    async def _check_accounts(self, centre: DemoCentre) -> None:
        """Bots need their accounts (made with the demo password when missing: the server
        only makes demo accounts on an empty accounts table); humans are told theirs."""
        database = self.server.database if self.server is not None else None
        assert database is not None
        for agent in centre.bots:
            login = agent_login(agent.agent_id)
            if await get_account(database, login) is None:
                with contextlib.suppress(AccountExists):  # made meanwhile: fine
                    await create_account(
                        database,
                        login,
                        role="agent",
                        password_hash=await hash_password(demo_password(login)),
                        name=agent.name,
                        agent_login=agent.agent_id,
                    )
        for login in [agent_login(a.agent_id) for a in centre.humans] + ["super"]:
            account = await get_account(database, login)
            self.human_logins[login] = account is not None and await verify_password(
                account.password_hash, demo_password(login)
            )

    async def _start_bots(self, centre: DemoCentre) -> None:
        timings = self.options.bot_timings
        bots = [
            BotAgent(
                agent,
                self.base_url,
                agent_login(agent.agent_id),
                demo_password(agent_login(agent.agent_id)),
                timings,
                random.Random(self.rng.random()),
            )
            for agent in centre.bots
        ]

        async def start(bot: BotAgent) -> BotAgent | None:
            try:
                await bot.start()
            except (SignInRefused, aiohttp.ClientError, OSError, TimeoutError) as exc:
                # A bot that cannot sign in leaves its seat empty; the demo goes on.
                self.refused_bots[bot.agent_id] = str(exc) or type(exc).__name__
                log.warning("demo bot %s not started: %s", bot.agent_id, exc)
                await bot.close()
                return None
            return bot

        started = await asyncio.gather(*(start(bot) for bot in bots))
        self.bots = [bot for bot in started if bot is not None]

    # -- what the demo prints ----------------------------------------------------------------

    def banner(self) -> list[str]:
        assert self.centre is not None
        centre, base = self.centre, self.base_url
        lines = [
            f"ctiserver demo: the sample card-service centre, {len(self.bots)} bot agents,"
            f" {self.options.calls_per_minute:g} calls/min"
            + (f" (seed {self.options.seed})" if self.options.seed is not None else ""),
            f"  agent desktop  {base}/desktop",
            f"  wallboard      {base}/wallboard",
        ]
        label = "  sign in as    "
        for agent in centre.humans:
            login = agent_login(agent.agent_id)
            lines.append(f"{label} {self._credentials(login)}  ({agent.name}, a free seat for you)")
            label = " " * len(label)
        lines.append(
            f"{label} {self._credentials('super')}  (supervisor: wallboard, watch any desktop)"
        )
        bots = ", ".join(f"{bot.agent_id} {bot.agent.name}" for bot in self.bots) or "none"
        lines.append(f"  bot agents     {bots}")
        for agent_id, why in sorted(self.refused_bots.items()):
            lines.append(f"  (bot {agent_id} is not playing: {why})")
        lines.append(
            f"  callers dial   {BANK_LINE} (bank card hotline, most calls) and"
            f" {TRAVEL_LINE} (travel line)"
        )
        duration = self.options.duration_s
        lines.append(
            "  until Ctrl-C"
            if duration is None
            else f"  for {duration / 60:g} minutes (Ctrl-C stops sooner)"
        )
        return lines

    def _credentials(self, login: str) -> str:
        if self.human_logins.get(login):
            return f"{login} / {demo_password(login)}"
        return f"{login} (password not the demo one: accounts existed before the demo)"

    def progress_line(self) -> str:
        """Calls placed (the demo's own count), then the server's live figures."""
        elapsed = int(time.monotonic() - self._started_at)
        placed = self.callers.stats.placed if self.callers is not None else 0
        text = f"[{elapsed // 60:02d}:{elapsed % 60:02d}] callers placed {placed}"
        metrics = self.server.metrics if self.server is not None else None
        snapshot: dict[str, Any] = metrics.snapshot() if metrics is not None else {}
        centre = snapshot.get("centre")
        if not centre:
            return text + " | live figures not ready yet"
        today, now = centre["today"], centre["now"]
        states = now["agents_by_state"]
        wrapped = sum(bot.stats.wrapped_up for bot in self.bots)
        return (
            f"{text} | today: offered {today['offered']}, answered {today['answered']},"
            f" abandoned {today['abandoned']}, callbacks {today['callbacks']}"
            f" | waiting {now['waiting']} (longest {now['longest_wait_s']:.0f} s)"
            f" | agents: {states.get('on_call', 0)} on call, {states.get('reserved', 0)} ringing,"
            f" {states.get('wrap_up', 0)} wrap-up, {states.get('available', 0)} available"
            f" | bot wrap-ups {wrapped}"
        )

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(self.options.progress_s)
            self.out(self.progress_line())

    def summary(self) -> list[str]:
        lines = ["ctiserver demo stopped."]
        if self.callers is not None:
            stats = self.callers.stats
            lines.append(
                f"  callers: {stats.placed} placed, {stats.connected} reached an agent,"
                f" {stats.gave_up} gave up waiting, {stats.callbacks_asked} asked for a callback,"
                f" {stats.surveys_answered} answered the survey"
            )
        if self.bots:
            lines.append(
                f"  bots: {sum(b.stats.answered for b in self.bots)} calls answered,"
                f" {sum(b.stats.wrapped_up for b in self.bots)} wrap-ups saved"
            )
        return lines

    # -- stop ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Everything down in order; each part is closed even when an earlier one fails."""
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
        callers = self.callers
        await self._step("callers", callers.stop_arrivals() if callers else None)
        # Bots log out (after their call, if any) and every caller hangs up: the event
        # log ends with the agents logged out and no call open.
        for bot in self.bots:
            bot.stop_taking_calls()
        if callers is not None:
            callers.hang_up_all()
        if self.emulator is not None and "pstn" in self.emulator.phones:
            self.emulator.phone_hangup("pstn")  # customers being called back hang up too
        await self._step(
            "bot log-outs", asyncio.gather(*(bot.log_out(LOG_OUT_S) for bot in self.bots))
        )
        for bot in self.bots:
            await self._step(f"bot {bot.agent_id}", bot.close())
        await self._step("callers", callers.close() if callers else None)
        if self.server is not None:
            await self._step("server", self.server.close())
        if self.emulator is not None:
            await self._step("emulator", self.emulator.close())

    async def _step(self, what: str, awaitable: Any) -> None:
        if awaitable is None:
            return
        try:
            await awaitable
        except Exception:
            log.exception("demo: error while stopping the %s; continuing", what)


async def run_demo(
    settings: Settings, options: DemoOptions, *, out: Callable[[str], None] = _print
) -> Demo:
    """`ctiserver demo`: run until SIGINT/SIGTERM or `options.duration_s`, then stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    demo = Demo(settings, options, out=out)
    try:
        database = (
            "the database of database.dsn"
            if settings.database.dsn
            else f"embedded PostgreSQL in {settings.data_path / 'pgdata'}"
        )
        out(f"ctiserver demo: starting {database}, the server and the Asterisk emulator ...")
        await demo.start()
        for line in demo.banner():
            out(line)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(options.duration_s):
                await stop.wait()
    finally:
        out("stopping ...")
        await demo.close()
        for signum in signals:
            loop.remove_signal_handler(signum)
    for line in demo.summary():
        out(line)
    return demo
