"""`GET /metrics`: this node's live state for Prometheus, in its text exposition format 0.0.4.

Who may read it: like every route but `/login` and `/health`, nobody
anonymous. Prometheus sends the `[http] metrics_token` setting
(CTISERVER_HTTP_METRICS_TOKEN) as `Authorization: Bearer <token>`; a person
signed in as a supervisor or admin may read it too (an agent gets 403).
Without either the answer is 401 with a message saying which of the two to
use (and, with no token configured, that only sessions can read it). The
token opens `/metrics` only: `with_metrics_token` checks it for that path
alone and hands every other request to the session authenticator.

What it says (every figure read when scraped, nothing kept on the side except
the offer latency histogram):

    ctiserver_calls_waiting{queue}              calls in line, not offered
    ctiserver_calls_ringing{queue}              calls offered, the agent's phone ringing
    ctiserver_queue_longest_wait_seconds{queue} oldest unanswered call of the queue
    ctiserver_queue_open{queue}                 1 inside business hours
    ctiserver_agents{state}                     agents by state (every state, zeros included)
    ctiserver_queue_agents{queue,state}         a queue's member agents by state
    ctiserver_acd_calls                         calls the ACD handles (waiting, ringing, talking)
    ctiserver_offer_latency_seconds             histogram: routing decision -> agent leg Ringing
    ctiserver_ami_connected                     1 while logged in to Asterisk
    ctiserver_ami_logins_total / _reconnects_total
    ctiserver_fastagi_sessions                  open FastAGI connections
    ctiserver_ivr_calls / ctiserver_ivr_flow_problems
    ctiserver_database_up                       1 when PostgreSQL answers within 1 s
    ctiserver_event_log_buffered / _spill_bytes / _outage_seconds / _written_total / _rejected_total
    process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds,
    process_start_time_seconds                  (Linux /proc; left out elsewhere)
    ctiserver_build_info{version}

The offer latency is observed by the call controller itself
(`CallController.add_ringing_listener`): from the routing decision that
made the offer to Asterisk's `Newstate Ringing` of the originated agent leg
(transcript 05), on the monotonic clock, so a scaled emulator clock does not
stretch it. bench/offer_latency.py measures the same span from outside.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import os
import re
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from aiohttp import web

from ctiserver import __version__
from ctiserver.acd.model import AgentState
from ctiserver.auth.principal import Principal, Role, require_role
from ctiserver.http.app import AUTHENTICATOR_KEY, Authenticator
from ctiserver.http.errors import json_error

if TYPE_CHECKING:
    from ctiserver.app import Server

METRICS_PATH: Final = "/metrics"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# 5 ms to 5 s: the target is p99 <= 50 ms, and a phone that takes seconds to
# ring (a lost registration, a slow network) must still land in a bucket.
OFFER_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Who a valid token speaks for: supervisor rights, on /metrics alone.
SCRAPER: Final = Principal(
    account_id=0, login="metrics-token", name="Prometheus", role=Role.SUPERVISOR
)

_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES: Final = frozenset({"gauge", "counter", "histogram", "untyped"})
_DATABASE_PROBE_S: Final = 1.0


# -- the exposition format --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    suffix: str  # "" or _bucket, _sum, _count, _total...
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(slots=True)
class MetricFamily:
    """One metric name with its HELP, TYPE and samples."""

    name: str
    help: str
    type: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"bad metric name {self.name!r}")
        if self.type not in _TYPES:
            raise ValueError(f"bad metric type {self.type!r}")

    def add(self, value: float, suffix: str = "", **labels: str) -> MetricFamily:
        for label in labels:
            if not _LABEL.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"bad label name {label!r}")
        self.samples.append(Sample(suffix, tuple(labels.items()), float(value)))
        return self


def render(families: Iterable[MetricFamily]) -> str:
    """The text exposition format 0.0.4: HELP and TYPE, then the samples, per family."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            labels = ""
            if sample.labels:
                labels = "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in sample.labels) + "}"
            lines.append(f"{family.name}{sample.suffix}{labels} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class Histogram:
    """Cumulative buckets, sum and count of observed values (never reset: a counter)."""

    def __init__(self, name: str, help: str, buckets: Sequence[float]) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be increasing and not empty")
        self.name = name
        self.help = help
        self.bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def family(self) -> MetricFamily:
        family = MetricFamily(self.name, self.help, "histogram")
        running = 0
        for bound, count in zip(self.bounds, self._counts, strict=False):
            running += count
            family.add(running, "_bucket", le=_number(bound))
        family.add(self.count, "_bucket", le="+Inf")
        family.add(self.sum, "_sum")
        family.add(self.count, "_count")
        return family


def offer_latency_histogram() -> Histogram:
    return Histogram(
        "ctiserver_offer_latency_seconds",
        "From the routing decision that offers a call to the agent leg's Newstate Ringing",
        OFFER_LATENCY_BUCKETS,
    )


# -- what the server says -------------------------------------------------------------------


async def collect(server: Server) -> list[MetricFamily]:
    """Every family, read from the running server's parts now."""
    families = _acd_families(server)
    families.append(server.offer_latency.family())
    families.extend(_link_families(server))
    families.extend(await _storage_families(server))
    families.extend(await asyncio.to_thread(_process_families))
    families.append(
        MetricFamily("ctiserver_build_info", "The running ctiserver's version", "gauge").add(
            1, version=__version__
        )
    )
    return families


def _acd_families(server: Server) -> list[MetricFamily]:
    waiting = MetricFamily("ctiserver_calls_waiting", "Calls in line, not offered yet", "gauge")
    ringing = MetricFamily(
        "ctiserver_calls_ringing", "Calls offered to an agent whose phone rings", "gauge"
    )
    longest = MetricFamily(
        "ctiserver_queue_longest_wait_seconds",
        "Since the (virtual) enqueue time of the queue's oldest unanswered call",
        "gauge",
    )
    opened = MetricFamily("ctiserver_queue_open", "1 inside the queue's business hours", "gauge")
    agents = MetricFamily("ctiserver_agents", "Agents by state", "gauge")
    queue_agents = MetricFamily(
        "ctiserver_queue_agents", "A queue's member agents by state", "gauge"
    )
    calls = MetricFamily(
        "ctiserver_acd_calls", "Calls the ACD handles: waiting, ringing or talking", "gauge"
    )
    families = [waiting, ringing, longest, opened, agents, queue_agents, calls]
    acd = server.acd
    if acd is None:
        return families
    snapshot = acd.engine.snapshot(acd.clock())
    for queue in snapshot.queues:
        waiting.add(queue.waiting, queue=queue.queue)
        ringing.add(queue.ringing, queue=queue.queue)
        longest.add(queue.longest_wait_s, queue=queue.queue)
        opened.add(1 if queue.open else 0, queue=queue.queue)
        for state in AgentState:
            queue_agents.add(queue.agents.get(state, 0), queue=queue.queue, state=state.value)
    by_state = dict.fromkeys(AgentState, 0)
    for agent in snapshot.agents:
        by_state[agent.state] += 1
    for state, count in by_state.items():
        agents.add(count, state=state.value)
    calls.add(len(acd.calls))
    return families


def _link_families(server: Server) -> list[MetricFamily]:
    ami = server.ami
    logins = ami.logins
    families = [
        MetricFamily("ctiserver_ami_connected", "1 while logged in to Asterisk's AMI", "gauge").add(
            1 if ami.connected else 0
        ),
        MetricFamily(
            "ctiserver_ami_logins_total", "Successful AMI logins since start", "counter"
        ).add(logins),
        MetricFamily(
            "ctiserver_ami_reconnects_total",
            "AMI logins after the first: each one follows a lost link",
            "counter",
        ).add(max(0, logins - 1)),
        MetricFamily(
            "ctiserver_fastagi_sessions", "Open FastAGI connections from Asterisk", "gauge"
        ).add(server.agi.connection_count),
        MetricFamily("ctiserver_ivr_calls", "Calls inside an IVR flow", "gauge").add(
            len(server.ivr.active) if server.ivr is not None else 0
        ),
        MetricFamily(
            "ctiserver_ivr_flow_problems",
            "Problems of flow files that fail their checks (0: every flow loaded)",
            "gauge",
        ).add(len(server.flows.problems)),
    ]
    return families


async def _storage_families(server: Server) -> list[MetricFamily]:
    database = server.database
    up = database is not None and await database.healthy(within_s=_DATABASE_PROBE_S)
    families = [
        MetricFamily(
            "ctiserver_database_up",
            f"1 when PostgreSQL answers SELECT 1 within {_DATABASE_PROBE_S:g} s",
            "gauge",
        ).add(1 if up else 0)
    ]
    if server.events is None:
        return families
    stats = server.events.stats()
    outage_s = 0.0
    if stats.failing_since is not None:
        outage_s = max(0.0, time.time() - stats.failing_since.timestamp())
    families += [
        MetricFamily(
            "ctiserver_event_log_buffered", "Events in memory, not yet in the database", "gauge"
        ).add(stats.buffered),
        MetricFamily(
            "ctiserver_event_log_spill_bytes",
            "Bytes of events spilled to disk during a database outage, still to replay",
            "gauge",
        ).add(stats.spill_bytes),
        MetricFamily(
            "ctiserver_event_log_outage_seconds",
            "Since event writes started failing (0: writing)",
            "gauge",
        ).add(outage_s),
        MetricFamily(
            "ctiserver_event_log_written_total", "Events written to the database", "counter"
        ).add(stats.written),
        MetricFamily(
            "ctiserver_event_log_rejected_total",
            "Events the database refused, kept in the rejected file",
            "counter",
        ).add(stats.rejected),
    ]
    return families


def _process_families() -> list[MetricFamily]:
    """The process's memory, CPU time, descriptors and start time (Linux /proc; else none)."""
    families = []
    times = os.times()
    families.append(
        MetricFamily(
            "process_cpu_seconds_total", "User and system CPU time of the process", "counter"
        ).add(times.user + times.system)
    )
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
        families.append(
            MetricFamily(
                "process_resident_memory_bytes", "Resident memory of the process", "gauge"
            ).add(resident_pages * os.sysconf("SC_PAGE_SIZE"))
        )
        families.append(
            MetricFamily("process_open_fds", "Open file descriptors", "gauge").add(
                len(os.listdir("/proc/self/fd"))
            )
        )
        families.append(
            MetricFamily(
                "process_start_time_seconds", "Start of the process, Unix time", "gauge"
            ).add(_start_time())
        )
    except (OSError, ValueError, IndexError):
        pass  # not Linux: the CPU time is all we can tell cheaply
    return families


def _start_time() -> float:
    with open("/proc/self/stat", encoding="utf-8", errors="replace") as stat:
        # Field 22 (starttime, clock ticks after boot); the command name before it may hold spaces.
        fields = stat.read().rpartition(")")[2].split()
    started_ticks = int(fields[19])
    with open("/proc/stat", encoding="ascii") as system:
        boot = next(int(line.split()[1]) for line in system if line.startswith("btime "))
    return boot + started_ticks / os.sysconf("SC_CLK_TCK")


# -- the route ----------------------------------------------------------------------------------

SERVER_KEY: web.AppKey[Server] = web.AppKey("prometheus_server")


def _unauthorized(message: str) -> web.HTTPUnauthorized:
    return json_error(
        web.HTTPUnauthorized,
        message,
        headers={"WWW-Authenticate": 'Bearer realm="ctiserver metrics"'},
    )


def with_metrics_token(authenticator: Authenticator, token: str) -> Authenticator:
    """`authenticator`, letting a request for /metrics with the right bearer token in.

    For /metrics it also answers 401 itself, with the message a person setting
    up Prometheus needs, instead of the generic one (or a sign-in redirect).
    """
    expected = token.encode()

    async def authenticate(request: web.Request) -> Principal | None:
        if request.path != METRICS_PATH:
            return await authenticator(request)
        scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            if not expected:
                raise _unauthorized(
                    "no metrics token is configured on this server ([http] metrics_token,"
                    " CTISERVER_HTTP_METRICS_TOKEN); until one is, only a signed-in"
                    " supervisor or admin can read /metrics"
                )
            if hmac.compare_digest(offered.strip().encode(), expected):
                return SCRAPER
            raise _unauthorized("wrong metrics token")
        principal = await authenticator(request)
        if principal is not None:
            return principal
        if expected:
            raise _unauthorized(
                "authentication required: send the [http] metrics_token as"
                " 'Authorization: Bearer <token>', or sign in as a supervisor or admin"
            )
        raise _unauthorized(
            "authentication required: sign in as a supervisor or admin; for Prometheus,"
            " set [http] metrics_token (CTISERVER_HTTP_METRICS_TOKEN) and send it as"
            " 'Authorization: Bearer <token>'"
        )

    return authenticate


async def metrics_page(request: web.Request) -> web.Response:
    require_role(request, Role.SUPERVISOR)
    text = render(await collect(request.app[SERVER_KEY]))
    return web.Response(
        body=text.encode("utf-8"),
        headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
    )


def add_prometheus_routes(app: web.Application, server: Server, *, token: str) -> None:
    """Mount GET /metrics for `server` and let `token` (if any) read it."""
    app[SERVER_KEY] = server
    app[AUTHENTICATOR_KEY] = with_metrics_token(app[AUTHENTICATOR_KEY], token)
    app.router.add_get(METRICS_PATH, metrics_page)
