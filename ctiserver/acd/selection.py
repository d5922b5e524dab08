"""Service order: which waiting call goes first, and which available agent a queue picks.

Both orders are sort keys kept in sorted lists by the engine, so the best
call or agent is the first element and nothing is scanned.

Calls in a queue: highest effective priority, then earliest virtual enqueue
time, then arrival sequence (a number the engine gives each call once, kept
across refusals and overflows).

An agent freeing up in several queues compares the head calls of those queues
by (higher priority, the agent's queue order — earlier in AgentConfig.queues
first, earlier virtual enqueue time, arrival sequence): `ranked_for_agent`.

Agents available to a queue, by the queue's policy (ties always go to the
agent idle the longest, then to configuration order):
- longest idle: earliest `available_since`;
- most skilled: highest proficiency summed over the step's required skills;
- least occupied: fewest seconds on calls and wrap-up today;
- round robin: the next agent in configuration order after the one the queue
  offered a call to last, wrapping around.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import chain, islice

from ctiserver.acd.model import AgentPolicy

# (-priority, virtual enqueue time, arrival sequence, call id)
CallKey = tuple[int, float, int, str]
# (policy's criterion, available since, configuration order, agent id)
AgentKey = tuple[float, float, int, str]
# (-priority, agent's queue order, virtual enqueue time, arrival sequence, call id)
AgentCandidate = tuple[int, int, float, int, str]


def call_key(priority: int, virtual_enqueued_at: float, sequence: int, call_id: str) -> CallKey:
    return (-priority, virtual_enqueued_at, sequence, call_id)


def ranked_for_agent(key: CallKey, queue_order: int) -> AgentCandidate:
    """How a call compares with calls from the agent's other queues."""
    return (key[0], queue_order, key[1], key[2], key[3])


def agent_key(
    policy: AgentPolicy,
    *,
    agent_id: str,
    order: int,
    available_since: float,
    skill_sum: int,
    occupied_s: float,
) -> AgentKey:
    match policy:
        case AgentPolicy.LONGEST_IDLE:
            return (0.0, available_since, order, agent_id)
        case AgentPolicy.MOST_SKILLED:
            return (float(-skill_sum), available_since, order, agent_id)
        case AgentPolicy.LEAST_OCCUPIED:
            return (occupied_s, available_since, order, agent_id)
        case AgentPolicy.ROUND_ROBIN:
            return (float(order), 0.0, order, agent_id)


def pick_agent(
    policy: AgentPolicy, ordered: list[AgentKey], last_round_robin: int | None
) -> AgentKey:
    """The agent a queue offers its call to, from its non-empty sorted availability list."""
    if policy is AgentPolicy.ROUND_ROBIN and last_round_robin is not None:
        after = bisect_left(ordered, (last_round_robin + 0.5, 0.0, 0, ""))
        return ordered[after] if after < len(ordered) else ordered[0]
    return ordered[0]


def agents_in_turn(
    policy: AgentPolicy, ordered: list[AgentKey], last_round_robin: int | None
) -> Iterator[AgentKey]:
    """The availability list in the order the queue tries agents: pick_agent's first.

    For a call that only some of the step's agents may take; round robin
    goes on from the agent after the last one offered, wrapping around.
    Do not change `ordered` while iterating.
    """
    if policy is AgentPolicy.ROUND_ROBIN and last_round_robin is not None:
        # Where pick_agent starts: the first agent after the one offered last.
        after = bisect_left(ordered, (last_round_robin + 0.5, 0.0, 0, ""))
        return chain(islice(ordered, after, None), islice(ordered, after))
    return iter(ordered)
