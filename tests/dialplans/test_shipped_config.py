"""The Asterisk configuration shipped to operators (dialplans/), checked as a whole.

pjsip.conf, manager.conf and extensions.conf are read with a small reader of
Asterisk's config syntax (below) and checked against each other, against
what ctiserver sends and expects (its AMI actions and events, its contexts,
its login), and against the PBX the transcripts were recorded with
(shared/asterisk/conf, shared/asterisk/scenarios).
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from ctiserver.acd.controller import ControllerSettings
from ctiserver.config import AmiSettings
from ctiserver.sim.ami_server import EVENT_CLASSES
from ctiserver.sim.transcript import transcripts_root

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "dialplans"
SOURCE = ROOT / "ctiserver"
RECORDED = transcripts_root().parent / "conf"

# Endpoints the recorded PBX had only for its own tests (DTMF over SIP INFO,
# SIPp's default From user); the shipped file has no use for them.
LAB_ONLY_ENDPOINTS = {"pstninfo", "sipp"}


# -- a small reader of Asterisk config files ----------------------------------------------


@dataclass
class Section:
    """One `[name]`, `[name](template,...)` or `[name](!)` and its lines."""

    name: str
    templates: tuple[str, ...]
    is_template: bool
    line: int
    options: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        values = self.values(key)
        return values[-1] if values else None

    def values(self, key: str) -> list[str]:
        return [value for name, value in self.options if name == key]


@dataclass
class Config:
    path: Path
    sections: list[Section]

    def named(self, name: str) -> list[Section]:
        return [section for section in self.sections if section.name == name]

    def resolved(self, section: Section) -> Section:
        """The section with its templates' lines first, as Asterisk applies them."""
        options: list[tuple[str, str]] = []
        for template_name in section.templates:
            templates = [s for s in self.named(template_name) if s.is_template]
            assert templates, f"{self.path.name}:{section.line}: no template [{template_name}](!)"
            options += self.resolved(templates[0]).options
        return Section(
            section.name, (), section.is_template, section.line, options + section.options
        )

    def objects(self, type_: str) -> dict[str, Section]:
        """Non-template sections of a pjsip `type`, templates applied, by name."""
        found: dict[str, Section] = {}
        for section in self.sections:
            if section.is_template:
                continue
            full = self.resolved(section)
            if full.get("type") == type_:
                assert section.name not in found, f"two [{section.name}] of type {type_}"
                found[section.name] = full
        return found

    def only(self, name: str) -> Section:
        sections = self.named(name)
        assert len(sections) == 1, f"{self.path.name}: expected one [{name}], got {len(sections)}"
        return self.resolved(sections[0])


_HEADER = re.compile(r"\[([^\]]+)\](?:\(([^)]*)\))?$")


def strip_comment(line: str) -> str:
    """Drop a `;` comment (a `\\;` is a literal semicolon)."""
    match = re.search(r"(?<!\\);", line)
    return (line[: match.start()] if match else line).strip()


def parse_config(path: Path) -> Config:
    sections: list[Section] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = strip_comment(raw)
        if not line:
            continue
        where = f"{path.name}:{number}"
        assert not line.startswith("#"), f"{where}: #include/#exec not supported here"
        header = _HEADER.fullmatch(line)
        if header:
            flags = [part.strip() for part in (header.group(2) or "").split(",") if part.strip()]
            templates = tuple(part for part in flags if part != "!")
            sections.append(Section(header.group(1), templates, "!" in flags, number))
            continue
        key, equals, value = line.partition("=")
        assert equals and key.strip(), f"{where}: not a section, `key = value` or `key => value`"
        assert sections, f"{where}: option outside any section"
        sections[-1].options.append((key.strip(), value.removeprefix(">").strip()))
    return Config(path, sections)


# -- the dialplan on top of it ------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    context: str
    exten: str  # as written: "s", "agent", "_X.", "_age[n]t."
    priority: str
    app: str
    args: str


def parse_dialplan(config: Config) -> dict[str, list[Step]]:
    contexts: dict[str, list[Step]] = {}
    for section in config.sections:
        if section.name in ("general", "globals"):
            continue
        steps = contexts.setdefault(section.name, [])
        exten = ""
        for key, value in section.options:
            assert key in ("exten", "same", "include"), f"[{section.name}]: unexpected {key}"
            if key == "include":
                continue
            parts = value.split(",", 2) if key == "exten" else [exten, *value.split(",", 1)]
            assert len(parts) == 3, f"[{section.name}]: cannot read {key} => {value}"
            exten, priority, call = parts
            app = re.fullmatch(r"(\w+)(?:\((.*)\))?", call.strip())
            assert app, f"[{section.name}]: cannot read application {call!r}"
            steps.append(Step(section.name, exten, priority, app.group(1), app.group(2) or ""))
    return contexts


def split_args(text: str, separators: str = ",") -> list[str]:
    """Split at separators outside (), [] and ${}, as Asterisk splits arguments."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char in separators and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def pattern_regex(exten: str) -> str:
    """An extension as a regex: `_` patterns per Asterisk, anything else literally.

    N, X and Z are wildcards in either case (the `_agent.` pitfall, INDEX.md).
    """
    if not exten.startswith("_"):
        return re.escape(exten)
    out = ""
    rest = exten[1:]
    while rest:
        char, rest = rest[0], rest[1:]
        if char in "Xx":
            out += "[0-9]"
        elif char in "Zz":
            out += "[1-9]"
        elif char in "Nn":
            out += "[2-9]"
        elif char == ".":
            out += ".+"
        elif char == "!":
            out += ".*"
        elif char == "[":
            body, _, rest = rest.partition("]")
            out += f"[{body}]"
        else:
            out += re.escape(char)
    return out


def matches(exten: str, dialled: str) -> bool:
    return re.fullmatch(pattern_regex(exten), dialled) is not None


def sample(exten: str) -> str:
    """One number an extension pattern matches (the first of each wildcard)."""
    if not exten.startswith("_"):
        return exten
    picks = {"X": "0", "x": "0", "Z": "1", "z": "1", "N": "2", "n": "2", ".": "1", "!": ""}
    out = ""
    rest = exten[1:]
    while rest:
        char, rest = rest[0], rest[1:]
        if char == "[":
            body, _, rest = rest.partition("]")
            out += body[0]
        else:
            out += picks.get(char, char)
    assert matches(exten, out), (exten, out)
    return out


@dataclass(frozen=True)
class Target:
    """Where a Goto/GotoIf of `step` sends the channel."""

    step: Step
    context: str
    exten: str


def goto_targets(contexts: dict[str, list[Step]]) -> Iterator[Target]:
    for steps in contexts.values():
        for step in steps:
            if step.app == "Goto":
                labels = [step.args]
            elif step.app == "GotoIf":
                condition, _, branches = step.args.rpartition("?")
                assert condition, f"GotoIf without '?': {step}"
                labels = [label for label in split_args(branches, ":") if label]
            else:
                continue
            for label in labels:
                parts = split_args(label)
                assert 1 <= len(parts) <= 3, f"cannot read Goto label {label!r} in {step}"
                exten = parts[-2] if len(parts) >= 2 else step.exten
                context = parts[0] if len(parts) == 3 else step.context
                yield Target(step, context, exten)


# -- the files -------------------------------------------------------------------------


@cache
def shipped(name: str) -> Config:
    return parse_config(SHIPPED / name)


@cache
def recorded(name: str) -> Config:
    return parse_config(RECORDED / name)


@cache
def dialplan() -> dict[str, list[Step]]:
    return parse_dialplan(shipped("extensions.conf"))


@cache
def recorded_dialplan() -> dict[str, list[Step]]:
    return parse_dialplan(recorded("extensions.conf"))


def endpoints(config: Config) -> dict[str, Section]:
    return config.objects("endpoint")


def phones() -> dict[str, Section]:
    """The shipped endpoints that are phones: everything but the trunk."""
    return {name: ep for name, ep in endpoints(shipped("pjsip.conf")).items() if name != "pstn"}


def csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def in_context(context: str, exten: str) -> bool:
    assert context in dialplan(), f"no context [{context}] in extensions.conf"
    return any(matches(step.exten, exten) for step in dialplan()[context])


# -- the reader itself ------------------------------------------------------------------


def test_reader_reads_templates_and_pjsip_objects(tmp_path: Path) -> None:
    path = tmp_path / "pjsip.conf"
    path.write_text(
        "[base](!)\ntype = endpoint\nallow = ulaw ; a comment\n"
        "[phone](base)\nallow = alaw\ncallerid = Semi\\;colon\n"
        "[phone]\ntype = aor\nmax_contacts = 1\n",
        encoding="utf-8",
    )
    config = parse_config(path)
    phone = endpoints(config)["phone"]
    assert phone.values("allow") == ["ulaw", "alaw"]
    assert phone.get("callerid") == "Semi\\;colon"
    assert config.objects("aor")["phone"].get("max_contacts") == "1"
    assert "base" not in endpoints(config)


def test_pattern_matching_follows_asterisk() -> None:
    # The pitfall met while recording (INDEX.md, scenario 04c): the n of
    # "agent" is a wildcard, so "_agent." does not match agent1001.
    assert not matches("_agent.", "agent1001")
    assert matches("_age[n]t.", "agent1001")
    assert matches("_XXXX", "1001") and not matches("_XXXX", "10010")
    assert matches("_X.", "5551234") and not matches("_X.", "5")
    assert matches("_1XXX", "1001") and not matches("_1XXX", "2001")
    assert matches("s", "s") and not matches("s", "t")


# -- pjsip.conf ------------------------------------------------------------------------


def test_every_endpoint_context_exists_in_the_dialplan() -> None:
    found = endpoints(shipped("pjsip.conf"))
    assert {"agent1001", "agent1002", "supervisor9001", "pstn"} <= set(found)
    for name, endpoint in found.items():
        context = endpoint.get("context")
        assert context in dialplan(), f"endpoint {name}: context {context!r} not in extensions.conf"
    # The trunk's calls start where the IVR is reached; the phones' calls
    # where they can reach colleagues and the trunk, not ctiserver's contexts.
    assert found["pstn"].get("context") == "from-callers"
    assert {endpoint.get("context") for endpoint in phones().values()} == {"from-agents"}


def test_phones_are_named_and_wired_as_ctiserver_dials_them() -> None:
    config = shipped("pjsip.conf")
    auths = config.objects("auth")
    aors = config.objects("aor")
    used_auths: list[str] = []
    for name, phone in phones().items():
        assert re.fullmatch(r"(agent|supervisor)\d{4}", name), f"phone endpoint {name!r}"
        # Its aor has its name: a REGISTER finds the aor by the To user.
        assert csv(phone.get("aors")) == [name]
        aor = aors[name]
        assert aor.get("max_contacts") == "1"
        assert aor.get("remove_existing") == "yes"
        assert int(aor.get("qualify_frequency") or "0") > 0
        # Phones authenticate, each with its own credentials.
        auth_names = csv(phone.get("auth"))
        assert len(auth_names) == 1 and auth_names[0] in auths, f"{name}: auth {auth_names}"
        auth = auths[auth_names[0]]
        assert auth.get("auth_type") == "userpass"
        assert auth.get("username") == name
        assert auth.get("password")
        used_auths += auth_names
    assert len(used_auths) == len(set(used_auths))


def test_agents_match_the_example_acd_config() -> None:
    acd = tomllib.loads((ROOT / "acd.example.toml").read_text(encoding="utf-8"))
    dialled = [agent["endpoint"] for agent in acd["agents"]]
    assert dialled and all(re.fullmatch(r"PJSIP/agent\d{4}", ep) for ep in dialled), dialled
    agents = {name for name in phones() if name.startswith("agent")}
    assert agents and agents <= {ep.removeprefix("PJSIP/") for ep in dialled}


def test_trunk_pstn() -> None:
    config = shipped("pjsip.conf")
    trunk = endpoints(config)["pstn"]
    # The carrier is trusted by address, never by a From user, and does not
    # authenticate to us; we authenticate to it.
    assert trunk.get("auth") is None
    assert csv(trunk.get("identify_by")) == ["ip"]
    outbound = csv(trunk.get("outbound_auth"))
    auths = config.objects("auth")
    assert outbound and all(auths[name].get("username") for name in outbound)
    # Caller id reaches ctiserver: from P-Asserted-Identity or From, never
    # replaced by a configured one.
    assert trunk.get("trust_id_inbound") == "yes"
    assert trunk.get("callerid") is None
    # Outbound calls (PJSIP/<number>@pstn) need a contact.
    aors = config.objects("aor")
    assert csv(trunk.get("aors")) == ["pstn"]
    assert (aors["pstn"].get("contact") or "").startswith("sip:")
    registrations = config.objects("registration")
    assert registrations
    for name, registration in registrations.items():
        assert registration.get("endpoint") == "pstn", name
        assert set(csv(registration.get("outbound_auth"))) <= set(auths), name
        assert (registration.get("server_uri") or "").startswith("sip:"), name
        assert (registration.get("client_uri") or "").startswith("sip:"), name
    identifies = [i for i in config.objects("identify").values() if i.get("endpoint") == "pstn"]
    assert identifies and all(i.values("match") for i in identifies)
    for identify in identifies:
        for match in identify.values("match"):
            for address in csv(match):
                ipaddress.ip_network(address, strict=False)  # an address or a network


def test_trunk_is_matched_by_ip_before_username() -> None:
    config = shipped("pjsip.conf")
    (global_,) = config.objects("global").values()
    order = csv(global_.get("endpoint_identifier_order"))
    assert order.index("ip") < order.index("username")
    assert set(order) <= {"ip", "username", "auth_username", "anonymous", "header", "request_uri"}
    # Every endpoint's transport exists.
    transports = config.objects("transport")
    assert {endpoint.get("transport") for endpoint in endpoints(config).values()} <= set(transports)


def test_lab_header_identify_is_kept_as_commented_alternative() -> None:
    (lab,) = [
        identify
        for identify in recorded("pjsip.conf").objects("identify").values()
        if identify.get("endpoint") == "pstn"
    ]
    wanted = f"match_header = {lab.get('match_header')}"
    assert wanted == "match_header = X-CTI-Trunk: pstn"
    commented = [
        line.lstrip("; \t").strip()
        for line in (SHIPPED / "pjsip.conf").read_text(encoding="utf-8").splitlines()
        if line.startswith(";")
    ]
    assert wanted in commented


def test_media_settings_equal_the_recorded_pbx() -> None:
    ours = endpoints(shipped("pjsip.conf"))
    theirs = endpoints(recorded("pjsip.conf"))
    assert set(theirs) - LAB_ONLY_ENDPOINTS <= set(ours)
    for name in ("agent1001", "supervisor9001", "pstn"):
        for option in ("dtmf_mode", "direct_media", "disallow"):
            assert ours[name].get(option) == theirs[name].get(option), (name, option)
        ours_allowed = [codec for value in ours[name].values("allow") for codec in csv(value)]
        theirs_allowed = [codec for value in theirs[name].values("allow") for codec in csv(value)]
        assert ours_allowed == theirs_allowed == ["ulaw", "alaw"], name
    # The agent template itself, not only what agent1001 inherits.
    (template,) = [s for s in shipped("pjsip.conf").named("agent-endpoint") if s.is_template]
    assert template.get("dtmf_mode") == "rfc4733"
    assert template.get("direct_media") == "no"


# res_pjsip option names in Asterisk 22 (res_pjsip config docs, the identify
# and outbound registration modules), per object type.
PJSIP_OPTIONS = {
    "global": {"type", "endpoint_identifier_order", "user_agent"},
    "transport": {"type", "protocol", "bind"},
    "endpoint": {
        "type",
        "transport",
        "context",
        "disallow",
        "allow",
        "dtmf_mode",
        "direct_media",
        "rtp_symmetric",
        "force_rport",
        "rewrite_contact",
        "auth",
        "outbound_auth",
        "aors",
        "callerid",
        "trust_id_inbound",
        "identify_by",
        "media_address",
        "bind_rtp_to_media_address",
    },
    "auth": {"type", "auth_type", "username", "password", "realm"},
    "aor": {"type", "contact", "max_contacts", "remove_existing", "qualify_frequency"},
    "registration": {
        "type",
        "transport",
        "outbound_auth",
        "server_uri",
        "client_uri",
        "contact_user",
        "expiration",
        "retry_interval",
        "forbidden_retry_interval",
        "line",
        "endpoint",
    },
    "identify": {"type", "endpoint", "match", "match_header"},
}


@pytest.mark.parametrize("config", ["shipped", "recorded"])
def test_pjsip_option_names(config: str) -> None:
    conf = shipped("pjsip.conf") if config == "shipped" else recorded("pjsip.conf")
    for section in conf.sections:
        if section.is_template:
            continue
        full = conf.resolved(section)
        type_ = full.get("type") or ""
        assert type_ in PJSIP_OPTIONS, f"[{section.name}]: type {type_!r}"
        unknown = {key for key, _ in full.options} - PJSIP_OPTIONS[type_]
        assert not unknown, f"[{section.name}] ({type_}): unknown options {unknown}"


# -- manager.conf ----------------------------------------------------------------------


def test_ctiserver_logs_in_with_its_defaults() -> None:
    ami = AmiSettings()
    toml = tomllib.loads((ROOT / "ctiserver.toml").read_text(encoding="utf-8"))["ami"]
    assert (toml["username"], toml["secret"], toml["port"]) == (ami.username, ami.secret, ami.port)
    for config in (shipped("manager.conf"), recorded("manager.conf")):
        general = config.only("general")
        assert general.get("enabled") == "yes"
        assert general.get("port") == str(ami.port) == "5038"
        assert general.get("bindaddr") == ami.host
        assert general.get("timestampevents") == "yes"
        assert general.get("allowmultiplelogin") == "yes"
        user = config.only(ami.username)
        assert user.get("secret") == ami.secret
        assert user.get("deny") == "0.0.0.0/0.0.0.0"
        permitted = ipaddress.ip_network(user.get("permit") or "", strict=False)
        assert ipaddress.ip_address(ami.host) in permitted


# The classes that let a user run each AMI action in Asterisk 22: any one of
# them suffices, none are needed for an empty set. From main/manager.c
# (ast_manager_register_xml_core), main/features.c (Bridge),
# main/manager_bridges.c (BridgeList/BridgeInfo), apps/app_mixmonitor.c.
ACTION_CLASSES: dict[str, frozenset[str]] = {
    "Login": frozenset(),
    "Challenge": frozenset(),
    "Logoff": frozenset(),
    "Ping": frozenset(),
    "Events": frozenset(),
    "BridgeList": frozenset(),
    "BridgeInfo": frozenset(),
    "Originate": frozenset({"originate"}),
    "Bridge": frozenset({"call"}),
    "Setvar": frozenset({"call"}),
    "Redirect": frozenset({"call"}),
    "Atxfer": frozenset({"call"}),
    "BlindTransfer": frozenset({"call"}),
    "Getvar": frozenset({"call", "reporting"}),
    "Status": frozenset({"system", "call", "reporting"}),
    "Hangup": frozenset({"system", "call"}),
    "StopMixMonitor": frozenset({"system", "call"}),
    "MixMonitor": frozenset({"system"}),
    "Filter": frozenset({"system"}),
    "CoreShowChannels": frozenset({"system", "reporting"}),
    "Command": frozenset({"command"}),
}
# Deliberately not granted (see manager.conf): nothing in ctiserver calls it.
NOT_GRANTED = {"Command"}
# What the dialplan and the transcripts are built for, beyond today's code.
PLANNED_ACTIONS = {"Redirect", "BlindTransfer", "Atxfer", "Getvar", "Status", "StopMixMonitor"}
# manager.conf read=/write= take the event classes and the words "all" and "none".
MANAGER_CLASSES = EVENT_CLASSES | {"all", "none"}


def ctiserver_sources() -> Iterator[tuple[Path, str]]:
    """ctiserver's own code: not the Asterisk emulator (ctiserver/sim)."""
    for path in sorted(SOURCE.rglob("*.py")):
        if "sim" not in path.relative_to(SOURCE).parts:
            yield path, path.read_text(encoding="utf-8")


def actions_ctiserver_sends() -> set[str]:
    sends = re.compile(r'(?:\.action|_send\(\s*conn,|encode_action)\(?\s*"(\w+)"')
    return {name for _, text in ctiserver_sources() for name in sends.findall(text)}


def user_classes(kind: str) -> set[str]:
    return set(csv(shipped("manager.conf").only(AmiSettings().username).get(kind)))


def test_write_classes_cover_every_action_ctiserver_sends() -> None:
    sent = actions_ctiserver_sends()
    core = {"Login", "Challenge", "Logoff", "Ping", "Originate", "Bridge", "Setvar", "Hangup"}
    assert core | {"MixMonitor", "CoreShowChannels", "Filter"} <= sent, sent
    unknown = sent - set(ACTION_CLASSES)
    assert not unknown, f"add the AMI class of {unknown} here and check manager.conf write="
    write = user_classes("write")
    assert write <= MANAGER_CLASSES
    for action in sorted((sent | PLANNED_ACTIONS) - NOT_GRANTED):
        needed = ACTION_CLASSES[action]
        assert not needed or needed & write, f"{action} needs one of {sorted(needed)}"
    for action in NOT_GRANTED:
        assert not ACTION_CLASSES[action] & write
    # Not granted because nothing calls it: AmiClient.command() stays unused.
    for path, text in ctiserver_sources():
        assert not re.search(r"\b(?:ami|client)\.command\(", text), path


def recorded_event_classes() -> dict[str, set[str]]:
    """Event name -> its AMI class, as the recorded Asterisk 22 labelled it."""
    found: dict[str, set[str]] = {}
    privilege = re.compile(r"^Event: (\w+)\r\nPrivilege: ([\w,]+)\r\n")
    for path in sorted(transcripts_root().glob("*/ami*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            match = privilege.match(json.loads(line)["data"])
            if match:
                classes = set(csv(match.group(2))) - {"all"}
                found.setdefault(match.group(1), set()).update(classes)
    return found


def test_read_classes_cover_every_event_ctiserver_uses() -> None:
    subscribed = {
        name
        for _, text in ctiserver_sources()
        for name in re.findall(r'subscribe\(\s*"(\w+)"', text)
    }
    assert {"Newchannel", "Hangup"} <= subscribed, subscribed
    # The client waits for OriginateResponse; [cti-agent] raises a UserEvent.
    used = subscribed | {"OriginateResponse"}
    if any(step.app == "UserEvent" for steps in dialplan().values() for step in steps):
        used.add("UserEvent")
    classes = recorded_event_classes()
    read = user_classes("read")
    assert read <= MANAGER_CLASSES
    for event in sorted(used):
        assert event in classes, f"{event} never seen in the transcripts: class unknown"
        assert classes[event] <= read, f"{event} is class {classes[event]}, read = {read}"
    # The heavy classes stay out (scenario 14: AGIExec*, VarSet, DTMF*).
    assert not read & {"dialplan", "agi", "dtmf", "all"}


# -- extensions.conf -------------------------------------------------------------------


def test_every_goto_target_exists() -> None:
    targets = list(goto_targets(dialplan()))
    assert len(targets) >= 5
    for target in targets:
        assert target.context in dialplan(), f"{target.step}: no context [{target.context}]"
        exten = target.exten.replace("${EXTEN}", sample(target.step.exten))
        if "${" in exten:
            continue  # chosen at run time (CTI_TRANSFER): the context is what can be checked
        assert in_context(target.context, exten), f"{target.step}: no {exten} in [{target.context}]"


def test_every_dial_target_is_a_shipped_endpoint() -> None:
    names = set(endpoints(shipped("pjsip.conf")))
    dials = [step for steps in dialplan().values() for step in steps if step.app == "Dial"]
    assert dials
    for step in dials:
        for device in split_args(split_args(step.args)[0], "&"):
            tech, _, resource = device.partition("/")
            assert tech == "PJSIP", step
            number, _, endpoint = resource.partition("@")
            if endpoint:  # PJSIP/<number>@<endpoint>: the endpoint must exist
                assert endpoint in names, step
                continue
            # PJSIP/<endpoint>, the name maybe built from ${EXTEN}.
            wanted = re.escape(number).replace(re.escape("${EXTEN}"), pattern_regex(step.exten))
            assert any(re.fullmatch(wanted, name) for name in names), f"{step}: no endpoint"


def test_contexts_ctiserver_uses_exist() -> None:
    settings = ControllerSettings()
    # Agent legs are originated into the hold context at hold_exten.
    assert in_context(settings.hold_context, settings.hold_exten)
    # Callbacks / click-to-dial: the customer's number in the outbound context.
    assert in_context(settings.outbound_context, "5551234")
    # Redirect / BlindTransfer of a caller to an agent: Exten = endpoint name.
    for name in phones():
        if name.startswith("agent"):
            assert in_context("cti-agent", name), name
            assert in_context("cti-agent", name.removeprefix("agent"))  # Atxfer digits alias
            assert in_context("cti-transfer-agent", name), name  # call_controls transfer
    # Agent call controls (ctiserver/acd/call_controls.py): hold and transfers.
    for context in ("cti-held", "cti-agent-held", "cti-transfer-queue"):
        assert in_context(context, "s"), context
    assert in_context("cti-transfer", "8613800138000")


def test_recorded_cti_contexts_are_kept() -> None:
    ours = dialplan()
    theirs = recorded_dialplan()
    for context in ("from-callers", "cti-agent", "cti-hold", "cti-outbound"):
        assert context in theirs and context in ours, context
        # What the recorded calls reached there is still reached.
        for step in theirs[context]:
            if step.priority == "1" and context != "from-callers":
                assert in_context(context, sample(step.exten)), (context, step.exten)
    # The recorded inbound calls dialled 100; any DNIS enters the IVR now.
    assert in_context("from-callers", "100")
