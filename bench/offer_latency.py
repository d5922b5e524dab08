"""Offer latency: from a routing trigger to the agent's phone ringing, over real sockets.

Two processes, as in production (Asterisk is not inside ctiserver):
  emulator   the Asterisk emulator running the shipped dialplan, with N
             registered agent phones (ring 1 s, talk 1.3-1.5 x N / rate) and callers
             arriving at a Poisson rate on extension 100 (dialplan ->
             FastAGI `ivr` -> the support queue);
  ctiserver  FastAGI server, AMI client and the ACD call controller (engine,
             Originate + Bridge), every agent logged in and available.

Measured in the ctiserver process on one clock (time.perf_counter): the
trigger is the routing input that led to the offer — a call queued while an
agent was free, or an agent becoming available while calls waited — and the
end is the AMI `Newstate Ringing` of the agent leg the controller
originated (the phone's 180 as Asterisk reports it). The load (talk time
vs agents) keeps the centre near saturation so both triggers occur.

    python bench/offer_latency.py [--agents 500] [--cps 20] [--seconds 60]

Ends with one JSON line: {"p50_ms", "p99_ms", "calls_per_s", "agents", ...}.
Target (issue 3): p99 <= 50 ms at 20 calls/s with 500 agents.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import random
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctiserver.acd.config import AcdConfig  # noqa: E402
from ctiserver.acd.controller import CallController  # noqa: E402
from ctiserver.acd.decisions import AgentStateChanged, CallQueued, Decision, Offer  # noqa: E402
from ctiserver.acd.fastagi import QueueEntry  # noqa: E402
from ctiserver.acd.model import (  # noqa: E402
    AgentConfig,
    AgentState,
    QueueConfig,
    SkillRequirement,
    Step,
)
from ctiserver.asterisk.agi.server import FastAgiServer  # noqa: E402
from ctiserver.asterisk.ami.client import AmiClient, AmiConfig  # noqa: E402
from ctiserver.asterisk.ami.codec import Message  # noqa: E402

FIRST_AGENT = 1001


# -- the emulator process -----------------------------------------------------------


def emulator_main(
    conn: Connection, fastagi_port: int, agents: int, cps: float, seconds: float, seed: int
) -> None:
    asyncio.run(_emulate(conn, fastagi_port, agents, cps, seconds, seed))


async def _emulate(
    conn: Connection, fastagi_port: int, agents: int, cps: float, seconds: float, seed: int
) -> None:
    from ctiserver.sim.dialplan_file import load_dialplan
    from ctiserver.sim.emulator import AsteriskEmulator
    from ctiserver.sim.phones import PhonePolicy

    rng = random.Random(seed)
    dialplan = load_dialplan(
        REPO / "dialplans" / "extensions.conf", {"CTISERVER": f"127.0.0.1:{fastagi_port}"}
    )
    emulator = AsteriskEmulator("127.0.0.1", 0, dialplan=dialplan)
    await emulator.start()
    # Talk times of 1.3-1.5 x agents / arrival rate: the offered load exceeds
    # the agents, so after ~1.4 x agents/cps seconds calls queue and offers
    # are also triggered by agents freeing up.
    full_load_s = agents / cps
    for number in range(FIRST_AGENT, FIRST_AGENT + agents):
        talk = rng.uniform(1.3, 1.5) * full_load_s
        emulator.add_agent_phone(f"agent{number}", PhonePolicy(ring_time=1.0, talk_time=talk))
    conn.send(emulator.ami_port)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # "go"
    started = time.monotonic()
    placed = 0
    while time.monotonic() - started < seconds:
        await asyncio.sleep(rng.expovariate(cps))
        placed += 1
        await emulator.place_call(f"1380000{placed:04d}", f"Caller {placed}", exten="100")
    conn.send(placed)
    await loop.run_in_executor(None, conn.recv)  # "stop"
    await emulator.close()


# -- the ctiserver side -------------------------------------------------------------


def centre_config(agents: int) -> AcdConfig:
    queue = QueueConfig(
        "support",
        steps=(Step(None, (SkillRequirement("general", 1),)),),
        ring_timeout_s=20.0,
        wrap_up_s=0.0,
        announce_every_s=0.0,
    )
    return AcdConfig(
        skills={"general": "General enquiries"},
        queues=(queue,),
        agents=tuple(
            AgentConfig(
                str(number),
                f"Agent {number}",
                f"PJSIP/agent{number}",
                {"general": 5},
                queues=("support",),
            )
            for number in range(FIRST_AGENT, FIRST_AGENT + agents)
        ),
        grade_priority={},
    )


class LatencyProbe:
    """Pairs each offer's trigger time with its agent leg's first Ringing."""

    def __init__(self, controller: CallController) -> None:
        self.controller = controller
        self.last_trigger = 0.0
        self.trigger_of_leg: dict[str, tuple[float, str]] = {}
        self.samples: dict[str, list[float]] = {"call arrived": [], "agent freed": []}
        self._kind = "call arrived"

    def on_decision(self, decision: Decision) -> None:
        now = time.perf_counter()
        if isinstance(decision, CallQueued):
            self.last_trigger, self._kind = now, "call arrived"
        elif isinstance(decision, AgentStateChanged) and decision.state is AgentState.AVAILABLE:
            self.last_trigger, self._kind = now, "agent freed"
        elif isinstance(decision, Offer):
            live = self.controller.calls.get(decision.call_id)
            if live is not None and live.leg is not None:
                self.trigger_of_leg[live.leg.uniqueid] = (self.last_trigger, self._kind)

    def on_newstate(self, message: Message) -> None:
        if message.get("ChannelStateDesc") != "Ringing":
            return
        trigger = self.trigger_of_leg.pop(message.get("Uniqueid") or "", None)
        if trigger is not None:
            started, kind = trigger
            self.samples[kind].append((time.perf_counter() - started) * 1000.0)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def measure(agents: int, cps: float, seconds: float, seed: int) -> dict[str, object]:
    agi = FastAgiServer("127.0.0.1", 0, command_timeout=30.0)
    await agi.start()
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=emulator_main, args=(child, agi.port, agents, cps, seconds, seed), daemon=True
    )
    process.start()
    loop = asyncio.get_running_loop()
    ami_port = await loop.run_in_executor(None, parent.recv)
    ami = AmiClient(AmiConfig(port=ami_port, username="cti", secret="cti", ping_interval=None))
    await ami.connect()
    controller = CallController(centre_config(agents), ami)
    probe = LatencyProbe(controller)
    controller.add_listener(probe.on_decision)
    ami.subscribe("Newstate", probe.on_newstate)
    entry = QueueEntry(controller)
    agi.route("ivr", lambda session: entry.enter(session, "support"))
    await controller.start()
    for number in range(FIRST_AGENT, FIRST_AGENT + agents):
        controller.login(str(number))
    try:
        parent.send("go")
        placed = await loop.run_in_executor(None, parent.recv)
        await asyncio.sleep(3.0)  # let the last offers ring
    finally:
        parent.send("stop")
        await agi.close()
        await controller.close()
        await ami.close()
        await loop.run_in_executor(None, process.join, 10)
    every = probe.samples["call arrived"] + probe.samples["agent freed"]
    return {
        "p50_ms": round(statistics.median(every), 2) if every else None,
        "p99_ms": round(percentile(every, 0.99), 2),
        "calls_per_s": round(placed / seconds, 2),
        "agents": agents,
        "offers": len(every),
        "calls": placed,
        "by_trigger": {
            kind: {
                "offers": len(values),
                "p50_ms": round(statistics.median(values), 2) if values else None,
                "p99_ms": round(percentile(values, 0.99), 2) if values else None,
            }
            for kind, values in probe.samples.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--cps", type=float, default=20.0, help="mean call arrivals per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long calls arrive")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(measure(args.agents, args.cps, args.seconds, args.seed))
    print(
        f"{result['offers']} offers for {result['calls']} calls at {result['calls_per_s']} calls/s,"
        f" {args.agents} agents"
    )
    for kind, figures in result["by_trigger"].items():  # type: ignore[attr-defined]
        print(f"  {kind:13s} {figures}")
    print(f"  all           p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
