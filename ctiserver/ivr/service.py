"""The IVR in the running server: FastAGI entry points, hand-offs and the call record.

FastAGI scripts:
- `ivr` — a new call: runs the flow `FlowLibrary.pick` chooses for it.
- `survey` — the shipped dialplan's `[cti-survey]`, after the agent hung up:
  asks the survey the call's queue node named (channel variable CTI_SURVEY,
  "<flow id>/<survey node>") and stores the answer with the call and the agent.

Each call's IVR record goes to the event log:
- `ivr.started`   {caller}                                   at the first node
- `ivr.ended`     the whole record (record.py): path, outcome, variables, customer
                  (at the hand-off to a queue, so the screen-pop has it while the
                  caller waits; otherwise when the flow ends)
- `ivr.voicemail` {file, samples, queue, mailbox}
- `ivr.survey`    {node, score (None: no answer), scale, question, flow}, with
                  agent_id and queue_id of the agent who took the call
The event log keeps them through a database outage (it spills to disk).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ctiserver.acd.fastagi import QueueEntry
from ctiserver.acd.model import AttributeCondition, CallRequest, SkillRequirement
from ctiserver.asterisk.agi.server import FastAgiServer
from ctiserver.asterisk.agi.session import AgiSession
from ctiserver.ivr.flow import LookupKey, SurveyNode
from ctiserver.ivr.library import FlowLibrary, LoadedFlow
from ctiserver.ivr.record import IvrOutcome, IvrRecord
from ctiserver.ivr.runner import (
    STATE_VARIABLE,
    SURVEY_VARIABLE,
    CustomerFacts,
    FlowRun,
    IvrPrompts,
    QueueHandoff,
    ask_survey,
)
from ctiserver.store.call_history import connected_agent, last_agent
from ctiserver.store.customers import (
    account_balance,
    find_customer_by_account,
    find_customers_by_phone,
)
from ctiserver.store.database import Database
from ctiserver.store.events import Event, EventLog

log = logging.getLogger(__name__)

# Calls handed to a queue with a survey to come, remembered so the survey runs on
# the flow version the call ran on; the oldest are dropped past this many.
_PENDING_SURVEYS = 10_000


class IvrService:
    """Runs flows for FastAGI calls and connects them to the ACD and the event log."""

    def __init__(
        self,
        library: FlowLibrary,
        *,
        queue_entry: QueueEntry | None = None,
        database: Database | None = None,
        events: EventLog | None = None,
        voicemail_file: Callable[[str], str] = lambda call_id: f"/tmp/cti-vm-{call_id}",
        prompts: IvrPrompts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.library = library
        self.queue_entry = queue_entry
        self.database = database
        self.events = events
        self._voicemail_file = voicemail_file
        self.prompts = prompts or IvrPrompts()
        self.clock = clock
        self.active: dict[str, FlowRun] = {}  # call id -> its run, while in the IVR or queued
        self._surveys: OrderedDict[str, tuple[LoadedFlow, SurveyNode]] = OrderedDict()

    def register(self, server: FastAgiServer) -> None:
        server.route("ivr", self.serve)
        server.route("survey", self.survey)

    def record_of(self, call_id: str) -> dict[str, Any] | None:
        """The IVR record of a call still on its FastAGI session (the screen-pop's source)."""
        run = self.active.get(call_id)
        return None if run is None else run.record.as_dict()

    # -- FastAGI entry points ---------------------------------------------------------------

    async def serve(self, session: AgiSession) -> None:
        env = session.env
        loaded = self.library.pick(env)
        if loaded is None:
            log.error(
                "IVR: no flow for call %s (dialled %r, flow=%r); sending it to the fallback",
                env.uniqueid,
                env.dnid or env.extension,
                env.arguments.get("flow", ""),
            )
            await session.set_variable(STATE_VARIABLE, "fallback")
            return
        run = FlowRun(
            loaded.flow,
            loaded.id,
            loaded.version,
            session,
            self,
            prompts=self.prompts,
            clock=self.clock,
        )
        call_id = run.record.call_id
        self.active[call_id] = run
        try:
            record = await run.run()
        finally:
            self.active.pop(call_id, None)
        survey = run.survey_node
        if record.outcome is IvrOutcome.QUEUED and survey is not None:
            self._surveys[call_id] = (loaded, survey)
            while len(self._surveys) > _PENDING_SURVEYS:
                self._surveys.popitem(last=False)

    async def survey(self, session: AgiSession) -> None:
        """After the agent leg: ask the queue node's survey, store the score with the agent."""
        call_id = session.env.uniqueid
        found = self._surveys.pop(call_id, None)
        if found is None:
            found = self._survey_from_variable(await session.get_variable(SURVEY_VARIABLE) or "")
        if found is None:
            log.warning("survey for call %s: no survey known; ending", call_id)
            return
        loaded, node = found
        agent = await self._agent_of(call_id)

        def answered(asked: SurveyNode, score: int | None) -> None:
            self._append(
                Event(
                    "ivr.survey",
                    {
                        "node": asked.id,
                        "score": score,
                        "scale": asked.scale,
                        "question": asked.prompt,
                        "flow": loaded.id,
                        "version": loaded.version,
                    },
                    call_id=call_id,
                    agent_id=agent[0] if agent else None,
                    queue_id=agent[1] if agent else None,
                    occurred_at=self._instant(),
                )
            )

        await ask_survey(session, node, self.prompts, answered)
        await session.hangup()

    def _survey_from_variable(self, value: str) -> tuple[LoadedFlow, SurveyNode] | None:
        """After a restart: the survey named on the channel, in the flow's current version."""
        flow_id, _, node_id = value.partition("/")
        loaded = self.library.flows.get(flow_id)
        node = loaded.flow.nodes.get(node_id) if loaded else None
        if loaded is None or not isinstance(node, SurveyNode):
            return None
        return loaded, node

    async def _agent_of(self, call_id: str) -> tuple[str, str] | None:
        if self.database is None:
            return None
        try:
            if self.events is not None:
                await self.events.flush()  # the acd.connected of this very call
            found = await connected_agent(self.database, call_id)
        except Exception:
            log.exception("survey for call %s: could not find its agent", call_id)
            return None
        return (found.agent_id, found.queue) if found else None

    # -- IvrServices --------------------------------------------------------------------------

    async def find_customer(self, by: LookupKey, value: str) -> CustomerFacts | None:
        if self.database is None:
            return None
        if by is LookupKey.CALLER:
            matches = await find_customers_by_phone(self.database, value)
            customer = matches[0] if matches else None
        else:
            customer = await find_customer_by_account(self.database, value)
        if customer is None:
            return None
        numbers = tuple(phone.digits for phone in customer.phones)
        agent = await last_agent(self.database, customer.id, numbers)
        balance = await account_balance(self.database, value) if by is LookupKey.VARIABLE else None
        return CustomerFacts(
            customer_id=str(customer.id),
            name=customer.name,
            tier=customer.grade,
            language=customer.language or "",
            last_agent=agent or "",
            balance="" if balance is None else str(int(balance)),
        )

    async def to_queue(self, session: AgiSession, handoff: QueueHandoff) -> None:
        if self.queue_entry is None:
            log.error(
                "IVR: call %s asks for queue %s but no ACD runs",
                session.env.uniqueid,
                handoff.queue,
            )
            await session.set_variable(STATE_VARIABLE, "fallback")
            return
        await self.queue_entry.enter(
            session,
            handoff.queue,
            priority=handoff.priority,
            preferred_agent=handoff.preferred_agent,
            requirements=_requirements(handoff),
            conditions=_conditions(handoff),
            grade=handoff.tier,
        )

    async def to_callback(self, session: AgiSession, handoff: QueueHandoff, number: str) -> bool:
        entry = self.queue_entry
        if entry is None or not entry.knows(handoff.queue):
            log.error(
                "IVR: callback for call %s to unknown queue %s", session.env.uniqueid, handoff.queue
            )
            return False
        request = CallRequest(
            call_id=session.env.uniqueid,
            queue=handoff.queue,
            priority=await entry.priority_for(
                session.env.callerid, handoff.priority, grade=handoff.tier
            ),
            caller=session.env.callerid,
            callback_number=number,
            requirements=_requirements(handoff),
            conditions=_conditions(handoff),
        )
        return entry.controller.request_callback(request)

    def voicemail_file(self, call_id: str) -> str:
        return self._voicemail_file(call_id)

    def journal(self, kind: str, record: IvrRecord, payload: dict[str, object]) -> None:
        self._append(
            Event(f"ivr.{kind}", payload, call_id=record.call_id, occurred_at=self._instant())
        )

    def _append(self, event: Event) -> None:
        if self.events is not None:
            self.events.append(event)

    def _instant(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


def _requirements(handoff: QueueHandoff) -> tuple[SkillRequirement, ...]:
    return tuple(SkillRequirement(skill, level) for skill, level in handoff.skills.items())


def _conditions(handoff: QueueHandoff) -> tuple[AttributeCondition, ...]:
    return tuple(AttributeCondition(name, "=", value) for name, value in handoff.attributes.items())
