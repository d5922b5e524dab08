"""The IVR's pure decisions: priority expressions, branch conditions, the call record."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from ctiserver.ivr.conditions import choose_branch, condition_holds
from ctiserver.ivr.expressions import (
    PRIORITY_LIMIT,
    ExpressionError,
    interpolate,
    parse_priority,
)
from ctiserver.ivr.flow import BranchCase, BranchNode, Condition, TimeWindow
from ctiserver.ivr.loader import FlowError, parse_flow
from ctiserver.ivr.record import IvrOutcome, IvrRecord, PathStep
from ctiserver.ivr.runner import masked

SHANGHAI = ZoneInfo("Asia/Shanghai")
# A Monday, 10:30 in Shanghai.
MONDAY_MORNING = datetime(2026, 11, 23, 10, 30, tzinfo=SHANGHAI)


# -- priority expressions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("5", {}, 5),
        ("urgency + 1", {"urgency": "5"}, 6),
        ("urgency + 1", {}, 1),  # unset counts as 0
        ("urgency + 1", {"urgency": "高"}, 1),  # not a number counts as 0
        ("years * 2 - 1", {"years": "3"}, 5),
        ("max(years, 4) // 2", {"years": "1"}, 2),
        ("min(a, b, 7)", {"a": "9", "b": "8"}, 7),
        ("-(a)", {"a": "3"}, -3),
        ("10 // zero", {"zero": "0"}, 0),  # no division by zero
        ("a * a * a * a", {"a": "99999"}, PRIORITY_LIMIT),
        ("-a * 1000", {"a": "5"}, -PRIORITY_LIMIT),
    ],
)
def test_priority_expressions_compute_with_flow_variables(
    text: str, variables: dict[str, str], expected: int
) -> None:
    assert parse_priority(text).evaluate(variables) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("urgency +", "not an expression"),
        ("__import__('os')", r"only min\(\) and max\(\) may be called"),
        ("a.b", "Attribute is not allowed"),
        ("1.5 + a", "only whole numbers"),
        ("a if b else c", "IfExp is not allowed"),
        ("'text'", "only whole numbers"),
        ("max()", r"max\(\) takes one or more values"),
        ("a / 2", "Div is not allowed"),
    ],
)
def test_priority_expressions_refuse_anything_else(text: str, complaint: str) -> None:
    with pytest.raises(ExpressionError, match=complaint):
        parse_priority(text)


def test_a_bad_priority_expression_is_a_flow_file_problem() -> None:
    text = "name: t\nstart: q\nnodes:\n  q:\n    type: queue\n    queue: support\n"
    with pytest.raises(FlowError) as caught:
        parse_flow(text + '    priority: "urgency +"\n', "t.yaml")
    assert caught.value.problems == [
        "t.yaml:7: node \"q\": priority: 'urgency +' is not an expression (invalid syntax)"
    ]


def test_a_queue_survey_must_name_a_survey_node() -> None:
    text = (
        "name: t\nstart: q\nnodes:\n  q:\n    type: queue\n    queue: support\n"
        "    survey: bye\n  bye:\n    type: hangup\n"
    )
    with pytest.raises(FlowError) as caught:
        parse_flow(text, "t.yaml")
    assert caught.value.problems == ["t.yaml:4: node \"q\": survey: 'bye' is not a survey node"]


def test_interpolation_takes_variables_and_leaves_other_text() -> None:
    variables = {"language": "zh", "name": "王小明"}
    assert interpolate("${language}", variables) == "zh"
    assert interpolate("客户 ${name} / ${missing}!", variables) == "客户 王小明 / !"
    assert interpolate("$language", variables) == "$language"


# -- branch conditions ---------------------------------------------------------------------


def test_every_part_of_a_condition_must_hold() -> None:
    condition = Condition(
        variables={"product": ("cards", "loans")},
        tiers=("vip",),
        times=(TimeWindow(time(9), time(18)),),
        weekdays=frozenset({0, 1, 2, 3, 4}),
    )
    caller = {"product": "cards", "tier": "vip"}
    assert condition_holds(condition, caller, MONDAY_MORNING)
    assert not condition_holds(condition, {**caller, "tier": "standard"}, MONDAY_MORNING)
    assert not condition_holds(condition, {"tier": "vip"}, MONDAY_MORNING)  # unset variable
    assert not condition_holds(condition, caller, MONDAY_MORNING.replace(hour=18))  # end excluded
    saturday = datetime(2026, 11, 28, 10, 30, tzinfo=SHANGHAI)
    assert not condition_holds(condition, caller, saturday)


def test_holidays_and_the_first_case_that_holds_win() -> None:
    node = BranchNode(
        id="hours",
        line=1,
        cases=(
            BranchCase(Condition(holidays=frozenset({date(2026, 11, 23)})), "closed"),
            BranchCase(Condition(times=(TimeWindow(time(9), time(18)),)), "open"),
        ),
        otherwise="after_hours",
    )
    assert choose_branch(node, {}, MONDAY_MORNING) == "closed"
    tuesday = datetime(2026, 11, 24, 10, 30, tzinfo=SHANGHAI)
    assert choose_branch(node, {}, tuesday) == "open"
    assert choose_branch(node, {}, tuesday.replace(hour=20)) == "after_hours"


def test_an_empty_condition_always_holds() -> None:
    assert condition_holds(Condition(), {}, MONDAY_MORNING)


# -- the call record -------------------------------------------------------------------------


def test_card_numbers_are_masked_but_for_the_last_four() -> None:
    assert masked("6222021234567890") == "************7890"
    assert masked("123") == "123"


def test_a_record_keeps_its_first_outcome() -> None:
    record = IvrRecord("1.1", "bank", "abc", "13800138000", "95588", 100.0)
    record.step(PathStep("menu", "menu", 101.0, keys="1", result="1"))
    record.end(IvrOutcome.QUEUED, 102.0, "vip")
    record.end(IvrOutcome.ABANDONED, 150.0, "vip")  # the caller hanging up while queued
    assert record.outcome is IvrOutcome.QUEUED
    assert not record.contained
    data = record.as_dict()
    assert data["outcome"] == "queued"
    assert data["ended_at"] == 102.0
    assert data["path"] == [
        {"node": "menu", "type": "menu", "at": 101.0, "keys": "1", "result": "1"}
    ]
