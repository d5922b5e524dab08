"""HTTP gate: /health is public and honest; every other route refuses the unauthenticated."""

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ctiserver.auth.principal import Principal, Role
from ctiserver.http.app import build_app


async def _client(app: web.Application) -> TestClient[web.Request, web.Application]:
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_health_reports_components_and_status() -> None:
    async def probe() -> dict[str, Any]:
        return {
            "database": {"ok": True},
            "ami": {"ok": True, "banner": "Asterisk Call Manager/11.0.0"},
        }

    client = await _client(build_app(probe))
    try:
        response = await client.get("/health")
        assert response.status == 200
        body = await response.json()
        assert body["status"] == "ok"
        assert body["ami"]["banner"] == "Asterisk Call Manager/11.0.0"
    finally:
        await client.close()


async def test_health_is_503_when_a_component_is_down() -> None:
    async def probe() -> dict[str, Any]:
        return {"database": {"ok": False, "error": "connection refused"}, "ami": {"ok": True}}

    client = await _client(build_app(probe))
    try:
        response = await client.get("/health")
        assert response.status == 503
        body = await response.json()
        assert body["status"] == "degraded"
        assert body["database"]["error"] == "connection refused"
    finally:
        await client.close()


async def test_other_routes_need_authentication() -> None:
    async def probe() -> dict[str, Any]:
        return {}

    async def secret(_request: web.Request) -> web.Response:
        return web.Response(text="agent data")

    app = build_app(probe)
    app.router.add_get("/api/agents", secret)
    client = await _client(app)
    try:
        for path in ("/api/agents", "/api/no/such/route", "/ws"):
            response = await client.get(path)
            assert response.status == 401, path
            assert await response.json() == {"error": "authentication required"}
        for path in ("/no/such/route", "/"):
            response = await client.get(path, allow_redirects=False)
            assert response.status == 302, path
            assert response.headers["Location"] == f"/login?next={path}"
    finally:
        await client.close()


async def test_an_authenticated_request_passes_the_gate() -> None:
    async def probe() -> dict[str, Any]:
        return {}

    async def authenticated(request: web.Request) -> Principal | None:
        if request.headers.get("Authorization") != "Bearer good":
            return None
        return Principal(account_id=1, login="agent1001", name="王小明", role=Role.AGENT)

    async def secret(_request: web.Request) -> web.Response:
        return web.Response(text="agent data")

    app = build_app(probe, authenticated)
    app.router.add_get("/api/agents", secret)
    client = await _client(app)
    try:
        refused = await client.get("/api/agents", headers={"Authorization": "Bearer bad"})
        assert refused.status == 401
        allowed = await client.get("/api/agents", headers={"Authorization": "Bearer good"})
        assert allowed.status == 200
        assert await allowed.text() == "agent data"
    finally:
        await client.close()
