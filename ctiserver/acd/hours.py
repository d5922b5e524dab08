"""Calendar questions in a time zone: is a queue open, and where does the centre's day end.

Instants are POSIX seconds; local wall time comes from `zoneinfo`, so daylight
saving changes and zones far from UTC (Asia/Shanghai, America/Sao_Paulo) are
handled by the tz database rather than by fixed offsets.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ctiserver.acd.model import BusinessHours, OpeningHours

DAYS_PER_WEEK = 7


@cache
def zone(name: str) -> ZoneInfo:
    """The time zone called `name`; ValueError when the tz database does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}") from error


def is_open(hours: BusinessHours | None, now: float) -> bool:
    """Whether `now` falls in one of the weekly slots and not on a closed date.

    No hours means always open. A slot is [opens, closes) in local time on its
    weekday; when `closes` is not after `opens` (22:00-06:00, or 00:00-00:00
    for a whole day) the slot runs on into the next day. A closed date shuts
    its whole local calendar day, including the tail of the previous night's slot.
    """
    if hours is None:
        return True
    local = datetime.fromtimestamp(now, zone(hours.timezone))
    if local.date().isoformat() in hours.closed_dates:
        return False
    clock = local.time()
    weekday = local.weekday()
    return any(_slot_covers(slot, weekday, clock) for slot in hours.slots)


def _slot_covers(slot: OpeningHours, weekday: int, clock: time) -> bool:
    if slot.opens < slot.closes:
        return slot.weekday == weekday and slot.opens <= clock < slot.closes
    # Runs past midnight: the evening part on its weekday, the morning part on the next.
    if slot.weekday == weekday and clock >= slot.opens:
        return True
    return (slot.weekday + 1) % DAYS_PER_WEEK == weekday and clock < slot.closes


def day_bounds(now: float, zone_name: str) -> tuple[float, float]:
    """The local calendar day containing `now`: (its first instant, the next day's first)."""
    tz = zone(zone_name)
    day = datetime.fromtimestamp(now, tz).date()
    start = datetime.combine(day, time(0), tzinfo=tz).timestamp()
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).timestamp()
    # Where midnight does not exist (a DST jump at 00:00) zoneinfo lands an
    # hour off; keep `now` inside the bounds whatever happens.
    return min(start, now), max(end, now + 1.0)
