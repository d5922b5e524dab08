"""Report buckets as SQL expressions: intervals.bucket_start computed by PostgreSQL.

`{tz}` (the centre's IANA time zone) and `{iv}` (interval seconds) are left as
placeholders for the query's parameters; for Grain.RANGE the bucket is `$1`,
the range's start.
"""

from __future__ import annotations

from ctiserver.metrics.intervals import Grain


def bucket_sql(grain: Grain, column: str) -> str:
    """The start of the bucket holding the instant `column` (POSIX seconds)."""
    if grain is Grain.RANGE:
        return "$1"
    if grain is Grain.DAY:
        return (
            f"extract(epoch FROM date_trunc('day', to_timestamp({column}) AT TIME ZONE {{tz}})"
            " AT TIME ZONE {tz})"
        )
    # The interval holding it, aligned on local time.
    offset = (
        f"extract(epoch FROM (to_timestamp({column}) AT TIME ZONE {{tz}})"
        f" - (to_timestamp({column}) AT TIME ZONE 'UTC'))"
    )
    return f"floor(({column} + {offset}) / {{iv}}) * {{iv}} - {offset}"
