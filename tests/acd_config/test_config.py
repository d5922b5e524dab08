"""The ACD configuration file: the example loads, every mistake is reported with its place."""

from __future__ import annotations

import tomllib
from datetime import time
from pathlib import Path

import pytest

from ctiserver.acd.config import (
    AcdConfig,
    AcdConfigError,
    dump_acd_toml,
    load_acd_config,
    parse_acd_config,
)
from ctiserver.acd.model import (
    AddSkill,
    AgentConfig,
    AgentPolicy,
    AttributeCondition,
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
    ToVoicemail,
)
from ctiserver.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "acd.example.toml"

# Queue "sales" is queues[0], so the queue a case adds is queues[1].
BASE = """
[skills]
billing = "账单 Billing"
mandarin = "普通话"
english = "English"

[[queues]]
name = "sales"
"""


def parse(text: str) -> AcdConfig:
    return parse_acd_config(tomllib.loads(text), "acd.toml")


def problems_of(text: str) -> list[str]:
    with pytest.raises(AcdConfigError) as caught:
        parse(text)
    return caught.value.problems


def support(body: str) -> str:
    """BASE plus a queue "support" (queues[1]) with `body` after its name."""
    return BASE + '\n[[queues]]\nname = "support"\n' + body


def agent(body: str) -> str:
    return BASE + '\n[[agents]]\nid = "1001"\n' + body


# -- the example and the shape -------------------------------------------------------


def test_example_file_loads() -> None:
    config = load_acd_config(EXAMPLE)
    assert [queue.name for queue in config.queues] == ["billing", "sales", "support", "vip"]
    assert [agent.agent_id for agent in config.agents] == [
        "1001",
        "1002",
        "1003",
        "1004",
        "1005",
        "1006",
    ]
    assert config.grade_priority == {"vip": 10, "gold": 5, "standard": 0}
    assert config.skills["mandarin"] == "普通话 Mandarin"

    support_queue = config.queue("support")
    assert support_queue.title == "客户服务 Card support"
    assert (support_queue.ring_timeout_s, support_queue.wrap_up_s) == (20.0, 30.0)
    assert (support_queue.preferred_agent_s, support_queue.record) == (15.0, True)
    assert support_queue.when_closed == ToVoicemail()
    assert support_queue.when_unstaffed == Overflow("billing")
    assert support_queue.steps[0] == Step(
        duration_s=30.0,
        requirements=(SkillRequirement("cards", 7), SkillRequirement("mandarin", 7)),
        conditions=(AttributeCondition("site", "=", "shanghai"),),
    )
    assert support_queue.steps[1].on_expiry == (RelaxLevel("cards", 2), RaisePriority(2))
    assert support_queue.steps[2].on_expiry == (OfferCallback(),)
    assert support_queue.steps[-1].duration_s is None
    hours = support_queue.hours
    assert hours is not None and hours.timezone == "Asia/Shanghai"
    assert OpeningHours(0, time(8), time(20)) in hours.slots
    assert OpeningHours(6, time(13), time(17)) in hours.slots
    assert len(hours.slots) == 5 + 2 * 2
    assert hours.closed_dates == {"2026-10-01", "2026-10-02", "2026-10-03"}

    billing = config.queue("billing")
    assert billing.policy is AgentPolicy.MOST_SKILLED
    assert billing.steps[0].conditions == (
        AttributeCondition("team", "in", ("billing", "back_office")),
    )
    assert billing.steps[1].requirements is None  # keeps the first step's
    assert billing.steps[1].on_expiry == (RelaxLevel("billing", 3), AddSkill("english", 2))
    assert config.queue("vip").steps[2].on_expiry == (RemoveSkill("vip_care"), AddSkill("cards", 6))
    assert config.queue("sales").steps[-1].on_expiry == (ToVoicemail(),)

    wang = config.agent("1001")
    assert wang == AgentConfig(
        agent_id="1001",
        name="王小明",
        endpoint="PJSIP/agent1001",
        skills={"mandarin": 10, "cards": 8, "billing": 6},
        attributes={"site": "shanghai", "team": "cards", "language": "zh"},
        queues=("support", "billing"),
    )


def test_unknown_queue_or_agent_lookup_is_a_key_error() -> None:
    config = load_acd_config(EXAMPLE)
    with pytest.raises(KeyError, match="unknown queue 'nope'"):
        config.queue("nope")
    with pytest.raises(KeyError, match="unknown agent '9999'"):
        config.agent("9999")


def test_defaults_come_from_queue_config() -> None:
    config = parse('[[queues]]\nname = "plain"\n')
    assert config.queue("plain") == QueueConfig(name="plain", steps=(Step(duration_s=None),))
    assert config.queue("plain").when_closed == CloseCall()
    assert config.agents == () and config.skills == {} and config.grade_priority == {}


def test_queues_and_agents_are_sorted_whatever_the_file_order() -> None:
    config = parse(
        '[[queues]]\nname = "b"\n[[queues]]\nname = "a"\n'
        '[[agents]]\nid = "2"\nendpoint = "PJSIP/2"\n[[agents]]\nid = "1"\nendpoint = "PJSIP/1"\n'
    )
    assert [queue.name for queue in config.queues] == ["a", "b"]
    assert [agent.agent_id for agent in config.agents] == ["1", "2"]


def test_dumped_toml_reads_back_equal() -> None:
    config = load_acd_config(EXAMPLE)
    text = dump_acd_toml(config, "exported\nfor a test")
    assert text.startswith("# exported\n# for a test\n")
    assert parse_acd_config(tomllib.loads(text), "dump") == config
    assert 'name = "王小明"' in text  # written as text, not \u escapes


def test_accepted_spellings() -> None:
    config = parse(
        support(
            'when_closed = "overflow:sales"\n'
            "[queues.hours]\n"
            'timezone = "Europe/London"\n'
            'sat = ["09:00-12:00", "13:00-24:00"]\n'
            'closed = [2026-12-25, "2026-12-26"]\n'
            "[[queues.steps]]\n"
            "duration = 2.5\n"
            "require = { billing = 3 }\n"
            'where = ["team in a, b", "language!=en", "site=hk"]\n'
            'then = ["relax billing", "raise priority", "add skill english", "close"]\n'
        )
    )
    queue = config.queue("support")
    assert queue.when_closed == Overflow("sales")
    assert queue.hours is not None
    assert queue.hours.slots == (
        OpeningHours(5, time(9), time(12)),
        OpeningHours(5, time(13), time.max),
    )
    assert queue.hours.closed_dates == {"2026-12-25", "2026-12-26"}
    [step] = queue.steps
    assert step.duration_s == 2.5
    assert step.conditions == (
        AttributeCondition("team", "in", ("a", "b")),
        AttributeCondition("language", "!=", "en"),
        AttributeCondition("site", "=", "hk"),
    )
    assert step.on_expiry == (
        RelaxLevel("billing", 1),
        RaisePriority(1),
        AddSkill("english", 1),
        CloseCall(),
    )


def test_empty_require_means_no_skill_needed() -> None:
    config = parse(support("[[queues.steps]]\nrequire = {}\n"))
    assert config.queue("support").steps == (Step(duration_s=None, requirements=()),)


# -- every rule, with its message -------------------------------------------------

Q = 'acd.toml: queues[1] "support"'
A = 'acd.toml: agents[0] "1001"'
STEP = "[[queues.steps]]\nduration = 30\nrequire = { billing = 5 }\n"
ENDPOINT = 'endpoint = "PJSIP/agent1001"\n'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # unknown skills
        (
            support("[[queues.steps]]\nrequire = { biling = 5 }\n"),
            f"{Q} steps[0].require.biling: unknown skill 'biling' (did you mean 'billing'?); "
            "declare it under [skills]",
        ),
        (
            support(STEP + 'then = ["add skill french 3"]\n[[queues.steps]]\n'),
            f"{Q} steps[0].then[0]: unknown skill 'french'; declare it under [skills]",
        ),
        (
            agent(ENDPOINT + "skills = { mandarine = 5 }\n"),
            f"{A} skills.mandarine: unknown skill 'mandarine' (did you mean 'mandarin'?); "
            "declare it under [skills]",
        ),
        # levels and proficiencies 1-10
        (
            support("[[queues.steps]]\nrequire = { billing = 11 }\n"),
            f"{Q} steps[0].require.billing: minimum level must be a whole number 1-10, got 11",
        ),
        (
            support("[[queues.steps]]\nrequire = { billing = 0 }\n"),
            f"{Q} steps[0].require.billing: minimum level must be a whole number 1-10, got 0",
        ),
        (
            agent(ENDPOINT + "skills = { billing = 7.5 }\n"),
            f"{A} skills.billing: proficiency must be a whole number 1-10, got 7.5",
        ),
        (
            support(STEP + 'then = ["add skill english 12"]\n[[queues.steps]]\n'),
            f"{Q} steps[0].then[0]: 'add skill english 12': level must be a whole number 1-10, "
            "got 12",
        ),
        (
            support(STEP + 'then = ["relax billing 10"]\n[[queues.steps]]\n'),
            f"{Q} steps[0].then[0]: 'relax billing 10': relax by 1-9, got 10",
        ),
        (
            support(STEP + 'then = ["raise priority 0"]\n[[queues.steps]]\n'),
            f"{Q} steps[0].then[0]: 'raise priority 0': raise priority by 1 or more, got 0",
        ),
        # durations
        (
            support("[[queues.steps]]\nrequire = { billing = 5 }\n[[queues.steps]]\n"),
            f"{Q} steps[0].duration: missing; only the last step may have no duration "
            "(it lasts until the call ends)",
        ),
        (
            support("[[queues.steps]]\nduration = -5\n"),
            f"{Q} steps[0].duration: -5 seconds is negative; give more than 0",
        ),
        (
            support("[[queues.steps]]\nduration = 0\n"),
            f"{Q} steps[0].duration: 0 seconds is zero; give more than 0",
        ),
        (
            support('[[queues.steps]]\nduration = "30s"\n'),
            f"{Q} steps[0].duration: expected a number of seconds, got '30s'",
        ),
        (support("ring_timeout = 0\n"), f"{Q} ring_timeout: 0 seconds is zero; give more than 0"),
        (support("wrap_up = -1\n"), f"{Q} wrap_up: -1 seconds is negative; give 0 or more"),
        (
            support("announce_every = nan\n"),
            f"{Q} announce_every: expected a number of seconds, got nan",
        ),
        (
            support(STEP.replace("duration = 30\n", "") + 'then = ["callback"]\n'),
            f"{Q} steps[0].then: never runs: the step has no duration, so it lasts until the "
            "call ends",
        ),
        # queues: references, overflow, policy, entry actions
        (
            support(STEP + 'then = ["overflow salse"]\n'),
            f"{Q} steps[0].then[0]: unknown queue 'salse' (did you mean 'sales'?)",
        ),
        (
            support(STEP + 'then = ["overflow support"]\n'),
            f"{Q} steps[0].then[0]: 'overflow support': a queue cannot overflow to itself",
        ),
        (
            support('when_unstaffed = "overflow support"\n'),
            f"{Q} when_unstaffed: 'overflow support': a queue cannot overflow to itself",
        ),
        (
            support('when_closed = "overflow nowhere"\n'),
            f"{Q} when_closed: unknown queue 'nowhere'",
        ),
        (
            support('when_closed = "raise priority 2"\n'),
            f"{Q} when_closed: 'raise priority 2' cannot apply to a call that never queued; "
            "use close, voicemail, callback or overflow QUEUE",
        ),
        (
            agent(ENDPOINT + 'queues = ["sales", "suport"]\n'),
            f"{A} queues[1]: unknown queue 'suport'",
        ),
        (
            agent(ENDPOINT + 'queues = ["sales", "sales"]\n'),
            f"{A} queues[1]: queue 'sales' is listed twice",
        ),
        (
            support('policy = "longest-idle"\n'),
            f"{Q} policy: unknown policy 'longest-idle' (did you mean 'longest_idle'?); "
            "one of: longest_idle, most_skilled, least_occupied, round_robin",
        ),
        (
            support('policy = "random"\n'),
            f"{Q} policy: unknown policy 'random'; "
            "one of: longest_idle, most_skilled, least_occupied, round_robin",
        ),
        # actions
        (
            support(STEP + 'then = ["transfer sales"]\n'),
            f"{Q} steps[0].then[0]: unknown action 'transfer sales'; one of: relax SKILL [BY], "
            "add skill SKILL [LEVEL], remove skill SKILL, raise priority [BY], overflow QUEUE, "
            "callback, voicemail, close",
        ),
        (
            support(STEP + 'then = ["voicemial"]\n'),
            f"{Q} steps[0].then[0]: unknown action 'voicemial' (did you mean 'voicemail'?); "
            "one of: relax SKILL [BY], add skill SKILL [LEVEL], remove skill SKILL, "
            "raise priority [BY], overflow QUEUE, callback, voicemail, close",
        ),
        (
            support(STEP + 'then = ["add billing 3"]\n[[queues.steps]]\n'),
            f"{Q} steps[0].then[0]: 'add billing 3' does not read as 'add skill SKILL [LEVEL]'",
        ),
        (
            support(STEP + "then = [3]\n[[queues.steps]]\n"),
            f"{Q} steps[0].then[0]: expected a string, got 3",
        ),
        (
            support(STEP + 'then = ["relax english"]\n[[queues.steps]]\n'),
            f"{Q} steps[0].then[0]: 'relax english': 'english' is not required at this step; "
            "require it in this step or an earlier one",
        ),
        (
            support(STEP + 'then = ["voicemail", "callback"]\n'),
            f"{Q} steps[0].then[1]: 'callback' never runs: the call left the queue at "
            "steps[0].then[0] ('voicemail')",
        ),
        (
            support(STEP + 'then = ["overflow sales"]\n[[queues.steps]]\n'),
            f"{Q} steps[1]: never reached: the call leaves the queue at "
            "steps[0].then[0] ('overflow sales')",
        ),
        # attribute conditions
        (
            support('[[queues.steps]]\nwhere = ["language ~ zh"]\n'),
            f"{Q} steps[0].where[0]: 'language ~ zh': unknown operator '~'; write ATTRIBUTE = "
            "VALUE, ATTRIBUTE != VALUE or ATTRIBUTE in (V1, V2)",
        ),
        (
            support('[[queues.steps]]\nwhere = ["language == zh"]\n'),
            f"{Q} steps[0].where[0]: 'language == zh': unknown operator '=='; write ATTRIBUTE = "
            "VALUE, ATTRIBUTE != VALUE or ATTRIBUTE in (V1, V2)",
        ),
        (
            support('[[queues.steps]]\nwhere = ["language"]\n'),
            f"{Q} steps[0].where[0]: 'language': no operator; write ATTRIBUTE = VALUE, "
            "ATTRIBUTE != VALUE or ATTRIBUTE in (V1, V2)",
        ),
        (
            support('[[queues.steps]]\nwhere = ["language ="]\n'),
            f"{Q} steps[0].where[0]: 'language =': no value after '='; write ATTRIBUTE = VALUE, "
            "ATTRIBUTE != VALUE or ATTRIBUTE in (V1, V2)",
        ),
        (
            support('[[queues.steps]]\nwhere = ["team in (a, )"]\n'),
            f"{Q} steps[0].where[0]: 'team in (a, )': empty value in the list; write ATTRIBUTE = "
            "VALUE, ATTRIBUTE != VALUE or ATTRIBUTE in (V1, V2)",
        ),
        (
            support('[[queues.steps]]\nwhere = ["= zh"]\n'),
            f"{Q} steps[0].where[0]: '= zh' is not a condition; write ATTRIBUTE = VALUE, "
            "ATTRIBUTE != VALUE or ATTRIBUTE in (V1, V2)",
        ),
        # duplicates and names
        (
            BASE + '[[queues]]\nname = "Sales"\n',
            'acd.toml: queues[1] "Sales" name: duplicate queue name: queues[0] "sales" has it '
            "already",
        ),
        (
            BASE + '[[agents]]\nid = "7"\nendpoint = "PJSIP/7"\n'
            '[[agents]]\nid = "7"\nendpoint = "PJSIP/8"\n',
            'acd.toml: agents[1] "7" id: duplicate agent id: agents[0] "7" has it already',
        ),
        (
            BASE.replace('english = "English"', 'Billing = "again"'),
            "acd.toml: skills.Billing: duplicate skill: 'Billing' and 'billing' differ only in "
            "case",
        ),
        (
            BASE + '[[queues]]\nname = "after sales"\n',
            "acd.toml: queues[1] \"after sales\" name: queue name 'after sales' must be one word "
            "of letters, digits, '_', '.' or '-'",
        ),
        (BASE + '[[queues]]\ntitle = "x"\n', "acd.toml: queues[1]: missing name"),
        (
            BASE + "[[agents]]\nid = 1001\n" + ENDPOINT,
            'acd.toml: agents[0].id: expected a string, got 1001 (write it in quotes: id = "1001")',
        ),
        (
            BASE.replace('english = "English"', '"after sales" = "x"'),
            "acd.toml: skills.after sales: skill name 'after sales' must be one word of letters, "
            "digits, '_', '.' or '-'",
        ),
        # opening hours
        (
            support('[queues.hours]\ntimezone = "Asia/Shanghai"\nmon-fri = "09:00-25:00"\n'),
            f"{Q} hours.mon-fri: '09:00-25:00': 25:00 is not a time of day (00:00-23:59, or "
            "24:00 to close at midnight)",
        ),
        (
            support('[queues.hours]\ntimezone = "Asia/Shanghai"\nmon = "9am-6pm"\n'),
            f"{Q} hours.mon: '9am-6pm' is not an opening slot like \"09:00-18:00\"",
        ),
        (
            support('[queues.hours]\ntimezone = "Asia/Shanghai"\nfri = "22:00-06:00"\n'),
            f"{Q} hours.fri: '22:00-06:00' closes before it opens; split hours that run past "
            "midnight: 22:00-24:00, then 00:00-06:00 on the next day",
        ),
        (
            support('[queues.hours]\ntimezone = "Asia/Shangai"\nmon = "09:00-18:00"\n'),
            f"{Q} hours.timezone: unknown time zone 'Asia/Shangai' (did you mean 'Asia/Shanghai'?)",
        ),
        (
            support('[queues.hours]\nmon = "09:00-18:00"\n'),
            f'{Q} hours: missing timezone (e.g. timezone = "Asia/Shanghai")',
        ),
        (
            support(
                '[queues.hours]\ntimezone = "UTC"\nmon = "09:00-18:00"\nclosed = ["2026-02-30"]\n'
            ),
            f"{Q} hours.closed[0]: '2026-02-30' is not a date; use YYYY-MM-DD",
        ),
        (
            support(
                '[queues.hours]\ntimezone = "UTC"\nmon = "09:00-18:00"\nclosed = ["1/10/2026"]\n'
            ),
            f"{Q} hours.closed[0]: '1/10/2026' is not a date; use YYYY-MM-DD",
        ),
        (
            support('[queues.hours]\ntimezone = "UTC"\nfri-mon = "09:00-18:00"\n'),
            f"{Q} hours.fri-mon: day range 'fri-mon' runs backwards; write e.g. mon-fri",
        ),
        (
            support('[queues.hours]\ntimezone = "UTC"\nmonday = "09:00-18:00"\n'),
            f"{Q} hours.monday: unknown key 'monday' (did you mean 'mon'?)",
        ),
        (
            support(
                '[queues.hours]\ntimezone = "UTC"\nmon-fri = "09:00-18:00"\nwed = "17:00-20:00"\n'
            ),
            f"{Q} hours.wed: wed 17:00-20:00 overlaps 09:00-18:00 (from mon-fri)",
        ),
        (
            support('[queues.hours]\ntimezone = "UTC"\n'),
            f"{Q} hours: no opening slots: the queue would never open; add e.g. "
            'mon-fri = "09:00-18:00", or leave hours out (always open)',
        ),
        # unknown keys
        (
            support("ring_timout = 20\n"),
            f"{Q} ring_timout: unknown key 'ring_timout' (did you mean 'ring_timeout'?)",
        ),
        (
            support("[[queues.steps]]\ndurration = 20\nduration = 20\n[[queues.steps]]\n"),
            f"{Q} steps[0].durration: unknown key 'durration' (did you mean 'duration'?)",
        ),
        (
            agent('endpont = "PJSIP/1001"\n' + ENDPOINT),
            f"{A} endpont: unknown key 'endpont' (did you mean 'endpoint'?)",
        ),
        (
            BASE + "[grade]\nvip = 1\n",
            "acd.toml: grade: unknown key 'grade' (did you mean 'grades'?)",
        ),
        (
            BASE + "[limits]\nx = 1\n",
            "acd.toml: limits: unknown key 'limits'; expected one of: grades, skills, queues, "
            "agents",
        ),
        # agents
        (
            agent('name = "王"\n'),
            f'{A}: missing endpoint: the agent\'s phone, e.g. "PJSIP/agent1001"',
        ),
        (
            agent('endpoint = "agent1001"\n'),
            f"{A} endpoint: 'agent1001' is not an Asterisk dial string like PJSIP/agent1001",
        ),
        (
            agent(ENDPOINT) + '[[agents]]\nid = "1002"\n' + ENDPOINT,
            "acd.toml: agents[1] \"1002\" endpoint: 'PJSIP/agent1001' is also the phone of "
            'agents[0] "1001"',
        ),
        (
            agent(ENDPOINT + "attributes = { level = 3 }\n"),
            f"{A} attributes.level: expected a string, got 3",
        ),
        # grades
        (
            BASE + '[grades]\nvip = "high"\n',
            "acd.toml: grades.vip: priority must be a whole number, got 'high'",
        ),
        (
            BASE + "[grades]\nvip = 1.5\n",
            "acd.toml: grades.vip: priority must be a whole number, got 1.5",
        ),
        (
            BASE + "[grades]\nvip = true\n",
            "acd.toml: grades.vip: priority must be a whole number, got True",
        ),
        # types and shapes
        (support('record = "yes"\n'), f"{Q} record: expected true or false, got 'yes'"),
        (support("base_priority = 1.5\n"), f"{Q} base_priority: expected a whole number, got 1.5"),
        (support("title = 5\n"), f"{Q} title: expected a string, got 5"),
        (support('music = ""\n'), f"{Q} music: the music-on-hold class must not be empty"),
        (
            '[queues]\nname = "support"\n',
            "acd.toml: queues: expected an array of tables ([[queues]] blocks), "
            "got {'name': 'support'}",
        ),
        (
            support("steps = []\n"),
            f"{Q} steps: no steps; give at least one, or leave steps out (any agent answers)",
        ),
    ],
)
def test_each_mistake_is_one_clear_problem(text: str, problem: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(problem), problems[0]


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        support(
            "ring_timout = 20\n"
            'policy = "fastest"\n'
            "[[queues.steps]]\n"
            "require = { biling = 5 }\n"
            "[[queues.steps]]\n"
            "duration = -1\n"
        )
        + '[[agents]]\nid = "1001"\nskills = { billing = 11 }\n'
    )
    assert problems == [
        f"{Q} ring_timout: unknown key 'ring_timout' (did you mean 'ring_timeout'?)",
        f"{Q} policy: unknown policy 'fastest'; "
        "one of: longest_idle, most_skilled, least_occupied, round_robin",
        f"{Q} steps[0].duration: missing; only the last step may have no duration "
        "(it lasts until the call ends)",
        f"{Q} steps[0].require.biling: unknown skill 'biling' (did you mean 'billing'?); "
        "declare it under [skills]",
        f"{Q} steps[1].duration: -1 seconds is negative; give more than 0",
        f'{A}: missing endpoint: the agent\'s phone, e.g. "PJSIP/agent1001"',
        f"{A} skills.billing: proficiency must be a whole number 1-10, got 11",
    ]
    assert str(AcdConfigError(problems)).startswith(f"invalid configuration:\n  {problems[0]}")


def test_invalid_toml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "acd.toml"
    path.write_text('[skills]\nbilling = "ok"\nmandarin = \n', encoding="utf-8")
    with pytest.raises(AcdConfigError) as caught:
        load_acd_config(path)
    assert caught.value.problems == [f"{path}: invalid TOML: Invalid value (at line 3, column 12)"]


def test_duplicate_key_in_toml_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "acd.toml"
    path.write_text('[skills]\nbilling = "a"\nbilling = "b"\n', encoding="utf-8")
    with pytest.raises(AcdConfigError, match=r"invalid TOML: .*line 3"):
        load_acd_config(path)


def test_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(AcdConfigError) as caught:
        load_acd_config(tmp_path / "nope.toml")
    assert caught.value.problems == [f"{tmp_path / 'nope.toml'}: no such file"]
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[skills]\nfran = "Français"\n'.encode("latin-1"))
    with pytest.raises(AcdConfigError, match="not UTF-8 text"):
        load_acd_config(latin1)


# -- ctiserver acd check -------------------------------------------------------------


@pytest.mark.usefixtures("no_server_config")
def test_cli_check_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acd", "check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert f"{EXAMPLE}: 7 skills, 4 queues, 6 agents, 3 grades" in out
    assert "support (客户服务 Card support): 4 steps, longest_idle, 5 agents" in out
    assert "sales (贷款销售 Loan sales): 2 steps, least_occupied, 1 agent, always open" in out


@pytest.mark.usefixtures("no_server_config")
def test_cli_check_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        support("ring_timout = 20\n[[queues.steps]]\nduration = -1\n"), encoding="utf-8"
    )
    assert main(["acd", "check", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "ctiserver: 2 problems in the ACD configuration:",
        f"  {path}: queues[1] \"support\" ring_timout: unknown key 'ring_timout' "
        "(did you mean 'ring_timeout'?)",
        f'  {path}: queues[1] "support" steps[0].duration: -1 seconds is negative; '
        "give more than 0",
    ]
