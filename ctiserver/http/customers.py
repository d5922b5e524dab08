"""REST API for customer records and their contact history (described in openapi.json).

    GET   /api/customers?q=&phone=&account=&limit=   search (any signed-in role)
    POST  /api/customers                             create
    GET   /api/customers/{id}                        one customer
    PATCH /api/customers/{id}                        change fields, replace or add numbers
    GET   /api/customers/{id}/history?limit=         interactions, newest first
    POST  /api/customers/import                      CSV upload (supervisor or above)
    GET   /api/openapi.json                          this API's OpenAPI 3.1 description

Errors are JSON `{"error": message}`, with `"field"` naming the offending
field for a 400. A database that cannot be reached is a 503, caught here at
the edge so that the store functions stay plain.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from functools import partial, wraps
from importlib import resources
from typing import Any, Final

import asyncpg
from aiohttp import BodyPartReader, web

from ctiserver.auth.principal import Role, require_role
from ctiserver.http.errors import error_response, json_error
from ctiserver.store.customer_import import ImportFileError, import_customers_csv
from ctiserver.store.customers import (
    SEARCH_LIMIT_MAX,
    Customer,
    CustomerFieldError,
    create_customer,
    customer_exists,
    get_customer,
    search_customers,
    update_customer,
)
from ctiserver.store.database import Database, DatabaseUnavailable
from ctiserver.store.interactions import HISTORY_LIMIT_MAX, Interaction, customer_history

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_LIMIT: Final = 20
# A CSV of a few hundred thousand customers; more is a job for the CLI.
IMPORT_MAX_BYTES: Final = 50 * 1024 * 1024
# customers.id is a bigint.
_ID_MAX: Final = 2**63 - 1
_UNAVAILABLE: Final = "the customer database is unavailable; try again shortly"

# Failures of the database rather than of the request: the server is down,
# restarting, out of connections, or the pool was closed under us.
_OUTAGE: Final = (
    OSError,
    TimeoutError,
    DatabaseUnavailable,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)

_dumps = partial(json.dumps, ensure_ascii=False)


class _BadRequest(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, _OUTAGE):
        return True
    # asyncpg reports "pool is closing/closed" and "connection is closed" with the
    # InterfaceError it also uses for programming errors: tell them apart by the text.
    text = str(exc).lower()
    return isinstance(exc, asyncpg.InterfaceError) and ("closed" in text or "closing" in text)


def _guarded(handler: Handler) -> Handler:
    """Bad input -> 400 naming the field; database outage -> 503."""

    @wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _BadRequest as exc:
            return error_response(400, str(exc), exc.field)
        except CustomerFieldError as exc:
            return error_response(400, str(exc), exc.field)
        except ImportFileError as exc:
            return error_response(400, str(exc), "file")
        except Exception as exc:
            if not _is_outage(exc):
                raise
            log.warning(
                "%s %s: database unavailable: %s: %s",
                request.method,
                request.path,
                type(exc).__name__,
                exc,
            )
            return error_response(503, _UNAVAILABLE)

    return run


# -- JSON out -----------------------------------------------------------------


def _decimal_text(value: Decimal | None) -> str | None:
    # Money as a string: a JSON number would lose cents in some clients.
    return None if value is None else str(value)


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def customer_json(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "name": customer.name,
        "grade": customer.grade,
        "value": _decimal_text(customer.value),
        "churn_risk": _decimal_text(customer.churn_risk),
        "language": customer.language,
        "preferred_channel": customer.preferred_channel,
        "account_manager_id": customer.account_manager_id,
        "notes": customer.notes,
        "phones": [
            {"number": p.number, "digits": p.digits, "label": p.label} for p in customer.phones
        ],
        "accounts": [{"number": a.number, "kind": a.kind} for a in customer.accounts],
        "created_at": _instant(customer.created_at),
        "updated_at": _instant(customer.updated_at),
    }


def interaction_json(item: Interaction) -> dict[str, Any]:
    return {
        "id": item.id,
        "customer_id": item.customer_id,
        "call_id": item.call_key,
        "channel": item.channel,
        "direction": item.direction,
        "address": item.address,
        "queue": item.queue_name,
        "agent_login": item.agent_login,
        "agent_name": item.agent_name,
        "disposition": item.disposition,
        "notes": item.notes,
        "resolved": item.resolved,
        "recording_path": item.recording_path,
        "started_at": _instant(item.started_at),
        "ended_at": _instant(item.ended_at),
        "wrap_up_at": _instant(item.wrap_up_at),
        "follow_up_at": _instant(item.follow_up_at),
    }


def _ok(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps, headers=headers)


# -- JSON in ------------------------------------------------------------------

CREATE_FIELDS: Final = frozenset(
    {"name", "grade", "value", "language", "preferred_channel", "notes", "phones", "accounts"}
)
PATCH_FIELDS: Final = CREATE_FIELDS | {"add_phones", "add_accounts"}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


async def _json_object(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _BadRequest("body", f"the body is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _BadRequest("body", "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _BadRequest(
            unknown[0], f"unknown field {unknown[0]!r}; fields are {', '.join(sorted(allowed))}"
        )
    return body


def _string(body: Mapping[str, Any], name: str, *, nullable: bool = False) -> str | None:
    value = body[name]
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        kind = "a string or null" if nullable else "a string"
        raise _BadRequest(name, f"{name} must be {kind}")
    return value


def _required_string(body: Mapping[str, Any], name: str) -> str:
    value = _string(body, name)
    assert value is not None  # not nullable
    return value


def _value(body: Mapping[str, Any]) -> Decimal | None:
    value = body["value"]
    if value is None:
        return None
    # bool is an int to Python, not a number to a client.
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise _BadRequest("value", "value must be a number, a numeric string or null")
    try:
        return Decimal(value.strip() if isinstance(value, str) else value)
    except ArithmeticError:
        raise _BadRequest("value", f"value {value!r} is not a number") from None


def _numbers(body: Mapping[str, Any], name: str, extra: str) -> list[tuple[str, str]]:
    """A list of "number" or {"number": ..., extra: ...} -> (number, extra) pairs."""
    items = body[name]
    if not isinstance(items, list):
        raise _BadRequest(name, f"{name} must be a list")
    pairs: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        if isinstance(item, str):
            pairs.append((item, ""))
            continue
        if not isinstance(item, dict):
            raise _BadRequest(where, f"{where} must be a string or an object")
        unknown = sorted(set(item) - {"number", extra})
        if unknown:
            raise _BadRequest(f"{where}.{unknown[0]}", f"unknown field {unknown[0]!r} in {where}")
        number, label = item.get("number"), item.get(extra, "")
        if not isinstance(number, str):
            raise _BadRequest(f"{where}.number", f"{where}.number must be a string")
        if not isinstance(label, str):
            raise _BadRequest(f"{where}.{extra}", f"{where}.{extra} must be a string")
        pairs.append((number, label))
    return pairs


def _customer_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The store keyword arguments for the fields present in `body` (types checked here,
    values by the store's check_* rules)."""
    fields: dict[str, Any] = {}
    for name in ("name", "grade", "notes"):
        if name in body:
            fields[name] = _required_string(body, name)
    for name in ("language", "preferred_channel"):
        if name in body:
            fields[name] = _string(body, name, nullable=True)
    if "value" in body:
        fields["value"] = _value(body)
    for name in ("phones", "add_phones"):
        if name in body:
            fields[name] = _numbers(body, name, "label")
    for name in ("accounts", "add_accounts"):
        if name in body:
            fields[name] = _numbers(body, name, "kind")
    return fields


def _customer_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isascii() or not text.isdigit():
        raise _BadRequest("id", f"customer id {text!r} is not a number")
    return int(text)


def _limit(request: web.Request, maximum: int) -> int:
    text = request.query.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= maximum:
        raise _BadRequest("limit", f"limit must be a whole number from 1 to {maximum}")
    return int(text)


def _not_found(customer_id: int) -> web.Response:
    return error_response(404, f"no customer {customer_id}")


# -- Upload -------------------------------------------------------------------


async def _upload(request: web.Request) -> bytes:
    """The CSV: the `file` part of a multipart form, or the whole body (text/csv)."""
    chunks: list[bytes] = []
    size = 0

    def take(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        if size > IMPORT_MAX_BYTES:
            raise json_error(
                web.HTTPRequestEntityTooLarge,
                f"the file is over {IMPORT_MAX_BYTES} bytes",
                max_size=IMPORT_MAX_BYTES,
                actual_size=size,
            )
        chunks.append(chunk)

    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "file":
                while chunk := await part.read_chunk():
                    take(chunk)
                return b"".join(chunks)
            await part.release()
        raise _BadRequest("file", "the form has no 'file' part")
    async for chunk in request.content.iter_chunked(64 * 1024):
        take(chunk)
    if not chunks:
        raise _BadRequest("file", "the body is empty: send the CSV file")
    return b"".join(chunks)


# -- Routes -------------------------------------------------------------------


def load_openapi() -> str:
    """The OpenAPI description shipped next to this module (ctiserver/http/openapi.json)."""
    return resources.files("ctiserver.http").joinpath("openapi.json").read_text(encoding="utf-8")


def customer_routes(database: Database) -> web.RouteTableDef:
    """The customer API on `database`; add to an app whose middleware signs requests in."""
    routes = web.RouteTableDef()
    openapi = load_openapi()

    @routes.get("/api/customers")
    @_guarded
    async def search(request: web.Request) -> web.StreamResponse:
        require_role(request, Role.AGENT)
        unknown = sorted(set(request.query) - {"q", "phone", "account", "limit"})
        if unknown:
            raise _BadRequest(unknown[0], f"unknown query parameter {unknown[0]!r}")
        criteria = {
            key: request.query[param].strip() or None
            for key, param in (("name", "q"), ("phone", "phone"), ("account", "account"))
            if param in request.query
        }
        try:
            found = await search_customers(
                database, **criteria, limit=_limit(request, SEARCH_LIMIT_MAX)
            )
        except CustomerFieldError as exc:
            # The store names its argument; the client sent query parameters.
            raise _BadRequest("q" if exc.field == "name" else exc.field, str(exc)) from exc
        return _ok({"customers": [customer_json(c) for c in found]})

    @routes.post("/api/customers")
    @_guarded
    async def create(request: web.Request) -> web.StreamResponse:
        require_role(request, Role.AGENT)
        body = await _json_object(request, CREATE_FIELDS)
        if "name" not in body:
            raise _BadRequest("name", "name is required")
        customer = await create_customer(database, **_customer_fields(body))
        return _ok(
            customer_json(customer),
            status=201,
            headers={"Location": f"/api/customers/{customer.id}"},
        )

    @routes.get("/api/customers/{id}")
    @_guarded
    async def read(request: web.Request) -> web.StreamResponse:
        require_role(request, Role.AGENT)
        customer_id = _customer_id(request)
        customer = None if customer_id > _ID_MAX else await get_customer(database, customer_id)
        if customer is None:
            return _not_found(customer_id)
        return _ok(customer_json(customer))

    @routes.patch("/api/customers/{id}")
    @_guarded
    async def update(request: web.Request) -> web.StreamResponse:
        require_role(request, Role.AGENT)
        customer_id = _customer_id(request)
        body = await _json_object(request, PATCH_FIELDS)
        fields = _customer_fields(body)
        if customer_id > _ID_MAX:
            return _not_found(customer_id)
        customer = await update_customer(database, customer_id, **fields)
        if customer is None:
            return _not_found(customer_id)
        return _ok(customer_json(customer))

    @routes.get("/api/customers/{id}/history")
    @_guarded
    async def history(request: web.Request) -> web.StreamResponse:
        require_role(request, Role.AGENT)
        customer_id = _customer_id(request)
        limit = _limit(request, HISTORY_LIMIT_MAX)
        if customer_id > _ID_MAX or not await customer_exists(database, customer_id):
            return _not_found(customer_id)
        items = await customer_history(database, customer_id, limit)
        return _ok(
            {"customer_id": customer_id, "interactions": [interaction_json(i) for i in items]}
        )

    @routes.post("/api/customers/import")
    @_guarded
    async def import_csv(request: web.Request) -> web.StreamResponse:
        # The role first: a refused upload is not read.
        require_role(request, Role.SUPERVISOR)
        report = await import_customers_csv(database, await _upload(request))
        return _ok(report.as_dict())

    @routes.get("/api/openapi.json")
    async def describe(request: web.Request) -> web.StreamResponse:
        require_role(request, Role.AGENT)
        return web.Response(text=openapi, content_type="application/json")

    return routes


def add_customer_routes(app: web.Application, database: Database) -> None:
    app.router.add_routes(customer_routes(database))
