"""Per-key debounce in memory: a burst of marks for one key becomes one read.

A key is due ``debounce`` seconds after its last mark, and never later than ``max_delay``
after its first. The durable copy of the marks is in Postgres; this is only the timing.

Leading edge: when a gate allows it (the budget is plenty and few keys are arriving), the
first mark of a key whose last leading-edge read is ``debounce`` seconds old or more is due
``leading`` seconds later (tens of ms: what arrives together is read together), not after
the quiet time; later marks of it within the window coalesce as usual (the trailing edge).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from katsyncd.waiting import wait_either

LEADING_SECONDS = 0.03  # a leading-edge key is read this soon after its first mark
# More marks than this from events within the quiet time is a burst: no leading edge (each
# would cost a request of its own); the trailing edge batches them.
LEADING_MAX_ARRIVALS = 3
# A burst is over once no event came for this many of its mean gaps between events (within
# [debounce / 4, debounce]): at 167 events/s (bench burst) half a second, not the whole quiet
# time; a slow stream keeps the quiet time (a gap of 5 mean gaps happens 0.7 % of the time).
LULL_GAPS = 5.0
# How far back ``working_set`` looks: Katana's quota window (what a read spent now is paid from).
WORKING_SET_SECONDS = 60.0
# Gate: given how many marks events made within the last ``debounce`` seconds (this one
# included), may this key be read on its leading edge?
LeadingGate = Callable[[int], bool]


def _never(arrivals: int) -> bool:
    return False


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
        self.leading = LEADING_SECONDS
        self._gate: LeadingGate = _never
        self._leading: set[int] = set()  # pending keys due on their leading edge
        self._taken: dict[int, float] = {}  # key -> when its leading-edge read was taken
        self._arrivals: deque[float] = deque()  # event marks within the last debounce
        self.stream_started = -math.inf  # first event mark after the last quiet time
        self._recent: OrderedDict[int, float] = OrderedDict()  # key -> its last mark, in order
        # When the stream of events counts as over if nothing more arrives (see ``lull``).
        self.stream_quiet_at = -math.inf

    def set_leading_gate(self, gate: LeadingGate, leading: float = LEADING_SECONDS) -> None:
        """Allow leading-edge reads when ``gate(arrivals)`` says so (see the module doc)."""
        self._gate, self.leading = gate, leading

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
            if first_seen is None and not settled:  # an event (not a read): it arrives
                self._prune_arrivals(now)
                if not self._arrivals:
                    self.stream_started = now  # events after a quiet time: a new stream
                self._arrivals.append(now)
                quiet_at = now + self.lull(len(self._arrivals))
                self.stream_quiet_at = max(self.stream_quiet_at, quiet_at)
                if first is None:
                    self._arrived(k, now)
            start = now if first_seen is None else min(first_seen, now)
            self._first[k] = start if first is None else min(first, start)
            self._last[k] = last if k not in self._last else max(self._last[k], last)
            if first_seen is None:  # a new mark (not one put back after a failed read)
                self._recent[k] = now
                self._recent.move_to_end(k)
        self._prune_arrivals(now)
        self._prune_recent(now)
        self._changed.set()

    def working_set(self) -> int:
        """Keys marked within the last ``WORKING_SET_SECONDS``, read since or not, plus the
        pending ones: what a burst that goes on touching the same keys will need read
        again after it (the forecast of its tail)."""
        self._prune_recent(self._clock())
        return len(self._recent) + sum(1 for k in self._first if k not in self._recent)

    def _prune_recent(self, now: float) -> None:
        recent = self._recent
        while recent:
            _key, at = next(iter(recent.items()))
            if at > now - WORKING_SET_SECONDS:
                break
            recent.popitem(last=False)

    def lull(self, arrivals: int) -> float:
        """How long without events ends a stream of ``arrivals`` marks per quiet time: the
        quiet time for a few (each key keeps its own trailing edge), else ``LULL_GAPS`` of
        its mean gaps, at least a quarter of the quiet time. Once a burst is over every key
        it left pending is due: the quiet time protects the budget from re-reads while the
        burst goes on, and there is nothing left to protect it from."""
        if arrivals <= LEADING_MAX_ARRIVALS:
            return self.debounce
        return min(self.debounce, max(self.debounce / 4, LULL_GAPS * self.debounce / arrivals))

    def streaming(self) -> bool:
        """A burst is on: more event marks than the leading edge takes within the quiet time,
        and the last of them less than its lull ago."""
        return self.arrivals() > LEADING_MAX_ARRIVALS and self._clock() < self.stream_quiet_at

    def arrivals(self) -> int:
        """Marks from events (not reads) within the last ``debounce`` seconds."""
        self._prune_arrivals(self._clock())
        return len(self._arrivals)

    def _prune_arrivals(self, now: float) -> None:
        arrivals = self._arrivals
        while arrivals and arrivals[0] <= now - self.debounce:
            arrivals.popleft()

    def _arrived(self, key: int, now: float) -> None:
        """An event's mark of a key not pending: on its leading edge if its last
        leading-edge read is long enough ago and the gate allows."""
        self._prune_arrivals(now)
        taken = self._taken.get(key)
        recently_read = taken is not None and now - taken < self.debounce
        if not recently_read and self._gate(len(self._arrivals)):
            self._leading.add(key)

    def due_at(self, key: int) -> float:
        last = self._last[key]
        trailing = min(last + self.debounce, self._first[key] + self.max_delay)
        if last <= self.stream_quiet_at:  # marked in the stream: due when it is over
            trailing = min(trailing, self.stream_quiet_at)
        if key in self._leading:
            return min(trailing, self._first[key] + self.leading)
        return trailing

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
        now = self._clock()
        for k in keys:
            if k in self._first:
                taken[k] = self._first.pop(k)
                self._last.pop(k, None)
                if k in self._leading:  # a leading-edge read opens its key's window
                    self._leading.discard(k)
                    self._taken[k] = now
        self._forget_taken(now)
        return taken

    def _forget_taken(self, now: float) -> None:
        """Drop read times older than the quiet time (they no longer hold a key back)."""
        if len(self._taken) > 2 * len(self._first) + 64:
            horizon = now - self.debounce
            self._taken = {k: t for k, t in self._taken.items() if t > horizon}

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
