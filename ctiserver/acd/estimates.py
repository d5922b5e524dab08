"""Estimated wait time: recent handle times spread over the agents able to serve.

A queue's handle time (talk + wrap-up) is an exponentially weighted moving
average, so the estimate follows the last few dozen calls rather than the
whole day. Before the first call a configured default stands in.
"""

from __future__ import annotations

from dataclasses import dataclass

# Weight of the newest sample: about the last ten calls dominate.
HANDLE_TIME_WEIGHT = 0.2


@dataclass(slots=True)
class HandleTime:
    """A queue's moving average of talk + wrap-up seconds."""

    seconds: float
    samples: int = 0

    def record(self, sample_s: float) -> None:
        # The first real call replaces the default instead of being averaged with a guess.
        if self.samples == 0:
            self.seconds = sample_s
        else:
            self.seconds += HANDLE_TIME_WEIGHT * (sample_s - self.seconds)
        self.samples += 1


def estimated_wait_s(position: int, handle_time_s: float, servers: int) -> float | None:
    """Seconds until the caller at `position` (1-based) reaches an agent.

    Each of `servers` agents frees up once per handle time on average, so the
    line moves one place every handle_time / servers seconds. None when nobody
    can serve; 0 for position 0 (already being offered).
    """
    if position < 0:
        raise ValueError(f"position must be >= 0, not {position}")
    if servers <= 0:
        return None
    return position * handle_time_s / servers
