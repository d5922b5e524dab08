"""Session lifetime, roles and password rehash, over a real HTTP server and PostgreSQL."""

from __future__ import annotations

from aiohttp import web
from argon2 import PasswordHasher

from ctiserver.auth.passwords import DEFAULT_HASHER, needs_rehash, verify_password
from ctiserver.auth.principal import Role, require_role
from ctiserver.config import AuthSettings
from ctiserver.http.app import same_origin
from ctiserver.store.accounts import get_account
from ctiserver.store.database import Database
from tests.auth.conftest import CHEAP, ClientFactory, Clock, add_account, sign_in


async def test_a_session_ends_after_the_idle_time(
    db: Database, make_client: ClientFactory, clock: Clock
) -> None:
    await add_account(db, "agent1001", "correct horse")
    client, _ = await make_client(settings=AuthSettings(session_idle_s=3600))
    await sign_in(client, "agent1001", "correct horse")

    clock.advance(3599)
    assert (await client.get("/api/me")).status == 200
    clock.advance(3601)  # an hour after the last request
    assert (await client.get("/api/me")).status == 401
    assert (await client.get("/desktop", allow_redirects=False)).status == 302


async def test_use_keeps_a_session_alive(
    db: Database, make_client: ClientFactory, clock: Clock
) -> None:
    await add_account(db, "agent1001", "correct horse")
    client, _ = await make_client()  # the default: 12 h idle
    await sign_in(client, "agent1001", "correct horse")

    for _ in range(4):  # 44 h in all, never 12 h idle
        clock.advance(11 * 3600)
        assert (await client.get("/api/me")).status == 200
    clock.advance(12 * 3600 + 61)
    assert (await client.get("/api/me")).status == 401


async def test_last_seen_is_written_at_most_once_a_minute(
    db: Database, make_client: ClientFactory, clock: Clock
) -> None:
    await add_account(db, "agent1001", "correct horse")
    client, _ = await make_client()
    await sign_in(client, "agent1001", "correct horse")
    signed_in_at = clock.now

    async def last_seen() -> object:
        return await db.fetchval("SELECT last_seen_at FROM sessions")

    clock.advance(30)
    assert (await client.get("/api/me")).status == 200
    assert await last_seen() == signed_in_at
    clock.advance(31)
    assert (await client.get("/api/me")).status == 200
    assert await last_seen() == clock.now
    expires = await db.fetchval("SELECT expires_at FROM sessions")
    assert (expires - clock.now).total_seconds() == 12 * 3600


async def test_roles_gate_routes(db: Database, make_client: ClientFactory) -> None:
    async def wallboard(request: web.Request) -> web.Response:
        who = require_role(request, Role.SUPERVISOR)
        return web.json_response({"viewer": who.login})

    async def users(request: web.Request) -> web.Response:
        require_role(request, Role.ADMIN)
        return web.json_response({"ok": True})

    def routes(app: web.Application) -> None:
        app.router.add_get("/api/wallboard", wallboard)
        app.router.add_get("/api/users", users)

    await add_account(db, "agent1001", "correct horse")
    await add_account(db, "super", "correct horse", role="supervisor")
    await add_account(db, "admin", "correct horse", role="admin")
    expected = {
        "agent1001": (403, 403),
        "super": (200, 403),
        "admin": (200, 200),
    }
    for login, (wallboard_status, users_status) in expected.items():
        client, _ = await make_client(routes=routes)
        assert (await sign_in(client, login, "correct horse")).status == 200
        board = await client.get("/api/wallboard")
        assert board.status == wallboard_status, login
        if board.status == 200:
            assert await board.json() == {"viewer": login}
        else:
            assert await board.json() == {"error": "needs the supervisor role"}
        assert (await client.get("/api/users")).status == users_status, login


async def test_a_role_change_applies_to_open_sessions(
    db: Database, make_client: ClientFactory
) -> None:
    await add_account(db, "super", "correct horse", role="supervisor")
    client, _ = await make_client()
    await sign_in(client, "super", "correct horse")

    await db.execute("UPDATE accounts SET role = 'admin' WHERE login = 'super'")

    assert (await (await client.get("/api/me")).json())["role"] == "admin"


async def test_sign_in_rehashes_a_password_with_old_parameters(
    db: Database, make_client: ClientFactory
) -> None:
    old = await add_account(db, "agent1001", "correct horse", hasher=CHEAP)
    assert needs_rehash(old.password_hash, DEFAULT_HASHER)
    client, _ = await make_client(hasher=DEFAULT_HASHER)

    assert (await sign_in(client, "agent1001", "correct horse")).status == 200

    new = await get_account(db, "agent1001")
    assert new is not None and new.password_hash != old.password_hash
    assert new.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert not needs_rehash(new.password_hash, DEFAULT_HASHER)
    assert await verify_password(new.password_hash, "correct horse", DEFAULT_HASHER)
    # The session opened by that sign-in is still good, and so is the next sign-in.
    assert (await client.get("/api/me")).status == 200
    assert (await sign_in(client, "agent1001", "correct horse")).status == 200
    again = await get_account(db, "agent1001")
    assert again is not None and again.password_hash == new.password_hash


async def test_a_current_hash_is_left_alone(db: Database, make_client: ClientFactory) -> None:
    hasher = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    account = await add_account(db, "agent1001", "correct horse", hasher=hasher)
    client, _ = await make_client(hasher=hasher)
    assert (await sign_in(client, "agent1001", "correct horse")).status == 200
    stored = await get_account(db, "agent1001")
    assert stored is not None and stored.password_hash == account.password_hash


async def test_chinese_names_and_logins_survive(db: Database, make_client: ClientFactory) -> None:
    await add_account(db, "李娜", "密码是八个字以上", name="李娜 Li Na", agent_login="1002")
    client, _ = await make_client()

    response = await sign_in(client, "李娜", "密码是八个字以上")

    assert response.status == 200
    body = await response.json()
    assert body["login"] == "李娜" and body["name"] == "李娜 Li Na"
    me = await client.get("/api/me")
    assert await me.json() == {
        "login": "李娜",
        "name": "李娜 Li Na",
        "role": "agent",
        "agent_id": "1002",
    }


async def test_same_origin_checks_the_origin_header(
    db: Database, make_client: ClientFactory
) -> None:
    async def check(request: web.Request) -> web.Response:
        return web.json_response({"same": same_origin(request)})

    await add_account(db, "agent1001", "correct horse")
    client, _ = await make_client(routes=lambda app: app.router.add_get("/api/origin", check))
    await sign_in(client, "agent1001", "correct horse")
    port = client.port
    assert port is not None

    async def verdict(headers: dict[str, str]) -> bool:
        response = await client.get("/api/origin", headers=headers)
        return bool((await response.json())["same"])

    assert await verdict({"Origin": f"http://127.0.0.1:{port}"})
    # Behind a TLS proxy the browser's scheme differs; host and port decide.
    assert await verdict({"Origin": f"https://127.0.0.1:{port}"})
    assert await verdict({"Origin": "https://cti.example", "Host": "cti.example"})
    assert await verdict({"Origin": "https://CTI.example:443", "Host": "cti.example"})
    assert not await verdict({})
    assert not await verdict({"Origin": "null"})
    assert not await verdict({"Origin": "http://evil.example"})
    assert not await verdict({"Origin": f"http://127.0.0.1:{port + 1}"})
    assert not await verdict({"Origin": "https://cti.example.evil", "Host": "cti.example"})
    assert not await verdict({"Origin": "not a url"})
