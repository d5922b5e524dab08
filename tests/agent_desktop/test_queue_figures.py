"""Queue figures on the desktop: the agent's own queues, calls in line only, sent on change.

No Asterisk and no database: a CallController whose engine is driven directly
(the hub reads the engine's state), and desktops that record what they get.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from ctiserver.acd.config import AcdConfig
from ctiserver.acd.controller import CallController
from ctiserver.acd.decisions import Offer, OfferWithdrawn
from ctiserver.acd.engine import RoutingEngine
from ctiserver.acd.model import AgentConfig, CallRequest, QueueConfig, Step
from ctiserver.agent_desktop.hub import Connection, DesktopHub
from ctiserver.agent_desktop.screen_pop import ScreenPops

T0 = 1_795_000_000.0


def agent(agent_id: str, *queues: str) -> AgentConfig:
    return AgentConfig(agent_id, agent_id, f"PJSIP/{agent_id}", skills={"sales": 5}, queues=queues)


def queue(name: str, title: str = "") -> QueueConfig:
    return QueueConfig(name, (Step(None),), title=title)


class Recorder:
    """A desktop's socket: keeps every text it is sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, data: str, compress: int | None = None) -> None:
        self.sent.append(data)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        return True

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in map(json.loads, self.sent) if m["type"] == kind]


class NoAmi:
    """What CallController's constructor needs of an AMI client; nothing is sent."""

    def subscribe(self, event: str, handler: object) -> None:
        return None

    def add_resync_hook(self, hook: object) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Centre:
    def __init__(self, hub: DesktopHub, clock: Clock) -> None:
        self.hub = hub
        self.clock = clock
        self.engine: RoutingEngine = hub.controller.engine
        self.sockets: dict[str, Recorder] = {}

    async def open(self, agent_id: str) -> Recorder:
        socket = Recorder()
        self.hub.attach(Connection(socket, agent_id))
        await settle()
        self.sockets[agent_id] = socket
        return socket

    async def tick(self, after_s: float = 1.0) -> None:
        self.clock.now += after_s
        self.hub.send_figures()
        await settle()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def centre() -> AsyncIterator[Centre]:
    config = AcdConfig(
        skills={"sales": ""},
        queues=(queue("sales", "销售"), queue("support", "客户服务")),
        agents=(
            agent("1001", "sales"),
            agent("1002", "sales"),
            agent("1003", "support", "sales"),
            agent("1004", "support"),
        ),
    )
    clock = Clock()
    controller = CallController(config, cast(Any, NoAmi()), clock=clock)
    hub = DesktopHub(
        controller,
        database=None,
        events=None,
        pops=ScreenPops(controller, None, clock=clock),
        clock=clock,
    )
    try:
        yield Centre(hub, clock)
    finally:
        await hub.close()


def test_engine_figures_count_only_the_calls_in_line() -> None:
    engine = RoutingEngine(
        [queue("sales"), queue("support")], [agent("a1", "sales"), agent("a2", "sales")]
    )
    engine.login("a1", T0 - 1)
    engine.enqueue(CallRequest("c1", "sales"), T0)  # offered to a1: ringing, not waiting
    engine.enqueue(CallRequest("c2", "sales"), T0 + 5)
    engine.enqueue(CallRequest("c3", "sales", priority=5), T0 + 10)  # first in line
    sales, support = engine.queue_figures(T0 + 40)
    assert (sales.queue, sales.waiting, sales.longest_wait_s) == ("sales", 2, 35)
    assert sales.open and sales.estimated_wait_s == 3 * 180
    assert (support.waiting, support.longest_wait_s, support.estimated_wait_s) == (0, 0, None)
    # Only the queues asked for, in that order; unknown names are skipped.
    picked = engine.queue_figures(T0 + 40, ["support", "nowhere", "sales"])
    assert [f.queue for f in picked] == ["support", "sales"]
    # The wallboard's snapshot still counts the ringing call in its longest wait.
    assert engine.snapshot(T0 + 40).queues[0].longest_wait_s == 40


async def test_snapshot_shows_the_agent_s_own_queues_only(centre: Centre) -> None:
    centre.engine.enqueue(CallRequest("c1", "support"), T0 - 12)
    desk = await centre.open("1003")
    (snapshot,) = desk.of_type("snapshot")
    assert snapshot["queues"] == [
        {
            "queue": "support",
            "title": "客户服务",
            "open": True,
            "waiting": 1,
            "longest_wait_s": 12,
            "estimated_wait_s": None,
        },
        {
            "queue": "sales",
            "title": "销售",
            "open": True,
            "waiting": 0,
            "longest_wait_s": 0,
            "estimated_wait_s": None,
        },
    ]


async def test_figures_are_sent_only_when_they_change(centre: Centre) -> None:
    desk = await centre.open("1001")
    await centre.tick()
    assert desk.of_type("queue_figures") == []  # as in the snapshot
    centre.engine.enqueue(CallRequest("c1", "sales"), centre.clock.now)
    await centre.tick(0.2)
    (first,) = desk.of_type("queue_figures")
    assert first["queues"][0]["waiting"] == 1 and first["queues"][0]["longest_wait_s"] == 0
    await centre.tick(0.2)  # 0.4 s: the same whole seconds
    assert len(desk.of_type("queue_figures")) == 1
    await centre.tick(0.8)  # 1.2 s
    assert [m["queues"][0]["longest_wait_s"] for m in desk.of_type("queue_figures")] == [0, 1]


async def test_agents_of_the_same_queues_share_one_message(centre: Centre) -> None:
    first, second = await centre.open("1001"), await centre.open("1002")
    other = await centre.open("1004")
    centre.engine.enqueue(CallRequest("c1", "sales"), centre.clock.now)
    await centre.tick()
    assert first.sent[-1] is second.sent[-1]  # encoded once, the same text
    (figures,) = first.of_type("queue_figures")
    assert figures == second.of_type("queue_figures")[0]
    assert [q["queue"] for q in figures["queues"]] == ["sales"]
    assert other.of_type("queue_figures") == []  # support did not change
    # An agent of both queues gets both, in their configured order.
    both = await centre.open("1003")
    centre.engine.enqueue(CallRequest("c2", "support"), centre.clock.now)
    await centre.tick()
    (mixed,) = both.of_type("queue_figures")
    assert [(q["queue"], q["waiting"]) for q in mixed["queues"]] == [("support", 1), ("sales", 1)]
    assert len(other.of_type("queue_figures")) == 1


async def test_an_offer_ringing_changes_no_figures(centre: Centre) -> None:
    centre.engine.login("1001", centre.clock.now)  # (the estimated wait changes with it)
    desk = await centre.open("1002")
    centre.engine.enqueue(CallRequest("c1", "sales"), centre.clock.now)  # offered at once
    for _ in range(3):
        await centre.tick()
    assert desk.of_type("queue_figures") == []


async def test_a_completed_pop_resends_only_the_offer_of_that_call(centre: Centre) -> None:
    hub = centre.hub
    ringing, idle = await centre.open("1001"), await centre.open("1002")
    now = centre.clock.now
    hub._on_decision(Offer("c1", "1001", "sales", "PJSIP/1001", 20, None, "13800138000", now))
    await settle()
    offers = ringing.of_type("offer")
    assert len(offers) == 1
    hub.desk("1001").offer["pop"]["complete"] = False  # type: ignore[index]
    hub._pop_completed("c1")
    hub._pop_completed("c2")  # no desk shows it
    await settle()
    assert [m["call_id"] for m in ringing.of_type("offer")] == ["c1", "c1"]
    assert idle.of_type("offer") == []
    hub._on_decision(OfferWithdrawn("c1", "1001", "caller left", now + 1))
    hub._pop_completed("c1")  # the offer is over: nothing to re-send
    await settle()
    assert len(ringing.of_type("offer")) == 2
