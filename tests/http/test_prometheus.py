"""`/metrics`: who may read it, the exposition format, and figures from a real call.

The end-to-end test runs the real Server (PostgreSQL, event log, FastAGI,
AMI, ACD, HTTP) against the Asterisk emulator with the shipped dialplan, on
real sockets, and reads /metrics over HTTP as Prometheus would. The format
is checked by a small strict parser of the text format 0.0.4 written here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ctiserver.acd.model import AgentState
from ctiserver.auth.principal import Principal, Role, principal_of
from ctiserver.cli import main
from ctiserver.config import ConfigError, HttpSettings, load_settings
from ctiserver.http.app import AUTHENTICATOR_KEY, build_app
from ctiserver.http.prometheus import (
    CONTENT_TYPE,
    METRICS_PATH,
    Histogram,
    MetricFamily,
    render,
    with_metrics_token,
)
from ctiserver.sim.phones import PhonePolicy
from ctiserver.store.database import Database
from tests.acd.centre import (
    agent_block,
    emulated_asterisk,
    running_server,
    settings_for,
    until,
    write_acd,
)
from tests.auth.conftest import add_account

TOKEN = "prometheus-scrape-token-0123456789"

# -- a strict parser of the text exposition format 0.0.4 ------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("",), "gauge": ("",)}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"-?\d+(\.\d+)?(e[+-]?\d+)?", text), text
    return float(text)


@dataclass
class Exposition:
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def get(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def series(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: value for (n, labels), value in self.samples.items() if n == name}


def parse(text: str) -> Exposition:
    """Every line must be a HELP, a TYPE or a sample of a family whose TYPE came first."""
    assert text.endswith("\n")
    parsed = Exposition()
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name) and name not in parsed.helps, line
            parsed.helps[name] = _unescape(help_text)
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in _SUFFIXES and name not in parsed.types, line
            parsed.types[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, label_text, value = match.groups()
        family = next(
            (f for f, kind in parsed.types.items() for s in _SUFFIXES[kind] if name == f + s),
            None,
        )
        assert family is not None, f"{name}: no TYPE before it"
        labels: list[tuple[str, str]] = []
        rest = label_text or ""
        while rest:
            label = _LABEL.match(rest)
            assert label, f"bad labels in {line!r}"
            labels.append((label.group(1), _unescape(label.group(2))))
            rest = rest[label.end() :]
        key = (name, frozenset(labels))
        assert key not in parsed.samples, f"duplicate series {line!r}"
        parsed.samples[key] = _value(value)
    for name, kind in parsed.types.items():
        if kind == "histogram":
            _check_histogram(parsed, name)
    return parsed


def _check_histogram(parsed: Exposition, name: str) -> None:
    buckets = sorted(
        (float(dict(labels)["le"].replace("+Inf", "inf")), value)
        for labels, value in parsed.series(f"{name}_bucket").items()
    )
    assert buckets and buckets[-1][0] == math.inf, name
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), f"{name}: buckets not cumulative"
    assert counts[-1] == parsed.get(f"{name}_count"), f"{name}: +Inf bucket != count"


# -- the format ----------------------------------------------------------------------------------


def test_labels_are_escaped_and_read_back_intact() -> None:
    queue = '客户服务 "VIP" \\ line\nnext'
    family = MetricFamily("ctiserver_calls_waiting", "Calls in line\nnot offered \\ yet", "gauge")
    family.add(3, queue=queue).add(0.25, queue="support")
    parsed = parse(render([family]))
    assert parsed.types == {"ctiserver_calls_waiting": "gauge"}
    assert parsed.helps["ctiserver_calls_waiting"] == "Calls in line\nnot offered \\ yet"
    assert parsed.get("ctiserver_calls_waiting", queue=queue) == 3
    assert parsed.get("ctiserver_calls_waiting", queue="support") == 0.25


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError):
        MetricFamily("calls-waiting", "x", "gauge")
    with pytest.raises(ValueError):
        MetricFamily("calls", "x", "summary-ish")
    with pytest.raises(ValueError):
        MetricFamily("calls", "x", "gauge").add(1, **{"le-bad": "1"})


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    histogram = Histogram("offer_seconds", "h", (0.005, 0.05, 1.0))
    for value in (0.001, 0.005, 0.02, 0.05, 0.7, 9.0):
        histogram.observe(value)
    parsed = parse(render([histogram.family()]))
    assert parsed.get("offer_seconds_bucket", le="0.005") == 2  # 0.005 is "le" 0.005
    assert parsed.get("offer_seconds_bucket", le="0.05") == 4
    assert parsed.get("offer_seconds_bucket", le="1") == 5
    assert parsed.get("offer_seconds_bucket", le="+Inf") == 6
    assert parsed.get("offer_seconds_count") == 6
    assert parsed.get("offer_seconds_sum") == pytest.approx(9.776)
    with pytest.raises(ValueError):
        Histogram("h", "h", (1.0, 0.5))


# -- the setting ----------------------------------------------------------------------------------


def test_the_token_setting_is_checked_and_never_printed(
    no_server_config: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"CTISERVER_HTTP_METRICS_TOKEN": TOKEN}
    assert load_settings(None, environ=env).http.metrics_token == TOKEN
    for weak in ("short", f" {TOKEN}"):
        with pytest.raises(ConfigError, match=r"http\.metrics_token"):
            load_settings(None, environ={"CTISERVER_HTTP_METRICS_TOKEN": weak})
    monkeypatch.setenv("CTISERVER_HTTP_METRICS_TOKEN", TOKEN)
    assert main(["config"]) == 0
    printed = capsys.readouterr().out
    assert TOKEN not in printed
    assert json.loads(printed)["http"]["metrics_token"] == "***"


# -- who may read it (the token check alone, behind the real middleware) -----------------------


async def _signed_in_as(request: web.Request) -> Principal | None:
    role = request.headers.get("X-Test-Role")
    if role is None:
        return None
    return Principal(account_id=7, login=f"{role}-user", name="测试", role=Role(role))


async def _who(request: web.Request) -> web.Response:
    return web.json_response({"login": principal_of(request).login})


@pytest.fixture
async def gate() -> AsyncIterator[dict[str, TestClient[web.Request, web.Application]]]:
    """Two apps behind the sign-in middleware: one with a metrics token, one without."""

    async def probe() -> dict[str, Any]:
        return {}

    clients = {}
    for name, token in (("token", TOKEN), ("no-token", "")):
        app = build_app(probe, _signed_in_as)
        app[AUTHENTICATOR_KEY] = with_metrics_token(app[AUTHENTICATOR_KEY], token)
        app.router.add_get(METRICS_PATH, _who)
        app.router.add_get("/api/who", _who)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients[name] = client
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.close()


async def test_the_token_opens_metrics_and_nothing_else(
    gate: dict[str, TestClient[web.Request, web.Application]],
) -> None:
    client = gate["token"]
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    response = await client.get(METRICS_PATH, headers=bearer)
    assert response.status == 200
    assert (await response.json()) == {"login": "metrics-token"}
    # The same token is no key to any other route.
    response = await client.get("/api/who", headers=bearer)
    assert response.status == 401
    # A session still reads /metrics.
    response = await client.get(METRICS_PATH, headers={"X-Test-Role": "supervisor"})
    assert (await response.json()) == {"login": "supervisor-user"}


async def test_refusals_say_what_to_do(
    gate: dict[str, TestClient[web.Request, web.Application]],
) -> None:
    response = await gate["token"].get(METRICS_PATH, allow_redirects=False)
    assert response.status == 401  # not a redirect to the sign-in page: Prometheus reads it
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in (await response.json())["error"]
    response = await gate["token"].get(METRICS_PATH, headers={"Authorization": f"Bearer {TOKEN}x"})
    assert response.status == 401
    assert (await response.json())["error"] == "wrong metrics token"
    response = await gate["token"].get(METRICS_PATH, headers={"Authorization": f"Basic {TOKEN}"})
    assert response.status == 401

    no_token = gate["no-token"]
    response = await no_token.get(METRICS_PATH, headers={"Authorization": "Bearer "})
    assert response.status == 401
    assert "no metrics token is configured" in (await response.json())["error"]
    response = await no_token.get(METRICS_PATH, allow_redirects=False)
    assert response.status == 401
    assert "CTISERVER_HTTP_METRICS_TOKEN" in (await response.json())["error"]
    response = await no_token.get(METRICS_PATH, headers={"X-Test-Role": "admin"})
    assert response.status == 200


# -- the real server -------------------------------------------------------------------------------


async def _scrape(session: aiohttp.ClientSession, base: str, **headers: str) -> Exposition:
    async with session.get(f"{base}{METRICS_PATH}", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == CONTENT_TYPE
        return parse(await response.text())


async def test_metrics_follow_a_call_from_the_queue_to_the_agent(
    pg_dsn: str, db: Database, tmp_path: Path
) -> None:
    acd = write_acd(tmp_path, agent_block("1001", "王小明"), ring_timeout=10)
    await add_account(db, "wang", "wang-pass-1001", role="agent", agent_login="1001")
    await add_account(db, "lead", "lead-pass-9001", role="supervisor", name="李主管")
    async with emulated_asterisk() as emulator:
        emulator.add_agent_phone("agent1001", PhonePolicy(ring_time=0.3, talk_time=None))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        settings = dataclasses.replace(settings, http=HttpSettings(port=0, metrics_token=TOKEN))
        async with (
            running_server(emulator, settings, db) as centre,
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=10), cookie_jar=aiohttp.CookieJar(unsafe=True)
            ) as session,
        ):
            base = f"http://127.0.0.1:{centre.server.http_port}"
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            async with session.get(f"{base}{METRICS_PATH}", allow_redirects=False) as response:
                assert response.status == 401

            before = await _scrape(session, base, **bearer)
            assert before.get("ctiserver_ami_connected") == 1
            assert before.get("ctiserver_ami_logins_total") == 1
            assert before.get("ctiserver_ami_reconnects_total") == 0
            assert before.get("ctiserver_database_up") == 1
            assert before.get("ctiserver_calls_waiting", queue="support") == 0
            assert before.get("ctiserver_agents", state="logged_out") == 1
            assert before.get("ctiserver_offer_latency_seconds_count") == 0
            assert before.types["ctiserver_offer_latency_seconds"] == "histogram"
            assert before.get("process_resident_memory_bytes") > 0

            # Nobody logged in: the caller waits in line.
            await emulator.place_call("13800138000", "张三")
            await until(
                lambda: centre.acd.engine.snapshot(centre.acd.clock()).queues[0].waiting == 1,
                "the call waits",
            )
            waiting = await _scrape(session, base, **bearer)
            assert waiting.get("ctiserver_calls_waiting", queue="support") == 1
            assert waiting.get("ctiserver_queue_longest_wait_seconds", queue="support") >= 0
            assert waiting.get("ctiserver_acd_calls") == 1
            assert waiting.get("ctiserver_fastagi_sessions") == 1  # the caller's wait

            # The agent logs in: offered, rung, answered.
            centre.acd.login("1001")
            await centre.agent_reaches("1001", AgentState.ON_CALL)
            talking = await _scrape(session, base, **bearer)
            assert talking.get("ctiserver_calls_waiting", queue="support") == 0
            assert talking.get("ctiserver_agents", state="on_call") == 1
            assert talking.get("ctiserver_agents", state="logged_out") == 0
            assert talking.get("ctiserver_queue_agents", queue="support", state="on_call") == 1
            assert talking.get("ctiserver_offer_latency_seconds_count") == 1
            latency = talking.get("ctiserver_offer_latency_seconds_sum")
            # Decision to Ringing, one real offer: positive, and inside the largest bucket.
            assert 0 < latency <= talking.get("ctiserver_offer_latency_seconds_count") * 5

            # People: a supervisor's session reads it, an agent's is refused.
            for login, password, status in (
                ("wang", "wang-pass-1001", 403),
                ("lead", "lead-pass-9001", 200),
            ):
                async with session.post(
                    f"{base}/login", json={"login": login, "password": password}
                ) as signed_in:
                    assert signed_in.status == 200
                async with session.get(f"{base}{METRICS_PATH}") as response:
                    assert response.status == status, login

            # Asterisk goes away: the link shows down, the rest is still served.
            await emulator.close()
            await until(lambda: not centre.server.ami.connected, "AMI link down")
            down = await _scrape(session, base, **bearer)
            assert down.get("ctiserver_ami_connected") == 0
            assert down.get("ctiserver_database_up") == 1
            assert down.get("ctiserver_offer_latency_seconds_count") == 1


async def test_offer_latency_is_observed_once_per_agent_leg(
    pg_dsn: str, db: Database, tmp_path: Path
) -> None:
    """Two calls, two offers, two observations: a leg's later states (Up) add none."""
    acd = write_acd(tmp_path, agent_block("1001") + agent_block("1002", "李华"), ring_timeout=10)
    async with emulated_asterisk() as emulator:
        for endpoint in ("agent1001", "agent1002"):
            emulator.add_agent_phone(endpoint, PhonePolicy(ring_time=0.2, talk_time=None))
        settings = settings_for(tmp_path, pg_dsn, emulator.ami_port, acd)
        async with running_server(emulator, settings, db) as centre:
            seen: list[tuple[str, float]] = []
            centre.acd.add_ringing_listener(lambda offer, s: seen.append((offer.agent_id, s)))
            centre.acd.login("1001")
            centre.acd.login("1002")
            await emulator.place_call("5551001")
            await emulator.place_call("5551002")
            for agent in ("1001", "1002"):
                await centre.agent_reaches(agent, AgentState.ON_CALL)
            assert sorted(agent for agent, _ in seen) == ["1001", "1002"]
            assert all(seconds > 0 for _, seconds in seen)
            assert centre.server.offer_latency.count == 2
