"""`/ws/wallboard`: who may connect, the snapshot and pushes, junk, supervisor actions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ctiserver.auth.principal import Principal, Role
from ctiserver.http.app import build_app
from ctiserver.wallboard.socket import (
    MAX_FRAME_BYTES,
    WallboardService,
    add_wallboard_routes,
)
from ctiserver.wallboard.thresholds import parse_thresholds

Client = TestClient[web.Request, web.Application]
ORIGIN_OK = "http://127.0.0.1"

SUPER = Principal(1, "super", "主管", Role.SUPERVISOR)
ADMIN = Principal(2, "admin", "Admin", Role.ADMIN)
AGENT = Principal(3, "agent1001", "王小明", Role.AGENT, agent_id="1001")


def figures(waiting: int) -> dict[str, Any]:
    return {
        "as_of": "2026-11-23T10:00:00+08:00",
        "centre": {"today": {}, "window": {}, "now": {"waiting": waiting}},
        "queues": {
            "support": {
                "name": "技术支持",
                "today": {"service_level": 0.9},
                "window": {},
                "now": {"waiting": waiting, "longest_wait_s": 3.0},
                "staffing": None,
            }
        },
        "agents": {},
        "intervals": {"seconds": 900, "centre": [], "queues": {}},
    }


class FakeMetrics:
    def __init__(self) -> None:
        self.current = figures(0)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def snapshot(self) -> dict[str, Any]:
        return self.current

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def push(self, waiting: int) -> None:
        self.current = figures(waiting)
        for listener in list(self.listeners):
            listener(self.current)


class FakeSupervision:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple[Any, ...]]] = []

    async def _do(self, action: str, who: Principal, *args: Any) -> Any:
        from ctiserver.acd.supervision import SupervisionError, SupervisorResult

        self.calls.append((action, who.login, args))
        if args and args[0] == "9999":
            raise SupervisionError("unknown_agent", "no agent 9999")
        return SupervisorResult(who.login, args[0] if args else "1001", action, "call-1", {"x": 1})

    async def listen(self, who: Principal, agent: str) -> Any:
        return await self._do("listen", who, agent)

    async def whisper(self, who: Principal, agent: str) -> Any:
        return await self._do("whisper", who, agent)

    async def barge(self, who: Principal, agent: str) -> Any:
        return await self._do("barge", who, agent)

    async def stop(self, who: Principal) -> Any:
        return await self._do("stop", who)

    async def force_not_ready(self, who: Principal, agent: str, reason: str) -> Any:
        return await self._do("not_ready", who, agent, reason)

    async def force_logout(self, who: Principal, agent: str) -> Any:
        return await self._do("logout", who, agent)


class Harness:
    def __init__(self, client: Client, metrics: FakeMetrics, service: WallboardService) -> None:
        self.client = client
        self.metrics = metrics
        self.service = service
        self.who: Principal | None = SUPER

    async def connect(self, origin: str | None = None) -> aiohttp.ClientWebSocketResponse:
        origin = origin or str(self.client.make_url("")).rstrip("/")
        return await self.client.ws_connect("/ws/wallboard", headers={"Origin": origin})


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    metrics = FakeMetrics()
    holder: dict[str, Principal | None] = {"who": SUPER}

    async def authenticate(_request: web.Request) -> Principal | None:
        return holder["who"]

    app = build_app(lambda: None, authenticate)  # type: ignore[arg-type, return-value]
    service = add_wallboard_routes(
        app,
        metrics,  # type: ignore[arg-type]
        thresholds=parse_thresholds({"queues": {"support": {"waiting": {"warn": 1, "alarm": 2}}}}),
    )
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    h = Harness(client, metrics, service)

    def set_who(who: Principal | None) -> None:
        holder["who"] = who

    h.set_who = set_who  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        await client.close()


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def test_supervisor_gets_a_snapshot_then_shared_pushes(harness: Harness) -> None:
    first = await harness.connect()
    second = await harness.connect()
    snap = await receive(first)
    await receive(second)
    assert snap["v"] == 1 and snap["type"] == "snapshot"
    assert snap["you"] == {"login": "super", "name": "主管", "role": "supervisor"}
    assert snap["supervision"] is False
    assert snap["figures"]["queues"]["support"]["name"] == "技术支持"
    assert snap["levels"]["queues"]["support"]["waiting"] == "ok"
    assert snap["thresholds"]["queues"]["support"]["waiting"] == {"warn": 1.0, "alarm": 2.0}
    harness.metrics.push(2)
    for ws in (first, second):
        push = await receive(ws)
        assert push["type"] == "figures"
        assert push["figures"]["queues"]["support"]["now"]["waiting"] == 2
        assert push["levels"]["queues"]["support"]["waiting"] == "alarm"
    assert harness.service.pushes == 1  # encoded once for both
    await first.close()
    await second.close()


async def test_admin_may_connect(harness: Harness) -> None:
    harness.set_who(ADMIN)  # type: ignore[attr-defined]
    ws = await harness.connect()
    assert (await receive(ws))["you"]["role"] == "admin"
    await ws.close()


async def test_agent_is_refused(harness: Harness) -> None:
    harness.set_who(AGENT)  # type: ignore[attr-defined]
    ws = await harness.connect()
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 4403
    assert "supervisors" in str(msg.extra)


async def test_not_signed_in_and_cross_origin_are_refused(harness: Harness) -> None:
    ws = await harness.connect(origin="http://evil.example")
    await ws.receive(timeout=5)
    assert ws.close_code == 4403
    harness.set_who(None)  # type: ignore[attr-defined]
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await harness.connect()
    assert caught.value.status == 401


async def test_junk_gets_errors_and_the_connection_lives_on(harness: Harness) -> None:
    ws = await harness.connect()
    await receive(ws)
    cases: list[tuple[str | bytes, str]] = [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "explode", "id": "a1"}', "unknown_type"),
        ('{"type": "ping", "id": true}', "bad_message"),
        ('{"type": "listen", "id": "a2"}', "not_available"),
        ("x" * (MAX_FRAME_BYTES + 1), "too_large"),
        (b"\x00\x01", "binary_frame"),
    ]
    for frame, code in cases:
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
        reply = await receive(ws)
        assert reply["type"] == "error" and reply["code"] == code, (frame, reply)
    await ws.send_str('{"type": "ping", "id": 7}')
    assert await receive(ws) == {"v": 1, "type": "pong", "id": 7}
    await ws.send_str('{"type": "get_snapshot"}')
    assert (await receive(ws))["type"] == "snapshot"
    await ws.close()


async def test_supervisor_actions_go_to_supervision(harness: Harness) -> None:
    supervision = FakeSupervision()
    harness.service.supervision = supervision  # type: ignore[assignment]
    ws = await harness.connect()
    assert (await receive(ws))["supervision"] is True
    await ws.send_json({"type": "listen", "agent": "1001", "id": "l1"})
    result = await receive(ws)
    assert result == {
        "v": 1,
        "type": "result",
        "action": "listen",
        "agent": "1001",
        "call_id": "call-1",
        "detail": {"x": 1},
        "id": "l1",
    }
    for message in (
        {"type": "whisper", "agent": "1001"},
        {"type": "barge", "agent": "1001"},
        {"type": "stop_listening"},
        {"type": "force_not_ready", "agent": "1002", "reason": "meeting"},
        {"type": "force_logout", "agent": "1002"},
    ):
        await ws.send_json(message)
        assert (await receive(ws))["type"] == "result"
    assert [c[0] for c in supervision.calls] == [
        "listen",
        "whisper",
        "barge",
        "stop",
        "not_ready",
        "logout",
    ]
    assert supervision.calls[4] == ("not_ready", "super", ("1002", "meeting"))
    await ws.send_json({"type": "force_logout", "agent": "9999", "id": 3})
    error = await receive(ws)
    assert error["code"] == "unknown_agent" and error["id"] == 3
    await ws.send_json({"type": "force_not_ready", "agent": "1001"})
    assert (await receive(ws))["code"] == "bad_message"
    await ws.send_json({"type": "listen", "agent": ""})
    assert (await receive(ws))["code"] == "bad_message"
    await ws.close()


async def test_shutdown_closes_pages_going_away(harness: Harness) -> None:
    ws = await harness.connect()
    await receive(ws)
    await harness.service.shutdown()
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1001
    assert harness.metrics.listeners == []
