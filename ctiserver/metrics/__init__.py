"""Contact-center figures (METRICS.md): pure math over the event log, and its queries.

Pure core (no I/O, time passed in): `MetricFold` turns events (`MetricEvent`,
from table rows or live appends) into facts; `queue_report` / `agent_report`
compute the figures per queue, skill, centre or agent, per interval, day or
range; `erlang.agents_required` sizes staffing; `MetricSettings` holds the
variants, and `describe()` names them in every report.
"""

from ctiserver.metrics.erlang import Staffing, agents_required, erlang_c, service_level
from ctiserver.metrics.facts import MetricEvent
from ctiserver.metrics.figures import (
    NOTES,
    AgentTotals,
    QueueTotals,
    Row,
    agent_report,
    longest_wait,
    queue_report,
    skills_of_queue,
)
from ctiserver.metrics.fold import MetricFold
from ctiserver.metrics.intervals import Grain
from ctiserver.metrics.settings import CallbackWait, FcrScope, MetricSettings, SlMode

__all__ = [
    "NOTES",
    "AgentTotals",
    "CallbackWait",
    "FcrScope",
    "Grain",
    "MetricEvent",
    "MetricFold",
    "MetricSettings",
    "QueueTotals",
    "Row",
    "SlMode",
    "Staffing",
    "agent_report",
    "agents_required",
    "erlang_c",
    "longest_wait",
    "queue_report",
    "service_level",
    "skills_of_queue",
]
