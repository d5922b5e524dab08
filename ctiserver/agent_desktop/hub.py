"""The desktop hub: each agent's live view, fanned out to their open desktops.

Routing decisions (`CallController.add_listener`) and call progress update a
per-agent `Desk` (the offer ringing, the calls in progress, the wrap-up
pending) kept whether or not a desktop is open, so a desktop that connects
or reconnects gets all of it in one `snapshot`. Every desktop has a bounded
send queue written by its own task: a slow one is dropped (it reconnects and
gets a snapshot), never buffered without limit and never holding up others.

Wrap-ups are journaled (`desktop.wrap_up`) with `EventLog.append_durable`
before the agent is told they are safe: the ack goes out once the event is in
the events table or, the database not confirming within a second, fsynced to
the data folder, so that neither a database outage nor a crash loses it. The
interaction row (one per call and agent: both agents of a transferred call
keep theirs) is then written by a background task that retries until the
database takes it, and `start()` re-applies journaled wrap-ups that a
previous process did not get to write.

Call controls (hold, unhold, hang-up, blind transfer, click-to-dial) go to
ctiserver/acd/call_controls.py once `integrate_call_controls` gave the hub a
CallControls; its refusals keep their code (CallControlError.code, see
`_CONTROL_ERRORS`). Its progress feed is merged with what the hub derives from
the ACD's decisions: the ringing of an offer, an agent's answer and the end of
a call come from the decisions (with the offer's pop), the rest (hold, resume,
transfer, the legs of a click-to-dial, a transfer ringing another agent) from
the call controls; `on_call_progress` drops what the decisions already said.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Protocol

import asyncpg

from ctiserver.acd.call_controls import (
    TRANSFER_REASON,
    CallControlError,
    CallControls,
    CallInfo,
    CallProgress,
    ControlResult,
    ProgressStage,
)
from ctiserver.acd.call_controls import TransferTarget as ControlTarget
from ctiserver.acd.controller import CallController
from ctiserver.acd.decisions import (
    AgentStateChanged,
    CallEnded,
    Decision,
    Offer,
    OfferWithdrawn,
)
from ctiserver.acd.errors import IllegalTransition
from ctiserver.acd.model import AgentState
from ctiserver.acd.views import QueueFigures
from ctiserver.agent_desktop.protocol import (
    DEFAULT_REASON_CODES,
    READ_ONLY_COMMANDS,
    CloseCode,
    Command,
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
    Stage,
    TargetKind,
    Transfer,
    TransferTarget,
    Unhold,
    WrapUp,
    ack_message,
    encode,
    error_message,
    iso,
    message,
    parse_command,
    refusal,
    type_of,
)
from ctiserver.agent_desktop.screen_pop import ScreenPops, callback_calls, for_agents
from ctiserver.http.socket_session import CLOSE_TIMEOUT_S
from ctiserver.lifecycle import Service
from ctiserver.store.call_history import agent_took_call, recording_file, unapplied_wrap_ups
from ctiserver.store.database import Database
from ctiserver.store.events import Event, EventLog, EventLogError
from ctiserver.store.interactions import record_interaction, scheduled_follow_ups

log = logging.getLogger(__name__)

WRAP_UP_EVENT = "desktop.wrap_up"
SEND_QUEUE = 256
SEND_TIMEOUT_S = 10.0
FIGURES_EVERY_S = 1.0
DB_TIMEOUT_S = 10.0
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
# Calls an agent handled, kept so that a late wrap-up can be checked without the database.
HANDLED_MAX = 10_000
# Journaled wrap-ups older than this are not re-applied at start (they were dealt with).
REPLAY_DAYS = 7
# Calls whose `ended` a desk sent, kept so that the same end is not sent twice.
ENDED_KEPT = 16

# CallControlError.code -> the protocol's error code. The controls' own codes are
# kept (a page can tell "already on hold" from "Asterisk refused"); the agent's
# state refusing a dial is the protocol's illegal_state, Asterisk refusing is failed.
_CONTROL_ERRORS: Final[Mapping[str, ErrorCode]] = {
    "no_call": ErrorCode.NO_CALL,
    "not_your_call": ErrorCode.NOT_YOUR_CALL,
    "already_on_hold": ErrorCode.ALREADY_ON_HOLD,
    "not_on_hold": ErrorCode.NOT_ON_HOLD,
    "held_by_phone": ErrorCode.HELD_BY_PHONE,
    "not_logged_in": ErrorCode.ILLEGAL_STATE,
    "busy": ErrorCode.ILLEGAL_STATE,
    "bad_number": ErrorCode.BAD_NUMBER,
    "unknown_target": ErrorCode.UNKNOWN_TARGET,
    "target_unavailable": ErrorCode.TARGET_UNAVAILABLE,
    "in_progress": ErrorCode.IN_PROGRESS,
    "refused": ErrorCode.FAILED,
    "unreachable": ErrorCode.UNREACHABLE,
    "no_answer": ErrorCode.NO_ANSWER,
}

# CallControls' progress stages as the protocol names them.
_STAGES: Final[Mapping[ProgressStage, Stage]] = {
    ProgressStage.RINGING: Stage.RINGING,
    ProgressStage.ANSWERED: Stage.ANSWERED,
    ProgressStage.ON_HOLD: Stage.ON_HOLD,
    ProgressStage.OFF_HOLD: Stage.RESUMED,
    ProgressStage.TRANSFERRED: Stage.TRANSFERRED,
    ProgressStage.ENDED: Stage.ENDED,
}

_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class DesktopSocket(Protocol):
    """What a Connection needs of a websocket (aiohttp's WebSocketResponse has it)."""

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool: ...


class Connection:
    """One open desktop: a bounded queue of encoded messages and the task writing them."""

    def __init__(
        self,
        socket: DesktopSocket,
        agent_id: str,
        *,
        read_only: bool = False,
        supervisor: bool = False,
        send_queue: int = SEND_QUEUE,
        send_timeout_s: float = SEND_TIMEOUT_S,
        on_stuck: Callable[[], None] | None = None,
    ) -> None:
        self.socket = socket
        self.agent_id = agent_id
        self.read_only = read_only
        # Supervisors (watching, or an agent account with the role) may play recordings.
        self.supervisor = supervisor
        self.send_timeout_s = send_timeout_s
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=send_queue)
        self.close_code: int | None = None
        self.close_reason = ""
        self._on_stuck = on_stuck

    def send_text(self, text: str) -> None:
        """Queue one encoded message; a full queue drops the connection (it reconnects)."""
        if self.close_code is not None:
            return
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("desktop of %s too slow: closing it", self.agent_id)
            self.close(CloseCode.TOO_SLOW, "too slow: reconnect for a snapshot")

    def close(self, code: int, reason: str) -> None:
        """Ask the writer to close the socket after nothing more (pending messages dropped)."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def run_writer(self) -> None:
        try:
            while True:
                text = await self._queue.get()
                if text is None:
                    break
                async with asyncio.timeout(self.send_timeout_s):
                    await self.socket.send_str(text)
        except TimeoutError:
            log.warning(
                "desktop of %s: a send took over %.0f s", self.agent_id, self.send_timeout_s
            )
            self.close_code = self.close_code or CloseCode.TOO_SLOW
            self.close_reason = self.close_reason or "too slow"
        except (ConnectionError, RuntimeError) as exc:  # the peer went away meanwhile
            log.debug("desktop of %s: send failed: %s", self.agent_id, exc)
        code = self.close_code or CloseCode.NORMAL
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.socket.close(code=code, message=self.close_reason.encode())
        except (TimeoutError, ConnectionError, RuntimeError):
            if self._on_stuck is not None:
                self._on_stuck()  # the transport itself: abort it


@dataclass
class DeskCall:
    """A call of the agent as the desktop shows it."""

    call_id: str
    queue: str
    caller: str
    stage: Stage
    since: float
    on_hold: bool = False
    pop: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "queue": self.queue,
            "caller": self.caller,
            "stage": self.stage.value,
            "since": iso(self.since),
            "on_hold": self.on_hold,
            "pop": self.pop,
        }


@dataclass
class Desk:
    """One agent's live view; kept while no desktop is open."""

    agent_id: str
    connections: set[Connection] = field(default_factory=set)
    offer: dict[str, Any] | None = None  # the `offer` message body while it rings
    calls: dict[str, DeskCall] = field(default_factory=dict)
    wrap_up: dict[str, Any] | None = None
    # The last queue figures sent (snapshot or queue_figures); shared, never changed in place.
    figures: list[dict[str, Any]] | None = None
    ended: deque[str] = field(default_factory=lambda: deque(maxlen=ENDED_KEPT))


@dataclass(frozen=True, slots=True)
class HandledCall:
    """What a wrap-up needs to know about a call the agent took."""

    agent_id: str
    queue: str
    caller: str
    callback: bool
    customer_id: int | None
    answered_at: float
    ended_at: float | None = None
    outbound: bool = False  # a click-to-dial call


@dataclass(frozen=True, slots=True)
class PendingWrapUp:
    """A journaled wrap-up on its way to the interactions table."""

    call_id: str
    agent_id: str
    payload: Mapping[str, Any]


class DesktopHub(Service):
    def __init__(
        self,
        controller: CallController,
        *,
        database: Database | None,
        events: EventLog | None,
        pops: ScreenPops,
        reason_codes: Sequence[str] = DEFAULT_REASON_CODES,
        clock: Callable[[], float] = time.time,
        tz: tzinfo = UTC,
        figures_every_s: float = FIGURES_EVERY_S,
        send_queue: int = SEND_QUEUE,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.controller = controller
        self.database = database
        self.events = events
        self.pops = pops
        self.reason_codes = tuple(reason_codes)
        self.clock = clock
        self.tz = tz
        self.figures_every_s = figures_every_s
        self.send_queue = send_queue
        self.retry_max_s = retry_max_s
        self.controls: CallControls | None = None
        self._desks: dict[str, Desk] = {}
        # Call id -> the agents whose desk shows its offer (a completed pop goes to them).
        self._offers: dict[str, set[str]] = {}
        # Call id -> agent -> its offer: answered before the pop was complete (the complete
        # one goes to them as a `pop` message when the prefetch ends).
        self._incomplete: OrderedDict[str, dict[str, Offer]] = OrderedDict()
        # The figures of the last tick, per queue and per list of queues an agent has.
        # Unchanged figures keep their object, so desks compare them by identity.
        self._queue_figures: dict[str, dict[str, Any]] = {}
        self._shared_figures: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        # By (call id, agent id): a transferred call is handled by two agents.
        self._handled: OrderedDict[tuple[str, str], HandledCall] = OrderedDict()
        # Wrap-ups on their way to the table and their writers, by (call id, agent id).
        self._pending: dict[tuple[str, str], PendingWrapUp] = {}
        self._writers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._senders: dict[Connection, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening = False
        self._closed = False
        pops.on_complete = self._pop_completed

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._listening:
            # The controller has no remove_listener: `_closed` mutes it after close().
            self.controller.add_listener(self._on_decision)
            self._listening = True
        await self.pops.start()
        self._spawn(self._run_figures(), "desktop-figures")
        if self.database is not None and self.events is not None:
            self._spawn(self._replay_wrap_ups(), "desktop-wrap-up-replay")

    async def close(self) -> None:
        self._closed = True
        for desk in self._desks.values():
            for conn in desk.connections:
                conn.close(CloseCode.GOING_AWAY, "server shutting down")
        senders = list(self._senders.values())
        if senders:  # let the writers send their close frames, briefly
            await asyncio.wait(senders, timeout=CLOSE_TIMEOUT_S)
        tasks = [*self._tasks, *self._writers.values(), *self._senders.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._writers.clear()
        self._senders.clear()
        await self.pops.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("desktop task %s failed", task.get_name(), exc_info=task.exception())

    def integrate_call_controls(self, controls: CallControls) -> None:
        """Carry out hold, unhold, hang-up, transfer and dial with `controls`; show its
        progress. The caller owns `controls` (starts and closes it)."""
        if self.controls is controls:
            return
        if self.controls is not None:
            raise RuntimeError("the hub already has call controls")
        self.controls = controls
        controls.add_progress_listener(self.on_call_progress)

    @property
    def pending_wrap_ups(self) -> int:
        return len(self._pending)

    # -- connections ----------------------------------------------------------------------------

    def desk(self, agent_id: str) -> Desk:
        desk = self._desks.get(agent_id)
        if desk is None:
            desk = self._desks[agent_id] = Desk(agent_id)
        return desk

    def knows_agent(self, agent_id: str) -> bool:
        try:
            self.controller.engine.agent(agent_id)
        except KeyError:
            return False
        return True

    def attach(self, conn: Connection) -> None:
        """A desktop opened: its writer starts and the snapshot goes first."""
        if self._closed:
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        desk = self.desk(conn.agent_id)
        desk.connections.add(conn)
        task = asyncio.create_task(conn.run_writer(), name=f"desktop-send-{conn.agent_id}")
        self._senders[conn] = task
        if conn.close_code is None:
            self._reply(conn, self.snapshot(conn))

    async def detach(self, conn: Connection) -> None:
        desk = self._desks.get(conn.agent_id)
        if desk is not None:
            desk.connections.discard(conn)
        task = self._senders.pop(conn, None)
        if task is not None:
            if conn.close_code is not None:  # let it send the close frame with our code
                await asyncio.wait([task], timeout=CLOSE_TIMEOUT_S)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def connections(self, agent_id: str) -> int:
        desk = self._desks.get(agent_id)
        return len(desk.connections) if desk is not None else 0

    def _send(self, desk: Desk, data: Mapping[str, Any], *, has_pop: bool = False) -> None:
        """To every desktop of the agent; encoded once (twice with a pop: agents' copy)."""
        if not desk.connections:
            return
        full = encode(data)
        limited = encode(_strip_recordings(data)) if has_pop else full
        for conn in list(desk.connections):
            conn.send_text(full if conn.supervisor else limited)

    def _reply(self, conn: Connection, data: Mapping[str, Any]) -> None:
        conn.send_text(encode(data if conn.supervisor else _strip_recordings(data)))

    # -- the snapshot ------------------------------------------------------------------------

    def snapshot(self, conn: Connection) -> dict[str, Any]:
        now = self.clock()
        desk = self.desk(conn.agent_id)
        view = self.controller.engine.agent(conn.agent_id)
        try:
            config = self.controller.config.agent(conn.agent_id)
            name, queues = config.name, list(config.queues)
        except KeyError:
            name, queues = "", []
        # The engine is the truth; the desk only adds what it does not keep (pops).
        if view.state is not AgentState.RESERVED or (
            desk.offer is not None and desk.offer["call_id"] != view.call_id
        ):
            self._set_offer(desk, None)
        if view.state in (AgentState.ON_CALL, AgentState.WRAP_UP) and view.call_id:
            if view.state is AgentState.ON_CALL and view.call_id not in desk.calls:
                desk.calls[view.call_id] = self._call_from_engine(view.call_id, view.since)
            if view.state is AgentState.WRAP_UP and desk.wrap_up is None:
                desk.wrap_up = self._wrap_up_body(view.call_id, view.queue or "", view.since)
        elif view.state is AgentState.NOT_READY and view.reason == TRANSFER_REASON:
            # A call transferred to the agent rings their phone (not an ACD offer).
            for call_id in [c for c, call in desk.calls.items() if call.stage is not Stage.RINGING]:
                del desk.calls[call_id]
        elif view.state is not AgentState.ON_CALL:
            desk.calls.clear()
        if self.controls is not None:  # the hold state as the call controls know it
            for info in self.controls.calls(conn.agent_id):
                call = desk.calls.get(info.call_id)
                if call is not None:
                    call.on_hold = info.on_hold
        if view.state is not AgentState.WRAP_UP:
            desk.wrap_up = None
        figures = self._figures_for(conn.agent_id, now)
        desk.figures = figures
        return message(
            ServerType.SNAPSHOT,
            now,
            read_only=conn.read_only,
            agent={
                "id": conn.agent_id,
                "name": name,
                "state": view.state.value,
                "since": iso(view.since),
                "reason": view.reason,
                "call_id": view.call_id,
                "queue": view.queue,
                "queues": queues,
            },
            offer=desk.offer,
            calls=[call.as_dict() for call in desk.calls.values()],
            wrap_up=desk.wrap_up,
            queues=figures,
            reason_codes=list(self.reason_codes),
            features={
                "call_controls": self.controls is not None,
                "scheduled_callbacks": False,
            },
        )

    def _call_from_engine(self, call_id: str, since: float) -> DeskCall:
        live = self.controller.calls.get(call_id)
        queue = live.queue if live is not None else ""
        caller = live.caller if live is not None else ""
        return DeskCall(call_id, queue, caller, Stage.ANSWERED, since)

    def _control_call(self, agent_id: str, call_id: str) -> CallInfo | None:
        """The call as the call controls know it (direction, hold), if they do."""
        if self.controls is None:
            return None
        return next((c for c in self.controls.calls(agent_id) if c.call_id == call_id), None)

    def _wrap_up_body(self, call_id: str, queue: str, started: float) -> dict[str, Any]:
        try:
            seconds = self.controller.queue_config(queue).wrap_up_s
        except KeyError:
            seconds = 0.0
        return {
            "call_id": call_id,
            "started_at": iso(started),
            "deadline": iso(started + seconds),
            "wrap_up_s": seconds,
        }

    # -- decisions -------------------------------------------------------------------------

    def _on_decision(self, decision: Decision) -> None:
        if self._closed:
            return
        # The pops first: an Offer in the same batch as its CallQueued finds the entry.
        self.pops.on_decision(decision)
        match decision:
            case Offer():
                self._offered(decision)
            case OfferWithdrawn():
                self._withdrawn(decision.agent_id, decision.call_id, decision.reason, decision.at)
            case AgentStateChanged():
                self._state_changed(decision)
            case CallEnded():
                self._ended(decision)

    def _offered(self, offer: Offer) -> None:
        desk = self.desk(offer.agent_id)
        try:
            title = self.controller.queue_config(offer.queue).title
        except KeyError:
            title = ""
        body = {
            "call_id": offer.call_id,
            "queue": offer.queue,
            "queue_title": title,
            "caller": offer.caller,
            "callback_number": offer.callback_number,
            "offered_at": iso(offer.at),
            "ring_timeout_s": offer.ring_timeout_s,
            "ring_deadline": iso(offer.at + offer.ring_timeout_s),
            "pop": self.pops.pop_for(offer),
        }
        self._set_offer(desk, body)
        self._send(desk, message(ServerType.OFFER, offer.at, **body), has_pop=True)
        self._progress(desk, offer.call_id, Stage.RINGING, offer.at, {})

    def _set_offer(self, desk: Desk, body: dict[str, Any] | None) -> None:
        """The offer ringing on the desk (None: none), indexed by call for _pop_completed."""
        old = desk.offer
        if old is not None:
            agents = self._offers.get(old["call_id"])
            if agents is not None:
                agents.discard(desk.agent_id)
                if not agents:
                    del self._offers[old["call_id"]]
        desk.offer = body
        if body is not None:
            self._offers.setdefault(body["call_id"], set()).add(desk.agent_id)

    def _pop_completed(self, call_id: str) -> None:
        """A prefetch ended after its offer went out: send the offer again, complete."""
        for agent_id in sorted(self._offers.get(call_id, ())):
            desk = self._desks[agent_id]  # desks are kept: _set_offer indexed this one
            offer = desk.offer
            if offer is None or offer["call_id"] != call_id or offer["pop"].get("complete"):
                continue
            entry_offer = self._offer_of(offer)
            offer["pop"] = self.pops.pop_for(entry_offer)
            self._send(desk, message(ServerType.OFFER, self.clock(), **offer), has_pop=True)
        for agent_id, answered in sorted(self._incomplete.pop(call_id, {}).items()):
            desk = self._desks[agent_id]
            call = desk.calls.get(call_id)
            if call is None:
                continue
            call.pop = self.pops.pop_for(answered)
            pop = message(ServerType.POP, self.clock(), call_id=call_id, pop=call.pop)
            self._send(desk, pop, has_pop=True)

    def _offer_of(self, body: Mapping[str, Any]) -> Offer:
        offered = datetime.fromisoformat(str(body["offered_at"])).timestamp()
        return Offer(
            call_id=body["call_id"],
            agent_id="",
            queue=body["queue"],
            endpoint="",
            ring_timeout_s=body["ring_timeout_s"],
            callback_number=body["callback_number"],
            caller=body["caller"],
            at=offered,
        )

    def _withdrawn(self, agent_id: str, call_id: str, reason: str, at: float) -> None:
        desk = self.desk(agent_id)
        if desk.offer is None or desk.offer["call_id"] != call_id:
            return
        self._set_offer(desk, None)
        self._send(desk, message(ServerType.OFFER_WITHDRAWN, at, call_id=call_id, reason=reason))

    def _state_changed(self, change: AgentStateChanged) -> None:
        desk = self.desk(change.agent_id)
        at = change.at
        ringing = change.previous is AgentState.RESERVED and desk.offer is not None
        if ringing and change.state is not AgentState.ON_CALL and desk.offer is not None:
            # A RONA or a refusal: the offer is over even when no OfferWithdrawn says so.
            reason = change.reason or "not taken"
            self._withdrawn(change.agent_id, desk.offer["call_id"], reason, at)
        self._send(
            desk,
            message(
                ServerType.AGENT_STATE,
                at,
                state=change.state.value,
                previous=change.previous.value,
                reason=change.reason,
                call_id=change.call_id,
                since=iso(at),
            ),
        )
        if change.state is AgentState.ON_CALL and change.call_id:
            self._answered(desk, change.call_id, at, change.reason)
        if change.state is AgentState.WRAP_UP and change.call_id:
            call = desk.calls.pop(change.call_id, None)
            queue = call.queue if call is not None else self._queue_of(change.call_id, desk)
            desk.wrap_up = self._wrap_up_body(change.call_id, queue, at)
            self._send(desk, message(ServerType.WRAP_UP, at, **desk.wrap_up))
        elif change.previous is AgentState.WRAP_UP:
            desk.wrap_up = None

    def _queue_of(self, call_id: str, desk: Desk) -> str:
        handled = self._handled.get((call_id, desk.agent_id))
        return handled.queue if handled is not None else ""

    def _answered(self, desk: Desk, call_id: str, at: float, reason: str | None) -> None:
        """The agent is on the call: an offer answered, a transfer to them, a click-to-dial."""
        offer = desk.offer if desk.offer is not None and desk.offer["call_id"] == call_id else None
        self._set_offer(desk, None)
        info = self._control_call(desk.agent_id, call_id)
        outbound = info is not None and info.direction == "outbound"
        detail: dict[str, Any] = {}
        if offer is not None:
            call = DeskCall(call_id, offer["queue"], offer["caller"], Stage.ANSWERED, at)
            call.pop = offer["pop"]
            callback = offer["callback_number"] is not None
            if not offer["pop"].get("complete"):
                self._incomplete.setdefault(call_id, {})[desk.agent_id] = self._offer_of(offer)
                while len(self._incomplete) > HANDLED_MAX:
                    self._incomplete.popitem(last=False)
        elif info is not None and outbound:
            # Click-to-dial: on the call from the click; it rings until the customer answers.
            call = DeskCall(call_id, info.queue, info.caller, Stage.RINGING, at)
            callback = False
            detail = {"direction": "outbound", "number": info.caller}
        else:
            call = self._call_from_engine(call_id, at)
            callback = False
            if reason == TRANSFER_REASON:
                detail = {"transferred": True}
        desk.calls[call_id] = call
        with contextlib.suppress(ValueError):
            desk.ended.remove(call_id)  # the same call again (transferred back to its queue)
        self._handled[(call_id, desk.agent_id)] = HandledCall(
            agent_id=desk.agent_id,
            queue=call.queue,
            caller=offer["callback_number"] or call.caller if offer is not None else call.caller,
            callback=callback,
            customer_id=self.pops.customer_id(call_id),
            answered_at=at,
            outbound=outbound,
        )
        while len(self._handled) > HANDLED_MAX:
            self._handled.popitem(last=False)
        self._progress(desk, call_id, call.stage, at, detail)

    def _ended(self, ended: CallEnded) -> None:
        desk = self.desk(ended.agent_id)
        key = (ended.call_id, ended.agent_id)
        handled = self._handled.get(key)
        if handled is not None:
            self._handled[key] = replace(handled, ended_at=ended.at)
        self._call_over(desk, ended.call_id, ended.at, {"talk_s": ended.talk_s})

    def _call_over(self, desk: Desk, call_id: str, at: float, detail: Mapping[str, Any]) -> None:
        """`ended`, once: the ACD's CallEnded and the call controls both report it."""
        known = desk.calls.pop(call_id, None) is not None
        waiting = self._incomplete.get(call_id)
        if waiting is not None:
            waiting.pop(desk.agent_id, None)
            if not waiting:
                del self._incomplete[call_id]
        if not known and call_id in desk.ended:
            return
        if call_id not in desk.ended:
            desk.ended.append(call_id)
        self._progress(desk, call_id, Stage.ENDED, at, detail)

    def _progress(
        self, desk: Desk, call_id: str, stage: Stage, at: float, detail: Mapping[str, Any]
    ) -> None:
        self._send(
            desk,
            message(
                ServerType.CALL_PROGRESS,
                at,
                call_id=call_id,
                stage=stage.value,
                since=iso(at),
                detail=dict(detail),
            ),
        )

    def on_call_progress(self, progress: CallProgress) -> None:
        """CallControls' progress listener: what only the call controls know.

        CallControls also reports, from the same ACD decisions the hub gets,
        the ringing of an offer, an agent's answer and a call's end (before or
        after the hub, by listener order); those are the hub's own (with the
        offer and its pop) and dropped here. Kept: hold and resume, transfers,
        the legs of a click-to-dial (`ringing` {party}, the customer's
        `answered`), a transfer ringing this agent and its end when not answered.
        """
        if self._closed:
            return
        stage = _STAGES.get(progress.stage)
        if stage is None:
            log.warning("unknown call progress stage %r for %s", progress.stage, progress.call_id)
            return
        agent_id, call_id, at = progress.agent_id, progress.call_id, progress.at
        desk = self.desk(agent_id)
        call = desk.calls.get(call_id)
        detail = dict(progress.detail)
        match stage:
            case Stage.RINGING:
                if self._rings_for_offer(desk, call_id):
                    return  # the offer's ringing, sent with the offer
                if call is None:  # a call transferred to this agent rings their phone
                    caller = str(detail.get("caller") or detail.get("number") or "")
                    call = desk.calls[call_id] = DeskCall(call_id, "", caller, stage, at)
            case Stage.ANSWERED:
                if call is None or call.stage is not Stage.RINGING:
                    return  # the agent answered: the ACD's on_call, already sent
                call.stage, call.since = stage, at  # the customer of a click-to-dial
            case Stage.ENDED:
                if call is not None:  # else an offer's end (offer_withdrawn) or sent
                    self._call_over(desk, call_id, at, detail)
                return
            case Stage.ON_HOLD | Stage.RESUMED:
                if call is not None:
                    call.stage, call.since = stage, at
                    call.on_hold = stage is Stage.ON_HOLD
            case Stage.TRANSFERRED:
                desk.calls.pop(call_id, None)
                detail = {"kind": detail.get("target_kind"), "to": detail.get("target")}
        self._progress(desk, call_id, stage, at, detail)

    def _rings_for_offer(self, desk: Desk, call_id: str) -> bool:
        """Whether the agent's phone rings for an ACD offer of the call."""
        if desk.offer is not None and desk.offer["call_id"] == call_id:
            return True
        try:
            view = self.controller.engine.agent(desk.agent_id)
        except KeyError:
            return False
        return view.state is AgentState.RESERVED and view.call_id == call_id

    # -- queue figures ----------------------------------------------------------------------

    def _figures_for(self, agent_id: str, now: float) -> list[dict[str, Any]]:
        """The figures of the agent's own queues, now (for a snapshot)."""
        names = _agent_queues(self.controller, agent_id)
        if not names:
            return []
        return [
            _figure(self.controller, figures)
            for figures in self.controller.engine.queue_figures(now, names)
        ]

    async def _run_figures(self) -> None:
        """At most once a second, only to agents with a desktop and only on change."""
        while True:
            await asyncio.sleep(self.figures_every_s)
            self.send_figures()

    def send_figures(self) -> None:
        """One tick: each queue's figures computed once, each distinct message encoded once,
        sent to the desktops whose agent's figures changed since they last got them."""
        watched = [d for d in self._desks.values() if d.connections]
        if not watched:
            return
        now = self.clock()
        previous = self._queue_figures
        current: dict[str, dict[str, Any]] = {}
        for queue in self.controller.engine.queue_figures(now):
            figure = _figure(self.controller, queue)
            old = previous.get(queue.queue)
            current[queue.queue] = old if old == figure else figure
        self._queue_figures = current
        shared_before = self._shared_figures
        shared: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        texts: dict[tuple[str, ...], str] = {}
        for desk in watched:
            names = _agent_queues(self.controller, desk.agent_id)
            figures = shared.get(names)
            if figures is None:
                figures = [current[name] for name in names if name in current]
                old_list = shared_before.get(names)
                if old_list is not None and _same_objects(old_list, figures):
                    figures = old_list
                shared[names] = figures
            if desk.figures is figures:
                continue  # already sent to this desk
            if desk.figures != figures:
                text = texts.get(names)
                if text is None:
                    text = texts[names] = encode(
                        message(ServerType.QUEUE_FIGURES, now, queues=figures)
                    )
                for conn in list(desk.connections):
                    conn.send_text(text)
            desk.figures = figures
        self._shared_figures = shared

    # -- commands -------------------------------------------------------------------------------

    async def handle_text(self, conn: Connection, text: str) -> None:
        """One text frame from a desktop: carried out, or answered with an error."""
        now = self.clock()
        try:
            command = parse_command(
                text, reason_codes=self.reason_codes, now=datetime.fromtimestamp(now, UTC)
            )
            if conn.read_only and not isinstance(command, READ_ONLY_COMMANDS):
                raise refusal(
                    command, ErrorCode.READ_ONLY, "this connection watches the agent: read-only"
                )
            await self._dispatch(conn, command)
        except ProtocolError as error:
            conn.send_text(encode(error_message(error, self.clock())))
        except Exception:
            log.exception("desktop command of %s failed", conn.agent_id)
            conn.send_text(
                encode(
                    error_message(
                        ProtocolError(ErrorCode.INTERNAL, "server fault; not carried out"),
                        self.clock(),
                    )
                )
            )

    def send_error(self, conn: Connection, code: ErrorCode, text: str) -> None:
        conn.send_text(encode(error_message(ProtocolError(code, text), self.clock())))

    async def _dispatch(self, conn: Connection, command: Command) -> None:
        agent_id = conn.agent_id
        acd = self.controller
        match command:
            case Ping():
                conn.send_text(encode(message(ServerType.PONG, self.clock())))
            case GetSnapshot():
                self._reply(conn, self.snapshot(conn))
            case Ready():
                if acd.agent_state(agent_id) is AgentState.LOGGED_OUT:
                    self._acd(command, lambda: acd.login(agent_id))
                else:
                    self._acd(command, lambda: acd.make_available(agent_id))
                self._ack(conn, command)
            case NotReady(reason=reason):
                self._acd(command, lambda: acd.make_not_ready(agent_id, reason))
                self._ack(conn, command)
            case Logout():
                self._acd(command, lambda: acd.logout(agent_id))
                self._ack(conn, command)
            case Hold() | Unhold() | Transfer() | HangUp():
                await self._call_control(conn, command)
            case Dial(number=number):
                controls = self._controls(command)
                result = await self._controlled(command, controls.click_to_dial(agent_id, number))
                self._ack(conn, command, {"call_id": result.call_id})
            case WrapUp():
                detail = await self._wrap_up(conn, command)
                self._ack(conn, command, detail)
            case ListCallbacks():
                await self._list_callbacks(conn, command)

    def _ack(
        self, conn: Connection, command: Command, detail: Mapping[str, Any] | None = None
    ) -> None:
        conn.send_text(encode(ack_message(command, self.clock(), detail)))

    def _acd(self, command: Command, change: Callable[[], list[Decision]]) -> None:
        try:
            change()
        except IllegalTransition as exc:
            raise refusal(command, ErrorCode.ILLEGAL_STATE, str(exc)) from None
        except KeyError as exc:
            raise refusal(command, ErrorCode.ILLEGAL_STATE, f"unknown to the ACD: {exc}") from None

    def _controls(self, command: Command) -> CallControls:
        if self.controls is None:
            raise refusal(
                command,
                ErrorCode.NOT_AVAILABLE,
                "call controls (hold, transfer, hang-up, dial) are not available on this server",
            )
        return self.controls

    async def _controlled(
        self, command: Command, action: Awaitable[ControlResult]
    ) -> ControlResult:
        """A call control carried out, or its refusal with the control's code.

        No deadline of ours: CallControls bounds each of its AMI actions, and
        cancelling one half-way (a dial after the ACD put the agent on the call,
        before the Originate) would leave the ACD and Asterisk disagreeing.
        """
        try:
            return await action
        except CallControlError as exc:
            code = _CONTROL_ERRORS.get(exc.code, ErrorCode.FAILED)
            field: str | None = None
            if isinstance(command, Dial) and code is ErrorCode.BAD_NUMBER:
                field = "number"
            elif isinstance(command, Transfer) and code in (
                ErrorCode.BAD_NUMBER,
                ErrorCode.UNKNOWN_TARGET,
                ErrorCode.TARGET_UNAVAILABLE,
            ):
                field = "target.to"
            raise ProtocolError(
                code, str(exc), field=field, re=command.id, for_type=type_of(command)
            ) from None

    async def _call_control(
        self, conn: Connection, command: Hold | Unhold | Transfer | HangUp
    ) -> None:
        controls = self._controls(command)
        agent_id = conn.agent_id
        desk = self.desk(agent_id)
        if command.call_id not in desk.calls:
            raise refusal(
                command, ErrorCode.NOT_YOUR_CALL, f"call {command.call_id!r} is not yours"
            )
        # The controls act on the agent's current call: it must be the one the page named.
        current = [info.call_id for info in controls.calls(agent_id)]
        if current and command.call_id not in current:
            raise refusal(
                command,
                ErrorCode.NOT_YOUR_CALL,
                f"call {command.call_id!r} is no longer yours (you are on {current[0]!r})",
            )
        match command:
            case Hold():
                result = await self._controlled(command, controls.hold(agent_id))
            case Unhold():
                result = await self._controlled(command, controls.unhold(agent_id))
            case HangUp():
                result = await self._controlled(command, controls.hang_up(agent_id))
            case Transfer(target=target):
                result = await self._controlled(
                    command, controls.blind_transfer(agent_id, _control_target(target))
                )
        if result.call_id != command.call_id:  # cannot happen: checked above
            log.error("%s of %s acted on %s", type_of(command), command.call_id, result.call_id)
        self._ack(conn, command, {"call_id": result.call_id})

    # -- wrap-up ---------------------------------------------------------------------------------

    async def _took_call(self, call_id: str, agent_id: str) -> bool:
        """Whether the agent was on the call (a transferred call had several agents)."""
        if (call_id, agent_id) in self._handled:
            return True
        if self.database is None:
            return False
        try:  # after a restart the event log knows who took the call
            async with asyncio.timeout(DB_TIMEOUT_S):
                return await agent_took_call(self.database, call_id, agent_id)
        except _DB_ERRORS as exc:
            log.warning("wrap-up of %s: owner unknown, database failing: %s", call_id, exc)
            return False

    async def _wrap_up(self, conn: Connection, command: WrapUp) -> dict[str, Any]:
        agent_id = conn.agent_id
        if not await self._took_call(command.call_id, agent_id):
            raise refusal(
                command, ErrorCode.NOT_YOUR_CALL, f"call {command.call_id!r} was not yours"
            )
        if self.events is None:
            raise refusal(command, ErrorCode.NOT_AVAILABLE, "no event log to keep the wrap-up")
        # The instant as the payload keeps it (milliseconds): the interaction's
        # wrap_up_at then equals the event's occurred_at, which the replay compares.
        submitted = datetime.fromisoformat(iso(self.clock()) or "")
        handled = self._handled.get((command.call_id, agent_id))
        payload: dict[str, Any] = {
            "disposition": command.disposition,
            "notes": command.notes,
            "resolved": command.resolved,
            "follow_up_at": iso(command.follow_up_at),
            # The ACD cannot schedule a callback at a time yet: kept with the interaction.
            "follow_up": "stored" if command.follow_up_at is not None else None,
            "submitted_at": iso(submitted),
            "caller": handled.caller if handled is not None else None,
            "callback": handled.callback if handled is not None else False,
            "outbound": handled.outbound if handled is not None else False,
            "customer_id": handled.customer_id if handled is not None else None,
            "answered_at": iso(handled.answered_at) if handled is not None else None,
            "ended_at": iso(handled.ended_at) if handled is not None else None,
        }
        queue = handled.queue if handled is not None else None
        if queue:
            payload["queue"] = queue
        event = Event(
            type=WRAP_UP_EVENT,
            payload=payload,
            call_id=command.call_id,
            agent_id=agent_id,
            queue_id=queue,
            occurred_at=submitted,
        )
        # Journaled first, durably: from the ack on the wrap-up survives a database
        # outage, a restart and a crash.
        try:
            saved = await self.events.append_durable(event)
        except (OSError, EventLogError) as exc:
            log.error("wrap-up of %s by %s could not be saved: %s", command.call_id, agent_id, exc)
            raise refusal(
                command, ErrorCode.FAILED, "the wrap-up could not be saved; submit it again"
            ) from None
        self._store_later(PendingWrapUp(command.call_id, agent_id, payload))
        view = self.controller.engine.agent(agent_id)
        if view.state is AgentState.WRAP_UP and view.call_id == command.call_id:
            with contextlib.suppress(IllegalTransition):
                self.controller.end_wrap_up(agent_id)
        return {
            "call_id": command.call_id,
            "journaled": True,
            "saved": saved.value,
            "follow_up": payload["follow_up"],
        }

    def _store_later(self, pending: PendingWrapUp) -> None:
        """The agent's newest wrap-up of the call goes to the table; one writer for each."""
        key = (pending.call_id, pending.agent_id)
        self._pending[key] = pending
        if key not in self._writers:
            task = asyncio.create_task(
                self._write_wrap_up(key),
                name=f"desktop-wrap-up-{pending.call_id}-{pending.agent_id}",
            )
            self._writers[key] = task
            task.add_done_callback(functools.partial(self._writer_done, key))

    def _writer_done(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._writers.get(key) is task:
            del self._writers[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("wrap-up writer of %s failed", key, exc_info=task.exception())

    async def _write_wrap_up(self, key: tuple[str, str]) -> None:
        call_id = key[0]
        delay = RETRY_INITIAL_S
        while True:
            pending = self._pending[key]
            try:
                async with asyncio.timeout(DB_TIMEOUT_S):
                    await self._write_interaction(pending)
            except asyncpg.ForeignKeyViolationError:
                # The matched customer was deleted meanwhile: keep the wrap-up unlinked.
                payload = {**pending.payload, "customer_id": None}
                self._pending[key] = pending = PendingWrapUp(call_id, pending.agent_id, payload)
                continue
            except ValueError as exc:
                # The store refused the content: retrying cannot help; the event log keeps it.
                log.critical("wrap-up of %s refused by the store: %s", call_id, exc)
            except _DB_ERRORS as exc:
                log.warning("wrap-up of %s not stored yet (%s); retrying", call_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            if self._pending.get(key) is pending:
                del self._pending[key]
                return
            # A newer submission came while writing: write that one too.

    async def _write_interaction(self, pending: PendingWrapUp) -> None:
        assert self.database is not None
        payload = pending.payload
        submitted = _instant(payload.get("submitted_at")) or datetime.now(UTC)
        started = _instant(payload.get("answered_at")) or submitted
        ended = _instant(payload.get("ended_at"))
        recording = await recording_file(self.database, pending.call_id)
        callback = bool(payload.get("callback"))
        outbound = callback or bool(payload.get("outbound"))
        await record_interaction(
            self.database,
            call_key=pending.call_id,
            channel="callback" if callback else "phone",
            direction="outbound" if outbound else "inbound",
            started_at=started,
            ended_at=ended if ended is None or ended >= started else started,
            customer_id=payload.get("customer_id"),
            address=payload.get("caller"),
            queue_name=payload.get("queue"),
            agent_login=pending.agent_id,
            disposition=payload.get("disposition"),
            notes=payload.get("notes"),
            resolved=payload.get("resolved"),
            recording_path=recording,
            wrap_up_at=submitted,
            follow_up_at=_instant(payload.get("follow_up_at")),
        )

    async def _replay_wrap_ups(self) -> None:
        """Journaled wrap-ups a previous process did not get into the interactions table."""
        assert self.database is not None and self.events is not None
        delay = RETRY_INITIAL_S
        while True:
            try:
                # Spilled events of the previous run reach the table first.
                async with asyncio.timeout(DB_TIMEOUT_S * 3):
                    await self.events.flush()
                async with asyncio.timeout(DB_TIMEOUT_S):
                    journaled = await unapplied_wrap_ups(self.database, WRAP_UP_EVENT, REPLAY_DAYS)
                break
            except _DB_ERRORS as exc:
                log.warning("wrap-up replay waits for the database: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
        for wrap_up in journaled:
            if (wrap_up.call_id, wrap_up.agent_id) in self._pending:
                continue  # submitted again in this process: that one wins
            log.info(
                "re-applying the journaled wrap-up of %s by %s", wrap_up.call_id, wrap_up.agent_id
            )
            self._store_later(
                PendingWrapUp(wrap_up.call_id, wrap_up.agent_id, dict(wrap_up.payload))
            )

    # -- callbacks ---------------------------------------------------------------------------

    async def _list_callbacks(self, conn: Connection, command: ListCallbacks) -> None:
        queues = tuple(_agent_queues(self.controller, conn.agent_id))
        items = callback_calls(self.controller, queues)
        scheduled: dict[str, dict[str, Any]] = {}
        if self.database is not None:
            try:
                async with asyncio.timeout(DB_TIMEOUT_S):
                    follow_ups = await scheduled_follow_ups(self.database, conn.agent_id)
            except _DB_ERRORS as exc:
                log.warning("scheduled follow-ups of %s unavailable: %s", conn.agent_id, exc)
                follow_ups = []
            for item in follow_ups:
                scheduled[item.call_key or ""] = _scheduled_item(
                    item.call_key,
                    item.queue_name,
                    item.address,
                    item.wrap_up_at,
                    item.follow_up_at,
                    item.customer_name,
                )
        # Wrap-ups still on their way to the database count too.
        for pending in self._pending.values():
            due = _instant(pending.payload.get("follow_up_at"))
            if pending.agent_id == conn.agent_id and due is not None:
                scheduled[pending.call_id] = _scheduled_item(
                    pending.call_id,
                    pending.payload.get("queue"),
                    pending.payload.get("caller"),
                    _instant(pending.payload.get("submitted_at")),
                    due,
                    None,
                )
        items.extend(sorted(scheduled.values(), key=lambda item: str(item["due"])))
        conn.send_text(
            encode(message(ServerType.CALLBACKS, self.clock(), re=command.id, callbacks=items))
        )


def _control_target(target: TransferTarget) -> ControlTarget:
    match target.kind:
        case TargetKind.QUEUE:
            return ControlTarget.queue(target.to)
        case TargetKind.AGENT:
            return ControlTarget.agent(target.to)
        case TargetKind.NUMBER:
            return ControlTarget.number(target.to)


def _scheduled_item(
    call_id: str | None,
    queue: str | None,
    number: str | None,
    since: datetime | None,
    due: datetime | None,
    customer: str | None,
) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "queue": queue,
        "number": number,
        "status": "scheduled",
        "since": iso(since),
        "due": iso(due),
        "customer": customer,
    }


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value)


def _agent_queues(controller: CallController, agent_id: str) -> tuple[str, ...]:
    try:
        return controller.config.agent(agent_id).queues
    except KeyError:
        return ()


def _figure(controller: CallController, queue: QueueFigures) -> dict[str, Any]:
    try:
        title = controller.queue_config(queue.queue).title
    except KeyError:
        title = ""
    return {
        "queue": queue.queue,
        "title": title,
        "open": queue.open,
        "waiting": queue.waiting,
        # Whole seconds: the figure changes (and is sent) at most once a second.
        "longest_wait_s": round(queue.longest_wait_s),
        "estimated_wait_s": (
            round(queue.estimated_wait_s) if queue.estimated_wait_s is not None else None
        ),
    }


def _same_objects(old: Sequence[object], new: Sequence[object]) -> bool:
    return len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True))


def _strip_recordings(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a message without recording URLs in its pops (agents may not play them)."""
    out = dict(data)
    if isinstance(out.get("pop"), dict):
        out["pop"] = for_agents(out["pop"])
    offer = out.get("offer")
    if isinstance(offer, dict) and isinstance(offer.get("pop"), dict):
        out["offer"] = {**offer, "pop": for_agents(offer["pop"])}
    calls = out.get("calls")
    if isinstance(calls, list):
        out["calls"] = [
            {**c, "pop": for_agents(c["pop"])} if isinstance(c.get("pop"), dict) else c
            for c in calls
        ]
    return out
