"""FastAGI entry points into the ACD: `queue` (a dialplan sends a caller to a queue)
and `queue-resume` (the shipped dialplan brings back a caller whose FastAGI
session ended while it waited, e.g. across a ctiserver restart).

    AGI(agi://ctiserver:4573/queue?queue=support&priority=2&agent=1001)

The IVR's queue step hands callers over through `QueueEntry.enter`, with the
call's own requirements and conditions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from ctiserver.acd.controller import (
    ENQUEUED_AT_VARIABLE,
    PREFERRED_AGENT_VARIABLE,
    PRIORITY_VARIABLE,
    QUEUE_VARIABLE,
    REQUIREMENTS_VARIABLE,
    STATE_VARIABLE,
    CallController,
)
from ctiserver.acd.criteria import parse_call_criteria
from ctiserver.acd.model import AttributeCondition, CallRequest, SkillRequirement
from ctiserver.asterisk.agi.server import FastAgiServer
from ctiserver.asterisk.agi.session import AgiSession

log = logging.getLogger(__name__)

# Looks up the caller's customer grade by caller id (None: unknown caller).
GradeLookup = Callable[[str], Awaitable[str | None]]


class QueueEntry:
    """Builds CallRequests from FastAGI sessions and hands them to the controller."""

    def __init__(self, controller: CallController, grade_of: GradeLookup | None = None) -> None:
        self.controller = controller
        self.grade_of = grade_of

    def register(self, server: FastAgiServer) -> None:
        server.route("queue", self.queue)
        server.route("queue-resume", self.resume)

    async def priority_for(self, caller: str, extra: int = 0, *, grade: str | None = None) -> int:
        """Queue priority boost: the customer's grade (config `[grades]`) plus `extra`.

        `grade` None: looked up by caller id. Given (the IVR found the customer,
        maybe by account number), it is used as is; "" is a customer without one.
        """
        if grade is None and self.grade_of is not None and caller:
            try:
                grade = await self.grade_of(caller)
            except Exception:
                # Routing must not stop because the customer database is down.
                log.exception("grade lookup for %s failed; routing as standard", caller)
        return self.controller.config.grade_priority.get(grade or "", 0) + extra

    async def queue(self, session: AgiSession) -> None:
        """The `queue` script: queue, priority and preferred agent from the URL."""
        arguments = session.env.arguments
        try:
            extra = int(arguments.get("priority", "0") or 0)
        except ValueError:
            extra = 0
            log.warning("queue script: priority %r is not a number", arguments.get("priority"))
        await self.enter(
            session,
            arguments.get("queue", ""),
            priority=extra,
            preferred_agent=arguments.get("agent") or None,
        )

    async def enter(
        self,
        session: AgiSession,
        queue: str,
        *,
        priority: int = 0,
        preferred_agent: str | None = None,
        requirements: tuple[SkillRequirement, ...] = (),
        conditions: tuple[AttributeCondition, ...] = (),
        grade: str | None = None,
    ) -> None:
        """Hand the caller of `session` to `queue` (the IVR's queue step ends here).

        `requirements` and `conditions` are the call's own (CallRequest);
        `grade` the customer's when the IVR already knows it, else it is
        looked up by caller id. A caller the ACD cannot take (unknown queue,
        a skill the configuration does not know, a malformed criterion) hears
        the closing message rather than waiting for nobody.
        """
        if not self.knows(queue):
            await self._refuse(session, f"unknown queue {queue!r}")
            return
        caller = session.env.callerid
        request = CallRequest(
            call_id=session.env.uniqueid,
            queue=queue,
            preferred_agent=preferred_agent,
            caller=caller,
            requirements=requirements,
            conditions=conditions,
        )
        try:
            self.controller.engine.check_request(request)
        except ValueError as exc:
            await self._refuse(session, str(exc))
            return
        boost = await self.priority_for(caller, priority, grade=grade)
        await self.controller.serve_caller(session, replace(request, priority=boost))

    async def resume(self, session: AgiSession) -> None:
        """Back from the dialplan's resume loop: same queue, same place in line."""
        queue = await session.get_variable(QUEUE_VARIABLE) or ""
        if not self.knows(queue):
            await self._refuse(session, f"resumed caller for unknown queue {queue!r}")
            return
        enqueued_raw = await session.get_variable(ENQUEUED_AT_VARIABLE) or ""
        priority_raw = await session.get_variable(PRIORITY_VARIABLE) or "0"
        preferred = await session.get_variable(PREFERRED_AGENT_VARIABLE) or None
        needs = await session.get_variable(REQUIREMENTS_VARIABLE) or ""
        try:
            enqueued_at: float | None = float(enqueued_raw)
        except ValueError:
            enqueued_at = None  # lost: the caller waits from now on rather than not at all
        try:
            priority = int(priority_raw)
        except ValueError:
            priority = 0
        # Junk or a skill gone from the configuration is dropped: the caller
        # already waited, better an agent of the queue than no place at all.
        requirements, conditions = self._criteria(session, needs)
        request = CallRequest(
            call_id=session.env.uniqueid,
            queue=queue,
            priority=priority,
            virtual_enqueued_at=enqueued_at,
            preferred_agent=preferred,
            caller=session.env.callerid,
            requirements=requirements,
            conditions=conditions,
        )
        await self.controller.serve_caller(session, request)

    def knows(self, queue: str) -> bool:
        """Whether `queue` is configured."""
        return any(q.name == queue for q in self.controller.config.queues)

    def _criteria(
        self, session: AgiSession, text: str
    ) -> tuple[tuple[SkillRequirement, ...], tuple[AttributeCondition, ...]]:
        """Criteria from CTI_REQUIREMENTS' text, keeping only what the engine takes."""
        requirements, conditions, junk = parse_call_criteria(text)
        known = self.controller.engine.skills
        junk.extend(r.skill for r in requirements if r.skill not in known)
        if junk:
            env = session.env
            log.warning("%s on %s: ignored criteria %s", env.script, env.channel, junk)
        return tuple(r for r in requirements if r.skill in known), conditions

    async def _refuse(self, session: AgiSession, why: str) -> None:
        """A caller the ACD cannot take (no such queue, refused criteria): not left
        waiting for nobody."""
        log.error("FastAGI %s on %s: %s", session.env.script, session.env.channel, why)
        await session.set_variable(STATE_VARIABLE, "done")
        await session.stream_file(self.controller.settings.prompts.closed, "")
        await session.hangup()
