"""The aiohttp application: `/health` and `/login` public, everything else behind sign-in.

The middleware asks the authenticator who a request speaks for and puts the
Principal in `request[PRINCIPAL_KEY]` (read it with `principal_of` /
`require_role`, ctiserver.auth.principal). Without one, API and websocket
paths get 401 JSON and pages a redirect to the sign-in page. Only the paths
in PUBLIC_PATHS skip the check, so no route can be exposed by forgetting to
protect it. The sign-in page inlines its CSS and script, so it needs no
public static files.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from aiohttp import web
from yarl import URL

from ctiserver.auth.passwords import MAX_PASSWORD_LENGTH
from ctiserver.auth.principal import PRINCIPAL_KEY, Principal, principal_of
from ctiserver.auth.sessions import SESSION_COOKIE, SignedIn, SignInThrottled
from ctiserver.http.errors import json_error
from ctiserver.shipped import shipped_path

HealthProbe = Callable[[], Awaitable[dict[str, Any]]]
# Who the request speaks for, or None when it is not signed in.
Authenticator = Callable[[web.Request], Awaitable[Principal | None]]


@runtime_checkable
class SignInService(Protocol):
    """An authenticator that can also open and close sessions (SessionAuthenticator)."""

    async def __call__(self, request: web.Request) -> Principal | None: ...

    async def sign_in(
        self, login: str, password: str, *, remote: str | None
    ) -> SignedIn | None: ...

    async def sign_out(self, request: web.Request) -> bool: ...


# Paths reachable without a session: the health check and the sign-in page (GET) and form (POST).
PUBLIC_PATHS: Final = frozenset({"/health", "/login"})
WEB_DIR: Final = shipped_path("web")
LOGIN_PAGE: Final = WEB_DIR / "login.html"
# Where a sign-in lands when no (safe) `next` was given.
DEFAULT_NEXT: Final = "/desktop"
_MAX_LOGIN_LENGTH: Final = 200

HEALTH_PROBE_KEY: web.AppKey[HealthProbe] = web.AppKey("health_probe")
AUTHENTICATOR_KEY: web.AppKey[Authenticator] = web.AppKey("authenticator")
SIGN_IN_KEY: web.AppKey[SignInService] = web.AppKey("sign_in")
_PAGE_KEY: web.AppKey[_Page] = web.AppKey("login_page")
_SECURE_COOKIE_KEY: web.AppKey[bool] = web.AppKey("secure_cookie")


async def _deny_all(_request: web.Request) -> Principal | None:
    return None


def _wants_json(request: web.Request) -> bool:
    """API calls and websockets are answered 401, not redirected: a script cannot follow
    a redirect to a sign-in form, and a websocket handshake cannot either."""
    path = request.path
    return (
        path == "/api"
        or path.startswith("/api/")
        or path.startswith("/ws")
        or request.headers.get("Upgrade", "").lower() == "websocket"
        or request.method not in ("GET", "HEAD")
    )


@web.middleware
async def require_authentication(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    principal = await request.app[AUTHENTICATOR_KEY](request)
    # isinstance, not truthiness: an authenticator must name someone to let a request in.
    if not isinstance(principal, Principal):
        if _wants_json(request):
            raise json_error(web.HTTPUnauthorized, "authentication required")
        raise web.HTTPFound(URL("/login").with_query(next=str(request.rel_url)))
    request[PRINCIPAL_KEY] = principal
    return await handler(request)


def same_origin(request: web.Request) -> bool:
    """True when the request's Origin header names this server (scheme-default ports ignored).

    Browsers send Origin with every websocket handshake and cross-site POST;
    cookies go along even from another site's page, so a websocket upgrade
    must check it (cross-site websocket hijacking). A missing Origin is
    refused: only a non-browser client omits it.
    """
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return False
    try:
        theirs = URL(origin)
        ours = URL.build(scheme=request.scheme, authority=request.host)
    except ValueError:
        return False
    if not theirs.is_absolute() or theirs.host is None or ours.host is None:
        return False
    # Compare host and port only: behind a TLS proxy the scheme we see (http)
    # is not the browser's (https), but the Host header is kept.
    return _authority(theirs) == _authority(ours)


_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _authority(url: URL) -> tuple[str, int | None]:
    """Lower-cased host and the port, None when it is its scheme's default."""
    assert url.host is not None
    port = url.port
    return url.host.lower(), None if port == _DEFAULT_PORTS.get(url.scheme) else port


def safe_next(value: str | None) -> str:
    """`value` if it is a path on this server, else DEFAULT_NEXT (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return DEFAULT_NEXT
    if any(ord(char) < 0x20 or char == "\\" for char in value):
        return DEFAULT_NEXT
    if URL(value).path in PUBLIC_PATHS:
        return DEFAULT_NEXT
    return value


async def health(request: web.Request) -> web.Response:
    """200 when every component is up, 503 otherwise; the body says which is down."""
    report = await request.app[HEALTH_PROBE_KEY]()
    healthy = all(part.get("ok", False) for part in report.values() if isinstance(part, dict))
    return web.json_response(
        {"status": "ok" if healthy else "degraded", **report}, status=200 if healthy else 503
    )


@dataclass
class _Page:
    """The sign-in page, read once (off the loop) and served with a strict CSP."""

    path: Path
    body: bytes | None = None
    csp: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def load(self) -> tuple[bytes, str]:
        if self.body is None:
            async with self.lock:
                if self.body is None:
                    body = await asyncio.to_thread(self.path.read_bytes)
                    self.csp = _csp_for(body.decode("utf-8"))
                    self.body = body
        return self.body, self.csp


def _csp_for(html: str) -> str:
    """A Content-Security-Policy allowing exactly the page's inline scripts and styles."""

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"
            for text in found
        )

    scripts, styles = hashes("script") or "'none'", hashes("style") or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


async def login_page(request: web.Request) -> web.Response:
    try:
        body, csp = await request.app[_PAGE_KEY].load()
    except OSError as exc:
        raise json_error(web.HTTPInternalServerError, f"sign-in page missing: {exc}") from exc
    return web.Response(
        body=body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": csp,
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
        },
    )


async def _credentials(request: web.Request) -> tuple[str, str, str | None]:
    """login, password and `next` from a JSON body or a form; 400 when unusable."""
    fields: dict[str, Any]
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except ValueError:
            data = None
        fields = data if isinstance(data, dict) else {}
    else:
        fields = dict(await request.post())
    login, password, next_ = fields.get("login"), fields.get("password"), fields.get("next")
    if (
        not isinstance(login, str)
        or not isinstance(password, str)
        or not login.strip()
        or not password
        or len(login) > _MAX_LOGIN_LENGTH
        or len(password) > MAX_PASSWORD_LENGTH
    ):
        raise json_error(web.HTTPBadRequest, "login and password are required")
    if not isinstance(next_, str):
        next_ = request.query.get("next")
    return login.strip(), password, next_


async def login(request: web.Request) -> web.Response:
    """`POST /login`: check the credentials, open a session, set the cookie."""
    # A cross-site form must not sign a browser in (login CSRF); a
    # non-browser client sends no Origin and is let through.
    if "Origin" in request.headers and not same_origin(request):
        raise json_error(web.HTTPForbidden, "cross-site sign-in refused")
    user, password, next_ = await _credentials(request)
    try:
        signed_in = await request.app[SIGN_IN_KEY].sign_in(user, password, remote=request.remote)
    except SignInThrottled as exc:
        wait = max(1, math.ceil(exc.retry_after))
        raise json_error(
            web.HTTPTooManyRequests,
            f"too many failed sign-ins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        ) from exc
    if signed_in is None:
        # One message for an unknown login, a wrong password and a disabled account.
        raise json_error(web.HTTPUnauthorized, "wrong login or password")
    response = web.json_response({**_who(signed_in.principal), "next": safe_next(next_)})
    response.set_cookie(
        SESSION_COOKIE,
        signed_in.token,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_cookie_is_secure(request),
        # No max-age: a browser-session cookie, gone when the browser closes
        # (shared desks); the server ends idle sessions on its own.
    )
    return response


async def logout(request: web.Request) -> web.Response:
    """`POST /logout`: end the session and clear the cookie."""
    if "Origin" in request.headers and not same_origin(request):
        raise json_error(web.HTTPForbidden, "cross-site sign-out refused")
    await request.app[SIGN_IN_KEY].sign_out(request)
    response = web.json_response({"signed_out": True})
    response.del_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_cookie_is_secure(request),
    )
    return response


def _cookie_is_secure(request: web.Request) -> bool:
    """Secure when the request came over TLS, or when a TLS proxy is in front of us."""
    return request.secure or request.app[_SECURE_COOKIE_KEY]


async def me(request: web.Request) -> web.Response:
    """`GET /api/me`: who the session is."""
    return web.json_response(_who(principal_of(request)))


def _who(principal: Principal) -> dict[str, Any]:
    return {
        "login": principal.login,
        "name": principal.name,
        "role": str(principal.role),
        "agent_id": principal.agent_id,
    }


def build_app(
    probe: HealthProbe,
    authenticator: Authenticator = _deny_all,
    *,
    login_page_file: Path = LOGIN_PAGE,
    secure_cookie: bool = False,
) -> web.Application:
    """The application. With a SignInService (SessionAuthenticator) as `authenticator`,
    `POST /login` and `POST /logout` work; with a plain callable, sessions come from
    elsewhere and those two routes are absent. `secure_cookie` marks the session cookie
    Secure even over plain http (`[http] secure_cookie`, behind a TLS proxy)."""
    app = web.Application(middlewares=[require_authentication])
    app[_SECURE_COOKIE_KEY] = secure_cookie
    app[HEALTH_PROBE_KEY] = probe
    app[AUTHENTICATOR_KEY] = authenticator
    app[_PAGE_KEY] = _Page(login_page_file)
    app.router.add_get("/health", health)
    app.router.add_get("/login", login_page)
    app.router.add_get("/api/me", me)
    if isinstance(authenticator, SignInService):
        app[SIGN_IN_KEY] = authenticator
        app.router.add_post("/login", login)
        app.router.add_post("/logout", logout)
    return app
