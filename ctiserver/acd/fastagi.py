"""FastAGI entry points into the ACD: `queue` (a dialplan sends a caller to a queue)
and `queue-resume` (the shipped dialplan brings back a caller whose FastAGI
session ended while it waited, e.g. across a ctiserver restart).

    AGI(agi://ctiserver:4573/queue?queue=support&priority=2&agent=1001)

The IVR hands callers over through `CallController.serve_caller` directly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ctiserver.acd.controller import (
    ENQUEUED_AT_VARIABLE,
    PREFERRED_AGENT_VARIABLE,
    PRIORITY_VARIABLE,
    QUEUE_VARIABLE,
    STATE_VARIABLE,
    CallController,
)
from ctiserver.acd.model import CallRequest
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

    async def priority_for(self, caller: str, extra: int = 0) -> int:
        """Queue priority boost: the customer's grade (config `[grades]`) plus `extra`."""
        grade = None
        if self.grade_of is not None and caller:
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
    ) -> None:
        """Hand the caller of `session` to `queue` (the IVR's queue step ends here)."""
        if not self._known(queue):
            await self._refuse(session, f"unknown queue {queue!r}")
            return
        caller = session.env.callerid
        request = CallRequest(
            call_id=session.env.uniqueid,
            queue=queue,
            priority=await self.priority_for(caller, priority),
            preferred_agent=preferred_agent,
            caller=caller,
        )
        await self.controller.serve_caller(session, request)

    async def resume(self, session: AgiSession) -> None:
        """Back from the dialplan's resume loop: same queue, same place in line."""
        queue = await session.get_variable(QUEUE_VARIABLE) or ""
        if not self._known(queue):
            await self._refuse(session, f"resumed caller for unknown queue {queue!r}")
            return
        enqueued_raw = await session.get_variable(ENQUEUED_AT_VARIABLE) or ""
        priority_raw = await session.get_variable(PRIORITY_VARIABLE) or "0"
        preferred = await session.get_variable(PREFERRED_AGENT_VARIABLE) or None
        try:
            enqueued_at: float | None = float(enqueued_raw)
        except ValueError:
            enqueued_at = None  # lost: the caller waits from now on rather than not at all
        try:
            priority = int(priority_raw)
        except ValueError:
            priority = 0
        request = CallRequest(
            call_id=session.env.uniqueid,
            queue=queue,
            priority=priority,
            virtual_enqueued_at=enqueued_at,
            preferred_agent=preferred,
            caller=session.env.callerid,
        )
        await self.controller.serve_caller(session, request)

    def _known(self, queue: str) -> bool:
        return any(q.name == queue for q in self.controller.config.queues)

    async def _refuse(self, session: AgiSession, why: str) -> None:
        """A caller for a queue that does not exist: not left waiting for nobody."""
        log.error("FastAGI %s on %s: %s", session.env.script, session.env.channel, why)
        await session.set_variable(STATE_VARIABLE, "done")
        await session.stream_file(self.controller.settings.prompts.closed, "")
        await session.hangup()
