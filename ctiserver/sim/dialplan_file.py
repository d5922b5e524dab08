"""Load an Asterisk extensions.conf into the emulator's `Dialplan`.

    plan = load_dialplan(Path("dialplans/extensions.conf"), {"CTISERVER": "127.0.0.1:45731"})
    emulator = AsteriskEmulator(ami_port=0, dialplan=plan)

Understood, as Asterisk's config parser (main/config.c) and pbx_config read it:

- `[context]` sections; a section named twice is one context.
- `exten => name,priority,App(data)` and `same => priority,App(data)`, with
  priority `1`, `n` / `next` or the next number; `=` works for `=>`. `App`,
  `App()` and `App(data)`; the data runs to the last `)` and is kept as
  written, `${...}` and `$[...]` being substituted when the step runs.
- `;` starts a comment, `\\;` is a literal semicolon, `;--` ... `--;` is a
  block comment (`;---` is not: Asterisk wants exactly two dashes).
- `[globals]`: `NAME = value`, each value substituted with the globals
  before it, as pbx_config does at load time. `overrides` replace values
  of the file (the FastAGI address of a test, shorter retry timers).
- `[general]`: the reload options `static`, `writeprotect`, `clearglobalvars`
  (nothing to reload in the emulator, so they change nothing).

Anything else would make the emulator run the file differently from
Asterisk, so it is refused with a `DialplanFileError` naming the file, the
line and its text: `#include`, `include =>`, switches, hints, priority labels
`n(name)`, gaps in priorities, caller-id matches (`exten => 100/5551234`),
templates `[name](!)` and lines that are no `name => value` at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ctiserver.sim.dialplan import Dialplan, Extension, Step, expand

_APP_NAME = re.compile(r"[A-Za-z0-9_]+")
_CONTEXT_NAME = re.compile(r"[^\[\]\s]+")
_RELOAD_OPTIONS = {"static", "writeprotect", "clearglobalvars"}
_NOT_EMULATED_DIRECTIVES = {"include", "switch", "lswitch", "eswitch", "ignorepat"}


class DialplanFileError(ValueError):
    """A line of an extensions.conf the emulator cannot run as Asterisk would."""

    def __init__(self, path: str, line: int, text: str, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}: {text!r}")
        self.path = path
        self.line = line
        self.text = text
        self.problem = problem


def load_dialplan(path: Path, overrides: Mapping[str, str] | None = None) -> Dialplan:
    """The dialplan of an extensions.conf; `overrides` replace values of its [globals]."""
    return _Loader(str(path)).load(path.read_text(encoding="utf-8"), overrides or {})


@dataclass
class _Line:
    number: int
    text: str  # comments removed, blanks stripped
    raw: str  # as in the file, for error messages


@dataclass
class _Global:
    name: str
    value: str  # as written; substituted once the file is read


class _Loader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.plan = Dialplan()
        self.globals: list[_Global] = []
        self.section: str | None = None
        # The extension the previous exten/same line of this section added to:
        # `same =>` and `n` continue it.
        self.current: Extension | None = None
        self.extensions: dict[tuple[str, str], Extension] = {}

    def fail(self, line: _Line, problem: str) -> DialplanFileError:
        return DialplanFileError(self.path, line.number, line.raw.strip(), problem)

    def load(self, text: str, overrides: Mapping[str, str]) -> Dialplan:
        for line in self._lines(text):
            self._line(line)
        self.plan.globals = self._resolve_globals(overrides)
        return self.plan

    # -- lines --------------------------------------------------------------

    def _lines(self, text: str) -> Iterator[_Line]:
        """Every line that is not blank once comments are removed."""
        depth = 0
        opened: _Line | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            content, new_depth = _uncomment(raw, depth)
            if new_depth > depth and depth == 0:
                opened = _Line(number, "", raw)
            depth = new_depth
            if content.strip():
                yield _Line(number, content.strip(), raw)
        if depth and opened is not None:
            raise self.fail(opened, "block comment ';--' is never closed with '--;'")

    def _line(self, line: _Line) -> None:
        text = line.text
        if text.startswith("#"):
            raise self.fail(line, "#include and #exec are not emulated")
        if text.startswith("["):
            self._section(line)
            return
        name, equals, value = text.partition("=")
        if not equals:
            raise self.fail(line, "neither a [context] nor a 'name => value' line")
        if value.startswith(">"):
            value = value[1:]
        name, value = name.strip(), value.strip()
        if self.section is None:
            raise self.fail(line, "line outside any [context]")
        if self.section == "general":
            if name.lower() not in _RELOAD_OPTIONS:
                raise self.fail(line, f"[general] option {name!r} is not emulated")
        elif self.section == "globals":
            if not name:
                raise self.fail(line, "global variable without a name")
            self.globals.append(_Global(name, value))
        else:
            self._directive(line, name.lower(), value)

    def _section(self, line: _Line) -> None:
        close = line.text.find("]")
        name = line.text[1:close] if close > 0 else ""
        if close < 0 or not _CONTEXT_NAME.fullmatch(name):
            raise self.fail(line, "not a [context] header")
        if line.text[close + 1 :].strip():
            raise self.fail(line, "context templates and options are not emulated")
        self.section = name
        self.current = None

    # -- extensions -----------------------------------------------------------

    def _directive(self, line: _Line, directive: str, value: str) -> None:
        assert self.section is not None
        if directive == "exten":
            exten, comma, rest = value.partition(",")
            exten = exten.strip()
            if not comma or not exten:
                raise self.fail(line, "expected 'exten => name,priority,Application(data)'")
            if "/" in exten:
                raise self.fail(line, "caller-id matching (exten/callerid) is not emulated")
            extension = self.extensions.get((self.section, exten))
            if extension is None:
                extension = self.plan.add(self.section, exten)
                self.extensions[(self.section, exten)] = extension
            elif extension is not self.current and rest.partition(",")[0].strip() in ("n", "next"):
                raise self.fail(
                    line, f"'n' only continues the extension of the line before, not {exten!r}"
                )
            self.current = extension
            self._step(line, extension, rest)
        elif directive == "same":
            if self.current is None:
                raise self.fail(line, "'same =>' without an 'exten =>' before it in this context")
            self._step(line, self.current, value)
        elif directive in _NOT_EMULATED_DIRECTIVES:
            raise self.fail(line, f"'{directive} =>' is not emulated")
        else:
            raise self.fail(line, f"unknown directive {directive!r}")

    def _step(self, line: _Line, extension: Extension, text: str) -> None:
        priority, comma, application = text.partition(",")
        priority = priority.strip()
        expected = len(extension.steps) + 1
        if not comma:
            raise self.fail(line, "expected 'priority,Application(data)'")
        if priority in ("n", "next"):
            if expected == 1:
                raise self.fail(line, f"extension {extension.name!r} starts with 'n', not 1")
        elif priority.isdigit():
            if int(priority) < expected:
                raise self.fail(line, f"priority {priority} of {extension.name!r} is defined twice")
            if int(priority) > expected:
                raise self.fail(
                    line,
                    f"priority {priority} where {expected} comes next (gaps are not emulated)",
                )
        elif priority == "hint":
            raise self.fail(line, "hints are not emulated")
        elif "(" in priority or "+" in priority:
            raise self.fail(line, "priority labels and offsets are not emulated")
        else:
            raise self.fail(line, f"not a priority: {priority!r}")
        extension.steps.append(self._application(line, application.strip()))

    def _application(self, line: _Line, text: str) -> Step:
        app, paren, data = text.partition("(")
        app = app.strip()
        if not _APP_NAME.fullmatch(app):
            raise self.fail(line, f"not an application name: {app!r}")
        if not paren:
            return Step(app)
        if not data.endswith(")"):
            raise self.fail(line, "the application data does not end with ')'")
        return Step(app, data[:-1])

    # -- [globals] --------------------------------------------------------------

    def _resolve_globals(self, overrides: Mapping[str, str]) -> dict[str, str]:
        unknown = sorted(set(overrides) - {entry.name for entry in self.globals})
        if unknown:
            raise ValueError(f"{self.path}: no [globals] entry to override for {unknown}")
        resolved: dict[str, str] = {}
        for entry in self.globals:
            if entry.name in overrides:
                resolved[entry.name] = overrides[entry.name]
            else:
                resolved[entry.name] = expand(entry.value, resolved.get)
        return resolved


def _uncomment(line: str, depth: int) -> tuple[str, int]:
    """`line` without its comments, and the block-comment depth after it (config.c rules)."""
    kept: list[str] = []
    index = 0
    while index < len(line):
        semicolon = line.find(";", index)
        if semicolon < 0:
            if not depth:
                kept.append(line[index:])
            break
        if semicolon > index and line[semicolon - 1] == "\\":
            if not depth:
                kept.append(line[index : semicolon - 1] + ";")
            index = semicolon + 1
        elif line.startswith("--", semicolon + 1) and not line.startswith("-", semicolon + 3):
            if not depth:
                kept.append(line[index:semicolon])
            depth += 1
            index = semicolon + 3
        elif depth and line[index:semicolon].endswith("--"):
            depth -= 1
            index = semicolon + 1
        elif depth:
            index = semicolon + 1
        else:
            kept.append(line[index:semicolon])
            break
    return "".join(kept), depth
