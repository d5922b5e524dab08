"""Fixtures for sign-in tests: a settable clock, a cheap argon2 hasher, a real HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher

from ctiserver.auth.passwords import hash_password
from ctiserver.auth.sessions import SessionAuthenticator
from ctiserver.config import AuthSettings
from ctiserver.http.app import build_app
from ctiserver.store.accounts import Account, create_account
from ctiserver.store.database import Database

# Cheap parameters so the suite does not spend seconds in argon2; the
# production parameters are exercised by the rehash test.
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)

Client = TestClient[web.Request, web.Application]


class Clock:
    """The authenticator's time, moved by the test instead of waited for."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def add_account(
    db: Database,
    login: str,
    password: str,
    *,
    role: str = "agent",
    name: str = "",
    agent_login: str | None = None,
    hasher: PasswordHasher = CHEAP,
) -> Account:
    if role == "agent" and agent_login is None:
        agent_login = login.removeprefix("agent")
    return await create_account(
        db,
        login,
        role=role,
        name=name,
        agent_login=agent_login,
        password_hash=await hash_password(password, hasher),
    )


async def _probe() -> dict[str, Any]:
    return {"database": {"ok": True}}


ClientFactory = Callable[..., Awaitable[tuple[Client, SessionAuthenticator]]]


@pytest.fixture
async def make_client(db: Database, clock: Clock) -> AsyncIterator[ClientFactory]:
    """Start a real HTTP server with a SessionAuthenticator on `db`; closed at the end.

    `routes` adds handlers before the app starts; `settings` and `hasher` go to
    the authenticator, `secure_cookie` to the app.
    """
    clients: list[Client] = []

    async def make(
        *,
        settings: AuthSettings | None = None,
        hasher: PasswordHasher = CHEAP,
        routes: Callable[[web.Application], None] | None = None,
        secure_cookie: bool = False,
    ) -> tuple[Client, SessionAuthenticator]:
        authenticator = SessionAuthenticator(db, settings, clock=clock, hasher=hasher)
        app = build_app(_probe, authenticator, secure_cookie=secure_cookie)
        if routes is not None:
            routes(app)
        client: Client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client, authenticator

    yield make
    for client in clients:
        await client.close()


async def sign_in(client: Client, login: str, password: str, **extra: Any) -> Any:
    return await client.post("/login", json={"login": login, "password": password, **extra})
