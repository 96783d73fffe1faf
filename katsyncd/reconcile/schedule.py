"""When the daemon reconciles: every configured interval (jittered) and soon when asked.

Timing only (clock and random source injected); the daemon's loop runs what is due.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

SCHEDULED = "scheduled"
SCHEDULE_JITTER = (0.8, 1.2)  # the periodic run lands within ±20 % of the interval
RECHECK_SECONDS = 60.0  # the loop re-reads the configured interval at least this often
RETRY_SECONDS = 300.0  # a failed reconcile is tried again this much later


@dataclass(frozen=True, slots=True)
class ReconcileAsk:
    """A reconcile wanted at ``due`` (monotonic seconds) for ``stores`` (None: every store
    with stock sync on)."""

    reason: str
    stores: frozenset[str] | None
    due: float


class ReconcileSchedule:
    """When the daemon reconciles next: every interval (jittered; 0 = never, first run one
    interval after start) and soon when asked. Timing only; the daemon's loop acts on it."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.wake = asyncio.Event()
        self._clock = clock
        self._rng = rng or random.Random()
        self._asks: list[ReconcileAsk] = []
        self._interval = 0.0

    def set_interval(self, seconds: float) -> None:
        """Adopt the configured interval; a change re-plans the periodic run from now."""
        if seconds != self._interval:
            self._interval = seconds
            self._asks = [a for a in self._asks if a.reason != SCHEDULED]
            self.plan_next()

    def plan_next(self) -> None:
        """Plan the periodic run one jittered interval from now, unless planned or off."""
        if self._interval > 0 and not any(a.reason == SCHEDULED for a in self._asks):
            self._add(SCHEDULED, None, self._interval * self._rng.uniform(*SCHEDULE_JITTER))

    def ask(
        self, reason: str, stores: Collection[str] | None = None, *, delay: float = 0.0
    ) -> None:
        """Want a reconcile of ``stores`` (None: all) ``delay`` seconds from now."""
        self._add(reason, None if stores is None else frozenset(stores), delay)
        self.wake.set()

    def take_due(self) -> ReconcileAsk | None:
        """Every ask that is due, merged into one (reasons joined, stores united)."""
        now = self._clock()
        due = [a for a in self._asks if a.due <= now]
        if not due:
            return None
        self._asks = [a for a in self._asks if a.due > now]
        stores = (
            None
            if any(a.stores is None for a in due)
            else frozenset().union(*(a.stores or () for a in due))
        )
        return ReconcileAsk(",".join(sorted({a.reason for a in due})), stores, now)

    def seconds_until_due(self) -> float:
        """How long the loop may sleep (bounded, so a changed interval is picked up)."""
        nxt = min((a.due for a in self._asks), default=self._clock() + RECHECK_SECONDS)
        return max(0.0, min(nxt - self._clock(), RECHECK_SECONDS))

    def _add(self, reason: str, stores: frozenset[str] | None, delay: float) -> None:
        self._asks.append(ReconcileAsk(reason, stores, self._clock() + delay))
