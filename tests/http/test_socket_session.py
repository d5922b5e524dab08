"""The websocket routes' shared frame: checks after the handshake, frames one at a time,
the idle limit, closing; over a real aiohttp server and client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ctiserver.auth.principal import PRINCIPAL_KEY, Principal, Role
from ctiserver.http import socket_session

SIGNED_IN = Principal(1, "super", "值班主管", Role.SUPERVISOR)


class Peer:
    def __init__(self) -> None:
        self.close_code: int | None = None
        self.close_reason = ""
        self.texts: list[str] = []
        self.binaries = 0
        self.detached = asyncio.Event()

    def close(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason

    async def on_text(self, text: str) -> None:
        await asyncio.sleep(0.01)  # one at a time: the next waits for this one
        self.texts.append(text)
        if text == "bye":
            self.close(4000, "asked to")

    async def detach(self) -> None:
        self.detached.set()


Connect = Callable[..., Awaitable[aiohttp.ClientWebSocketResponse]]


@pytest.fixture
async def served() -> AsyncIterator[tuple[Connect, list[Peer]]]:
    peers: list[Peer] = []

    @web.middleware
    async def signed_in(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.headers.get("X-Test-Signed-In") == "yes":
            request[PRINCIPAL_KEY] = SIGNED_IN
        return await handler(request)

    async def route(request: web.Request) -> web.StreamResponse:
        ws, principal = await socket_session.accept(request, heartbeat_s=20, max_msg_size=4096)
        if principal is None:
            return ws
        peer = Peer()
        peers.append(peer)
        await socket_session.serve(
            request,
            ws,
            peer,
            idle_s=0.5,
            name=f"test socket of {principal.login}",
            on_text=peer.on_text,
            on_binary=lambda: setattr(peer, "binaries", peer.binaries + 1),
            detach=peer.detach,
        )
        return ws

    app = web.Application(middlewares=[signed_in])
    app.router.add_get("/ws", route)
    server = TestServer(app)
    await server.start_server()
    session = aiohttp.ClientSession()

    async def connect(
        *, signed: bool = True, origin: str | None = None
    ) -> aiohttp.ClientWebSocketResponse:
        headers = {"Origin": origin or f"http://{server.host}:{server.port}"}
        if signed:
            headers["X-Test-Signed-In"] = "yes"
        timeout = aiohttp.ClientWSTimeout(ws_close=5)
        return await session.ws_connect(server.make_url("/ws"), headers=headers, timeout=timeout)

    yield connect, peers
    await session.close()
    await server.close()


async def test_frames_go_in_order_binary_is_refused_and_the_peer_closes(
    served: tuple[Connect, list[Peer]],
) -> None:
    connect, peers = served
    ws = await connect()
    await ws.send_str("查询 1")
    await ws.send_bytes(b"\x00\x01")
    await ws.send_str("查询 2")
    await ws.send_str("bye")
    closing = await ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 4000
    (peer,) = peers
    assert peer.texts == ["查询 1", "查询 2", "bye"] and peer.binaries == 1
    await asyncio.wait_for(peer.detached.wait(), 5)


async def test_silence_past_the_idle_limit_closes_as_idle(
    served: tuple[Connect, list[Peer]],
) -> None:
    connect, peers = served
    ws = await connect()
    closing = await ws.receive(timeout=5)  # idle_s is 0.5
    assert closing.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 4408
    assert peers[0].close_reason == "nothing received; reconnect"
    await asyncio.wait_for(peers[0].detached.wait(), 5)


async def test_a_client_that_goes_away_is_detached(served: tuple[Connect, list[Peer]]) -> None:
    connect, peers = served
    ws = await connect()
    await ws.send_str("hello")
    await ws.close()
    await asyncio.wait_for(peers[0].detached.wait(), 5)
    assert peers[0].texts == ["hello"] and peers[0].close_code is None


async def test_not_signed_in_and_another_sites_page_are_refused_after_the_handshake(
    served: tuple[Connect, list[Peer]],
) -> None:
    connect, peers = served
    anonymous = await connect(signed=False)
    await anonymous.receive(timeout=5)
    assert anonymous.close_code == 4401
    cross_site = await connect(origin="http://evil.example")
    await cross_site.receive(timeout=5)
    assert cross_site.close_code == 4403
    assert peers == []  # neither reached the route's own frames
