"""The customer REST API over a real aiohttp server and PostgreSQL.

A test-only middleware signs requests in from the X-Test-Role header (the
real sign-in middleware is ctiserver/http/app.py's); without it, 401.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ctiserver.auth.principal import PRINCIPAL_KEY, Principal, Role
from ctiserver.http.customers import customer_routes
from ctiserver.store.database import Database
from ctiserver.store.interactions import record_interaction

Client = TestClient[web.Request, web.Application]
ROLE_HEADER = "X-Test-Role"
AGENT = {ROLE_HEADER: "agent"}
SUPERVISOR = {ROLE_HEADER: "supervisor"}


@web.middleware
async def sign_in_from_header(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    role = request.headers.get(ROLE_HEADER)
    if role:
        request[PRINCIPAL_KEY] = Principal(7, "tester", "测试员", Role(role), agent_id="alice")
    return await handler(request)


def build(database: Database) -> web.Application:
    app = web.Application(middlewares=[sign_in_from_header])
    app.add_routes(customer_routes(database))
    return app


async def start(database: Database) -> Client:
    client: Client = TestClient(TestServer(build(database)))
    await client.start_server()
    return client


@pytest.fixture
async def client(db: Database) -> AsyncIterator[Client]:
    client = await start(db)
    try:
        yield client
    finally:
        await client.close()


async def create(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/customers", json=body, headers=AGENT)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    assert response.headers["Location"] == f"/api/customers/{created['id']}"
    return created


async def test_chinese_text_survives_create_search_history_and_csv(
    client: Client, db: Database
) -> None:
    created = await create(
        client,
        {
            "name": "王小明",
            "phones": [{"number": "+86 138 0013 8000", "label": "手机"}, "010-1234-5678"],
            "accounts": [{"number": "6222-0001", "kind": "借记卡"}],
            "grade": "vip",
            "value": 128000.50,
            "language": "zh-CN",
            "preferred_channel": "phone",
            "notes": "客户很满意",
        },
    )
    assert (created["name"], created["notes"], created["value"]) == (
        "王小明",
        "客户很满意",
        "128000.50",
    )
    assert created["phones"][0] == {
        "number": "+86 138 0013 8000",
        "digits": "8613800138000",
        "label": "手机",
    }

    response = await client.get("/api/customers", params={"q": "小明"}, headers=AGENT)
    assert response.status == 200
    assert response.charset == "utf-8"
    # UTF-8 on the wire, not \\u escapes.
    assert "王小明".encode() in await response.read()
    assert [c["id"] for c in (await response.json())["customers"]] == [created["id"]]
    for params in ({"phone": "13800138000"}, {"account": "6222-0001"}):
        found = await (await client.get("/api/customers", params=params, headers=AGENT)).json()
        assert [c["id"] for c in found["customers"]] == [created["id"]], params

    started = datetime(2024, 11, 23, 9, 0, tzinfo=UTC)
    for minutes, notes in ((0, "第一次来电"), (60, "第二次来电：投诉")):
        await record_interaction(
            db,
            call_key=f"1732368000.{minutes}",
            customer_id=created["id"],
            channel="phone",
            direction="inbound",
            address="+8613800138000",
            queue_name="投诉",
            agent_login="alice",
            started_at=started + timedelta(minutes=minutes),
            notes=notes,
            resolved=minutes == 0,
        )
    response = await client.get(
        f"/api/customers/{created['id']}/history", params={"limit": "1"}, headers=AGENT
    )
    assert response.status == 200
    history = await response.json()
    assert history["customer_id"] == created["id"]
    [latest] = history["interactions"]
    assert (latest["notes"], latest["queue"], latest["call_id"], latest["resolved"]) == (
        "第二次来电：投诉",
        "投诉",
        "1732368000.60",
        False,
    )
    assert datetime.fromisoformat(latest["started_at"]) == started + timedelta(hours=1)

    csv_text = "\ufeffname,phones,accounts,notes\n李四,13900139000,,从CSV导入\n王小明,,6222-0001,\n"
    form = aiohttp.FormData()
    form.add_field("file", csv_text.encode(), filename="客户.csv", content_type="text/csv")
    response = await client.post("/api/customers/import", data=form, headers=SUPERVISOR)
    assert response.status == 200, await response.text()
    assert await response.json() == {
        "created": 1,
        "updated": 0,
        "unchanged": 1,
        "skipped": 0,
        "errors": [],
    }
    found = await (await client.get("/api/customers", params={"q": "李四"}, headers=AGENT)).json()
    [li] = found["customers"]
    assert (li["notes"], li["phones"][0]["digits"]) == ("从CSV导入", "13900139000")


async def test_get_and_patch(client: Client) -> None:
    created = await create(client, {"name": "李四", "phones": ["13900139000"]})
    url = f"/api/customers/{created['id']}"
    response = await client.get(url, headers=AGENT)
    assert response.status == 200
    assert await response.json() == created

    response = await client.patch(
        url,
        json={
            "grade": "gold",
            "value": "99.90",
            "language": None,
            "notes": "改名",
            "add_phones": [{"number": "021 5555 6666", "label": "office"}],
            "accounts": ["L-1"],
        },
        headers=AGENT,
    )
    assert response.status == 200, await response.text()
    patched = await response.json()
    assert (patched["grade"], patched["value"], patched["language"], patched["notes"]) == (
        "gold",
        "99.90",
        None,
        "改名",
    )
    assert [p["digits"] for p in patched["phones"]] == ["13900139000", "02155556666"]
    assert patched["accounts"] == [{"number": "L-1", "kind": ""}]
    assert await (await client.get(url, headers=AGENT)).json() == patched


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"name": "x", "value": NaN}', "body"),
        (json.dumps({"name": "x", "email": "x@example.com"}).encode(), "email"),
        (json.dumps({"phones": ["13800138000"]}).encode(), "name"),
        (json.dumps({"name": "   "}).encode(), "name"),
        (json.dumps({"name": 42}).encode(), "name"),
        (json.dumps({"name": "王", "grade": "very important"}).encode(), "grade"),
        (json.dumps({"name": "王", "grade": 5}).encode(), "grade"),
        (json.dumps({"name": "王", "preferred_channel": "fax"}).encode(), "preferred_channel"),
        (json.dumps({"name": "王", "language": "中文"}).encode(), "language"),
        (json.dumps({"name": "王", "value": "lots"}).encode(), "value"),
        (json.dumps({"name": "王", "value": True}).encode(), "value"),
        (json.dumps({"name": "王", "value": 1e20}).encode(), "value"),
        (json.dumps({"name": "王", "phones": "13800138000"}).encode(), "phones"),
        (json.dumps({"name": "王", "phones": ["anonymous"]}).encode(), "phones"),
        (json.dumps({"name": "王", "phones": [{"number": 138}]}).encode(), "phones[0].number"),
        (json.dumps({"name": "王", "phones": [{"number": "1", "x": 1}]}).encode(), "phones[0].x"),
        (json.dumps({"name": "王", "accounts": [""]}).encode(), "accounts"),
        (json.dumps({"name": "王", "notes": None}).encode(), "notes"),
        ("王".encode("gbk"), "body"),
    ],
)
async def test_bad_create_input_is_400_naming_the_field(
    client: Client, db: Database, body: bytes, field: str
) -> None:
    response = await client.post(
        "/api/customers",
        data=body,
        headers={**AGENT, "Content-Type": "application/json"},
    )
    assert response.status == 400, await response.text()
    error = await response.json()
    assert error["field"] == field
    assert error["error"]
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


async def test_account_of_another_customer_is_400(client: Client) -> None:
    await create(client, {"name": "甲", "accounts": ["A-1"]})
    second = await create(client, {"name": "乙", "accounts": ["B-1"]})
    response = await client.post(
        "/api/customers", json={"name": "丙", "accounts": ["A-1"]}, headers=AGENT
    )
    assert (response.status, (await response.json())["field"]) == (400, "accounts")
    response = await client.patch(
        f"/api/customers/{second['id']}", json={"add_accounts": ["A-1"]}, headers=AGENT
    )
    assert (response.status, (await response.json())["field"]) == (400, "add_accounts")


async def test_bad_query_and_path_parameters(client: Client) -> None:
    cases = [
        ("/api/customers?limit=0", "limit"),
        ("/api/customers?limit=501", "limit"),
        ("/api/customers?limit=ten", "limit"),
        ("/api/customers?phone=anonymous", "phone"),
        ("/api/customers?name=wang", "name"),
        ("/api/customers/abc", "id"),
        ("/api/customers/abc/history", "id"),
        ("/api/customers/1/history?limit=-1", "limit"),
    ]
    for url, field in cases:
        response = await client.get(url, headers=AGENT)
        assert response.status == 400, url
        assert (await response.json())["field"] == field, url
    response = await client.patch("/api/customers/1", json={"unknown": 1}, headers=AGENT)
    assert (response.status, (await response.json())["field"]) == (400, "unknown")


async def test_unknown_customer_is_404(client: Client) -> None:
    for method, url in (
        ("GET", "/api/customers/999999"),
        ("GET", "/api/customers/999999/history"),
        ("PATCH", "/api/customers/999999"),
        ("GET", "/api/customers/99999999999999999999"),
    ):
        response = await client.request(method, url, json={"notes": "x"}, headers=AGENT)
        assert response.status == 404, (method, url)
        assert "999999" in (await response.json())["error"]


async def test_every_route_needs_a_principal(client: Client) -> None:
    for method, url in (
        ("GET", "/api/customers"),
        ("POST", "/api/customers"),
        ("GET", "/api/customers/1"),
        ("PATCH", "/api/customers/1"),
        ("GET", "/api/customers/1/history"),
        ("POST", "/api/customers/import"),
        ("GET", "/api/openapi.json"),
    ):
        response = await client.request(method, url, json={"name": "x"})
        assert response.status == 401, (method, url)


async def test_import_needs_a_supervisor(client: Client, db: Database) -> None:
    csv_body = "name,phones\n王小明,13800138000\n".encode()
    headers = {"Content-Type": "text/csv; charset=utf-8"}
    refused = await client.post(
        "/api/customers/import", data=csv_body, headers={**headers, **AGENT}
    )
    assert refused.status == 403
    assert "supervisor" in (await refused.json())["error"]
    assert await db.fetchval("SELECT count(*) FROM customers") == 0
    for role in ("supervisor", "admin"):
        response = await client.post(
            "/api/customers/import", data=csv_body, headers={**headers, ROLE_HEADER: role}
        )
        assert response.status == 200
    assert await db.fetchval("SELECT count(*) FROM customers") == 1


async def test_import_reports_bad_lines_and_bad_files(client: Client) -> None:
    headers = {**SUPERVISOR, "Content-Type": "text/csv"}
    response = await client.post(
        "/api/customers/import",
        data="name,phones,grade\n好,13800138000,\n坏,13800138001,a b\n".encode(),
        headers=headers,
    )
    report = await response.json()
    assert (report["created"], report["skipped"]) == (1, 1)
    assert report["errors"][0]["line"] == 3
    assert report["errors"][0]["reason"].startswith("grade:")
    for data in ("name,phones\n张三,138\n".encode("gbk"), b"", b"nom,tel\n"):
        response = await client.post("/api/customers/import", data=data, headers=headers)
        assert response.status == 400, data
        assert (await response.json())["field"] == "file"
    form = aiohttp.FormData()
    form.add_field("other", b"name\n", filename="x.csv")
    response = await client.post("/api/customers/import", data=form, headers=SUPERVISOR)
    assert (response.status, (await response.json())["field"]) == (400, "file")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _outage_answers(database: Database) -> None:
    client = await start(database)
    try:
        csv_headers = {**SUPERVISOR, "Content-Type": "text/csv"}
        for method, url, kwargs in (
            ("GET", "/api/customers?q=王", {"headers": AGENT}),
            ("POST", "/api/customers", {"json": {"name": "王"}, "headers": AGENT}),
            ("GET", "/api/customers/1", {"headers": AGENT}),
            ("PATCH", "/api/customers/1", {"json": {"notes": "x"}, "headers": AGENT}),
            ("GET", "/api/customers/1/history", {"headers": AGENT}),
            (
                "POST",
                "/api/customers/import",
                {"data": "name,phones\n王,138\n".encode(), "headers": csv_headers},
            ),
        ):
            response = await client.request(method, url, **kwargs)
            assert response.status == 503, (method, url, await response.text())
            assert "database is unavailable" in (await response.json())["error"]
        # Bad input is still told apart from the outage.
        response = await client.get("/api/customers?limit=0", headers=AGENT)
        assert response.status == 400
    finally:
        await client.close()


async def test_database_at_a_closed_port_is_503() -> None:
    # min_size=0: the pool connects on first use, as a running server's pool
    # reconnects after PostgreSQL went away.
    pool = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{_closed_port()}/ctiserver", min_size=0, timeout=2
    )
    database = Database(pool, target="a closed port")
    try:
        await _outage_answers(database)
    finally:
        await database.close()


async def test_closed_pool_is_503(pg_dsn: str) -> None:
    database = await Database.open(pg_dsn, migrate=False)
    await database.close()
    await _outage_answers(database)
