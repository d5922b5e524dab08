"""The facts the fold extracts from the event log, and the event shape it reads.

Instants are POSIX seconds (floats), as in the ACD. A fact still in progress
has its end as None; figures treat it as of the `as_of` instant they are given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Outcomes of a queue stay (CallOutcome values) plus one of our own.
ANSWERED = "answered"
ABANDONED = "abandoned"
OVERFLOWED = "overflowed"
VOICEMAIL = "voicemail"
CLOSED = "closed"
CALLBACK = "callback"
# The stay was replaced by a stay elsewhere without a call_left (a lost event).
UNKNOWN = "unknown"
# Left by a routing rule: reported on their own, never as abandons.
ROUTED_AWAY = frozenset({OVERFLOWED, VOICEMAIL, CLOSED})


@dataclass(frozen=True, slots=True)
class MetricEvent:
    """One event-log row as the fold reads it (table `events`, or a live append)."""

    type: str
    occurred_at: float
    call_id: str | None = None
    agent_id: str | None = None
    queue_id: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    key: str | None = None  # event_key: the same event twice is recognised by it

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MetricEvent:
        """From a database row or a dict: occurred_at a datetime or POSIX seconds,
        payload a dict or its JSON text, the key as `event_key` or `key`."""
        at = row["occurred_at"]
        occurred = at.timestamp() if isinstance(at, datetime) else float(at)
        payload: Any = row.get("payload") or {}
        if isinstance(payload, str | bytes):
            try:
                payload = json.loads(payload)
            except ValueError:
                payload = {}
        if not isinstance(payload, Mapping):
            payload = {}
        key = row.get("event_key", row.get("key"))
        return cls(
            type=str(row.get("type") or ""),
            occurred_at=occurred,
            call_id=_text(row.get("call_id")),
            agent_id=_text(row.get("agent_id")),
            queue_id=_text(row.get("queue_id")),
            payload=payload,
            key=None if key is None else str(key),
        )

    @classmethod
    def from_event(cls, event: Any) -> MetricEvent:
        """From a `ctiserver.store.events.Event` as appended live (duck-typed: no store import)."""
        return cls(
            type=event.type,
            occurred_at=event.occurred_at.timestamp(),
            call_id=event.call_id,
            agent_id=event.agent_id,
            queue_id=event.queue_id,
            payload=event.payload,
            key=str(event.key),
        )


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass(slots=True, eq=False)
class QueueStay:
    """One call's stay in one queue: from entering it to answer or leaving it."""

    call_id: str
    queue: str
    entered_at: float
    # When the call first entered any queue (the short-abandon rule and the
    # centre-wide wait are measured from it).
    first_entered_at: float
    via: str = "entry"  # "entry", "overflow" or "transfer" (how it reached this queue)
    caller: str = ""
    skills: frozenset[str] = frozenset()
    left_at: float | None = None
    outcome: str | None = None  # None while waiting
    target_queue: str | None = None
    answered_at: float | None = None
    agent_id: str | None = None
    callback_requested_at: float | None = None
    transferred: bool = False  # the answering agent (or one after them) transferred it

    @property
    def waiting(self) -> bool:
        return self.outcome is None

    @property
    def callback(self) -> bool:
        return self.callback_requested_at is not None


@dataclass(slots=True, eq=False)
class Handling:
    """One agent's part of a call: connected -> call end, then their wrap-up."""

    call_id: str
    agent_id: str
    queue: str | None
    answered_at: float
    stay: QueueStay | None = None  # the stay it served; None for outbound calls
    ended_at: float | None = None
    holds: list[tuple[float, float]] = field(default_factory=list)
    held_since: float | None = None
    acw_start: float | None = None
    acw_end: float | None = None
    transferred_in: bool = False  # reached this agent by a transfer to them
    transferred_out: bool = False
    outbound: bool = False
    callback: bool = False

    @property
    def complete(self) -> bool:
        """Call over and wrap-up over: its handle time is final."""
        return self.ended_at is not None and self.acw_end is not None

    @property
    def hold_s(self) -> float:
        return sum(max(0.0, b - a) for a, b in self.holds)

    @property
    def talk_s(self) -> float:
        """Answer -> end, minus hold (METRICS.md)."""
        end = self.ended_at if self.ended_at is not None else self.answered_at
        return max(0.0, end - self.answered_at - self.hold_s)

    @property
    def acw_s(self) -> float:
        if self.acw_start is None or self.acw_end is None:
            return 0.0
        return max(0.0, self.acw_end - self.acw_start)

    @property
    def handle_s(self) -> float:
        return self.talk_s + self.hold_s + self.acw_s

    @property
    def reference_at(self) -> float:
        """The instant that places it in an interval: when its call entered the queue."""
        return self.stay.entered_at if self.stay is not None else self.answered_at


@dataclass(slots=True, eq=False)
class IvrSession:
    call_id: str
    started_at: float
    caller: str = ""
    flow: str = ""
    ended_at: float | None = None
    outcome: str | None = None
    contained: bool = False


@dataclass(slots=True, eq=False)
class StateSegment:
    """An agent in one state (and reason) from `start` to `end` (None: still in it)."""

    agent_id: str
    state: str
    start: float
    reason: str | None = None
    end: float | None = None


@dataclass(frozen=True, slots=True)
class WrapUpReport:
    """The agent's wrap-up of a call (desktop.wrap_up); the latest one counts."""

    call_id: str
    agent_id: str
    at: float
    resolved: bool | None
    disposition: str | None = None
