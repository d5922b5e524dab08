"""The ACD configuration: skills, queues and their expansion steps, agents, grade priorities.

It comes from a TOML file an operator writes by hand (acd.example.toml
documents the format) or from the database (config_store.py); both go
through `parse_acd_config`, which checks everything and reports every problem
at once, each naming the source, the place and the offending value:

    acd.toml: queues[1] "support" steps[0].duration: -5 seconds is negative; ...

`acd_config_to_data` and `dump_acd_toml` write a configuration back in the
same shape, so what is saved or exported reads back equal. Pure: no I/O but
reading the file in `load_acd_config`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import tomllib
import zoneinfo
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, TypeVar

from ctiserver.acd.model import (
    ENDING_ACTIONS,
    MAX_PROFICIENCY,
    MIN_PROFICIENCY,
    AddSkill,
    AgentConfig,
    AgentPolicy,
    AttributeCondition,
    BusinessHours,
    CloseCall,
    OfferCallback,
    OpeningHours,
    Overflow,
    QueueConfig,
    RaisePriority,
    RelaxLevel,
    RemoveSkill,
    SkillRequirement,
    Step,
    StepAction,
    ToVoicemail,
)
from ctiserver.config import ConfigError
from ctiserver.problems import did_you_mean, read_text_file, zone_exists

_Value = TypeVar("_Value")

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_TOP_KEYS = ("grades", "skills", "queues", "agents")
_QUEUE_KEYS = (
    "name",
    "title",
    "policy",
    "base_priority",
    "ring_timeout",
    "wrap_up",
    "preferred_agent",
    "record",
    "music",
    "announce_every",
    "when_closed",
    "when_unstaffed",
    "hours",
    "steps",
)
_STEP_KEYS = ("duration", "require", "where", "then")
_AGENT_KEYS = ("id", "name", "endpoint", "skills", "attributes", "queues")
_HOURS_KEYS = ("timezone", "closed")

# Skill, queue and attribute names appear inside action and condition strings
# ("relax billing 2", "team in (a, b)"), so they must be one word.
_NAME = re.compile(r"\w[\w.-]*")
_NAME_RULE = "must be one word of letters, digits, '_', '.' or '-'"
# The login the desktop and the event log use: anything without spaces ("1001", "wang.xm").
_AGENT_ID = re.compile(r"\S+")
_ENDPOINT = re.compile(r"[A-Za-z][A-Za-z0-9_-]*/\S+")
_WHOLE_NUMBER = re.compile(r"[+-]?\d+")
_SLOT = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CONDITION = re.compile(r"([\w.-]+)\s*(.*)", re.DOTALL)

_ACTION_FORMS = {
    "relax": "relax SKILL [BY]",
    "add": "add skill SKILL [LEVEL]",
    "remove": "remove skill SKILL",
    "raise": "raise priority [BY]",
    "overflow": "overflow QUEUE",
    "callback": "callback",
    "voicemail": "voicemail",
    "close": "close",
}
# What can happen to a call that never queued (closed or unstaffed queue).
_ENTRY_ACTIONS = (*ENDING_ACTIONS, OfferCallback)

# The defaults of every optional queue setting are QueueConfig's own.
_QUEUE_DEFAULTS = QueueConfig(name="", steps=())
# A queue written without steps: any of its agents may answer, for as long as it takes.
_OPEN_STEP = Step(duration_s=None)


class AcdConfigError(ConfigError):
    """Every problem found in an ACD configuration (`.problems`), one per line."""


@dataclass(frozen=True)
class AcdConfig:
    """A checked ACD configuration; queues are sorted by name, agents by id."""

    skills: dict[str, str] = field(default_factory=dict)  # name -> description
    queues: tuple[QueueConfig, ...] = ()
    agents: tuple[AgentConfig, ...] = ()
    # Customer grade -> priority added to their calls, e.g. {"vip": 10, "standard": 0}.
    grade_priority: dict[str, int] = field(default_factory=dict)
    _queues_by_name: dict[str, QueueConfig] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _agents_by_id: dict[str, AgentConfig] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self._queues_by_name.update((queue.name, queue) for queue in self.queues)
        self._agents_by_id.update((agent.agent_id, agent) for agent in self.agents)

    def queue(self, name: str) -> QueueConfig:
        """The queue `name`; KeyError if the configuration has none."""
        try:
            return self._queues_by_name[name]
        except KeyError:
            raise KeyError(f"unknown queue {name!r}") from None

    def agent(self, agent_id: str) -> AgentConfig:
        """The agent `agent_id`; KeyError if the configuration has none."""
        try:
            return self._agents_by_id[agent_id]
        except KeyError:
            raise KeyError(f"unknown agent {agent_id!r}") from None


def load_acd_config(path: Path) -> AcdConfig:
    """Read and check an ACD TOML file; AcdConfigError lists every problem."""
    source = str(path)
    text, problem = read_text_file(path)
    if text is None:
        raise AcdConfigError([problem or source])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)".
        raise AcdConfigError([f"{source}: invalid TOML: {exc}"]) from None
    return parse_acd_config(data, source)


def parse_acd_config(data: Mapping[str, Any], source: str) -> AcdConfig:
    """Check `data` (the file's shape, see acd.example.toml) and build the configuration.

    `source` starts every problem ("acd.toml", "database"). Raises
    AcdConfigError with every problem found.
    """
    reader = _Reader(source)
    reader.check_keys(data, _TOP_KEYS, "")
    grades = reader.grades(data.get("grades", {}))
    skills = reader.skills(data.get("skills", {}))
    queue_tables = reader.array_of_tables(data.get("queues", []), "queues")
    agent_tables = reader.array_of_tables(data.get("agents", []), "agents")
    # Names first: steps overflow to queues declared further down the file.
    queue_names = reader.names(queue_tables, "queues", "name", _NAME, "queue name")
    agent_ids = reader.names(agent_tables, "agents", "id", _AGENT_ID, "agent id")
    reader.queue_names = set(queue_names.values())

    queues = [
        reader.queue(table, _label("queues", index, table.get("name")), queue_names.get(index, ""))
        for index, table in queue_tables
    ]
    agents = [
        reader.agent(table, _label("agents", index, table.get("id")), agent_ids.get(index, ""))
        for index, table in agent_tables
    ]
    reader.check_endpoints_unique(agents, agent_tables)
    if reader.problems:
        raise AcdConfigError(reader.problems)
    return AcdConfig(
        skills=skills,
        queues=tuple(sorted(queues, key=lambda queue: queue.name)),
        agents=tuple(sorted(agents, key=lambda agent: agent.agent_id)),
        grade_priority=grades,
    )


# -- reading -----------------------------------------------------------------------


def _at(where: str, key: str) -> str:
    """The location of `key` inside `where`: `queues[1] "support" hours`, `steps[0].duration`."""
    if not where:
        return key
    return f"{where} {key}" if where.endswith('"') else f"{where}.{key}"


def _label(array: str, index: int, name: object) -> str:
    return f'{array}[{index}] "{name}"' if isinstance(name, str) and name else f"{array}[{index}]"


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Reader:
    """Reads one configuration, collecting problems instead of stopping at the first.

    Each reader returns a usable value (a default) after reporting a problem,
    so that one mistake does not hide the ones after it.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.skill_names: set[str] = set()
        self.queue_names: set[str] = set()

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.source}: {where}: {message}")

    def check_keys(self, table: Mapping[str, Any], known: Collection[str], where: str) -> None:
        for key in table:
            if key in known:
                continue
            hint = did_you_mean(key, known) or f"; expected one of: {', '.join(known)}"
            self.problem(_at(where, key), f"unknown key {key!r}{hint}")

    def table(self, value: Any, where: str) -> Mapping[str, Any]:
        if isinstance(value, Mapping):
            return value
        self.problem(where, f"expected a table, got {value!r}")
        return {}

    def array_of_tables(self, value: Any, where: str) -> list[tuple[int, Mapping[str, Any]]]:
        """The tables of an array of tables with their index; other items are reported."""
        if not isinstance(value, list):
            self.problem(where, f"expected an array of tables ([[{where}]] blocks), got {value!r}")
            return []
        tables: list[tuple[int, Mapping[str, Any]]] = []
        for index, item in enumerate(value):
            if isinstance(item, Mapping):
                tables.append((index, item))
            else:
                self.problem(f"{where}[{index}]", f"expected a table, got {item!r}")
        return tables

    def typed(
        self,
        table: Mapping[str, Any],
        key: str,
        where: str,
        default: _Value,
        kind: type[_Value],
        expected: str,
    ) -> _Value:
        """table[key] if it is a `kind` (`default` when absent); else a problem and `default`."""
        value = table.get(key, default)
        # A bool is an int to Python, not to TOML: `true` is no whole number.
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        self.problem(_at(where, key), f"expected {expected}, got {value!r}")
        return default

    def text(self, table: Mapping[str, Any], key: str, where: str, default: str) -> str:
        return self.typed(table, key, where, default, str, "a string")

    def whole(self, table: Mapping[str, Any], key: str, where: str, default: int) -> int:
        return self.typed(table, key, where, default, int, "a whole number")

    def flag(self, table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        return self.typed(table, key, where, default, bool, "true or false")

    def seconds(
        self, table: Mapping[str, Any], key: str, where: str, default: float, *, zero_ok: bool
    ) -> float:
        value = table.get(key, default)
        at = _at(where, key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.problem(at, f"expected a number of seconds, got {value!r}")
            return default
        if value < 0 or (value == 0 and not zero_ok):
            wanted = "0 or more" if zero_ok else "more than 0"
            self.problem(
                at, f"{value!r} seconds is {'negative' if value < 0 else 'zero'}; give {wanted}"
            )
            return default
        return float(value)

    def string_list(self, table: Mapping[str, Any], key: str, where: str) -> list[tuple[str, str]]:
        """The strings of a list, each with its location; other items are reported."""
        value = table.get(key, [])
        at = _at(where, key)
        if not isinstance(value, list):
            self.problem(at, f"expected a list of strings, got {value!r}")
            return []
        strings: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            if isinstance(item, str):
                strings.append((item, f"{at}[{index}]"))
            else:
                self.problem(f"{at}[{index}]", f"expected a string, got {item!r}")
        return strings

    def level(self, value: Any, where: str, what: str) -> int:
        if _is_whole(value) and MIN_PROFICIENCY <= value <= MAX_PROFICIENCY:
            return int(value)
        self.problem(
            where,
            f"{what} must be a whole number {MIN_PROFICIENCY}-{MAX_PROFICIENCY}, got {value!r}",
        )
        return MIN_PROFICIENCY

    def known_skill(self, name: str, where: str) -> bool:
        if name in self.skill_names:
            return True
        hint = did_you_mean(name, self.skill_names)
        self.problem(where, f"unknown skill {name!r}{hint}; declare it under [skills]")
        return False

    def known_queue(self, name: str, where: str) -> bool:
        if name in self.queue_names:
            return True
        self.problem(where, f"unknown queue {name!r}{did_you_mean(name, self.queue_names)}")
        return False

    # -- sections ----------------------------------------------------------------

    def grades(self, value: Any) -> dict[str, int]:
        grades: dict[str, int] = {}
        for grade, priority in self.table(value, "grades").items():
            if not grade.strip():
                self.problem("grades", "a grade name is empty")
            elif _is_whole(priority):
                grades[grade] = int(priority)
            else:
                self.problem(
                    _at("grades", grade), f"priority must be a whole number, got {priority!r}"
                )
        return grades

    def skills(self, value: Any) -> dict[str, str]:
        skills: dict[str, str] = {}
        folded: dict[str, str] = {}
        for name, description in self.table(value, "skills").items():
            where = _at("skills", name)
            if not _NAME.fullmatch(name):
                self.problem(where, f"skill name {name!r} {_NAME_RULE}")
                continue
            if name.casefold() in folded:
                self.problem(
                    where,
                    f"duplicate skill: {name!r} and {folded[name.casefold()]!r} "
                    "differ only in case",
                )
                continue
            folded[name.casefold()] = name
            if not isinstance(description, str):
                self.problem(where, f"expected a description string, got {description!r}")
                description = ""
            skills[name] = description
        self.skill_names = set(skills)
        return skills

    def names(
        self,
        tables: list[tuple[int, Mapping[str, Any]]],
        array: str,
        key: str,
        pattern: re.Pattern[str],
        what: str,
    ) -> dict[int, str]:
        """The valid, unique `key` of each table by index; reports missing, bad and duplicates."""
        names: dict[int, str] = {}
        first_by_folded: dict[str, str] = {}
        for index, table in tables:
            label = _label(array, index, table.get(key))
            name = table.get(key)
            if name is None:
                self.problem(label, f"missing {key}")
            elif not isinstance(name, str):
                hint = f' (write it in quotes: {key} = "{name}")' if _is_whole(name) else ""
                self.problem(_at(label, key), f"expected a string, got {name!r}{hint}")
            elif not pattern.fullmatch(name):
                rule = _NAME_RULE if pattern is _NAME else "must be non-empty, without spaces"
                self.problem(_at(label, key), f"{what} {name!r} {rule}")
            elif name.casefold() in first_by_folded:
                self.problem(
                    _at(label, key), f"duplicate {what}: {first_by_folded[name.casefold()]}"
                )
            else:
                first_by_folded[name.casefold()] = f"{label} has it already"
                names[index] = name
        return names

    def queue(self, table: Mapping[str, Any], where: str, name: str) -> QueueConfig:
        self.check_keys(table, _QUEUE_KEYS, where)
        defaults = _QUEUE_DEFAULTS
        music = self.text(table, "music", where, defaults.music_class)
        if not music.strip():
            self.problem(_at(where, "music"), "the music-on-hold class must not be empty")
        # Read in the order the keys are documented, so problems come out in that order.
        return QueueConfig(
            name=name,
            title=self.text(table, "title", where, defaults.title),
            base_priority=self.whole(table, "base_priority", where, defaults.base_priority),
            policy=self.policy(table, where),
            ring_timeout_s=self.seconds(
                table, "ring_timeout", where, defaults.ring_timeout_s, zero_ok=False
            ),
            wrap_up_s=self.seconds(table, "wrap_up", where, defaults.wrap_up_s, zero_ok=True),
            preferred_agent_s=self.seconds(
                table, "preferred_agent", where, defaults.preferred_agent_s, zero_ok=True
            ),
            hours=self.hours(table["hours"], _at(where, "hours")) if "hours" in table else None,
            when_closed=self.entry_action(table, "when_closed", where, name)
            or defaults.when_closed,
            when_unstaffed=self.entry_action(table, "when_unstaffed", where, name),
            record=self.flag(table, "record", where, defaults.record),
            music_class=music,
            announce_every_s=self.seconds(
                table, "announce_every", where, defaults.announce_every_s, zero_ok=True
            ),
            steps=self.steps(table, where, name),
        )

    def policy(self, table: Mapping[str, Any], where: str) -> AgentPolicy:
        value = table.get("policy", _QUEUE_DEFAULTS.policy.value)
        choices = [policy.value for policy in AgentPolicy]
        if isinstance(value, str) and value in choices:
            return AgentPolicy(value)
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        self.problem(
            _at(where, "policy"), f"unknown policy {value!r}{hint}; one of: {', '.join(choices)}"
        )
        return _QUEUE_DEFAULTS.policy

    def entry_action(
        self, table: Mapping[str, Any], key: str, where: str, queue: str
    ) -> StepAction | None:
        """when_closed / when_unstaffed: what happens to a call that cannot queue."""
        if key not in table:
            return None
        at = _at(where, key)
        action = self.action(table[key], at, queue)
        if action is not None and not isinstance(action, _ENTRY_ACTIONS):
            self.problem(
                at,
                f"{table[key]!r} cannot apply to a call that never queued; "
                "use close, voicemail, callback or overflow QUEUE",
            )
            return None
        return action

    def steps(self, table: Mapping[str, Any], where: str, queue: str) -> tuple[Step, ...]:
        if "steps" not in table:
            return (_OPEN_STEP,)
        at = _at(where, "steps")
        tables = self.array_of_tables(table["steps"], at)
        if not tables and isinstance(table["steps"], list) and not table["steps"]:
            self.problem(at, "no steps; give at least one, or leave steps out (any agent answers)")
        last_index = len(table["steps"]) - 1 if isinstance(table["steps"], list) else -1
        steps: list[Step] = []
        in_force: set[str] = set()  # the skills required while the step lasts
        left_queue_at: str | None = None
        for index, raw in tables:
            step_where = f"{at}[{index}]"
            if left_queue_at is not None:
                self.problem(
                    step_where, f"never reached: the call leaves the queue at {left_queue_at}"
                )
                left_queue_at = None  # once is enough
            self.check_keys(raw, _STEP_KEYS, step_where)
            duration: float | None = None
            if "duration" in raw:
                duration = self.seconds(raw, "duration", step_where, 1.0, zero_ok=False)
            elif index != last_index:
                self.problem(
                    _at(step_where, "duration"),
                    "missing; only the last step may have no duration "
                    "(it lasts until the call ends)",
                )
            requirements = self.requirements(raw, step_where) if "require" in raw else None
            if requirements is not None:
                in_force = {requirement.skill for requirement in requirements}
            actions, leaves_at = self.step_actions(raw, step_where, queue, in_force, where)
            if actions and duration is None and index == last_index:
                self.problem(
                    _at(step_where, "then"),
                    "never runs: the step has no duration, so it lasts until the call ends",
                )
            left_queue_at = leaves_at or left_queue_at
            steps.append(
                Step(
                    duration_s=duration,
                    requirements=requirements,
                    conditions=self.conditions(raw, step_where),
                    on_expiry=actions,
                )
            )
        return tuple(steps) or (_OPEN_STEP,)

    def requirements(self, raw: Mapping[str, Any], where: str) -> tuple[SkillRequirement, ...]:
        at = _at(where, "require")
        requirements = []
        for skill, level in self.table(raw["require"], at).items():
            self.known_skill(skill, _at(at, skill))
            requirements.append(
                SkillRequirement(skill, self.level(level, _at(at, skill), "minimum level"))
            )
        # Sorted: a table's key order is not kept by every store (jsonb sorts keys).
        return tuple(sorted(requirements, key=lambda requirement: requirement.skill))

    def step_actions(
        self, raw: Mapping[str, Any], where: str, queue: str, in_force: set[str], queue_where: str
    ) -> tuple[tuple[StepAction, ...], str | None]:
        """The step's `then` actions, and where (within the queue) the call leaves it if it does.

        `in_force` (the skills required during the step) is updated as the
        actions change it, for the steps that follow.
        """
        actions: list[StepAction] = []
        leaves_at: str | None = None
        for text, at in self.string_list(raw, "then", where):
            if leaves_at is not None:
                self.problem(at, f"{text!r} never runs: the call left the queue at {leaves_at}")
                continue
            action = self.action(text, at, queue)
            if action is None:
                continue
            if isinstance(action, RelaxLevel | RemoveSkill):
                if action.skill not in in_force:
                    self.problem(
                        at,
                        f"{text!r}: {action.skill!r} is not required at this step; "
                        "require it in this step or an earlier one",
                    )
                elif isinstance(action, RemoveSkill):
                    in_force.discard(action.skill)
            elif isinstance(action, AddSkill):
                in_force.add(action.skill)
            elif isinstance(action, ENDING_ACTIONS):
                leaves_at = f"{at.removeprefix(queue_where).lstrip()} ({text!r})"
            actions.append(action)
        return tuple(actions), leaves_at

    def action(self, text: Any, where: str, queue: str) -> StepAction | None:
        """One action string: "relax billing 2", "overflow sales", "voicemail"...

        "overflow:sales" reads like "overflow sales".
        """
        if not isinstance(text, str):
            self.problem(where, f"expected an action such as 'overflow sales', got {text!r}")
            return None
        words = text.replace(":", " ").split()
        verb, args = (words[0].lower(), words[1:]) if words else ("", [])
        action: StepAction | None = None
        match verb, args:
            case "relax", [skill]:
                action = RelaxLevel(skill)
            case "relax", [skill, by] if _WHOLE_NUMBER.fullmatch(by):
                if not 1 <= int(by) <= MAX_PROFICIENCY - 1:
                    self.problem(where, f"{text!r}: relax by 1-{MAX_PROFICIENCY - 1}, got {by}")
                    return None
                action = RelaxLevel(skill, int(by))
            case "add", ["skill", skill]:
                action = AddSkill(skill)
            case "add", ["skill", skill, level] if _WHOLE_NUMBER.fullmatch(level):
                action = AddSkill(skill, self.level(int(level), where, f"{text!r}: level"))
            case "remove", ["skill", skill]:
                action = RemoveSkill(skill)
            case "raise", ["priority"]:
                action = RaisePriority()
            case "raise", ["priority", by] if _WHOLE_NUMBER.fullmatch(by):
                if int(by) < 1:
                    self.problem(where, f"{text!r}: raise priority by 1 or more, got {by}")
                    return None
                action = RaisePriority(int(by))
            case "overflow", [target]:
                if target == queue:
                    self.problem(where, f"{text!r}: a queue cannot overflow to itself")
                    return None
                if not self.known_queue(target, where):
                    return None
                action = Overflow(target)
            case "callback", []:
                action = OfferCallback()
            case "voicemail", []:
                action = ToVoicemail()
            case "close", []:
                action = CloseCall()
        if action is None:
            if verb in _ACTION_FORMS:
                message = f"{text!r} does not read as '{_ACTION_FORMS[verb]}'"
            else:
                forms = ", ".join(_ACTION_FORMS.values())
                message = (
                    f"unknown action {text!r}{did_you_mean(verb, _ACTION_FORMS)}; one of: {forms}"
                )
            self.problem(where, message)
            return None
        if isinstance(action, RelaxLevel | AddSkill | RemoveSkill) and not self.known_skill(
            action.skill, where
        ):
            return None
        return action

    def conditions(self, raw: Mapping[str, Any], where: str) -> tuple[AttributeCondition, ...]:
        conditions = []
        for text, at in self.string_list(raw, "where", where):
            condition = self.condition(text, at)
            if condition is not None:
                conditions.append(condition)
        return tuple(conditions)

    def condition(self, text: str, where: str) -> AttributeCondition | None:
        """'language = zh', 'language != en', 'team in (a, b)'."""
        usage = "write ATTRIBUTE = VALUE, ATTRIBUTE != VALUE or ATTRIBUTE in (V1, V2)"
        match = _CONDITION.fullmatch(text.strip())
        if match is None:
            self.problem(where, f"{text!r} is not a condition; {usage}")
            return None
        attribute, rest = match.groups()
        if not rest:
            self.problem(where, f"{text!r}: no operator; {usage}")
            return None
        operator = next((op for op in ("!=", "=") if rest.startswith(op)), None)
        if operator is None and re.match(r"in\b", rest):
            operator = "in"
        if operator is None or rest.startswith("=="):
            self.problem(where, f"{text!r}: unknown operator {rest.split()[0]!r}; {usage}")
            return None
        value = rest[len(operator) :].strip()
        if operator != "in":
            if not value:
                self.problem(where, f"{text!r}: no value after {operator!r}; {usage}")
                return None
            return AttributeCondition(attribute, operator, value)
        # The parentheses are optional: "team in a, b" reads the same.
        if value.startswith("(") and value.endswith(")"):
            value = value[1:-1]
        values = tuple(item.strip() for item in value.split(","))
        if not value.strip() or any(not item for item in values):
            self.problem(where, f"{text!r}: empty value in the list; {usage}")
            return None
        return AttributeCondition(attribute, "in", values)

    def hours(self, value: Any, where: str) -> BusinessHours | None:
        table = self.table(value, where)
        timezone = table.get("timezone")
        if timezone is None:
            self.problem(where, 'missing timezone (e.g. timezone = "Asia/Shanghai")')
            timezone = "UTC"
        elif not isinstance(timezone, str) or not zone_exists(timezone):
            hint = (
                did_you_mean(timezone, zoneinfo.available_timezones())
                if isinstance(timezone, str)
                else ""
            )
            self.problem(_at(where, "timezone"), f"unknown time zone {timezone!r}{hint}")
            timezone = "UTC"
        slots: list[tuple[OpeningHours, str]] = []  # with the key that gave each
        day_keys = [key for key in table if key not in _HOURS_KEYS]
        for key in day_keys:
            weekdays = self.weekdays(key, where)
            for opens, closes in self.slots(table[key], _at(where, key)):
                slots.extend((OpeningHours(day, opens, closes), key) for day in weekdays)
        if not slots and not self.problems_at(where):
            self.problem(
                where,
                "no opening slots: the queue would never open; add e.g. "
                'mon-fri = "09:00-18:00", or leave hours out (always open)',
            )
        self.check_overlaps(slots, where)
        return BusinessHours(
            timezone=timezone,
            slots=tuple(sorted((slot for slot, _ in slots), key=_slot_order)),
            closed_dates=self.closed_dates(table, where),
        )

    def problems_at(self, where: str) -> bool:
        prefix = f"{self.source}: {where}"
        return any(problem.startswith(prefix) for problem in self.problems)

    def weekdays(self, key: str, where: str) -> list[int]:
        """'mon' or 'mon-fri' -> weekday numbers (0 = Monday)."""
        first, _, last = key.partition("-")
        if first in WEEKDAYS and (not last or last in WEEKDAYS):
            start, end = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
            if start <= end:
                return list(range(start, end + 1))
            self.problem(_at(where, key), f"day range {key!r} runs backwards; write e.g. mon-fri")
            return []
        known = [*_HOURS_KEYS, *WEEKDAYS, "mon-fri"]
        # A looser match, so that "monday" suggests "mon".
        hint = (
            did_you_mean(key, known, cutoff=0.6)
            or "; expected timezone, closed, a day (mon) or days (mon-fri)"
        )
        self.problem(_at(where, key), f"unknown key {key!r}{hint}")
        return []

    def slots(self, value: Any, where: str) -> list[tuple[time, time]]:
        """'09:00-12:00,13:00-18:00' (or a list of such strings) -> (opens, closes) pairs."""
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            texts = [part for item in value for part in item.split(",")]
        elif isinstance(value, str):
            texts = value.split(",")
        else:
            self.problem(where, f'expected opening slots like "09:00-18:00", got {value!r}')
            return []
        slots = []
        for text in (part.strip() for part in texts):
            match = _SLOT.fullmatch(text)
            if match is None:
                self.problem(where, f'{text!r} is not an opening slot like "09:00-18:00"')
                continue
            opens = self.clock(int(match[1]), int(match[2]), text, where, closing=False)
            closes = self.clock(int(match[3]), int(match[4]), text, where, closing=True)
            if opens is None or closes is None:
                continue
            if closes <= opens:
                self.problem(
                    where,
                    f"{text!r} closes before it opens; split hours that run past midnight: "
                    f"{text.split('-')[0].strip()}-24:00, then 00:00-{text.split('-')[1].strip()} "
                    "on the next day",
                )
                continue
            slots.append((opens, closes))
        return slots

    def clock(self, hour: int, minute: int, slot: str, where: str, *, closing: bool) -> time | None:
        if closing and (hour, minute) == (24, 0):
            return time.max  # the end of the day: slots are [opens, closes)
        if 0 <= hour <= 23 and 0 <= minute <= 59:
            return time(hour, minute)
        self.problem(
            where,
            f"{slot!r}: {hour:02d}:{minute:02d} is not a time of day (00:00-23:59, "
            "or 24:00 to close at midnight)",
        )
        return None

    def check_overlaps(self, slots: list[tuple[OpeningHours, str]], where: str) -> None:
        ordered = sorted(slots, key=lambda item: _slot_order(item[0]))
        for (before, before_key), (after, after_key) in itertools.pairwise(ordered):
            if before.weekday == after.weekday and after.opens < before.closes:
                self.problem(
                    _at(where, after_key),
                    f"{WEEKDAYS[after.weekday]} {_slot_text(after)} overlaps "
                    f"{_slot_text(before)} (from {before_key})",
                )

    def closed_dates(self, table: Mapping[str, Any], where: str) -> frozenset[str]:
        value = table.get("closed", [])
        at = _at(where, "closed")
        if not isinstance(value, list):
            self.problem(at, f'expected a list of dates like ["2026-10-01"], got {value!r}')
            return frozenset()
        dates = set()
        for index, item in enumerate(value):
            # TOML has dates of its own: closed = [2026-10-01] works as well as strings.
            if isinstance(item, date) and not isinstance(item, datetime):
                dates.add(item.isoformat())
                continue
            if isinstance(item, str) and _ISO_DATE.fullmatch(item):
                try:
                    dates.add(date.fromisoformat(item).isoformat())
                    continue
                except ValueError:
                    pass
            self.problem(f"{at}[{index}]", f"{item!r} is not a date; use YYYY-MM-DD")
        return frozenset(dates)

    def agent(self, table: Mapping[str, Any], where: str, agent_id: str) -> AgentConfig:
        self.check_keys(table, _AGENT_KEYS, where)
        endpoint = self.text(table, "endpoint", where, "")
        if "endpoint" not in table:
            self.problem(where, 'missing endpoint: the agent\'s phone, e.g. "PJSIP/agent1001"')
        elif isinstance(table["endpoint"], str) and not _ENDPOINT.fullmatch(endpoint):
            self.problem(
                _at(where, "endpoint"),
                f"{endpoint!r} is not an Asterisk dial string like PJSIP/agent1001",
            )
        skills: dict[str, int] = {}
        at = _at(where, "skills")
        for skill, level in self.table(table.get("skills", {}), at).items():
            if self.known_skill(skill, _at(at, skill)):
                skills[skill] = self.level(level, _at(at, skill), "proficiency")
        return AgentConfig(
            agent_id=agent_id,
            name=self.text(table, "name", where, ""),
            endpoint=endpoint,
            skills=skills,
            attributes=self.attributes(table, where),
            queues=self.agent_queues(table, where),
        )

    def attributes(self, table: Mapping[str, Any], where: str) -> dict[str, str]:
        at = _at(where, "attributes")
        attributes: dict[str, str] = {}
        for name, value in self.table(table.get("attributes", {}), at).items():
            if not _NAME.fullmatch(name):
                self.problem(_at(at, name), f"attribute name {name!r} {_NAME_RULE}")
            elif not isinstance(value, str):
                self.problem(_at(at, name), f"expected a string, got {value!r}")
            else:
                attributes[name] = value
        return attributes

    def agent_queues(self, table: Mapping[str, Any], where: str) -> tuple[str, ...]:
        queues: list[str] = []
        for name, at in self.string_list(table, "queues", where):
            if name in queues:
                self.problem(at, f"queue {name!r} is listed twice")
            elif self.known_queue(name, at):
                queues.append(name)
        return tuple(queues)

    def check_endpoints_unique(
        self, agents: list[AgentConfig], tables: list[tuple[int, Mapping[str, Any]]]
    ) -> None:
        """Two agents on one phone would both be offered calls that ring the same set."""
        first: dict[str, str] = {}
        for agent, (index, table) in zip(agents, tables, strict=True):
            if not agent.endpoint:
                continue
            label = _label("agents", index, table.get("id"))
            if agent.endpoint in first:
                self.problem(
                    _at(label, "endpoint"),
                    f"{agent.endpoint!r} is also the phone of {first[agent.endpoint]}",
                )
            else:
                first[agent.endpoint] = label


def _slot_order(slot: OpeningHours) -> tuple[int, time, time]:
    return (slot.weekday, slot.opens, slot.closes)


def _clock_text(moment: time) -> str:
    return "24:00" if moment == time.max else f"{moment:%H:%M}"


def _slot_text(slot: OpeningHours) -> str:
    return f"{_clock_text(slot.opens)}-{_clock_text(slot.closes)}"


# -- writing -----------------------------------------------------------------------


def acd_config_to_data(config: AcdConfig) -> dict[str, Any]:
    """The configuration in the file's shape (plain dicts, lists, strings and numbers).

    Settings equal to QueueConfig's defaults are left out, so they follow the
    defaults; `parse_acd_config` of the result gives back an equal configuration.
    """
    return {
        "grades": dict(config.grade_priority),
        "skills": dict(config.skills),
        "queues": [queue_to_data(queue) for queue in config.queues],
        "agents": [agent_to_data(agent) for agent in config.agents],
    }


def queue_to_data(queue: QueueConfig) -> dict[str, Any]:
    defaults = _QUEUE_DEFAULTS
    data: dict[str, Any] = {"name": queue.name}
    optional: list[tuple[str, Any, Any]] = [
        ("title", queue.title, defaults.title),
        ("policy", queue.policy.value, defaults.policy.value),
        ("base_priority", queue.base_priority, defaults.base_priority),
        ("ring_timeout", _number(queue.ring_timeout_s), defaults.ring_timeout_s),
        ("wrap_up", _number(queue.wrap_up_s), defaults.wrap_up_s),
        ("preferred_agent", _number(queue.preferred_agent_s), defaults.preferred_agent_s),
        ("record", queue.record, defaults.record),
        ("music", queue.music_class, defaults.music_class),
        ("announce_every", _number(queue.announce_every_s), defaults.announce_every_s),
        ("when_closed", action_text(queue.when_closed), action_text(defaults.when_closed)),
    ]
    data.update((key, value) for key, value, default in optional if value != default)
    if queue.when_unstaffed is not None:
        data["when_unstaffed"] = action_text(queue.when_unstaffed)
    if queue.hours is not None:
        data["hours"] = _hours_to_data(queue.hours)
    data["steps"] = [_step_to_data(step) for step in queue.steps]
    return data


def agent_to_data(agent: AgentConfig) -> dict[str, Any]:
    data: dict[str, Any] = {"id": agent.agent_id, "name": agent.name, "endpoint": agent.endpoint}
    if agent.skills:
        data["skills"] = dict(agent.skills)
    if agent.attributes:
        data["attributes"] = dict(agent.attributes)
    if agent.queues:
        data["queues"] = list(agent.queues)
    return data


def action_text(action: StepAction) -> str:
    """The action as the file writes it: "relax billing 2", "overflow sales"..."""
    match action:
        case RelaxLevel(skill, by):
            return f"relax {skill} {by}"
        case AddSkill(skill, level):
            return f"add skill {skill} {level}"
        case RemoveSkill(skill):
            return f"remove skill {skill}"
        case RaisePriority(by):
            return f"raise priority {by}"
        case Overflow(queue):
            return f"overflow {queue}"
        case OfferCallback():
            return "callback"
        case ToVoicemail():
            return "voicemail"
        case CloseCall():
            return "close"
    raise TypeError(f"not a step action: {action!r}")


def condition_text(condition: AttributeCondition) -> str:
    value = condition.value
    if condition.operator == "in":
        items = (value,) if isinstance(value, str) else value
        return f"{condition.attribute} in ({', '.join(items)})"
    return f"{condition.attribute} {condition.operator} {value}"


def _step_to_data(step: Step) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if step.duration_s is not None:
        data["duration"] = _number(step.duration_s)
    if step.requirements is not None:
        data["require"] = {req.skill: req.min_level for req in step.requirements}
    if step.conditions:
        data["where"] = [condition_text(condition) for condition in step.conditions]
    if step.on_expiry:
        data["then"] = [action_text(action) for action in step.on_expiry]
    return data


def _hours_to_data(hours: BusinessHours) -> dict[str, Any]:
    by_day: dict[int, list[str]] = {}
    for slot in sorted(hours.slots, key=_slot_order):
        by_day.setdefault(slot.weekday, []).append(_slot_text(slot))
    data: dict[str, Any] = {"timezone": hours.timezone}
    # Runs of days with the same slots share a key: mon-fri = "09:00-18:00".
    day = 0
    while day < len(WEEKDAYS):
        if day not in by_day:
            day += 1
            continue
        last = day
        while last + 1 in by_day and by_day[last + 1] == by_day[day]:
            last += 1
        key = WEEKDAYS[day] if last == day else f"{WEEKDAYS[day]}-{WEEKDAYS[last]}"
        data[key] = ",".join(by_day[day])
        day = last + 1
    if hours.closed_dates:
        data["closed"] = sorted(hours.closed_dates)
    return data


def _number(seconds: float) -> int | float:
    """20.0 -> 20: whole seconds read better in a file."""
    return int(seconds) if float(seconds).is_integer() else seconds


def dump_acd_toml(config: AcdConfig, header: str = "") -> str:
    """The configuration as a TOML file that `load_acd_config` reads back equal.

    `header` lines are written first as comments.
    """
    data = acd_config_to_data(config)
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for section in ("grades", "skills"):
        if data[section]:
            lines += ["", f"[{section}]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data[section].items()]
    for queue in data["queues"]:
        lines += ["", "[[queues]]"]
        lines += [
            f"{_toml_key(k)} = {_toml_value(v)}"
            for k, v in queue.items()
            if k not in ("hours", "steps")
        ]
        if "hours" in queue:
            lines.append("[queues.hours]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in queue["hours"].items()]
        for step in queue["steps"]:
            lines.append("[[queues.steps]]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in step.items()]
    for agent in data["agents"]:
        lines += ["", "[[agents]]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in agent.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string: the same escapes (\" \\ \n \uXXXX).
    return json.dumps(text, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"cannot write {value!r} as TOML")
