"""Scripted scenarios for `ctiserver simulate`: the file format, its loader and its checks.

A scenario is one YAML file: who calls when and what they do, which agents
answer and how, and the ACD they work in. Running it (scenario_run.py)
gives the metrics report of METRICS.md for the scenario's range.

    name: 早高峰 Morning rush              # optional, shown in the report
    seed: 7                               # every random draw comes from it
    start: 2026-11-23T09:00:00+08:00      # emulated time of t = 0 (ISO, with an offset)
    duration: 1800                        # optional: report range [start, start + duration)
    acd: ../acd.example.toml              # an ACD TOML file (relative to this file),
                                          # or the same tables inline (skills, queues, agents)
    flows: ../flows                       # optional IVR flow folder, for calls with `exten`
    defaults:                             # optional: any call field, for every call
      patience: 90
    agents:
      - id: "1001"                        # an ACD agent, or a new one with skills
        name: 王小明
        skills: {cards: 8}                # only for an agent the ACD does not define
        queues: [support]                 # idem; default: every queue
        answer_delay: 3                   # seconds the phone rings before answering
        wrap_up_s: 10                     # ends after-call work itself (default: queue timer)
        no_answer: 0.3                    # true, false or the chance an offer rings out (RONA)
        ready_after_rona: 60              # back to ready this long after a RONA (default: never)
        talk_time: 120                    # talk of the calls it answers that give none
        login_at: 0                       # seconds from start
    calls:
      - at: 0                             # seconds from start
        caller: "13800138000"
        name: 张伟                         # caller id name (a list: one per repeat, cycling)
        queue: support                    # straight into a queue ...
        exten: "95588"                    # ... or a dialled number, through the IVR
        keys: [[3, "1"], [9, "0"]]        # IVR digits: [seconds after answer, digits]
        patience: 60                      # hangs up after this long in queue (default: never)
        talk: 45                          # talk time once answered, hold excluded
        hold: 10                          # seconds on hold (the agent's phone holds)
        hold_at: 20                       # seconds after answer the hold starts (default: talk/2)
        count: 5                          # optional: 5 such calls ...
        every: 30                         # ... 30 s apart; {n} in caller/name is 1, 2, ...

Any duration of a call or an agent (at, patience, talk, hold, hold_at,
answer_delay, wrap_up_s, talk_time) may be a range `[min, max]`: a whole
number of seconds drawn uniformly from the seed, once per call (or agent) and
field, each from a generator of its own: the same seed gives the same calls,
and adding a call leaves the others' draws alone.

`load_scenario` reports every problem at once, each with the file and line,
as `ctiserver ivr check` does for flows.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ctiserver.acd.config import AcdConfig, AcdConfigError, parse_acd_config
from ctiserver.problems import did_you_mean, read_text_file
from ctiserver.yaml_lines import YamlSyntaxError, line_of, load_yaml


class ScenarioError(ValueError):
    """Every problem found in a scenario file (`.problems`), one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid scenario:\n  " + "\n  ".join(problems))
        self.problems = problems


_TOP_KEYS = ("name", "seed", "start", "duration", "acd", "flows", "defaults", "agents", "calls")
_AGENT_KEYS = (
    "id",
    "name",
    "skills",
    "queues",
    "attributes",
    "answer_delay",
    "wrap_up_s",
    "no_answer",
    "ready_after_rona",
    "talk_time",
    "login_at",
)
_CALL_KEYS = (
    "at",
    "caller",
    "name",
    "queue",
    "exten",
    "keys",
    "patience",
    "talk",
    "hold",
    "hold_at",
    "count",
    "every",
)
_DEFAULTABLE = ("queue", "exten", "keys", "patience", "talk", "hold", "hold_at")
# The agent fields that define an agent the ACD does not know (ignored otherwise: an error).
_ACD_AGENT_FIELDS = ("skills", "queues", "attributes")
_MAX_CALLS = 100_000


@dataclass(frozen=True)
class ScenarioAgent:
    agent_id: str
    phone: str  # the emulated PJSIP endpoint (from the ACD agent's endpoint)
    answer_delay: float
    wrap_up_s: float | None  # None: the queue's wrap-up timer ends it
    no_answer: float  # probability that an offer rings out
    ready_after_rona: float | None
    talk_time: float | None
    login_at: float


@dataclass(frozen=True)
class ScenarioCall:
    number: int  # 1-based, in file order (repeats expanded)
    at: float
    caller: str
    name: str
    queue: str | None
    exten: str | None
    keys: tuple[tuple[float, str], ...]
    patience: float | None
    talk: float | None
    hold: float
    hold_at: float | None
    line: int  # where the call is written, for messages

    @property
    def dialled(self) -> str:
        """The extension the emulated caller dials (a queue call: `queue-NAME`)."""
        return self.exten if self.exten is not None else f"queue-{self.queue}"


@dataclass(frozen=True)
class Scenario:
    source: str
    name: str
    seed: int
    start: float  # epoch seconds of t = 0
    start_text: str
    duration: float | None
    acd: AcdConfig
    flows: Path | None
    agents: tuple[ScenarioAgent, ...]
    calls: tuple[ScenarioCall, ...] = field(repr=False)

    def agent(self, agent_id: str) -> ScenarioAgent:
        for agent in self.agents:
            if agent.agent_id == agent_id:
                return agent
        raise KeyError(agent_id)


# -- entry points --------------------------------------------------------------------------


def load_scenario(path: Path, *, seed: int | None = None) -> Scenario:
    """Read and check a scenario file; `seed` overrides the file's. ScenarioError lists
    every problem."""
    source = str(path)
    text, problem = read_text_file(path)
    if text is None:
        raise ScenarioError([problem or source])
    return parse_scenario(text, source, base=path.parent, seed=seed)


def parse_scenario(text: str, source: str, *, base: Path, seed: int | None = None) -> Scenario:
    """Parse and check the YAML `text` of a scenario; relative paths are from `base`."""
    try:
        data = load_yaml(text, source)
    except YamlSyntaxError as exc:
        raise ScenarioError([str(exc)]) from None
    reader = _Reader(source, base)
    scenario = reader.scenario(data, seed)
    if reader.problems or scenario is None:
        raise ScenarioError(reader.problems)
    return scenario


# -- reading -------------------------------------------------------------------------------


class _Reader:
    """Reads one scenario, collecting problems instead of stopping at the first."""

    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base
        self.problems: list[str] = []
        self.seed = 0

    def problem(self, line: int, message: str) -> None:
        at = f"{self.source}:{line}:" if line else f"{self.source}:"
        self.problems.append(f"{at} {message}")

    def check_keys(self, table: Mapping[Any, Any], known: Sequence[str], what: str) -> None:
        for key in table:
            if key not in known:
                hint = did_you_mean(str(key), known)
                self.problem(line_of(table, key), f"{what}: unknown key {key!r}{hint}")

    def scenario(self, data: Any, seed: int | None) -> Scenario | None:
        if not isinstance(data, Mapping):
            self.problem(line_of(data), "a scenario is a mapping (seed, start, acd, agents, calls)")
            return None
        self.check_keys(data, _TOP_KEYS, "scenario")
        self.seed = self.whole(data, "seed", "scenario", 0) if seed is None else seed
        start, start_text = self.start(data)
        duration = self.seconds(data, "duration", "scenario", None, positive=True)
        acd_data = self.acd_data(data)
        flows = self.flows(data)
        defaults = data.get("defaults", {})
        if not isinstance(defaults, Mapping):
            self.problem(line_of(data, "defaults"), "defaults: a mapping of call fields")
            defaults = {}
        for key in defaults:
            if key not in _DEFAULTABLE:
                hint = did_you_mean(str(key), _DEFAULTABLE)
                self.problem(line_of(defaults, key), f"defaults: {key!r} has no default{hint}")
        agent_tables = self.list_of_mappings(data, "agents")
        call_tables = self.list_of_mappings(data, "calls")
        acd = self.acd(data, acd_data, agent_tables)
        agents = self.agents(agent_tables, acd)
        calls = self.calls(call_tables, defaults, acd)
        if not agent_tables:
            self.problem(line_of(data, "agents"), "agents: at least one agent is needed")
        if not call_tables:
            self.problem(line_of(data, "calls"), "calls: at least one call is needed")
        if any(call.exten is not None for call in calls) and flows is None:
            self.problem(line_of(data), "calls with `exten` go through the IVR: name `flows`")
        if self.problems or acd is None:
            return None
        name = data.get("name", "")
        return Scenario(
            source=self.source,
            name=str(name) if name is not None else "",
            seed=self.seed,
            start=start,
            start_text=start_text,
            duration=duration,
            acd=acd,
            flows=flows,
            agents=tuple(agents),
            calls=tuple(sorted(calls, key=lambda call: (call.at, call.number))),
        )

    # -- top level ---------------------------------------------------------------------

    def start(self, data: Mapping[str, Any]) -> tuple[float, str]:
        raw = data.get("start")
        line = line_of(data, "start")
        if raw is None:
            self.problem(line, "start: the emulated time of t = 0 is needed (ISO, with an offset)")
            return 0.0, ""
        moment: datetime | None = None
        if isinstance(raw, datetime):
            moment = raw
        elif isinstance(raw, str):
            try:
                moment = datetime.fromisoformat(raw)
            except ValueError:
                moment = None
        elif isinstance(raw, date):
            self.problem(line, f"start: {raw} is a day: give a time with an offset")
            return 0.0, ""
        if moment is None:
            self.problem(line, f"start: {raw!r} is not an ISO time (2026-11-23T09:00:00+08:00)")
            return 0.0, ""
        if moment.tzinfo is None:
            self.problem(line, f"start: {raw} has no UTC offset (add +08:00, Z, ...)")
            return 0.0, ""
        return moment.timestamp(), moment.isoformat()

    def acd_data(self, data: Mapping[str, Any]) -> dict[str, Any]:
        raw = data.get("acd")
        line = line_of(data, "acd")
        if raw is None:
            self.problem(line, "acd: an ACD TOML file, or its tables inline (skills, queues)")
            return {}
        if isinstance(raw, str):
            path = self.base / raw
            text, problem = read_text_file(path)
            if text is None:
                self.problem(line, f"acd: {problem}")
                return {}
            try:
                return tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                self.problem(line, f"acd: {path}: invalid TOML: {exc}")
                return {}
        if isinstance(raw, Mapping):
            inline: dict[str, Any] = _plain(raw)
            return inline
        self.problem(line, "acd: a file name or a mapping")
        return {}

    def acd_source(self, data: Mapping[str, Any]) -> str:
        raw = data.get("acd")
        if isinstance(raw, str):
            return str(self.base / raw)
        return f"{self.source}:{line_of(data, 'acd')}: acd"

    def flows(self, data: Mapping[str, Any]) -> Path | None:
        raw = data.get("flows")
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw:
            self.problem(line_of(data, "flows"), "flows: the folder of the IVR flow files")
            return None
        path = self.base / raw
        if not path.is_dir():
            self.problem(line_of(data, "flows"), f"flows: {path} is not a folder")
            return None
        return path

    def list_of_mappings(self, data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        raw = data.get(key, [])
        if not isinstance(raw, list):
            self.problem(line_of(data, key), f"{key}: a list of mappings")
            return []
        items: list[Mapping[str, Any]] = []
        for index, item in enumerate(raw):
            if isinstance(item, Mapping):
                items.append(item)
            else:
                self.problem(line_of(data, key), f"{key}[{index}]: a mapping, not {item!r}")
        return items

    # -- the ACD -------------------------------------------------------------------------

    def acd(
        self,
        data: Mapping[str, Any],
        acd_data: dict[str, Any],
        agent_tables: list[Mapping[str, Any]],
    ) -> AcdConfig | None:
        """The ACD configuration, with the scenario's agents it does not define added."""
        if not acd_data and data.get("acd") is None:
            return None
        known = {str(a.get("id")) for a in acd_data.get("agents", []) if isinstance(a, Mapping)}
        queues = [str(q.get("name")) for q in acd_data.get("queues", []) if isinstance(q, Mapping)]
        added: list[dict[str, Any]] = []
        for table in agent_tables:
            agent_id = table.get("id")
            if not isinstance(agent_id, str | int) or isinstance(agent_id, bool):
                continue  # reported with the agent
            agent_id = str(agent_id)
            given = [key for key in _ACD_AGENT_FIELDS if key in table]
            if agent_id in known:
                for key in given:
                    self.problem(
                        line_of(table, key),
                        f"agent {agent_id}: {key} comes from the ACD, which defines this agent",
                    )
                continue
            if "skills" not in table:
                self.problem(
                    line_of(table),
                    f"agent {agent_id}: not in the ACD: give its skills (and queues)",
                )
                continue
            agent: dict[str, Any] = {
                "id": agent_id,
                "name": str(table.get("name") or f"Agent {agent_id}"),
                "endpoint": f"PJSIP/agent{agent_id}",
                "skills": _plain(table.get("skills")),
                "queues": _plain(table.get("queues", queues)),
            }
            if "attributes" in table:
                agent["attributes"] = _plain(table["attributes"])
            added.append(agent)
            known.add(agent_id)
        merged = dict(acd_data)
        merged["agents"] = [*acd_data.get("agents", []), *added]
        try:
            return parse_acd_config(merged, self.acd_source(data))
        except AcdConfigError as exc:
            self.problems.extend(exc.problems)
            return None

    # -- agents -------------------------------------------------------------------------------

    def agents(self, tables: list[Mapping[str, Any]], acd: AcdConfig | None) -> list[ScenarioAgent]:
        agents: list[ScenarioAgent] = []
        seen: set[str] = set()
        for index, table in enumerate(tables):
            self.check_keys(table, _AGENT_KEYS, f"agents[{index}]")
            raw_id = table.get("id")
            if not isinstance(raw_id, str | int) or isinstance(raw_id, bool) or raw_id == "":
                self.problem(line_of(table), f'agents[{index}]: id: the agent\'s id, e.g. "1001"')
                continue
            agent_id = str(raw_id)
            what = f"agent {agent_id}"
            if agent_id in seen:
                self.problem(line_of(table, "id"), f"{what}: listed twice")
                continue
            seen.add(agent_id)
            rng = self.rng("agent", agent_id)
            answer_delay = self.seconds(table, "answer_delay", what, 1.0, rng=rng)
            wrap_up = self.seconds(table, "wrap_up_s", what, None, rng=rng)
            talk_time = self.seconds(table, "talk_time", what, None, rng=rng, positive=True)
            login_at = self.seconds(table, "login_at", what, 0.0, rng=rng)
            rona = self.seconds(table, "ready_after_rona", what, None, rng=rng)
            no_answer = self.probability(table, "no_answer", what)
            phone = ""
            if acd is not None:
                try:
                    endpoint = acd.agent(agent_id).endpoint
                except KeyError:
                    continue  # reported with the ACD
                tech, _, phone = endpoint.partition("/")
                if tech.upper() != "PJSIP" or not phone:
                    self.problem(
                        line_of(table, "id"),
                        f"{what}: endpoint {endpoint!r}: the emulator only has PJSIP phones",
                    )
            agents.append(
                ScenarioAgent(
                    agent_id=agent_id,
                    phone=phone,
                    answer_delay=answer_delay or 0.0,
                    wrap_up_s=wrap_up,
                    no_answer=no_answer,
                    ready_after_rona=rona,
                    talk_time=talk_time,
                    login_at=login_at or 0.0,
                )
            )
        return agents

    def probability(self, table: Mapping[str, Any], key: str, what: str) -> float:
        raw = table.get(key, False)
        if isinstance(raw, bool):
            return 1.0 if raw else 0.0
        if isinstance(raw, int | float) and 0 <= raw <= 1:
            return float(raw)
        self.problem(line_of(table, key), f"{what}: {key}: true, false or a chance from 0 to 1")
        return 0.0

    # -- calls --------------------------------------------------------------------------------

    def calls(
        self,
        tables: list[Mapping[str, Any]],
        defaults: Mapping[str, Any],
        acd: AcdConfig | None,
    ) -> list[ScenarioCall]:
        queues = {queue.name for queue in acd.queues} if acd is not None else set()
        calls: list[ScenarioCall] = []
        for index, written in enumerate(tables):
            self.check_keys(written, _CALL_KEYS, f"calls[{index}]")
            line = line_of(written)
            table = _LineDefaults(written, defaults)
            what = f"calls[{index}]"
            count = self.whole(written, "count", what, 1)
            every = self.seconds(written, "every", what, 0.0) or 0.0
            if count < 1 or len(calls) + count > _MAX_CALLS:
                self.problem(line_of(written, "count"), f"{what}: count: 1 to {_MAX_CALLS} calls")
                continue
            queue = table.get("queue")
            exten = table.get("exten")
            if "queue" in written and "exten" in written:
                self.problem(line, f"{what}: either queue (no IVR) or exten (the IVR), not both")
                continue
            if "queue" in written or ("exten" not in written and queue is not None):
                exten = None
            else:
                queue = None
            if queue is None and exten is None:
                self.problem(line, f"{what}: give a queue (no IVR) or an exten (through the IVR)")
                continue
            if queue is not None and str(queue) not in queues:
                hint = did_you_mean(str(queue), queues)
                self.problem(table.line("queue"), f"{what}: no queue {queue!r} in the ACD{hint}")
                continue
            if exten is not None and not (isinstance(exten, str | int) and str(exten).isdigit()):
                self.problem(table.line("exten"), f"{what}: exten: the dialled digits, quoted")
                continue
            callers = written.get("caller")
            if not isinstance(callers, str | int) or isinstance(callers, bool):
                self.problem(line, f'{what}: caller: the calling number, quoted ("13800138000")')
                continue
            names = written.get("name", "")
            name_list = [str(n) for n in names] if isinstance(names, list) else [str(names or "")]
            keys = self.keys(table, what)
            for repeat in range(count):
                number = len(calls) + 1
                rng = self.rng("call", str(number))
                at = self.seconds(written, "at", what, None, rng=rng)
                if at is None:
                    if "at" not in written:
                        self.problem(line, f"{what}: at: seconds from start")
                    break
                n = repeat + 1
                calls.append(
                    ScenarioCall(
                        number=number,
                        at=at + repeat * every,
                        caller=_numbered(str(callers), n),
                        name=_numbered(name_list[repeat % len(name_list)], n),
                        queue=str(queue) if queue is not None else None,
                        exten=str(exten) if exten is not None else None,
                        keys=keys,
                        patience=self.seconds(table, "patience", what, None, rng=rng),
                        talk=self.seconds(table, "talk", what, None, rng=rng),
                        hold=self.seconds(table, "hold", what, 0.0, rng=rng) or 0.0,
                        hold_at=self.seconds(table, "hold_at", what, None, rng=rng),
                        line=line,
                    )
                )
        return calls

    def keys(self, table: _LineDefaults, what: str) -> tuple[tuple[float, str], ...]:
        raw = table.get("keys", [])
        keys: list[tuple[float, str]] = []
        shape = f'{what}: keys: a list of [seconds after answer, digits], e.g. [[3, "1"]]'
        if not isinstance(raw, list):
            self.problem(table.line("keys"), shape)
            return ()
        for item in raw:
            if (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], int | float)
                and not isinstance(item[0], bool)
                and item[0] >= 0
                and isinstance(item[1], str | int)
                and str(item[1])
                and all(ch in "0123456789*#" for ch in str(item[1]))
            ):
                keys.append((float(item[0]), str(item[1])))
            else:
                self.problem(table.line("keys"), f"{shape}; not {item!r}")
        return tuple(sorted(keys))

    # -- values -----------------------------------------------------------------------------

    def rng(self, *parts: str) -> random.Random:
        """A generator of its own per call or agent: draws do not depend on each other."""
        return random.Random(":".join((str(self.seed), *parts)))

    def whole(self, table: Mapping[str, Any], key: str, what: str, default: int) -> int:
        raw = table.get(key, default)
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        self.problem(line_of(table, key), f"{what}: {key}: a whole number, not {raw!r}")
        return default

    def seconds(
        self,
        table: Mapping[str, Any] | _LineDefaults,
        key: str,
        what: str,
        default: float | None,
        *,
        rng: random.Random | None = None,
        positive: bool = False,
    ) -> float | None:
        """Seconds: a number, or [min, max] drawn as whole seconds from `rng`."""
        raw = table.get(key)
        line = table.line(key) if isinstance(table, _LineDefaults) else line_of(table, key)
        if raw is None:
            return default
        shape = f"{what}: {key}: seconds (a number >= 0, or [min, max]), not {raw!r}"
        if _is_number(raw):
            value = float(raw)
        elif (
            isinstance(raw, list)
            and len(raw) == 2
            and all(_is_number(v) for v in raw)
            and raw[0] <= raw[1]
            and rng is not None
        ):
            value = float(rng.randint(int(raw[0]), int(raw[1])))
        else:
            self.problem(line, shape)
            return default
        if value < 0 or (positive and value == 0):
            self.problem(line, shape)
            return default
        return value


class _LineDefaults:
    """A call's table with the scenario's defaults under it, lines from where a value is."""

    def __init__(self, table: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
        self.table = table
        self.defaults = defaults

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.table:
            return self.table[key]
        return self.defaults.get(key, default)

    def line(self, key: str) -> int:
        if key in self.table or key not in self.defaults:
            return line_of(self.table, key)
        return line_of(self.defaults, key)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbered(text: str, n: int) -> str:
    """`{n}` is the repeat number (`{n:03d}` zero-padded)."""
    if "{n" not in text:
        return text
    try:
        return text.format(n=n)
    except (ValueError, IndexError, KeyError):
        return text


def _plain(value: Any) -> Any:
    """YAML values as the TOML reader would give them (plain dicts and lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
