"""Hand-written event sequences shaped as the ACD, IVR and desktop write them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ctiserver.metrics.facts import MetricEvent

# 2026-03-02 09:00:00 UTC, a Monday: interval edges fall on round numbers.
T0 = 1_772_442_000.0


@dataclass
class Log:
    events: list[MetricEvent] = field(default_factory=list)

    def add(
        self,
        kind: str,
        at: float,
        payload: dict[str, Any] | None = None,
        *,
        call: str | None = None,
        agent: str | None = None,
        queue: str | None = None,
    ) -> Log:
        self.events.append(MetricEvent(kind, T0 + at, call, agent, queue, payload or {}))
        return self

    def state(
        self, agent: str, at: float, state: str, reason: str | None = None, call: str | None = None
    ) -> Log:
        return self.add(
            "acd.agent_state",
            at,
            {"state": state, "previous": "", "reason": reason},
            call=call,
            agent=agent,
        )

    def enter(
        self,
        call: str,
        queue: str,
        at: float,
        caller: str = "5550001",
        skills: dict[str, int] | None = None,
    ) -> Log:
        self.add(
            "acd.caller_entered",
            at,
            {"caller": caller, "skills": skills or {}},
            call=call,
            queue=queue,
        )
        return self.add("acd.call_queued", at, {"position": 1}, call=call, queue=queue)

    def left(
        self, call: str, queue: str, at: float, outcome: str, target: str | None = None
    ) -> Log:
        return self.add(
            "acd.call_left",
            at,
            {"outcome": outcome, "target_queue": target},
            call=call,
            queue=queue,
        )

    def answer(
        self, call: str, queue: str, agent: str, at: float, *, transferred: bool = False
    ) -> Log:
        """connected, the agent on the call, the stay answered: as the controller writes them."""
        payload: dict[str, Any] = {"agent_leg": "leg"}
        if transferred:
            payload["transferred"] = True
        self.add("acd.connected", at, payload, call=call, agent=agent, queue=queue)
        self.state(agent, at, "on_call", "transfer" if transferred else None, call)
        if not transferred:
            self.left(call, queue, at, "answered")
        return self

    def end(
        self,
        call: str,
        queue: str,
        agent: str,
        at: float,
        wrap_until: float | None = None,
        then: str = "available",
    ) -> Log:
        self.add("acd.call_ended", at, {"talk_s": 0}, call=call, agent=agent, queue=queue)
        if wrap_until is not None:
            self.state(agent, at, "wrap_up", None, call)
            return self.state(agent, wrap_until, then)
        return self.state(agent, at, then)
