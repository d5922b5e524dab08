"""REST API for the figures of METRICS.md (described in openapi.json). Supervisor role or above.

    GET /api/metrics/queues?from=&to=&grain=&by=queue|skill&format=json|csv&<variant>=
    GET /api/metrics/agents?from=&to=&grain=&format=&<variant>=
    GET /api/metrics/centre?from=&to=&grain=&format=&<variant>=
    GET /api/metrics/staffing?queue=&calls_per_hour=&aht_s=&target_sl=&target_s=
                              &max_occupancy=&shrinkage=

`from` and `to` are ISO dates or date-times, local to the centre's time zone
unless they carry an offset; a date as `to` includes that day; no `to`: the
day of `from`. `grain` is interval (15 minutes), day (default) or range.
Variants (ctiserver/metrics/reports.py VARIANTS: sl_mode, count_short_abandons,
short_abandon_s, sl_threshold_s, callback_wait, occupancy_includes_acw,
fcr_window_s, fcr_scope, interval_s, timezone) override the defaults for one
report; every report names the variants it used.

Errors as everywhere (http/errors.py): `{"error": message, "field": parameter}` with 400
for a bad parameter, 503 when the database cannot be reached.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from functools import wraps
from typing import Any, Final

from aiohttp import web
from multidict import MultiMapping

from ctiserver.acd.config import AcdConfig
from ctiserver.auth.principal import Role, require_role
from ctiserver.http.customers import _is_outage
from ctiserver.http.errors import error_response
from ctiserver.metrics.erlang import agents_required
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.report_source import report as best_report
from ctiserver.metrics.reports import (
    VARIANTS,
    ParameterError,
    Report,
    centre_timezone,
    parse_grain,
    parse_range,
    settings_with,
    to_csv,
)
from ctiserver.metrics.settings import MetricSettings
from ctiserver.store.database import Database

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AcdConfigProvider = Callable[[], AcdConfig | None]

_UNAVAILABLE: Final = "the event log database is unavailable; try again shortly"
_REPORT_PARAMS: Final = frozenset({"from", "to", "grain", "format", *VARIANTS})
_STAFFING_PARAMS: Final = frozenset(
    {"queue", "calls_per_hour", "aht_s", "target_sl", "target_s", "max_occupancy", "shrinkage"}
)


def _dumps(value: Any) -> str:
    # NaN never reaches here (figures are ratios or None); refuse it rather than emit bad JSON.
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _guarded(handler: Handler) -> Handler:
    """Bad parameter -> 400 naming it; database outage -> 503."""

    @wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ParameterError as exc:
            return error_response(400, str(exc), exc.name)
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


def _check_names(query: MultiMapping[str], allowed: frozenset[str]) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ParameterError(
            unknown[0],
            f"unknown query parameter {unknown[0]!r}; parameters are {', '.join(sorted(allowed))}",
        )
    repeated = sorted(name for name in set(query) if len(query.getall(name)) > 1)
    if repeated:
        raise ParameterError(repeated[0], f"{repeated[0]} is given more than once")


def _respond(report: Report, kind: str, output: str) -> web.Response:
    if output == "csv":
        day = datetime.fromtimestamp(report.start, report.settings.zone).date().isoformat()
        return web.Response(
            text=to_csv(report),
            content_type="text/csv",
            charset="utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="metrics-{kind}-{day}.csv"',
            },
        )
    return web.json_response(report.as_json(), dumps=_dumps)


def _fraction(query: Mapping[str, str], name: str, default: float | None) -> float | None:
    text = query.get(name)
    return default if not text else _real(name, text)


def _real(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ParameterError(name, f"{name} must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise ParameterError(name, f"{name} must be a finite number")
    return value


def metrics_routes(
    database: Database,
    acd_config_provider: AcdConfigProvider,
    settings: MetricSettings | None = None,
) -> web.RouteTableDef:
    """The metrics API reading `database`'s event log.

    `acd_config_provider` gives the ACD configuration in force (queue skills,
    names, the groups listed); `settings` the default variants, else the
    defaults of METRICS.md in the time zone of the queues' business hours.
    """
    routes = web.RouteTableDef()

    def base_settings(config: AcdConfig | None) -> MetricSettings:
        if settings is not None:
            return settings
        return MetricSettings(timezone=centre_timezone(config) or "UTC")

    async def report(request: web.Request, kind: str, by: str, extra: frozenset[str]) -> Any:
        require_role(request, Role.SUPERVISOR)
        query = request.query
        _check_names(query, _REPORT_PARAMS | extra)
        config = acd_config_provider()
        chosen = settings_with(
            base_settings(config), {name: query[name] for name in VARIANTS if name in query}
        )
        grain = parse_grain("grain", query.get("grain"), Grain.DAY)
        start, end = parse_range(query.get("from"), query.get("to"), chosen.zone, grain)
        output = query.get("format", "json")
        if output not in ("json", "csv"):
            raise ParameterError("format", f"format must be json or csv, not {output!r}")
        result = await best_report(
            database, start, end, by=by, grain=grain, settings=chosen, config=config
        )
        return _respond(result, kind, output)

    @routes.get("/api/metrics/queues")
    @_guarded
    async def queues(request: web.Request) -> web.StreamResponse:
        by = request.query.get("by", "queue")
        if by not in ("queue", "skill"):
            # Checked after the role: an agent learns nothing from a 400.
            require_role(request, Role.SUPERVISOR)
            raise ParameterError("by", f"by must be queue or skill, not {by!r}")
        response: web.StreamResponse = await report(request, "queues", by, frozenset({"by"}))
        return response

    @routes.get("/api/metrics/agents")
    @_guarded
    async def agents(request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = await report(request, "agents", "agent", frozenset())
        return response

    @routes.get("/api/metrics/centre")
    @_guarded
    async def centre(request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = await report(request, "centre", "centre", frozenset())
        return response

    @routes.get("/api/metrics/staffing")
    @_guarded
    async def staffing(request: web.Request) -> web.StreamResponse:
        require_role(request, Role.SUPERVISOR)
        query = request.query
        _check_names(query, _STAFFING_PARAMS)
        queue = query.get("queue") or None
        title = None
        if queue is not None:
            config = acd_config_provider()
            try:
                title = config.queue(queue).title if config is not None else None
            except KeyError:
                raise ParameterError("queue", f"unknown queue {queue!r}") from None
        inputs: dict[str, float | None] = {}
        for name in ("calls_per_hour", "aht_s"):
            text = query.get(name)
            if not text:
                raise ParameterError(name, f"{name} is required")
            inputs[name] = _real(name, text)
        inputs["target_sl"] = _fraction(query, "target_sl", 0.8)
        inputs["target_s"] = _fraction(query, "target_s", 20.0)
        inputs["max_occupancy"] = _fraction(query, "max_occupancy", None)
        inputs["shrinkage"] = _fraction(query, "shrinkage", 0.0)
        # (name, lowest, lowest allowed?, highest, highest allowed?, what it must be)
        bounds: tuple[tuple[str, float, bool, float, bool, str], ...] = (
            ("calls_per_hour", 0, True, math.inf, False, "a number >= 0"),
            ("aht_s", 0, False, math.inf, False, "a number of seconds > 0"),
            ("target_sl", 0, False, 1, False, "a fraction between 0 and 1 (0.8 for 80 %)"),
            ("target_s", 0, True, math.inf, False, "a number of seconds >= 0"),
            ("max_occupancy", 0, False, 1, True, "a fraction in (0, 1] (0.85 for 85 %)"),
            ("shrinkage", 0, True, 1, False, "a fraction in [0, 1) (0.3 for 30 %)"),
        )
        for name, low, low_ok, high, high_ok, what in bounds:
            value = inputs[name]
            if value is None:
                continue
            above = value > low or (low_ok and value == low)
            below = value < high or (high_ok and value == high)
            if not (above and below):
                raise ParameterError(name, f"{name} must be {what}")
        try:
            result = agents_required(
                inputs["calls_per_hour"] or 0.0,
                inputs["aht_s"] or 0.0,
                inputs["target_sl"] or 0.0,
                inputs["target_s"] or 0.0,
                max_occupancy=inputs["max_occupancy"],
                shrinkage=inputs["shrinkage"] or 0.0,
            )
        except ValueError as exc:
            raise ParameterError("target_sl", str(exc)) from exc
        body = {
            "queue": queue,
            "name": title,
            "inputs": inputs,
            "traffic_erlangs": result.traffic_erlangs,
            "agents": result.agents,
            "scheduled": result.scheduled,
            "service_level": result.service_level,
            "wait_probability": result.wait_probability,
            "occupancy": result.occupancy,
            "asa_s": result.asa_s,
        }
        return web.json_response(body, dumps=_dumps)

    return routes


def add_metrics_routes(
    app: web.Application,
    database: Database,
    acd_config_provider: AcdConfigProvider,
    settings: MetricSettings | None = None,
) -> None:
    app.router.add_routes(metrics_routes(database, acd_config_provider, settings))
