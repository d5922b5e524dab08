"""Asyncio FastAGI server: accepts Asterisk's connections and routes them to handlers.

`AGI(agi://host:4573/<script>?a=b)` runs the handler registered for
`<script>`; an unknown script is logged and its session ended, so the
dialplan goes on after AGI(). Each connection is one AgiSession, owned by
the server until it is closed.
"""

from __future__ import annotations

import asyncio
import logging

from ctiserver.asterisk.agi.codec import AgiProtocolError
from ctiserver.asterisk.agi.session import AgiHandler, AgiSession
from ctiserver.lifecycle import Service

log = logging.getLogger(__name__)


async def unknown_script(session: AgiSession) -> None:
    """Default handler: nobody serves this script; end the session at once."""
    log.warning(
        "FastAGI: no handler for script %r (request %s, channel %s); ending the session",
        session.env.script,
        session.env.request,
        session.env.channel,
    )


class FastAgiServer(Service):
    """FastAGI listener. `port=0` binds a free port, readable from `.port` after start()."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4573,
        *,
        command_timeout: float = 60.0,
        media_timeout: float = 3600.0,
        environment_timeout: float = 5.0,
        drain_timeout: float = 2.0,
        session_timeout: float | None = 4 * 3600.0,
        close_timeout: float = 5.0,
        line_limit: int = 64 * 1024,
        backlog: int = 1024,
        fallback: AgiHandler = unknown_script,
    ) -> None:
        self.host = host
        self._port = port
        self.command_timeout = command_timeout
        self.media_timeout = media_timeout
        self.environment_timeout = environment_timeout
        self.drain_timeout = drain_timeout
        self.session_timeout = session_timeout
        self.close_timeout = close_timeout
        self.line_limit = line_limit
        self.backlog = backlog  # a burst of calls connects at once (14: 5 calls/s)
        self.fallback = fallback
        self._routes: dict[str, AgiHandler] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[object]] = set()
        self._closing = False

    def route(self, script: str, handler: AgiHandler) -> None:
        """Serve `agi://.../<script>` with `handler(session)`."""
        self._routes[script.strip("/")] = handler

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def connection_count(self) -> int:
        """Connections being served right now."""
        return len(self._connections)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FastAGI server already started")
        self._closing = False
        self._server = await asyncio.start_server(
            self._serve,
            self.host,
            self._port,
            limit=self.line_limit,
            backlog=self.backlog,
            reuse_address=True,
        )
        log.info("FastAGI listening on %s:%d", self.host, self.port)

    async def close(self) -> None:
        """Stop accepting, cancel live sessions (their sockets get closed), wait for them."""
        self._closing = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = set(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=self.close_timeout)
            if stuck:
                log.warning(
                    "FastAGI: %d sessions did not end within %g s", len(stuck), self.close_timeout
                )
        if server is not None:
            try:
                async with asyncio.timeout(self.close_timeout):
                    await server.wait_closed()
            except TimeoutError:
                log.warning("FastAGI: listener did not close within %g s", self.close_timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:  # accepted just before close(): refuse rather than leak it
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        session = AgiSession(
            reader,
            writer,
            command_timeout=self.command_timeout,
            media_timeout=self.media_timeout,
            drain_timeout=self.drain_timeout,
        )
        try:
            try:
                env = await session.read_environment(self.environment_timeout)
            except AgiProtocolError as exc:
                log.error(
                    "FastAGI connection from %s: bad environment block: %s", session.peer, exc
                )
                return
            except TimeoutError:
                log.error(
                    "FastAGI connection from %s: no complete environment block within %g s",
                    session.peer,
                    self.environment_timeout,
                )
                return
            handler = self._routes.get(env.script, self.fallback)
            try:
                async with asyncio.timeout(self.session_timeout):
                    await session.run(handler)
            except TimeoutError:
                log.warning(
                    "FastAGI %s: ended after the %g s session limit", session, self.session_timeout
                )
        except asyncio.CancelledError:
            # close() cancels live sessions. Python 3.11's start_server logs a
            # cancelled connection task as an error, so end quietly instead.
            if not self._closing:
                raise
        except Exception:
            log.exception("FastAGI %s: unexpected error", session)
        finally:
            try:
                await session.close()
            finally:
                self._connections.discard(task)
