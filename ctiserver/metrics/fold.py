"""The fold: event-log events, one at a time, into the facts figures are computed from.

The same code serves history (rows read from PostgreSQL in `occurred_at, id`
order) and real time (events as they are appended): `apply` takes one event
and updates queue stays, agent handlings, IVR sessions, agent state segments
and wrap-up reports. It never raises on what it reads: an event it cannot use
(an unknown type, a missing id, a duplicate, a fact older than what it would
change) is skipped and counted in `skipped`, by reason.

Which events it reads (ctiserver/acd/journal.py, ivr/service.py, agent_desktop/hub.py):

- a stay opens on `acd.caller_entered` (caller, the call's own skills) or on
  `acd.call_queued` for a call with no open stay (an overflow's target queue,
  which writes no caller_entered). A caller_entered for the queue the call
  already waits in is a resume after a restart: the same stay goes on.
- it closes on `acd.call_left` {outcome}; "answered" takes the time and agent
  of the `acd.connected` just before it. `acd.callback_requested` (or a
  call_left "callback") marks it a callback and it keeps waiting.
- a handling opens on `acd.connected` (also with transferred: true, for the
  agent a call was transferred to) or `acd.outbound_started`, takes
  `acd.hold`/`acd.unhold` and `acd.transferred`, ends on `acd.call_ended`;
  its after-call work is the agent's `wrap_up` state right after, ended by
  their next state change (no wrap_up next: no after-call work).
- `acd.agent_state` cuts the agent's time into segments.
- `ivr.started` / `ivr.ended` {outcome, customer.id}; `desktop.wrap_up`
  {resolved, customer_id}.

A callback's customer answering writes no event of its own: the callback is
answered at its `acd.connected`, when the agent's phone answers and the
customer is dialled.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ctiserver.ivr.record import CONTAINED
from ctiserver.metrics.facts import (
    ANSWERED,
    CALLBACK,
    OVERFLOWED,
    UNKNOWN,
    Handling,
    IvrSession,
    MetricEvent,
    QueueStay,
    StateSegment,
    WrapUpReport,
)

# Agent states (AgentState values) the fold accepts.
_STATES = frozenset({"logged_out", "available", "reserved", "on_call", "wrap_up", "not_ready"})
# Event clocks of the ACD and of the call controls can differ by milliseconds;
# an agent state change this much older than the segment it would end is
# taken at the segment's start, anything older is out of order.
CLOCK_SKEW_S = 1.0
_CONTAINED = frozenset(str(o) for o in CONTAINED)
_READ_PREFIXES = ("acd.", "ivr.", "desktop.")
# Read by nothing here, on purpose: known, so not counted as unknown.
_IGNORED = frozenset(
    {
        "acd.step",
        "acd.offer",
        "acd.offer_withdrawn",
        "acd.offer_failed",
        "acd.agent_ringing",
        "acd.callback_offered",
        "acd.recording",
        "acd.voicemail",
        "acd.outbound_answered",
        "ivr.survey",
        "ivr.voicemail",
    }
)


# The agent's wrap-up report: the one event that changes a call already finished.
WRAP_UP: Final = "desktop.wrap_up"


class MetricFold:
    """Incremental: `apply(event)` per event; the facts are public lists and maps."""

    def __init__(self) -> None:
        self.stays: list[QueueStay] = []
        self.handlings: list[Handling] = []
        self.ivr_sessions: list[IvrSession] = []
        self.segments: list[StateSegment] = []
        self.wrap_ups: dict[tuple[str, str], WrapUpReport] = {}
        # Customer ids known per call: from the agent's wrap-up, else the IVR lookup.
        self.customer_ids: dict[str, str] = {}
        self._ivr_customers: dict[str, str] = {}
        self.skipped: Counter[str] = Counter()
        self.unknown_types: Counter[str] = Counter()  # which types, for a health page
        self.applied = 0
        self.latest: float | None = None  # newest occurred_at applied
        self._open_stays: dict[str, QueueStay] = {}
        self._call_stays: dict[str, list[QueueStay]] = {}
        self._talking: dict[tuple[str, str], Handling] = {}
        self._after_call: dict[str, Handling] = {}  # agent -> handling whose ACW is open
        self._agent_segment: dict[str, StateSegment] = {}
        self._open_ivr: dict[str, IvrSession] = {}
        self._seen: set[str] = set()
        self._handling_calls: set[str] = set()  # calls with a handling in `handlings`
        self._seen_order: deque[tuple[float, str]] = deque()

    # -- input -------------------------------------------------------------------------

    def apply_all(self, events: Iterable[MetricEvent]) -> None:
        for event in events:
            self.apply(event)

    def apply(self, event: MetricEvent) -> bool:
        """Fold one event; False when it was skipped (see `skipped`)."""
        identity = event.key or _fingerprint(event)
        if identity in self._seen:
            self.skipped["duplicate"] += 1
            return False
        handler = _HANDLERS.get(event.type)
        if handler is None:
            # Other sources' events (asterisk.*, ...) are none of our business.
            if event.type.startswith(_READ_PREFIXES) and event.type not in _IGNORED:
                self.skipped["unknown_type"] += 1
                self.unknown_types[event.type] += 1
            return False
        try:
            reason = handler(self, event, event.payload)
        except (TypeError, ValueError, AttributeError, KeyError):
            # A payload of an unexpected shape: counted, never raised.
            reason = "bad_payload"
        if reason is not None:
            self.skipped[reason] += 1
            return False
        self._seen.add(identity)
        self._seen_order.append((event.occurred_at, identity))
        self.applied += 1
        if self.latest is None or event.occurred_at > self.latest:
            self.latest = event.occurred_at
        return True

    def prune(self, before: float) -> None:
        """Forget finished facts that ended before `before` (a real-time fold's day rollover).

        Facts still open are kept, so calls and states crossing the cut go on.
        """
        self.stays = [s for s in self.stays if s.left_at is None or s.left_at >= before]
        self.handlings = [
            h for h in self.handlings if not h.complete or (h.acw_end or 0.0) >= before
        ]
        self.ivr_sessions = [
            s for s in self.ivr_sessions if s.ended_at is None or s.ended_at >= before
        ]
        self.segments = [s for s in self.segments if s.end is None or s.end >= before]
        self.wrap_ups = {k: w for k, w in self.wrap_ups.items() if w.at >= before}
        self._handling_calls = {h.call_id for h in self.handlings}
        kept = {s.call_id for s in self.stays} | self._handling_calls
        self._call_stays = {
            call: [s for s in stays if s.left_at is None or s.left_at >= before]
            for call, stays in self._call_stays.items()
            if call in kept
        }
        self.customer_ids = {c: v for c, v in self.customer_ids.items() if c in kept}
        self._ivr_customers = {c: v for c, v in self._ivr_customers.items() if c in kept}
        while self._seen_order and self._seen_order[0][0] < before:
            self._seen.discard(self._seen_order.popleft()[1])

    # -- queries -----------------------------------------------------------------------

    def view(
        self,
        *,
        stays: list[QueueStay],
        handlings: list[Handling],
        ivr_sessions: list[IvrSession],
        segments: list[StateSegment],
    ) -> MetricFold:
        """A fold showing only the given facts (the lists are used as they are, not
        copied) and sharing this one's lookups (wrap-ups, customer ids, open calls,
        agent states): figures over a subset, e.g. real time's recent facts.
        Read it, never apply to it; make a new one after `prune`."""
        view = MetricFold()
        view.stays, view.handlings = stays, handlings
        view.ivr_sessions, view.segments = ivr_sessions, segments
        view.wrap_ups, view.customer_ids = self.wrap_ups, self.customer_ids
        view._ivr_customers = self._ivr_customers
        view._open_stays, view._call_stays = self._open_stays, self._call_stays
        view._agent_segment = self._agent_segment
        view.latest = self.latest
        return view

    def waiting(self) -> list[QueueStay]:
        """Calls in a queue now (real time: calls waiting, longest wait)."""
        return list(self._open_stays.values())

    def knows_call(self, call_id: str) -> bool:
        """Whether the fold holds a stay or a handling of the call (not pruned)."""
        return call_id in self._call_stays or call_id in self._handling_calls

    def stays_of(self, call_id: str) -> list[QueueStay]:
        return list(self._call_stays.get(call_id, ()))

    def customer_key(self, call_id: str, caller: str) -> str | None:
        """Who the contact is for repeat-contact FCR: customer id, else number, else None."""
        known = self.customer_ids.get(call_id) or self._ivr_customers.get(call_id)
        if known:
            return f"customer:{known}"
        digits = "".join(ch for ch in caller if ch.isdigit())
        # Anonymous, withheld or junk caller ids are no one in particular.
        return f"number:{digits}" if len(digits) >= 3 else None

    def agent_state(self, agent_id: str) -> StateSegment | None:
        return self._agent_segment.get(agent_id)

    # -- stays -------------------------------------------------------------------------

    def _caller_entered(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        call_id, queue = event.call_id, event.queue_id
        if call_id is None or queue is None:
            return "missing_field"
        current = self._open_stays.get(call_id)
        if current is not None:
            if current.queue == queue:
                return None  # a resume after a restart: the same stay goes on
            self._close(current, event.occurred_at, UNKNOWN)
            self.skipped["stay_lost"] += 1
        skills = payload.get("skills")
        own = frozenset(str(s) for s in skills) if isinstance(skills, Mapping) else None
        self._open(call_id, queue, event.occurred_at, str(payload.get("caller") or ""), own)
        return None

    def _call_queued(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        call_id, queue = event.call_id, event.queue_id
        if call_id is None or queue is None:
            return "missing_field"
        current = self._open_stays.get(call_id)
        if current is not None:
            if current.queue == queue:
                return None  # back in line after a refused offer
            self._close(current, event.occurred_at, UNKNOWN)
            self.skipped["stay_lost"] += 1
        caller = str(payload.get("caller") or "")
        self._open(call_id, queue, event.occurred_at, caller, None)
        return None

    def _open(
        self, call_id: str, queue: str, at: float, caller: str, own: frozenset[str] | None
    ) -> None:
        chain = self._call_stays.setdefault(call_id, [])
        previous = chain[-1] if chain else None
        via = "entry"
        if previous is not None:
            moved = previous.outcome == OVERFLOWED and previous.target_queue == queue
            via = "overflow" if moved else "transfer"
        stay = QueueStay(
            call_id,
            queue,
            entered_at=at,
            first_entered_at=chain[0].first_entered_at if chain else at,
            via=via,
            # The call's own criteria and caller id hold across overflows and transfers.
            caller=caller or (previous.caller if previous else ""),
            skills=own if own is not None else (previous.skills if previous else frozenset()),
        )
        chain.append(stay)
        self.stays.append(stay)
        self._open_stays[call_id] = stay

    def _close(self, stay: QueueStay, at: float, outcome: str) -> None:
        stay.left_at = max(at, stay.entered_at)
        stay.outcome = outcome
        self._open_stays.pop(stay.call_id, None)

    def _callback_requested(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        stay = self._open_stays.get(event.call_id or "")
        if stay is None:
            return "no_open_stay"
        if stay.callback_requested_at is None:
            stay.callback_requested_at = max(event.occurred_at, stay.entered_at)
        return None

    def _call_left(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        call_id = event.call_id
        if call_id is None:
            return "missing_field"
        stay = self._open_stays.get(call_id)
        if stay is None or (event.queue_id is not None and event.queue_id != stay.queue):
            return "no_open_stay"
        outcome = payload.get("outcome")
        if not isinstance(outcome, str) or not outcome:
            return "missing_field"
        if event.occurred_at < stay.entered_at - CLOCK_SKEW_S:
            return "out_of_order"
        if outcome == CALLBACK:
            if stay.callback_requested_at is None:
                stay.callback_requested_at = max(event.occurred_at, stay.entered_at)
            return None
        if outcome == ANSWERED and stay.answered_at is None:
            stay.answered_at = max(event.occurred_at, stay.entered_at)
        target = payload.get("target_queue")
        stay.target_queue = target if isinstance(target, str) else None
        self._close(stay, event.occurred_at, outcome)
        return None

    # -- handlings ---------------------------------------------------------------------

    def _connected(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        call_id, agent_id = event.call_id, event.agent_id
        if call_id is None or agent_id is None:
            return "missing_field"
        if (call_id, agent_id) in self._talking:
            return "already_connected"
        transferred = payload.get("transferred") is True
        stay: QueueStay | None
        if transferred:
            # Taken from the agent who transferred it: it serves the stay they answered.
            chain = self._call_stays.get(call_id) or []
            stay = chain[-1] if chain else None
        else:
            stay = self._open_stays.get(call_id)
            if stay is not None and stay.answered_at is None:
                stay.answered_at = max(event.occurred_at, stay.entered_at)
                stay.agent_id = agent_id
        queue = event.queue_id or (stay.queue if stay is not None else None)
        handling = Handling(
            call_id,
            agent_id,
            queue,
            answered_at=event.occurred_at,
            stay=stay,
            transferred_in=transferred,
            callback=bool(payload.get("callback_number")),
        )
        self._start_handling(handling)
        return None

    def _outbound_started(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        call_id, agent_id = event.call_id, event.agent_id
        if call_id is None or agent_id is None:
            return "missing_field"
        if (call_id, agent_id) in self._talking:
            return "already_connected"
        handling = Handling(call_id, agent_id, event.queue_id, event.occurred_at, outbound=True)
        self._start_handling(handling)
        return None

    def _start_handling(self, handling: Handling) -> None:
        self._talking[(handling.call_id, handling.agent_id)] = handling
        self.handlings.append(handling)
        self._handling_calls.add(handling.call_id)

    def _handling_of(self, event: MetricEvent, agent_id: str | None = None) -> Handling | None:
        call_id = event.call_id
        if call_id is None:
            return None
        agent = agent_id or event.agent_id
        if agent is not None:
            return self._talking.get((call_id, agent))
        # No agent named: the call's only handling in progress.
        found = [h for (c, _), h in self._talking.items() if c == call_id]
        return found[0] if len(found) == 1 else None

    def _hold(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        handling = self._handling_of(event)
        if handling is None:
            return "no_call"
        if handling.held_since is None:
            handling.held_since = max(event.occurred_at, handling.answered_at)
        return None

    def _unhold(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        handling = self._handling_of(event)
        if handling is None:
            return "no_call"
        self._end_hold(handling, event.occurred_at)
        return None

    @staticmethod
    def _end_hold(handling: Handling, at: float) -> None:
        if handling.held_since is not None:
            handling.holds.append((handling.held_since, max(at, handling.held_since)))
            handling.held_since = None

    def _transferred(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        source = payload.get("from_agent")
        handling = self._handling_of(event, source if isinstance(source, str) else None)
        if handling is None:
            return "no_call"
        handling.transferred_out = True
        if handling.stay is not None:
            handling.stay.transferred = True
        return None

    def _call_ended(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        handling = self._handling_of(event)
        if handling is None:
            return "no_call"
        at = max(event.occurred_at, handling.answered_at)
        self._end_hold(handling, at)
        handling.ended_at = at
        del self._talking[(handling.call_id, handling.agent_id)]
        # Its after-call work is the agent's next state, if that is wrap-up.
        self._after_call[handling.agent_id] = handling
        return None

    # -- agents ------------------------------------------------------------------------

    def _agent_state(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        agent_id = event.agent_id
        state = payload.get("state")
        if agent_id is None or not isinstance(state, str):
            return "missing_field"
        if state not in _STATES:
            return "unknown_state"
        reason = payload.get("reason")
        reason = reason if isinstance(reason, str) and reason else None
        at = event.occurred_at
        current = self._agent_segment.get(agent_id)
        if current is not None:
            if at < current.start - CLOCK_SKEW_S:
                return "out_of_order"
            at = max(at, current.start)
            if current.state == state and current.reason == reason:
                return None  # a repeat (recovery re-journals): the segment goes on
            current.end = at
        segment = StateSegment(agent_id, state, at, reason)
        self.segments.append(segment)
        self._agent_segment[agent_id] = segment
        self._after_call_work(agent_id, state, at)
        return None

    def _after_call_work(self, agent_id: str, state: str, at: float) -> None:
        handling = self._after_call.get(agent_id)
        if handling is None or handling.ended_at is None:
            return
        if handling.acw_start is not None:
            handling.acw_end = max(at, handling.acw_start)  # wrap-up is over
            del self._after_call[agent_id]
        elif state == "wrap_up":
            handling.acw_start = max(at, handling.ended_at)
        else:
            # Straight to another state: no after-call work.
            handling.acw_start = handling.acw_end = handling.ended_at
            del self._after_call[agent_id]

    # -- IVR and wrap-ups --------------------------------------------------------------

    def _ivr_started(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        call_id = event.call_id
        if call_id is None:
            return "missing_field"
        if call_id in self._open_ivr:
            return "already_started"
        session = IvrSession(call_id, event.occurred_at, caller=str(payload.get("caller") or ""))
        self.ivr_sessions.append(session)
        self._open_ivr[call_id] = session
        return None

    def _ivr_ended(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        call_id = event.call_id
        if call_id is None:
            return "missing_field"
        session = self._open_ivr.pop(call_id, None)
        if session is None:
            # Its start is missing (before the range read): the record says when.
            started = payload.get("started_at")
            start = float(started) if isinstance(started, int | float) else event.occurred_at
            session = IvrSession(call_id, start, caller=str(payload.get("caller") or ""))
            self.ivr_sessions.append(session)
        outcome = payload.get("outcome")
        session.outcome = outcome if isinstance(outcome, str) else None
        session.contained = session.outcome in _CONTAINED
        session.ended_at = max(event.occurred_at, session.started_at)
        session.flow = str(payload.get("flow") or "")
        customer = payload.get("customer")
        if isinstance(customer, Mapping) and customer.get("id"):
            self._ivr_customers[call_id] = str(customer["id"])
        return None

    def _wrap_up(self, event: MetricEvent, payload: Mapping[str, Any]) -> str | None:
        call_id, agent_id = event.call_id, event.agent_id
        if call_id is None or agent_id is None:
            return "missing_field"
        previous = self.wrap_ups.get((call_id, agent_id))
        if previous is not None and previous.at > event.occurred_at:
            return "out_of_order"  # an older wrap-up than the one kept
        resolved = payload.get("resolved")
        disposition = payload.get("disposition")
        self.wrap_ups[(call_id, agent_id)] = WrapUpReport(
            call_id,
            agent_id,
            event.occurred_at,
            resolved if isinstance(resolved, bool) else None,
            disposition if isinstance(disposition, str) else None,
        )
        customer = payload.get("customer_id")
        if customer is not None and customer != "":
            self.customer_ids[call_id] = str(customer)
        return None


def _fingerprint(event: MetricEvent) -> str:
    """An event without a key is the same event when everything it says is the same."""
    payload = json.dumps(event.payload, sort_keys=True, default=str)
    return "|".join(
        (
            event.type,
            repr(event.occurred_at),
            event.call_id or "",
            event.agent_id or "",
            event.queue_id or "",
            payload,
        )
    )


_HANDLERS = {
    "acd.caller_entered": MetricFold._caller_entered,
    "acd.call_queued": MetricFold._call_queued,
    "acd.callback_requested": MetricFold._callback_requested,
    "acd.call_left": MetricFold._call_left,
    "acd.connected": MetricFold._connected,
    "acd.outbound_started": MetricFold._outbound_started,
    "acd.hold": MetricFold._hold,
    "acd.unhold": MetricFold._unhold,
    "acd.transferred": MetricFold._transferred,
    "acd.call_ended": MetricFold._call_ended,
    "acd.agent_state": MetricFold._agent_state,
    "ivr.started": MetricFold._ivr_started,
    "ivr.ended": MetricFold._ivr_ended,
    WRAP_UP: MetricFold._wrap_up,
}

# The event types `apply` reads (a query can leave every other row in the table).
READ_TYPES: frozenset[str] = frozenset(_HANDLERS)
