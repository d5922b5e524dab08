"""The predicted reason for a call, with the rule that produced it (pure).

Rules, first match wins, so the agent sees one reason and why:

1. `repeat_today`: the customer already contacted us today (in `tz`); a
   second call the same day is most often about the same matter.
2. `unresolved_recent`: an interaction of the last 7 days left unresolved:
   "follow-up on <disposition>".
3. `ivr_choice`: the option chosen at the IVR's last menu (the node it led
   to), or the queue the IVR handed the call to.
4. `queue`: only the queue is known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final

RECENT: Final = timedelta(days=7)
# Menu results that are not a choice (runner.py: keys "-" on timeout).
_NOT_A_CHOICE: Final = frozenset({"", "invalid", "timeout", "-"})


@dataclass(frozen=True, slots=True)
class PastContact:
    """One earlier interaction of the customer (or of the calling number)."""

    at: datetime
    disposition: str | None
    resolved: bool | None
    channel: str = "phone"


@dataclass(frozen=True, slots=True)
class PredictedReason:
    text: str
    rule: str  # repeat_today, unresolved_recent, ivr_choice, queue
    explanation: str

    def as_dict(self) -> dict[str, str]:
        return {"text": self.text, "rule": self.rule, "explanation": self.explanation}


def predict_reason(
    *,
    now: datetime,
    history: Sequence[PastContact] = (),
    ivr: Mapping[str, Any] | None = None,
    queue: str = "",
    queue_title: str = "",
    tz: tzinfo = UTC,
) -> PredictedReason | None:
    """The reason for the call at `now`; None when nothing at all is known."""
    earlier = sorted((c for c in history if c.at <= now), key=lambda c: c.at, reverse=True)
    today = now.astimezone(tz).date()
    same_day = [c for c in earlier if c.at.astimezone(tz).date() == today]
    if same_day:
        last = same_day[0]
        about = f" about {last.disposition}" if last.disposition else ""
        return PredictedReason(
            text="repeat contact",
            rule="repeat_today",
            explanation=(
                f"{len(same_day)} earlier contact(s) today, the last at "
                f"{last.at.astimezone(tz):%H:%M}{about}"
            ),
        )
    for contact in earlier:
        if now - contact.at > RECENT:
            break
        if contact.resolved is False:
            disposition = contact.disposition or "an unresolved matter"
            return PredictedReason(
                text=f"follow-up on {disposition}",
                rule="unresolved_recent",
                explanation=(
                    f"unresolved interaction on {contact.at.astimezone(tz):%Y-%m-%d}"
                    f" ({disposition}) within {RECENT.days} days"
                ),
            )
    choice = ivr_choice(ivr) if ivr else None
    if choice is not None:
        text, explanation = choice
        return PredictedReason(text=text, rule="ivr_choice", explanation=explanation)
    if queue:
        return PredictedReason(
            text=queue_title or queue,
            rule="queue",
            explanation=f"the call came to queue {queue}; no IVR choice or recent history",
        )
    return None


def ivr_choice(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """(what the caller chose, how we know) from an IVR record's path (ivr/record.py)."""
    path = [step for step in record.get("path") or () if isinstance(step, Mapping)]
    for index in range(len(path) - 1, -1, -1):
        step = path[index]
        if step.get("type") != "menu":
            continue
        key = str(step.get("result") or "")
        if key in _NOT_A_CHOICE:
            continue
        menu = step.get("label") or step.get("node") or "menu"
        following = path[index + 1] if index + 1 < len(path) else None
        if following is not None:
            chosen = str(following.get("label") or following.get("node") or key)
        else:
            chosen = f"option {key}"
        return chosen, f"pressed {key} at IVR menu {menu!s} -> {chosen}"
    for step in reversed(path):
        if step.get("type") == "queue" and step.get("result"):
            queue = str(step["result"])
            return queue, f"the IVR sent the call to queue {queue}"
    return None
