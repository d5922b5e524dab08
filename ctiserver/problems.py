"""Helpers for files operators write by hand: reading them, and suggesting the name they meant."""

from __future__ import annotations

import difflib
import zoneinfo
from collections.abc import Iterable
from pathlib import Path


def read_text_file(path: Path) -> tuple[str | None, str | None]:
    """(text, None), or (None, a problem line naming the file) when it cannot be read as UTF-8."""
    source = str(path)
    try:
        return path.read_text(encoding="utf-8"), None
    except FileNotFoundError:
        return None, f"{source}: no such file"
    except UnicodeDecodeError as exc:
        return None, f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"
    except OSError as exc:
        return None, f"{source}: cannot read: {exc.strerror or exc}"


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.7) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or ''."""
    # Looser than 0.7, the suggestions turn silly ("transfer" -> "raise").
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def zone_exists(name: str) -> bool:
    """Whether `name` is an IANA time zone this machine knows ("Asia/Shanghai")."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True
