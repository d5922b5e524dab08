"""Read IVR flow files (YAML, see flow.py) and check them.

Every problem is reported at once, each naming the file, the line and the node:

    flows/bank.yaml:23: node "main_menu": options.2: no node "acount" (did you mean 'account'?)

Besides the shape of each node (known type, known fields, value types, the
required prompt), the graph is checked: `start` and every target exist, every
node is reachable from `start`, and from every node some end (queue, callback,
voicemail, survey, transfer, hangup) can be reached. Pure: no I/O but reading
the file in `load_flow`.
"""

from __future__ import annotations

import re
import zoneinfo
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from ctiserver.acd.config import WEEKDAYS
from ctiserver.acd.model import MAX_PROFICIENCY, MIN_PROFICIENCY
from ctiserver.ivr.expressions import ExpressionError, parse_priority
from ctiserver.ivr.flow import (
    NODE_TYPES,
    TERMINAL_TYPES,
    BranchCase,
    BranchNode,
    CallbackNode,
    CollectNode,
    Condition,
    Flow,
    HangupNode,
    LanguageNode,
    LookupKey,
    LookupNode,
    MenuNode,
    Node,
    PlayItem,
    PlayNode,
    QueueNode,
    SayKind,
    SayVariable,
    SetNode,
    SurveyNode,
    TimeWindow,
    TransferNode,
    Validation,
    ValidationKind,
    VoicemailNode,
)
from ctiserver.problems import did_you_mean, read_text_file, zone_exists
from ctiserver.yaml_lines import YamlSyntaxError, line_of, load_yaml


class FlowError(ValueError):
    """Every problem found in a flow file (`.problems`), one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid IVR flow:\n  " + "\n  ".join(problems))
        self.problems = problems


_FLOW_KEYS = ("name", "start", "numbers", "language", "timezone", "nodes")
_COMMON_KEYS = ("type", "label")
_NODE_KEYS: Mapping[str, tuple[str, ...]] = {
    "play": ("play", "next"),
    "menu": ("prompt", "options", "timeout", "retries", "invalid_prompt", "default"),
    "collect": (
        "prompt",
        "variable",
        "min_digits",
        "max_digits",
        "terminator",
        "validate",
        "retries",
        "invalid_prompt",
        "next",
        "on_invalid",
    ),
    "lookup": ("by", "variable", "next", "not_found"),
    "branch": ("when", "else"),
    "set": ("variable", "value", "next"),
    "language": ("language", "next"),
    "queue": ("queue", "priority", "skills", "attributes", "preferred_agent", "survey"),
    "callback": ("queue", "number"),
    "voicemail": ("queue", "mailbox", "prompt"),
    "survey": ("prompt", "variable", "scale"),
    "transfer": ("destination",),
    "hangup": ("prompt",),
}
_CONDITION_KEYS = ("variables", "tier", "time", "weekday", "holiday", "next")
_MENU_KEY = re.compile(r"[0-9*#]")
_VARIABLE = re.compile(r"[A-Za-z_]\w*")
_WINDOW = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_TERMINATORS = ("#", "*", "")


# -- entry points ------------------------------------------------------------------------


def load_flow(path: Path) -> Flow:
    """Read and check a flow file; FlowError lists every problem."""
    source = str(path)
    text, problem = read_text_file(path)
    if text is None:
        raise FlowError([problem or source])
    return parse_flow(text, source)


def parse_flow(text: str, source: str) -> Flow:
    """Parse and check the YAML `text` of a flow; `source` starts every problem."""
    try:
        data = load_yaml(text, source)
    except YamlSyntaxError as exc:
        raise FlowError([str(exc)]) from None
    reader = _FlowReader(source)
    flow = reader.flow(data)
    if reader.problems or flow is None:
        raise FlowError(reader.problems)
    return flow


# -- reading -----------------------------------------------------------------------------


def _describe(value: object) -> str:
    return "nothing" if value is None else repr(value)


class _FlowReader:
    """Reads one flow, collecting problems instead of stopping at the first."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.broken: set[str] = set()  # nodes with problems: spared the graph checks

    def problem(self, line: int, node_id: str | None, message: str) -> None:
        at = f"{self.source}:{line}:" if line else f"{self.source}:"
        node = f' node "{node_id}":' if node_id is not None else ""
        self.problems.append(f"{at}{node} {message}")
        if node_id is not None:
            self.broken.add(node_id)

    def flow(self, data: object) -> Flow | None:
        if not isinstance(data, Mapping):
            self.problem(line_of(data), None, f"expected a mapping with {', '.join(_FLOW_KEYS)}")
            return None
        self.check_keys(data, _FLOW_KEYS, None)
        fields = _Fields(self, data, None, line_of(data))
        name = fields.text("name", required=True)
        start = fields.text("start", required=True)
        language = fields.text("language")
        timezone = fields.text("timezone")
        numbers = fields.strings("numbers", data["numbers"]) if "numbers" in data else ()
        if timezone and not zone_exists(timezone):
            hint = did_you_mean(timezone, zoneinfo.available_timezones())
            self.problem(line_of(data, "timezone"), None, f"unknown time zone {timezone!r}{hint}")
        nodes_data = data.get("nodes")
        if not isinstance(nodes_data, Mapping) or not nodes_data:
            self.problem(
                line_of(data, "nodes"),
                None,
                f"nodes: expected a mapping of node id -> node, got {_describe(nodes_data)}",
            )
            return None
        nodes: dict[str, Node] = {}
        for node_id, node_data in nodes_data.items():
            node = self.node(str(node_id), node_data, line_of(nodes_data, node_id))
            if node is not None:
                nodes[node.id] = node
        self.check_graph(data, start, [str(node_id) for node_id in nodes_data], nodes)
        return Flow(
            name=name,
            start=start,
            nodes=nodes,
            source=self.source,
            language=language,
            timezone=timezone,
            numbers=numbers,
        )

    def check_keys(
        self, mapping: Mapping[Any, Any], known: Iterable[str], node: str | None
    ) -> None:
        known = tuple(known)
        for key in mapping:
            if key in known:
                continue
            hint = did_you_mean(str(key), known) or f"; expected one of: {', '.join(known)}"
            self.problem(line_of(mapping, key), node, f"unknown field {key!r}{hint}")

    def node(self, node_id: str, data: object, line: int) -> Node | None:
        if not isinstance(data, Mapping):
            self.problem(line, node_id, f"expected a mapping with a type, got {_describe(data)}")
            return None
        kind = data.get("type")
        if not isinstance(kind, str) or kind not in NODE_TYPES:
            known = NODE_TYPES.keys()
            if kind is None:
                self.problem(line, node_id, f"missing type; expected one of: {', '.join(known)}")
            else:
                hint = did_you_mean(str(kind), known) or f"; expected one of: {', '.join(known)}"
                self.problem(line_of(data, "type"), node_id, f"unknown node type {kind!r}{hint}")
            return None
        self.check_keys(data, (*_COMMON_KEYS, *_NODE_KEYS[kind]), node_id)
        fields = _Fields(self, data, node_id, line)
        common: dict[str, Any] = {"id": node_id, "line": line, "label": fields.text("label")}
        return _NODE_READERS[kind](fields, common)

    def check_graph(
        self, data: Mapping[Any, Any], start: str, node_ids: list[str], nodes: Mapping[str, Node]
    ) -> None:
        known = set(node_ids)
        dangling: set[str] = set()
        for node in nodes.values():
            for where, target in node.targets():
                if target not in known:
                    hint = did_you_mean(target, known)
                    self.problem(node.line, node.id, f"{where}: no node {target!r}{hint}")
                    dangling.add(node.id)
                elif where == "survey" and not isinstance(nodes.get(target), SurveyNode):
                    self.problem(node.line, node.id, f"survey: {target!r} is not a survey node")
        if start and start not in known:
            self.problem(
                line_of(data, "start"),
                None,
                f"start: no node {start!r}{did_you_mean(start, known)}",
            )
            return
        if not start:
            return
        reachable = _reachable([start], lambda node_id: _successors(nodes, node_id))
        for node_id in node_ids:
            if node_id not in reachable and node_id in nodes:
                self.problem(
                    nodes[node_id].line, node_id, f"unreachable: no path from start {start!r}"
                )
        # Nodes with problems of their own count as exits, so one mistake is reported once.
        exits = [
            node_id
            for node_id, node in nodes.items()
            if type(node) in TERMINAL_TYPES or node_id in dangling or node_id in self.broken
        ] + [node_id for node_id in node_ids if node_id not in nodes]
        predecessors: dict[str, list[str]] = {}
        for node_id, node in nodes.items():
            # Targets that failed to parse count too: they are exits above.
            for _, successor in node.targets():
                if successor in known:
                    predecessors.setdefault(successor, []).append(node_id)
        can_end = _reachable(exits, lambda node_id: predecessors.get(node_id, []))
        stuck = [node_id for node_id in nodes if node_id in reachable and node_id not in can_end]
        for group in _groups(stuck, nodes):
            first = nodes[group[0]]
            names = ", ".join(f'"{node_id}"' for node_id in group)
            self.problem(
                first.line,
                first.id,
                f"loop without exit: {names} never reach a hangup, transfer, queue, callback, "
                "voicemail or survey",
            )


def _successors(nodes: Mapping[str, Node], node_id: str) -> list[str]:
    node = nodes.get(node_id)
    return [] if node is None else [target for _, target in node.targets() if target in nodes]


def _reachable(seeds: Iterable[str], neighbours: Callable[[str], Iterable[str]]) -> set[str]:
    seen = set(seeds)
    waiting = deque(seen)
    while waiting:
        for neighbour in neighbours(waiting.popleft()):
            if neighbour not in seen:
                seen.add(neighbour)
                waiting.append(neighbour)
    return seen


def _groups(stuck: list[str], nodes: Mapping[str, Node]) -> list[list[str]]:
    """The stuck nodes split into groups linked to each other, each in file order."""
    stuck_set = set(stuck)
    linked: dict[str, set[str]] = {node_id: set() for node_id in stuck}
    for node_id in stuck:
        for successor in _successors(nodes, node_id):
            if successor in stuck_set:
                linked[node_id].add(successor)
                linked[successor].add(node_id)
    groups: list[list[str]] = []
    placed: set[str] = set()
    for node_id in stuck:
        if node_id in placed:
            continue
        group = _reachable([node_id], lambda other: linked[other])
        placed |= group
        groups.append([other for other in stuck if other in group])
    return groups


class _Fields:
    """Typed access to the fields of one mapping, reporting problems to the reader."""

    def __init__(
        self, reader: _FlowReader, data: Mapping[Any, Any], node_id: str | None, line: int
    ) -> None:
        self.reader = reader
        self.data = data
        self.node_id = node_id
        self.line = line  # where problems of the whole mapping (a missing field) are reported

    def problem(self, key: str, message: str) -> None:
        self.reader.problem(line_of(self.data, key), self.node_id, f"{key}: {message}")

    def present(self, key: str, required: bool, what: str) -> bool:
        if key in self.data and self.data[key] is not None:
            return True
        if required:
            self.reader.problem(self.line, self.node_id, f"missing {key} ({what})")
        return False

    def text(self, key: str, *, required: bool = False, what: str = "a string") -> str:
        if not self.present(key, required, what):
            return ""
        value = self.data[key]
        # Numbers and dates in YAML are text to a flow: value: 8000, mailbox: 8000.
        if isinstance(value, str | int | float | date) and not isinstance(value, bool):
            text = str(value).strip()
            if text:
                return text
        self.problem(key, f"expected {what}, got {_describe(value)}")
        return ""

    def prompt(self, key: str = "prompt", *, required: bool = True) -> str:
        return self.text(key, required=required, what="a sound file name")

    def target(self, key: str, *, required: bool = True) -> str:
        return self.text(key, required=required, what="a node id")

    def variable(self, key: str = "variable", *, required: bool = True) -> str:
        name = self.text(key, required=required, what="a variable name")
        if name and not _VARIABLE.fullmatch(name):
            self.problem(key, f"{name!r} is not a variable name (letters, digits, '_')")
        return name

    def whole(self, key: str, default: int, lowest: int, highest: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and lowest <= value <= highest:
            return value
        self.problem(key, f"expected a whole number {lowest}-{highest}, got {_describe(value)}")
        return default

    def seconds(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 600:
            return float(value)
        self.problem(key, f"expected seconds (more than 0, at most 600), got {_describe(value)}")
        return default

    def mapping(self, key: str) -> Mapping[Any, Any]:
        value = self.data.get(key, {})
        if isinstance(value, Mapping):
            return value
        self.problem(key, f"expected a mapping, got {_describe(value)}")
        return {}

    def strings(self, key: str, value: object) -> tuple[str, ...]:
        """A string (or number) or a list of them, as text."""
        items = value if isinstance(value, list) else [value]
        texts = []
        for item in items:
            if isinstance(item, str | int) and not isinstance(item, bool) and str(item).strip():
                texts.append(str(item).strip())
            else:
                self.problem(key, f"expected a value or a list of values, got {_describe(item)}")
        return tuple(texts)


# -- the node types ------------------------------------------------------------------------


def _play(fields: _Fields, common: dict[str, Any]) -> PlayNode:
    value = fields.data.get("play")
    items: list[PlayItem] = []
    if value is None:
        fields.present("play", True, "a list of sound files and {say: ..., variable: ...}")
    else:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.strip():
                items.append(item.strip())
            elif isinstance(item, Mapping):
                say = _say(fields, item)
                if say is not None:
                    items.append(say)
            else:
                fields.problem("play", f"expected a sound file name, got {_describe(item)}")
    return PlayNode(**common, items=tuple(items), next=fields.target("next"))


def _say(fields: _Fields, item: Mapping[Any, Any]) -> SayVariable | None:
    fields.reader.check_keys(item, ("say", "variable"), fields.node_id)
    kind, variable = item.get("say"), item.get("variable")
    if kind not in tuple(SayKind):
        hint = did_you_mean(str(kind), [say.value for say in SayKind])
        fields.problem("play", f"say: expected digits, number or date, got {_describe(kind)}{hint}")
        return None
    if not isinstance(variable, str) or not _VARIABLE.fullmatch(variable):
        fields.problem("play", f"say {kind}: expected a variable name, got {_describe(variable)}")
        return None
    return SayVariable(SayKind(kind), variable)


def _menu(fields: _Fields, common: dict[str, Any]) -> MenuNode:
    options: dict[str, str] = {}
    raw_options = fields.mapping("options")
    if not raw_options:
        fields.present("options", True, 'keys to node ids, e.g. {"1": balance}')
    for key, target in raw_options.items():
        # YAML reads an unquoted 1 as a number.
        key_text = str(key)
        if not _MENU_KEY.fullmatch(key_text):
            fields.problem("options", f"key {key!r} is not one of 0-9, * or #")
        elif not isinstance(target, str) or not target:
            fields.problem(f"options.{key_text}", f"expected a node id, got {_describe(target)}")
        else:
            options[key_text] = target
    return MenuNode(
        **common,
        prompt=fields.prompt(),
        options=options,
        timeout_s=fields.seconds("timeout", 5.0),
        retries=fields.whole("retries", 3, 0, 10),
        invalid_prompt=fields.prompt("invalid_prompt", required=False),
        default=fields.target("default", required=False),
    )


def _collect(fields: _Fields, common: dict[str, Any]) -> CollectNode:
    min_digits = fields.whole("min_digits", 1, 1, 64)
    max_digits = fields.whole("max_digits", max(20, min_digits), 1, 64)
    if min_digits > max_digits:
        fields.problem("min_digits", f"{min_digits} is more than max_digits {max_digits}")
    terminator = fields.data.get("terminator", "#")
    if terminator not in _TERMINATORS:
        fields.problem("terminator", f'expected "#", "*" or "" (none), got {_describe(terminator)}')
        terminator = "#"
    return CollectNode(
        **common,
        prompt=fields.prompt(),
        variable=fields.variable(),
        min_digits=min_digits,
        max_digits=max_digits,
        terminator=terminator,
        validation=_validation(fields, min_digits, max_digits),
        retries=fields.whole("retries", 3, 0, 10),
        invalid_prompt=fields.prompt("invalid_prompt", required=False),
        next=fields.target("next"),
        on_invalid=fields.target("on_invalid", required=False),
    )


def _validation(fields: _Fields, min_digits: int, max_digits: int) -> Validation | None:
    """`validate: luhn`, `validate: {regex: PATTERN}` or `validate: {length: [16, 19]}`."""
    value = fields.data.get("validate")
    if value is None:
        return None
    kinds = [kind.value for kind in ValidationKind]
    if isinstance(value, str):
        kind, argument = value, None
    elif isinstance(value, Mapping) and len(value) == 1:
        kind, argument = next(iter(value.items()))
    else:
        fields.problem(
            "validate",
            f"expected luhn, {{regex: PATTERN}} or {{length: [N, ...]}}, got {_describe(value)}",
        )
        return None
    if kind not in kinds:
        hint = did_you_mean(str(kind), kinds) or "; expected regex, luhn or length"
        fields.problem("validate", f"unknown validation {kind!r}{hint}")
        return None
    if kind == ValidationKind.LUHN:
        return Validation(ValidationKind.LUHN)
    if kind == ValidationKind.REGEX:
        if not isinstance(argument, str) or not argument:
            fields.problem("validate", f"regex: expected a pattern, got {_describe(argument)}")
            return None
        try:
            re.compile(argument)
        except re.error as exc:
            fields.problem("validate", f"regex {argument!r} is invalid: {exc}")
            return None
        return Validation(ValidationKind.REGEX, pattern=argument)
    given = argument if isinstance(argument, list) else [argument]
    counts = {
        length
        for length in given
        if isinstance(length, int)
        and not isinstance(length, bool)
        and min_digits <= length <= max_digits
    }
    if not given or len(counts) < len(set(map(repr, given))):
        fields.problem(
            "validate",
            f"length: expected digit counts {min_digits}-{max_digits}, got {_describe(argument)}",
        )
        return None
    return Validation(ValidationKind.LENGTH, lengths=tuple(sorted(counts)))


def _lookup(fields: _Fields, common: dict[str, Any]) -> LookupNode:
    by = fields.data.get("by", LookupKey.CALLER.value)
    if by not in tuple(LookupKey):
        fields.problem("by", f"expected caller or variable, got {_describe(by)}")
        by = LookupKey.CALLER.value
    key = LookupKey(by)
    variable = fields.variable(required=key is LookupKey.VARIABLE)
    if variable and key is LookupKey.CALLER:
        fields.problem("variable", "only with `by: variable`")
    return LookupNode(
        **common,
        by=key,
        variable=variable,
        next=fields.target("next"),
        not_found=fields.target("not_found"),
    )


def _branch(fields: _Fields, common: dict[str, Any]) -> BranchNode:
    cases_data = fields.data.get("when")
    cases: list[BranchCase] = []
    if not isinstance(cases_data, list) or not cases_data:
        fields.problem(
            "when", f"expected a list of cases (conditions and next), got {_describe(cases_data)}"
        )
        cases_data = []
    for index, case_data in enumerate(cases_data):
        if not isinstance(case_data, Mapping):
            fields.problem(
                "when", f"[{index}]: expected conditions and next, got {_describe(case_data)}"
            )
            continue
        case = _case(_Fields(fields.reader, case_data, fields.node_id, line_of(case_data)), index)
        if case is not None:
            cases.append(case)
    return BranchNode(**common, cases=tuple(cases), otherwise=fields.target("else"))


def _case(fields: _Fields, index: int) -> BranchCase | None:
    fields.reader.check_keys(fields.data, _CONDITION_KEYS, fields.node_id)
    data = fields.data
    variables: dict[str, tuple[str, ...]] = {}
    for name, wanted in fields.mapping("variables").items():
        if not isinstance(name, str) or not _VARIABLE.fullmatch(name):
            fields.problem("variables", f"{name!r} is not a variable name")
        else:
            variables[name] = fields.strings("variables", wanted)
    condition = Condition(
        variables=variables,
        tiers=fields.strings("tier", data["tier"]) if "tier" in data else (),
        times=_windows(fields, data.get("time", [])),
        weekdays=_weekdays(fields, data.get("weekday", [])),
        holidays=_holidays(fields, data.get("holiday", [])),
    )
    if not any(key in data for key in _CONDITION_KEYS if key != "next"):
        fields.reader.problem(
            line_of(data), fields.node_id, f"when[{index}]: no condition; use else"
        )
    target = fields.target("next")
    return BranchCase(condition, target) if target else None


def _windows(fields: _Fields, value: object) -> tuple[TimeWindow, ...]:
    windows = []
    for text in fields.strings("time", value) if value != [] else ():
        match = _WINDOW.fullmatch(text)
        clock = [int(part) for part in match.groups()] if match else []
        if not match or clock[0] > 24 or clock[1] > 59 or clock[2] > 24 or clock[3] > 59:
            fields.problem("time", f'{text!r} is not a time window like "09:00-18:00"')
            continue
        start = time(clock[0] % 24, clock[1])
        end = time.max if (clock[2], clock[3]) == (24, 0) else time(clock[2] % 24, clock[3])
        if end <= start:
            fields.problem("time", f"{text!r} ends before it starts; split windows past midnight")
            continue
        windows.append(TimeWindow(start, end))
    return tuple(windows)


def _weekdays(fields: _Fields, value: object) -> frozenset[int]:
    days: set[int] = set()
    for text in fields.strings("weekday", value) if value != [] else ():
        first, _, last = text.lower().partition("-")
        if first in WEEKDAYS and (not last or last in WEEKDAYS):
            start, end = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
            if start <= end:
                days.update(range(start, end + 1))
                continue
        hint = did_you_mean(text, (*WEEKDAYS, "mon-fri"), cutoff=0.6)
        fields.problem("weekday", f"{text!r} is not a day (mon) or days (mon-fri){hint}")
    return frozenset(days)


def _holidays(fields: _Fields, value: object) -> frozenset[date]:
    dates: set[date] = set()
    for item in value if isinstance(value, list) else [value]:
        # YAML reads an unquoted 2026-10-01 as a date already.
        if isinstance(item, date) and not isinstance(item, datetime):
            dates.add(item)
            continue
        try:
            dates.add(date.fromisoformat(str(item)))
        except ValueError:
            fields.problem("holiday", f"{item!r} is not a date like 2026-10-01")
    return frozenset(dates)


def _set(fields: _Fields, common: dict[str, Any]) -> SetNode:
    return SetNode(
        **common,
        variable=fields.variable(),
        value=fields.text("value", required=True, what="a value"),
        next=fields.target("next"),
    )


def _language(fields: _Fields, common: dict[str, Any]) -> LanguageNode:
    language = fields.text("language", required=True, what="a language code like zh or en")
    return LanguageNode(**common, language=language, next=fields.target("next"))


def _queue(fields: _Fields, common: dict[str, Any]) -> QueueNode:
    priority = fields.data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int | str) or priority == "":
        fields.problem(
            "priority", f"expected a whole number or an expression, got {_describe(priority)}"
        )
        priority = 0
    elif isinstance(priority, str):
        try:
            parse_priority(priority)
        except ExpressionError as exc:
            fields.problem("priority", str(exc))
            priority = 0
    skills: dict[str, int] = {}
    for skill, level in fields.mapping("skills").items():
        whole = isinstance(level, int) and not isinstance(level, bool)
        if whole and MIN_PROFICIENCY <= level <= MAX_PROFICIENCY:
            skills[str(skill)] = level
        else:
            fields.problem(
                "skills",
                f"{skill}: expected a level {MIN_PROFICIENCY}-{MAX_PROFICIENCY}"
                f" (the ACD's proficiency), got {_describe(level)}",
            )
    attributes = {
        str(name): text
        for name, value in fields.mapping("attributes").items()
        for text in fields.strings("attributes", value)[:1]
    }
    return QueueNode(
        **common,
        queue=fields.text("queue", required=True, what="a queue name"),
        priority=priority,
        skills=skills,
        attributes=attributes,
        preferred_agent=fields.variable("preferred_agent", required=False),
        survey=fields.target("survey", required=False),
    )


def _callback(fields: _Fields, common: dict[str, Any]) -> CallbackNode:
    return CallbackNode(
        **common,
        queue=fields.text("queue", required=True, what="a queue name"),
        number=fields.variable("number", required=False),
    )


def _voicemail(fields: _Fields, common: dict[str, Any]) -> VoicemailNode:
    queue = fields.text("queue", what="a queue name")
    mailbox = fields.text("mailbox", what="a mailbox")
    if bool(queue) == bool(mailbox):
        fields.reader.problem(fields.line, fields.node_id, "give either queue or mailbox")
    return VoicemailNode(
        **common, queue=queue, mailbox=mailbox, prompt=fields.prompt(required=False)
    )


def _survey(fields: _Fields, common: dict[str, Any]) -> SurveyNode:
    return SurveyNode(
        **common,
        prompt=fields.prompt(),
        variable=fields.variable(),
        scale=fields.whole("scale", 5, 2, 9),
    )


def _transfer(fields: _Fields, common: dict[str, Any]) -> TransferNode:
    destination = fields.text("destination", required=True, what="an extension or endpoint")
    return TransferNode(**common, destination=destination)


def _hangup(fields: _Fields, common: dict[str, Any]) -> HangupNode:
    return HangupNode(**common, prompt=fields.prompt(required=False))


_NODE_READERS: Mapping[str, Callable[[_Fields, dict[str, Any]], Node]] = {
    "play": _play,
    "menu": _menu,
    "collect": _collect,
    "lookup": _lookup,
    "branch": _branch,
    "set": _set,
    "language": _language,
    "queue": _queue,
    "callback": _callback,
    "voicemail": _voicemail,
    "survey": _survey,
    "transfer": _transfer,
    "hangup": _hangup,
}
