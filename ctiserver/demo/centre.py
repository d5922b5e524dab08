"""The demo's contact centre: the sample centre of acd.example.toml, always open, with
as many bot agents as asked for, and the files it runs on (flows, dialplan).

The example's queues keep their settings but open around the clock (in their own
time zone, so the figures' days stay Shanghai days): the demo works whatever the
hour. The first agents stay free for people to sign in as (`HUMAN_SEATS`); bots
take the others, and past the example's agents further bot agents are made
from them (skills, attributes and queues copied in turn).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import time
from pathlib import Path

from ctiserver.acd.config import AcdConfig, dump_acd_toml, load_acd_config
from ctiserver.acd.model import AgentConfig, BusinessHours, OpeningHours
from ctiserver.shipped import shipped_path

# Agents of the sample centre left to humans (1001 王小明 and 1002 李娜).
HUMAN_SEATS = 2
# Generated bot agents are numbered from here (the example's agents are 1001-1006).
EXTRA_AGENT_BASE = 2001
DEMO_ACD_FILE = "demo-acd.toml"
# The number callers dial for each flow (their `numbers`); the bank line gets most calls.
BANK_LINE = "95588"
TRAVEL_LINE = "4008123456"


def shipped_file(relative: str) -> Path:
    """A shipped file (acd.example.toml, flows/, dialplans/; ctiserver/shipped.py): the
    one in the working folder if there is one, else the one that came with the package."""
    here = Path(relative)
    if here.exists():
        return here
    return shipped_path(relative)


@dataclass(frozen=True, slots=True)
class DemoCentre:
    config: AcdConfig
    humans: tuple[AgentConfig, ...]
    bots: tuple[AgentConfig, ...]


def always_open(hours: BusinessHours | None) -> BusinessHours | None:
    """Hours open every day around the clock, in the same time zone; None stays None."""
    if hours is None:
        return None
    slots = tuple(OpeningHours(day, time(0, 0), time.max) for day in range(7))
    return BusinessHours(hours.timezone, slots)


def demo_centre(example: AcdConfig, bots: int) -> DemoCentre:
    """The example centre, always open, with `bots` bot agents (made up past its own)."""
    if bots < 0:
        raise ValueError(f"bot agents must be 0 or more, not {bots}")
    queues = tuple(
        dataclasses.replace(queue, hours=always_open(queue.hours)) for queue in example.queues
    )
    agents = list(example.agents)
    humans = tuple(agents[:HUMAN_SEATS])
    templates = agents[HUMAN_SEATS:] or agents
    bot_agents = agents[HUMAN_SEATS : HUMAN_SEATS + bots]
    for number in range(bots - len(bot_agents)):
        template = templates[number % len(templates)]
        agent_id = str(EXTRA_AGENT_BASE + number)
        extra = dataclasses.replace(
            template,
            agent_id=agent_id,
            name=f"Bot {agent_id}",
            endpoint=f"PJSIP/agent{agent_id}",
        )
        agents.append(extra)
        bot_agents.append(extra)
    config = AcdConfig(
        skills=dict(example.skills),
        queues=queues,
        agents=tuple(agents),
        grade_priority=dict(example.grade_priority),
    )
    return DemoCentre(config, humans, tuple(bot_agents))


def write_demo_centre(centre: DemoCentre, data_dir: Path, source: Path) -> Path:
    """The demo's ACD file in the data folder (what `[acd] config` then names)."""
    path = data_dir / DEMO_ACD_FILE
    header = (
        f"Written by `ctiserver demo` from {source}: the same centre, open around the\n"
        f"clock, with {len(centre.bots)} bot agents. Rewritten at every demo start."
    )
    path.write_text(dump_acd_toml(centre.config, header), encoding="utf-8")
    return path


def load_example() -> tuple[AcdConfig, Path]:
    source = shipped_file("acd.example.toml")
    return load_acd_config(source), source
