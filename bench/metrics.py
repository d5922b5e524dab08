"""Historical metrics reports on a large synthetic event log (issue #6).

    python bench/metrics.py --quick                       # 100,000 calls
    python bench/metrics.py --calls 1000000,10000000      # the issue's sizes

For each size: a database `ctiserver_bench_metrics_<N>` (migrated by ctiserver's
migrator, kept between runs unless `--fresh`) is filled with N synthetic calls over
30 days, as the exact event types and payloads the ACD (acd/journal.py), the IVR
(ivr/service.py) and the agent desktop (desktop.wrap_up) write, loaded with COPY.
Then `historical_report` is timed for (a) one day, grain interval, by queue and
(b) the 30 days, grain range, by queue (best of `--repeat`). Prints events read,
rows, seconds, the fold's skipped count, the process's RSS; the last line is JSON.

`--path summary` times the summary path instead (ctiserver/metrics/summary.py): it
builds the per-stay summary rows of the 30 days (`rebuild_days`, one day's fold at a
time; timed apart), then times the same two reports from `metric_stays` in SQL, and
checks them against the event path (`--parity day`, the default: the day report;
`all`: both; `none`).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import random
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctiserver.metrics.history import historical_report
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.report_source import report as best_report
from ctiserver.metrics.reports import Report
from ctiserver.metrics.rollup import ROLLUP_BUCKET_S, rollup_report, settings_key, write_rollup
from ctiserver.metrics.settings import MetricSettings
from ctiserver.metrics.summary import queue_totals, rebuild_days, summary_complete, summary_report
from ctiserver.store.database import Database

DSN = "postgresql://postgres@127.0.0.1:5432/{db}"
DAYS = 30
DAY = 86400.0
T0 = 1_772_409_600.0  # 2026-03-02 00:00 UTC, a Monday
AS_OF = T0 + 40 * DAY  # every FCR window of the month closed
OPEN_H, CLOSE_H = 7, 21
# queue -> (share of calls, overflow target, skills)
QUEUES: dict[str, tuple[float, str | None, dict[str, int]]] = {
    "sales": (0.25, "retention", {"sales": 2}),
    "support": (0.30, "tech", {"support": 1}),
    "billing": (0.15, "support", {"billing": 1}),
    "tech": (0.15, None, {"tech": 3}),
    "retention": (0.10, None, {"retention": 2}),
    "vip": (0.05, "support", {"vip": 1}),
}
HOURLY = [1, 3, 6, 8, 8, 6, 7, 8, 7, 5, 3, 2, 1.5, 1]  # 07:00..20:00 arrival weights
COPY_COLUMNS = ("event_key", "occurred_at", "type", "call_id", "agent_id", "queue_id", "payload")
DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Day:
    """One day of the centre: calls in arrival order, agents as a heap of free instants."""

    def __init__(self, day: int, calls: int, rng: random.Random, key_base: int) -> None:
        self.day, self.rng, self.rows = day, rng, []
        self.key_base, self.seq = key_base, 0
        self.base = T0 + day * DAY
        self.calls = calls
        self.agents: dict[str, list[tuple[float, str]]] = {}
        self.state: dict[str, str] = {}
        self.pool_size = max(1000, calls * DAYS // 3)  # repeat callers for FCR
        for queue, (share, _, _) in QUEUES.items():
            # Enough agents for ~85 % occupancy at the peak hour (~6.5 min per call).
            peak = calls * share * max(HOURLY) / sum(HOURLY) / 3600
            count = max(2, math.ceil(peak * 390 / 0.85))
            heap = []
            for k in range(count):
                agent = f"{queue}-{k:04d}"
                login = self.base + OPEN_H * 3600 - 300 + rng.uniform(0, 240)
                self.agent_state(agent, login, "available", None)
                heap.append((login, agent))
            heapq.heapify(heap)
            self.agents[queue] = heap

    def emit(
        self,
        kind: str,
        at: float,
        payload: dict[str, Any],
        call: str | None = None,
        agent: str | None = None,
        queue: str | None = None,
    ) -> None:
        self.seq += 1
        self.rows.append(
            (
                round(at, 3),
                self.seq,
                kind,
                call,
                agent,
                queue,
                DUMPS(payload),
            )
        )

    def agent_state(
        self, agent: str, at: float, state: str, reason: str | None, call: str | None = None
    ) -> None:
        previous = self.state.get(agent, "logged_out")
        self.state[agent] = state
        payload = {"state": state, "previous": previous, "reason": reason}
        self.emit("acd.agent_state", at, payload, call=call, agent=agent)

    def run(self) -> list[tuple[Any, ...]]:
        rng = self.rng
        names = list(QUEUES)
        shares = [QUEUES[q][0] for q in names]
        hours = rng.choices(range(len(HOURLY)), weights=HOURLY, k=self.calls)
        arrivals = sorted(self.base + (OPEN_H + h) * 3600 + rng.uniform(0, 3600) for h in hours)
        for i, at in enumerate(arrivals):
            call = f"{int(at)}.{self.day * 10_000_000 + i}"
            queue = rng.choices(names, weights=shares)[0]
            self.call(call, queue, at)
        for heap in self.agents.values():
            for free_at, agent in heap:
                end = max(free_at, self.base + CLOSE_H * 3600 + 900) + rng.uniform(0, 60)
                self.agent_state(agent, end, "logged_out", "end of shift")
        # The log's order: occurred_at, then write order.
        self.rows.sort(key=lambda r: (r[0], r[1]))
        key = self.key_base
        out = []
        for at, _, kind, call, agent, queue, payload in self.rows:
            key += 1
            out.append(
                (
                    uuid.UUID(int=key),
                    datetime.fromtimestamp(at, UTC),
                    kind,
                    call,
                    agent,
                    queue,
                    payload,
                )
            )
        return out

    def call(self, call: str, queue: str, at: float) -> None:
        rng = self.rng
        number = rng.randrange(self.pool_size)
        caller = f"0{600000000 + number}"
        customer = f"C{number:08d}" if number % 5 < 3 else None
        te = at
        if rng.random() < 0.5:  # through the IVR first
            self.emit("ivr.started", at, {"caller": caller}, call=call)
            te = at + rng.uniform(15, 75)
            roll = rng.random()
            outcome = "self_served" if roll < 0.15 else "abandoned" if roll < 0.18 else "queued"
            record = {
                "flow": "main",
                "version": "2026-02-20",
                "caller": caller,
                "dnis": "100",
                "started_at": round(at, 3),
                "ended_at": round(te, 3),
                "outcome": outcome,
                "ended_at_node": "to_queue" if outcome == "queued" else "goodbye",
                "customer": {"id": customer, "name": f"Customer {number}"} if customer else {},
                "language": "en",
                "variables": {"menu": "1", "account": "****"},
                "path": [
                    {"node": "welcome", "type": "play", "at": round(at, 3)},
                    {"node": "menu", "type": "menu", "at": round(at + 8, 3), "input": "1"},
                ],
            }
            self.emit("ivr.ended", te, record, call=call)
            if outcome != "queued":
                return
        self.enter(call, queue, te, caller, entered=True)
        self.serve(call, queue, te, caller, customer, hops=0)

    def enter(self, call: str, queue: str, at: float, caller: str, *, entered: bool) -> None:
        if entered:
            skills = QUEUES[queue][2]
            self.emit(
                "acd.caller_entered",
                at,
                {
                    "caller": caller,
                    "channel": f"PJSIP/trunk-{call}",
                    "priority": 0,
                    "virtual_enqueued_at": round(at, 3),
                    "preferred_agent": None,
                    "skills": skills,
                    "attributes": [],
                },
                call=call,
                queue=queue,
            )
        self.emit(
            "acd.call_queued",
            at,
            {
                "priority": 0,
                "virtual_enqueued_at": round(at, 3),
                "position": 1,
                "caller": caller,
                "channel": f"PJSIP/trunk-{call}",
            },
            call=call,
            queue=queue,
        )
        self.emit("acd.step", at, {"step": 0, "priority": 0}, call=call, queue=queue)

    def serve(
        self, call: str, queue: str, te: float, caller: str, customer: str | None, hops: int
    ) -> None:
        rng = self.rng
        heap = self.agents[queue]
        free_at, agent = heapq.heappop(heap)
        ring = rng.uniform(2, 7)
        offer_at = max(te + 0.5, free_at + rng.uniform(0, 3))
        answer_at = offer_at + ring
        wait = answer_at - te
        patience = rng.expovariate(1 / 150)
        callback = None
        target = QUEUES[queue][1]
        if wait > 60 and hops == 0 and rng.random() < 0.2:
            # Leaves a number at 30 s; called back when an agent is free.
            self.emit("acd.callback_offered", te + 25, {}, call=call, queue=queue)
            self.emit("acd.callback_requested", te + 30, {"number": caller}, call=call, queue=queue)
            callback = caller
        elif wait > patience:
            self.emit(
                "acd.call_left",
                te + patience,
                {"outcome": "abandoned", "target_queue": None},
                call=call,
                queue=queue,
            )
            heapq.heappush(heap, (free_at, agent))
            return
        elif wait > 90 and target and hops == 0 and rng.random() < 0.3:
            at = te + 90
            self.emit(
                "acd.call_left",
                at,
                {"outcome": "overflowed", "target_queue": target},
                call=call,
                queue=queue,
            )
            heapq.heappush(heap, (free_at, agent))
            self.enter(call, target, at, caller, entered=False)
            self.serve(call, target, at, caller, customer, hops + 1)
            return
        self.emit(
            "acd.offer",
            offer_at,
            {
                "agent_leg": f"PJSIP/{agent}-{call}",
                "endpoint": f"PJSIP/{agent}",
                "ring_timeout_s": 15,
                "callback_number": callback,
                "caller": caller,
            },
            call=call,
            agent=agent,
            queue=queue,
        )
        self.agent_state(agent, offer_at, "reserved", None, call)
        self.emit(
            "acd.connected",
            answer_at,
            {
                "caller_channel": f"PJSIP/trunk-{call}",
                "agent_channel": f"PJSIP/{agent}-{call}",
                "agent_leg": f"PJSIP/{agent}-{call}",
                **({"callback_number": callback} if callback else {}),
            },
            call=call,
            agent=agent,
            queue=queue,
        )
        self.agent_state(agent, answer_at, "on_call", None, call)
        self.emit(
            "acd.call_left",
            answer_at,
            {"outcome": "answered", "target_queue": None},
            call=call,
            queue=queue,
        )
        talk = min(3600.0, rng.lognormvariate(5.3, 0.6))  # median ~200 s
        end = answer_at + talk
        if rng.random() < 0.15:
            hold = answer_at + talk * 0.4
            self.emit("acd.hold", hold, {"by": "cti"}, call=call, agent=agent, queue=queue)
            self.emit(
                "acd.unhold",
                hold + min(90.0, talk * 0.5) * rng.uniform(0.3, 1.0),
                {"by": "cti"},
                call=call,
                agent=agent,
                queue=queue,
            )
        transfer_to = None
        if hops == 0 and rng.random() < 0.04:
            transfer_to = rng.choice([q for q in QUEUES if q != queue])
            self.emit(
                "acd.transferred",
                end,
                {
                    "from_agent": agent,
                    "target_kind": "queue",
                    "target": transfer_to,
                    "caller_channel": f"PJSIP/trunk-{call}",
                },
                call=call,
                agent=agent,
                queue=queue,
            )
        self.emit(
            "acd.call_ended",
            end,
            {"talk_s": round(talk, 3)},
            call=call,
            agent=agent,
            queue=queue,
        )
        self.agent_state(agent, end, "wrap_up", None, call)
        wrapped = end + rng.uniform(5, 90)
        self.emit(
            "desktop.wrap_up",
            wrapped,
            {
                "disposition": rng.choice(["sale", "info", "complaint", "fixed", "other"]),
                "notes": "",
                "resolved": transfer_to is None and rng.random() < 0.78,
                "follow_up_at": None,
                "follow_up": None,
                "submitted_at": datetime.fromtimestamp(round(wrapped, 3), UTC).isoformat(),
                "caller": caller,
                "callback": callback is not None,
                "outbound": False,
                "customer_id": customer,
                "answered_at": datetime.fromtimestamp(round(answer_at, 3), UTC).isoformat(),
                "ended_at": datetime.fromtimestamp(round(end, 3), UTC).isoformat(),
                "queue": queue,
            },
            call=call,
            agent=agent,
            queue=queue,
        )
        free = wrapped
        if rng.random() < 0.04:
            self.agent_state(agent, wrapped, "not_ready", "break")
            free = wrapped + rng.uniform(300, 900)
        self.agent_state(agent, free, "available", None)
        heapq.heappush(heap, (free + rng.uniform(0, 5), agent))
        if transfer_to is not None:
            self.enter(call, transfer_to, end + 1, caller, entered=True)
            self.serve(call, transfer_to, end + 1, caller, customer, hops + 1)


async def ensure_data(calls: int, fresh: bool) -> tuple[str, dict[str, Any]]:
    name = f"ctiserver_bench_metrics_{calls}"
    admin = await asyncpg.connect(DSN.format(db="postgres"))
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and fresh:
            await admin.execute(f'DROP DATABASE "{name}"')
            exists = None
        if not exists:
            await admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
    finally:
        await admin.close()
    db = await Database.open(DSN.format(db=name), command_timeout=3600)  # migrates
    try:
        async with db.acquire() as conn:
            done = await conn.fetchval("SELECT obj_description('events'::regclass, 'pg_class')")
            count = await conn.fetchval("SELECT count(*) FROM events")
            if count and "bench" in (done or "") and f"{calls} calls" in done:
                size = await conn.fetchval("SELECT pg_database_size(current_database())")
                info = json.loads(done.split("bench:", 1)[1])
                info.update(reused=True, events=count, db_bytes=size)
                return name, info
            if count:
                raise SystemExit(f"{name} holds an unfinished load: run with --fresh")
    finally:
        await db.close()
    info = await generate(name, calls)
    return name, info


async def generate(name: str, calls: int) -> dict[str, Any]:
    conn = await asyncpg.connect(DSN.format(db=name))
    started = time.perf_counter()
    gen_s = copy_s = 0.0
    events = 0
    try:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'"
            " AND indexname <> 'events_pkey'"
        )
        for index in indexes:
            await conn.execute(f"DROP INDEX {index['indexname']}")
        rng = random.Random(20260302 + calls)
        per_day = [calls // DAYS + (1 if d < calls % DAYS else 0) for d in range(DAYS)]
        key_base = 0
        for day, count in enumerate(per_day):
            t = time.perf_counter()
            rows = Day(day, count, rng, key_base).run()
            key_base += len(rows)
            gen_s += time.perf_counter() - t
            t = time.perf_counter()
            await conn.copy_records_to_table("events", records=rows, columns=COPY_COLUMNS)
            copy_s += time.perf_counter() - t
            events += len(rows)
            print(f"  day {day + 1:2d}/{DAYS}: {len(rows):,} events", file=sys.stderr, flush=True)
        t = time.perf_counter()
        for index in indexes:
            await conn.execute(index["indexdef"])
        await conn.execute("VACUUM ANALYZE events")
        index_s = time.perf_counter() - t
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        info = {
            "calls": calls,
            "generate_s": round(gen_s, 1),
            "copy_s": round(copy_s, 1),
            "index_s": round(index_s, 1),
            "load_s": round(time.perf_counter() - started, 1),
        }
        note = f"Synthetic events of bench/metrics.py, {calls} calls. bench:{json.dumps(info)}"
        await conn.execute(f"COMMENT ON TABLE events IS '{note}'")
        info.update(reused=False, events=events, db_bytes=size)
        return info
    finally:
        await conn.close()


async def time_report(
    db: Database, start: float, end: float, grain: Grain, repeat: int
) -> dict[str, Any]:
    settings = MetricSettings()
    best = math.inf
    report = None
    before = rss_mb()
    for _ in range(repeat):
        t = time.perf_counter()
        report = await historical_report(
            db, start, end, by="queue", grain=grain, settings=settings, as_of=T0 + 40 * DAY
        )
        best = min(best, time.perf_counter() - t)
    assert report is not None
    return {
        "s": round(best, 3),
        "events_read": report.events_read,
        "rows": len(report.rows),
        "skipped": sum(report.skipped.values()),
        "skipped_by": dict(report.skipped),
        "rss_mb": round(rss_mb(), 1),
        "rss_before_mb": round(before, 1),
        "peak_rss_mb": round(peak_mb(), 1),
    }


def differences(a: Report, b: Report) -> int:
    """Figures that differ (beyond 1e-6) between two reports with the same rows."""
    if [(r.start, r.key) for r in a.rows] != [(r.start, r.key) for r in b.rows]:
        return max(len(a.rows), len(b.rows))
    count = 0
    for x, y in zip(a.rows, b.rows, strict=True):
        for name, value in x.figures.items():
            other = y.figures.get(name)
            if isinstance(value, float | int) and isinstance(other, float | int):
                count += abs(value - other) > 1e-6 * max(1.0, abs(value))
            else:
                count += value != other
    return count


Reporter = Callable[[Database, float, float, Grain], Awaitable[Report | None]]


async def _per_stay(db: Database, start: float, end: float, grain: Grain) -> Report:
    return await summary_report(
        db, start, end, by="queue", grain=grain, settings=MetricSettings(), as_of=AS_OF
    )


async def _rollup(db: Database, start: float, end: float, grain: Grain) -> Report | None:
    return await rollup_report(
        db, start, end, grain=grain, settings=MetricSettings(), config=None, as_of=AS_OF
    )


async def _chosen(db: Database, start: float, end: float, grain: Grain) -> Report:
    return await best_report(
        db, start, end, by="queue", grain=grain, settings=MetricSettings(), as_of=AS_OF
    )


PATHS: dict[str, Reporter] = {"summary": _per_stay, "rollup": _rollup, "chosen": _chosen}


async def time_paths(
    db: Database, start: float, end: float, grain: Grain, repeat: int, reference: Report | None
) -> dict[str, Any]:
    """Best-of-`repeat` seconds of each summary path; figures differing from `reference`."""
    result: dict[str, Any] = {}
    for name, reporter in PATHS.items():
        best, report = math.inf, None
        for _ in range(repeat):
            t = time.perf_counter()
            report = await reporter(db, start, end, grain)
            best = min(best, time.perf_counter() - t)
        if report is None:
            result[name] = {"s": None, "answered": False}
            continue
        result[name] = {
            "s": round(best, 4),
            "rows": len(report.rows),
            "source": report.source,
            "differences": None if reference is None else differences(report, reference),
        }
    return result


async def event_reference(
    db: Database, start: float, end: float, grain: Grain
) -> tuple[Report, float]:
    t = time.perf_counter()
    report = await historical_report(
        db, start, end, by="queue", grain=grain, settings=MetricSettings(), as_of=AS_OF
    )
    return report, time.perf_counter() - t


async def replicate_stays(db: Database, copies: int) -> int:
    """`copies` more of every metric_stays row (call ids suffixed), and the 15-minute totals
    re-aggregated from them day by day with the same SQL the rebuild uses: a summary the
    size of copies+1 times the calls, without folding that many events."""
    settings = MetricSettings()
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO metric_stays SELECT call_id || '#' || k, queue, entered_at,"
            " first_entered_at, left_at, outcome, answered_at, agent_id, callback_requested_at,"
            " transferred, skills, customer_key || '#' || k, handled, handle_s, talk_s, hold_s,"
            " acw_s, resolved, next_same_queue_at, next_any_at, fcr_known_until"
            " FROM metric_stays CROSS JOIN generate_series(1, $1) AS k"
            " WHERE call_id NOT LIKE '%#%'",
            copies,
        )
        await conn.execute("VACUUM ANALYZE metric_stays")
        window = settings.fcr_window.total_seconds()
        quarter = replace(settings, interval_s=ROLLUP_BUCKET_S, timezone="UTC")
        key = settings_key(settings)
        for day in range(DAYS):
            start, end = T0 + day * DAY, T0 + (day + 1) * DAY
            async with conn.transaction():
                totals = await queue_totals(
                    conn,
                    start,
                    end,
                    by="queue",
                    grain=Grain.INTERVAL,
                    settings=quarter,
                    as_of=AS_OF,
                )
                due = {
                    r["bucket"]: r["due"]
                    for r in await conn.fetch(
                        "SELECT entered_at - entered_at::numeric % 900 AS bucket,"
                        " max(answered_at) + $3::float8 AS due FROM metric_stays"
                        " WHERE entered_at >= $1 AND entered_at < $2 AND answered_at IS NOT NULL"
                        " AND customer_key IS NOT NULL GROUP BY 1",
                        start,
                        end,
                        window,
                    )
                }
                await write_rollup(
                    conn, totals, {float(b): d for b, d in due.items()}, start, end, key
                )
        return int(await conn.fetchval("SELECT count(*) FROM metric_stays"))


async def bench_summary(
    calls: int, fresh: bool, repeat: int, parity: str, rebuild: bool, replicate: int
) -> dict[str, Any]:
    print(f"== {calls:,} calls over {DAYS} days, summary paths", flush=True)
    name, info = await ensure_data(calls, fresh)
    db = await Database.open(DSN.format(db=name), command_timeout=3600, migrate=False)
    settings = MetricSettings()
    try:
        month = (T0, T0 + DAYS * DAY)
        build_s = None
        leftover = await db.execute("DELETE FROM metric_stays WHERE call_id LIKE '%#%'")
        if leftover != "DELETE 0":  # an interrupted --replicate run: back to the events' rows
            print(f"removed an earlier run's replicated stays ({leftover})", flush=True)
            await replicate_stays(db, 0)
        stays = await db.fetchval("SELECT count(*) FROM metric_stays WHERE call_id NOT LIKE '%#%'")
        if rebuild or not await summary_complete(db, *month, settings=settings, as_of=AS_OF):
            t = time.perf_counter()
            built = await rebuild_days(db, *month, settings=settings, as_of=AS_OF)
            build_s = round(time.perf_counter() - t, 1)
            stays = built.stays_written
            print(
                f"summary rows: {built.stays_written:,} stays, {built.agent_rows_written:,}"
                f" agent-time rows, {built.unfinished} unfinished, built from the events in"
                f" {build_s} s ({build_s / DAYS:.1f} s a day), peak RSS {peak_mb():.0f} MB",
                flush=True,
            )
        async with db.acquire() as conn:
            await conn.execute("VACUUM ANALYZE metric_stays")
            size = await conn.fetchval("SELECT pg_total_relation_size('metric_stays')")
        day = (T0 + 14 * DAY, T0 + 15 * DAY)
        reference: dict[str, Report | None] = {"day": None, "range": None}
        if parity in ("day", "all"):
            reference["day"], s = await event_reference(db, *day, Grain.INTERVAL)
            print(f"event path, day by queue: {s:.3f} s", flush=True)
        if parity == "all":
            reference["range"], s = await event_reference(db, *month, Grain.RANGE)
            print(f"event path, 30-day range: {s:.3f} s", flush=True)
        a = await time_paths(db, *day, Grain.INTERVAL, repeat, reference["day"])
        print(f"day by queue (interval): {a}", flush=True)
        b = await time_paths(db, *month, Grain.RANGE, repeat, reference["range"])
        print(f"30-day range by queue:   {b}", flush=True)
        scaled: dict[str, Any] = {}
        if replicate:
            total = await replicate_stays(db, replicate)
            print(
                f"metric_stays replicated x{replicate + 1}: {total:,} stays"
                f" (~{total / stays * calls:,.0f} calls' worth)",
                flush=True,
            )
            # The per-stay SQL is the reference for the rollup at this size.
            ref_day = await _per_stay(db, *day, Grain.INTERVAL)
            ref_range = await _per_stay(db, *month, Grain.RANGE)
            scaled = {
                "calls_equivalent": round(total / stays * calls),
                "day": await time_paths(db, *day, Grain.INTERVAL, repeat, ref_day),
                "range": await time_paths(db, *month, Grain.RANGE, repeat, ref_range),
            }
            print(f"replicated, day by queue: {scaled['day']}", flush=True)
            print(f"replicated, 30-day range: {scaled['range']}", flush=True)
            async with db.acquire() as conn:  # back to what the events give
                await conn.execute("DELETE FROM metric_stays WHERE call_id LIKE '%#%'")
            await replicate_stays(db, 0)
    finally:
        await db.close()
    result = {
        "calls": calls,
        "events": info["events"],
        "path": "summary",
        "day_by_queue_s": a["chosen"]["s"],
        "range_30d_s": b["chosen"]["s"],
        "day_source": a["chosen"]["source"],
        "range_source": b["chosen"]["source"],
        "day_differences": a["chosen"]["differences"],
        "range_differences": b["chosen"]["differences"],
        "per_stay_day_s": a["summary"]["s"],
        "per_stay_range_s": b["summary"]["s"],
        "summary_build_s": build_s,
        "stays": stays,
        "metric_stays_mb": round(size / 1e6),
        "peak_rss_mb": round(peak_mb(), 1),
        "repeat": repeat,
    }
    if scaled:
        result["replicated"] = {
            "calls_equivalent": scaled["calls_equivalent"],
            "day_by_queue_s": scaled["day"]["chosen"]["s"],
            "range_30d_s": scaled["range"]["chosen"]["s"],
            "per_stay_day_s": scaled["day"]["summary"]["s"],
            "per_stay_range_s": scaled["range"]["summary"]["s"],
            "rollup_differences": [
                scaled["day"]["rollup"]["differences"],
                scaled["range"]["rollup"]["differences"],
            ],
        }
    print(json.dumps(result), flush=True)
    return result


async def bench(calls: int, fresh: bool, repeat: int) -> dict[str, Any]:
    print(f"== {calls:,} calls over {DAYS} days", flush=True)
    name, info = await ensure_data(calls, fresh)
    print(
        f"data: {name}, {info['events']:,} events, {info['db_bytes'] / 1e9:.2f} GB"
        f" ({'reused' if info['reused'] else 'generated'}: generate {info['generate_s']} s,"
        f" COPY {info['copy_s']} s, indexes+analyze {info['index_s']} s,"
        f" total {info['load_s']} s)",
        flush=True,
    )
    db = await Database.open(DSN.format(db=name), command_timeout=3600, migrate=False)
    try:
        day = T0 + 14 * DAY
        a = await time_report(db, day, day + DAY, Grain.INTERVAL, repeat)
        print(
            f"day by queue (interval): {a['s']:.3f} s best of {repeat}, {a['events_read']:,}"
            f" events read, {a['rows']} rows, skipped {a['skipped']} {a['skipped_by']},"
            f" RSS {a['rss_mb']} MB (peak {a['peak_rss_mb']} MB)",
            flush=True,
        )
        b = await time_report(db, T0, T0 + DAYS * DAY, Grain.RANGE, repeat)
        print(
            f"30-day range by queue:   {b['s']:.3f} s best of {repeat}, {b['events_read']:,}"
            f" events read, {b['rows']} rows, skipped {b['skipped']} {b['skipped_by']},"
            f" RSS {b['rss_mb']} MB (peak {b['peak_rss_mb']} MB)",
            flush=True,
        )
    finally:
        await db.close()
    result = {
        "calls": calls,
        "events": info["events"],
        "db_gb": round(info["db_bytes"] / 1e9, 2),
        "load_s": info["load_s"],
        "day_by_queue_s": a["s"],
        "range_30d_s": b["s"],
        "day_events_read": a["events_read"],
        "range_events_read": b["events_read"],
        "skipped": a["skipped"] + b["skipped"],
        "peak_rss_mb": b["peak_rss_mb"],
        "repeat": repeat,
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", default="1000000,10000000", help="comma-separated sizes")
    parser.add_argument("--quick", action="store_true", help="100,000 calls")
    parser.add_argument("--fresh", action="store_true", help="regenerate the data")
    parser.add_argument("--repeat", type=int, default=3, help="runs per report (best counts)")
    parser.add_argument("--path", choices=("events", "summary"), default="events")
    parser.add_argument(
        "--parity", choices=("day", "all", "none"), default="day", help="summary path only"
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="summary path: rebuild the rows even if complete"
    )
    parser.add_argument(
        "--replicate",
        type=int,
        default=0,
        metavar="K",
        help="summary path: then add K copies of every stay and time again at that size",
    )
    args = parser.parse_args()
    sizes = [100_000] if args.quick else [int(c) for c in args.calls.split(",")]
    if args.path == "summary":
        results = [
            asyncio.run(
                bench_summary(n, args.fresh, args.repeat, args.parity, args.rebuild, args.replicate)
            )
            for n in sizes
        ]
    else:
        results = [asyncio.run(bench(n, args.fresh, args.repeat)) for n in sizes]
    largest = max(results, key=lambda r: r["calls"])
    scaled = largest.get("replicated")
    if scaled:
        # The largest size measured is the replicated one: the keys for it.
        largest = {
            "calls": scaled["calls_equivalent"],
            "day_by_queue_s": scaled["day_by_queue_s"],
            "range_30d_s": scaled["range_30d_s"],
            "replicated_from_calls": largest["calls"],
            "per_stay_day_s": scaled["per_stay_day_s"],
            "per_stay_range_s": scaled["per_stay_range_s"],
            "rollup_differences": scaled["rollup_differences"],
        }
    print(json.dumps(largest))


if __name__ == "__main__":
    main()
