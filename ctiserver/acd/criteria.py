"""Which agents may take a queue's call at each expansion step.

A queue's steps are written as changes ("relax python by 2 after 30 s"); the
engine needs, for each step, the requirements in force, the attribute
conditions, the priority raised so far and what happens at expiry. Those depend
only on the queue's configuration, never on the call, so they are compiled once
per queue and every call at step k shares step k's criteria.

A call may bring requirements and conditions of its own (CallRequest): they
are checked once at enqueue into a CallCriteria that holds, unchanged, on top
of every step's. Their compact text form (`cards:3,lang=zh`) travels in a
channel variable so a caller resumed by the dialplan keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass
from urllib.parse import quote, unquote

from ctiserver.acd.model import (
    ENDING_ACTIONS,
    MAX_PROFICIENCY,
    MIN_PROFICIENCY,
    AddSkill,
    AgentConfig,
    AttributeCondition,
    CallRequest,
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
        return meets(agent, self.requirements, self.conditions)

    def skill_sum(self, agent: AgentConfig) -> int:
        """The agent's proficiency summed over this step's required skills ("most skilled")."""
        return sum(agent.skills.get(r.skill, 0) for r in self.requirements)


@dataclass(frozen=True, slots=True)
class CallCriteria:
    """A call's own requirements and conditions, in force at every step of its stay."""

    requirements: tuple[SkillRequirement, ...]
    conditions: tuple[AttributeCondition, ...]

    def admits(self, agent: AgentConfig) -> bool:
        return meets(agent, self.requirements, self.conditions)


def meets(
    agent: AgentConfig,
    requirements: tuple[SkillRequirement, ...],
    conditions: tuple[AttributeCondition, ...],
) -> bool:
    skills = agent.skills
    for requirement in requirements:
        if skills.get(requirement.skill, 0) < requirement.min_level:
            return False
    return all(condition_holds(c, agent.attributes) for c in conditions)


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
        _check_operator(f"queue {queue!r} step {index}", condition)


def _check_operator(where: str, condition: AttributeCondition) -> None:
    if condition.operator not in CONDITION_OPERATORS:
        raise ValueError(
            f"{where}: unknown operator {condition.operator!r} "
            f"(use one of {sorted(CONDITION_OPERATORS)})"
        )
    if condition.operator == "in" and not isinstance(condition.value, tuple):
        raise ValueError(f"{where}: 'in' needs a tuple of values")


def _check_level(queue: str, index: int, level: int) -> None:
    if not MIN_PROFICIENCY <= level <= MAX_PROFICIENCY:
        raise ValueError(
            f"queue {queue!r} step {index}: level {level} outside "
            f"{MIN_PROFICIENCY}..{MAX_PROFICIENCY}"
        )


# -- a call's own requirements and conditions ------------------------------------------------


def skills_named(
    declared: Iterable[str], queues: Iterable[QueueConfig], agents: Iterable[AgentConfig]
) -> frozenset[str]:
    """The skills a call may require: declared ones and any the configuration uses."""
    named = set(declared)
    for agent in agents:
        named.update(agent.skills)
    for queue in queues:
        for step in queue.steps:
            named.update(r.skill for r in step.requirements or ())
            named.update(a.skill for a in step.on_expiry if isinstance(a, AddSkill))
    return frozenset(named)


def call_criteria(request: CallRequest, known_skills: Set[str]) -> CallCriteria | None:
    """The request's own criteria, checked; None when it has none (the common case).

    ValueError for an unknown skill, a skill listed twice, a level outside
    1..10, an unknown operator, "=" or "!=" without a single value, or "in"
    without values (it could never match: a call nobody may take).
    """
    if not request.requirements and not request.conditions:
        return None
    where = f"call {request.call_id!r}"
    seen: set[str] = set()
    for requirement in request.requirements:
        skill, level = requirement.skill, requirement.min_level
        if skill not in known_skills:
            raise ValueError(f"{where}: unknown skill {skill!r}")
        if skill in seen:
            raise ValueError(f"{where}: skill {skill!r} required twice")
        seen.add(skill)
        if not MIN_PROFICIENCY <= level <= MAX_PROFICIENCY:
            raise ValueError(
                f"{where}: {skill} level {level} outside {MIN_PROFICIENCY}..{MAX_PROFICIENCY}"
            )
    for condition in request.conditions:
        _check_operator(where, condition)
        value = condition.value
        if condition.operator == "in":
            if not value or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where}: 'in' on {condition.attribute!r} needs values")
        elif not isinstance(value, str):
            raise ValueError(
                f"{where}: {condition.operator!r} on {condition.attribute!r} needs one value"
            )
    return CallCriteria(request.requirements, request.conditions)


def format_call_criteria(
    requirements: tuple[SkillRequirement, ...], conditions: tuple[AttributeCondition, ...]
) -> str:
    """The compact text form: `cards:3,lang=zh,region!=north,tier=gold|vip`.

    "in" is written `attr=v1|v2` (one value reads back as "=", the same
    test). Names and values are percent-encoded where they hold a separator.
    """
    items = [f"{_escape(r.skill)}:{r.min_level}" for r in requirements]
    for condition in conditions:
        name = _escape(condition.attribute)
        value = condition.value
        if isinstance(value, tuple):
            items.append(f"{name}={'|'.join(_escape(v) for v in value)}")
        else:
            items.append(f"{name}{condition.operator}{_escape(value)}")
    return ",".join(items)


def parse_call_criteria(
    text: str,
) -> tuple[tuple[SkillRequirement, ...], tuple[AttributeCondition, ...], list[str]]:
    """Read format_call_criteria's text back; items that make no sense come back in the list.

    Tolerant: the text went through a channel variable, so junk is dropped
    item by item rather than failing the whole (skills are not checked
    against a configuration here).
    """
    requirements: dict[str, SkillRequirement] = {}
    conditions: list[AttributeCondition] = []
    junk: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if "=" in item:
            name, _, raw = item.partition("=")
            operator = "="
            if name.endswith("!"):  # a "!" in a name is escaped: this is "!="
                name, operator = name[:-1], "!="
            attribute = unquote(name.strip())
            values = tuple(unquote(v.strip()) for v in raw.split("|"))
            if not attribute or not all(values):
                junk.append(item)
            elif len(values) > 1 and operator == "=":
                conditions.append(AttributeCondition(attribute, "in", values))
            elif len(values) == 1:
                conditions.append(AttributeCondition(attribute, operator, values[0]))
            else:
                junk.append(item)  # "!=" takes one value
            continue
        name, _, raw = item.partition(":")
        skill = unquote(name.strip())
        level = raw.strip()
        if (
            not skill
            or skill in requirements
            or not (level.isascii() and level.isdigit())
            or not MIN_PROFICIENCY <= int(level) <= MAX_PROFICIENCY
        ):
            junk.append(item)
            continue
        requirements[skill] = SkillRequirement(skill, int(level))
    return tuple(requirements.values()), tuple(conditions), junk


def _escape(text: str) -> str:
    # Only the separators and "%" itself: names stay readable in `core show channel`.
    return quote(text, safe=" ") if any(c in text for c in ",:=!|%") else text
