"""The whole server over real sockets: emulated Asterisk, real PostgreSQL, HTTP health."""

import asyncio
import json
from pathlib import Path

import aiohttp

from ctiserver.app import Server
from ctiserver.config import (
    AmiSettings,
    DatabaseSettings,
    FastAgiSettings,
    HttpSettings,
    ServerSettings,
    Settings,
)
from ctiserver.http.app import PUBLIC_PATHS
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.store.database import Database
from tests.conftest import truncate_all


def server_settings(pg_dsn: str, data_dir: Path, ami_port: int) -> Settings:
    return Settings(
        server=ServerSettings(data_dir=str(data_dir)),
        ami=AmiSettings(port=ami_port, auth="md5", ping_interval=5.0),
        fastagi=FastAgiSettings(port=0),
        http=HttpSettings(port=0),
        database=DatabaseSettings(dsn=pg_dsn),
    )


async def health(port: int) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://127.0.0.1:{port}/health") as response,
    ):
        return response.status, json.loads(await response.text())


async def test_server_links_to_asterisk_and_reports_health(pg_dsn: str, tmp_path: Path) -> None:
    db = await Database.open(pg_dsn)  # start from an empty event log
    try:
        await truncate_all(db)
    finally:
        await db.close()
    emulator = AsteriskEmulator(ami_port=0, fastagi_port=4573)
    await emulator.start()
    server = Server(server_settings(pg_dsn, tmp_path, emulator.ami_port))
    try:
        await server.start()
        async with asyncio.timeout(5):
            await server.ami.wait_ready()
        status, body = await health(server.http_port)
        assert status == 200
        assert body["status"] == "ok"
        assert body["ami"] == {"ok": True, "banner": "Asterisk Call Manager/11.0.0", "logins": 1}
        assert body["database"] == {"ok": True}
        # No [acd] file and nothing imported: an empty routing configuration.
        assert body["acd"] == {"ok": True, "queues": 0, "agents": 0, "calls": 0}
        assert server.events is not None
        async with asyncio.timeout(5):
            await server.events.flush()
        assert server.database is not None
        rows = await server.database.fetch(
            "SELECT payload FROM events WHERE type = 'asterisk.linked'"
        )
        assert [row["payload"]["banner"] for row in rows] == ["Asterisk Call Manager/11.0.0"]
    finally:
        await server.close()
        await emulator.close()


async def test_server_starts_without_asterisk_and_links_when_it_appears(
    pg_dsn: str, tmp_path: Path
) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    ami_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    settings = server_settings(pg_dsn, tmp_path, ami_port)
    server = Server(settings)
    emulator = AsteriskEmulator(ami_port=ami_port, fastagi_port=4573)
    try:
        await server.start()  # Asterisk is down: the server still comes up
        status, body = await health(server.http_port)
        assert status == 503
        assert body["status"] == "degraded"
        assert body["ami"]["ok"] is False  # type: ignore[index]
        await emulator.start()
        async with asyncio.timeout(10):
            await server.ami.wait_ready()
        status, body = await health(server.http_port)
        assert status == 200
    finally:
        await server.close()
        await emulator.close()


async def test_every_other_route_needs_authentication(pg_dsn: str, tmp_path: Path) -> None:
    emulator = AsteriskEmulator(ami_port=0, fastagi_port=4573)
    await emulator.start()
    server = Server(server_settings(pg_dsn, tmp_path, emulator.ami_port))
    try:
        await server.start()
        assert server.web_app is not None
        routes = {
            (route.method, route.resource.canonical)
            for route in server.web_app.router.routes()
            if route.resource is not None
        }
        # Everything the server mounts (POST /logout too), each tried without a session.
        assert {("GET", "/ws/desktop"), ("GET", "/api/customers")} <= routes
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for method, canonical in sorted(routes):
                if canonical in PUBLIC_PATHS or method == "HEAD":
                    continue
                path = canonical.replace("{id}", "1").replace("{", "").replace("}", "")
                async with session.request(
                    method, f"http://127.0.0.1:{server.http_port}{path}", allow_redirects=False
                ) as response:
                    if path.startswith(("/api/", "/ws")):
                        assert response.status == 401, (method, path)
                    else:
                        assert response.status in (302, 401), (method, path)
                        if response.status == 302:
                            assert response.headers["Location"].startswith("/login?next=")
            for path in ("/api/customers", "/ws"):
                async with session.get(f"http://127.0.0.1:{server.http_port}{path}") as response:
                    assert response.status == 401, path
            # Pages send the browser to the sign-in page instead.
            async with session.get(
                f"http://127.0.0.1:{server.http_port}/", allow_redirects=False
            ) as response:
                assert response.status == 302
                assert response.headers["Location"] == "/login?next=/"
    finally:
        await server.close()
        await emulator.close()
