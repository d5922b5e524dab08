"""The aiohttp application: `/health` for probes, everything else behind authentication.

Sign-in and sessions arrive with the agent desktop; until a route is declared
public here or a session authenticates the request, the answer is 401, so no
route can be exposed by forgetting to protect it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

HealthProbe = Callable[[], Awaitable[dict[str, Any]]]
Authenticator = Callable[[web.Request], Awaitable[bool]]

# Paths reachable without a session: the health check and the login page.
PUBLIC_PATHS = frozenset({"/health", "/login"})

HEALTH_PROBE_KEY: web.AppKey[HealthProbe] = web.AppKey("health_probe")
AUTHENTICATOR_KEY: web.AppKey[Authenticator] = web.AppKey("authenticator")


async def _deny_all(_request: web.Request) -> bool:
    return False


@web.middleware
async def require_authentication(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    if not await request.app[AUTHENTICATOR_KEY](request):
        raise web.HTTPUnauthorized(
            text='{"error": "authentication required"}', content_type="application/json"
        )
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    """200 when every component is up, 503 otherwise; the body says which is down."""
    report = await request.app[HEALTH_PROBE_KEY]()
    healthy = all(part.get("ok", False) for part in report.values() if isinstance(part, dict))
    return web.json_response(
        {"status": "ok" if healthy else "degraded", **report}, status=200 if healthy else 503
    )


def build_app(probe: HealthProbe, authenticator: Authenticator = _deny_all) -> web.Application:
    app = web.Application(middlewares=[require_authentication])
    app[HEALTH_PROBE_KEY] = probe
    app[AUTHENTICATOR_KEY] = authenticator
    app.router.add_get("/health", health)
    return app
