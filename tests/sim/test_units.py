"""Unit tests of the emulator's building blocks (no sockets)."""

from __future__ import annotations

import pytest

from ctiserver.sim import sounds
from ctiserver.sim.agi_client import split_command, url_encode
from ctiserver.sim.ami_server import EventFilter, _criteria_filter
from ctiserver.sim.clock import Clock
from ctiserver.sim.conformance import Roles, normalise_agi
from ctiserver.sim.dialplan import (
    Dialplan,
    Step,
    builtin_dialplan,
    callerid_merge,
    callerid_split,
    split_args,
    substitute,
)
from ctiserver.sim.events import Event
from ctiserver.sim.model import Pbx


@pytest.mark.parametrize(
    ("pattern", "exten", "matches"),
    [
        ("_age[n]t.", "agent1001", True),
        ("_agent.", "agent1001", False),  # N is a wildcard, even in lower case (04c)
        ("_agent.", "age5t1", True),
        ("_X.", "5559999", True),
        ("_X.", "5", False),
        ("_1XXX", "1002", True),
        ("_1XXX", "10021", False),
        ("_NXX!", "200", True),
    ],
)
def test_extension_patterns(pattern: str, exten: str, matches: bool) -> None:
    plan = Dialplan()
    plan.add("ctx", pattern, Step("NoOp"))
    assert (plan.find("ctx", exten) is not None) is matches


def test_exact_extension_wins_over_pattern() -> None:
    plan = builtin_dialplan("agi://127.0.0.1:4573")
    assert plan.lookup("from-callers", "100", 3) == Step("AGI", "agi://127.0.0.1:4573/ivr")
    assert plan.lookup("from-callers", "1002", 1) == Step("Dial", "PJSIP/agent${EXTEN},20")
    assert plan.lookup("cti-agent", "nosuchexten", 1) is None


async def test_substitution_and_functions() -> None:
    pbx = Pbx(Clock())
    chan = pbx.new_channel(pbx.endpoint("pstn"), caller=("5551234", "John Doe"), exten="100")
    chan.vars["X"] = "CTI_ACCOUNT"
    chan.vars["CTI_ACCOUNT"] = "1234"
    assert substitute(pbx, chan, "${CALLERID(all)} on ${CHANNEL}") == (
        f'"John Doe" <5551234> on {chan.name}'
    )
    assert substitute(pbx, chan, "${${X}}|${NOPE}|${LEN(${CTI_ACCOUNT})}") == "1234||4"
    assert substitute(pbx, chan, "${HANGUPCAUSE}") == "0"


def test_callerid_parsing() -> None:
    assert callerid_split('"ACME Support" <5550100>') == ("5550100", "ACME Support")
    assert callerid_split("John <123>") == ("123", "John")
    assert callerid_split("5551234") == ("5551234", "")
    assert callerid_merge("5551234", "") == "5551234"
    assert split_args("CTIDialResult,Agent: x,DialStatus: ${DIALSTATUS}") == [
        "CTIDialResult",
        "Agent: x",
        "DialStatus: ${DIALSTATUS}",
    ]


def test_agi_command_splitting_and_url_encoding() -> None:
    assert split_command('VERBOSE "CTI IVR done for account 1234" 1') == [
        "VERBOSE",
        "CTI IVR done for account 1234",
        "1",
    ]
    assert split_command('SAY DIGITS 1234 ""') == ["SAY", "DIGITS", "1234", ""]
    assert url_encode("200 result=1 (yes)\n") == "200%20result%3D1%20(yes)%0A"


def test_sound_lengths() -> None:
    assert sounds.samples("pls-hold-while-try") == 19398
    assert sounds.samples("/var/lib/asterisk/sounds/en/goodbye.gsm") == 7459
    assert sounds.samples("unknown-prompt") == sounds.DEFAULT_SAMPLES
    assert sounds.number_files(42) == ["digits/40", "digits/2"]


def test_event_filters() -> None:
    event = Event("DeviceStateChange", "call,all", [("Device", "PJSIP/a"), ("State", "INUSE")], 1.0)
    other = Event("Newexten", "dialplan,all", [("Channel", "PJSIP/a-00000001")], 1.0)
    exclude = _criteria_filter("action(exclude),name(DeviceStateChange)", "")
    assert not exclude.include and exclude.matches(event) and not exclude.matches(other)
    by_header = _criteria_filter("action(include),header(State),method(exact)", "INUSE")
    assert by_header.matches(event) and not by_header.matches(other)
    legacy = EventFilter(include=False, regex=__import__("re").compile("Event: (VarSet|Newexten)"))
    assert legacy.matches(other) and not legacy.matches(event)


def test_roles_name_channels_per_endpoint() -> None:
    roles = Roles()
    assert roles.channel("PJSIP/pstn-0000002b") == "pstn#1"
    assert roles.channel("PJSIP/agent1001-0000002c") == "agent1001#1"
    assert roles.channel("PJSIP/pstn-0000002d") == "pstn#2"
    assert roles.channel("Local/1002@cti-agent-00000000;1") == "1002@cti-agent#1;1"
    assert roles.channel("Local/1002@cti-agent-00000000;2") == "1002@cti-agent#1;2"
    assert roles.text("Dial to PJSIP/pstn-0000002b ok") == "Dial to pstn#1 ok"


def test_agi_normalisation_keeps_full_plays_exact() -> None:
    lines = ["agi_uniqueid: 1.2", "200 result=0 endpos=19398", "200 result=49 endpos=24000"]
    assert normalise_agi(lines) == [
        "agi_uniqueid: *",
        "200 result=0 endpos=19398",
        "200 result=49 endpos=*",
    ]


def test_clock_speed() -> None:
    clock = Clock(speed=50)
    assert clock.real(10) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        Clock(speed=0)
