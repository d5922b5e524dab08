"""`GET /ws/wallboard`: the wallboard's websocket (docs/wallboard-protocol.md).

Supervisors and admins only. As for the desktop, who may connect is decided
after the handshake and told with a close code (4401 not signed in, 4403
forbidden: an agent account, or another site's page), because a browser
cannot read the HTTP status of a refused upgrade.

On connect the page gets a versioned `snapshot` (LiveMetrics' figures, the
levels judged against the thresholds, the thresholds themselves, who is
signed in); after each LiveMetrics refresh (at most once a second) every page
gets a `figures` push, encoded once and shared by all connections. Each
connection has a bounded send queue written by its own task: a slow page is
dropped (it reconnects and gets a snapshot), never buffered without limit.

Supervisor actions (`listen`, `whisper`, `barge`, `stop_listening`,
`force_not_ready`, `force_logout`) go to ctiserver.acd.supervision when
`WallboardService.supervision` is set (else `not_available`); each runs in
its own task, so a spy waiting for the supervisor's phone does not hold up
the socket, and is answered with `result` or `error` carrying the request's `id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from ctiserver.agent_desktop.protocol import DEFAULT_REASON_CODES, CloseCode
from ctiserver.auth.principal import Principal, Role
from ctiserver.http import socket_session
from ctiserver.http.socket_session import BINARY_REFUSED, CLOSE_TIMEOUT_S
from ctiserver.wallboard.thresholds import Thresholds, levels

if TYPE_CHECKING:
    from ctiserver.acd.supervision import Supervision
    from ctiserver.metrics.live import LiveMetrics

log = logging.getLogger(__name__)

PATH: Final = "/ws/wallboard"
VERSION: Final = 1
HEARTBEAT_S: Final = 20.0
IDLE_S: Final = 120.0  # the page pings every 30 s
MAX_FRAME_BYTES: Final = 8 * 1024
HARD_FRAME_LIMIT: Final = 64 * 1024
SEND_QUEUE: Final = 32
SEND_TIMEOUT_S: Final = 10.0
MAX_ID_LENGTH: Final = 64

SPY_ACTIONS: Final = ("listen", "whisper", "barge")
SUPERVISOR_ACTIONS: Final = (*SPY_ACTIONS, "stop_listening", "force_not_ready", "force_logout")
COMMANDS: Final = ("ping", "get_snapshot", *SUPERVISOR_ACTIONS)


class ErrorCode:
    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    BINARY_FRAME = "binary_frame"
    FORBIDDEN = "forbidden"
    NOT_AVAILABLE = "not_available"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WallboardSettings:
    heartbeat_s: float = HEARTBEAT_S
    idle_s: float = IDLE_S
    send_queue: int = SEND_QUEUE


def encode(kind: str, **fields: Any) -> str:
    return json.dumps({"v": VERSION, "type": kind, **fields}, ensure_ascii=False)


class WallboardConnection:
    """One open wallboard: a bounded queue of encoded messages and the task writing them."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        principal: Principal,
        *,
        send_queue: int = SEND_QUEUE,
        on_stuck: Callable[[], None] | None = None,
    ) -> None:
        self.ws = ws
        self.principal = principal
        self.close_code: int | None = None
        self.close_reason = ""
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=send_queue)
        self._on_stuck = on_stuck
        self.tasks: set[asyncio.Task[None]] = set()

    def send_text(self, text: str) -> None:
        if self.close_code is not None:
            return
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("wallboard of %s too slow: closing it", self.principal.login)
            self.close(CloseCode.TOO_SLOW, "too slow: reconnect for a snapshot")

    def close(self, code: int, reason: str) -> None:
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def run_writer(self) -> None:
        try:
            while True:
                text = await self._queue.get()
                if text is None:
                    break
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await self.ws.send_str(text)
        except TimeoutError:
            self.close_code = self.close_code or CloseCode.TOO_SLOW
            self.close_reason = self.close_reason or "too slow"
        except (ConnectionError, RuntimeError) as exc:
            log.debug("wallboard of %s: send failed: %s", self.principal.login, exc)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ws.close(
                    code=self.close_code or CloseCode.NORMAL, message=self.close_reason.encode()
                )
        except (TimeoutError, ConnectionError, RuntimeError):
            if self._on_stuck is not None:
                self._on_stuck()


class WallboardService:
    """The open wallboards, fed from LiveMetrics; `supervision` may be set at any time."""

    def __init__(
        self,
        metrics: LiveMetrics | None,
        *,
        thresholds: Thresholds | None = None,
        supervision: Supervision | None = None,
        settings: WallboardSettings | None = None,
        reason_codes: Collection[str] = DEFAULT_REASON_CODES,
    ) -> None:
        self.metrics = metrics
        self.thresholds = thresholds or Thresholds()
        self.supervision = supervision
        self.settings = settings or WallboardSettings()
        self.reason_codes = tuple(reason_codes)
        self.connections: set[WallboardConnection] = set()
        self.pushes = 0
        self._remove_listener = metrics.add_listener(self._on_figures) if metrics else None

    # -- figures ------------------------------------------------------------------------

    def _figures(self) -> dict[str, Any]:
        return self.metrics.snapshot() if self.metrics is not None else {}

    def snapshot_text(self, principal: Principal) -> str:
        figures = self._figures()
        return encode(
            "snapshot",
            you={"login": principal.login, "name": principal.name, "role": str(principal.role)},
            supervision=self.supervision is not None,
            reason_codes=list(self.reason_codes),
            thresholds=self.thresholds.describe(sorted(figures.get("queues") or {})),
            figures=figures,
            levels=levels(figures, self.thresholds),
        )

    def _on_figures(self, snapshot: dict[str, Any]) -> None:
        """LiveMetrics' listener: one encoding, queued to every page."""
        if not self.connections:
            return
        text = encode("figures", figures=snapshot, levels=levels(snapshot, self.thresholds))
        self.pushes += 1
        for conn in tuple(self.connections):
            conn.send_text(text)

    # -- connections -----------------------------------------------------------------------

    def attach(self, conn: WallboardConnection) -> asyncio.Task[None]:
        self.connections.add(conn)
        conn.send_text(self.snapshot_text(conn.principal))
        return asyncio.create_task(conn.run_writer(), name=f"wallboard-send-{conn.principal.login}")

    async def detach(self, conn: WallboardConnection, writer: asyncio.Task[None]) -> None:
        self.connections.discard(conn)
        conn.close(conn.close_code or CloseCode.NORMAL, conn.close_reason)
        for task in tuple(conn.tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S * 2):
                await writer

    async def shutdown(self, _app: web.Application | None = None) -> None:
        """Close every wallboard (the server is going away; pages reconnect)."""
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        for conn in tuple(self.connections):
            conn.close(CloseCode.GOING_AWAY, "server going away")

    # -- messages --------------------------------------------------------------------------

    def error(
        self, conn: WallboardConnection, code: str, message: str, request_id: Any = None
    ) -> None:
        fields: dict[str, Any] = {"code": code, "message": message}
        if request_id is not None:
            fields["id"] = request_id
        conn.send_text(encode("error", **fields))

    def handle_text(self, conn: WallboardConnection, text: str) -> None:
        if len(text.encode()) > MAX_FRAME_BYTES:
            self.error(conn, ErrorCode.TOO_LARGE, f"frames are at most {MAX_FRAME_BYTES} bytes")
            return
        try:
            message = json.loads(text)
        except ValueError:
            self.error(conn, ErrorCode.BAD_JSON, "not JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.error(conn, ErrorCode.BAD_MESSAGE, 'a message is an object with a "type"')
            return
        request_id = message.get("id")
        if request_id is not None and not (
            isinstance(request_id, str | int)
            and not isinstance(request_id, bool)
            and len(str(request_id)) <= MAX_ID_LENGTH
        ):
            self.error(
                conn, ErrorCode.BAD_MESSAGE, f"id: a string or integer of at most {MAX_ID_LENGTH}"
            )
            return
        kind = message["type"]
        if kind == "ping":
            conn.send_text(encode("pong", **({"id": request_id} if request_id is not None else {})))
        elif kind == "get_snapshot":
            conn.send_text(self.snapshot_text(conn.principal))
        elif kind in SUPERVISOR_ACTIONS:
            self._supervise(conn, kind, message, request_id)
        else:
            self.error(
                conn,
                ErrorCode.UNKNOWN_TYPE,
                f"unknown type {kind[:40]!r}; one of {', '.join(COMMANDS)}",
                request_id,
            )

    def _supervise(
        self, conn: WallboardConnection, kind: str, message: dict[str, Any], request_id: Any
    ) -> None:
        principal = conn.principal
        if not principal.at_least(Role.SUPERVISOR):
            self.error(conn, ErrorCode.FORBIDDEN, "supervisors only", request_id)
            return
        supervision = self.supervision
        if supervision is None:
            self.error(
                conn, ErrorCode.NOT_AVAILABLE, "supervisor actions are not set up", request_id
            )
            return
        agent = message.get("agent")
        if kind != "stop_listening" and not (isinstance(agent, str) and 0 < len(agent) <= 64):
            self.error(
                conn,
                ErrorCode.BAD_MESSAGE,
                f'{kind}: "agent" (an agent id) is required',
                request_id,
            )
            return
        reason = message.get("reason")
        if kind == "force_not_ready" and not (isinstance(reason, str) and 0 < len(reason) <= 64):
            self.error(
                conn, ErrorCode.BAD_MESSAGE, 'force_not_ready: "reason" is required', request_id
            )
            return
        assert agent is None or isinstance(agent, str)
        call: Coroutine[Any, Any, Any]
        if kind == "listen":
            call = supervision.listen(principal, str(agent))
        elif kind == "whisper":
            call = supervision.whisper(principal, str(agent))
        elif kind == "barge":
            call = supervision.barge(principal, str(agent))
        elif kind == "stop_listening":
            call = supervision.stop(principal)
        elif kind == "force_not_ready":
            call = supervision.force_not_ready(principal, str(agent), str(reason))
        else:
            call = supervision.force_logout(principal, str(agent))
        task = asyncio.create_task(
            self._run(conn, kind, call, request_id), name=f"wallboard-{kind}"
        )
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    async def _run(
        self,
        conn: WallboardConnection,
        kind: str,
        call: Coroutine[Any, Any, Any],
        request_id: Any,
    ) -> None:
        from ctiserver.acd.supervision import SupervisionError

        try:
            result = await call
        except SupervisionError as exc:
            self.error(conn, exc.code, str(exc), request_id)
            return
        except Exception as exc:
            log.exception("wallboard %s by %s failed", kind, conn.principal.login)
            self.error(conn, ErrorCode.FAILED, f"{kind} failed: {type(exc).__name__}", request_id)
            return
        fields: dict[str, Any] = {
            "action": kind,
            "agent": getattr(result, "agent_id", None),
            "call_id": getattr(result, "call_id", None),
            "detail": dict(getattr(result, "detail", {}) or {}),
        }
        if request_id is not None:
            fields["id"] = request_id
        conn.send_text(encode("result", **fields))


WALLBOARD_KEY: web.AppKey[WallboardService] = web.AppKey("wallboard")


def add_wallboard_routes(
    app: web.Application,
    metrics: LiveMetrics | None,
    *,
    supervision: Supervision | None = None,
    thresholds: Thresholds | None = None,
    settings: WallboardSettings | None = None,
) -> WallboardService:
    """`GET /ws/wallboard` on `app`; the service closes its sockets at app shutdown."""
    service = WallboardService(
        metrics, thresholds=thresholds, supervision=supervision, settings=settings
    )
    app[WALLBOARD_KEY] = service
    app.router.add_get(PATH, wallboard_socket)
    app.on_shutdown.append(service.shutdown)
    return service


async def wallboard_socket(request: web.Request) -> web.StreamResponse:
    service = request.app[WALLBOARD_KEY]
    settings = service.settings
    ws, principal = await socket_session.accept(
        request, heartbeat_s=settings.heartbeat_s, max_msg_size=HARD_FRAME_LIMIT
    )
    if principal is None:
        return ws
    if not principal.at_least(Role.SUPERVISOR):
        log.info("wallboard of %s refused: role %s", principal.login, principal.role)
        await ws.close(code=CloseCode.FORBIDDEN, message=b"the wallboard is for supervisors")
        return ws
    conn = WallboardConnection(
        ws, principal, send_queue=settings.send_queue, on_stuck=socket_session.aborter(request)
    )
    writer = service.attach(conn)
    await socket_session.serve(
        request,
        ws,
        conn,
        idle_s=settings.idle_s,
        name=f"wallboard of {principal.login}",
        on_text=lambda text: service.handle_text(conn, text),
        on_binary=lambda: service.error(conn, ErrorCode.BINARY_FRAME, BINARY_REFUSED),
        detach=lambda: service.detach(conn, writer),
    )
    return ws


__all__ = [
    "PATH",
    "VERSION",
    "WALLBOARD_KEY",
    "WallboardService",
    "WallboardSettings",
    "add_wallboard_routes",
    "wallboard_socket",
]
