"""Erlang C staffing against published values, and stable for thousands of agents."""

from __future__ import annotations

import math

import pytest

from ctiserver.metrics.erlang import (
    agents_required,
    average_speed_of_answer,
    erlang_b,
    erlang_c,
    service_level,
)


def test_classic_example_needs_14_agents() -> None:
    # Call Centre Helper, "Erlang C Formula - Made Simple": 100 calls in 30 minutes,
    # AHT 180 s (A = 10 Erlangs), target 80 % in 20 s: the published answer is 14
    # agents, with P(wait) = 0.6821 at its first step (11 agents).
    assert erlang_c(11, 10) == pytest.approx(0.6821, abs=5e-5)
    # Regression values of this implementation (not from the article): SL at 11
    # and 14 agents, ASA at 11.
    assert service_level(11, 10, 180, 20) == pytest.approx(0.38961, abs=5e-5)
    assert average_speed_of_answer(11, 10, 180) == pytest.approx(122.78, abs=0.01)
    assert service_level(14, 10, 180, 20) == pytest.approx(0.88835, abs=5e-5)
    staffing = agents_required(200, 180, 0.80, 20)
    assert staffing.agents == 14
    assert staffing.traffic_erlangs == pytest.approx(10)
    assert service_level(13, 10, 180, 20) < 0.8 <= staffing.service_level


def test_erlang_b_table_value() -> None:
    # Erlang B tables: 10 Erlangs on 15 circuits blocks 3.65 %.
    assert erlang_b(15, 10) == pytest.approx(0.0365, abs=5e-5)


def test_max_occupancy_and_shrinkage() -> None:
    staffing = agents_required(200, 180, 0.80, 20, max_occupancy=0.70, shrinkage=0.30)
    assert staffing.agents == 15  # 10 / 14 = 71 % is too busy
    assert staffing.occupancy is not None and staffing.occupancy <= 0.70
    assert staffing.scheduled == math.ceil(15 / 0.7)


def _erlang_c_logspace(n: int, a: float) -> float:
    """An independent check: the textbook sum evaluated with logarithms."""
    log_terms = [k * math.log(a) - math.lgamma(k + 1) for k in range(n)]
    log_last = n * math.log(a) - math.lgamma(n + 1) + math.log(n / (n - a))
    top = max([*log_terms, log_last])
    total = sum(math.exp(t - top) for t in log_terms) + math.exp(log_last - top)
    return math.exp(log_last - top) / total


@pytest.mark.parametrize(("agents", "traffic"), [(1200, 1150.0), (5000, 4900.0), (20000, 19800.0)])
def test_large_n_matches_an_independent_computation(agents: int, traffic: float) -> None:
    assert erlang_c(agents, traffic) == pytest.approx(_erlang_c_logspace(agents, traffic), rel=1e-9)


def test_thousands_of_agents_are_found_quickly() -> None:
    # 40 000 calls an hour of 5 minutes: A = 3333.3 Erlangs.
    staffing = agents_required(40_000, 300, 0.80, 20)
    assert staffing.agents > staffing.traffic_erlangs
    below = service_level(staffing.agents - 1, staffing.traffic_erlangs, 300, 20)
    assert below < 0.80 <= staffing.service_level
    assert 0 < staffing.wait_probability < 1


def test_edges() -> None:
    assert agents_required(0, 180, 0.8, 20).agents == 0
    assert erlang_c(10, 10) == 1.0 and service_level(9, 10, 180, 20) == 0.0
    assert average_speed_of_answer(10, 10, 180) is None
    with pytest.raises(ValueError):
        agents_required(100, 0, 0.8, 20)
    with pytest.raises(ValueError):
        agents_required(100, 180, 1.2, 20)
