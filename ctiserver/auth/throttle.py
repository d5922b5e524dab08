"""Failed sign-in throttling: at most N failures per key in any 60-second window.

In memory and per process: it slows password guessing against one login or
from one address; it is not an account lock-out (nothing is stored, a
restart forgets it), so an attacker cannot lock a real agent out for long.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

WINDOW_S: Final = 60.0
# Keys are pruned once this many are tracked, so a spray of logins cannot grow memory unbounded.
_PRUNE_AT: Final = 10_000


class FailureThrottle:
    """Counts failures per key (a login, an address) over a sliding minute.

    `clock` returns seconds (any epoch); tests pass their own.
    """

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        if limit < 1:
            raise ValueError("the limit must be at least 1")
        self.limit = limit
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        failures = self._recent(key)
        if failures is None or len(failures) < self.limit:
            return 0.0
        # The window frees a slot when the oldest failure that still counts ages out.
        return max(0.0, failures[-self.limit] + WINDOW_S - self._clock())

    def attempt(self, key: str) -> float:
        """Count an attempt as a failure now, before its outcome is known; return its stamp.

        Counting first means concurrent guesses cannot all slip under the
        limit while their passwords are being checked. `forgive` takes it back.
        """
        if len(self._failures) >= _PRUNE_AT:
            self._prune()
        stamp = self._clock()
        failures = self._failures.setdefault(key, deque())
        failures.append(stamp)
        # Only the last `limit` failures decide anything.
        while len(failures) > self.limit:
            failures.popleft()
        return stamp

    def forgive(self, key: str, stamp: float) -> None:
        """Take back the attempt counted at `stamp` (it succeeded)."""
        failures = self._failures.get(key)
        if failures is not None and stamp in failures:
            failures.remove(stamp)

    def clear(self, key: str) -> None:
        """Forget every failure of `key`."""
        self._failures.pop(key, None)

    def _recent(self, key: str) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        cutoff = self._clock() - WINDOW_S
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def _prune(self) -> None:
        for key in list(self._failures):
            self._recent(key)
