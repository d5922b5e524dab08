"""The server process's event loop: uvloop by default, asyncio's on request, and a
clear fall-back where uvloop is not installed."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from ctiserver import event_loop
from ctiserver.app import Server
from ctiserver.config import ConfigError, load_settings
from ctiserver.metrics.summary_upkeep import SummaryUpkeep
from ctiserver.sim.emulator import AsteriskEmulator
from tests.test_app import health, server_settings


async def _name() -> str:
    await asyncio.sleep(0)
    return event_loop.running_loop_name()


def test_runs_on_the_chosen_loop() -> None:
    assert event_loop.run(_name(), "uvloop") == "uvloop"
    assert event_loop.run(_name(), "asyncio") == "asyncio"


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="'tokio' is not one of"):
        event_loop.loop_factory("tokio")


def test_without_uvloop_the_server_runs_on_asyncio_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    with caplog.at_level(logging.WARNING, logger="ctiserver.event_loop"):
        assert event_loop.run(_name(), "uvloop") == "asyncio"
    assert "uvloop is not installed" in caplog.text


def test_the_setting_is_checked() -> None:
    assert load_settings(environ={}).server.event_loop == "uvloop"
    assert load_settings(environ={"CTISERVER_SERVER_EVENT_LOOP": "asyncio"}).server.event_loop == (
        "asyncio"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"CTISERVER_SERVER_EVENT_LOOP": "trio"})
    assert "server.event_loop: 'trio' is not one of ['uvloop', 'asyncio']" in caught.value.problems


def test_the_server_links_and_serves_on_uvloop(pg_dsn: str, tmp_path: Path) -> None:
    """The real server on the production loop: AMI login to the emulator, PostgreSQL
    through asyncpg, HTTP through aiohttp."""

    async def serve() -> tuple[str, int, dict[str, object]]:
        emulator = AsteriskEmulator(ami_port=0, fastagi_port=0)
        await emulator.start()
        server = Server(server_settings(pg_dsn, tmp_path, emulator.ami_port))
        try:
            await server.start()
            async with asyncio.timeout(10):
                await server.ami.wait_ready()
            status, body = await health(server.http_port)
            return event_loop.running_loop_name(), status, body
        finally:
            await server.close()
            await emulator.close()

    loop_name, status, body = event_loop.run(serve(), "uvloop")
    assert loop_name == "uvloop"
    assert status == 200 and body["status"] == "ok"
    assert body["ami"] == {"ok": True, "banner": "Asterisk Call Manager/11.0.0", "logins": 1}
    assert body["database"] == {"ok": True}


def test_the_summary_upkeep_child_runs_and_stops_on_uvloop() -> None:
    """The one child process the server starts (metrics rebuild): its output read, and
    stopped when it overruns, on the production loop."""

    async def both() -> tuple[int | None, int | None]:
        printing = SummaryUpkeep(3600, (sys.executable, "-c", "print('汇总 rebuilt')"))
        finished = await printing.run_once()
        hanging = SummaryUpkeep(
            3600, (sys.executable, "-c", "import time; time.sleep(60)"), timeout_s=0.5
        )
        async with asyncio.timeout(20):
            stopped = await hanging.run_once()
        return finished, stopped

    assert event_loop.run(both(), "uvloop") == (0, None)
