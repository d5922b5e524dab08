"""Synthetic traffic for the emulator: agent phones that answer, callers arriving at random.

Arrivals are Poisson (exponential gaps) at a mean rate; each caller keys a
menu digit after a few seconds and hangs up after its patience unless the
call ended first. A seed makes a run repeatable.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.sim.phones import PhonePolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Traffic:
    agents: int = 5
    calls_per_minute: float = 6.0
    patience: float = 120.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.agents < 0 or self.calls_per_minute < 0 or self.patience <= 0:
            raise ValueError(f"invalid traffic settings: {self}")


def add_agent_phones(emulator: AsteriskEmulator, traffic: Traffic, rng: random.Random) -> None:
    """Registered phones agent1001... that ring 1-4 s, then talk 20-90 s."""
    for number in range(1001, 1001 + traffic.agents):
        emulator.add_agent_phone(
            f"agent{number}",
            PhonePolicy(ring_time=rng.uniform(1.0, 4.0), talk_time=rng.uniform(20.0, 90.0)),
        )


async def generate_calls(emulator: AsteriskEmulator, traffic: Traffic, rng: random.Random) -> None:
    """Place callers on extension 100 until cancelled (the emulator owns the calls)."""
    if traffic.calls_per_minute == 0:
        return
    number = 0
    while True:
        await emulator.clock.sleep(rng.expovariate(traffic.calls_per_minute / 60.0))
        number += 1
        caller = f"555{rng.randrange(10**4):04d}"
        await emulator.place_call(
            caller,
            f"Caller {number}",
            exten="100",
            dtmf=[(rng.uniform(2.0, 6.0), rng.choice("123"))],
            hangup_after=traffic.patience,
        )
        log.info("call %d from %s", number, caller)
