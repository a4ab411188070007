"""Login rate limiting and lock-out, in memory on each node: too many failures for a user or from an address lock both out a while."""

from __future__ import annotations

import logging
import time
from collections import deque

logger = logging.getLogger(__name__)

MAX_FAILURES = 5  # failed logins within WINDOW ...
WINDOW = 300.0  # seconds
LOCKOUT = 900.0  # ... lock the user name (or the client address) out for this long
MAX_KEYS = 100_000  # keys tracked before the quiet ones are forgotten


class LoginLimiter:
    """Failures per key ("user:NAME", "addr:ADDRESS"); a key with MAX_FAILURES failures in WINDOW is locked for LOCKOUT."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}  # key -> monotonic time its lock-out ends

    def retry_after(self, keys: tuple[str, ...]) -> float | None:
        """Seconds until the last lock-out among `keys` ends, or None if none is locked."""
        now = time.monotonic()
        ends = [end for end in (self._locked.get(key, 0.0) for key in keys) if end > now]
        return max(ends) - now if ends else None

    def failed(self, keys: tuple[str, ...]) -> None:
        now = time.monotonic()
        for key in keys:
            failures = self._failures.setdefault(key, deque(maxlen=MAX_FAILURES))
            failures.append(now)
            if len(failures) == MAX_FAILURES and now - failures[0] <= WINDOW:
                self._locked[key] = now + LOCKOUT
                failures.clear()
                logger.warning("logins locked out for %.0f s after %d failures in %.0f s: %s", LOCKOUT, MAX_FAILURES, WINDOW, key)
        if len(self._failures) > MAX_KEYS:
            self._failures = {key: times for key, times in self._failures.items() if times and now - times[-1] <= WINDOW}
            self._locked = {key: end for key, end in self._locked.items() if end > now}

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
