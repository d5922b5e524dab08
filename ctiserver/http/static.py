"""The web pages: `GET /desktop` (the agent desktop), `GET /wallboard` (supervisors and
admins; an agent gets 403) and `GET /static/...` (their files).

Everything is served from the `web/` folder by ctiserver itself, so the
desktop works without internet access (no CDN, no build step). Both routes sit
behind the sign-in middleware of ctiserver.http.app (an unauthenticated page
request is redirected to `/login`).

Only regular files directly in, or below, the web folder are served, with a
known file type; no directory listing, nothing outside the folder (`..`,
absolute paths, symlinks pointing out), no hidden files. Text types go out
as UTF-8. Pages carry a Content-Security-Policy allowing only the server's
own scripts, styles and websocket: the desktop needs nothing else, and data
shown on it can never run as script.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from aiohttp import web

from ctiserver.auth.principal import Role, require_role

DESKTOP_PAGE: Final = "desktop.html"
WALLBOARD_PAGE: Final = "wallboard.html"
STATIC_PREFIX: Final = "/static/"

# File types served, by suffix: (content type, charset or None).
CONTENT_TYPES: Final[dict[str, tuple[str, str | None]]] = {
    ".html": ("text/html", "utf-8"),
    ".css": ("text/css", "utf-8"),
    ".js": ("text/javascript", "utf-8"),
    ".mjs": ("text/javascript", "utf-8"),
    ".json": ("application/json", "utf-8"),
    ".txt": ("text/plain", "utf-8"),
    ".svg": ("image/svg+xml", "utf-8"),
    ".png": ("image/png", None),
    ".ico": ("image/x-icon", None),
    ".woff2": ("font/woff2", None),
}

PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; font-src 'self'; connect-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_PAGE_HEADERS: Final = {
    **_SECURITY_HEADERS,
    "Content-Security-Policy": PAGE_CSP,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# Revalidated on every load (cheap with the ETag), so an upgrade shows at once.
_FILE_HEADERS: Final = {**_SECURITY_HEADERS, "Cache-Control": "no-cache"}


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    etag: str
    content_type: str
    charset: str | None


class WebFolder:
    """Resolves request paths to files of one folder, refusing anything outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def resolve(self, relative: str) -> Path | None:
        """The file for `relative` (a URL path below /static/), or None when not servable."""
        if not relative or "\\" in relative or "\x00" in relative:
            return None
        parts = PurePosixPath(relative).parts
        if not parts or any(
            part in ("", ".", "..") or part.startswith(".") or part == "/" for part in parts
        ):
            return None
        if PurePosixPath(relative).suffix.lower() not in CONTENT_TYPES:
            return None
        candidate = self.root.joinpath(*parts)
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(self.root) or not real.is_file():
            return None
        return real

    async def read(self, path: Path) -> _File | None:
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except OSError:
            return None
        content_type, charset = CONTENT_TYPES[path.suffix.lower()]
        etag = hashlib.sha256(body).hexdigest()[:32]
        return _File(body, f'"{etag}"', content_type, charset)


def _response(request: web.Request, file: _File, headers: dict[str, str]) -> web.Response:
    if file.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers={**headers, "ETag": file.etag})
    return web.Response(
        body=file.body,
        content_type=file.content_type,
        charset=file.charset,
        headers={**headers, "ETag": file.etag},
    )


def add_web_routes(app: web.Application, web_dir: Path) -> None:
    """`GET /desktop`, `GET /wallboard` and `GET /static/{path}` from `web_dir` (behind
    app's sign-in middleware)."""
    folder = WebFolder(web_dir)

    async def desktop(request: web.Request) -> web.StreamResponse:
        path = folder.resolve(DESKTOP_PAGE)
        file = await folder.read(path) if path is not None else None
        if file is None:
            raise web.HTTPInternalServerError(text=f"{DESKTOP_PAGE} is missing from {web_dir}")
        return _response(request, file, _PAGE_HEADERS)

    async def wallboard(request: web.Request) -> web.StreamResponse:
        require_role(request, Role.SUPERVISOR)
        path = folder.resolve(WALLBOARD_PAGE)
        file = await folder.read(path) if path is not None else None
        if file is None:
            raise web.HTTPInternalServerError(text=f"{WALLBOARD_PAGE} is missing from {web_dir}")
        return _response(request, file, _PAGE_HEADERS)

    async def static(request: web.Request) -> web.StreamResponse:
        path = folder.resolve(request.match_info["path"])
        file = await folder.read(path) if path is not None else None
        if file is None:
            raise web.HTTPNotFound(text="not found")
        headers = _PAGE_HEADERS if file.content_type == "text/html" else _FILE_HEADERS
        return _response(request, file, headers)

    app.router.add_get("/desktop", desktop)
    app.router.add_get("/wallboard", wallboard)
    app.router.add_get(STATIC_PREFIX + "{path:.+}", static)


__all__ = ["CONTENT_TYPES", "PAGE_CSP", "WebFolder", "add_web_routes"]
