"""The protocol parser and encoder: every desktop-to-server example of the doc, every error."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ctiserver.agent_desktop.protocol import (
    MAX_FRAME_BYTES,
    NOTES_MAX,
    Dial,
    ErrorCode,
    GetSnapshot,
    HangUp,
    Hold,
    ListCallbacks,
    Logout,
    NotReady,
    Ping,
    ProtocolError,
    Ready,
    ServerType,
    TargetKind,
    Transfer,
    Unhold,
    WrapUp,
    ack_message,
    encode,
    error_message,
    iso,
    message,
    parse_command,
)

NOW = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
DOC = Path(__file__).resolve().parents[2] / "docs" / "desktop-protocol.md"


def parse(data: object) -> object:
    return parse_command(json.dumps(data, ensure_ascii=False), now=NOW)


def refused(data: object | str) -> ProtocolError:
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(ProtocolError) as caught:
        parse_command(text, now=NOW)
    return caught.value


def test_every_desktop_example_of_the_doc_parses() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Desktop to server", 1)[1].split("## Server to desktop", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith('{"type"')]
    parsed = [parse_command(line, now=NOW) for line in lines]
    kinds = {type(command) for command in parsed}
    assert kinds == {
        Ping, GetSnapshot, Ready, NotReady, Logout, Hold, Unhold, Transfer, HangUp, WrapUp,
        Dial, ListCallbacks,
    }  # fmt: skip
    wrap = next(c for c in parsed if isinstance(c, WrapUp))
    assert wrap.notes == "客户询问账单明细，已解释。"
    assert wrap.follow_up_at == datetime(2026, 3, 3, 2, tzinfo=UTC)
    assert wrap.id == "c10"


def test_commands_carry_their_fields() -> None:
    assert parse({"type": "not_ready", "v": 1, "reason": "lunch"}) == NotReady("lunch")
    transfer = parse(
        {"type": "transfer", "v": 1, "call_id": "1.2", "target": {"kind": "agent", "to": "1002"}}
    )
    assert isinstance(transfer, Transfer)
    assert transfer.target.kind is TargetKind.AGENT and transfer.target.to == "1002"
    assert parse({"type": "dial", "v": 1, "number": "+86 138 0013 8000", "id": "x"}) == Dial(
        "+86 138 0013 8000", id="x"
    )


@pytest.mark.parametrize(
    ("data", "code", "field", "words"),
    [
        ("{not json", ErrorCode.BAD_JSON, None, "not JSON"),
        ("[1, 2]", ErrorCode.BAD_JSON, None, "JSON object"),
        ({"type": "ready"}, ErrorCode.BAD_VERSION, "v", "missing"),
        ({"type": "ready", "v": 2}, ErrorCode.BAD_VERSION, "v", "version 2"),
        ({"type": "ready", "v": True}, ErrorCode.BAD_VERSION, "v", "True"),
        ({"type": "dance", "v": 1}, ErrorCode.UNKNOWN_TYPE, "type", "'dance' is unknown"),
        ({"v": 1}, ErrorCode.UNKNOWN_TYPE, "type", "missing"),
        ({"type": "hold", "v": 1}, ErrorCode.MISSING_FIELD, "call_id", "hold needs call_id"),
        ({"type": "ready", "v": 1, "x": 1}, ErrorCode.UNKNOWN_FIELD, "x", "no field x"),
        ({"type": "hold", "v": 1, "call_id": 5}, ErrorCode.BAD_TYPE, "call_id", "string"),
        ({"type": "ready", "v": 1, "id": 7}, ErrorCode.BAD_TYPE, "id", "id must be"),
        ({"type": "hold", "v": 1, "call_id": ""}, ErrorCode.BAD_VALUE, "call_id", "empty"),
        ({"type": "not_ready", "v": 1, "reason": "nap"}, ErrorCode.BAD_REASON_CODE, "reason",
         "'nap' is not a reason code"),
        ({"type": "dial", "v": 1, "number": "abc"}, ErrorCode.BAD_VALUE, "number", "phone"),
        ({"type": "dial", "v": 1, "number": "1" * 40}, ErrorCode.TOO_LONG, "number", "at most 32"),
        ({"type": "transfer", "v": 1, "call_id": "1", "target": "q"}, ErrorCode.BAD_TYPE,
         "target", "object"),
        ({"type": "transfer", "v": 1, "call_id": "1", "target": {"kind": "moon", "to": "x"}},
         ErrorCode.BAD_VALUE, "target.kind", "queue, agent or number"),
        ({"type": "transfer", "v": 1, "call_id": "1", "target": {"kind": "queue"}},
         ErrorCode.MISSING_FIELD, "target.to", "needs target.to"),
    ],
)  # fmt: skip
def test_malformed_messages_get_precise_errors(
    data: object, code: ErrorCode, field: str | None, words: str
) -> None:
    error = refused(data)
    assert error.code is code
    assert error.field == field
    assert words in error.message


def wrap_up(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "type": "wrap_up",
        "v": 1,
        "id": "w1",
        "call_id": "1.2",
        "disposition": "sale",
        "notes": "",
        "resolved": True,
        "follow_up_at": None,
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        ({"notes": "注" * (NOTES_MAX + 1)}, ErrorCode.TOO_LONG, f"at most {NOTES_MAX}"),
        ({"notes": "a\x00b"}, ErrorCode.BAD_VALUE, "control character"),
        ({"resolved": "yes"}, ErrorCode.BAD_TYPE, "true or false"),
        ({"disposition": "Sale!"}, ErrorCode.BAD_VALUE, "a-z 0-9"),
        ({"follow_up_at": "tomorrow"}, ErrorCode.BAD_VALUE, "not an ISO 8601"),
        ({"follow_up_at": "2026-03-03T10:00:00"}, ErrorCode.BAD_VALUE, "no time zone"),
        ({"follow_up_at": "2026-03-01T10:00:00Z"}, ErrorCode.BAD_VALUE, "in the past"),
        ({"follow_up_at": "2027-03-01T10:00:00Z"}, ErrorCode.BAD_VALUE, "90 days"),
    ],
)
def test_wrap_up_fields_are_checked(
    changes: dict[str, object], code: ErrorCode, words: str
) -> None:
    error = refused(wrap_up(**changes))
    assert error.code is code
    assert words in error.message
    assert (error.re, error.for_type) == ("w1", "wrap_up")


def test_oversize_frame_is_refused_before_parsing() -> None:
    error = refused(json.dumps(wrap_up(notes="x" * MAX_FRAME_BYTES)))
    assert error.code is ErrorCode.TOO_LARGE


def test_outgoing_messages_keep_chinese_and_carry_the_envelope() -> None:
    at = NOW.timestamp()
    text = encode(message(ServerType.AGENT_STATE, at, state="available", name="王小明"))
    assert "王小明" in text
    data = json.loads(text)
    assert data["type"] == "agent_state" and data["v"] == 1
    assert data["at"] == "2026-03-02T09:15:00.000Z"
    error = json.loads(encode(error_message(refused({"type": "x", "v": 1}), at)))
    assert error["code"] == "unknown_type" and error["for"] is None and error["re"] is None
    ack = ack_message(Ready(id="c1"), at, {"ok": 1})
    assert (ack["re"], ack["for"], ack["detail"]) == ("c1", "ready", {"ok": 1})
    assert iso(None) is None


def test_doc_lists_every_error_code() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", DOC.read_text(encoding="utf-8"), re.M))
    assert {code.value for code in ErrorCode} <= documented
