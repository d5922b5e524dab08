"""openapi.json describes exactly the API routes the server mounts, and what they return."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ctiserver.app import Server
from ctiserver.http.app import build_app
from ctiserver.http.customers import (
    CREATE_FIELDS,
    PATCH_FIELDS,
    customer_json,
    customer_routes,
    interaction_json,
    load_openapi,
)
from ctiserver.http.metrics import metrics_routes
from ctiserver.sim.emulator import AsteriskEmulator
from ctiserver.store.customer_import import ImportReport, SkippedLine
from ctiserver.store.customers import Customer, CustomerAccount, CustomerPhone
from ctiserver.store.database import Database
from ctiserver.store.interactions import Interaction
from tests.customers.test_customer_api import AGENT, build
from tests.test_app import server_settings

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
NOW = datetime(2024, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def spec() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(load_openapi())
    return document


def api_routes(app: web.Application) -> set[tuple[str, str]]:
    """The (method, path) of every /api/ route of `app` (HEAD: added by aiohttp for GET)."""
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
    }


def registered(database: Any) -> set[tuple[str, str]]:
    """What the HTTP modules register, as the server puts them together (ctiserver/app.py)."""

    async def probe() -> dict[str, Any]:
        return {}

    app = build_app(probe)
    app.add_routes(customer_routes(database))
    app.add_routes(metrics_routes(database, lambda: None))
    return api_routes(app)


def described(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_route_is_described_and_every_description_is_a_route(
    spec: dict[str, Any],
) -> None:
    # The routes are only registered here, never called: no database is needed.
    routes = registered(database=None)
    assert len(routes) == 12
    assert routes == described(spec)


async def test_the_running_server_mounts_exactly_the_described_api(
    spec: dict[str, Any], pg_dsn: str, tmp_path: Path
) -> None:
    emulator = AsteriskEmulator(ami_port=0, fastagi_port=4573)
    await emulator.start()
    server = Server(server_settings(pg_dsn, tmp_path, emulator.ami_port))
    try:
        await server.start()
        assert server.web_app is not None
        assert api_routes(server.web_app) == described(spec)
    finally:
        await server.close()
        await emulator.close()


def test_document_is_openapi_3_1_and_every_reference_resolves(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1.")
    assert spec["security"] == [{"session": []}]
    text = json.dumps(spec)
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([A-Za-z]+)"', text))
    assert refs and refs <= set(spec["components"]["schemas"])
    for path, item in spec["paths"].items():
        parameters = {p["name"] for p in item.get("parameters", [])}
        assert set(re.findall(r"{(\w+)}", path)) <= parameters, path
        for method, operation in item.items():
            if method in HTTP_METHODS:
                assert operation["operationId"] and operation["responses"], (method, path)
                assert "401" in operation["responses"], (method, path)


def _properties(spec: dict[str, Any], name: str) -> tuple[set[str], set[str]]:
    schema = spec["components"]["schemas"][name]
    return set(schema["properties"]), set(schema.get("required", ()))


def test_schemas_name_exactly_the_fields_returned(spec: dict[str, Any]) -> None:
    customer = Customer(
        id=1,
        name="王小明",
        grade="vip",
        value=Decimal("1.50"),
        churn_risk=None,
        language="zh-CN",
        preferred_channel="phone",
        account_manager_id=None,
        notes="",
        phones=(CustomerPhone("138", "138", ""),),
        accounts=(CustomerAccount("A-1"),),
        created_at=NOW,
        updated_at=NOW,
    )
    interaction = Interaction(
        id=1,
        customer_id=1,
        call_key="1.1",
        channel="phone",
        direction="inbound",
        address=None,
        queue_name=None,
        agent_login=None,
        agent_name=None,
        disposition=None,
        notes="",
        resolved=None,
        recording_path=None,
        started_at=NOW,
        ended_at=None,
        wrap_up_at=None,
        follow_up_at=None,
        created_at=NOW,
        updated_at=NOW,
    )
    report = ImportReport(created=1, skipped=[SkippedLine(3, "name: empty")])
    for schema, body in (
        ("Customer", customer_json(customer)),
        ("Interaction", interaction_json(interaction)),
        ("ImportReport", report.as_dict()),
    ):
        properties, required = _properties(spec, schema)
        assert set(body) == properties == required, schema
    assert set(customer_json(customer)["phones"][0]) == _properties(spec, "Phone")[0]
    assert set(customer_json(customer)["accounts"][0]) == _properties(spec, "Account")[0]
    # What a client may send is what the API accepts.
    assert _properties(spec, "CustomerInput") == (set(CREATE_FIELDS), {"name"})
    assert _properties(spec, "CustomerPatch") == (set(PATCH_FIELDS), set[str]())


@pytest.fixture
async def client(db: Database) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(build(db)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def test_served_to_signed_in_clients_only(
    client: TestClient[web.Request, web.Application], spec: dict[str, Any]
) -> None:
    assert (await client.get("/api/openapi.json")).status == 401
    response = await client.get("/api/openapi.json", headers=AGENT)
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == spec
