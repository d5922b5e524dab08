"""Which agents may take a queue's call at each expansion step.

A queue's steps are written as changes ("relax python by 2 after 30 s"); the
engine needs, for each step, the requirements in force, the attribute
conditions, the priority raised so far and what happens at expiry. Those depend
only on the queue's configuration, never on the call, so they are compiled once
per queue and every call at step k shares step k's criteria.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctiserver.acd.model import (
    ENDING_ACTIONS,
    MAX_PROFICIENCY,
    MIN_PROFICIENCY,
    AddSkill,
    AgentConfig,
    AttributeCondition,
    EndingAction,
    OfferCallback,
    QueueConfig,
    RaisePriority,
    RelaxLevel,
    RemoveSkill,
    SkillRequirement,
    StepAction,
)

CONDITION_OPERATORS = frozenset({"=", "!=", "in"})


@dataclass(frozen=True, slots=True)
class StepCriteria:
    """Step `index` of a queue as it applies to every call in it."""

    index: int
    requirements: tuple[SkillRequirement, ...]
    conditions: tuple[AttributeCondition, ...]
    # Sum of the RaisePriority actions of the steps before this one.
    priority_bonus: int
    # None: the step lasts until the call leaves the queue.
    duration_s: float | None
    # In configured order, cut after the first ending action (nothing after it
    # can apply: the call has left the queue).
    on_expiry: tuple[StepAction, ...]

    def admits(self, agent: AgentConfig) -> bool:
        """Whether the agent's skills and attributes meet this step (queue membership aside)."""
        skills = agent.skills
        for requirement in self.requirements:
            if skills.get(requirement.skill, 0) < requirement.min_level:
                return False
        return all(condition_holds(c, agent.attributes) for c in self.conditions)

    def skill_sum(self, agent: AgentConfig) -> int:
        """The agent's proficiency summed over this step's required skills ("most skilled")."""
        return sum(agent.skills.get(r.skill, 0) for r in self.requirements)


def condition_holds(condition: AttributeCondition, attributes: dict[str, str]) -> bool:
    actual = attributes.get(condition.attribute)
    if condition.operator == "!=":
        return actual != condition.value
    if actual is None:
        return False
    if condition.operator == "=":
        return actual == condition.value
    # "in": validated at compile time.
    return actual in condition.value


def compile_steps(queue: QueueConfig) -> tuple[StepCriteria, ...]:
    """The steps a call can reach in `queue`, with the effect of earlier expiries applied.

    No steps means one open-ended step without requirements. A step without a
    duration is the last reachable one. When the last step has a duration and
    no ending action, its changes apply to a final open-ended step (reported as
    step `len(queue.steps)`) with the same attribute conditions.
    ValueError for a malformed step.
    """
    if not queue.steps:
        return (StepCriteria(0, (), (), 0, None, ()),)
    compiled: list[StepCriteria] = []
    in_force: dict[str, int] = {}
    bonus = 0
    for index, step in enumerate(queue.steps):
        _check_step(queue.name, index, step.duration_s, step.conditions)
        if step.requirements is not None:
            in_force = {}
            for requirement in step.requirements:
                _check_level(queue.name, index, requirement.min_level)
                in_force[requirement.skill] = requirement.min_level
        actions = _until_ending(step.on_expiry)
        compiled.append(
            StepCriteria(
                index=index,
                requirements=_requirements(in_force),
                conditions=step.conditions,
                priority_bonus=bonus,
                duration_s=step.duration_s,
                on_expiry=actions if step.duration_s is not None else (),
            )
        )
        if step.duration_s is None or ending_action(actions) is not None:
            return tuple(compiled)
        bonus += _apply_changes(queue.name, index, actions, in_force)
    last = queue.steps[-1]
    compiled.append(
        StepCriteria(len(queue.steps), _requirements(in_force), last.conditions, bonus, None, ())
    )
    return tuple(compiled)


def ending_action(actions: tuple[StepAction, ...]) -> EndingAction | None:
    for action in actions:
        if isinstance(action, ENDING_ACTIONS):
            return action
    return None


def _until_ending(actions: tuple[StepAction, ...]) -> tuple[StepAction, ...]:
    for position, action in enumerate(actions):
        if isinstance(action, ENDING_ACTIONS):
            return actions[: position + 1]
    return actions


def _apply_changes(
    queue: str, index: int, actions: tuple[StepAction, ...], in_force: dict[str, int]
) -> int:
    """Apply the requirement changes in place; return the priority raised."""
    raised = 0
    for action in actions:
        match action:
            case RelaxLevel(skill=skill, by=by):
                if skill in in_force:
                    in_force[skill] = max(MIN_PROFICIENCY, in_force[skill] - by)
            case AddSkill(skill=skill, min_level=level):
                _check_level(queue, index, level)
                in_force[skill] = level
            case RemoveSkill(skill=skill):
                in_force.pop(skill, None)
            case RaisePriority(by=by):
                raised += by
            case OfferCallback():
                pass  # the engine asks the controller; criteria do not change
    return raised


def _requirements(in_force: dict[str, int]) -> tuple[SkillRequirement, ...]:
    return tuple(SkillRequirement(skill, level) for skill, level in in_force.items())


def _check_step(
    queue: str, index: int, duration_s: float | None, conditions: tuple[AttributeCondition, ...]
) -> None:
    if duration_s is not None and duration_s < 0:
        raise ValueError(f"queue {queue!r} step {index}: negative duration {duration_s}")
    for condition in conditions:
        if condition.operator not in CONDITION_OPERATORS:
            raise ValueError(
                f"queue {queue!r} step {index}: unknown operator {condition.operator!r} "
                f"(use one of {sorted(CONDITION_OPERATORS)})"
            )
        if condition.operator == "in" and not isinstance(condition.value, tuple):
            raise ValueError(f"queue {queue!r} step {index}: 'in' needs a tuple of values")


def _check_level(queue: str, index: int, level: int) -> None:
    if not MIN_PROFICIENCY <= level <= MAX_PROFICIENCY:
        raise ValueError(
            f"queue {queue!r} step {index}: level {level} outside "
            f"{MIN_PROFICIENCY}..{MAX_PROFICIENCY}"
        )
