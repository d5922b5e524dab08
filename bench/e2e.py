"""End-to-end load: the whole server at N calls/s with M agents and their desktops, for T minutes.

Three processes besides this one, on real sockets, as in production:
  emulator  the Asterisk emulator running the shipped dialplan: M registered agent
            phones (answer after --ring s, hang up after a talk time of 0.7-0.9 x M / N,
            so ~80 % of the agents are busy: loaded, not saturated) and callers at a
            Poisson rate N on extension 100, each from a seeded customer's number;
  server    ctiserver's full `Server` as `ctiserver run` starts it (PostgreSQL, event
            log, FastAGI, AMI, ACD, IVR, desktop hub, live metrics, HTTP): the callers
            go dialplan -> FastAGI `ivr` -> the bench flow (a prompt, a caller look-up)
            -> the `support` queue -> an agent;
  desktops  --clients processes of websocket desktops, one per agent, signed in with a
            real session: `ready` at connect, and after each call `wrap_up` (after
            --wrap s) so the agent is available again (the queue's own wrap-up timer is
            60 s: an agent whose desktop fails to wrap up drops out of service), and
            `ready` again after the ACD made the agent not ready (an offer not answered);
  this one  creates a fresh bench database, seeds it, starts the others, samples every
            process's CPU and the server's RSS every 10 s, and checks at the end that
            every call placed reached an outcome (none lost, none stuck).

Timed on CLOCK_MONOTONIC (`time.monotonic()`, one clock for every process on Linux):
  offer latency  as bench/offer_latency.py defines it: from the routing input that led
                 to the offer (a call queued while an agent was free, or an agent made
                 available while calls waited) to the AMI `Newstate Ringing` of the agent
                 leg the controller originated, both seen in the server process;
  pop latency    from the `Offer` decision reaching the controller's listeners (a
                 listener registered before the desktop hub's) to the agent's desktop
                 process having parsed the `offer` whose pop is complete (customer,
                 history); `pop_first_*` is the first `offer` message, complete or not.
Only offers triggered after the warm-up and before the load ends count.

    python bench/e2e.py                  # the target: 50 calls/s, 2,000 agents, 10 min after 21
    python bench/e2e.py --cps 5 --agents 200 --minutes 1 --warmup 20
    python bench/e2e.py --cps 2 --agents 10 --minutes 0.2 --warmup 5 --customers 50

Diagnostics: --py-spy (sample the server over the window), --profile (cProfile),
--tracemalloc (what the window allocated and still holds after the drain), --census (objects
by type that grew from the warm-up's end to the load's end, and to after the drain),
--no-live-metrics, --event-loop asyncio (the server on asyncio's loop instead of uvloop).

Last line JSON: {"calls_per_s", "agents", "minutes", "offer_p99_ms", "pop_p99_ms", "lost",
"stuck", "rss_mb_start", "rss_mb_end", ...}. Exit status 1 when a call was lost or stuck.
Target (issue 7): 50 calls/s with 2,000 agents for 10 minutes on one 2-core machine, memory
flat after the warm-up, no call lost or stuck.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ctypes
import gc
import json
import logging
import multiprocessing
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import psutil  # noqa: E402
from bench_seed import (  # noqa: E402
    FIRST_AGENT,
    admin_execute,
    bench_settings,
    keep_pinging,
    local_pg_listens,
    open_ready_desk,
    phone_of,
    raise_nofile,
    seed_centre,
    start_emulator,
    wait_for_ami,
    watch_lag,
)
from recv_heap import glibc_heap_mb  # noqa: E402

from ctiserver import event_loop  # noqa: E402
from ctiserver.event_loop import EVENT_LOOPS  # noqa: E402

BENCH_DB = "ctiserver_bench_e2e"
LOCAL_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
QUEUE = "support"
# The queue's own wrap-up: long, so the desktops' `wrap_up` is what frees the agents.
QUEUE_WRAP_UP_S = 60.0
RING_TIMEOUT_S = 20.0
SAMPLE_S = 10.0
CONNECT_CONCURRENCY = 64
# Terminal outcomes a call leaves in the event log (call_left "overflowed" is not one).
FINAL_LEFT = ("abandoned", "callback", "voicemail", "closed")

# The IVR the callers go through: a short prompt, the caller recognised by number, the queue.
BENCH_FLOW = """\
name: 压测热线 Bench line
numbers: ["100"]
start: welcome
language: zh
nodes:
  welcome:
    type: play
    play: [beep]
    next: recognise_caller
  recognise_caller:
    type: lookup
    by: caller
    next: to_queue
    not_found: to_queue
  to_queue:
    type: queue
    label: 客户服务 Support
    queue: support
"""


def percentile(values: list[float], share: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else None


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def talk_range(agents: int, cps: float) -> tuple[float, float]:
    """Talk times that keep ~80 % of the agents on calls (Erlang: load = N x talk / M)."""
    mean = 0.8 * agents / cps
    return 0.875 * mean, 1.125 * mean


# -- the database -------------------------------------------------------------------


async def seed(dsn: str, customers: int, history: int, agents: int) -> dict[str, str]:
    """Migrate the fresh database; customers with history; an account and a session per
    agent. Returns {agent id: session token}."""
    return await seed_centre(
        dsn,
        customers=customers,
        history=history,
        agents=agents,
        queue=QUEUE,
        notes="客户询问账单明细，已解释。",
        recordings=False,
        agent_name=lambda agent: f"坐席 {agent}",
    )


def write_config(folder: Path, agents: int) -> tuple[Path, Path]:
    """The ACD configuration (one queue, every agent) and the flows folder."""
    lines = [
        '[skills]\ngeneral = "General enquiries"\n',
        f'[[queues]]\nname = "{QUEUE}"\ntitle = "客户服务"\n'
        f"ring_timeout = {RING_TIMEOUT_S}\nwrap_up = {QUEUE_WRAP_UP_S}\nannounce_every = 0\n"
        "[[queues.steps]]\nrequire = { general = 1 }\n",
    ]
    for i in range(agents):
        number = FIRST_AGENT + i
        lines.append(
            f'[[agents]]\nid = "{number}"\nname = "坐席 {number}"\n'
            f'endpoint = "PJSIP/agent{number}"\nskills = {{ general = {1 + i % 10} }}\n'
            f'queues = ["{QUEUE}"]\n'
        )
    acd = folder / "acd.toml"
    acd.write_text("\n".join(lines), encoding="utf-8")
    flows = folder / "flows"
    flows.mkdir()
    (flows / "bench.yaml").write_text(BENCH_FLOW, encoding="utf-8")
    return acd, flows


# -- the emulator process -----------------------------------------------------------


def emulator_main(conn: Connection, cfg: dict[str, Any]) -> None:
    logging.basicConfig(level=logging.ERROR)
    raise_nofile()
    asyncio.run(_emulate(conn, cfg))


async def _emulate(conn: Connection, cfg: dict[str, Any]) -> None:
    from ctiserver.sim.phones import Call, PhonePolicy

    rng = random.Random(cfg["seed"])
    loop = asyncio.get_running_loop()
    emulator = await start_emulator()
    agents, cps = cfg["agents"], cfg["cps"]
    shortest, longest = talk_range(agents, cps)
    for number in range(FIRST_AGENT, FIRST_AGENT + agents):
        policy = PhonePolicy(ring_time=cfg["ring"], talk_time=rng.uniform(shortest, longest))
        emulator.add_agent_phone(f"agent{number}", policy)
    conn.send(emulator.ami_port)
    agi_port = await loop.run_in_executor(None, conn.recv)
    emulator.pbx.globals["CTISERVER"] = f"127.0.0.1:{agi_port}"
    seconds = await loop.run_in_executor(None, conn.recv)  # "go": how long calls arrive
    calls: dict[str, Call] = {}
    started = time.monotonic()
    due = started
    while True:
        # Arrivals on an absolute schedule, so a slow loop does not lower the rate.
        due += rng.expovariate(cps)
        if due - started >= seconds:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        customer = rng.randrange(cfg["customers"])
        call = await emulator.place_call(phone_of(customer), f"客户 {customer:05d}", exten="100")
        calls[call.channel.uniqueid] = call
    conn.send(len(calls))
    # How long to wait for the calls to end: up to `first_s` (a talk time and the
    # allowance), then on while calls keep ending, until `quiet_s` pass without one
    # (a call that is merely late still ends; a stuck one never does) or `most_s`.
    first_s, quiet_s, most_s = await loop.run_in_executor(None, conn.recv)
    drain_started = time.monotonic()
    pending = {call.ended for call in calls.values() if not call.ended.done()}
    if pending:
        _, pending = await asyncio.wait(pending, timeout=first_s)
    while pending and time.monotonic() - drain_started < most_s:
        ended, pending = await asyncio.wait(
            pending, timeout=quiet_s, return_when=asyncio.FIRST_COMPLETED
        )
        if not ended:
            break
    conn.send(
        {
            "placed": list(calls),
            "still_up": [uid for uid, call in calls.items() if not call.ended.done()],
            "channels": len(emulator.channels),
        }
    )
    await loop.run_in_executor(None, conn.recv)  # "stop"
    await emulator.close()


# -- the server process -------------------------------------------------------------


class ErrorCount(logging.Handler):
    """Counts the server's error records by logger and message (the full ones go to a file)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.name}: {record.msg}"] += 1


def server_main(conn: Connection, cfg: dict[str, Any]) -> None:
    # Under overload every failed look-up logs a traceback: to a file, counted here.
    logging.basicConfig(level=logging.ERROR, filename=cfg["log_file"], encoding="utf-8")
    errors = ErrorCount()
    logging.getLogger().addHandler(errors)
    raise_nofile()
    if cfg["mmap_threshold_kib"] is not None:
        pin_mmap_threshold(cfg["mmap_threshold_kib"] * 1024)
    event_loop.run(_serve(conn, cfg, errors), cfg["event_loop"])


def pin_mmap_threshold(size: int) -> None:
    """glibc maps every block of `size` bytes or more apart from its heap and unmaps it
    when freed; pinning the threshold stops glibc raising it after big frees."""
    M_MMAP_THRESHOLD = -3
    if not ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, size):
        raise OSError(f"mallopt(M_MMAP_THRESHOLD, {size}) failed")


class Probes:
    """The server-side clocks: offer-latency triggers and ringing, and offer stamps.

    What they record is handed over to the bench every sample (`hand_over`): kept here for
    the whole run, it grew the server's memory by ~250 bytes a call, and the stamps' dict
    doubled its table at 87,381 offers, which read as the server's own growth."""

    def __init__(self) -> None:
        self.last_trigger = 0.0
        self.trigger_of_leg: dict[str, float] = {}
        self.offer_samples: list[tuple[float, float]] = []  # (trigger, ms to Ringing)
        self.offered: dict[str, float] = {}  # "call|agent" -> Offer at the listeners
        self.leg_of: Callable[[str], str | None] = lambda _call_id: None

    def on_decision(self, decision: Any) -> None:
        from ctiserver.acd.decisions import AgentStateChanged, CallQueued, Offer
        from ctiserver.acd.model import AgentState

        now = time.monotonic()
        freed = isinstance(decision, AgentStateChanged) and decision.state is AgentState.AVAILABLE
        if isinstance(decision, CallQueued) or freed:
            self.last_trigger = now
        elif isinstance(decision, Offer):
            self.offered.setdefault(f"{decision.call_id}|{decision.agent_id}", now)
            leg = self.leg_of(decision.call_id)
            if leg is not None:
                self.trigger_of_leg[leg] = self.last_trigger

    def on_newstate(self, message: Any) -> None:
        if message.get("ChannelStateDesc") != "Ringing":
            return
        trigger = self.trigger_of_leg.pop(message.get("Uniqueid") or "", None)
        if trigger is not None:
            self.offer_samples.append((trigger, (time.monotonic() - trigger) * 1000.0))

    def hand_over(self) -> dict[str, Any]:
        """What was recorded since the last call, forgotten here."""
        taken = {"offer_samples": self.offer_samples, "offered": self.offered}
        self.offer_samples, self.offered = [], {}
        return taken


async def _serve(conn: Connection, cfg: dict[str, Any], errors: ErrorCount) -> None:
    from ctiserver.acd.controller import CallController
    from ctiserver.app import Server
    from ctiserver.store.database import Database
    from ctiserver.store.events import EventLog

    loop = asyncio.get_running_loop()
    probes = Probes()

    class BenchServer(Server):
        """The real Server, with the bench's clock registered before the desktop hub's."""

        async def _start_desktop(self, database: Database, events: EventLog) -> None:
            controller: CallController | None = self.acd
            if controller is not None:
                calls = controller.calls

                def leg_of(call_id: str) -> str | None:
                    live = calls.get(call_id)
                    return live.leg.uniqueid if live is not None and live.leg else None

                probes.leg_of = leg_of
                controller.add_listener(probes.on_decision)
            await super()._start_desktop(database, events)

        async def _start_live_metrics(self, database: Database, events: EventLog) -> None:
            # --no-live-metrics: a diagnostic, to see what the rest of the server sustains.
            if cfg["live_metrics"]:
                await super()._start_live_metrics(database, events)

    server = BenchServer(bench_settings(cfg, cfg["flows"]))
    await server.start()
    server.ami.subscribe("Newstate", probes.on_newstate)
    assert server.acd is not None and server.events is not None

    lags: list[float] = []  # how late the loop runs a callback due every 20 ms
    conn.send((server.http_port, server.agi.port))
    await wait_for_ami(server)
    profiler: cProfile.Profile | None = None
    watcher: asyncio.Task[None] | None = None
    census_at_mark: Counter[str] | None = None

    def hand_over() -> dict[str, Any]:
        taken_lags = lags[:]
        lags.clear()
        return {"heap": glibc_heap_mb(), "lags": taken_lags, **probes.hand_over()}

    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command == "go":
            watcher = asyncio.create_task(watch_lag(lags))
            if cfg["profile"]:
                profiler = cProfile.Profile()
                profiler.enable()
        elif command == "mark":  # the warm-up is over: trace what the window allocates
            tracemalloc.start(8)
        elif command == "census":  # the warm-up is over: count the heap's objects by type
            census_at_mark = object_census()
        elif command == "sample":  # the heap, and the records handed over
            conn.send(hand_over())
        elif command == "census at load end":
            # Calls in flight at both counts, as many: what grew is kept beyond them.
            grown_under_load = Counter[str]()
            if census_at_mark is not None:
                grown_under_load = object_census() - census_at_mark
            conn.send(grown_under_load.most_common(15))
        elif command == "state":
            if tracemalloc.is_tracing():
                # After the drain no call is live: what the window allocated and still holds.
                snapshot = tracemalloc.take_snapshot()
                tracemalloc.stop()
                retained = snapshot.statistics("traceback")[:12]
                held = [
                    (round(stat.size / 2**20, 2), stat.count, stat.traceback.format()[-6:])
                    for stat in retained
                ]
            else:
                held = []
            grown: list[tuple[str, int]] = []
            trimmed: tuple[float, float] | None = None
            if census_at_mark is not None:
                # After the drain no call is live: what still grows is kept per call.
                now_census = object_census()
                grown = (now_census - census_at_mark).most_common(15)
                trimmed = rss_before_and_after_trim()
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(cfg["profile"])
                profiler = None
            if watcher is not None:
                watcher.cancel()
                watcher = None
            flushed = True
            try:
                async with asyncio.timeout(cfg["flush_s"]):
                    await server.events.flush()
            except TimeoutError:
                flushed = False  # reported: the event log is behind (or failing)
            stats = server.events.stats()
            now = time.time()
            agents = Counter(view.state.value for view in server.acd.engine.snapshot(now).agents)
            conn.send(
                {
                    "live_calls": {
                        live.call_id: (
                            "talking" if live.talking else "ringing" if live.leg else "waiting"
                        )
                        for live in server.acd.calls.values()
                    },
                    "ivr_calls": len(server.ivr.active) if server.ivr is not None else 0,
                    "agents": dict(agents),
                    "event_log": {
                        "flushed": flushed,
                        "buffered": stats.buffered,
                        "spill_bytes": stats.spill_bytes,
                        "written": stats.written,
                        "failing_since": str(stats.failing_since or "") or None,
                    },
                    "retained": held,
                    "grown": grown,
                    "trimmed": trimmed,
                    "errors": dict(errors.counts.most_common(8)),
                    "error_count": sum(errors.counts.values()),
                }
            )
        elif command == "stop":
            conn.send(hand_over())
            break
    await server.close()


# -- the desktop clients ------------------------------------------------------------


def client_main(conn: Connection, base: str, desks: list[tuple[str, str]], wrap_s: float) -> None:
    logging.basicConfig(level=logging.ERROR)
    raise_nofile()
    asyncio.run(_desktops(conn, base, desks, wrap_s))


async def _desktops(
    conn: Connection, base: str, desks: list[tuple[str, str]], wrap_s: float
) -> None:
    loop = asyncio.get_running_loop()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    first_offer: dict[str, float] = {}  # "call|agent" -> first `offer` parsed
    full_pop: dict[str, float] = {}  # "call|agent" -> `offer` with the complete pop parsed
    kinds: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    ready = 0
    stopping = False
    all_tried = asyncio.Event()
    background: set[asyncio.Task[None]] = set()

    def tried() -> None:
        if ready + sum(failed.values()) >= len(desks):
            all_tried.set()

    async def wrap_up(ws: aiohttp.ClientWebSocketResponse, call_id: str, n: int) -> None:
        await asyncio.sleep(wrap_s)  # the agent types the outcome
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(
                json.dumps(
                    {
                        "type": "wrap_up",
                        "v": 1,
                        "id": f"w{n}",
                        "call_id": call_id,
                        "disposition": "billing-question",
                        "notes": "客户询问账单明细，已解释。",
                        "resolved": True,
                        "follow_up_at": None,
                    },
                    ensure_ascii=False,
                )
            )

    async def make_ready(ws: aiohttp.ClientWebSocketResponse) -> None:
        await asyncio.sleep(wrap_s)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str('{"type": "ready", "v": 1, "id": "again"}')

    async def desk(agent: str, token: str) -> None:
        nonlocal ready
        async with gate:
            opened = await open_ready_desk(
                session,
                base,
                token,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                heartbeat=None,
            )
        if isinstance(opened, str):
            failed[opened] += 1
            tried()
            return
        ws = opened
        ready += 1
        tried()
        pinger = asyncio.create_task(keep_pinging(ws))
        wraps = 0
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                now = time.monotonic()
                data = json.loads(msg.data)
                kind = data["type"]
                kinds[kind] += 1
                if kind == "offer":
                    key = f"{data['call_id']}|{agent}"
                    first_offer.setdefault(key, now)
                    if data["pop"]["complete"]:
                        full_pop.setdefault(key, now)
                elif kind == "wrap_up":
                    wraps += 1
                    task = asyncio.create_task(wrap_up(ws, data["call_id"], wraps))
                    background.add(task)
                    task.add_done_callback(background.discard)
                elif kind == "agent_state" and data["state"] == "not_ready":
                    # The ACD made the agent not ready (no answer in time): like an agent at
                    # the page, click ready again, or the centre loses them for good.
                    kinds[f"not ready ({data['reason']})"] += 1
                    task = asyncio.create_task(make_ready(ws))
                    background.add(task)
                    task.add_done_callback(background.discard)
                elif kind == "error":
                    errors[f"{data['for']}: {data['code']}"] += 1
                elif kind == "offer_withdrawn":
                    kinds[f"offer_withdrawn ({data['reason']})"] += 1
        finally:
            pinger.cancel()
        if not stopping:
            closes[str(ws.close_code)] += 1

    tasks = [asyncio.create_task(desk(agent, token)) for agent, token in desks]
    await all_tried.wait()
    conn.send((ready, dict(failed)))
    await loop.run_in_executor(None, conn.recv)  # "stop"
    stopping = True
    conn.send(
        {
            "first_offer": first_offer,
            "full_pop": full_pop,
            "kinds": dict(kinds),
            "errors": dict(errors),
            "closes": dict(closes),
        }
    )
    for task in [*tasks, *background]:
        task.cancel()
    await asyncio.gather(*tasks, *background, return_exceptions=True)
    await session.close()


# -- the run ------------------------------------------------------------------------


class Served:
    """The server's probe records, gathered here as the server hands them over."""

    def __init__(self) -> None:
        self.offer_samples: list[tuple[float, float]] = []
        self.offered: dict[str, float] = {}
        self.lags: list[float] = []

    def take(self, handed: dict[str, Any]) -> Any:
        """Keep what `handed` brings; return its heap figures."""
        self.offer_samples += handed["offer_samples"]
        for key, stamped in handed["offered"].items():
            self.offered.setdefault(key, stamped)
        self.lags += handed["lags"]
        return handed["heap"]


class Sampler:
    """CPU of each process and the server's RSS, every SAMPLE_S seconds (psutil)."""

    def __init__(self, processes: dict[str, list[int]], server_pid: int) -> None:
        self.processes = {
            name: [psutil.Process(pid) for pid in pids] for name, pids in processes.items()
        }
        self.server = psutil.Process(server_pid)
        self.rows: list[dict[str, Any]] = []
        self._last = self._cpu()
        self._pg_last = self._postgres()
        self._last_at = time.monotonic()

    def _cpu(self) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for name, procs in self.processes.items():
            total = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
            seconds[name] = total
        return seconds

    @staticmethod
    def _postgres() -> dict[int, float]:
        """Every PostgreSQL process (shared with whatever else uses this server)."""
        seconds: dict[int, float] = {}
        for proc in psutil.process_iter(["name", "cpu_times"]):
            times = proc.info["cpu_times"]
            if proc.info["name"] in ("postgres", "postmaster") and times is not None:
                seconds[proc.pid] = times.user + times.system
        return seconds

    def sample(self, elapsed: float, phase: str) -> dict[str, Any]:
        now, cpu, pg = time.monotonic(), self._cpu(), self._postgres()
        span = max(1e-6, now - self._last_at)
        used = {name: cpu[name] - self._last[name] for name in cpu}
        # A backend born since the last sample counts whole; one gone is not subtracted.
        last_pg = self._pg_last
        used["postgres (all)"] = sum(value - last_pg.get(pid, 0.0) for pid, value in pg.items())
        row = {
            "t_s": round(elapsed),
            "phase": phase,
            "rss_mb": round(self.server.memory_info().rss / 2**20, 1),
            "cpu_pct": {name: round(100.0 * value / span) for name, value in used.items()},
            "load1": round(os.getloadavg()[0], 2),
        }
        self._last, self._pg_last, self._last_at = cpu, pg, now
        self.rows.append(row)
        return row


async def outcomes_in_log(dsn: str, placed: list[str]) -> dict[str, Any]:
    """What the event log says of each placed call (by its caller channel's Uniqueid)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            """
            SELECT call_id,
                   bool_or(type = 'ivr.started') AS ivr,
                   bool_or(type = 'acd.caller_entered') AS queued,
                   bool_or(type = 'acd.connected') AS connected,
                   bool_or(type = 'acd.call_ended') AS ended,
                   bool_or(type = 'acd.call_left' AND payload->>'outcome' = ANY($2::text[]))
                       AS left_final,
                   bool_or(type = 'ivr.ended' AND payload->>'outcome' IS DISTINCT FROM 'queued')
                       AS ivr_final
            FROM events WHERE call_id = ANY($1::text[]) GROUP BY call_id
            """,
            placed,
            list(FINAL_LEFT),
            timeout=120,
        )
        wrap_ups = await conn.fetchval(
            "SELECT count(*) FROM events WHERE type = 'desktop.wrap_up'", timeout=60
        )
    finally:
        await conn.close()
    seen = {row["call_id"]: row for row in rows}
    outcome: dict[str, str] = {}
    for uid in placed:
        row = seen.get(uid)
        if row is None:
            outcome[uid] = "no trace"
        elif row["ended"]:
            outcome[uid] = "answered, ended" if row["connected"] else "ended unanswered"
        elif row["left_final"]:
            outcome[uid] = "left the queue"
        elif row["ivr_final"]:
            outcome[uid] = "ended in the IVR"
        else:
            outcome[uid] = "no outcome"
    return {"outcome": outcome, "wrap_ups": wrap_ups}


async def receive(end: Connection, within_s: float, what: str) -> Any:
    """The next message from a child, or TimeoutError naming what did not come."""
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, end.poll, within_s):
        raise TimeoutError(f"no {what} within {within_s:g} s")
    return await loop.run_in_executor(None, end.recv)


def object_census() -> Counter[str]:
    """The collector's objects by type (module.name), and the length of each big
    container (a dict or list that grows adds no object): cheap enough under load."""
    gc.collect()
    census: Counter[str] = Counter()
    for o in gc.get_objects():
        census[f"{type(o).__module__}.{type(o).__qualname__}"] += 1
        if isinstance(o, dict | list | set | deque) and o:
            sample = next(iter(o), None)
            kind = f"{type(o).__name__} of {type(sample).__name__}"
            if len(o) >= 1000:
                census[f"len of one {kind} ({id(o):x})"] += len(o)
            else:
                census[f"len of small {kind}s, all"] += len(o)
    return census


def rss_before_and_after_trim() -> tuple[float, float] | None:
    """This process's RSS (MB) before and after glibc's malloc_trim(0): how much of it
    is memory freed but not given back to the system."""
    rss = psutil.Process().memory_info().rss / 2**20
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    libc.malloc_trim(0)
    return rss, psutil.Process().memory_info().rss / 2**20


def find_py_spy() -> str | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return exe if Path(exe).is_file() else None


async def start_py_spy(pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process | None:
    """py-spy sampling the server (20 Hz, without pausing it) for the measured window."""
    exe = find_py_spy()
    if exe is None:
        print("py-spy not found (pip install py-spy): no sampling profile", flush=True)
        return None
    return await asyncio.create_subprocess_exec(
        *(exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))),
        *("--rate", "20", "--nonblocking", "--format", "raw", "--output", str(out)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def summarize_py_spy(path: Path, top: int = 25) -> list[tuple[str, float, float]]:
    """(function, % of samples inside it, % of samples in its own code), by the former."""
    inside: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inside[frame] += int(count)
    skip = ("asyncio/", "multiprocessing/", "<module>", "e2e.py", "threading.py", "concurrent/")
    rows = [
        (frame, 100.0 * n / total, 100.0 * own[frame] / total)
        for frame, n in inside.most_common()
        if not any(part in frame for part in skip)
    ]
    return rows[:top] if total else []


def cpu_of(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def phase_of(elapsed: float, warmup: float, load_s: float) -> str:
    if elapsed < warmup:
        return "warm-up"
    return "load" if elapsed < warmup + load_s else "drain"


async def run(args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    children: list[Any] = []
    try:
        return await run_with(args, dsn, children)
    finally:
        for process in children:
            if process.is_alive():
                process.terminate()
                process.join(5)


async def run_with(args: argparse.Namespace, dsn: str, children: list[Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    acd, flows = write_config(work, args.agents)
    started = time.monotonic()
    tokens = await seed(dsn, args.customers, args.history, args.agents)
    print(
        f"database {dsn.rsplit('/', 1)[1]}: {args.customers} customers x {args.history}"
        f" interactions, {args.agents} agent accounts with sessions"
        f" ({time.monotonic() - started:.1f} s)",
        flush=True,
    )

    emu_end, emu_child = context.Pipe()
    emulator = context.Process(
        target=emulator_main,
        args=(
            emu_child,
            {
                "agents": args.agents,
                "cps": args.cps,
                "ring": args.ring,
                "customers": args.customers,
                "seed": args.seed,
            },
        ),
        daemon=True,
    )
    emulator.start()
    children.append(emulator)
    emu_child.close()  # so a dead emulator is an EOFError here, not a hang
    ami_port = await loop.run_in_executor(None, emu_end.recv)
    srv_end, srv_child = context.Pipe()
    profile = str(work / "server.prof") if args.profile else ""
    server = context.Process(
        target=server_main,
        args=(
            srv_child,
            {
                "ami_port": ami_port,
                "dsn": dsn,
                "acd": str(acd),
                "flows": str(flows),
                "data_dir": str(work / "data"),
                "profile": profile,
                "log_file": str(work / "server.log"),
                "flush_s": 120.0,
                "live_metrics": not args.no_live_metrics,
                "event_loop": args.event_loop,
                "mmap_threshold_kib": args.mmap_threshold,
            },
        ),
        daemon=True,
    )
    server.start()
    children.append(server)
    srv_child.close()
    http_port, agi_port = await loop.run_in_executor(None, srv_end.recv)
    emu_end.send(agi_port)
    assert server.pid is not None and emulator.pid is not None
    rss_idle = psutil.Process(server.pid).memory_info().rss / 2**20

    base = f"http://127.0.0.1:{http_port}"
    agents = [str(n) for n in range(FIRST_AGENT, FIRST_AGENT + args.agents)]
    clients: list[tuple[Any, Connection]] = []
    connect_started = time.monotonic()
    for share in (agents[i :: args.clients] for i in range(args.clients)):
        end, child = context.Pipe()
        process = context.Process(
            target=client_main,
            args=(child, base, [(agent, tokens[agent]) for agent in share], args.wrap),
            daemon=True,
        )
        process.start()
        children.append(process)
        child.close()
        clients.append((process, end))
    connected = 0
    failures: Counter[str] = Counter()
    for _, end in clients:
        ready, failed = await loop.run_in_executor(None, end.recv)
        connected += ready
        failures.update(failed)
    print(
        f"{connected}/{args.agents} desktops signed in and ready"
        f" in {time.monotonic() - connect_started:.1f} s"
        + (f", failures {dict(failures)}" if failures else ""),
        flush=True,
    )
    await asyncio.sleep(2.0)  # the logins settle

    served = Served()
    sampler = Sampler(
        {
            "server": [server.pid],
            "emulator": [emulator.pid],
            "desktops": [p.pid or 0 for p, _ in clients],
        },
        server.pid,
    )
    load_s = args.minutes * 60.0
    shortest, longest = talk_range(args.agents, args.cps)
    print(
        f"load: {args.cps:g} calls/s for {args.warmup:g} s warm-up + {load_s:g} s measured,"
        f" talk {shortest:.1f}-{longest:.1f} s, ring {args.ring:g} s, wrap-up {args.wrap:g} s;"
        f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    srv_end.send("go")
    emu_end.send(args.warmup + load_s)
    go = time.monotonic()
    measure_from, measure_to = go + args.warmup, go + args.warmup + load_s
    placed_future = loop.run_in_executor(None, emu_end.recv)
    rss_start: float | None = None
    heap_start: tuple[float, float, float] | None = None
    spy: asyncio.subprocess.Process | None = None
    cpu_at_start = cpu_of(server.pid)
    spy_out = work / "server.pyspy"
    next_sample = go + SAMPLE_S
    while not placed_future.done():
        await asyncio.wait({placed_future}, timeout=max(0.0, next_sample - time.monotonic()))
        now = time.monotonic()
        if now >= next_sample:
            row = sampler.sample(now - go, phase_of(now - go, args.warmup, load_s))
            srv_end.send("sample")
            row["heap_mb"] = served.take(await receive(srv_end, 30, "server sample"))
            print(f"  {json.dumps(row, ensure_ascii=False)}", flush=True)
            next_sample += SAMPLE_S
        if rss_start is None and now >= measure_from:
            rss_start = psutil.Process(server.pid).memory_info().rss / 2**20
            srv_end.send("sample")
            heap_start = served.take(await receive(srv_end, 30, "server sample"))
            if args.tracemalloc:
                srv_end.send("mark")
            if args.census:
                srv_end.send("census")
            cpu_at_start = cpu_of(server.pid)
            if args.py_spy:
                spy = await start_py_spy(server.pid, measure_to - now, spy_out)
    placed_count = await placed_future
    rss_end = psutil.Process(server.pid).memory_info().rss / 2**20
    srv_end.send("sample")
    heap_end = served.take(await receive(srv_end, 30, "server sample"))
    if heap_start is None:
        heap_start = heap_end
    if args.census and rss_start is not None:
        srv_end.send("census at load end")
        print("objects more at the load's end than at the warm-up's end, by type (--census):")
        for name, count in await receive(srv_end, 120, "census"):
            print(f"  {count:+9d}  {name}")
    window_cpu_s = cpu_of(server.pid) - cpu_at_start
    if rss_start is None:
        rss_start = rss_end
    load_row = sampler.sample(time.monotonic() - go, "end of load")
    print(f"  {json.dumps(load_row, ensure_ascii=False)}", flush=True)
    if spy is not None:
        try:
            await asyncio.wait_for(spy.wait(), 30)
        except TimeoutError:
            spy.kill()
            await spy.wait()
        if spy_out.is_file():
            print(f"server py-spy samples over the window ({spy_out}): % inside, % own")
            for frame, inside, own in summarize_py_spy(spy_out):
                print(f"  {inside:5.1f} {own:5.1f}  {frame}")
    print(
        f"{placed_count} calls placed; draining (the longest talk + {args.drain:g} s, then on"
        f" while calls still end)",
        flush=True,
    )

    # Every call ends by itself within a talk time after its answer: what is still up after
    # that (and the drain allowance) is stuck.
    most_s = longest + args.ring + 10 * args.drain
    emu_end.send((longest + args.ring + args.drain, args.drain, most_s))
    emulated = await receive(emu_end, most_s + 60, "drain report")
    await asyncio.sleep(args.wrap + 2.0)  # the last hang-ups and wrap-ups reach the server
    srv_end.send("state")
    state = await receive(srv_end, 300, "server state")
    if state["grown"]:
        print("objects more after the drain than at the warm-up's end, by type (--census):")
        for name, count in state["grown"]:
            print(f"  {count:+9d}  {name}")
    if state["trimmed"]:
        before, after = state["trimmed"]
        print(f"server RSS after the drain {before:.1f} MB, {after:.1f} MB after malloc_trim(0)")
    if state["retained"]:
        print("allocated during the window and still held after the drain (tracemalloc):")
        for mb, count, lines in state["retained"]:
            print(f"  {mb} MB in {count} blocks, allocated at:")
            for line in lines:
                print(f"      {line}")
    drained_row = sampler.sample(time.monotonic() - go, "drained")
    print(f"  {json.dumps(drained_row, ensure_ascii=False)}", flush=True)

    first_offer: dict[str, float] = {}
    full_pop: dict[str, float] = {}
    kinds: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    for _, end in clients:
        end.send("stop")
        report = await receive(end, 120, "desktop report")
        first_offer.update(report["first_offer"])
        full_pop.update(report["full_pop"])
        kinds.update(report["kinds"])
        errors.update(report["errors"])
        closes.update(report["closes"])
    srv_end.send("stop")
    served.take(await receive(srv_end, 120, "server stamps"))
    emu_end.send("stop")
    for process in (server, emulator, *(p for p, _ in clients)):
        await loop.run_in_executor(None, process.join, 30)
        if process.is_alive():
            process.terminate()
    logged = await outcomes_in_log(dsn, emulated["placed"])

    # Lost: placed, nothing holds it any more, and no outcome in the event log.
    # Stuck: still up in the emulator, or still a live call in ctiserver, after the drain.
    stuck_ids = set(emulated["still_up"]) | set(state["live_calls"])
    outcomes = Counter(logged["outcome"].values())
    lost_ids = {
        uid
        for uid, outcome in logged["outcome"].items()
        if outcome in ("no trace", "no outcome") and uid not in stuck_ids
    }
    in_window = [ms for trigger, ms in served.offer_samples if measure_from <= trigger < measure_to]
    pops: list[float] = []
    firsts: list[float] = []
    not_delivered = 0
    for key, stamped in served.offered.items():
        if not measure_from <= stamped < measure_to:
            continue
        if key in full_pop:
            pops.append((full_pop[key] - stamped) * 1000.0)
        else:
            not_delivered += 1
        if key in first_offer:
            firsts.append((first_offer[key] - stamped) * 1000.0)
    window = [row for row in sampler.rows if row["phase"] == "load"]

    def mean_cpu(name: str) -> float | None:
        values = [row["cpu_pct"][name] for row in window]
        return round(statistics.fmean(values)) if values else None

    if profile:
        print(f"server profile ({profile}), top by own time:")
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    return {
        "calls_per_s": round(placed_count / (args.warmup + load_s), 2),
        "agents": args.agents,
        "minutes": args.minutes,
        "offer_p99_ms": rounded(percentile(in_window, 0.99)),
        "pop_p99_ms": rounded(percentile(pops, 0.99)),
        "lost": len(lost_ids),
        "stuck": len(stuck_ids),
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_end": round(rss_end, 1),
        # Extra figures after the keys.
        "cps_target": args.cps,
        "warmup_s": args.warmup,
        "live_metrics": not args.no_live_metrics,
        "calls": placed_count,
        "outcomes": dict(outcomes),
        "offer_p50_ms": rounded(statistics.median(in_window) if in_window else None),
        "offer_max_ms": rounded(max(in_window, default=None)),
        "offers_timed": len(in_window),
        "pop_p50_ms": rounded(statistics.median(pops) if pops else None),
        "pop_max_ms": rounded(max(pops, default=None)),
        "pop_first_p99_ms": rounded(percentile(firsts, 0.99)),
        "pops_timed": len(pops),
        "pops_not_delivered": not_delivered,
        "rss_mb_idle": round(rss_idle, 1),
        "event_loop": args.event_loop,
        "mmap_threshold_kib": args.mmap_threshold,
        # glibc's heap [size, in use, mapped apart] MB: the size outgrowing the use is
        # fragmentation.
        "heap_mb_start": heap_start,
        "heap_mb_end": heap_end,
        # The server's CPU per call over the window: what one core allows is 1000 / this.
        "server_cpu_ms_per_call": round(1000.0 * window_cpu_s / max(1.0, args.cps * load_s), 1),
        "rss_mb_max": max((row["rss_mb"] for row in sampler.rows), default=None),
        "cpu_pct_mean": {
            name: mean_cpu(name) for name in ("server", "emulator", "desktops", "postgres (all)")
        },
        "server_loop_lag_p99_ms": rounded(
            None if not served.lags else (percentile(served.lags, 0.99) or 0.0) * 1000
        ),
        "server_loop_lag_max_ms": rounded(max(served.lags, default=0.0) * 1000),
        "desktops_connected": connected,
        "wrap_ups_logged": logged["wrap_ups"],
        "agents_at_end": state["agents"],
        "stuck_detail": {
            "emulator": len(emulated["still_up"]),
            "emulator_channels": emulated["channels"],
            "server": dict(Counter(state["live_calls"].values())),
            "ivr": state["ivr_calls"],
        },
        "server_errors": state["error_count"],
        "server_error_kinds": state["errors"],
        "server_log": str(work / "server.log"),
        "desktop_errors": dict(errors),
        "desktop_closed_early": dict(closes),
        "offers_withdrawn": {k: v for k, v in kinds.items() if k.startswith("offer_withdrawn (")},
        "made_not_ready": {k: v for k, v in kinds.items() if k.startswith("not ready (")},
        "event_log": state["event_log"],
        "load1_during": [row["load1"] for row in window],
        "lost_ids": sorted(lost_ids)[:10],
        "stuck_ids": sorted(stuck_ids)[:10],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    embedded: Any = None
    if args.embedded or not local_pg_listens():
        from ctiserver.store.embedded import acquire_embedded

        embedded = await acquire_embedded(Path(tempfile.mkdtemp(prefix="bench-pg-")) / "pgdata")
        admin: str = embedded.uri("postgres")
        dsn: str = embedded.uri(BENCH_DB)
    else:
        admin = args.pg
        dsn = admin.rsplit("/", 1)[0] + "/" + BENCH_DB
    try:
        await admin_execute(
            admin,
            f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)',
            f"CREATE DATABASE \"{BENCH_DB}\" ENCODING 'UTF8'",
        )
        try:
            return await run(args, dsn)
        finally:
            if not args.keep_db:
                with contextlib.suppress(OSError, asyncpg.PostgresError):
                    await admin_execute(admin, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
    finally:
        if embedded is not None:
            from ctiserver.store.embedded import release_embedded

            await release_embedded(embedded)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cps", type=float, default=50.0, help="mean call arrivals per second")
    parser.add_argument("--agents", type=int, default=2000, help="agents, phones and desktops")
    parser.add_argument("--minutes", type=float, default=10.0, help="the measured load window")
    parser.add_argument(
        "--warmup",
        type=float,
        default=1260.0,
        # What the server keeps grows until the live metrics' window and settle time
        # (15 + 5 min) are full; the other bounded caches fill sooner (bench/README.md).
        help="seconds of load before the window (memory: until what the server keeps is full;"
        " default %(default)g)",
    )
    parser.add_argument("--ring", type=float, default=1.0, help="seconds agent phones ring")
    parser.add_argument(
        "--wrap", type=float, default=1.0, help="seconds a desktop takes to wrap up"
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=30.0,
        help="seconds allowed after the longest talk for calls to end, and the quiet time"
        " after which calls still up count as stuck",
    )
    parser.add_argument("--clients", type=int, default=1, help="desktop client processes")
    parser.add_argument("--customers", type=int, default=2000, help="seeded callers")
    parser.add_argument("--history", type=int, default=2, help="interactions per customer")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pg", default=LOCAL_ADMIN, help="admin DSN of a PostgreSQL server")
    parser.add_argument("--embedded", action="store_true", help="use embedded PostgreSQL")
    parser.add_argument("--keep-db", action="store_true", help=f"keep the {BENCH_DB} database")
    parser.add_argument("--profile", action="store_true", help="cProfile the server under load")
    parser.add_argument(
        "--py-spy", action="store_true", help="sample the server with py-spy over the window"
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="diagnostic: trace the server's allocations from the warm-up's end (slow)",
    )
    parser.add_argument(
        "--census",
        action="store_true",
        help="diagnostic: count the server's objects by type at the warm-up's end, at the "
        "load's end and after the drain, and print what grew",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="uvloop",
        help="the server's event loop ([server] event_loop; default %(default)s)",
    )
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        metavar="KIB",
        help="diagnostic: pin glibc's mmap threshold in the server at KIB kibibytes",
    )
    parser.add_argument(
        "--no-live-metrics",
        action="store_true",
        help="diagnostic: start the server without its live metrics (wallboard figures)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    raise_nofile()
    result = asyncio.run(main_async(args))
    print(
        f"{result['calls']} calls ({result['calls_per_s']} calls/s), {result['agents']} agents:"
        f" outcomes {result['outcomes']}; lost {result['lost']}, stuck {result['stuck']}"
    )
    print(
        f"offer latency p50 {result['offer_p50_ms']} / p99 {result['offer_p99_ms']} /"
        f" max {result['offer_max_ms']} ms ({result['offers_timed']} offers);"
        f" pop p50 {result['pop_p50_ms']} / p99 {result['pop_p99_ms']} /"
        f" max {result['pop_max_ms']} ms ({result['pops_timed']} pops,"
        f" {result['pops_not_delivered']} not delivered)"
    )
    print(
        f"server RSS {result['rss_mb_idle']} MB idle, {result['rss_mb_start']} MB after the"
        f" warm-up, {result['rss_mb_end']} MB at the end (max sampled {result['rss_mb_max']});"
        f" CPU % during the window {result['cpu_pct_mean']};"
        f" server loop lag p99 {result['server_loop_lag_p99_ms']} ms,"
        f" max {result['server_loop_lag_max_ms']} ms; glibc heap [size, in use, mapped apart]"
        f" {result['heap_mb_start']} -> {result['heap_mb_end']} MB on {result['event_loop']}"
    )
    print(json.dumps(result, ensure_ascii=False))
    return 1 if result["lost"] or result["stuck"] else 0


if __name__ == "__main__":
    sys.exit(main())
