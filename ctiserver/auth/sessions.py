"""Browser sessions: sign in with a password, then a cookie resolves to a Principal.

`SessionAuthenticator` is the authenticator the HTTP app is built with
(`build_app(probe, authenticator)`): called with a request, it returns the
signed-in Principal or None; its `sign_in` and `sign_out` back the
`POST /login` and `POST /logout` routes. The cookie (`cti_session`) carries a
random token; the database keeps only its sha256 (ctiserver.store.accounts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import asyncpg
from aiohttp import web
from argon2 import PasswordHasher

from ctiserver.auth.passwords import DEFAULT_HASHER, hash_password, needs_rehash, verify_password
from ctiserver.auth.principal import Principal, Role
from ctiserver.auth.throttle import FailureThrottle
from ctiserver.config import AuthSettings
from ctiserver.http.errors import json_error
from ctiserver.store.accounts import (
    Account,
    create_session,
    delete_session,
    find_session,
    get_account,
    set_password,
)
from ctiserver.store.database import Database

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "cti_session"
# A remote address may fail this many times more than one login: the desks of
# a centre often reach the server through one NAT address.
ADDRESS_FACTOR: Final = 5
# new_session_token() makes 43 characters; anything much longer is not ours.
_MAX_TOKEN_LENGTH: Final = 128
# The storage errors that mean "cannot tell who this is right now" (503), not "nobody" (401).
_STORE_DOWN = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class SignInThrottled(Exception):
    """Too many failed sign-ins for this login or address; `retry_after` seconds to wait."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed sign-ins; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A successful sign-in: who, and the session token for the cookie (shown once)."""

    principal: Principal
    token: str
    expires_at: datetime


def principal_of_account(account: Account) -> Principal:
    return Principal(
        account_id=account.id,
        login=account.login,
        name=account.name,
        role=Role(account.role),
        agent_id=account.agent_login,
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SessionAuthenticator:
    """Resolves the `cti_session` cookie to a Principal; signs in and out.

    `clock` gives the current time (tests pass a fake one to expire sessions
    without waiting); `hasher` the argon2 parameters new hashes get.
    """

    def __init__(
        self,
        database: Database,
        settings: AuthSettings | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
        hasher: PasswordHasher = DEFAULT_HASHER,
    ) -> None:
        settings = settings or AuthSettings()
        self._database = database
        self.idle = timedelta(seconds=settings.session_idle_s)
        self._clock = clock
        self._hasher = hasher

        def seconds() -> float:
            return clock().timestamp()

        self._by_login = FailureThrottle(settings.login_attempts_per_minute, seconds)
        self._by_address = FailureThrottle(
            settings.login_attempts_per_minute * ADDRESS_FACTOR, seconds
        )
        self._decoy: str | None = None

    async def __call__(self, request: web.Request) -> Principal | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            return None
        try:
            session = await find_session(self._database, token, now=self._clock(), idle=self.idle)
        except _STORE_DOWN as exc:
            raise _unavailable(exc) from exc
        return principal_of_account(session.account) if session is not None else None

    async def sign_in(self, login: str, password: str, *, remote: str | None) -> SignedIn | None:
        """Check the password and open a session; None for wrong credentials.

        Raises SignInThrottled before looking at the password when the login
        or the address has failed too often within the last minute.
        """
        login_key, address_key = login.casefold(), remote or "unknown"
        wait = max(self._by_login.retry_after(login_key), self._by_address.retry_after(address_key))
        if wait > 0:
            raise SignInThrottled(wait)
        login_stamp = self._by_login.attempt(login_key)
        address_stamp = self._by_address.attempt(address_key)
        try:
            account = await get_account(self._database, login)
            if account is None or not account.active:
                # Spend the time a real check takes, so response times do not
                # tell which logins exist.
                await verify_password(await self._decoy_hash(), password, self._hasher)
                return None
            if not await verify_password(account.password_hash, password, self._hasher):
                return None
            self._by_login.clear(login_key)
            self._by_address.forgive(address_key, address_stamp)
            if needs_rehash(account.password_hash, self._hasher):
                await set_password(
                    self._database, account.id, await hash_password(password, self._hasher)
                )
                log.info("rehashed the password of %s with the current parameters", login)
            now = self._clock()
            token = await create_session(self._database, account.id, now=now, idle=self.idle)
        except _STORE_DOWN as exc:
            # Not the user's fault: the attempt does not count against them.
            self._by_login.forgive(login_key, login_stamp)
            self._by_address.forgive(address_key, address_stamp)
            raise _unavailable(exc) from exc
        log.info("%s signed in (%s) from %s", account.login, account.role, remote)
        return SignedIn(principal_of_account(account), token, now + self.idle)

    async def sign_out(self, request: web.Request) -> bool:
        """End the request's session; False if it had none."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            return False
        try:
            return await delete_session(self._database, token)
        except _STORE_DOWN as exc:
            raise _unavailable(exc) from exc

    async def _decoy_hash(self) -> str:
        if self._decoy is None:
            self._decoy = await hash_password("not a password of anyone", self._hasher)
        return self._decoy


def _unavailable(exc: BaseException) -> web.HTTPServiceUnavailable:
    log.warning("sign-in store unavailable: %s: %s", type(exc).__name__, exc)
    return json_error(web.HTTPServiceUnavailable, "accounts unavailable, try again shortly")
