"""The desktop websocket protocol, version 1 (docs/desktop-protocol.md): pure.

Incoming text frames become typed commands or a `ProtocolError` naming what
is wrong (code, field, the message's `id` and type when they could be read);
outgoing messages are built as dicts and encoded here. Times are passed in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

VERSION: Final = 1
MAX_FRAME_BYTES: Final = 64 * 1024
ID_MAX: Final = 64
CALL_ID_MAX: Final = 128
NOTES_MAX: Final = 4000
NAME_MAX: Final = 64
FOLLOW_UP_MAX: Final = timedelta(days=90)
DEFAULT_REASON_CODES: Final = (
    "break",
    "lunch",
    "meeting",
    "training",
    "coaching",
    "admin",
    "personal",
)

_DISPOSITION = re.compile(r"[a-z0-9_.-]{1,40}")
_NUMBER = re.compile(r"[0-9 +\-()*#]{2,32}")


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    BINARY_FRAME = "binary_frame"
    TOO_LARGE = "too_large"
    BAD_VERSION = "bad_version"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    BAD_TYPE = "bad_type"
    TOO_LONG = "too_long"
    BAD_VALUE = "bad_value"
    BAD_REASON_CODE = "bad_reason_code"
    READ_ONLY = "read_only"
    NOT_YOUR_CALL = "not_your_call"
    ILLEGAL_STATE = "illegal_state"
    NOT_AVAILABLE = "not_available"
    # Call controls (ctiserver/acd/call_controls.py): its CallControlError codes, kept.
    NO_CALL = "no_call"
    ALREADY_ON_HOLD = "already_on_hold"
    NOT_ON_HOLD = "not_on_hold"
    HELD_BY_PHONE = "held_by_phone"
    BAD_NUMBER = "bad_number"
    UNKNOWN_TARGET = "unknown_target"
    TARGET_UNAVAILABLE = "target_unavailable"
    IN_PROGRESS = "in_progress"
    UNREACHABLE = "unreachable"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    INTERNAL = "internal"


class CloseCode:
    """Websocket close codes the server uses (4xxx: application-defined)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    IDLE = 4408
    TOO_SLOW = 4429


class ServerType(StrEnum):
    SNAPSHOT = "snapshot"
    PONG = "pong"
    AGENT_STATE = "agent_state"
    OFFER = "offer"
    OFFER_WITHDRAWN = "offer_withdrawn"
    POP = "pop"
    CALL_PROGRESS = "call_progress"
    WRAP_UP = "wrap_up"
    QUEUE_FIGURES = "queue_figures"
    CALLBACKS = "callbacks"
    ACK = "ack"
    ERROR = "error"


class Stage(StrEnum):
    """Call progress stages shown on the desktop."""

    RINGING = "ringing"
    ANSWERED = "answered"
    ON_HOLD = "on_hold"
    RESUMED = "resumed"
    TRANSFERRED = "transferred"
    ENDED = "ended"


class ProtocolError(Exception):
    """An incoming message refused; becomes an `error` message, the connection stays."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        re: str | None = None,
        for_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.re = re
        self.for_type = for_type


# -- commands (desktop to server) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    id: str | None = None


@dataclass(frozen=True, slots=True)
class GetSnapshot:
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Ready:
    id: str | None = None


@dataclass(frozen=True, slots=True)
class NotReady:
    reason: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Logout:
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    call_id: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Unhold:
    call_id: str
    id: str | None = None


class TargetKind(StrEnum):
    QUEUE = "queue"
    AGENT = "agent"
    NUMBER = "number"


@dataclass(frozen=True, slots=True)
class TransferTarget:
    kind: TargetKind
    to: str


@dataclass(frozen=True, slots=True)
class Transfer:
    call_id: str
    target: TransferTarget
    id: str | None = None


@dataclass(frozen=True, slots=True)
class HangUp:
    call_id: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class WrapUp:
    call_id: str
    disposition: str
    notes: str
    resolved: bool
    follow_up_at: datetime | None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Dial:
    number: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class ListCallbacks:
    id: str | None = None


Command = (
    Ping
    | GetSnapshot
    | Ready
    | NotReady
    | Logout
    | Hold
    | Unhold
    | Transfer
    | HangUp
    | WrapUp
    | Dial
    | ListCallbacks
)

# Commands a supervisor's read-only connection may send.
READ_ONLY_COMMANDS: Final = (Ping, GetSnapshot, ListCallbacks)

# Command type -> its `type` string, for acks and errors.
COMMAND_TYPES: Final[Mapping[type, str]] = {
    Ping: "ping",
    GetSnapshot: "get_snapshot",
    Ready: "ready",
    NotReady: "not_ready",
    Logout: "logout",
    Hold: "hold",
    Unhold: "unhold",
    Transfer: "transfer",
    HangUp: "hang_up",
    WrapUp: "wrap_up",
    Dial: "dial",
    ListCallbacks: "list_callbacks",
}


def type_of(command: Command) -> str:
    return COMMAND_TYPES[type(command)]


# -- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    reason_codes: Collection[str]
    now: datetime
    re: str | None
    type: str


_Check = Callable[[Any, str, _Context], Any]


def _fail(ctx: _Context, code: ErrorCode, message: str, field: str | None = None) -> ProtocolError:
    return ProtocolError(code, message, field=field, re=ctx.re, for_type=ctx.type)


def _string(value: Any, field: str, ctx: _Context, limit: int) -> str:
    if not isinstance(value, str):
        raise _fail(ctx, ErrorCode.BAD_TYPE, f"{field} must be a string", field)
    if len(value) > limit:
        raise _fail(
            ctx,
            ErrorCode.TOO_LONG,
            f"{field} is {len(value)} characters long, at most {limit} allowed",
            field,
        )
    return value


def _call_id(value: Any, field: str, ctx: _Context) -> str:
    text = _string(value, field, ctx, CALL_ID_MAX)
    if not text:
        raise _fail(ctx, ErrorCode.BAD_VALUE, f"{field} must not be empty", field)
    return text


def _reason(value: Any, field: str, ctx: _Context) -> str:
    text = _string(value, field, ctx, NAME_MAX)
    if text not in ctx.reason_codes:
        raise _fail(
            ctx,
            ErrorCode.BAD_REASON_CODE,
            f"reason {text!r} is not a reason code: {', '.join(ctx.reason_codes)}",
            field,
        )
    return text


def _number(value: Any, field: str, ctx: _Context) -> str:
    text = _string(value, field, ctx, 32).strip()
    if not _NUMBER.fullmatch(text) or sum(ch.isdigit() for ch in text) < 2:
        raise _fail(
            ctx,
            ErrorCode.BAD_VALUE,
            f"{field} {text!r} is not a phone number (2 to 32 of digits, spaces, + - ( ) * #)",
            field,
        )
    return text


def _disposition(value: Any, field: str, ctx: _Context) -> str:
    text = _string(value, field, ctx, 40)
    if not _DISPOSITION.fullmatch(text):
        raise _fail(
            ctx,
            ErrorCode.BAD_VALUE,
            f"disposition {text!r} must be 1 to 40 of a-z 0-9 _ - .",
            field,
        )
    return text


def _notes(value: Any, field: str, ctx: _Context) -> str:
    text = _string(value, field, ctx, NOTES_MAX)
    # Control characters (NUL above all) have no place in notes and the event log refuses NUL.
    bad = next((ch for ch in text if ord(ch) < 32 and ch not in "\n\r\t"), None)
    if bad is not None:
        raise _fail(ctx, ErrorCode.BAD_VALUE, f"{field} contains control character {bad!r}", field)
    return text


def _boolean(value: Any, field: str, ctx: _Context) -> bool:
    if not isinstance(value, bool):
        raise _fail(ctx, ErrorCode.BAD_TYPE, f"{field} must be true or false", field)
    return value


def _follow_up(value: Any, field: str, ctx: _Context) -> datetime | None:
    if value is None:
        return None
    text = _string(value, field, ctx, 40)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise _fail(
            ctx, ErrorCode.BAD_VALUE, f"{field} {text!r} is not an ISO 8601 time", field
        ) from None
    if when.tzinfo is None:
        raise _fail(ctx, ErrorCode.BAD_VALUE, f"{field} {text!r} has no time zone", field)
    if when <= ctx.now:
        raise _fail(ctx, ErrorCode.BAD_VALUE, f"{field} {text!r} is in the past", field)
    if when > ctx.now + FOLLOW_UP_MAX:
        raise _fail(ctx, ErrorCode.BAD_VALUE, f"{field} {text!r} is more than 90 days ahead", field)
    return when.astimezone(UTC)


def _target(value: Any, field: str, ctx: _Context) -> TransferTarget:
    if not isinstance(value, dict):
        raise _fail(ctx, ErrorCode.BAD_TYPE, f"{field} must be an object with kind and to", field)
    _check_fields(value, ("kind", "to"), ctx, prefix=f"{field}.")
    kind_text = _string(value["kind"], f"{field}.kind", ctx, 16)
    try:
        kind = TargetKind(kind_text)
    except ValueError:
        raise _fail(
            ctx,
            ErrorCode.BAD_VALUE,
            f"{field}.kind {kind_text!r} must be queue, agent or number",
            f"{field}.kind",
        ) from None
    if kind is TargetKind.NUMBER:
        return TransferTarget(kind, _number(value["to"], f"{field}.to", ctx))
    to = _string(value["to"], f"{field}.to", ctx, NAME_MAX).strip()
    if not to:
        raise _fail(ctx, ErrorCode.BAD_VALUE, f"{field}.to must not be empty", f"{field}.to")
    return TransferTarget(kind, to)


_SPECS: Final[Mapping[str, tuple[type, Mapping[str, _Check]]]] = {
    "ping": (Ping, {}),
    "get_snapshot": (GetSnapshot, {}),
    "ready": (Ready, {}),
    "not_ready": (NotReady, {"reason": _reason}),
    "logout": (Logout, {}),
    "hold": (Hold, {"call_id": _call_id}),
    "unhold": (Unhold, {"call_id": _call_id}),
    "transfer": (Transfer, {"call_id": _call_id, "target": _target}),
    "hang_up": (HangUp, {"call_id": _call_id}),
    "wrap_up": (
        WrapUp,
        {
            "call_id": _call_id,
            "disposition": _disposition,
            "notes": _notes,
            "resolved": _boolean,
            "follow_up_at": _follow_up,
        },
    ),
    "dial": (Dial, {"number": _number}),
    "list_callbacks": (ListCallbacks, {}),
}

_ENVELOPE: Final = frozenset({"type", "v", "id"})


def _check_fields(
    data: Mapping[str, Any], required: Collection[str], ctx: _Context, *, prefix: str = ""
) -> None:
    envelope = _ENVELOPE if not prefix else frozenset()
    extra = sorted(set(data) - set(required) - envelope)
    if extra:
        raise _fail(
            ctx,
            ErrorCode.UNKNOWN_FIELD,
            f"{ctx.type} has no field {', '.join(prefix + e for e in extra)}",
            prefix + extra[0],
        )
    for name in required:
        if name not in data:
            raise _fail(
                ctx, ErrorCode.MISSING_FIELD, f"{ctx.type} needs {prefix}{name}", prefix + name
            )


def parse_command(
    text: str, *, reason_codes: Collection[str] = DEFAULT_REASON_CODES, now: datetime
) -> Command:
    """One text frame -> a Command; ProtocolError with a precise message otherwise."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message larger than {MAX_FRAME_BYTES} bytes")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "a message must be a JSON object")
    ident = data.get("id")
    if ident is not None and (not isinstance(ident, str) or len(ident) > ID_MAX):
        raise ProtocolError(
            ErrorCode.BAD_TYPE, f"id must be a string of at most {ID_MAX} characters", field="id"
        )
    kind = data.get("type")
    kind_text = kind if isinstance(kind, str) else None
    if "v" not in data:
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            "v (the protocol version) is missing",
            re=ident,
            for_type=kind_text,
            field="v",
        )
    version = data["v"]
    if version != VERSION or isinstance(version, bool):
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"protocol version {version!r} is not supported; this server speaks v {VERSION}",
            re=ident,
            for_type=kind_text,
            field="v",
        )
    if kind_text is None or kind_text not in _SPECS:
        shown = repr(kind) if kind is not None else "missing"
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"message type {shown} is unknown; known: {', '.join(_SPECS)}",
            re=ident,
            field="type",
        )
    ctx = _Context(reason_codes, now, ident, kind_text)
    cls, checks = _SPECS[kind_text]
    _check_fields(data, tuple(checks), ctx)
    values = {name: check(data[name], name, ctx) for name, check in checks.items()}
    command: Command = cls(**values, id=ident)
    return command


# -- encoding (server to desktop) -------------------------------------------------------


def iso(at: float | datetime | None) -> str | None:
    """An instant as ISO 8601 UTC with milliseconds ('2026-03-02T09:15:04.120Z')."""
    if at is None:
        return None
    when = at if isinstance(at, datetime) else datetime.fromtimestamp(at, UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message(kind: ServerType, at: float, **fields: Any) -> dict[str, Any]:
    """A server message as a dict: the envelope, then `fields`."""
    return {"type": kind.value, "v": VERSION, "at": iso(at), **fields}


def encode(data: Mapping[str, Any]) -> str:
    """JSON text; non-ASCII kept as is (Chinese names stay readable on the wire)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"{type(value).__name__} is not JSON-encodable")


def error_message(error: ProtocolError, at: float) -> dict[str, Any]:
    return message(
        ServerType.ERROR,
        at,
        re=error.re,
        code=error.code.value,
        message=error.message,
        field=error.field,
        **{"for": error.for_type},
    )


def ack_message(
    command: Command, at: float, detail: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return message(
        ServerType.ACK, at, re=command.id, detail=dict(detail or {}), **{"for": type_of(command)}
    )


def refusal(command: Command, code: ErrorCode, text: str) -> ProtocolError:
    """A ProtocolError answering a parsed command (not your call, read-only...)."""
    return ProtocolError(code, text, re=command.id, for_type=type_of(command))
