"""The emulator's built-in dialplan (a mirror of shared/asterisk/conf/extensions.conf).

Contexts hold extensions (exact names or `_` patterns with X, Z, N, [..], `.`
and `!`, letters case-insensitive as in Asterisk), each a list of
`Step(app, data)` run at priorities 1, 2, ... Application data is written
with `${...}` references and `$[...]` expressions that are substituted when
the step runs, exactly what the `AppData:` of `Newexten` shows.

Not mirrored: extension 200 (`Queue()`, app_queue is not emulated).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ctiserver.sim.expressions import ExpressionError, UnsupportedExpressionError, evaluate

if TYPE_CHECKING:
    from ctiserver.sim.model import Channel, Pbx

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Step:
    app: str
    data: str = ""


@dataclass
class Extension:
    name: str  # "100" or a pattern "_age[n]t."
    steps: list[Step]
    _regex: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.name.startswith("_"):
            self._regex = re.compile(_pattern_regex(self.name[1:]), re.IGNORECASE)

    @property
    def is_pattern(self) -> bool:
        return self._regex is not None

    def matches(self, exten: str) -> bool:
        if self._regex is None:
            return exten == self.name
        return self._regex.fullmatch(exten) is not None


def _pattern_regex(pattern: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        upper = char.upper()
        if upper == "X":
            out.append("[0-9]")
        elif upper == "Z":
            out.append("[1-9]")
        elif upper == "N":
            out.append("[2-9]")
        elif char == ".":
            out.append(".+")
        elif char == "!":
            out.append(".*")
        elif char == "[":
            end = pattern.index("]", index)
            out.append("[" + re.sub(r"([\\\]^])", r"\\\1", pattern[index + 1 : end]) + "]")
            index = end
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


class Dialplan:
    """Contexts and extensions; `lookup` finds the step at a location.

    `globals` are the [globals] of extensions.conf: the emulator starts its
    PBX-wide variables from them, which `${NAME}` reads when the channel has
    no variable of that name.
    """

    def __init__(self) -> None:
        self.contexts: dict[str, list[Extension]] = {}
        self.globals: dict[str, str] = {}

    def add(self, context: str, exten: str, *steps: Step) -> Extension:
        extension = Extension(exten, list(steps))
        self.contexts.setdefault(context, []).append(extension)
        return extension

    def find(self, context: str, exten: str) -> Extension | None:
        extensions = self.contexts.get(context)
        if not extensions:
            return None
        for candidate in extensions:
            if not candidate.is_pattern and candidate.matches(exten):
                return candidate
        for candidate in extensions:
            if candidate.is_pattern and candidate.matches(exten):
                return candidate
        return None

    def lookup(self, context: str, exten: str, priority: int) -> Step | None:
        extension = self.find(context, exten)
        if extension is None or not 1 <= priority <= len(extension.steps):
            return None
        return extension.steps[priority - 1]


def builtin_dialplan(fastagi: str) -> Dialplan:
    """The dialplan of the recorded PBX; `fastagi` is `agi://host:port`."""
    plan = Dialplan()
    plan.globals["FASTAGI"] = f"{fastagi}/ivr"
    plan.add(
        "from-callers",
        "100",
        Step("NoOp", "IVR call from ${CALLERID(all)} on ${CHANNEL}"),
        Step("Answer"),
        Step("AGI", f"{fastagi}/ivr"),
        Step("Hangup"),
    )
    plan.add("from-callers", "300", Step("Answer"), Step("Echo"), Step("Hangup"))
    plan.add("from-callers", "_100X", Step("Dial", "PJSIP/agent${EXTEN},20"), Step("Hangup"))
    plan.add("from-callers", "999", Step("Answer"), Step("Wait", "30"), Step("Hangup"))
    plan.add(
        "from-callers",
        "600",
        Step("NoOp", "Async AGI call from ${CALLERID(all)} on ${CHANNEL}"),
        Step("Answer"),
        Step("AGI", "agi:async"),
        Step("Hangup"),
    )
    plan.add(
        "cti-agent",
        "_age[n]t.",
        Step("NoOp", "CTI connects ${CALLERID(num)} to ${EXTEN}"),
        Step("Dial", "PJSIP/${EXTEN},20,t"),
        Step("NoOp", "Dial to ${EXTEN} ended: DIALSTATUS=${DIALSTATUS}"),
        Step("UserEvent", "CTIDialResult,Agent: ${EXTEN},DialStatus: ${DIALSTATUS}"),
        Step("AGI", f"{fastagi}/after-dial"),
        Step("Hangup"),
    )
    plan.add("cti-agent", "_1XXX", Step("Goto", "agent${EXTEN},1"))
    plan.add(
        "cti-hold",
        "agent",
        Step("NoOp", "Agent leg ${CHANNEL} answered, waiting for the CTI Bridge action"),
        Step("Wait", "60"),
        Step("Hangup"),
    )
    plan.add(
        "cti-outbound",
        "_X.",
        Step("NoOp", "Click-to-dial: agent ${CHANNEL} calls ${EXTEN}"),
        Step("Set", 'CALLERID(all)="ACME Support" <5550100>'),
        Step("Dial", "PJSIP/${EXTEN}@pstn,30"),
        Step("Hangup"),
    )
    return plan


# -- expressions -------------------------------------------------------------


def callerid_merge(num: str, name: str) -> str:
    """ast_callerid_merge: `"name" <num>`, or whichever part exists."""
    if name and num:
        return f'"{name}" <{num}>'
    return name or num


def callerid_split(text: str) -> tuple[str, str]:
    """ast_callerid_split: `"ACME Support" <5550100>` -> ("5550100", "ACME Support")."""
    text = text.strip()
    match = re.fullmatch(r'(?:"(?P<q>[^"]*)"|(?P<n>[^<]*?))\s*<(?P<num>[^>]*)>', text)
    if match:
        name = match.group("q") if match.group("q") is not None else (match.group("n") or "")
        return match.group("num").strip(), name.strip()
    if text.replace("+", "").isdigit():
        return text, ""
    return "", text.strip('"')


def read_variable(pbx: Pbx, chan: Channel | None, name: str) -> str | None:
    """A variable or dialplan function value; None when unset (AGI GET VARIABLE -> result=0)."""
    name = name.strip()
    func, paren, rest = name.partition("(")
    if paren:
        arg = rest[:-1] if rest.endswith(")") else rest
        return _function(pbx, chan, func.upper(), arg)
    if chan is not None:
        builtin = _builtin(chan, name)
        if builtin is not None:
            return builtin
        if name in chan.vars:
            return chan.vars[name]
    return pbx.globals.get(name)


def _builtin(chan: Channel, name: str) -> str | None:
    if name == "CHANNEL":
        return chan.name
    if name == "EXTEN":
        return chan.exten
    if name == "CONTEXT":
        return chan.context
    if name == "PRIORITY":
        return str(chan.priority)
    if name == "UNIQUEID":
        return chan.uniqueid
    if name == "HANGUPCAUSE":
        return str(chan.hangupcause)
    if name == "CALLERID(num)":
        return chan.caller_num
    return None


def _function(pbx: Pbx, chan: Channel | None, func: str, arg: str) -> str | None:
    if func == "LEN":
        return str(len(substitute(pbx, chan, arg)))
    if func == "EPOCH":
        return str(int(pbx.clock.time()))
    if chan is None:
        return None
    what = arg.strip().lower()
    if func == "CALLERID":
        if what in ("num", "number"):
            return chan.caller_num
        if what == "name":
            return chan.caller_name
        if what == "all":
            return callerid_merge(chan.caller_num, chan.caller_name)
        if what == "dnid":
            return chan.dnid
        if what == "ani":
            return chan.caller_num
        return None
    if func == "CONNECTEDLINE":
        if what in ("num", "number"):
            return chan.conn_num
        if what == "name":
            return chan.conn_name
        if what == "all":
            return callerid_merge(chan.conn_num, chan.conn_name)
        return None
    if func == "CHANNEL":
        values = {
            "name": chan.name,
            "uniqueid": chan.uniqueid,
            "linkedid": chan.linkedid,
            "state": {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}.get(chan.state, "Unknown"),
            "language": chan.language,
            "context": chan.context,
            "exten": chan.exten,
            "channeltype": chan.tech,
            "endpoint": chan.endpoint.name if chan.endpoint else "",
        }
        return values.get(what)
    if func == "HANGUPCAUSE":
        return str(chan.hangupcause)
    return None


def substitute(pbx: Pbx, chan: Channel | None, text: str) -> str:
    """Expand `${NAME}` / `${FUNC(args)}` / `$[expression]` (nested allowed) like
    pbx_substitute_variables: channel variables first, then the PBX's globals."""
    return expand(text, lambda name: read_variable(pbx, chan, name))


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """`substitute` with any variable source (the dialplan file resolves its [globals] so)."""
    if "$" not in text:
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        start = _next_reference(text, index)
        if start < 0:
            out.append(text[index:])
            break
        out.append(text[index:start])
        if text[start + 1] == "{":
            end, closed = _reference_end(text, start + 2)
            inner = text[start + 2 : end - 1] if closed else text[start + 2 :]
            out.append(lookup(expand(inner, lookup)) or "")
        else:
            end, closed = _expression_end(text, start + 2)
            inner = text[start + 2 : end - 1] if closed else text[start + 2 :]
            out.append(_expression_value(expand(inner, lookup)))
        index = end
    return "".join(out)


def _next_reference(text: str, index: int) -> int:
    """Where the next `${` or `$[` starts, -1 when there is none."""
    variable = text.find("${", index)
    expression = text.find("$[", index)
    if variable < 0 or expression < 0:
        return max(variable, expression)
    return min(variable, expression)


def _reference_end(text: str, pos: int) -> tuple[int, bool]:
    """The index after the `}` that closes a `${` whose name starts at `pos`, and
    whether there was one (unclosed: the rest of the text is the name)."""
    depth = 1
    while pos < len(text) and depth:
        if text.startswith("${", pos):
            depth += 1
            pos += 2
            continue
        if text[pos] == "}":
            depth -= 1
        pos += 1
    return pos, depth == 0


def _expression_end(text: str, pos: int) -> tuple[int, bool]:
    """The index after the `]` that closes a `$[` (any `[` nests, as in pbx.c), and
    whether there was one."""
    depth = 1
    while pos < len(text) and depth:
        if text[pos] == "[":
            depth += 1
        elif text[pos] == "]":
            depth -= 1
        pos += 1
    return pos, depth == 0


def _expression_value(expression: str) -> str:
    try:
        return evaluate(expression)
    except UnsupportedExpressionError as exc:
        log.warning("%s; using 0", exc)
    except ExpressionError as exc:
        # Asterisk logs the syntax error and substitutes 0 (ast_expr without a value).
        log.warning("%s; using 0 as Asterisk does", exc)
    return "0"


def split_args(data: str) -> list[str]:
    """Application arguments: split on commas outside quotes and parentheses."""
    args: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    for char in data:
        if char == '"':
            quoted = not quoted
        elif char == "(" and not quoted:
            depth += 1
        elif char == ")" and not quoted and depth:
            depth -= 1
        if char == "," and not quoted and depth == 0:
            args.append("".join(current))
            current = []
            continue
        current.append(char)
    args.append("".join(current))
    return args
