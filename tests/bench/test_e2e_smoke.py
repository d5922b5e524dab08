"""bench/e2e.py at a tiny size, as a subprocess: it runs end to end and loses no call.

Timings are not checked (speed belongs to the bench's own runs); only that the last
line is the documented JSON and that every call placed reached an outcome.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEYS = (
    "calls_per_s",
    "agents",
    "minutes",
    "offer_p99_ms",
    "pop_p99_ms",
    "lost",
    "stuck",
    "rss_mb_start",
    "rss_mb_end",
)


def test_tiny_run_reports_every_key_and_loses_no_call(pg_dsn: str) -> None:
    # The bench makes its own database; on a local PostgreSQL, through its admin DSN.
    admin = pg_dsn.rsplit("/", 1)[0] + "/postgres"
    command = [
        sys.executable,
        str(REPO / "bench" / "e2e.py"),
        *("--cps", "2", "--agents", "10", "--minutes", "0.2", "--warmup", "5"),
        *("--customers", "30", "--history", "1", "--drain", "30", "--pg", admin),
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert tuple(result)[: len(KEYS)] == KEYS
    assert result["agents"] == 10
    assert result["minutes"] == 0.2
    assert result["calls"] > 0
    assert result["lost"] == 0
    assert result["stuck"] == 0
    assert result["outcomes"] == {"answered, ended": result["calls"]}
    assert result["desktops_connected"] == 10
    assert result["wrap_ups_logged"] > 0  # the desktops wrapped up (all of them: timing)
