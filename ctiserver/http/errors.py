"""The one shape of every HTTP error: JSON `{"error": message}`, with `"field"` naming the
offending parameter or column when there is one. Chinese text stays as it is (UTF-8)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web

HttpError = TypeVar("HttpError", bound=web.HTTPError)


def error_text(message: str, field: str | None = None) -> str:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return json.dumps(body, ensure_ascii=False)


def json_error(
    status: type[HttpError], message: str, *, field: str | None = None, **kwargs: Any
) -> HttpError:
    """An aiohttp HTTP error to raise; `kwargs` go to it (headers=..., max_size=...)."""
    return status(text=error_text(message, field), content_type="application/json", **kwargs)


def error_response(status: int, message: str, field: str | None = None) -> web.Response:
    """The same body as a response to return."""
    return web.Response(
        status=status, text=error_text(message, field), content_type="application/json"
    )
