"""The metrics REST API over a real aiohttp server and PostgreSQL (ctiserver/http/metrics.py).

Requests are signed in from the X-Test-Role header (tests/customers/test_customer_api.py).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ctiserver.acd.config import AcdConfig, load_acd_config
from ctiserver.http.metrics import metrics_routes
from ctiserver.metrics.erlang import agents_required
from ctiserver.metrics.history import historical_report
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.settings import MetricSettings, SlMode
from ctiserver.store.database import Database
from tests.acd.centre import agent_block, write_acd
from tests.customers.test_customer_api import AGENT, SUPERVISOR, _closed_port, sign_in_from_header
from tests.metrics.builder import T0
from tests.metrics.test_history import HOUR, crossing_range, insert

Client = TestClient[web.Request, web.Application]
RANGE = "from=2026-03-02T09:00&to=2026-03-02T10:00&timezone=UTC"
ENDPOINTS = ("queues", "agents", "centre", "staffing")


@pytest.fixture
def acd_config(tmp_path: Path) -> AcdConfig:
    agents = agent_block("A1", "王小明") + agent_block("A2", "李娜")
    return load_acd_config(write_acd(tmp_path, agents))


async def start(database: Database, config: AcdConfig | None) -> Client:
    app = web.Application(middlewares=[sign_in_from_header])
    app.add_routes(metrics_routes(database, lambda: config))
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(db: Database, acd_config: AcdConfig) -> AsyncIterator[Client]:
    await insert(db, crossing_range().events)
    client = await start(db, acd_config)
    try:
        yield client
    finally:
        await client.close()


async def get_json(client: Client, url: str, status: int = 200) -> dict[str, Any]:
    response = await client.get(url, headers=SUPERVISOR)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    return body


async def test_queue_report_is_the_historical_report_with_names_and_variants(
    client: Client, db: Database, acd_config: AcdConfig
) -> None:
    body = await get_json(client, f"/api/metrics/queues?{RANGE}&grain=range")
    assert body["by"] == "queue" and body["grain"] == "range"
    assert body["from"] == "2026-03-02T09:00:00+00:00" and body["to"] == "2026-03-02T10:00:00+00:00"
    assert body["variants"] == MetricSettings().describe()
    assert body["variants_summary"] == MetricSettings().summary()
    assert body["notes"]
    rows = {row["queue"]: row for row in body["rows"]}
    assert set(rows) == {"support", "billing"}
    assert rows["support"]["name"] == "客户服务"
    direct = await historical_report(
        db,
        T0,
        T0 + HOUR,
        by="queue",
        grain=Grain.RANGE,
        settings=MetricSettings(),
        config=acd_config,
    )
    expected = {row.key: row.figures for row in direct.rows}
    for queue, row in rows.items():
        assert row["figures"] == pytest.approx(expected[queue], abs=1e-9), queue
    assert rows["support"]["figures"]["offered"] == 3


async def test_variants_override_the_defaults_for_one_report(client: Client) -> None:
    url = f"/api/metrics/queues?{RANGE}&grain=range&sl_mode=answered&count_short_abandons=true"
    body = await get_json(client, url + "&fcr_window_s=3600&sl_threshold_s=30")
    variants = body["variants"]
    assert variants["sl_mode"] == SlMode.ANSWERED and variants["count_short_abandons"] is True
    assert variants["fcr_window_s"] == 3600 and variants["sl_threshold_s"] == 30
    support = next(r["figures"] for r in body["rows"] if r["queue"] == "support")
    assert support["service_level"] == support["service_level_answered"] == 1.0
    assert support["offered"] == 4  # the short abandon counted
    assert support["fcr_repeat_contact"] == 1.0  # c1's repeat came after an hour


async def test_skills_agents_and_centre(client: Client) -> None:
    skills = await get_json(client, f"/api/metrics/queues?{RANGE}&grain=range&by=skill")
    by_skill = {row["skill"]: row for row in skills["rows"]}
    # The queue's configured skill (billing) and the calls' own (mandarin).
    assert by_skill["billing"]["name"] == "账单 Billing"
    assert by_skill["mandarin"]["figures"]["offered"] == 2
    agents = await get_json(client, f"/api/metrics/agents?{RANGE}&grain=range")
    names = {row["agent"]: row["name"] for row in agents["rows"]}
    assert names == {"A1": "王小明", "A2": "李娜"}
    a1 = next(r["figures"] for r in agents["rows"] if r["agent"] == "A1")
    assert a1["calls_handled"] == 2 and a1["logged_in_s"] == pytest.approx(HOUR)
    centre = await get_json(client, f"/api/metrics/centre?{RANGE}&grain=interval")
    assert len(centre["rows"]) == 4  # four quarter-hours
    assert sum(row["figures"]["offered"] for row in centre["rows"]) == 4  # c3 counted once
    assert all("occupancy" in row["agents"] for row in centre["rows"])


async def test_csv_has_chinese_names_intact_and_one_row_per_group_and_period(
    client: Client,
) -> None:
    for url, groups in (
        (f"/api/metrics/queues?{RANGE}&grain=interval&format=csv", {"support", "billing"}),
        (f"/api/metrics/agents?{RANGE}&grain=interval&format=csv", {"A1", "A2"}),
    ):
        response = await client.get(url, headers=SUPERVISOR)
        assert response.status == 200, await response.text()
        assert response.content_type == "text/csv" and response.charset == "utf-8"
        assert "attachment" in response.headers["Content-Disposition"]
        raw = await response.read()
        assert not raw.startswith(b"\xef\xbb\xbf")  # no BOM
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
        assert len(rows) == 4 * len(groups)
        dimension = "queue" if "queues" in url else "agent"
        assert {row[dimension] for row in rows} == groups
        assert {row["variants"] for row in rows} == {MetricSettings().summary()}
        names = {row["name"] for row in rows}
        assert names & {"客户服务", "王小明"}, names
    response = await client.get(
        f"/api/metrics/centre?{RANGE}&grain=range&format=csv", headers=SUPERVISOR
    )
    [row] = list(csv.DictReader(io.StringIO(await response.text())))
    assert row["offered"] == "4" and row["asa_s"] and row["agents.occupancy"]


async def test_dates_are_local_to_the_centre_time_zone(client: Client) -> None:
    body = await get_json(client, "/api/metrics/centre?from=2026-03-02&timezone=Asia/Shanghai")
    assert body["from"] == "2026-03-02T00:00:00+08:00"
    assert body["to"] == "2026-03-03T00:00:00+08:00"
    # The whole local day: c0 (08:59:30 UTC) and c7 (11:00 UTC) besides the four of the hour.
    [row] = body["rows"]
    assert row["figures"]["offered"] == 6


async def test_the_queues_business_hours_zone_is_the_default(db: Database, tmp_path: Path) -> None:
    hours = '[queues.hours]\ntimezone = "Asia/Shanghai"\nmon-sun = "00:00-24:00"\n'
    config = load_acd_config(write_acd(tmp_path, agent_block("A1"), queue_extra=hours))
    client = await start(db, config)
    try:
        body = await get_json(client, "/api/metrics/queues?from=2026-03-02")
        assert body["variants"]["timezone"] == "Asia/Shanghai"
        assert body["from"] == "2026-03-02T00:00:00+08:00"
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("queues?to=2026-03-02", "from"),
        ("queues?from=yesterday", "from"),
        ("queues?from=2026-03-02&to=2026-03-01", "to"),
        ("queues?from=2026-03-02&to=2027-06-01", "to"),
        ("queues?from=2026-03-02&grain=week", "grain"),
        ("queues?from=2026-03-02&by=team", "by"),
        ("agents?from=2026-03-02&by=queue", "by"),
        ("queues?from=2026-03-02&format=xml", "format"),
        ("queues?from=2026-03-02&colour=red", "colour"),
        ("queues?from=2026-03-02&from=2026-03-03", "from"),
        ("queues?from=2026-03-02&sl_mode=sometimes", "sl_mode"),
        ("queues?from=2026-03-02&count_short_abandons=maybe", "count_short_abandons"),
        ("queues?from=2026-03-02&sl_threshold_s=-1", "sl_threshold_s"),
        ("queues?from=2026-03-02&fcr_window_s=0", "fcr_window_s"),
        ("queues?from=2026-03-02&interval_s=7", "interval_s"),
        ("queues?from=2026-03-02&timezone=Mars/Olympus", "timezone"),
        ("centre?from=2026-03-02&fcr_scope=galaxy", "fcr_scope"),
        ("staffing?aht_s=180", "calls_per_hour"),
        ("staffing?calls_per_hour=100&aht_s=0", "aht_s"),
        ("staffing?calls_per_hour=100&aht_s=180&target_sl=80", "target_sl"),
        ("staffing?calls_per_hour=nan&aht_s=180", "calls_per_hour"),
        ("staffing?calls_per_hour=100&aht_s=180&shrinkage=1", "shrinkage"),
        ("staffing?calls_per_hour=100&aht_s=180&max_occupancy=0", "max_occupancy"),
        ("staffing?calls_per_hour=100&aht_s=180&queue=sales", "queue"),
        ("staffing?calls_per_hour=100&aht_s=180&limit=3", "limit"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    client: Client, query: str, field: str
) -> None:
    body = await get_json(client, f"/api/metrics/{query}", status=400)
    assert body["field"] == field, body
    assert body["error"]


async def test_agents_are_refused_and_strangers_asked_to_sign_in(client: Client) -> None:
    for endpoint in ENDPOINTS:
        url = f"/api/metrics/{endpoint}?from=2026-03-02&calls_per_hour=1&aht_s=1"
        response = await client.get(url, headers=AGENT)
        assert response.status == 403, endpoint
        assert "supervisor" in (await response.json())["error"]
        assert (await client.get(url)).status == 401, endpoint
        # A bad parameter tells an agent nothing either.
        assert (await client.get(url + "&by=x", headers=AGENT)).status == 403, endpoint


async def test_staffing_is_erlang_c(client: Client, acd_config: AcdConfig) -> None:
    url = "/api/metrics/staffing?queue=support&calls_per_hour=100&aht_s=180&target_s=20"
    body = await get_json(client, url + "&target_sl=0.8&shrinkage=0.3")
    # 5 Erlangs, 80 % in 20 s: 8 agents on the phones (the textbook table), 12 scheduled.
    expected = agents_required(100, 180, 0.8, 20, shrinkage=0.3)
    assert (body["agents"], body["scheduled"]) == (expected.agents, expected.scheduled) == (8, 12)
    assert body["traffic_erlangs"] == pytest.approx(5.0)
    assert body["queue"] == "support" and body["name"] == "客户服务"
    capped = await get_json(client, url + "&max_occupancy=0.5")
    assert capped["agents"] == 10 and capped["occupancy"] <= 0.5


async def _outage(database: Database) -> None:
    client = await start(database, None)
    try:
        for endpoint in ("queues", "agents", "centre"):
            body = await get_json(client, f"/api/metrics/{endpoint}?from=2026-03-02", status=503)
            assert "unavailable" in body["error"]
        # Bad input is still told apart from the outage, and staffing needs no database.
        await get_json(client, "/api/metrics/queues?from=2026-13-02", status=400)
        await get_json(client, "/api/metrics/staffing?calls_per_hour=10&aht_s=60")
    finally:
        await client.close()


async def test_database_at_a_closed_port_is_503() -> None:
    pool = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{_closed_port()}/ctiserver", min_size=0, timeout=2
    )
    database = Database(pool, target="a closed port")
    try:
        await _outage(database)
    finally:
        await database.close()


async def test_closed_pool_is_503(pg_dsn: str) -> None:
    database = await Database.open(pg_dsn, migrate=False)
    await database.close()
    await _outage(database)
