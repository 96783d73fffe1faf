"""How long a supervised loop waits before it is restarted after an error (pure arithmetic on
an injected clock; the daemon's supervisor uses it)."""

from __future__ import annotations

import time
from collections.abc import Callable

LOOP_ERROR_BACKOFF_SECONDS = 2.0
LOOP_ERROR_BACKOFF_CAP_SECONDS = 30.0
# A loop that ran this long since its last restart was healthy: its next error starts the
# backoff afresh (else after a few transient errors in a long life every later one waits 30 s).
LOOP_HEALTHY_SECONDS = 60.0


class RestartBackoff:
    """How long a supervised loop waits before its next restart (pure; injected clock).

    Doubles with each consecutive failure up to the cap; a run of ``healthy_after`` seconds
    or more between two failures resets the count."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        base: float = LOOP_ERROR_BACKOFF_SECONDS,
        cap: float = LOOP_ERROR_BACKOFF_CAP_SECONDS,
        healthy_after: float = LOOP_HEALTHY_SECONDS,
    ) -> None:
        self._clock = clock
        self._base = base
        self._cap = cap
        self._healthy_after = healthy_after
        self.failures = 0
        self._started = clock()

    def started(self) -> None:
        """The loop (re)starts now."""
        self._started = self._clock()

    def failed(self) -> float:
        """The loop failed now: the delay before restarting it."""
        if self._clock() - self._started >= self._healthy_after:
            self.failures = 0
        self.failures += 1
        return min(self._cap, self._base * 2.0 ** min(self.failures, 4))
