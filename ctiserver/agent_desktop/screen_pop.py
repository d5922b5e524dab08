"""Screen-pops: what the agent sees about a caller the instant their phone rings.

The slow part (the customer profile and history from PostgreSQL, the IVR
record when the IVR session has already ended) is fetched when the call
enters a queue (`CallQueued`) and cached per call; `pop_for(offer)` then only
assembles: the live IVR record, the open callbacks, the time waited and the
predicted reason are in memory. An offer that comes before its prefetch ends
gets a pop marked `complete: false`; `on_complete` fires when the full one is
ready, so the hub can send the offer again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

import asyncpg

from ctiserver.acd.controller import CallController
from ctiserver.acd.decisions import CallEnded, CallLeft, CallQueued, Decision, Offer
from ctiserver.acd.model import CallOutcome
from ctiserver.acd.views import CallStatus
from ctiserver.agent_desktop.protocol import iso
from ctiserver.agent_desktop.reason import PastContact, predict_reason
from ctiserver.ivr.service import IvrService
from ctiserver.lifecycle import Service
from ctiserver.store.call_history import ivr_record
from ctiserver.store.customers import Customer, find_customers_by_phone, normalize_phone
from ctiserver.store.database import Database
from ctiserver.store.interactions import Interaction, customer_history

log = logging.getLogger(__name__)

HISTORY_LIMIT = 10
# Bounds the prefetch: a slow database must not hold a pop back for ever.
FETCH_TIMEOUT_S = 5.0
# Calls whose end we missed must not pile up in the cache.
CACHE_MAX = 5000
# Where the page creates a customer with the number (POST, ctiserver/http/customers.py).
CREATE_CUSTOMER_URL = "/api/customers"
# How it adds the number to an existing customer: PATCH with {"add_phones": [...]}.
LINK_PHONE_METHOD = "PATCH"
LINK_PHONE_URL = "/api/customers/{id}"
# Supervisors play recordings through the REST API, by interaction.
RECORDING_URL = "/api/interactions/{id}/recording"

_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass
class _Prefetch:
    call_id: str
    number: str
    queue: str
    entered_at: float  # virtual enqueue time: a callback or overflow keeps its first
    customers: list[Customer] = field(default_factory=list)
    history: list[Interaction] = field(default_factory=list)
    ivr: dict[str, Any] | None = None
    done: bool = False
    failed: str | None = None  # why the profile could not be fetched


class ScreenPops(Service):
    """Prefetches profiles on CallQueued and assembles pops on Offer."""

    def __init__(
        self,
        controller: CallController,
        database: Database | None,
        *,
        ivr: IvrService | None = None,
        clock: Callable[[], float] = time.time,
        tz: tzinfo = UTC,
        history_limit: int = HISTORY_LIMIT,
    ) -> None:
        self.controller = controller
        self.database = database
        self.ivr = ivr
        self.clock = clock
        self.tz = tz
        self.history_limit = history_limit
        self._cache: OrderedDict[str, _Prefetch] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Called with a call id when its prefetch finishes (the hub re-sends a pending offer).
        self.on_complete: Callable[[str], None] | None = None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # -- decisions ---------------------------------------------------------------------------

    def on_decision(self, decision: Decision) -> None:
        match decision:
            case CallQueued():
                self._prefetch(decision)
            case CallLeft(outcome=outcome) if outcome not in _STILL_ALIVE:
                self._drop(decision.call_id)
            case CallEnded():
                self._drop(decision.call_id)

    def _prefetch(self, queued: CallQueued) -> None:
        entry = self._cache.get(queued.call_id)
        if entry is not None:  # re-queued after a RONA or an overflow: already fetched
            entry.queue = queued.queue
            return
        try:
            view = self.controller.engine.call(queued.call_id)
        except KeyError:
            return
        number = view.callback_number or view.caller
        entry = _Prefetch(queued.call_id, number, queued.queue, queued.virtual_enqueued_at)
        self._cache[queued.call_id] = entry
        while len(self._cache) > CACHE_MAX:
            self._cache.popitem(last=False)
        if self.database is None:
            entry.done = True
            return
        task = asyncio.create_task(self._fetch(entry), name=f"desktop-pop-{queued.call_id}")
        self._tasks[queued.call_id] = task
        task.add_done_callback(functools.partial(self._fetched, queued.call_id))

    def _fetched(self, call_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(call_id) is task:
            del self._tasks[call_id]
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("screen-pop prefetch of %s failed", call_id, exc_info=task.exception())
        entry = self._cache.get(call_id)
        if entry is not None:
            entry.done = True
            if self.on_complete is not None:
                self.on_complete(call_id)

    async def _fetch(self, entry: _Prefetch) -> None:
        assert self.database is not None
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                entry.customers = await find_customers_by_phone(self.database, entry.number)
                if entry.customers:
                    entry.history = await customer_history(
                        self.database, entry.customers[0].id, self.history_limit
                    )
                # The IVR may have ended already (a callback it requested): the log has it.
                if self.ivr is None or self.ivr.record_of(entry.call_id) is None:
                    entry.ivr = await ivr_record(self.database, entry.call_id)
        except _DB_ERRORS as exc:
            entry.failed = f"customer data unavailable ({type(exc).__name__})"
            log.warning("screen-pop of %s without profile: %s", entry.call_id, exc)

    def _drop(self, call_id: str) -> None:
        self._cache.pop(call_id, None)
        task = self._tasks.pop(call_id, None)
        if task is not None:
            task.cancel()

    # -- assembling -----------------------------------------------------------------------

    def customer_id(self, call_id: str) -> int | None:
        entry = self._cache.get(call_id)
        return entry.customers[0].id if entry is not None and entry.customers else None

    def pop_for(self, offer: Offer) -> dict[str, Any]:
        """The pop for `offer`, from memory only (no await: it goes out with the offer)."""
        entry = self._cache.get(offer.call_id)
        if entry is None:  # never saw it queue (a restored call): what the offer says
            entry = _Prefetch(
                offer.call_id, offer.callback_number or offer.caller, offer.queue, offer.at
            )
            entry.failed = "customer data not prefetched"
        return self.assemble(entry, offer.queue, offer.at)

    def assemble(self, entry: _Prefetch, queue: str, at: float) -> dict[str, Any]:
        now = datetime.fromtimestamp(at, UTC)
        live_ivr = self.ivr.record_of(entry.call_id) if self.ivr is not None else None
        ivr = live_ivr if live_ivr is not None else entry.ivr
        customer = entry.customers[0] if entry.customers else None
        history = [
            PastContact(i.started_at, i.disposition, i.resolved, i.channel)
            for i in entry.history
            if i.call_key != entry.call_id
        ]
        title = _queue_title(self.controller, queue)
        reason = predict_reason(
            now=now, history=history, ivr=ivr, queue=queue, queue_title=title, tz=self.tz
        )
        complete = entry.done or self.database is None
        return {
            "call_id": entry.call_id,
            "number": entry.number,
            "customer": customer_dict(customer) if customer is not None else None,
            "other_matches": [{"id": c.id, "name": c.name} for c in entry.customers[1:]],
            "interactions": [
                interaction_dict(i) for i in entry.history if i.call_key != entry.call_id
            ],
            "callbacks": self.open_callbacks(entry.number, exclude=entry.call_id),
            "ivr": ivr,
            "entered_queue_at": iso(entry.entered_at),
            "waited_s": round(max(0.0, at - entry.entered_at), 1),
            "reason": reason.as_dict() if reason is not None else None,
            "unknown_caller": (
                None
                if customer is not None or not complete or entry.failed
                else {
                    "number": entry.number,
                    "create": CREATE_CUSTOMER_URL,
                    "link": _link_request(entry.number),
                }
            ),
            "complete": complete,
            "problem": entry.failed,
        }

    def open_callbacks(self, number: str, *, exclude: str | None = None) -> list[dict[str, Any]]:
        """Kept callbacks still in line for `number` (compared by their last ten digits)."""
        key = normalize_phone(number)[-10:]
        if len(key) < 2:
            return []
        found = []
        for item in callback_calls(self.controller):
            if item["call_id"] == exclude:
                continue
            if normalize_phone(item["number"])[-10:] == key:
                found.append(item)
        return found


# A call still in the ACD after these (answered: the pop stays for the call).
_STILL_ALIVE = frozenset({CallOutcome.ANSWERED, CallOutcome.OVERFLOWED, CallOutcome.CALLBACK})


def callback_calls(
    controller: CallController, queues: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    """Kept callbacks waiting (or ringing an agent) in `queues` (all when None), oldest first."""
    engine = controller.engine
    names = queues if queues is not None else tuple(q.name for q in controller.config.queues)
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name in names:
        try:
            waiting = engine.waiting(name)
        except KeyError:
            continue
        for view in waiting:
            if view.callback_number and view.call_id not in seen:
                seen.add(view.call_id)
                found.append(
                    _callback_item(
                        view.call_id,
                        view.queue,
                        view.callback_number,
                        view.virtual_enqueued_at,
                        "waiting",
                    )
                )
    # Only the engine's callbacks: a view of every live call per pop cost O(calls) (bench/e2e.py).
    for view in engine.callbacks():
        call_id = view.call_id
        if call_id in seen or call_id not in controller.calls:
            continue
        if view.callback_number and view.status is CallStatus.OFFERED and view.queue in names:
            found.append(
                _callback_item(
                    call_id, view.queue, view.callback_number, view.virtual_enqueued_at, "offered"
                )
            )
    found.sort(key=lambda item: str(item["since"]))
    return found


def _callback_item(
    call_id: str, queue: str, number: str, since: float, status: str
) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "queue": queue,
        "number": number,
        "status": status,
        "since": iso(since),
        "due": None,
    }


def _link_request(number: str) -> dict[str, Any]:
    """The request that adds `number` to an existing customer ({id} filled in by the page)."""
    return {
        "method": LINK_PHONE_METHOD,
        "url": LINK_PHONE_URL,
        "body": {"add_phones": [{"number": number, "label": ""}]},
    }


def _queue_title(controller: CallController, queue: str) -> str:
    try:
        return controller.queue_config(queue).title
    except KeyError:
        return ""


def customer_dict(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "name": customer.name,
        "grade": customer.grade,
        "value": str(customer.value) if customer.value is not None else None,
        "language": customer.language,
        "preferred_channel": customer.preferred_channel,
        "notes": customer.notes,
        "numbers": [{"number": p.number, "label": p.label} for p in customer.phones],
        "accounts": [{"number": a.number, "kind": a.kind} for a in customer.accounts],
    }


def interaction_dict(interaction: Interaction) -> dict[str, Any]:
    has_recording = bool(interaction.recording_path)
    return {
        "id": interaction.id,
        "at": iso(interaction.started_at),
        "channel": interaction.channel,
        "direction": interaction.direction,
        "queue": interaction.queue_name,
        "agent": interaction.agent_login,
        "agent_name": interaction.agent_name,
        "disposition": interaction.disposition,
        "notes": interaction.notes,
        "resolved": interaction.resolved,
        "follow_up_at": iso(interaction.follow_up_at),
        "recording": {
            "available": has_recording,
            "url": RECORDING_URL.format(id=interaction.id) if has_recording else None,
        },
    }


def for_agents(pop: Mapping[str, Any]) -> dict[str, Any]:
    """The pop as an agent may see it: recordings are playable by supervisors only."""
    interactions = [
        {**item, "recording": {**item["recording"], "url": None}}
        for item in pop.get("interactions") or ()
    ]
    return {**pop, "interactions": interactions}
