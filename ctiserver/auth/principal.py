"""Who a request or websocket speaks for, once authenticated.

The HTTP middleware (ctiserver/http/app.py) puts the signed-in Principal in
`request[PRINCIPAL_KEY]`; every handler reads it from there and checks the
role it needs with `require_role`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web

from ctiserver.http.errors import json_error


class Role(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


# Each role may do what the roles before it may.
_RANK = {Role.AGENT: 0, Role.SUPERVISOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in account. `agent_id` is the ACD agent it takes calls as, if any."""

    account_id: int
    login: str
    name: str
    role: Role
    agent_id: str | None = None

    def at_least(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


# A typed request key (a plain string key makes aiohttp warn); use it as
# `request[PRINCIPAL_KEY]` / `request.get(PRINCIPAL_KEY)`, or through principal_of.
PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("ctiserver.principal", Principal)


def principal_of(request: web.Request) -> Principal:
    """The request's Principal; the middleware guarantees one on every non-public route."""
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise json_error(web.HTTPUnauthorized, "authentication required")
    return principal


def require_role(request: web.Request, role: Role) -> Principal:
    """The Principal, or 403 when its role is below `role`."""
    principal = principal_of(request)
    if not principal.at_least(role):
        raise json_error(web.HTTPForbidden, f"needs the {role} role")
    return principal
