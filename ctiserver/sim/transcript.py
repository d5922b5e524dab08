"""Loader for the recorded Asterisk transcripts (shared/asterisk/scenarios).

Each scenario folder holds `ami*.jsonl` (one AMI connection each) and, where
FastAGI was involved, `agi.jsonl` (every FastAGI connection, told apart by
`conn`). A record is one complete frame or line with its direction and time.
The replay tests, the emulator's conformance tests and the ingest benchmark
all read them through this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Looked up in this order: $CTISERVER_TRANSCRIPTS, then ../shared/asterisk
# beside the checkout (where CI and every developer have it).
_ENV_VAR = "CTISERVER_TRANSCRIPTS"


def transcripts_root() -> Path:
    """The `scenarios` folder of the recorded transcripts."""
    configured = os.environ.get(_ENV_VAR)
    if configured:
        return Path(configured)
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "asterisk" / "scenarios"


@dataclass(frozen=True, slots=True)
class Record:
    """One recorded frame (AMI) or line (FastAGI)."""

    t: float
    direction: str  # "in": from Asterisk; "out": from the CTI side
    data: str
    conn: int = 0  # FastAGI connection number within the scenario
    eof: bool = False  # Asterisk closed the connection
    shutdown_wr: bool = False  # the CTI side half-closed (FastAGI)
    close: bool = False  # the CTI side closed without Logoff (AMI)

    @property
    def incoming(self) -> bool:
        return self.direction == "in"


def load_records(path: Path) -> list[Record]:
    records: list[Record] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                records.append(
                    Record(
                        t=float(raw["t"]),
                        direction=raw["dir"],
                        data=raw["data"],
                        conn=int(raw.get("conn", 0)),
                        eof=bool(raw.get("eof", False)),
                        shutdown_wr=bool(raw.get("shutdown_wr", False)),
                        close=bool(raw.get("close", False)),
                    )
                )
            except (KeyError, ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a transcript record: {exc}") from exc
    return records


@dataclass(frozen=True)
class Scenario:
    """One scenario folder."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def ami_files(self) -> list[Path]:
        return sorted(self.path.glob("ami*.jsonl"))

    def ami(self, file_name: str = "ami.jsonl") -> list[Record]:
        return load_records(self.path / file_name)

    @property
    def has_agi(self) -> bool:
        return (self.path / "agi.jsonl").exists()

    def agi(self) -> list[Record]:
        return load_records(self.path / "agi.jsonl") if self.has_agi else []

    def agi_connections(self) -> dict[int, list[Record]]:
        """FastAGI records grouped by connection number, each in recorded order."""
        grouped: dict[int, list[Record]] = {}
        for record in self.agi():
            grouped.setdefault(record.conn, []).append(record)
        return grouped

    def readme(self) -> str:
        return (self.path / "README.md").read_text(encoding="utf-8")


def scenarios(root: Path | None = None) -> list[Scenario]:
    """Every scenario folder, in the recorded order."""
    base = root or transcripts_root()
    return [Scenario(p) for p in sorted(base.iterdir()) if p.is_dir()]


def scenario(name: str, root: Path | None = None) -> Scenario:
    """A scenario by folder name or by its number prefix (`04`, `04b`)."""
    for candidate in scenarios(root):
        if candidate.name == name or candidate.name.split("_", 1)[0] == name:
            return candidate
    raise KeyError(f"no scenario {name!r} under {root or transcripts_root()}")


def incoming_ami_bytes(records: list[Record]) -> Iterator[bytes]:
    """The bytes Asterisk sent on one AMI connection, frame by frame."""
    for record in records:
        if record.incoming and record.data:
            yield record.data.encode("utf-8")
