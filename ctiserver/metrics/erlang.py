"""Erlang C staffing (METRICS.md "Staffing"): agents needed for a service-level target.

A = arrival rate x AHT (Erlangs). P(wait) = Erlang C(N, A), computed from the
Erlang B recursion B(0) = 1, B(n) = A B(n-1) / (n + A B(n-1)) and
C = N B / (N - A (1 - B)): every step stays in [0, 1], so there are no
factorials or powers to overflow, and N in the tens of thousands costs one
pass. SL(N) = 1 - C x exp(-(N - A) x T / AHT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Past this many agents above the traffic the search gives up: no target is
# that far out of reach for a sane input, and the loop must end.
_SEARCH_LIMIT = 1_000_000


def erlang_b(agents: int, traffic: float) -> float:
    """Blocking probability of `agents` servers offered `traffic` Erlangs."""
    if agents < 0 or traffic < 0:
        raise ValueError("agents and traffic must be >= 0")
    b = 1.0
    for n in range(1, agents + 1):
        b = traffic * b / (n + traffic * b)
    return b


def _erlang_c_from_b(agents: int, traffic: float, b: float) -> float:
    if agents <= traffic:
        return 1.0  # an unstable queue: everybody waits
    return agents * b / (agents - traffic * (1.0 - b))


def erlang_c(agents: int, traffic: float) -> float:
    """Probability that a call waits (1 when agents <= traffic)."""
    return _erlang_c_from_b(agents, traffic, erlang_b(agents, traffic))


def service_level(agents: int, traffic: float, aht_s: float, target_s: float) -> float:
    """Share of calls answered within `target_s`."""
    if agents <= traffic:
        return 0.0
    wait = erlang_c(agents, traffic)
    return max(0.0, 1.0 - wait * math.exp(-(agents - traffic) * target_s / aht_s))


def average_speed_of_answer(agents: int, traffic: float, aht_s: float) -> float | None:
    """ASA = C x AHT / (N - A); None when the queue is unstable."""
    if agents <= traffic:
        return None
    return erlang_c(agents, traffic) * aht_s / (agents - traffic)


@dataclass(frozen=True, slots=True)
class Staffing:
    traffic_erlangs: float
    agents: int  # on the phones
    scheduled: int  # agents to schedule once shrinkage is allowed for
    service_level: float
    wait_probability: float
    occupancy: float | None
    asa_s: float | None


def agents_required(
    calls_per_hour: float,
    aht_s: float,
    target_sl: float,
    target_s: float,
    *,
    max_occupancy: float | None = None,
    shrinkage: float = 0.0,
) -> Staffing:
    """The smallest N with SL(N) >= target_sl (and A / N <= max_occupancy).

    `target_sl` and `max_occupancy` are fractions (0.8 for 80 %); `shrinkage`
    is the share of paid time not on the phones (breaks, training), so
    scheduled = ceil(N / (1 - shrinkage)).
    """
    if calls_per_hour < 0 or aht_s <= 0 or target_s < 0:
        raise ValueError("calls_per_hour >= 0, aht_s > 0 and target_s >= 0 are required")
    if not 0 < target_sl < 1:
        raise ValueError("target_sl is a fraction in (0, 1)")
    if max_occupancy is not None and not 0 < max_occupancy <= 1:
        raise ValueError("max_occupancy is a fraction in (0, 1]")
    if not 0 <= shrinkage < 1:
        raise ValueError("shrinkage is a fraction in [0, 1)")
    traffic = calls_per_hour * aht_s / 3600.0
    if traffic == 0:
        return Staffing(0.0, 0, 0, 1.0, 0.0, None, 0.0)
    # B for every n up to the answer, once: the search walks N upward with it.
    b = 1.0
    n = 0
    while True:
        n += 1
        b = traffic * b / (n + traffic * b)
        if n <= traffic:
            continue
        if n > traffic + _SEARCH_LIMIT:
            raise ValueError("no staffing reaches that target")
        if max_occupancy is not None and traffic / n > max_occupancy:
            continue
        wait = _erlang_c_from_b(n, traffic, b)
        sl = max(0.0, 1.0 - wait * math.exp(-(n - traffic) * target_s / aht_s))
        if sl >= target_sl:
            return Staffing(
                traffic_erlangs=traffic,
                agents=n,
                scheduled=math.ceil(n / (1.0 - shrinkage) - 1e-9),
                service_level=sl,
                wait_probability=wait,
                occupancy=traffic / n,
                asa_s=wait * aht_s / (n - traffic),
            )
