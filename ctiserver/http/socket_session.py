"""What every websocket route does around its own messages (the agent desktop's and the
wallboard's): the checks after the handshake, reading frames one at a time with an idle
limit, and closing within a bound.

Who may connect is told with a close code (4401 not signed in, 4403 forbidden), because a
browser cannot read the HTTP status of a refused upgrade. A peer that does not finish the
close in time has its transport aborted: a stuck socket must not hold the server's task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from aiohttp import WSMsgType, web

from ctiserver.agent_desktop.protocol import CloseCode
from ctiserver.auth.principal import PRINCIPAL_KEY, Principal
from ctiserver.http.app import same_origin

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S: Final = 2.0
BINARY_REFUSED: Final = "binary frames are not part of the protocol"


class Peer(Protocol):
    """The route's side of one open socket: closed once, with a code and a reason."""

    @property
    def close_code(self) -> int | None: ...

    def close(self, code: int, reason: str) -> None: ...


async def accept(
    request: web.Request, *, heartbeat_s: float, max_msg_size: int
) -> tuple[web.WebSocketResponse, Principal | None]:
    """The upgraded socket and who is on it; None when refused (the socket is then
    closed: not signed in, or opened from another site's page)."""
    ws = web.WebSocketResponse(
        heartbeat=heartbeat_s, max_msg_size=max_msg_size, timeout=CLOSE_TIMEOUT_S
    )
    await ws.prepare(request)
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        await ws.close(code=CloseCode.UNAUTHENTICATED, message=b"authentication required")
        return ws, None
    if not same_origin(request):
        # Cookies go along from any site's page: cross-site websocket hijacking.
        await ws.close(code=CloseCode.FORBIDDEN, message=b"cross-origin connection refused")
        return ws, None
    return ws, principal


async def serve(
    request: web.Request,
    ws: web.WebSocketResponse,
    peer: Peer,
    *,
    idle_s: float,
    name: str,
    on_text: Callable[[str], Awaitable[None] | None],
    on_binary: Callable[[], None],
    detach: Callable[[], Awaitable[None]],
) -> None:
    """Hand each text frame to `on_text`, one at a time, until the peer is closed, the
    socket closes or fails, or nothing arrives for `idle_s` (closed as idle); then
    `detach` the peer and close the socket."""
    try:
        while peer.close_code is None:
            try:
                msg = await ws.receive(timeout=idle_s)
            except TimeoutError:
                peer.close(CloseCode.IDLE, "nothing received; reconnect")
                return
            if msg.type is WSMsgType.TEXT:
                assert isinstance(msg.data, str)
                handled = on_text(msg.data)
                if handled is not None:
                    await handled
            elif msg.type is WSMsgType.BINARY:
                on_binary()
            elif msg.type is WSMsgType.ERROR:
                log.info("%s failed: %s", name, ws.exception())
                return
            else:  # CLOSE, CLOSING, CLOSED
                return
    finally:
        await detach()
        await _finish(request, ws, peer)


async def _finish(request: web.Request, ws: web.WebSocketResponse, peer: Peer) -> None:
    """Close the socket with the peer's code, if still open; abort it if that hangs."""
    if ws.closed:
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code=peer.close_code or CloseCode.NORMAL)
    except (TimeoutError, ConnectionError):
        aborter(request)()


def aborter(request: web.Request) -> Callable[[], None]:
    """Drops the request's connection at once, without a closing handshake."""

    def abort() -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    return abort
