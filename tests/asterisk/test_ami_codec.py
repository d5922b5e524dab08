"""Unit tests of the AMI wire codec (ctiserver.asterisk.ami.codec)."""

from __future__ import annotations

import pytest

from ctiserver.asterisk.ami.codec import (
    MAX_FRAME_BYTES,
    FrameParser,
    Message,
    encode_action,
    encode_message,
    parse_frame,
)
from ctiserver.sim.transcript import incoming_ami_bytes, scenario

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
PONG = b"Response: Success\r\nActionID: cti-2\r\nPing: Pong\r\nTimestamp: 1795417371.176207\r\n\r\n"
BOOTED = b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 6\r\nStatus: Fully Booted\r\n\r\n"


def test_partial_frames_byte_by_byte() -> None:
    parser = FrameParser()
    stream = BANNER + PONG + BOOTED
    got: list[tuple[int, Message]] = []
    for index in range(len(stream)):
        for message in parser.feed(stream[index : index + 1]):
            got.append((index, message))
    # Each message completes exactly on the last byte of its frame.
    assert [i for i, _ in got] == [len(BANNER + PONG) - 1, len(stream) - 1]
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    assert got[0][1].response == "Success" and got[0][1]["Ping"] == "Pong"
    assert got[1][1].event == "FullyBooted" and got[1][1]["Status"] == "Fully Booted"
    assert parser.malformed == 0


def test_banner_split_across_reads() -> None:
    parser = FrameParser()
    assert parser.feed(b"Asterisk Call") == []
    assert parser.banner is None
    assert parser.feed(b" Manager/11.0.0\r") == []
    assert parser.feed(b"\nResponse: Success\r\nActionID: cti-1\r\n") == []
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    (login,) = parser.feed(b"Message: Authentication accepted\r\n\r\n")
    assert login.headers == {
        "Response": "Success",
        "ActionID": "cti-1",
        "Message": "Authentication accepted",
    }


def test_many_frames_in_one_read_with_a_partial_tail() -> None:
    parser = FrameParser(expect_banner=False)
    messages = parser.feed(PONG + BOOTED * 3 + PONG[:10])
    assert [m.event or m.response for m in messages] == ["Success"] + ["FullyBooted"] * 3
    (rest,) = parser.feed(PONG[10:])
    assert rest == parse_frame(PONG.decode().removesuffix("\r\n\r\n"))


def test_whole_transcript_in_one_read_equals_frame_by_frame() -> None:
    frames = list(incoming_ami_bytes(scenario("13").ami("ami2.jsonl")))
    one = FrameParser().feed(b"".join(frames))
    parser = FrameParser()
    each = [m for data in frames for m in parser.feed(data)]
    assert len(one) == len(frames) - 1 == 81  # minus the banner
    assert [list(m.items()) for m in one] == [list(m.items()) for m in each]


def test_repeated_headers_keep_every_value_in_order() -> None:
    status = parse_frame(
        "Event: Status\r\nPrivilege: Call\r\nChannel: PJSIP/agent1001-0000002c\r\n"
        "Variable: CTI_STATE=(null)\r\nVariable: CTI_SKILL=(null)\r\n"
        "Variable: BRIDGEPEER=PJSIP/pstn-0000002b\r\nActionID: cti-4"
    )
    assert status["Variable"] == "CTI_STATE=(null)"  # the first value
    assert status.values("Variable") == [
        "CTI_STATE=(null)",
        "CTI_SKILL=(null)",
        "BRIDGEPEER=PJSIP/pstn-0000002b",
    ]
    assert status.variables() == {
        "CTI_STATE": "(null)",
        "CTI_SKILL": "(null)",
        "BRIDGEPEER": "PJSIP/pstn-0000002b",
    }
    command = FrameParser(expect_banner=False).feed(
        b"Response: Success\r\nActionID: cti-8\r\nMessage: Command output follows\r\n"
        b"Output: System uptime: 6 seconds\r\nOutput: Last reload: 6 seconds\r\n\r\n"
    )[0]
    assert command.values("Output") == ["System uptime: 6 seconds", "Last reload: 6 seconds"]
    assert [k for k, _ in command.items()] == [
        "Response",
        "ActionID",
        "Message",
        "Output",
        "Output",
    ]


def test_legacy_follows_command_output() -> None:
    (message,) = FrameParser(expect_banner=False).feed(
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: cti-3\r\n"
        b"No such command 'foo'\r\nsecond line\r\n--END COMMAND--\r\n\r\n"
    )
    assert message.response == "Follows"
    assert message.values("Output") == ["No such command 'foo'", "second line"]


def test_get_falls_back_to_a_case_insensitive_match() -> None:
    status = parse_frame("Event: Status\r\nBridgeID: f42d3442\r\nCommandId: 7")
    assert status.get("BridgeId") == "f42d3442"
    assert status.get("bridgeid") == "f42d3442"
    assert status.get("CommandID") == "7"
    assert "BRIDGEID" in status and "Nope" not in status
    assert status.get("Nope", "default") == "default"
    with pytest.raises(KeyError):
        status["Nope"]
    both = parse_frame("Event: X\r\nUniqueid: a\r\nUniqueID: b")
    assert (both.get("Uniqueid"), both.get("UniqueID")) == ("a", "b")  # exact match first


def test_lazy_message_agrees_with_eager_parse() -> None:
    text = "Event: CoreShowChannel\r\nActionID: cti-9\r\nChannel: PJSIP/pstn-00000000\r\nBridgeId: "
    lazy, eager = Message.from_frame(text), parse_frame(text)
    assert (lazy.event, lazy.response, lazy.action_id) == ("CoreShowChannel", None, "cti-9")
    assert (eager.event, eager.response, eager.action_id) == ("CoreShowChannel", None, "cti-9")
    assert lazy == eager and lazy["BridgeId"] == ""


def test_encode_action_and_message() -> None:
    data = encode_action(
        "Originate",
        {"Channel": "PJSIP/agent1001", "Variable": ["A=1", "B=王小明"]},
        action_id="cti-2",
    )
    assert (
        data
        == (
            "Action: Originate\r\nActionID: cti-2\r\nChannel: PJSIP/agent1001\r\n"
            "Variable: A=1\r\nVariable: B=王小明\r\n\r\n"
        ).encode()
    )
    assert encode_action("Ping") == b"Action: Ping\r\n\r\n"
    assert encode_message([("Event", "X"), ("A", "1")]) == b"Event: X\r\nA: 1\r\n\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        {"Channel": "PJSIP/a\r\nAction: Hangup"},
        {"Channel": "PJSIP/a\nX: y"},
        {"Channel": "PJSIP/a\r"},
        {"Bad\r\nKey": "v"},
        {"Variable": ["ok=1", "bad=\n"]},
    ],
)
def test_encode_action_refuses_line_breaks(headers: dict[str, str | list[str]]) -> None:
    with pytest.raises(ValueError, match="line break"):
        encode_action("Redirect", headers, action_id="cti-1")


def test_over_long_frame_is_dropped_and_parsing_resumes() -> None:
    parser = FrameParser(expect_banner=False)
    assert parser.feed(b"Event: Big\r\nData: " + b"x" * MAX_FRAME_BYTES) == []
    assert parser.malformed == 1
    assert parser.last_error is not None and "over" in parser.last_error.reason
    (after,) = parser.feed(b"\r\n\r\n" + BOOTED)
    assert after.event == "FullyBooted"


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    parser = FrameParser(expect_banner=False)
    messages = parser.feed(b"Event: Newchannel\r\nCallerIDName: caf\xe9 \xff\r\n\r\n" + BOOTED)
    assert [m.event for m in messages] == ["Newchannel", "FullyBooted"]
    assert messages[0]["CallerIDName"] == "caf\ufffd \ufffd"
    assert parser.malformed == 0


def test_utf8_split_inside_a_character() -> None:
    data = "Event: Newchannel\r\nCallerIDName: 王小明\r\n\r\n".encode()
    cut = data.index("小".encode()) + 2
    parser = FrameParser(expect_banner=False)
    assert parser.feed(data[:cut]) == []
    (message,) = parser.feed(data[cut:])
    assert message["CallerIDName"] == "王小明"


def test_malformed_frame_is_skipped_and_counted() -> None:
    parser = FrameParser(expect_banner=False)
    messages = parser.feed(b"no header here\r\nA: b\r\n\r\n" + BOOTED + b"junk\r\n\r\n" + PONG)
    assert [m.event or m.response for m in messages] == ["FullyBooted", "Success"]
    assert parser.malformed == 2
    assert parser.last_error is not None
    assert parser.last_error.reason == "line without a header name"


# -- regressions: found while writing the client ----------------------------------


def test_value_with_colon_space_beside_an_empty_header_splits_exactly() -> None:
    # One extra ": " in a value and one `Key:` without a space give the right
    # number of parts, so the fast path accepts a wrong split.
    message = parse_frame("Response: Success\r\nMessage: a: b\r\nEmpty:")
    assert message.headers == {"Response": "Success", "Message": "a: b", "Empty": ""}


def test_legacy_output_line_that_looks_like_a_header_stays_output() -> None:
    message = parse_frame(
        "Response: Follows\r\nPrivilege: Command\r\nUptime: 1 day: 2 hours\r\n--END COMMAND--"
    )
    assert message.values("Output") == ["Uptime: 1 day: 2 hours"]


def test_response_of_an_event_is_the_same_split_or_not() -> None:
    text = "Event: OriginateResponse\r\nActionID: cti-2\r\nResponse: Failure\r\nReason: 0"
    lazy = Message.from_frame(text)
    before = lazy.response
    _ = lazy.headers
    assert before == lazy.response == "Failure"


def test_encode_action_refuses_line_breaks_in_action_and_actionid() -> None:
    with pytest.raises(ValueError):
        encode_action("Ping\r\nAction: Hangup\r\nChannel: PJSIP/x")
    with pytest.raises(ValueError):
        encode_action("Ping", None, action_id="x\r\nAction: Hangup")


def test_stray_empty_lines_between_frames_cost_nothing() -> None:
    parser = FrameParser()
    messages = parser.feed(BANNER + b"\r\n" + BOOTED + b"\r\n" + PONG)
    assert [m.event or m.response for m in messages] == ["FullyBooted", "Success"]


def test_tail_of_an_over_long_frame_is_discarded_not_parsed() -> None:
    parser = FrameParser(expect_banner=False)
    line = b"Output: " + b"x" * 70 + b"\r\n"
    parser.feed(b"Response: Follows\r\nActionID: cti-5\r\n" + line * (MAX_FRAME_BYTES // len(line)))
    assert parser.malformed == 1
    # The rest of the dropped frame, then a real event.
    messages = parser.feed(line * 3 + b"\r\n" + BOOTED)
    assert [m.event for m in messages] == ["FullyBooted"]
    assert parser.malformed == 1


def test_complete_over_long_frame_in_one_read_is_dropped() -> None:
    parser = FrameParser(expect_banner=False)
    line = b"Output: " + b"x" * 70 + b"\r\n"
    big = b"Response: Follows\r\n" + line * (MAX_FRAME_BYTES // len(line) + 1) + b"\r\n"
    messages = parser.feed(big + BOOTED)
    assert [m.event for m in messages] == ["FullyBooted"]
    assert parser.malformed == 1


def test_a_later_malformed_line_keeps_repeated_and_empty_headers() -> None:
    message = Message.from_frame(
        "Event: Status\r\nVariable: A=1\r\njunk line\r\nVariable: B=2\r\nEmpty:"
    )
    assert message.headers == {"Event": "Status", "Variable": "A=1", "Empty": ""}
    assert message.variables() == {"A": "1", "B": "2"}
