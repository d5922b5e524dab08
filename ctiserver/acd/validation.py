"""Consistency checks of a routing configuration before the engine takes it.

A configuration is checked whole, so a reload that would leave an agent in a
queue that does not exist, or an overflow to nowhere, changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from ctiserver.acd.criteria import StepCriteria, compile_steps
from ctiserver.acd.hours import zone
from ctiserver.acd.model import (
    MAX_PROFICIENCY,
    MIN_PROFICIENCY,
    AgentConfig,
    Overflow,
    QueueConfig,
    StepAction,
)


def validated_configuration(
    queues: Iterable[QueueConfig], agents: Iterable[AgentConfig]
) -> tuple[tuple[QueueConfig, ...], tuple[AgentConfig, ...], dict[str, tuple[StepCriteria, ...]]]:
    """The configuration as tuples plus each queue's compiled steps; ValueError if inconsistent."""
    queue_configs = tuple(queues)
    agent_configs = tuple(agents)
    compiled: dict[str, tuple[StepCriteria, ...]] = {}
    for queue in queue_configs:
        if queue.name in compiled:
            raise ValueError(f"queue {queue.name!r} is configured twice")
        if queue.ring_timeout_s <= 0:
            raise ValueError(f"queue {queue.name!r}: ring_timeout_s must be positive")
        if queue.wrap_up_s < 0 or queue.preferred_agent_s < 0:
            raise ValueError(f"queue {queue.name!r}: negative wrap_up_s or preferred_agent_s")
        if queue.hours is not None:
            zone(queue.hours.timezone)
        compiled[queue.name] = compile_steps(queue)
    for queue in queue_configs:
        actions: list[StepAction | None] = [queue.when_closed, queue.when_unstaffed]
        actions.extend(action for step in queue.steps for action in step.on_expiry)
        for action in actions:
            if isinstance(action, Overflow) and action.queue not in compiled:
                raise ValueError(
                    f"queue {queue.name!r} overflows to unknown queue {action.queue!r}"
                )
    seen: set[str] = set()
    for agent in agent_configs:
        if agent.agent_id in seen:
            raise ValueError(f"agent {agent.agent_id!r} is configured twice")
        seen.add(agent.agent_id)
        if len(set(agent.queues)) != len(agent.queues):
            raise ValueError(f"agent {agent.agent_id!r} lists a queue twice")
        for name in agent.queues:
            if name not in compiled:
                raise ValueError(f"agent {agent.agent_id!r} serves unknown queue {name!r}")
        for skill, level in agent.skills.items():
            if not MIN_PROFICIENCY <= level <= MAX_PROFICIENCY:
                raise ValueError(
                    f"agent {agent.agent_id!r}: {skill} level {level} outside "
                    f"{MIN_PROFICIENCY}..{MAX_PROFICIENCY}"
                )
    return queue_configs, agent_configs, compiled
