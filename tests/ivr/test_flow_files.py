"""Flow files: the sample flows load, every kind of mistake is reported with file, line and node."""

from __future__ import annotations

from datetime import date, time
from pathlib import Path

import pytest

from ctiserver.cli import main
from ctiserver.ivr.flow import (
    BranchNode,
    CollectNode,
    LookupKey,
    LookupNode,
    MenuNode,
    PlayNode,
    QueueNode,
    SayKind,
    SayVariable,
    TimeWindow,
    Validation,
    ValidationKind,
    VoicemailNode,
    passes_luhn,
)
from ctiserver.ivr.loader import FlowError, load_flow, parse_flow

FLOWS = Path(__file__).resolve().parents[2] / "flows"  # the shipped examples
BANK = FLOWS / "bank_hotline.yaml"
TRAVEL = FLOWS / "travel_line.yaml"

# Line 4 is the first node, so a node's fields start on line 5.
HEADER = "name: test\nstart: greet\nnodes:\n"


def problems(nodes: str, header: str = HEADER) -> list[str]:
    """The problems of a flow made of `header` and the YAML `nodes` (indented by two)."""
    with pytest.raises(FlowError) as caught:
        parse_flow(header + nodes, "t.yaml")
    return caught.value.problems


# -- the sample flows ------------------------------------------------------------------


def test_the_shipped_bank_hotline_loads() -> None:
    flow = load_flow(BANK)
    assert flow.name == "银行信用卡热线 Bank card hotline"
    assert (flow.start, flow.language, flow.timezone) == ("welcome", "zh", "Asia/Shanghai")
    assert flow.numbers == ("95588", "4008205588")
    assert flow.source == str(BANK)
    welcome = flow.nodes["welcome"]
    assert isinstance(welcome, PlayNode)
    assert welcome.label == "欢迎语 Welcome"
    menu = flow.nodes["choose_language"]
    assert isinstance(menu, MenuNode)
    assert menu.options == {"1": "chinese", "2": "english"}
    assert (menu.timeout_s, menu.retries, menu.default) == (4.0, 2, "chinese")
    card = flow.nodes["enter_card"]
    assert isinstance(card, CollectNode)
    assert (card.min_digits, card.max_digits, card.terminator) == (16, 19, "#")
    assert card.validation == Validation(ValidationKind.LUHN)
    lookup = flow.nodes["card_lookup"]
    assert isinstance(lookup, LookupNode)
    assert (lookup.by, lookup.variable, lookup.not_found) == (LookupKey.VARIABLE, "card", "route")
    balance = flow.nodes["say_balance"]
    assert isinstance(balance, PlayNode)
    assert SayVariable(SayKind.NUMBER, "balance") in balance.items
    route = flow.nodes["route"]
    assert isinstance(route, BranchNode)
    assert route.cases[0].condition.tiers == ("vip", "gold")
    assert route.otherwise == "cards_queue_zh"
    vip = flow.nodes["vip_queue"]
    assert isinstance(vip, QueueNode)
    assert (vip.queue, vip.priority, vip.preferred_agent, vip.survey) == (
        "vip",
        "urgency + 5",
        "last_agent",
        "satisfaction",
    )
    english = flow.nodes["cards_queue_en"]
    assert isinstance(english, QueueNode)
    assert (english.skills, english.attributes) == ({"english": 6}, {"language": "en"})


def test_the_shipped_travel_line_loads() -> None:
    flow = load_flow(TRAVEL)
    assert flow.name == "旅游专线 Travel line"
    hours = flow.nodes["hours"]
    assert isinstance(hours, BranchNode)
    holiday, weekdays, weekend = (case.condition for case in hours.cases)
    assert date(2026, 10, 1) in holiday.holidays and date(2027, 2, 6) in holiday.holidays
    assert weekdays.weekdays == {0, 1, 2, 3, 4}
    assert weekdays.times == (TimeWindow(time(9), time(20)),)
    assert weekend.weekdays == {5, 6}
    assert [case.next for case in hours.cases] == ["closed_menu", "main_menu", "main_menu"]
    message = flow.nodes["message"]
    assert isinstance(message, VoicemailNode)
    assert (message.label, message.mailbox, message.queue) == (
        "下班留言 After-hours message",
        "",
        "support",
    )


def test_validation_kinds_accept_what_they_describe() -> None:
    assert passes_luhn("4111111111111111")
    assert not passes_luhn("4111111111111112")
    assert not passes_luhn("41x1")
    assert Validation(ValidationKind.REGEX, pattern=r"62\d+").accepts("6212")
    assert not Validation(ValidationKind.REGEX, pattern=r"62\d+").accepts("5212")
    assert Validation(ValidationKind.LENGTH, lengths=(16, 19)).accepts("1" * 19)
    assert not Validation(ValidationKind.LENGTH, lengths=(16, 19)).accepts("1" * 17)


# -- one test per kind of mistake -------------------------------------------------------


def test_invalid_yaml_names_the_line() -> None:
    assert problems("  greet: {type: hangup\n") == [
        "t.yaml:5: invalid YAML: expected ',' or '}', but got '<stream end>'"
    ]


def test_duplicate_key_is_invalid_yaml() -> None:
    assert problems("  greet: {type: hangup}\n  greet: {type: hangup}\n") == [
        "t.yaml:5: invalid YAML: duplicate key 'greet'"
    ]


def test_unknown_node_type_suggests_the_closest() -> None:
    assert problems("  greet:\n    type: hangpu\n") == [
        "t.yaml:5: node \"greet\": unknown node type 'hangpu' (did you mean 'hangup'?)"
    ]


def test_missing_node_type() -> None:
    assert problems("  greet:\n    prompt: x\n")[0].startswith(
        't.yaml:4: node "greet": missing type; expected one of: play, menu,'
    )


def test_unknown_field_suggests_the_closest() -> None:
    assert problems("  greet:\n    type: hangup\n    promt: bye\n") == [
        "t.yaml:6: node \"greet\": unknown field 'promt' (did you mean 'prompt'?)"
    ]


def test_missing_field() -> None:
    assert problems("  greet:\n    type: transfer\n") == [
        't.yaml:4: node "greet": missing destination (an extension or endpoint)'
    ]


def test_dangling_next_suggests_the_closest_node() -> None:
    nodes = "  greet:\n    type: play\n    play: hi\n    next: byee\n  bye: {type: hangup}\n"
    assert problems(nodes) == [
        "t.yaml:4: node \"greet\": next: no node 'byee' (did you mean 'bye'?)",
        "t.yaml:8: node \"bye\": unreachable: no path from start 'greet'",
    ]


def test_dangling_menu_option() -> None:
    nodes = '  greet:\n    type: menu\n    prompt: m\n    options: {"1": nowhere}\n'
    assert problems(nodes) == ["t.yaml:4: node \"greet\": options.1: no node 'nowhere'"]


def test_missing_prompt() -> None:
    nodes = (
        "  greet:\n    type: collect\n    variable: card\n    next: bye\n  bye: {type: hangup}\n"
    )
    assert problems(nodes) == ['t.yaml:4: node "greet": missing prompt (a sound file name)']


def test_play_without_sounds() -> None:
    nodes = "  greet:\n    type: play\n    next: bye\n  bye: {type: hangup}\n"
    assert problems(nodes)[0].startswith('t.yaml:4: node "greet": missing play (a list of sound')


def test_unreachable_node() -> None:
    nodes = "  greet: {type: hangup}\n  orphan:\n    type: transfer\n    destination: '100'\n"
    assert problems(nodes) == ["t.yaml:5: node \"orphan\": unreachable: no path from start 'greet'"]


def test_loop_without_exit() -> None:
    nodes = (
        "  greet:\n    type: menu\n    prompt: m\n    options: {1: again, 2: bye}\n"
        "  again:\n    type: set\n    variable: tries\n    value: 1\n    next: round\n"
        "  round:\n    type: play\n    play: [loop]\n    next: again\n"
        "  bye: {type: hangup}\n"
    )
    assert problems(nodes) == [
        't.yaml:8: node "again": loop without exit: "again", "round" never reach a hangup, '
        "transfer, queue, callback, voicemail or survey"
    ]


def test_start_missing_and_unknown() -> None:
    assert problems("  greet: {type: hangup}\n", header="name: test\nnodes:\n") == [
        "t.yaml:1: missing start (a string)"
    ]
    assert problems("  greet: {type: hangup}\n", header="name: t\nstart: gret\nnodes:\n") == [
        "t.yaml:2: start: no node 'gret' (did you mean 'greet'?)"
    ]


def test_wrong_value_types() -> None:
    nodes = (
        "  greet:\n    type: menu\n    prompt: [a, b]\n    options: {1: bye}\n"
        "    timeout: soon\n    retries: true\n  bye: {type: hangup}\n"
    )
    assert problems(nodes) == [
        "t.yaml:6: node \"greet\": prompt: expected a sound file name, got ['a', 'b']",
        't.yaml:8: node "greet": timeout: expected seconds (more than 0, at most 600), '
        "got 'soon'",
        't.yaml:9: node "greet": retries: expected a whole number 0-10, got True',
    ]


def test_bad_regex() -> None:
    nodes = (
        "  greet:\n    type: collect\n    prompt: p\n    variable: v\n"
        "    validate: {regex: '62[0-9'}\n    next: bye\n  bye: {type: hangup}\n"
    )
    assert problems(nodes) == [
        "t.yaml:8: node \"greet\": validate: regex '62[0-9' is invalid: "
        "unterminated character set at position 2"
    ]


def test_digit_range_backwards() -> None:
    nodes = (
        "  greet:\n    type: collect\n    prompt: p\n    variable: v\n"
        "    min_digits: 8\n    max_digits: 4\n    next: bye\n  bye: {type: hangup}\n"
    )
    assert problems(nodes) == ['t.yaml:8: node "greet": min_digits: 8 is more than max_digits 4']


def test_unknown_validation_kind() -> None:
    nodes = (
        "  greet:\n    type: collect\n    prompt: p\n    variable: v\n"
        "    validate: lunh\n    next: bye\n  bye: {type: hangup}\n"
    )
    assert problems(nodes) == [
        "t.yaml:8: node \"greet\": validate: unknown validation 'lunh' (did you mean 'luhn'?)"
    ]


def test_branch_conditions_are_checked() -> None:
    nodes = (
        "  greet:\n    type: branch\n    when:\n"
        "      - {weekday: monday, time: '18:00-09:00', next: bye}\n"
        "    else: bye\n  bye: {type: hangup}\n"
    )
    assert problems(nodes) == [
        "t.yaml:7: node \"greet\": time: '18:00-09:00' ends before it starts; "
        "split windows past midnight",
        "t.yaml:7: node \"greet\": weekday: 'monday' is not a day (mon) or days (mon-fri) "
        "(did you mean 'mon'?)",
    ]


def test_every_problem_is_reported_at_once() -> None:
    nodes = "  greet:\n    type: hangpu\n  lost:\n    type: transfer\n"
    assert len(problems(nodes)) == 3  # unknown type, missing destination, unreachable


def test_a_node_with_a_problem_is_not_also_reported_as_a_dead_end() -> None:
    nodes = "  greet:\n    type: play\n    play: [hi]\n    next: bye\n  bye:\n    type: hangpu\n"
    assert problems(nodes) == [
        "t.yaml:9: node \"bye\": unknown node type 'hangpu' (did you mean 'hangup'?)"
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FlowError) as caught:
        load_flow(tmp_path / "nope.yaml")
    assert caught.value.problems == [f"{tmp_path / 'nope.yaml'}: no such file"]


# -- ctiserver ivr check -----------------------------------------------------------------


@pytest.mark.usefixtures("no_server_config")
def test_cli_check_summarises_good_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ivr", "check", str(BANK), str(TRAVEL)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{BANK}: 银行信用卡热线 Bank card hotline: 25 nodes, entry 'welcome' (play); "
        "3 branch, 1 callback, 2 collect, 1 hangup, 2 language, 3 lookup, 3 menu, 2 play, "
        "4 queue, 3 set, 1 survey",
        f"{TRAVEL}: 旅游专线 Travel line: 11 nodes, entry 'welcome' (play); "
        "1 branch, 1 collect, 2 menu, 1 play, 3 queue, 1 survey, 1 transfer, 1 voicemail",
    ]


@pytest.mark.usefixtures("no_server_config")
def test_cli_check_fails_on_any_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEADER + "  greet:\n    type: hangpu\n", encoding="utf-8")
    assert main(["ivr", "check", str(BANK), str(bad)]) == 1
    output = capsys.readouterr()
    assert output.out.startswith(f"{BANK}: 银行信用卡热线 Bank card hotline: 25 nodes")
    assert output.err.splitlines() == [
        f"ctiserver: 1 problem in {bad}:",
        f"  {bad}:5: node \"greet\": unknown node type 'hangpu' (did you mean 'hangup'?)",
    ]
