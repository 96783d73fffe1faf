"""The flush policy: when pending stale keys are read, and how many at once.

Each kind of stale key (variants, sales orders) has one ``FlushLoop``: it waits until a key is
due (its ``Debouncer``), asks its ``FlushPolicy`` whether to read now, and hands the batch to
a handler (``flush_variants``, ``resolve_orders``). Time comes from the debouncer's injected
clock; the loop's pauses are injected (``FlushIntervals``, ``pause``), so the policy and the
loop can be driven without a real clock or a database.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from katsyncd.db import Database
from katsyncd.debounce import LEADING_MAX_ARRIVALS, Debouncer
from katsyncd.engine import Engine
from katsyncd.katana import IdsLimitLowered
from katsyncd.metrics import Metrics
from katsyncd.persistence import marks as stored
from katsyncd.poller import Poller
from katsyncd.waiting import wait_stop

log = structlog.get_logger(__name__)

MAX_VARIANTS_PER_FLUSH = 5000
# A burst's pending orders in one resolve: its incremental poll (Poller.resolve_sales_orders)
# reads them all once (at 1000, bench burst at 20 ids read the same poll pages 3 times).
MAX_ORDERS_PER_RESOLVE = 5000
KATANA_PAGE_ROWS = 250  # Katana's page size (rows)

Handler = Callable[[list[int]], Awaitable[None]]
Pause = Callable[[asyncio.Event, float], Awaitable[object]]  # e.g. waiting.wait_stop


class SweepCost(Protocol):
    """What the policy asks the Katana client about the cost of reads."""

    @property
    def effective_ids_per_request(self) -> int: ...

    def inventory_sweep_cheaper(self, variants: int) -> bool: ...

    def inventory_sweep_pages(self) -> int | None: ...


def budget_plenty(available: float, requests_per_minute: float) -> bool:
    """At least half a minute's Katana requests are in the bucket."""
    return available >= requests_per_minute / 2


# In a burst a read that would eat into the tail's reserve waits for tokens, at most this long
# after its key's first mark (a starvation guard: the reserve is at most half the bucket, so
# tokens above it come back within a window; bench --scenario burst: a bound of 3 max_delays
# forced reads late in the burst that the tail then waited 10-20 s for).
RESERVE_HOLD_SECONDS = 120.0
# With few ids per request a sweep is held while a burst lasts, at most this long after its
# first event (bench --scenario burst --array-filter-limit 20: released after 30 s, a second
# sweep followed and the run did not converge within 120 s of the last event).
SWEEP_HOLD_IN_BURST_SECONDS = 120.0
# A flush loop that waits says why at most this often (``flush_waiting`` in the log).
WAIT_LOG_SECONDS = 5.0


def variants_per_page(locations: int, ids_per_request: int) -> int:
    """Variants one /inventory request reads: one row per (variant, location), and no more
    ids than the gateway honours."""
    rows = max(1, KATANA_PAGE_ROWS // max(1, locations))
    return min(rows, ids_per_request)


def should_wait_for_more(deb: Debouncer, due: list[int], per_page: int, *, plenty: bool) -> bool:
    """In a burst (more keys arriving than the leading edge takes) or with the Katana budget
    low, wait for a full page (or the deadline) rather than spend a request on a few keys:
    tokens go in proportion to what arrives, and the tail after the burst finds them. On a
    quiet day read at once."""
    if plenty and deb.arrivals() <= LEADING_MAX_ARRIVALS:
        return False
    if len(due) >= per_page:
        return False  # a full page is ready
    if len(deb) < per_page and not bursting(deb):
        return False  # nothing more is coming to fill the page (bench burst: sales orders
        # resolved every 1.3 s, 70 at a time, while 58 a second kept arriving)
    oldest = deb.oldest_first_seen(due)
    return oldest is not None and deb.now() < oldest + deb.max_delay


def bursting(deb: Debouncer) -> bool:
    """More marks arrive from events than the leading edge takes (and the stream is not over:
    ``Debouncer.streaming``)."""
    return deb.streaming()


class FlushPolicy:
    """Sales orders: a page of ``KATANA_PAGE_ROWS``, waited for only when the budget is short
    or a burst is on; in a burst, ``reserve()`` tokens are kept for the tail."""

    def __init__(
        self,
        budget: Callable[[], float],
        rate: Callable[[], float],
        *,
        reserve: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._budget = budget  # Katana requests available now
        self._rate = rate  # Katana requests per minute (a reload may change it)
        self._reserve = reserve  # tokens the tail of a burst will need (see holds_reserve)

    # The last wait_for_more waits for something about to happen (look again soon).
    short_wait = False

    def budget_plenty(self) -> bool:
        return budget_plenty(self._budget(), self._rate())

    def state(self) -> dict[str, float]:
        """Budget and reserve now (for the log line of a loop that waits)."""
        return {"budget": round(self._budget(), 1), "reserve": round(self._reserve(), 1)}

    def leading_allowed(self, arrivals: int) -> bool:
        """The debouncer's leading-edge gate: read a key's first change at once when few keys
        are arriving (``arrivals`` within the quiet time) and a quarter of a minute's
        requests are available (a steady quiet day keeps about that much: the account's
        window also counts the polls and what max_share leaves to others); in a burst, or on
        a short budget, the debounce batches (it protects the budget)."""
        return arrivals <= LEADING_MAX_ARRIVALS and self._budget() >= self._rate() / 4

    def per_page(self) -> int:
        return KATANA_PAGE_ROWS

    def wait_for_more(self, deb: Debouncer, due: list[int]) -> bool:
        """Read nothing yet: ``due`` is too small a batch for what it would cost now."""
        if self.holds_reserve(deb, due):
            return True
        return should_wait_for_more(deb, due, self.per_page(), plenty=self.budget_plenty())

    def cost(self, keys: int) -> int:
        """Katana requests reading ``keys`` keys takes (pages)."""
        return math.ceil(keys / max(1, self.per_page()))

    def tail_cost(self, deb: Debouncer) -> int:
        """What reading everything pending here would take (the tail of a burst)."""
        return self.cost(len(deb))

    def holds_reserve(self, deb: Debouncer, due: list[int]) -> bool:
        """During a burst, read only if the tokens left after this read still cover
        ``reserve()``, the forecast of what the tail will need once the events stop (see
        ``wiring.flush_loops``): pages read mid-burst are paid again if the burst touches
        their keys again, the tail's are what the merchant waits for. Reads go ahead from
        the tokens above the reserve, as they come back. A batch that costs more than a full
        bucket holds above the reserve waits for a full bucket. Bounded: a key waits at most
        ``RESERVE_HOLD_SECONDS`` after its first mark."""
        if not bursting(deb):
            return False
        reserve = self._reserve()
        cost = min(float(self.cost(len(due))), max(1.0, self._rate() - reserve))
        if self._budget() - cost >= reserve:
            return False
        oldest = deb.oldest_first_seen(due)
        return oldest is not None and deb.now() < oldest + RESERVE_HOLD_SECONDS

    def widen(self, deb: Debouncer, batch: list[int], max_batch: int) -> list[int]:
        return batch


class VariantFlushPolicy(FlushPolicy):
    """Variants: pages sized by the locations and the gateway's id cap, and full /inventory
    sweeps held or widened when one would settle every pending variant."""

    def __init__(
        self,
        budget: Callable[[], float],
        rate: Callable[[], float],
        *,
        katana: SweepCost,
        locations: Callable[[], int],
        catalogs_pending: Callable[[], bool],
        reserve: Callable[[], float] = lambda: 0.0,
        orders_first: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(budget, rate, reserve=reserve)
        self._katana = katana
        self._locations = locations
        self._catalogs_pending = catalogs_pending  # some store's first catalog refresh is due
        self._orders_first = orders_first  # sales orders are being (or about to be) resolved
        self._waiting_for_orders_since: float | None = None

    def per_page(self) -> int:
        return variants_per_page(self._locations(), self._katana.effective_ids_per_request)

    def wait_for_more(self, deb: Debouncer, due: list[int]) -> bool:
        self.short_wait = False
        if super().wait_for_more(deb, due) or self.hold_sweep(deb, due):
            return True
        self.short_wait = self.after_orders(deb, due)  # a resolve takes tens of ms
        return self.short_wait

    def after_orders(self, deb: Debouncer, due: list[int]) -> bool:
        """Sales orders being resolved, or due and about to be, mark variants (a packed order
        moved stock, and any mark makes a variant's kept inventory useless): read the
        variants after them, in one read, rather than twice. Waits at most one quiet time
        at a stretch. (bench --scenario burst: the tail read 1,980
        variants while 792 orders were resolved, then 1,081 of them again, 6 s later.)"""
        if not due or not self._orders_first():
            self._waiting_for_orders_since = None
            return False
        if self._waiting_for_orders_since is None:
            self._waiting_for_orders_since = deb.now()
        return deb.now() < self._waiting_for_orders_since + deb.debounce

    def cost(self, keys: int) -> int:
        """Id chunks, or one full /inventory sweep if that is fewer requests."""
        chunks = super().cost(keys)
        sweep = self._katana.inventory_sweep_pages()
        return chunks if sweep is None else min(chunks, sweep)

    def hold_sweep(self, deb: Debouncer, due: list[int]) -> bool:
        """With few ids per request (fewer than an /inventory page holds) and the budget short
        of the whole read (a sweep, or the id chunks if fewer), hold the read while marks are
        still arriving (some pending variant is inside its quiet time): a read of many id
        chunks or a sweep started mid-burst is stale before it ends and is paid again; after
        the burst one read (usually a sweep) settles them all. Held at most twice a full
        sweep's duration at the configured rate (or ``max_delay`` if longer) after the oldest
        mark. At start, flushes wait for every store's first catalog refresh (at most
        ``max_delay`` after the oldest mark): its marks would otherwise arrive during the
        first read, which is usually a sweep behind a gateway with few ids per request (the
        size is learned during that read), and cost a second one.

        (Measured with ``python -m bench --scenario burst --array-filter-limit 20``, see
        docs/PERFORMANCE.md.)"""
        oldest = deb.oldest_first_seen(deb.due(now=math.inf))
        if self._catalogs_pending():
            # A first catalog refresh is about to mark its SKUs: one read for all. Bounded by
            # max_delay after the oldest mark, so a store whose catalogue cannot be read (S9:
            # failing from start-up) never holds the others' first levels longer than that.
            return oldest is not None and deb.now() < oldest + deb.max_delay
        ids = max(1, self._katana.effective_ids_per_request)
        if ids >= max(1, KATANA_PAGE_ROWS // max(1, self._locations())):
            return False  # ids are not the bottleneck: the page-sized batching applies
        pages = self._katana.inventory_sweep_pages() or 0
        cost = min(pages or len(deb), math.ceil(len(deb) / ids))
        if len(due) >= len(deb) and not bursting(deb):
            return False  # the burst is over (while it lasts every key it keeps marking is
            # due max_delay after its first mark: all due says nothing about the burst)
        if not bursting(deb) and self._budget() >= max(cost, self._rate() / 2):
            return False  # the budget holds the whole read (a burst's reserve saves tokens:
            # they are for the read after it, not for one that is stale before it ends)
        sweep_seconds = pages * 60.0 / self._rate()
        cap = max(deb.max_delay, 2 * sweep_seconds)
        if oldest is not None and bursting(deb):
            # from this burst's first event (marks left pending from before it, a warm-up,
            # must not cut the hold short), and while it lasts up to SWEEP_HOLD_IN_BURST:
            # each sweep started mid-burst is paid again after it
            oldest = max(oldest, deb.stream_started)
            cap = max(cap, SWEEP_HOLD_IN_BURST_SECONDS)
        return oldest is not None and deb.now() < oldest + cap

    def widen(self, deb: Debouncer, batch: list[int], max_batch: int) -> list[int]:
        """When every pending variant together costs more id chunks than one full /inventory
        sweep, the sweep settles them all for the same requests: take them all (most overdue
        first, up to ``max_batch``). Reading a variant before its quiet time is over is
        correct (its mark clears only up to the generation read); it saves a read later."""
        if len(deb) <= len(batch) or not self._katana.inventory_sweep_cheaper(len(deb)):
            return batch
        chosen = set(batch)
        rest = sorted((k for k in deb.due(now=math.inf) if k not in chosen), key=deb.due_at)
        return [*batch, *rest][:max_batch]


@dataclass(frozen=True, slots=True)
class FlushIntervals:
    not_ready: float = 0.2  # the mirror has not been polled yet
    wait_for_more: float = 0.25  # the policy waits for a fuller batch
    short_wait: float = 0.02  # ... or for something about to happen (a resolve in flight)
    after_failure: float = 2.0  # a batch failed: its keys go back, the loop backs off


class FlushLoop:
    """Hand due keys to ``handle`` in bulk; on failure the keys go back (their marks are
    durable anyway) and the loop backs off.

    (Measured with ``python -m bench --scenario burst``: capping a batch at one page while
    tokens are short gave 32 BigCommerce writes per store instead of 3, against a target
    of 10; large batches stay.)
    """

    def __init__(
        self,
        deb: Debouncer,
        policy: FlushPolicy,
        handle: Handler,
        *,
        max_batch: int,
        ready: Callable[[], bool],
        intervals: FlushIntervals = FlushIntervals(),
        pause: Pause = wait_stop,
    ) -> None:
        self.deb = deb
        self.policy = policy
        self._handle = handle
        self._max_batch = max_batch
        self._ready = ready  # the Katana mirror is populated (both first polls done)
        self._intervals = intervals
        self._pause = pause
        self.busy = False  # a batch is being read
        self._next_wait_log = -math.inf

    async def run(self, stop: asyncio.Event) -> None:
        deb, policy = self.deb, self.policy
        while await deb.wait_due(stop):
            if not self._ready():
                await self._pause(stop, self._intervals.not_ready)
                continue
            due = deb.due()
            if policy.wait_for_more(deb, due):
                if policy.short_wait:  # e.g. a resolve in flight: look again soon
                    await self._pause(stop, self._intervals.short_wait)
                    continue
                if deb.now() >= self._next_wait_log:  # why keys wait, every few seconds
                    self._next_wait_log = deb.now() + WAIT_LOG_SECONDS
                    log.info(
                        "flush_waiting",
                        pending=len(deb),
                        due=len(due),
                        burst=bursting(deb),
                        **policy.state(),
                    )
                await self._pause(stop, self._intervals.wait_for_more)
                continue
            batch = sorted(due, key=deb.due_at)[: self._max_batch]  # most overdue first
            batch = policy.widen(deb, batch, self._max_batch)
            firsts = deb.take(batch)
            self.busy = True
            try:
                await self._handle(batch)
            except IdsLimitLowered as exc:
                # the read learned the gateway honours fewer ids: the policy plans again
                # (in a burst it now holds the sweep); nothing was recorded
                log.info("flush_replanned", keys=len(batch), ids_per_request=exc.args[0])
                deb.mark(batch, first_seen=min(firsts.values()), settled=True)  # still due
            except Exception as exc:
                log.warning("flush_failed", keys=len(batch), error=str(exc) or type(exc).__name__)
                deb.mark(batch, first_seen=min(firsts.values()))
                self.busy = False
                await self._pause(stop, self._intervals.after_failure)
            finally:
                self.busy = False


def flush_variants(db: Database, engine: Engine, metrics: Metrics) -> Handler:
    """Read a batch of stale variants and recompute their levels (clearing their marks)."""

    async def flush(batch: list[int]) -> None:
        marks = await stored.variant_marks(db.pool, batch)
        # Every mark is durable before it is timed; one no longer stored was answered since
        # (a record cleared it at its generation, e.g. the cold sweep's): nothing to read.
        batch = [v for v in batch if v in marks.gens]
        if not batch:
            return
        started = time.monotonic()
        changed = await engine.refresh(
            batch,
            reason=marks.reason,
            gens=marks.gens,
            stale_since=marks.since,
            stop_if_lowered=True,
        )
        metrics.debounce_flushed_variants.inc(len(batch))
        log.info(
            "variants_flushed",
            variants=len(batch),
            levels_changed=changed,
            reason=marks.reason,
            seconds=round(time.monotonic() - started, 3),
        )

    return flush


def resolve_orders(poller: Poller) -> Handler:
    """Resolve a batch of marked sales orders (mirror them, mark their variants)."""

    async def resolve(batch: list[int]) -> None:
        marked = await poller.resolve_sales_orders(batch)
        log.info("sales_orders_resolved", orders=len(batch), variants_marked=marked)

    return resolve
