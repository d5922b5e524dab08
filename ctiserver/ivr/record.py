"""The IVR part of a call: the path through the flow and how it ended.

The executor appends one `PathStep` per node it runs; the record goes to the
event log (`ivr.started`, `ivr.ended`, see service.py), becomes part of the
agent's screen-pop, and its outcome feeds IVR containment (METRICS.md: calls
that ended in the IVR with a self-service outcome / calls that entered it).
Pure data: times are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class IvrOutcome(StrEnum):
    SELF_SERVED = "self_served"  # reached a designed end (hangup, survey) in the flow
    QUEUED = "queued"  # handed to an ACD queue
    CALLBACK = "callback"  # left a number to be called back
    VOICEMAIL = "voicemail"
    TRANSFERRED = "transferred"
    ABANDONED = "abandoned"  # the caller hung up in the IVR
    NO_INPUT = "no_input"  # a menu or input ran out of tries with nowhere to go
    FAILED = "failed"  # ctiserver could not go on (a bug, a missing queue)


# Outcomes that count as contained in the IVR.
CONTAINED = frozenset({IvrOutcome.SELF_SERVED})


@dataclass
class PathStep:
    """One node the call went through."""

    node: str
    type: str
    at: float
    label: str = ""
    keys: str = ""  # keys pressed at a menu
    input: str = ""  # digits collected (masked where the node says so)
    result: str = ""  # what happened: the option taken, "invalid", "found", "timeout"...
    detail: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"node": self.node, "type": self.type, "at": round(self.at, 3)}
        for name in ("label", "keys", "input", "result"):
            if value := getattr(self, name):
                data[name] = value
        if self.detail:
            data["detail"] = dict(self.detail)
        return data


@dataclass
class IvrRecord:
    """A call's stay in one flow."""

    call_id: str
    flow: str  # the flow's id (its file name without .yaml)
    version: str  # which version of the file the call ran on
    caller: str
    dnis: str
    started_at: float
    path: list[PathStep] = field(default_factory=list)
    outcome: IvrOutcome | None = None
    ended_at: float | None = None
    ended_at_node: str = ""
    customer: dict[str, str] = field(default_factory=dict)  # what a lookup found
    language: str = ""
    variables: dict[str, str] = field(default_factory=dict)  # at the end, secrets masked

    def step(self, step: PathStep) -> PathStep:
        self.path.append(step)
        return step

    def end(self, outcome: IvrOutcome, at: float, node: str) -> None:
        """Only the first end counts: a hang-up after a hand-off does not undo it."""
        if self.outcome is None:
            self.outcome = outcome
            self.ended_at = at
            self.ended_at_node = node

    @property
    def contained(self) -> bool:
        return self.outcome in CONTAINED

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the event payload and what the screen-pop shows."""
        return {
            "flow": self.flow,
            "version": self.version,
            "caller": self.caller,
            "dnis": self.dnis,
            "started_at": round(self.started_at, 3),
            "ended_at": round(self.ended_at, 3) if self.ended_at is not None else None,
            "outcome": self.outcome.value if self.outcome else None,
            "ended_at_node": self.ended_at_node,
            "customer": dict(self.customer),
            "language": self.language,
            "variables": dict(self.variables),
            "path": [step.as_dict() for step in self.path],
        }
