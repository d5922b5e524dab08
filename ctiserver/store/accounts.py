"""Accounts (who may sign in, with which role) and their browser sessions (SQL only).

Passwords arrive here already hashed (ctiserver.auth.passwords). Session
tokens are random 32-byte values handed to the browser; the table keeps only
their sha256, so a copy of the database opens no session.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg

from ctiserver.store.database import Connection, Database, in_transaction

ROLES: Final = ("agent", "supervisor", "admin")
# A session's last_seen_at (and its sliding expiry) is written at most this
# often: one UPDATE a minute per browser rather than one per request.
TOUCH_INTERVAL: Final = timedelta(minutes=1)


class AccountExists(Exception):
    """An account with this login exists already."""


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    login: str
    name: str
    role: str  # one of ROLES
    password_hash: str
    agent_login: str | None  # the ACD agent id this account takes calls as
    active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Session:
    """A live session and the (active) account it belongs to."""

    account: Account
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime


_COLUMNS = (
    "id",
    "login",
    "name",
    "role",
    "password_hash",
    "agent_login",
    "active",
    "created_at",
    "updated_at",
)
_ACCOUNT_COLUMNS = ", ".join(_COLUMNS)


def _account(row: Any) -> Account:
    return Account(
        id=row["id"],
        login=row["login"],
        name=row["name"],
        role=row["role"],
        password_hash=row["password_hash"],
        agent_login=row["agent_login"],
        active=row["active"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _check(login: str, role: str | None, agent_login: str | None) -> None:
    if not login.strip():
        raise ValueError("account login must not be empty")
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if agent_login is not None and not agent_login.strip():
        raise ValueError("agent id must not be empty (leave it out instead)")


async def create_account(
    db: Database | Connection,
    login: str,
    *,
    role: str,
    password_hash: str,
    name: str = "",
    agent_login: str | None = None,
) -> Account:
    """Create an active account; AccountExists if `login` is taken.

    An agent account must name its ACD agent (`agent_login`); the database refuses it otherwise.
    """
    _check(login, role, agent_login)
    if role == "agent" and agent_login is None:
        raise ValueError("an agent account needs the ACD agent id it takes calls as")
    async with in_transaction(db) as conn:
        try:
            row = await conn.fetchrow(
                f"""
                INSERT INTO accounts (login, name, role, password_hash, agent_login)
                VALUES ($1, $2, $3, $4, $5)
                RETURNING {_ACCOUNT_COLUMNS}
                """,
                login,
                name,
                role,
                password_hash,
                agent_login,
            )
        except asyncpg.UniqueViolationError as exc:
            raise AccountExists(f"an account {login!r} exists already") from exc
    return _account(row)


# Distinguishes "leave agent_login alone" from "clear it" (None).
_KEEP: Final[Any] = object()


async def update_account(
    db: Database | Connection,
    login: str,
    *,
    name: str | None = None,
    role: str | None = None,
    agent_login: str | None = _KEEP,
    active: bool | None = None,
) -> Account | None:
    """Change the given fields of `login` (None: unchanged; `agent_login=None` clears it).

    Returns the account, or None when there is none with that login.
    """
    keep_agent = agent_login is _KEEP
    _check(login, role, None if keep_agent else agent_login)
    row = await db.fetchrow(
        f"""
        UPDATE accounts SET
            name = coalesce($2, name),
            role = coalesce($3, role),
            agent_login = CASE WHEN $4 THEN agent_login ELSE $5 END,
            active = coalesce($6, active)
        WHERE login = $1
        RETURNING {_ACCOUNT_COLUMNS}
        """,
        login,
        name,
        role,
        keep_agent,
        None if keep_agent else agent_login,
        active,
    )
    return _account(row) if row is not None else None


async def get_account(db: Database | Connection, login: str) -> Account | None:
    """The account `login`, active or not; None if there is none."""
    row = await db.fetchrow(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE login = $1", login)
    return _account(row) if row is not None else None


async def list_accounts(db: Database | Connection, *, active_only: bool = False) -> list[Account]:
    """Every account (or only the active ones), by login."""
    rows = await db.fetch(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE active OR NOT $1 ORDER BY login",
        active_only,
    )
    return [_account(row) for row in rows]


async def count_accounts(db: Database | Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM accounts"))


async def set_password(db: Database | Connection, account_id: int, password_hash: str) -> bool:
    """Store a new hash for the account; False if it does not exist.

    Sessions are left alone (a rehash at sign-in must not sign the user out);
    after a password change, call `delete_account_sessions` too.
    """
    status = await db.execute(
        "UPDATE accounts SET password_hash = $2 WHERE id = $1", account_id, password_hash
    )
    return status == "UPDATE 1"


async def deactivate_account(db: Database | Connection, login: str) -> bool:
    """Mark the account inactive and end its sessions; False if there is none."""
    async with in_transaction(db) as conn:
        account_id = await conn.fetchval(
            "UPDATE accounts SET active = false WHERE login = $1 RETURNING id", login
        )
        if account_id is None:
            return False
        await conn.execute("DELETE FROM sessions WHERE account_id = $1", account_id)
    return True


# --- sessions ------------------------------------------------------------------------------


def new_session_token() -> str:
    """A fresh session token for a cookie: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """What the sessions table stores of a token: its sha256."""
    return hashlib.sha256(token.encode("utf-8")).digest()


async def create_session(
    db: Database | Connection, account_id: int, *, now: datetime, idle: timedelta
) -> str:
    """Open a session for the account, idle-expiring after `idle`; return its token.

    The token is returned once and never stored. Sessions that have expired
    (any account's) are removed on the way, so the table stays small.
    """
    token = new_session_token()
    async with in_transaction(db) as conn:
        await conn.execute("DELETE FROM sessions WHERE expires_at <= $1", now)
        await conn.execute(
            "INSERT INTO sessions (token_hash, account_id, created_at, expires_at, last_seen_at) "
            "VALUES ($1, $2, $3, $4, $3)",
            token_hash(token),
            account_id,
            now,
            now + idle,
        )
    return token


async def find_session(
    db: Database | Connection, token: str, *, now: datetime, idle: timedelta
) -> Session | None:
    """The live session of `token` with its account, or None (unknown, expired, inactive).

    Using a session moves its expiry to `now + idle` (sliding expiry); the
    write happens at most once per TOUCH_INTERVAL, so the expiry lags by at
    most that much.
    """
    digest = token_hash(token)
    row = await db.fetchrow(
        f"""
        SELECT s.created_at AS s_created_at, s.expires_at, s.last_seen_at,
               {", ".join(f"a.{column}" for column in _COLUMNS)}
        FROM sessions s JOIN accounts a ON a.id = s.account_id
        WHERE s.token_hash = $1 AND s.expires_at > $2 AND a.active
        """,
        digest,
        now,
    )
    if row is None:
        return None
    expires_at, last_seen_at = row["expires_at"], row["last_seen_at"]
    if now - last_seen_at >= TOUCH_INTERVAL:
        expires_at, last_seen_at = now + idle, now
        await db.execute(
            "UPDATE sessions SET last_seen_at = $2, expires_at = $3 WHERE token_hash = $1",
            digest,
            last_seen_at,
            expires_at,
        )
    return Session(
        account=_account(row),
        created_at=row["s_created_at"],
        expires_at=expires_at,
        last_seen_at=last_seen_at,
    )


async def delete_session(db: Database | Connection, token: str) -> bool:
    """End the session of `token`; False if there was none."""
    status = await db.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash(token))
    return status != "DELETE 0"


async def delete_account_sessions(db: Database | Connection, account_id: int) -> int:
    """End every session of the account (password changed, account disabled); how many."""
    status = await db.execute("DELETE FROM sessions WHERE account_id = $1", account_id)
    return int(status.split()[-1])
