"""Per-key debounce in memory: a burst of marks for one key becomes one read.

A key is due ``debounce`` seconds after its last mark, and never later than ``max_delay``
after its first. The durable copy of the marks is in Postgres; this is only the timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from katsyncd.waiting import wait_either


class Debouncer:
    def __init__(
        self,
        debounce: float,
        max_delay: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.debounce = debounce
        self.max_delay = max_delay
        self._clock = clock
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._first)

    def now(self) -> float:
        """The injected clock's time (what due times are measured on)."""
        return self._clock()

    def configure(self, debounce: float, max_delay: float) -> None:
        self.debounce, self.max_delay = debounce, max_delay
        self._changed.set()

    def mark(
        self, keys: Iterable[int], *, first_seen: float | None = None, settled: bool = False
    ) -> None:
        """Note that these keys may be stale. ``first_seen`` backdates the first mark;
        ``settled`` marks come from a read of Katana (a poll, a resolved sales order), not
        from a burst of events, so they need no quiet time and are due at once."""
        now = self._clock()
        last = now - self.debounce if settled else now
        for k in keys:
            first = self._first.get(k)
            start = now if first_seen is None else min(first_seen, now)
            self._first[k] = start if first is None else min(first, start)
            self._last[k] = last if k not in self._last else max(self._last[k], last)
        self._changed.set()

    def due_at(self, key: int) -> float:
        return min(self._last[key] + self.debounce, self._first[key] + self.max_delay)

    def next_due_at(self) -> float | None:
        if not self._first:
            return None
        return min(self.due_at(k) for k in self._first)

    def due(self, now: float | None = None) -> list[int]:
        now = self._clock() if now is None else now
        return [k for k in self._first if self.due_at(k) <= now]

    def oldest_first_seen(self, keys: Iterable[int]) -> float | None:
        return min((self._first[k] for k in keys if k in self._first), default=None)

    def take(self, keys: Iterable[int]) -> dict[int, float]:
        """Remove keys (they are being read); returns each key's first-mark time."""
        taken = {}
        for k in keys:
            if k in self._first:
                taken[k] = self._first.pop(k)
                self._last.pop(k, None)
        return taken

    async def wait_due(self, stop: asyncio.Event) -> bool:
        """Wait until some key is due; False if ``stop`` was set first."""
        while not stop.is_set():
            nxt = self.next_due_at()
            now = self._clock()
            if nxt is not None and nxt <= now:
                return True
            timeout = None if nxt is None else nxt - now
            self._changed.clear()
            await wait_either(self._changed, stop, timeout)
        return False
