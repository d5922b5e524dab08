"""Routing engine benchmark: a busy centre with thousands of agents and calls waiting.

The centre: --agents agents, --skills skills and one queue per skill. Queue k
asks for skill k at level 6 for 20 s, then relaxes to level 1; the four agent
policies take turns over the queues, every tenth queue has a 5 s wrap-up and a
preferred-agent window. Each agent has four random skills at random levels and
serves those queues in random order. Before timing, every agent logs in and
calls arrive until --waiting calls wait (every agent able to take one is busy).

Then --inputs engine inputs are timed one by one, each with time.perf_counter_ns()
around the engine call only, while the virtual clock advances 10 ms per input:
  arrival     enqueue (random queue, priority 0-2, 5 % naming a preferred agent)
  completion  call_ended for a random talking call; the agent is offered the
              next call at once (wrap-up 0) or after a wrap-up tick
  answer      offer_accepted for each offer made (2 % fail busy instead; the
              agent comes back with make_available a second later)
  abandon     caller_left for a random waiting call
  tick        tick(now): step expiries, ring timeouts, wrap-up ends, windows
Arrivals are drawn as often as completions plus abandons, with a pull towards
--waiting, so the line stays at its size. A decision is one element of the
returned lists; decisions/s is all decisions over the time spent inside the
engine. The RNG is seeded (--seed): runs replay the same inputs.

The last line printed is JSON: decisions_per_s, p50_ms, p99_ms, agents, waiting.
Targets: p99 <= 1 ms and >= 20,000 decisions/s on one core; the exit status is 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctiserver.acd.decisions import CallLeft, CallQueued, Decision, Offer
from ctiserver.acd.engine import RoutingEngine
from ctiserver.acd.model import (
    AgentConfig,
    AgentPolicy,
    CallRequest,
    OfferFailure,
    QueueConfig,
    RelaxLevel,
    SkillRequirement,
    Step,
)

TARGET_P99_MS = 1.0
TARGET_DECISIONS_PER_S = 20_000
SKILLS_PER_AGENT = 4
TICK_EVERY = 10  # inputs
CLOCK_STEP_S = 0.01
START = 1_795_420_800.0  # Monday 2026-11-23 08:00 UTC


def centre(agent_count: int, skill_count: int, rng: random.Random) -> RoutingEngine:
    policies = list(AgentPolicy)
    queues = []
    for k in range(skill_count):
        skill = f"skill{k:03}"
        queues.append(
            QueueConfig(
                f"queue{k:03}",
                (
                    Step(20.0, (SkillRequirement(skill, 6),), on_expiry=(RelaxLevel(skill, 5),)),
                    Step(None),
                ),
                policy=policies[k % len(policies)],
                wrap_up_s=5.0 if k % 10 == 0 else 0.0,
                preferred_agent_s=15.0 if k % 10 == 0 else 0.0,
            )
        )
    agents = []
    for n in range(agent_count):
        skills = rng.sample(range(skill_count), SKILLS_PER_AGENT)
        agents.append(
            AgentConfig(
                f"agent{n:05}",
                f"Agent {n}",
                f"PJSIP/agent{n:05}",
                skills={f"skill{k:03}": rng.randint(1, 10) for k in skills},
                attributes={"language": rng.choice(["zh", "en"])},
                queues=tuple(f"queue{k:03}" for k in skills),
            )
        )
    return RoutingEngine(queues, agents)


class Bag:
    """A set with O(1) random pick and removal (swap with the last)."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: str) -> None:
        if item not in self._index:
            self._index[item] = len(self._items)
            self._items.append(item)

    def discard(self, item: str) -> None:
        index = self._index.pop(item, None)
        if index is None:
            return
        last = self._items.pop()
        if last != item:
            self._items[index] = last
            self._index[last] = index

    def pick(self, rng: random.Random) -> str:
        return self._items[rng.randrange(len(self._items))]


@dataclass
class Load:
    """Drives the engine like a call controller would, and times every input."""

    engine: RoutingEngine
    rng: random.Random
    agent_ids: list[str]
    queue_names: list[str]
    now: float = START
    calls: int = 0
    waiting: Bag = field(default_factory=Bag)
    talking: Bag = field(default_factory=Bag)
    offers: list[str] = field(default_factory=list)
    returning: list[tuple[float, str]] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)
    decisions: int = 0
    timing: bool = False

    def call(self, engine_input: Callable[[], list[Decision]]) -> None:
        started = time.perf_counter_ns()
        decisions = engine_input()
        elapsed = time.perf_counter_ns() - started
        if self.timing:
            self.latencies_ns.append(elapsed)
            self.decisions += len(decisions)
        for decision in decisions:
            if isinstance(decision, Offer):
                self.waiting.discard(decision.call_id)
                self.offers.append(decision.call_id)
            elif isinstance(decision, CallQueued):
                self.waiting.add(decision.call_id)
            elif isinstance(decision, CallLeft):
                self.waiting.discard(decision.call_id)

    def arrive(self) -> None:
        self.calls += 1
        preferred = self.rng.choice(self.agent_ids) if self.rng.random() < 0.05 else None
        request = CallRequest(
            f"call{self.calls:07}",
            self.rng.choice(self.queue_names),
            priority=self.rng.choice((0, 0, 0, 1, 2)),
            preferred_agent=preferred,
            caller=f"+86138{self.calls:08}",
        )
        self.call(partial(self.engine.enqueue, request, self.now))

    def answer_offers(self) -> None:
        while self.offers:
            call_id = self.offers.pop()
            if self.rng.random() < 0.02:
                agent_id = self.engine.call(call_id).agent_id
                self.call(partial(self.engine.offer_failed, call_id, OfferFailure.BUSY, self.now))
                if agent_id is not None:
                    self.returning.append((self.now + 1.0, agent_id))
            else:
                self.call(partial(self.engine.offer_accepted, call_id, self.now))
                self.talking.add(call_id)

    def complete(self) -> None:
        call_id = self.talking.pick(self.rng)
        self.talking.discard(call_id)
        self.call(partial(self.engine.call_ended, call_id, self.now))

    def abandon(self) -> None:
        call_id = self.waiting.pick(self.rng)
        self.waiting.discard(call_id)
        self.call(partial(self.engine.caller_left, call_id, self.now))

    def agents_return(self) -> None:
        while self.returning and self.returning[0][0] <= self.now:
            _, agent_id = self.returning.pop(0)
            self.call(partial(self.engine.make_available, agent_id, self.now))

    def step(self, index: int, target_waiting: int) -> None:
        """One more input of the mix (and the answers to any offers it caused)."""
        self.now += CLOCK_STEP_S
        if index % TICK_EVERY == 0:
            self.call(partial(self.engine.tick, self.now))
            self.agents_return()
        else:
            pull = (target_waiting - len(self.waiting)) / max(1, target_waiting)
            draw = self.rng.random()
            if draw < 0.5 + pull or not self.talking:
                self.arrive()
            elif draw < 0.95 or not self.waiting:
                self.complete()
            else:
                self.abandon()
        self.answer_offers()


def percentile(sorted_values: list[int], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index] / 1e6


def pin_cpu() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {allowed[0]})
    return f"pinned to CPU {allowed[0]} (of {len(allowed)} allowed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Routing engine decisions/s and latency.")
    parser.add_argument("--agents", type=int, default=5_000)
    parser.add_argument("--skills", type=int, default=100, help="skills, one queue each")
    parser.add_argument("--waiting", type=int, default=10_000, help="calls kept waiting")
    parser.add_argument("--inputs", type=int, default=200_000, help="timed engine inputs")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if min(args.agents, args.skills, args.waiting, args.inputs) <= 0:
        parser.error("every size must be positive")
    if args.skills < SKILLS_PER_AGENT:
        parser.error(f"--skills must be at least {SKILLS_PER_AGENT}")

    pinned = pin_cpu()
    rng = random.Random(args.seed)
    print(f"routing benchmark - Python {platform.python_version()} ({sys.executable}), {pinned}")
    built = time.perf_counter()
    engine = centre(args.agents, args.skills, rng)
    load = Load(
        engine,
        rng,
        agent_ids=[view.agent_id for view in engine.agents()],
        queue_names=[f"queue{k:03}" for k in range(args.skills)],
    )
    for agent_id in load.agent_ids:
        load.call(partial(engine.login, agent_id, load.now))
    # Fill: calls arrive until the line holds --waiting calls; steps relax meanwhile.
    while len(load.waiting) < args.waiting:
        load.now += CLOCK_STEP_S
        load.arrive()
        load.answer_offers()
        if load.calls % TICK_EVERY == 0:
            load.call(partial(engine.tick, load.now))
            load.answer_offers()
    busy = len(load.talking)
    print(
        f"centre: {args.agents:,} agents, {args.skills} skills/queues, {busy:,} talking, "
        f"{len(load.waiting):,} waiting (set up in {time.perf_counter() - built:.1f} s)"
    )

    gc.collect()
    load.timing = True
    started = time.perf_counter()
    for index in range(args.inputs):
        load.step(index, args.waiting)
    wall_s = time.perf_counter() - started

    latencies = sorted(load.latencies_ns)
    engine_s = sum(latencies) / 1e9
    decisions_per_s = load.decisions / engine_s
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    snapshot = engine.snapshot(load.now)
    waiting = sum(queue.waiting for queue in snapshot.queues)
    print(
        f"timed: {len(latencies):,} inputs -> {load.decisions:,} decisions in "
        f"{engine_s:.2f} s inside the engine ({wall_s:.2f} s with the driver), "
        f"{args.inputs * CLOCK_STEP_S:.0f} s of centre time"
    )
    print(
        f"inputs/s {len(latencies) / engine_s:,.0f}   decisions/s {decisions_per_s:,.0f}   "
        f"latency p50 {p50:.3f} ms  p90 {percentile(latencies, 0.90):.3f} ms  "
        f"p99 {p99:.3f} ms  p99.9 {percentile(latencies, 0.999):.3f} ms  "
        f"max {latencies[-1] / 1e6:.3f} ms"
    )
    print(f"at the end: {waiting:,} waiting, {len(load.talking):,} talking")
    met_latency = p99 <= TARGET_P99_MS
    met_rate = decisions_per_s >= TARGET_DECISIONS_PER_S
    print(
        f"targets: p99 <= {TARGET_P99_MS} ms {'met' if met_latency else 'MISSED'}; "
        f">= {TARGET_DECISIONS_PER_S:,} decisions/s {'met' if met_rate else 'MISSED'}"
    )
    report = {
        "decisions_per_s": round(decisions_per_s),
        "p50_ms": round(p50, 4),
        "p99_ms": round(p99, 4),
        "agents": args.agents,
        "waiting": waiting,
    }
    print(json.dumps(report))
    return 0 if met_latency and met_rate else 1


if __name__ == "__main__":
    raise SystemExit(main())
