"""Time buckets: 15-minute intervals, local days, or one range; agent time split at edges."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class Grain(StrEnum):
    INTERVAL = "interval"  # settings.interval_s, aligned on local time
    DAY = "day"  # local midnight to local midnight (23 or 25 hours on DST days)
    RANGE = "range"  # the whole requested range as one bucket


def bucket_start(at: float, grain: Grain, interval_s: int, zone: ZoneInfo, start: float) -> float:
    """The start of the bucket holding `at` (`start` is the range's, for Grain.RANGE)."""
    if grain is Grain.RANGE:
        return start
    local = datetime.fromtimestamp(at, zone)
    if grain is Grain.DAY:
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight.timestamp()
    offset = local.utcoffset() or timedelta(0)
    shifted = at + offset.total_seconds()
    return math.floor(shifted / interval_s) * interval_s - offset.total_seconds()


def bucket_end(begin: float, grain: Grain, interval_s: int, zone: ZoneInfo, end: float) -> float:
    if grain is Grain.RANGE:
        return end
    if grain is Grain.DAY:
        local = datetime.fromtimestamp(begin, zone)
        following = (local + timedelta(days=1, hours=3)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        return following.timestamp()
    return begin + interval_s


def buckets(
    start: float, end: float, grain: Grain, interval_s: int, zone: ZoneInfo
) -> Iterator[tuple[float, float]]:
    """Every bucket overlapping [start, end), clipped to it, in order."""
    if end <= start:
        return
    begin = bucket_start(start, grain, interval_s, zone, start)
    while begin < end:
        stop = bucket_end(begin, grain, interval_s, zone, end)
        yield max(begin, start), min(stop, end)
        begin = stop


def split(
    a: float, b: float, start: float, end: float, grain: Grain, interval_s: int, zone: ZoneInfo
) -> Iterator[tuple[float, float]]:
    """[a, b) clipped to [start, end), cut at bucket edges: (bucket start, seconds) pairs."""
    lo, hi = max(a, start), min(b, end)
    if hi <= lo:
        return
    for begin, stop in buckets(lo, hi, grain, interval_s, zone):
        yield bucket_start(begin, grain, interval_s, zone, start), stop - begin
