"""The running server: storage, event log, AMI link, FastAGI server and HTTP, started and
stopped in order; plus the entry points of `ctiserver run`, `sim` and `migrate`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from ctiserver.acd.call_controls import CallControls
from ctiserver.acd.config import AcdConfig, load_acd_config
from ctiserver.acd.config_store import load_acd_config_from_db
from ctiserver.acd.controller import CallController, ControllerSettings, TimerScheduler
from ctiserver.acd.fastagi import QueueEntry
from ctiserver.acd.recovery import load_logged_state, restore_controller
from ctiserver.acd.supervision import Supervision
from ctiserver.agent_desktop.websocket import DesktopService, add_desktop_routes
from ctiserver.asterisk.agi.server import FastAgiServer
from ctiserver.asterisk.ami.client import AmiClient, AmiConfig
from ctiserver.asterisk.ami.errors import AmiError
from ctiserver.auth.demo import create_demo_accounts
from ctiserver.auth.sessions import SessionAuthenticator
from ctiserver.config import Settings
from ctiserver.event_loop import running_loop_name
from ctiserver.http.app import WEB_DIR, build_app
from ctiserver.http.customers import add_customer_routes
from ctiserver.http.metrics import add_metrics_routes
from ctiserver.http.prometheus import add_prometheus_routes, offer_latency_histogram
from ctiserver.http.static import add_web_routes
from ctiserver.ivr.library import FlowLibrary
from ctiserver.ivr.service import IvrService
from ctiserver.metrics.live import LiveMetrics
from ctiserver.metrics.reports import centre_timezone
from ctiserver.metrics.settings import MetricSettings
from ctiserver.metrics.summary_upkeep import SummaryUpkeep
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.phones import PhonePolicy
from ctiserver.sim.traffic import Traffic, add_agent_phones, generate_calls
from ctiserver.store.customers import find_customers_by_phone
from ctiserver.store.database import Database
from ctiserver.store.events import Event, EventLog
from ctiserver.wallboard.socket import WallboardService, add_wallboard_routes
from ctiserver.wallboard.thresholds import load_thresholds

log = logging.getLogger(__name__)

# The sample centre the emulator demo runs when nothing else is configured.
DEMO_ACD_CONFIG = Path("acd.example.toml")
# Bounds for shutting each part down, so Ctrl-C never hangs.
_CLOSE_S = 10.0


class Server:
    """One ctiserver node. `start()` brings the parts up bottom-up, `close()` top-down.

    `demo_accounts` (the emulator demo only) creates sign-in-able demo
    accounts when the accounts table is empty. `clock` (epoch seconds) is the
    time the ACD, the IVR and their events run on and `call_later` runs the
    ACD's timers in its seconds: real time by default, the emulator's clock in
    `ctiserver simulate` (so durations are emulated seconds).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        demo_accounts: bool = False,
        clock: Callable[[], float] = time.time,
        call_later: TimerScheduler | None = None,
    ) -> None:
        self.settings = settings
        self._demo_accounts = demo_accounts
        self.clock = clock
        self._call_later = call_later
        self.database: Database | None = None
        self.events: EventLog | None = None
        self.ami = AmiClient(_ami_config(settings))
        self.agi = FastAgiServer(
            settings.fastagi.host,
            settings.fastagi.port,
            command_timeout=settings.fastagi.command_timeout,
        )
        self._http: web.AppRunner | None = None
        self.http_port = 0
        self.ami.add_resync_hook(self._record_asterisk_link)
        self.acd: CallController | None = None
        self.queue_entry: QueueEntry | None = None
        ivr = settings.ivr
        self.flows = FlowLibrary(Path(ivr.flows), default=ivr.default, poll_s=ivr.reload_s)
        self.ivr: IvrService | None = None
        self.controls: CallControls | None = None
        self.desktop: DesktopService | None = None
        self.metrics: LiveMetrics | None = None
        # Observed by the call controller at each agent leg's Ringing, read by /metrics.
        self.offer_latency = offer_latency_histogram()
        # Recent days' summary rows for fast historical reports (metrics/summary.py).
        self.summary_upkeep = SummaryUpkeep(settings.metrics.summary_every_s)
        self.supervision: Supervision | None = None
        self.wallboard: WallboardService | None = None

    async def start(self) -> None:
        settings = self.settings
        settings.data_path.mkdir(parents=True, exist_ok=True)
        self.database = await Database.open(
            settings.database.dsn,
            data_dir=settings.data_path,
            connect_timeout=settings.database.connect_timeout,
        )
        log.info("database ready: %s", self.database.target)
        log.info("event loop: %s", running_loop_name())
        self.events = EventLog(self.database, settings.data_path)
        await self.events.start()
        await self._start_acd(self.database, self.events)
        if self.acd is not None:
            self.acd.add_ringing_listener(lambda _offer, s: self.offer_latency.observe(s))
        await self._start_ivr(self.database, self.events)
        # Before the AMI link: the controls and the hub follow every event from the first.
        await self._start_desktop(self.database, self.events)
        await self._start_live_metrics(self.database, self.events)
        await self.agi.start()
        await self.ami.start()
        if self._demo_accounts:
            await self._create_demo_accounts(self.database)
        authenticator = SessionAuthenticator(self.database, settings.auth)
        app = build_app(self.health, authenticator, secure_cookie=settings.http.secure_cookie)
        add_customer_routes(app, self.database)
        add_metrics_routes(app, self.database, self._acd_config_now)
        add_prometheus_routes(app, self, token=settings.http.metrics_token)
        if self.desktop is not None:
            add_desktop_routes(app, self.desktop.hub)
        thresholds = await asyncio.to_thread(load_thresholds, Path(settings.wallboard.thresholds))
        self.wallboard = add_wallboard_routes(
            app, self.metrics, supervision=self.supervision, thresholds=thresholds
        )
        add_web_routes(app, WEB_DIR)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, settings.http.host, settings.http.port)
        await site.start()
        self._http = runner
        self.http_port = int(runner.addresses[0][1])  # the real port when configured as 0
        log.info(
            "HTTP on http://%s:%d (health: /health, sign-in: /login)",
            settings.http.host,
            self.http_port,
        )

    @property
    def web_app(self) -> web.Application | None:
        """The running HTTP application (its routes), None before start()."""
        return self._http.app if self._http is not None else None

    async def _start_acd(self, database: Database, events: EventLog) -> None:
        """Routing configuration, the call controller rebuilt from the event log, FastAGI routes."""
        config = await self._acd_config(database)
        self.acd = CallController(
            config, self.ami, events=events, clock=self.clock, call_later=self._call_later
        )
        # Flushed first so recovery reads every event of the previous run.
        await events.flush()
        logged = await load_logged_state(database, now=datetime.fromtimestamp(self.clock(), UTC))
        restore_controller(self.acd, logged, self.clock())
        await self.acd.start()
        self.queue_entry = QueueEntry(self.acd, self._customer_grade)
        self.queue_entry.register(self.agi)
        log.info(
            "ACD: %d queues, %d agents, %d skills",
            len(config.queues),
            len(config.agents),
            len(config.skills),
        )

    async def _start_ivr(self, database: Database, events: EventLog) -> None:
        """Flows from their folder (reloaded while running) behind the `ivr` FastAGI script."""
        await self.flows.start()
        spool = self.acd.settings if self.acd is not None else ControllerSettings()
        self.ivr = IvrService(
            self.flows,
            queue_entry=self.queue_entry,
            database=database,
            events=events,
            # The IVR's messages go where the queues' go, named after the call.
            voicemail_file=lambda call_id: (
                f"{spool.voicemail_dir}/{spool.voicemail_prefix}{call_id}"
            ),
            clock=self.clock,
        )
        self.ivr.register(self.agi)
        log.info(
            "IVR: %d flows from %s (%s)",
            len(self.flows.flows),
            self.flows.folder,
            ", ".join(f"{f.id} {f.version}" for f in self.flows.flows.values()) or "none",
        )

    async def _create_demo_accounts(self, database: Database) -> None:
        agents = self.acd.config.agents if self.acd is not None else ()
        created = await create_demo_accounts(
            database, [(agent.agent_id, agent.name) for agent in agents]
        )
        if created:
            log.info(
                "demo accounts created (password: demo + login without 'agent', see README): %s",
                ", ".join(f"{account.login} ({account.role})" for account in created),
            )

    async def _start_live_metrics(self, database: Database, events: EventLog) -> None:
        """Today's and the sliding window's figures, kept up to date from new events."""
        if self.acd is None:
            return
        self.metrics = LiveMetrics(
            database,
            events,
            settings=MetricSettings(timezone=centre_timezone(self.acd.config) or "UTC"),
            config=self.acd.config,
            engine=self.acd.engine.snapshot,
            clock=self.clock,
        )
        await self.metrics.start()
        await self.summary_upkeep.start()

    def _acd_config_now(self) -> AcdConfig | None:
        """The ACD configuration in force (reports read queue skills and names from it)."""
        return self.acd.config if self.acd is not None else None

    async def _start_desktop(self, database: Database, events: EventLog) -> None:
        """Agents' call controls and the desktop hub behind `/ws/desktop`."""
        if self.acd is None:
            return
        self.controls = CallControls(self.acd)
        await self.controls.start()
        self.desktop = DesktopService(
            self.acd, database=database, events=events, ivr=self.ivr, controls=self.controls
        )
        await self.desktop.start()
        # Supervisors' listen / whisper / barge and forced agent states (the wallboard's).
        self.supervision = Supervision(self.acd, self.controls)
        await self.supervision.start()

    async def _acd_config(self, database: Database) -> AcdConfig:
        if self.settings.acd.config:
            return load_acd_config(Path(self.settings.acd.config))
        config = await load_acd_config_from_db(database)
        demo = self._demo_accounts and not config.queues
        if demo and await asyncio.to_thread(DEMO_ACD_CONFIG.is_file):
            # The emulator demo with nothing configured: the documented sample centre,
            # so there are agents to sign in as and queues to wait in.
            log.info("ACD: no configuration in the database; the demo uses %s", DEMO_ACD_CONFIG)
            return await asyncio.to_thread(load_acd_config, DEMO_ACD_CONFIG)
        return config

    async def _customer_grade(self, number: str) -> str | None:
        if self.database is None:
            return None
        customers = await find_customers_by_phone(self.database, number)
        return customers[0].grade if customers else None

    async def close(self) -> None:
        await self.summary_upkeep.close()
        if self.metrics is not None:
            await self.metrics.close()
        # The desktop first: it closes its websockets, which would otherwise
        # hold the HTTP shutdown for its whole timeout.
        if self.supervision is not None:
            await self.supervision.close()
        if self.desktop is not None:
            await self.desktop.close()
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        if self.controls is not None:
            await self.controls.close()
        await self.agi.close()
        await self.flows.close()
        if self.acd is not None:
            await self.acd.close()
        await self.ami.close()
        if self.events is not None:
            await self.events.close(grace_s=_CLOSE_S)
        if self.database is not None:
            await self.database.close(grace_s=_CLOSE_S)

    async def health(self) -> dict[str, Any]:
        """What /health reports: each component with `ok` and what an operator needs."""
        database_ok = self.database is not None and await self.database.healthy()
        report: dict[str, Any] = {
            "database": {"ok": database_ok},
            "ami": {
                "ok": self.ami.connected,
                "banner": self.ami.banner,
                "logins": self.ami.logins,
            },
            "fastagi": {"ok": True, "port": self.agi.port, "sessions": self.agi.connection_count},
        }
        if self.acd is not None:
            report["acd"] = {
                "ok": True,
                "queues": len(self.acd.config.queues),
                "agents": len(self.acd.config.agents),
                "calls": len(self.acd.calls),
            }
        report["ivr"] = {
            # Not ok while a flow file fails its checks (a previous version may still serve).
            "ok": not self.flows.problems,
            "flows": {f.id: f.version for f in self.flows.flows.values()},
            "problems": self.flows.problems,
            "calls": len(self.ivr.active) if self.ivr is not None else 0,
        }
        if self.metrics is not None:
            # Not ok when today's events could not be read at start (live ones only).
            report["metrics"] = {
                "ok": self.metrics.loaded,
                "last_refresh_s": self.metrics.last_refresh_s,
            }
        if self.events is not None:
            stats = self.events.stats()
            # Not ok while writes fail: events are safe (buffered or
            # spilled to disk) but not yet in the database.
            report["event_log"] = {
                "ok": stats.failing_since is None,
                "buffered": stats.buffered,
                "spill_bytes": stats.spill_bytes,
                "written": stats.written,
                "failing_since": stats.failing_since.isoformat() if stats.failing_since else None,
            }
        return report

    async def _record_asterisk_link(self, client: AmiClient) -> None:
        """After every (re)login: note the link and what Asterisk has live.

        Asterisk replays nothing after a drop (transcript 13), so the live
        channel list is the starting point any reconciliation builds on.
        """
        channels: list[str] = []
        try:
            result = await client.action("CoreShowChannels")
            channels = [item.get("Channel") or "" for item in result.items]
        except (AmiError, TimeoutError) as exc:
            log.warning("could not list Asterisk channels after login: %s", exc)
        log.info("AMI logged in (%s), %d live channels", client.banner, len(channels))
        if self.events is not None:
            self.events.append(
                Event(
                    type="asterisk.linked",
                    payload={
                        "banner": client.banner,
                        "login": client.logins,
                        "channels": channels,
                    },
                    occurred_at=datetime.fromtimestamp(self.clock(), UTC),
                )
            )


def _ami_config(settings: Settings) -> AmiConfig:
    ami = settings.ami
    return AmiConfig(
        host=ami.host,
        port=ami.port,
        username=ami.username,
        secret=ami.secret,
        auth="md5" if ami.auth == "md5" else "plain",
        connect_timeout=ami.connect_timeout,
        action_timeout=ami.action_timeout,
        ping_interval=ami.ping_interval,
    )


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _emulator(settings: Settings, speed: float = 1.0) -> AsteriskEmulator:
    return AsteriskEmulator(
        settings.ami.host,
        settings.ami.port,
        settings.fastagi.host,
        settings.fastagi.port,
        speed=speed,
        users={settings.ami.username: settings.ami.secret},
    )


async def run_server(settings: Settings, *, with_emulator: bool = False) -> None:
    """`ctiserver run`: serve until SIGINT/SIGTERM, then shut down in order."""
    emulator = _emulator(settings) if with_emulator else None
    server = Server(settings, demo_accounts=with_emulator)
    try:
        if emulator is not None:
            await emulator.start()
            log.info("Asterisk emulator: AMI on %s:%d", settings.ami.host, emulator.ami_port)
        await server.start()
        if emulator is not None and server.acd is not None:
            _add_demo_phones(emulator, server.acd.config)
        print(
            f"ctiserver running: http://{settings.http.host}:{server.http_port}/health"
            f" (Ctrl-C to stop)",
            flush=True,
        )
        await _until_signalled()
    finally:
        try:
            await server.close()
        except Exception:
            log.exception("error while shutting down; continuing")
        if emulator is not None:
            await emulator.close()


def _add_demo_phones(emulator: AsteriskEmulator, config: AcdConfig) -> None:
    """A registered phone for every agent on an emulated PJSIP endpoint: it rings
    two seconds, then stays on the call until the caller or the desktop hangs up."""
    for agent in config.agents:
        tech, _, endpoint = agent.endpoint.partition("/")
        if tech.upper() == "PJSIP" and endpoint:
            emulator.add_agent_phone(endpoint, PhonePolicy(ring_time=2.0))


async def run_emulator(settings: Settings, traffic: Traffic, *, speed: float = 1.0) -> None:
    """`ctiserver sim`: the emulated Asterisk with phones and callers, until SIGINT/SIGTERM."""
    rng = random.Random(traffic.seed)
    emulator = _emulator(settings, speed)
    await emulator.start()
    add_agent_phones(emulator, traffic, rng)
    print(
        f"Asterisk emulator: AMI on {settings.ami.host}:{emulator.ami_port}"
        f" (user {settings.ami.username}), {traffic.agents} agent phones,"
        f" {traffic.calls_per_minute:g} calls/min to FastAGI"
        f" {settings.fastagi.host}:{settings.fastagi.port} (Ctrl-C to stop)",
        flush=True,
    )
    callers = asyncio.create_task(generate_calls(emulator, traffic, rng), name="sim-callers")
    try:
        await _until_signalled()
    finally:
        callers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await callers
        await emulator.close()


async def migrate(settings: Settings) -> list[str]:
    """`ctiserver migrate`: apply pending migrations, return what was applied."""
    from ctiserver.store.migrator import apply_migrations

    settings.data_path.mkdir(parents=True, exist_ok=True)
    database = await Database.open(
        settings.database.dsn,
        data_dir=settings.data_path,
        connect_timeout=settings.database.connect_timeout,
        migrate=False,
    )
    try:
        async with database.acquire() as connection:
            applied = await apply_migrations(connection)
        return [migration.filename for migration in applied]
    finally:
        await database.close()
