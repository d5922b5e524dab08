"""`ctiserver demo` as a user runs it on a fresh machine: a subprocess in an empty folder
(no ctiserver.toml, no database configured, so embedded PostgreSQL starts in
./data/pgdata), stopped by --duration and, on the second run, by Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

RUN_LIMIT_S = 300.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTISERVER_")}
    # Free ports of the system's choosing: other servers may hold the defaults.
    env.update(
        CTISERVER_HTTP_PORT="0",
        CTISERVER_FASTAGI_PORT="0",
        CTISERVER_AMI_PORT="0",
        CTISERVER_SERVER_LOG_LEVEL="WARNING",
    )
    return env


def _lines_until(process: subprocess.Popen[str], marker: str, limit_s: float) -> list[str]:
    """What the process prints up to the line containing `marker` (bounded in time: a
    thread reads, so a silent process cannot hold the test)."""
    assert process.stdout is not None
    stdout = process.stdout
    found: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stdout:
            found.put(line)
            if marker in line:
                break
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + limit_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = found.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        lines.append(line)
    return lines


def _postgres_stopped(folder: Path) -> bool:
    return not (folder / "data" / "pgdata" / "postmaster.pid").exists()


def test_demo_command_starts_prints_where_to_sign_in_and_stops(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "ctiserver", "demo"]
    first = subprocess.run(
        [*command, "--duration", "0.25", "--calls-per-minute", "30", "--seed", "3"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_S,
        check=False,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "/desktop" in out and "/wallboard" in out, out
    assert "agent1001 / demo1001" in out and "super / demosuper" in out
    assert "ctiserver demo stopped." in out
    assert _postgres_stopped(tmp_path)
    assert (tmp_path / "data" / "demo-acd.toml").is_file()

    # Again on the same folder, until Ctrl-C: SIGINT once it says it runs.
    second = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _lines_until(second, "until Ctrl-C", RUN_LIMIT_S)
        assert any("/wallboard" in line for line in lines), (lines, second.stderr)
        second.send_signal(signal.SIGINT)
        rest, errors = second.communicate(timeout=RUN_LIMIT_S)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    assert second.returncode == 0, errors[-3000:]
    assert "ctiserver demo stopped." in rest
    assert _postgres_stopped(tmp_path)
