"""Which way a `branch` node goes: its conditions against the call's variables and time.

Pure: the local time of the flow's zone is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from ctiserver.ivr.flow import BranchNode, Condition

# The variable a `lookup` fills with the customer's grade; `tier:` conditions read it.
TIER_VARIABLE = "tier"


def condition_holds(condition: Condition, variables: Mapping[str, str], local: datetime) -> bool:
    """Every part given holds; an unset variable matches no value."""
    for name, allowed in condition.variables.items():
        if variables.get(name) not in allowed:
            return False
    if condition.tiers and variables.get(TIER_VARIABLE) not in condition.tiers:
        return False
    clock = local.time()
    if condition.times and not any(w.start <= clock < w.end for w in condition.times):
        return False
    if condition.weekdays and local.weekday() not in condition.weekdays:
        return False
    return not condition.holidays or local.date() in condition.holidays


def choose_branch(node: BranchNode, variables: Mapping[str, str], local: datetime) -> str:
    """The node the first holding case names, else the `else` node."""
    for case in node.cases:
        if condition_holds(case.condition, variables, local):
            return case.next
    return node.otherwise
