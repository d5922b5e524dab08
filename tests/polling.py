"""Waiting in tests for a condition that another task or process makes true."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

POLL_S = 0.005


async def until(predicate: Callable[[], bool], what: str = "condition", limit: float = 5.0) -> None:
    """Poll `predicate` until true; AssertionError naming `what` after `limit` seconds."""
    for _ in range(max(1, int(limit / POLL_S))):
        if predicate():
            return
        await asyncio.sleep(POLL_S)
    if not predicate():
        raise AssertionError(f"{what} not reached within {limit} s")
