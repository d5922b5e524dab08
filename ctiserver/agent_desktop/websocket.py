"""`GET /ws/desktop`: the agent desktop's websocket (docs/desktop-protocol.md).

Who may connect is decided after the handshake and told with a close code
(4401 not signed in, 4403 forbidden; ctiserver/http/socket_session.py). Frames
are read one at a time and handed to the hub; replies and pushes go through
the connection's bounded send queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Final

from aiohttp import web

from ctiserver.acd.call_controls import CallControls
from ctiserver.acd.controller import CallController
from ctiserver.agent_desktop.hub import Connection, DesktopHub
from ctiserver.agent_desktop.protocol import (
    DEFAULT_REASON_CODES,
    MAX_FRAME_BYTES,
    CloseCode,
    ErrorCode,
)
from ctiserver.agent_desktop.screen_pop import ScreenPops
from ctiserver.auth.principal import Principal, Role
from ctiserver.http import socket_session
from ctiserver.http.socket_session import BINARY_REFUSED
from ctiserver.ivr.service import IvrService
from ctiserver.lifecycle import Service
from ctiserver.store.database import Database
from ctiserver.store.events import EventLog

log = logging.getLogger(__name__)

PATH: Final = "/ws/desktop"
HEARTBEAT_S: Final = 20.0
# The page pings every 30 s; silence this long means it is gone or stuck.
IDLE_S: Final = 120.0
# Frames up to this size reach the parser (which answers "too_large" past
# MAX_FRAME_BYTES and keeps the connection); beyond it aiohttp closes with 1009.
HARD_FRAME_LIMIT: Final = 1024 * 1024

DESKTOP_HUB_KEY: web.AppKey[DesktopHub] = web.AppKey("desktop_hub")


@dataclass(frozen=True, slots=True)
class SocketSettings:
    heartbeat_s: float = HEARTBEAT_S
    idle_s: float = IDLE_S


SOCKET_SETTINGS_KEY: web.AppKey[SocketSettings] = web.AppKey("desktop_socket_settings")


class DesktopService(Service):
    """The screen-pops and the hub, started and closed together (wire with add_desktop_routes).

    `controls` (the server's CallControls on the same controller) carries out
    hold, unhold, hang-up, transfer and dial; without it they answer
    `not_available`. The caller starts and closes `controls` itself.
    """

    def __init__(
        self,
        controller: CallController,
        *,
        database: Database | None,
        events: EventLog | None,
        ivr: IvrService | None = None,
        reason_codes: tuple[str, ...] = DEFAULT_REASON_CODES,
        tz: tzinfo = UTC,
        clock: Callable[[], float] | None = None,
        controls: CallControls | None = None,
    ) -> None:
        if controls is not None and controls.controller is not controller:
            raise ValueError("the call controls must be those of the same CallController")
        clock = clock or controller.clock
        self.pops = ScreenPops(controller, database, ivr=ivr, clock=clock, tz=tz)
        self.hub = DesktopHub(
            controller,
            database=database,
            events=events,
            pops=self.pops,
            reason_codes=reason_codes,
            clock=clock,
            tz=tz,
        )
        if controls is not None:
            self.hub.integrate_call_controls(controls)

    async def start(self) -> None:
        await self.hub.start()

    async def close(self) -> None:
        await self.hub.close()


def add_desktop_routes(
    app: web.Application, hub: DesktopHub, settings: SocketSettings | None = None
) -> None:
    """`GET /ws/desktop` on `app` (its auth middleware puts the Principal on the request)."""
    app[DESKTOP_HUB_KEY] = hub
    app[SOCKET_SETTINGS_KEY] = settings or SocketSettings()
    app.router.add_get(PATH, desktop_socket)


def _who_may_connect(
    request: web.Request, principal: Principal, hub: DesktopHub
) -> tuple[str, bool] | str:
    """(agent id, read-only), or why the connection is refused."""
    watched = request.query.get("agent")
    if watched is not None:
        if not principal.at_least(Role.SUPERVISOR):
            return "only supervisors may watch another agent's desktop"
        if not hub.knows_agent(watched):
            return f"no agent {watched!r}"
        # Watching oneself is still read-only: `?agent=` means watching.
        return watched, True
    if principal.agent_id is None:
        return "this account takes no calls (no agent id)"
    if not hub.knows_agent(principal.agent_id):
        return f"agent {principal.agent_id!r} is not in the ACD configuration"
    return principal.agent_id, False


async def desktop_socket(request: web.Request) -> web.StreamResponse:
    hub = request.app[DESKTOP_HUB_KEY]
    settings = request.app[SOCKET_SETTINGS_KEY]
    ws, principal = await socket_session.accept(
        request, heartbeat_s=settings.heartbeat_s, max_msg_size=HARD_FRAME_LIMIT
    )
    if principal is None:
        return ws
    allowed = _who_may_connect(request, principal, hub)
    if isinstance(allowed, str):
        log.info("desktop of %s refused: %s", principal.login, allowed)
        await ws.close(code=CloseCode.FORBIDDEN, message=allowed.encode()[:120])
        return ws
    agent_id, read_only = allowed
    conn = Connection(
        ws,
        agent_id,
        read_only=read_only,
        supervisor=principal.at_least(Role.SUPERVISOR),
        send_queue=hub.send_queue,
        on_stuck=socket_session.aborter(request),
    )
    hub.attach(conn)
    await socket_session.serve(
        request,
        ws,
        conn,
        idle_s=settings.idle_s,
        name=f"desktop socket of {agent_id}",
        on_text=lambda text: hub.handle_text(conn, text),
        on_binary=lambda: hub.send_error(conn, ErrorCode.BINARY_FRAME, BINARY_REFUSED),
        detach=lambda: hub.detach(conn),
    )
    return ws


__all__ = [
    "DESKTOP_HUB_KEY",
    "MAX_FRAME_BYTES",
    "PATH",
    "DesktopService",
    "SocketSettings",
    "add_desktop_routes",
    "desktop_socket",
]
