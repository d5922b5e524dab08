"""Real-time figures under load: LiveMetrics alone, fed a steady synthetic centre.

    python bench/live_metrics.py                          # 50 calls/s, 2,000 agents, 30 min
    python bench/live_metrics.py --cps 20 --agents 800 --minutes 10

Simulated time, no sockets and no database: every second the events that came due
(IVR, queue entry, ring, answer, hold, hang-up, wrap-up state and report, as the
ACD and the desktops journal them) are given to `LiveMetrics.observe` and the
figures refreshed as the ticker would, then the snapshot is encoded as JSON once
(what the wallboard sends). Timed: each refresh and each encoding
(`time.perf_counter`, one CPU). Reported over the measured part (after the first
`window + settle` minutes, when the sums hold a full window): refresh p50 / p99 /
max, mean milliseconds of loop per second (the share of one core the figures
take at one refresh a second), per call, the snapshot's size, the facts held by
the fold, and the Python heap (tracemalloc, when asked) at the start and the end
of the measured part. Last line JSON.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctiserver.metrics.facts import MetricEvent
from ctiserver.metrics.live import LiveMetrics
from ctiserver.metrics.settings import MetricSettings

QUEUES = ("support", "billing", "sales")
START = 1_780_000_000.0 + 2 * 3600  # 10:00 in Asia/Shanghai: a whole working day ahead


class Centre:
    """Calls arriving at `cps`, served by `agents` (longest idle first) as the ACD journals
    them; every event is put on a heap by its instant."""

    def __init__(self, cps: float, agents: int, rng: random.Random) -> None:
        self.cps, self.rng = cps, rng
        self.events: list[tuple[float, int, MetricEvent]] = []
        self.seq = 0
        self.free: list[tuple[float, str]] = []
        for n in range(agents):
            agent = f"{1000 + n}"
            self.emit("acd.agent_state", START - 60, {"state": "available"}, agent=agent)
            self.free.append((START - 60, agent))
        heapq.heapify(self.free)
        self.next_call = START
        self.calls = 0

    def emit(
        self,
        kind: str,
        at: float,
        payload: dict[str, Any],
        *,
        call: str | None = None,
        agent: str | None = None,
        queue: str | None = None,
    ) -> None:
        self.seq += 1
        event = MetricEvent(kind, at, call, agent, queue, payload, key=f"e{self.seq}")
        heapq.heappush(self.events, (at, self.seq, event))

    def arrivals_until(self, until: float) -> None:
        while self.next_call < until:
            self.call(self.next_call)
            self.next_call += self.rng.expovariate(self.cps)

    def call(self, at: float) -> None:
        rng = self.rng
        self.calls += 1
        call = f"call-{self.calls}"
        caller = f"1380000{rng.randrange(20_000):05d}"
        queue = rng.choice(QUEUES)
        self.emit("ivr.started", at, {"caller": caller}, call=call)
        entered = at + rng.uniform(4, 12)
        customer = {"id": f"C{caller[-5:]}"} if rng.random() < 0.6 else {}
        ivr = {"outcome": "queued", "flow": "main", "started_at": at, "customer": customer}
        self.emit("ivr.ended", entered, ivr, call=call)
        self.emit("acd.caller_entered", entered, {"caller": caller}, call=call, queue=queue)
        self.emit("acd.call_queued", entered, {"caller": caller}, call=call, queue=queue)
        free_at, agent = self.free[0]
        ring = max(entered, free_at) + 0.05
        if ring - entered > rng.uniform(30, 120):  # nobody in time: the caller gives up
            self.emit("acd.call_left", ring, {"outcome": "abandoned"}, call=call, queue=queue)
            return
        heapq.heappop(self.free)
        answer = ring + 1.0
        self.emit("acd.agent_state", ring, {"state": "reserved"}, agent=agent)
        self.emit("acd.connected", answer, {}, call=call, agent=agent, queue=queue)
        self.emit("acd.call_left", answer, {"outcome": "answered"}, call=call, queue=queue)
        self.emit("acd.agent_state", answer, {"state": "on_call"}, agent=agent)
        end = answer + rng.uniform(28, 36)
        if rng.random() < 0.1:
            self.emit("acd.hold", answer + 5, {}, call=call, agent=agent, queue=queue)
            self.emit("acd.unhold", answer + 12, {}, call=call, agent=agent, queue=queue)
        self.emit("acd.call_ended", end, {}, call=call, agent=agent, queue=queue)
        self.emit("acd.agent_state", end, {"state": "wrap_up"}, agent=agent)
        done = end + 1.0
        report = {"resolved": rng.random() < 0.7, "disposition": "done"}
        self.emit("desktop.wrap_up", done, report, call=call, agent=agent)
        self.emit("acd.agent_state", done, {"state": "available"}, agent=agent)
        heapq.heappush(self.free, (done, agent))

    def due(self, until: float) -> list[MetricEvent]:
        out = []
        while self.events and self.events[0][0] < until:
            out.append(heapq.heappop(self.events)[2])
        return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = MetricSettings(timezone="Asia/Shanghai")
    clock = [START]
    live = LiveMetrics(
        None,  # type: ignore[arg-type]  # never started: nothing is read from a database
        None,  # type: ignore[arg-type]
        settings=settings,
        clock=lambda: clock[0],
        settle_s=args.settle,
    )
    centre = Centre(args.cps, args.agents, random.Random(args.seed))
    warm_s = settings.window_s + args.settle + 60
    total_s = int(args.minutes * 60)
    refresh_ms: list[float] = []
    encode_ms: list[float] = []
    sizes: list[int] = []
    calls_at_start = 0
    heap_start = heap_end = 0.0
    if args.tracemalloc:
        tracemalloc.start()
    for second in range(total_s):
        now = START + second
        clock[0] = now
        centre.arrivals_until(now + 1)  # each call schedules its events; given when due
        for event in centre.due(now):
            live.observe(event)
        started = time.perf_counter()
        live.refresh(now)
        refreshed = time.perf_counter()
        text = json.dumps(live.snapshot(), ensure_ascii=False)
        encoded = time.perf_counter()
        if second == warm_s:
            calls_at_start = centre.calls
            if args.tracemalloc:
                gc.collect()
                heap_start = tracemalloc.get_traced_memory()[0] / 2**20
        if second >= warm_s:
            refresh_ms.append((refreshed - started) * 1000)
            encode_ms.append((encoded - refreshed) * 1000)
            sizes.append(len(text))
        if second % 60 == 0:
            print(
                f"  t={second:5d}s calls={centre.calls:7d} held facts={live.held_facts:7d} "
                f"refresh={(refreshed - started) * 1000:7.1f} ms json={len(text) / 1024:6.0f} KB",
                flush=True,
            )
    if args.tracemalloc:
        gc.collect()
        heap_end = tracemalloc.get_traced_memory()[0] / 2**20
    measured_s = len(refresh_ms)
    if not measured_s:
        raise SystemExit(f"--minutes must exceed the warm-up ({warm_s / 60:.0f} min)")
    calls = centre.calls - calls_at_start
    snapshot = live.snapshot()
    return {
        "cps": args.cps,
        "agents": args.agents,
        "minutes": args.minutes,
        "measured_s": measured_s,
        "refresh_p50_ms": round(statistics.median(refresh_ms), 2),
        "refresh_p99_ms": round(percentile(refresh_ms, 0.99), 2),
        "refresh_max_ms": round(max(refresh_ms), 2),
        "refresh_ms_per_s": round(sum(refresh_ms) / measured_s, 2),
        "refresh_ms_per_call": round(sum(refresh_ms) / max(1, calls), 3),
        "json_p50_ms": round(statistics.median(encode_ms), 2),
        "json_kb": round(statistics.median(sizes) / 1024, 1),
        "held_facts": live.held_facts,
        "heap_mb_start": round(heap_start, 1) if args.tracemalloc else None,
        "heap_mb_end": round(heap_end, 1) if args.tracemalloc else None,
        "window_offered": snapshot["centre"]["window"]["offered"],
        "today_offered": snapshot["centre"]["today"]["offered"],
        "rebuilds": live.rebuilds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cps", type=float, default=50.0, help="mean call arrivals per second")
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=30.0, help="simulated minutes in all")
    parser.add_argument("--settle", type=float, default=300.0, help="LiveMetrics settle_s")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--tracemalloc", action="store_true", help="measure the Python heap (slower)"
    )
    result = run(parser.parse_args())
    print(
        f"refresh p50 {result['refresh_p50_ms']} / p99 {result['refresh_p99_ms']} / max "
        f"{result['refresh_max_ms']} ms; {result['refresh_ms_per_s']} ms of loop a second "
        f"({result['refresh_ms_per_call']} ms a call); snapshot {result['json_kb']} KB, "
        f"encoded in {result['json_p50_ms']} ms"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
