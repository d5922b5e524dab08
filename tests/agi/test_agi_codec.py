"""FastAGI codec: environment block, reply lines (recorded and documented), command encoding."""

from __future__ import annotations

import pytest

from ctiserver.asterisk.agi.codec import (
    AgiProtocolError,
    AgiResponse,
    encode_command,
    is_usage_end,
    is_usage_start,
    parse_environment,
    parse_response,
    quote_argument,
    usage_response,
)
from ctiserver.sim.transcript import scenario, scenarios

RECORDED_REPLIES = sorted(
    {
        r.data
        for sc in scenarios()
        for r in sc.agi()
        if r.incoming and r.data and not r.data.startswith("agi_") and r.data != "HANGUP\n"
    }
)


@pytest.mark.parametrize("line", RECORDED_REPLIES)
def test_every_recorded_reply_parses(line: str) -> None:
    response = parse_response(line)
    assert response.code in (200, 511)
    assert response.message == "" or response.code == 511


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("200 result=0\n", AgiResponse(200, "0")),
        ("200 result=49 endpos=24000\n", AgiResponse(200, "49", endpos=24000)),
        ("200 result=-1 endpos=24000\n", AgiResponse(200, "-1", endpos=24000)),
        ("200 result=1234\n", AgiResponse(200, "1234")),
        ("200 result= (timeout)\n", AgiResponse(200, "", "timeout")),
        ("200 result=1 (5551234|John Doe|1234)\n", AgiResponse(200, "1", "5551234|John Doe|1234")),
        ("200 result=1 (NOANSWER|0|||)\n", AgiResponse(200, "1", "NOANSWER|0|||")),
        ("200 result=1 ()\n", AgiResponse(200, "1", "")),
        ("200 result=1 (a (b) c)\n", AgiResponse(200, "1", "a (b) c")),
        ("200 result=1 (张三)\n", AgiResponse(200, "1", "张三")),
        # res_agi.c forms no transcript has:
        ("200 result=12 (timeout)\n", AgiResponse(200, "12", "timeout")),
        ("200 result=35 (dtmf) endpos=8000\n", AgiResponse(200, "35", "dtmf", 8000)),
        ("200 result=-1 (writefile)\n", AgiResponse(200, "-1", "writefile")),
        ("200 result=0 Gosub complete\n", AgiResponse(200, "0", message="Gosub complete")),
        ("100 result=0 Trying...\n", AgiResponse(100, message="result=0 Trying...")),
        (
            "200 result=1 (digit) digit=5 endpos=960\n",
            AgiResponse(200, "1", "digit", 960, extra={"digit": "5"}),
        ),
        (
            "510 Invalid or unknown command\n",
            AgiResponse(510, message="Invalid or unknown command"),
        ),
        (
            "511 Command Not Permitted on a dead channel or intercept routine\n",
            AgiResponse(
                511, message="Command Not Permitted on a dead channel or intercept routine"
            ),
        ),
        (
            "520 Invalid command syntax.  Proper usage not available.\n",
            AgiResponse(520, message="Invalid command syntax.  Proper usage not available."),
        ),
    ],
)
def test_parse_response(line: str, expected: AgiResponse) -> None:
    assert parse_response(line) == expected


def test_response_helpers() -> None:
    assert parse_response("200 result= (timeout)").timed_out
    assert parse_response("200 result= (timeout)").result_int is None
    assert parse_response("200 result=-1").result_int == -1
    assert not parse_response("511 x").ok


@pytest.mark.parametrize(
    "line",
    ["HANGUP", "", "hello", "20 result=0", "200 ok", "200 result=1 (unclosed", "abc result=1"],
)
def test_non_agi_lines_are_protocol_errors(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        parse_response(line)


def test_520_usage_block() -> None:
    # No transcript has a 520; shape from res_agi.c agi_handle_command().
    lines = [
        "520-Invalid command syntax.  Proper usage follows:",
        " Usage: STREAM FILE <filename> <escape digits> [sample offset]",
        "",
        "520 End of proper usage.",
    ]
    assert is_usage_start(lines[0]) and not is_usage_end(lines[0])
    assert not any(is_usage_end(line) for line in lines[1:3])
    assert is_usage_end(lines[3])
    response = usage_response(lines)
    assert response.code == 520 and "STREAM FILE <filename>" in response.message
    # Usage text without a final newline glues the end marker to its last line.
    assert is_usage_end("Returns the digits received from the channel.520 End of proper usage.")


def test_recorded_environment_block() -> None:
    records = scenario("06").agi_connections()
    ivr = parse_environment(records[1][0].data)
    after = parse_environment(records[2][0].data)
    assert len(ivr.variables) == 22
    assert ivr.script == "ivr" and after.script == "after-dial"
    assert ivr.channel == "PJSIP/pstn-00000013" and ivr.uniqueid == "1795417536.22"
    assert ivr.callerid == "5551234" and ivr.calleridname == "John Doe"
    assert ivr.get("accountcode") == "" and ivr.priority == "3" and after.priority == "5"
    assert ivr.arguments == {}


def test_environment_script_and_arguments_from_url() -> None:
    env = parse_environment(
        "agi_network: yes\nagi_network_script: ivr?lang=zh&skill=billing\n"
        "agi_request: agi://127.0.0.1:4573/ivr?lang=zh&skill=billing\n"
        "agi_channel: PJSIP/pstn-1\nagi_arg_1: 张三\nagi_arg_2: x\n\n"
    )
    assert env.script == "ivr"
    assert env.arguments == {"lang": "zh", "skill": "billing"}
    assert env.positional_arguments == ["张三", "x"]


@pytest.mark.parametrize(
    "block", ["GET / HTTP/1.1\nHost: x\n\n", "agi_channel PJSIP/x\n", "agi_type: PJSIP\n\n"]
)
def test_garbage_environment(block: str) -> None:
    with pytest.raises(AgiProtocolError):
        parse_environment(block)


def test_encode_command() -> None:
    assert encode_command("ANSWER") == b"ANSWER\n"
    assert encode_command("STREAM FILE", "beep", "") == b'STREAM FILE beep ""\n'
    assert encode_command("VERBOSE", "caller gone", "1") == b'VERBOSE "caller gone" 1\n'
    assert encode_command("SET VARIABLE", "NAME", "张三") == "SET VARIABLE NAME 张三\n".encode()
    assert quote_argument('say "hi"\\') == '"say \\"hi\\"\\\\"'
    with pytest.raises(ValueError):
        encode_command("VERBOSE", "two\nlines")
