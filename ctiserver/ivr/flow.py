"""The IVR flow model: one flow per entry point, a graph of typed nodes.

A flow is written by hand as YAML (loader.py reads and checks it):

    name: 银行热线 Bank hotline
    start: welcome
    numbers: ["95588"]        # dialled numbers (DNIS) that reach this flow
    language: zh              # prompt language until a `language` node changes it
    timezone: Asia/Shanghai   # for `time`, `weekday` and `holiday` conditions
    nodes:
      welcome:
        type: play
        label: 欢迎语
        play: [bank/welcome, {say: date, variable: today}]
        next: main_menu
      main_menu:
        type: menu
        prompt: bank/main-menu
        options: {"1": get_account, "0": agent}
        timeout: 5            # seconds to wait for a key
        retries: 3
        invalid_prompt: bank/invalid
        default: agent        # after the last failed try
      get_account:
        type: collect
        prompt: bank/enter-card
        variable: card
        min_digits: 16
        max_digits: 19
        terminator: "#"
        validate: luhn        # or {regex: "^62"} or {length: [16, 19]}
        next: find_customer
        on_invalid: agent
      find_customer:
        type: lookup
        by: variable          # or `caller` (the calling number)
        variable: card
        next: by_tier
        not_found: agent
      by_tier:
        type: branch
        when:
          - tier: [gold, platinum]
            next: vip
          - time: "09:00-18:00"
            weekday: mon-fri
            variables: {segment: [retail, sme]}
            next: agent
          - holiday: [2026-10-01, 2026-10-02]
            next: closed
        else: agent
      vip: {type: queue, queue: vip, priority: 10, skills: {cards: 3}, preferred_agent: last_agent}
      agent: {type: queue, queue: support, priority: "base + 2"}
      closed: {type: voicemail, mailbox: "8000"}

Every node has a `type` and may have a `label` (a human name for reports).
The node types and their fields:

- play: `play` (a list of sound files and `{say: digits|number|date, variable: V}`), `next`.
- menu: `prompt`, `options` (key 0-9, * or # -> node), `timeout` (5 s), `retries` (3),
  `invalid_prompt`, `default`.
- collect: `prompt`, `variable`, `min_digits` (1), `max_digits` (20), `terminator` ("#"),
  `validate`, `retries` (3), `invalid_prompt`, `next`, `on_invalid`.
- lookup: `by` (caller | variable), `variable` (with `by: variable`), `next`, `not_found`.
- branch: `when` (a list of cases: every condition of a case must hold), `else`.
  Conditions: `variables` (name -> value or list of values), `tier` (customer tier or
  list), `time` ("HH:MM-HH:MM" or list), `weekday` ("mon-fri", "sat" or list),
  `holiday` (list of dates).
- set: `variable`, `value`, `next`.
- language: `language`, `next`.
- queue: `queue`, `priority` (whole number or expression over variables, see
  expressions.py), `skills` (name -> level), `attributes` (name -> value; "${var}"
  takes a variable's value), `preferred_agent` (variable holding an agent id),
  `survey` (a survey node the caller meets after the agent hangs up).
- callback: `queue`, `number` (variable holding the number; default the caller's).
- voicemail: `queue` or `mailbox`, `prompt`.
- survey: `prompt` (the question), `variable`, `scale` (answers 1..scale, default 5).
- transfer: `destination`.
- hangup: `prompt` (a goodbye).

queue, callback, voicemail, survey, transfer and hangup end the flow; every
other node names where the call goes next. Menu and collect hang up after the
last failed try when they have no `default` / `on_invalid`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time
from enum import StrEnum


class SayKind(StrEnum):
    DIGITS = "digits"  # one digit after another: 6 2 2 8
    NUMBER = "number"  # a number: six thousand two hundred...
    DATE = "date"


class ValidationKind(StrEnum):
    REGEX = "regex"
    LUHN = "luhn"  # the check digit of card numbers
    LENGTH = "length"


class LookupKey(StrEnum):
    CALLER = "caller"  # the calling number
    VARIABLE = "variable"  # a collected variable


@dataclass(frozen=True)
class SayVariable:
    """Speak the value of a flow variable."""

    kind: SayKind
    variable: str


# A sound file name ("bank/welcome") or a variable to speak.
PlayItem = str | SayVariable


@dataclass(frozen=True)
class Validation:
    """What collected digits must satisfy beyond their count."""

    kind: ValidationKind
    pattern: str = ""  # regex: must match all of the digits
    lengths: tuple[int, ...] = ()  # length: the allowed numbers of digits

    def accepts(self, digits: str) -> bool:
        if self.kind is ValidationKind.REGEX:
            return re.fullmatch(self.pattern, digits) is not None
        if self.kind is ValidationKind.LENGTH:
            return len(digits) in self.lengths
        return passes_luhn(digits)


def passes_luhn(digits: str) -> bool:
    """Whether `digits` end with a correct Luhn check digit (card numbers)."""
    if not digits.isdigit():
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


@dataclass(frozen=True)
class TimeWindow:
    """Time of day from `start` (included) to `end` (excluded)."""

    start: time
    end: time


@dataclass(frozen=True)
class Condition:
    """Every part given must hold; an empty part is no constraint."""

    variables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # name -> any of
    tiers: tuple[str, ...] = ()
    times: tuple[TimeWindow, ...] = ()  # any of
    weekdays: frozenset[int] = frozenset()  # 0 = Monday
    holidays: frozenset[date] = frozenset()  # today is one of these


@dataclass(frozen=True)
class BranchCase:
    condition: Condition
    next: str


@dataclass(frozen=True, kw_only=True)
class _NodeBase:
    id: str
    line: int  # where the node starts in its file
    label: str = ""

    def targets(self) -> tuple[tuple[str, str], ...]:
        """(field, node id) of every node this one can lead to."""
        return ()


@dataclass(frozen=True, kw_only=True)
class PlayNode(_NodeBase):
    items: tuple[PlayItem, ...]
    next: str

    def targets(self) -> tuple[tuple[str, str], ...]:
        return (("next", self.next),)


@dataclass(frozen=True, kw_only=True)
class MenuNode(_NodeBase):
    prompt: str
    options: Mapping[str, str]  # key -> node
    timeout_s: float = 5.0
    retries: int = 3
    invalid_prompt: str = ""
    default: str = ""

    def targets(self) -> tuple[tuple[str, str], ...]:
        chosen = tuple((f"options.{key}", target) for key, target in self.options.items())
        return chosen + ((("default", self.default),) if self.default else ())


@dataclass(frozen=True, kw_only=True)
class CollectNode(_NodeBase):
    prompt: str
    variable: str
    next: str
    min_digits: int = 1
    max_digits: int = 20
    terminator: str = "#"
    validation: Validation | None = None
    retries: int = 3
    invalid_prompt: str = ""
    on_invalid: str = ""

    def targets(self) -> tuple[tuple[str, str], ...]:
        return (("next", self.next),) + (
            (("on_invalid", self.on_invalid),) if self.on_invalid else ()
        )


@dataclass(frozen=True, kw_only=True)
class LookupNode(_NodeBase):
    by: LookupKey
    next: str
    not_found: str
    variable: str = ""  # with by=variable

    def targets(self) -> tuple[tuple[str, str], ...]:
        return (("next", self.next), ("not_found", self.not_found))


@dataclass(frozen=True, kw_only=True)
class BranchNode(_NodeBase):
    cases: tuple[BranchCase, ...]
    otherwise: str

    def targets(self) -> tuple[tuple[str, str], ...]:
        chosen = tuple((f"when[{index}].next", case.next) for index, case in enumerate(self.cases))
        return (*chosen, ("else", self.otherwise))


@dataclass(frozen=True, kw_only=True)
class SetNode(_NodeBase):
    variable: str
    value: str
    next: str

    def targets(self) -> tuple[tuple[str, str], ...]:
        return (("next", self.next),)


@dataclass(frozen=True, kw_only=True)
class LanguageNode(_NodeBase):
    language: str
    next: str

    def targets(self) -> tuple[tuple[str, str], ...]:
        return (("next", self.next),)


@dataclass(frozen=True, kw_only=True)
class QueueNode(_NodeBase):
    queue: str
    priority: int | str = 0  # a whole number or an expression over variables
    skills: Mapping[str, int] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    preferred_agent: str = ""  # the variable holding an agent id
    # A survey node the caller meets after the agent hangs up (dialplans/).
    survey: str = ""

    def targets(self) -> tuple[tuple[str, str], ...]:
        return (("survey", self.survey),) if self.survey else ()


@dataclass(frozen=True, kw_only=True)
class CallbackNode(_NodeBase):
    queue: str
    number: str = ""  # the variable holding the number; empty: the caller's


@dataclass(frozen=True, kw_only=True)
class VoicemailNode(_NodeBase):
    queue: str = ""  # exactly one of queue and mailbox
    mailbox: str = ""
    prompt: str = ""


@dataclass(frozen=True, kw_only=True)
class SurveyNode(_NodeBase):
    prompt: str
    variable: str
    scale: int = 5  # answers 1..scale


@dataclass(frozen=True, kw_only=True)
class TransferNode(_NodeBase):
    destination: str


@dataclass(frozen=True, kw_only=True)
class HangupNode(_NodeBase):
    prompt: str = ""


Node = (
    PlayNode
    | MenuNode
    | CollectNode
    | LookupNode
    | BranchNode
    | SetNode
    | LanguageNode
    | QueueNode
    | CallbackNode
    | VoicemailNode
    | SurveyNode
    | TransferNode
    | HangupNode
)

# The `type` of each node in a flow file.
NODE_TYPES: Mapping[str, type[Node]] = {
    "play": PlayNode,
    "menu": MenuNode,
    "collect": CollectNode,
    "lookup": LookupNode,
    "branch": BranchNode,
    "set": SetNode,
    "language": LanguageNode,
    "queue": QueueNode,
    "callback": CallbackNode,
    "voicemail": VoicemailNode,
    "survey": SurveyNode,
    "transfer": TransferNode,
    "hangup": HangupNode,
}
TYPE_NAMES: Mapping[type[Node], str] = {kind: name for name, kind in NODE_TYPES.items()}
# Where a call leaves the flow.
TERMINAL_TYPES: frozenset[type[Node]] = frozenset(
    {QueueNode, CallbackNode, VoicemailNode, SurveyNode, TransferNode, HangupNode}
)


def type_name(node: Node) -> str:
    return TYPE_NAMES[type(node)]


@dataclass(frozen=True)
class Flow:
    """A checked flow: every target exists, every node is reachable and can end."""

    name: str
    start: str
    nodes: Mapping[str, Node]  # in file order
    source: str  # the file it came from
    language: str = ""
    timezone: str = ""
    # Dialled numbers (DNIS) that reach this flow.
    numbers: tuple[str, ...] = ()

    @property
    def entry(self) -> Node:
        return self.nodes[self.start]
