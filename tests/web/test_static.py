"""`/desktop` and `/static/...` (ctiserver/http/static.py) behind the sign-in middleware:
types and charset, caching, no directory listing, nothing outside the web folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from ctiserver.auth.principal import Principal, Role
from ctiserver.http.app import build_app
from ctiserver.http.static import PAGE_CSP, add_web_routes

REPO_WEB = Path(__file__).resolve().parents[2] / "web"
AGENT = Principal(1, "wang", "王小明", Role.AGENT, "1001")

Client = TestClient[web.Request, web.Application]


async def _probe() -> dict[str, object]:
    return {}


async def _signed_in(request: web.Request) -> Principal | None:
    return AGENT if request.headers.get("X-Test-Login") == "wang" else None


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "web"
    (folder / "sub").mkdir(parents=True)
    (folder / "desktop.html").write_text("<!DOCTYPE html><title>坐席</title>", encoding="utf-8")
    (folder / "app.js").write_text("export const name = '张三';\n", encoding="utf-8")
    (folder / "sub" / "style.css").write_text("body { color: red; }\n", encoding="utf-8")
    (folder / ".secret.js").write_text("hidden", encoding="utf-8")
    (folder / "notes.md").write_text("not a web file type", encoding="utf-8")
    (tmp_path / "outside.js").write_text("secret = 1", encoding="utf-8")
    (folder / "link.js").symlink_to(tmp_path / "outside.js")
    return folder


@pytest.fixture
async def client(web_dir: Path) -> AsyncIterator[Client]:
    app = build_app(_probe, _signed_in)
    add_web_routes(app, web_dir)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


SIGNED_IN = {"X-Test-Login": "wang"}


async def test_the_page_is_utf8_html_with_a_strict_policy(client: Client) -> None:
    response = await client.get("/desktop", headers=SIGNED_IN)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Security-Policy"] == PAGE_CSP
    assert "script-src 'self'" in PAGE_CSP and "unsafe-inline" not in PAGE_CSP
    assert response.headers["Cache-Control"] == "no-store"
    assert "坐席" in await response.text()


@pytest.mark.parametrize(
    ("path", "content_type", "text"),
    [
        ("/static/app.js", "text/javascript; charset=utf-8", "张三"),
        ("/static/sub/style.css", "text/css; charset=utf-8", "color: red"),
    ],
)
async def test_files_have_their_type_and_revalidate(
    client: Client, path: str, content_type: str, text: str
) -> None:
    response = await client.get(path, headers=SIGNED_IN)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert text in await response.text()
    etag = response.headers["ETag"]
    again = await client.get(path, headers={**SIGNED_IN, "If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""


@pytest.mark.parametrize(
    "path",
    [
        "/static/",
        "/static/sub",
        "/static/sub/",
        "/static/../outside.js",
        "/static/%2e%2e/outside.js",
        "/static/sub/%2e%2e/%2e%2e/outside.js",
        "/static/%2fetc%2fpasswd",
        "/static/sub%5c..%5c..%5coutside.js",
        "/static/.secret.js",
        "/static/notes.md",
        "/static/link.js",
        "/static/missing.js",
    ],
)
async def test_nothing_outside_listing_or_hidden_is_served(client: Client, path: str) -> None:
    response = await client.get(path, headers=SIGNED_IN)
    assert response.status == 404, path
    body = await response.text()
    assert "secret" not in body and "outside" not in body


async def test_the_shipped_folder_has_the_desktop_files(tmp_path: Path) -> None:
    app = build_app(_probe, _signed_in)
    add_web_routes(app, REPO_WEB)
    async with TestClient(TestServer(app)) as test_client:
        for path in (
            "/desktop",
            "/static/desktop.css",
            "/static/desktop.js",
            "/static/desktop-connection.js",
            "/static/desktop-render.js",
        ):
            response = await test_client.get(path, headers=SIGNED_IN)
            assert response.status == 200, path
            assert response.charset == "utf-8"


async def test_without_a_session_pages_redirect_to_sign_in(client: Client) -> None:
    for path in ("/desktop", "/static/app.js"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"].startswith("/login?next=")
    # A script asking for a file gets no page content either.
    response = await client.get("/static/app.js", allow_redirects=False)
    assert "张三" not in await response.text()


async def test_a_raw_traversal_request_is_refused(client: Client) -> None:
    """The path goes to the server exactly as written (no client-side normalisation)."""
    base = client.make_url("/")
    for raw in ("static/..%2f..%2foutside.js", "static/..%5coutside.js", "static/.%2e/outside.js"):
        url = URL(f"{base}{raw}", encoded=True)
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers=SIGNED_IN, allow_redirects=False) as response,
        ):
            assert response.status == 404, raw
