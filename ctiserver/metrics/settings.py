"""The variant settings of METRICS.md, with the defaults it names.

Every report carries `MetricSettings.describe()` so a reader always knows which
variant produced a figure (METRICS.md: "reports say which one was used").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo


class SlMode(StrEnum):
    OFFERED = "offered"  # answered within T / offered (default)
    ANSWERED = "answered"  # answered within T / answered
    ABANDON_ADJUSTED = "abandon_adjusted"  # answered within T / (answered + abandoned after T)


class CallbackWait(StrEnum):
    # First enqueue -> the customer connected to an agent, time off the phone included.
    ELAPSED = "elapsed"
    # The same, minus the time between the callback request and the connection.
    CONNECTED_ONLY = "connected_only"


class FcrScope(StrEnum):
    SAME_QUEUE = "same_queue"
    ANY = "any"


@dataclass(frozen=True, slots=True)
class MetricSettings:
    short_abandon_s: float = 5.0
    count_short_abandons: bool = False
    sl_threshold_s: float = 20.0
    sl_mode: SlMode = SlMode.OFFERED
    callback_wait: CallbackWait = CallbackWait.ELAPSED
    occupancy_includes_acw: bool = True
    fcr_window: timedelta = timedelta(days=7)
    fcr_scope: FcrScope = FcrScope.SAME_QUEUE
    interval_s: int = 900  # historical interval length
    window_s: int = 900  # real-time sliding window
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        # Bad settings must fail where they are made, not inside a report.
        if self.short_abandon_s < 0 or self.sl_threshold_s < 0:
            raise ValueError("short_abandon_s and sl_threshold_s must be >= 0")
        if self.fcr_window <= timedelta(0):
            raise ValueError("fcr_window must be positive")
        if self.interval_s <= 0 or 86400 % self.interval_s:
            raise ValueError("interval_s must divide a day")
        if self.window_s <= 0:
            raise ValueError("window_s must be positive")
        ZoneInfo(self.timezone)  # raises for an unknown zone
        # Values read from a configuration file arrive as plain strings.
        object.__setattr__(self, "sl_mode", SlMode(self.sl_mode))
        object.__setattr__(self, "callback_wait", CallbackWait(self.callback_wait))
        object.__setattr__(self, "fcr_scope", FcrScope(self.fcr_scope))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> dict[str, Any]:
        """The variants in force, JSON-ready; every report includes this."""
        return {
            "short_abandon_s": self.short_abandon_s,
            "count_short_abandons": self.count_short_abandons,
            "sl_threshold_s": self.sl_threshold_s,
            "sl_mode": str(self.sl_mode),
            "callback_wait": str(self.callback_wait),
            "occupancy_includes_acw": self.occupancy_includes_acw,
            "fcr_window_s": self.fcr_window.total_seconds(),
            "fcr_scope": str(self.fcr_scope),
            "interval_s": self.interval_s,
            "window_s": self.window_s,
            "timezone": self.timezone,
        }

    def summary(self) -> str:
        """One line for CSV headers and the command line."""
        return (
            f"SL {self.sl_mode} within {self.sl_threshold_s:g}s; "
            f"short abandons <= {self.short_abandon_s:g}s "
            f"{'counted' if self.count_short_abandons else 'excluded'}; "
            f"callback wait {self.callback_wait}; "
            f"occupancy {'with' if self.occupancy_includes_acw else 'without'} ACW; "
            f"FCR window {self.fcr_window.total_seconds() / 86400:g} days, {self.fcr_scope}; "
            f"time zone {self.timezone}"
        )
