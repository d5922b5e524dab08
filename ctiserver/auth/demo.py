"""Demo accounts for `ctiserver run --emulator`: sign in without creating users first.

Only the emulator demo calls this, and only while the accounts table is
empty: a real installation never gets known passwords. The passwords are
documented in README.md ("Accounts and sign-in"): "demo" followed by the
login without a leading "agent" (agent1001 / demo1001, super / demosuper,
admin / demoadmin).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher

from ctiserver.auth.passwords import DEFAULT_HASHER, hash_password
from ctiserver.store.accounts import count_accounts, create_account
from ctiserver.store.database import Database

DEMO_PASSWORD_PREFIX: Final = "demo"


@dataclass(frozen=True, slots=True)
class DemoAccount:
    login: str
    name: str
    role: str
    agent_login: str | None

    @property
    def password(self) -> str:
        return demo_password(self.login)


def demo_password(login: str) -> str:
    """The demo password of `login`: "demo" + the login without a leading "agent"."""
    return DEMO_PASSWORD_PREFIX + login.removeprefix("agent")


def demo_accounts(agents: Iterable[tuple[str, str]]) -> list[DemoAccount]:
    """One agent account per ACD agent (id, name), then `super` and `admin`.

    Numeric agent ids (the ACD's "1001") get the login "agent1001", the name
    their endpoints and the emulator's phones use.
    """
    accounts = [
        DemoAccount(
            login=f"agent{agent_id}" if agent_id.isdigit() else agent_id,
            name=name or agent_id,
            role="agent",
            agent_login=agent_id,
        )
        for agent_id, name in agents
    ]
    accounts.append(DemoAccount("super", "Demo supervisor 值班主管", "supervisor", None))
    accounts.append(DemoAccount("admin", "Demo admin 管理员", "admin", None))
    return accounts


async def create_demo_accounts(
    database: Database,
    agents: Iterable[tuple[str, str]],
    hasher: PasswordHasher = DEFAULT_HASHER,
) -> list[DemoAccount]:
    """Create the demo accounts if there are no accounts at all; return those created."""
    if await count_accounts(database) > 0:
        return []
    wanted = demo_accounts(agents)
    # Hashed before the lock is taken (argon2 is slow by design), one at a
    # time: each hash holds 64 MiB while it runs.
    hashes = [await hash_password(account.password, hasher) for account in wanted]
    async with database.transaction() as conn:
        # Two servers starting together: the second waits here, then finds accounts.
        await conn.execute("LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE")
        if await count_accounts(conn) > 0:
            return []
        for account, password_hash in zip(wanted, hashes, strict=True):
            await create_account(
                conn,
                account.login,
                role=account.role,
                password_hash=password_hash,
                name=account.name,
                agent_login=account.agent_login,
            )
    return wanted
