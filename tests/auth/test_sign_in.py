"""Sign-in over a real HTTP server and real PostgreSQL: cookies, failures, throttling, pages."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie

from aiohttp import ClientResponse, web

from ctiserver.config import AuthSettings
from ctiserver.store.accounts import deactivate_account
from ctiserver.store.database import Database
from tests.auth.conftest import ClientFactory, Clock, add_account, sign_in


def _set_cookie(response: ClientResponse) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        cookie.load(header)
    return cookie


async def test_sign_in_sets_a_strict_http_only_cookie_and_says_who(
    db: Database, make_client: ClientFactory
) -> None:
    await add_account(db, "agent1001", "correct horse", name="王小明")
    client, _ = await make_client()

    response = await sign_in(client, "agent1001", "correct horse", next="/desktop?tab=2")

    assert response.status == 200
    assert await response.json() == {
        "login": "agent1001",
        "name": "王小明",
        "role": "agent",
        "agent_id": "1001",
        "next": "/desktop?tab=2",
    }
    morsel = _set_cookie(response)["cti_session"]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert morsel["secure"] == ""  # plain http: a Secure cookie would never come back
    assert morsel["max-age"] == ""  # a browser-session cookie
    token = morsel.value
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    # Only the token's sha256 is stored.
    stored = await db.fetchval("SELECT token_hash FROM sessions")
    assert stored == hashlib.sha256(token.encode()).digest()
    assert (
        await db.fetchval("SELECT count(*) FROM sessions WHERE token_hash = $1", token.encode())
        == 0
    )

    me = await client.get("/api/me")
    assert me.status == 200
    assert (await me.json())["name"] == "王小明"


async def test_cookie_is_secure_behind_https(db: Database, make_client: ClientFactory) -> None:
    @web.middleware
    async def tls_proxy(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # What a trusted TLS-terminating proxy set-up does: the request was https.
        return await handler(request.clone(scheme="https"))

    await add_account(db, "super", "correct horse", role="supervisor")
    client, _ = await make_client(routes=lambda app: app.middlewares.insert(0, tls_proxy))

    response = await sign_in(client, "super", "correct horse")

    assert response.status == 200
    assert _set_cookie(response)["cti_session"]["secure"] is True


async def test_secure_cookie_setting_marks_it_secure_over_plain_http(
    db: Database, make_client: ClientFactory
) -> None:
    # [http] secure_cookie: a TLS proxy in front speaks plain http to us.
    await add_account(db, "agent1001", "correct horse", name="王小明")
    client, _ = await make_client(secure_cookie=True)

    response = await sign_in(client, "agent1001", "correct horse")
    assert response.status == 200
    morsel = _set_cookie(response)["cti_session"]
    assert morsel["secure"] is True
    # What the setting is for: a client keeps a Secure cookie off plain http.
    assert (await client.get("/api/me")).status == 401
    # The proxy forwards it from https: the session works.
    cookie = {"Cookie": f"cti_session={morsel.value}"}
    me = await client.get("/api/me", headers=cookie)
    assert (await me.json())["name"] == "王小明"

    signed_out = await client.post("/logout", headers=cookie)
    assert signed_out.status == 200
    assert _set_cookie(signed_out)["cti_session"]["secure"] is True  # cleared as it was set


async def test_wrong_password_unknown_login_and_disabled_account_look_the_same(
    db: Database, make_client: ClientFactory
) -> None:
    await add_account(db, "agent1001", "correct horse")
    await add_account(db, "agent1002", "battery staple")
    await deactivate_account(db, "agent1002")
    client, _ = await make_client()

    answers = [
        await sign_in(client, "agent1001", "wrong password"),
        await sign_in(client, "nobody", "correct horse"),
        await sign_in(client, "agent1002", "battery staple"),
    ]

    for response in answers:
        assert response.status == 401
        assert await response.json() == {"error": "wrong login or password"}
        assert "Set-Cookie" not in response.headers
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0


async def test_missing_or_malformed_credentials_are_400(
    db: Database, make_client: ClientFactory
) -> None:
    client, _ = await make_client()
    for body in ({"login": "x"}, {"login": "", "password": "p"}, {"login": 3, "password": "p"}):
        response = await client.post("/login", json=body)
        assert response.status == 400, body
    response = await client.post(
        "/login", data="not json", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400


async def test_form_sign_in_and_next_from_the_query(
    db: Database, make_client: ClientFactory
) -> None:
    await add_account(db, "admin", "correct horse", role="admin", name="Ada")
    client, _ = await make_client()

    response = await client.post(
        "/login?next=/admin/users", data={"login": " admin ", "password": "correct horse"}
    )

    assert response.status == 200
    assert await response.json() == {
        "login": "admin",
        "name": "Ada",
        "role": "admin",
        "agent_id": None,
        "next": "/admin/users",
    }


async def test_next_never_leaves_the_server(db: Database, make_client: ClientFactory) -> None:
    await add_account(db, "agent1001", "correct horse")
    client, _ = await make_client()
    for unsafe in (
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "desk",
        "/login",
    ):
        response = await sign_in(client, "agent1001", "correct horse", next=unsafe)
        assert (await response.json())["next"] == "/desktop", unsafe


async def test_cross_site_sign_in_is_refused(db: Database, make_client: ClientFactory) -> None:
    await add_account(db, "agent1001", "correct horse")
    client, _ = await make_client()

    refused = await client.post(
        "/login",
        json={"login": "agent1001", "password": "correct horse"},
        headers={"Origin": "https://evil.example"},
    )
    assert refused.status == 403
    allowed = await client.post(
        "/login",
        json={"login": "agent1001", "password": "correct horse"},
        headers={"Origin": str(client.make_url("/")).rstrip("/")},
    )
    assert allowed.status == 200


async def test_repeated_failures_for_one_login_are_throttled(
    db: Database, make_client: ClientFactory, clock: Clock
) -> None:
    await add_account(db, "agent1001", "correct horse")
    client, _ = await make_client(settings=AuthSettings(login_attempts_per_minute=3))

    for _ in range(3):
        assert (await sign_in(client, "agent1001", "guess")).status == 401
    clock.advance(20)
    throttled = await sign_in(client, "agent1001", "correct horse")  # even the right password
    assert throttled.status == 429
    assert throttled.headers["Retry-After"] == "40"
    assert "try again in 40 s" in (await throttled.json())["error"]
    # Other logins are not affected.
    assert (await sign_in(client, "other", "guess")).status == 401

    clock.advance(41)
    assert (await sign_in(client, "agent1001", "correct horse")).status == 200


async def test_a_success_resets_the_login_count(db: Database, make_client: ClientFactory) -> None:
    await add_account(db, "agent1001", "correct horse")
    client, _ = await make_client(settings=AuthSettings(login_attempts_per_minute=3))
    for _ in range(2):
        assert (await sign_in(client, "agent1001", "typo")).status == 401
    assert (await sign_in(client, "agent1001", "correct horse")).status == 200
    for _ in range(2):
        assert (await sign_in(client, "agent1001", "typo")).status == 401
    assert (await sign_in(client, "agent1001", "correct horse")).status == 200


async def test_one_address_trying_many_logins_is_throttled(
    db: Database, make_client: ClientFactory, clock: Clock
) -> None:
    await add_account(db, "agent1001", "correct horse")
    client, _ = await make_client(settings=AuthSettings(login_attempts_per_minute=1))

    # One failure per login stays under the per-login limit; the address
    # allows 5 times the per-login limit.
    for number in range(5):
        assert (await sign_in(client, f"user{number}", "guess")).status == 401
    throttled = await sign_in(client, "agent1001", "correct horse")
    assert throttled.status == 429
    clock.advance(61)
    assert (await sign_in(client, "agent1001", "correct horse")).status == 200


async def test_unauthenticated_pages_redirect_and_api_answers_401(
    db: Database, make_client: ClientFactory
) -> None:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text="desktop")

    client, _ = await make_client(routes=lambda app: app.router.add_get("/desktop", page))

    for path, target in (
        ("/desktop", "/login?next=/desktop"),
        ("/desktop?tab=2", "/login?next=/desktop?tab%3D2"),
        ("/", "/login?next=/"),
        ("/no/such/page", "/login?next=/no/such/page"),
    ):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 302, path
        assert response.headers["Location"] == target, path
    for method, path, headers in (
        ("GET", "/api/me", {}),
        ("GET", "/api/no/such", {}),
        ("GET", "/ws", {}),
        ("GET", "/ws/desktop", {}),
        ("GET", "/desktop", {"Upgrade": "websocket", "Connection": "Upgrade"}),
        ("POST", "/desktop", {}),
        ("POST", "/logout", {}),
    ):
        response = await client.request(method, path, headers=headers, allow_redirects=False)
        assert response.status == 401, (method, path)
        assert await response.json() == {"error": "authentication required"}

    # Following the redirect lands on the sign-in page.
    landed = await client.get("/desktop")
    assert landed.status == 200
    assert landed.url.path == "/login"
    assert "登录" in await landed.text()


async def test_the_sign_in_page_is_public_utf8_and_locked_down(
    db: Database, make_client: ClientFactory
) -> None:
    client, _ = await make_client()

    response = await client.get("/login")

    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.charset == "utf-8"
    html = await response.text()
    assert "登录" in html and "Sign in" in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    # The inline script and style are allowed by their exact hashes, nothing else.
    for tag in ("script", "style"):
        (block,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in csp
    assert "unsafe-inline" not in csp


async def test_logout_ends_the_session_and_clears_the_cookie(
    db: Database, make_client: ClientFactory
) -> None:
    await add_account(db, "agent1001", "correct horse")
    client, _ = await make_client()
    signed_in = await sign_in(client, "agent1001", "correct horse")
    token = _set_cookie(signed_in)["cti_session"].value

    response = await client.post("/logout")

    assert response.status == 200
    cleared = _set_cookie(response)["cti_session"]
    assert cleared.value == ""
    assert cleared["max-age"] == "0"
    assert cleared["path"] == "/"
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
    # The old token is dead even if a copy of the cookie survived.
    replay = await client.get("/api/me", cookies={"cti_session": token})
    assert replay.status == 401


async def test_a_deactivated_account_loses_its_session(
    db: Database, make_client: ClientFactory
) -> None:
    await add_account(db, "agent1001", "correct horse")
    client, _ = await make_client()
    await sign_in(client, "agent1001", "correct horse")
    assert (await client.get("/api/me")).status == 200

    await deactivate_account(db, "agent1001")

    assert (await client.get("/api/me")).status == 401


async def test_a_forged_cookie_is_refused(db: Database, make_client: ClientFactory) -> None:
    client, _ = await make_client()
    for token in ("x", "A" * 43, "A" * 5000):
        response = await client.get("/api/me", cookies={"cti_session": token})
        assert response.status == 401
