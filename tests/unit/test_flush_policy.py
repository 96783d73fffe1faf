"""The flush policy and loop, and the in-memory half of the stale marks, on a clock the test
moves by hand: no Postgres, no simulator, no real waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from katsyncd.debounce import Debouncer
from katsyncd.flush import (
    KATANA_PAGE_ROWS,
    FlushIntervals,
    FlushLoop,
    FlushPolicy,
    VariantFlushPolicy,
    budget_plenty,
    bursting,
    should_wait_for_more,
    variants_per_page,
)
from katsyncd.ingest import Effect
from katsyncd.katana import IdsLimitLowered
from katsyncd.marks import StaleMarks
from katsyncd.metrics import Metrics

RATE = 60.0  # Katana requests per minute in these tests
SHORT, PLENTY = 0.0, RATE  # budgets: nothing left, a full minute's worth


class JumpClock:
    """A monotonic clock the test moves; ``pause`` moves it instead of waiting (the same
    shape as tests/support/clocks.JumpClock, plus the stop event a flush loop's pause takes)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def pause(self, stop: asyncio.Event, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Sweep:
    """Stands in for the Katana client's read-cost answers."""

    def __init__(self, *, cheaper_from: int = 10**9, pages: int | None = 10, ids: int = 250):
        self.cheaper_from = cheaper_from  # pending variants from which a full sweep is cheaper
        self.pages = pages
        self.effective_ids_per_request = ids

    def inventory_sweep_cheaper(self, variants: int) -> bool:
        return variants >= self.cheaper_from

    def inventory_sweep_pages(self) -> int | None:
        return self.pages


def deb_on(clock: JumpClock, debounce: float = 1.0, max_delay: float = 10.0) -> Debouncer:
    return Debouncer(debounce, max_delay, clock=clock)


def variant_policy(
    sweep: Sweep, budget: float, *, locations: int = 1, catalogs_pending: bool = False
) -> VariantFlushPolicy:
    return VariantFlushPolicy(
        lambda: budget,
        lambda: RATE,
        katana=sweep,
        locations=lambda: locations,
        catalogs_pending=lambda: catalogs_pending,
    )


# ----- pure pieces -----------------------------------------------------------------------------
def test_budget_is_plenty_from_half_a_minutes_requests() -> None:
    assert budget_plenty(30.0, 60.0)
    assert not budget_plenty(29.9, 60.0)


@pytest.mark.parametrize(
    ("locations", "ids", "expected"),
    [(0, 250, 250), (1, 250, 250), (3, 250, 83), (300, 250, 1), (1, 20, 20), (3, 20, 20)],
)
def test_variants_per_page_is_rows_per_location_capped_by_the_id_filter(
    locations: int, ids: int, expected: int
) -> None:
    assert variants_per_page(locations, ids) == expected


def test_a_burst_on_a_short_budget_waits_for_a_page_until_max_delay() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark(range(10), settled=True)  # due now
    deb.mark(range(10, 300))  # due after the quiet second
    due = deb.due()
    assert len(due) == 10
    assert should_wait_for_more(deb, due, 250, plenty=False)
    assert should_wait_for_more(deb, due, 250, plenty=True)  # 290 arriving: pace, even so
    assert not should_wait_for_more(deb, due, 5, plenty=False)  # a full page is due
    clock.now = 9.99
    assert should_wait_for_more(deb, due, 250, plenty=False)
    clock.now = 10.0  # the oldest due key reached max_delay
    assert not should_wait_for_more(deb, due, 250, plenty=False)


def test_no_burst_no_wait() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark(range(3), settled=True)
    assert not should_wait_for_more(deb, deb.due(), 250, plenty=False)  # 3 pending < a page


def test_in_a_burst_a_few_pending_keys_still_wait_for_a_page_to_fill() -> None:
    """bench burst: 58 sales orders a second, each resolve one request however few it reads;
    read as soon as a few were due, 70 went at a time every 1.3 s. While the burst lasts a
    part page waits (up to max_delay); once it is over the few are read at once."""
    clock = JumpClock()
    deb = deb_on(clock, debounce=1.0)
    deb.mark([100, 101], settled=True)  # due at once (from a read)
    for step in range(150):  # 100 events a second, 5 keys: few pending, many arriving
        clock.now = step / 100
        deb.mark([step % 5])
    due = deb.due()
    assert 0 < len(due) < len(deb) < 250 and bursting(deb)
    assert should_wait_for_more(deb, due, 250, plenty=False)
    clock.now = deb.stream_quiet_at  # over: nothing more is coming to fill the page
    assert not should_wait_for_more(deb, deb.due(), 250, plenty=False)


def test_many_pending_but_none_arriving_is_read_at_once_on_a_plenty_budget() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark(range(10), settled=True)  # from reads (a poll), due now
    deb.mark(range(10, 300), first_seen=0.0)  # put back by a failed batch: not arrivals
    assert deb.arrivals() == 0
    assert not should_wait_for_more(deb, deb.due(), 250, plenty=True)
    assert should_wait_for_more(deb, deb.due(), 250, plenty=False)


# ----- variant policy ----------------------------------------------------------------------------
def test_variant_page_follows_locations_and_the_gateway_cap() -> None:
    assert variant_policy(Sweep(ids=250), SHORT, locations=2).per_page() == 125
    assert variant_policy(Sweep(ids=40), SHORT, locations=2).per_page() == 40


def test_sweep_held_while_marks_arrive_for_twice_its_duration() -> None:
    clock = JumpClock()
    deb = deb_on(clock, debounce=1.0, max_delay=4.0)
    sweep = Sweep(cheaper_from=100, pages=10, ids=20)  # 10 pages at 60/min: a 10 s sweep
    deb.mark(range(50), settled=True)
    deb.mark(range(50, 150))  # still in their quiet time
    policy = variant_policy(sweep, SHORT)
    due = deb.due()
    assert policy.hold_sweep(deb, due)
    clock.now = 19.9  # cap = max(max_delay 4, 2 x 10 s) = 20 s after the oldest mark
    deb.mark([1000])  # marks keep arriving: one variant is inside its quiet time
    assert policy.hold_sweep(deb, deb.due())
    clock.now = 20.0
    assert len(deb.due()) < len(deb)  # still arriving, but the hold has run its course
    assert not policy.hold_sweep(deb, deb.due())


def test_read_not_held_when_ids_are_no_bottleneck_budget_holds_it_or_all_due() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark(range(50), settled=True)
    deb.mark(range(50, 150), first_seen=0.0)  # pending, not due, but no burst is arriving
    # a page of ids per request: the page-sized batching applies, no hold
    assert not variant_policy(Sweep(cheaper_from=100, ids=250), SHORT).hold_sweep(deb, deb.due())
    # 20 ids per request, but the budget holds the whole read (8 chunks, half a minute's rate)
    assert not variant_policy(Sweep(cheaper_from=100, ids=20), PLENTY).hold_sweep(deb, deb.due())
    assert variant_policy(Sweep(cheaper_from=100, ids=20), SHORT).hold_sweep(deb, deb.due())
    deb.mark(range(150, 160))  # events arriving: a burst's saved tokens are for after it
    assert variant_policy(Sweep(cheaper_from=100, ids=20), PLENTY).hold_sweep(deb, deb.due())
    clock.now = 1.0  # every pending variant is due: nothing more is coming
    assert not variant_policy(Sweep(cheaper_from=100, ids=20), SHORT).hold_sweep(deb, deb.due())


def test_sweep_waits_for_first_catalog_refreshes_even_with_plenty_budget() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark(range(150), settled=True)
    policy = variant_policy(Sweep(cheaper_from=100), PLENTY, catalogs_pending=True)
    assert policy.wait_for_more(deb, deb.due())
    cheap_reads = variant_policy(Sweep(cheaper_from=1000), PLENTY, catalogs_pending=True)
    assert cheap_reads.wait_for_more(deb, deb.due())  # whatever the read costs: one read for all
    refreshed = variant_policy(Sweep(cheaper_from=1000), PLENTY, catalogs_pending=False)
    assert not refreshed.wait_for_more(deb, deb.due())
    clock.now = deb.max_delay  # a store whose catalogue cannot be read holds nobody longer (S9)
    assert not policy.wait_for_more(deb, deb.due())


def test_widen_takes_every_pending_variant_most_overdue_first_when_a_sweep_is_cheaper() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark([1, 2], settled=True)
    clock.now = 0.5
    deb.mark([4])
    clock.now = 0.2
    deb.mark([3])
    batch = [1, 2]
    assert variant_policy(Sweep(cheaper_from=4), SHORT).widen(deb, batch, 10) == [1, 2, 3, 4]
    assert variant_policy(Sweep(cheaper_from=4), SHORT).widen(deb, batch, 3) == [1, 2, 3]
    assert variant_policy(Sweep(cheaper_from=5), SHORT).widen(deb, batch, 10) == batch


def test_order_policy_reads_pages_of_katana_rows_and_never_widens() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark(range(KATANA_PAGE_ROWS + 5))
    policy = FlushPolicy(lambda: SHORT, lambda: RATE)
    assert policy.per_page() == KATANA_PAGE_ROWS
    assert policy.widen(deb, [1], 10) == [1]


# ----- the loop --------------------------------------------------------------------------------
class Recorder:
    """A flush handler that records batches, fails the first ``failures`` calls, and stops
    the loop once ``until`` keys have been handled."""

    def __init__(self, stop: asyncio.Event, until: int, failures: int = 0) -> None:
        self.stop, self.until, self.failures = stop, until, failures
        self.batches: list[list[int]] = []

    async def __call__(self, batch: list[int]) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("katana down")
        self.batches.append(batch)
        if sum(map(len, self.batches)) >= self.until:
            self.stop.set()


def run_loop(
    deb: Debouncer,
    clock: JumpClock,
    policy: FlushPolicy,
    handler: Callable[[asyncio.Event], Recorder],
    *,
    max_batch: int = 1000,
    ready: Callable[[], bool] = lambda: True,
) -> Recorder:
    async def go() -> Recorder:
        stop = asyncio.Event()
        rec = handler(stop)
        loop = FlushLoop(deb, policy, rec, max_batch=max_batch, ready=ready, pause=clock.pause)
        await asyncio.wait_for(loop.run(stop), 5)
        return rec

    return asyncio.run(go())


def test_loop_waits_for_a_page_on_a_short_budget_then_reads_it_in_one_batch() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark(range(10), settled=True)
    deb.mark(range(10, 300))  # due at t=1
    rec = run_loop(deb, clock, FlushPolicy(lambda: SHORT, lambda: RATE), lambda s: Recorder(s, 300))
    assert [len(b) for b in rec.batches] == [300]
    assert clock.pauses == [FlushIntervals().wait_for_more] * 4  # 4 x 0.25 s = the quiet second


def test_loop_reads_what_is_due_at_once_on_a_plenty_budget() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark(range(10), settled=True)
    deb.mark(range(10, 300), first_seen=0.0)  # pending, due later, but not arriving now
    rec = run_loop(deb, clock, FlushPolicy(lambda: PLENTY, lambda: RATE), lambda s: Recorder(s, 10))
    assert rec.batches == [list(range(10))]
    assert clock.pauses == []
    assert len(deb) == 290  # the rest stay pending


def test_loop_caps_batches_most_overdue_first() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark([5, 6, 7], settled=True)
    clock.now = 3.0
    deb.mark([1, 2], settled=True)
    policy = FlushPolicy(lambda: PLENTY, lambda: RATE)
    rec = run_loop(deb, clock, policy, lambda s: Recorder(s, 5), max_batch=2)
    assert rec.batches == [[5, 6], [7, 1], [2]]


def test_loop_puts_a_failed_batch_back_with_its_first_mark_and_backs_off() -> None:
    clock = JumpClock()
    deb = deb_on(clock, debounce=1.0, max_delay=10.0)
    deb.mark([1, 2], settled=True)
    policy = FlushPolicy(lambda: PLENTY, lambda: RATE)
    rec = run_loop(deb, clock, policy, lambda s: Recorder(s, 2, failures=2))
    assert rec.batches == [[1, 2]]
    assert clock.pauses == [FlushIntervals().after_failure] * 2


def test_failed_batch_keeps_its_max_delay_deadline() -> None:
    async def go() -> None:
        clock = JumpClock()
        deb = deb_on(clock, debounce=1.0, max_delay=10.0)
        deb.mark([1], settled=True)
        stop = asyncio.Event()

        async def fail_then_stop(batch: list[int]) -> None:
            stop.set()
            raise RuntimeError("katana down")

        policy = FlushPolicy(lambda: PLENTY, lambda: RATE)
        loop = FlushLoop(deb, policy, fail_then_stop, max_batch=10, ready=lambda: True)
        await asyncio.wait_for(loop.run(stop), 5)
        assert deb.oldest_first_seen([1]) == 0.0  # back with its first mark, not a new one

    asyncio.run(go())


def test_a_read_that_learns_fewer_ids_per_request_goes_back_to_the_policy() -> None:
    """bench burst at 20 ids: a read sent with 250 ids learns the gateway honours 20; rather
    than sweep mid-burst, its keys go back (still due, first marks kept, no failure pause)
    and the policy, now seeing 20 ids, holds the sweep until the burst is over (its lull:
    410 events within the quiet time of 1 s, so 0.25 s without one)."""
    clock = JumpClock()
    deb = deb_on(clock, debounce=1.0, max_delay=4.0)
    sweep = Sweep(cheaper_from=100, pages=10, ids=250)
    policy = variant_policy(sweep, PLENTY)
    deb.mark(range(400))  # a burst from t=0 ...
    clock.now = 0.9
    deb.mark(range(400, 410))  # ... still arriving at t=0.9
    assert deb.stream_quiet_at == 0.9 + 0.25
    clock.now = 1.0  # the first 400 are due, the burst is on (the last event 0.1 s ago)
    reads: list[tuple[float, int]] = []

    async def go() -> None:
        stop = asyncio.Event()

        async def read(batch: list[int]) -> None:
            reads.append((clock.now, len(batch)))
            if len(reads) == 1:
                sweep.effective_ids_per_request = 20
                raise IdsLimitLowered(20)
            stop.set()

        loop = FlushLoop(deb, policy, read, max_batch=1000, ready=lambda: True, pause=clock.pause)
        await asyncio.wait_for(loop.run(stop), 5)

    asyncio.run(go())
    assert reads == [(1.0, 410), (1.25, 410)]  # widened to a sweep; then held until t=1.15
    assert clock.pauses == [FlushIntervals().wait_for_more]  # no failure pause
    assert len(deb) == 0


def test_loop_reads_nothing_before_the_mirror_is_ready() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark([1], settled=True)
    looks = iter([False, False, True])
    policy = FlushPolicy(lambda: PLENTY, lambda: RATE)
    rec = run_loop(deb, clock, policy, lambda s: Recorder(s, 1), ready=lambda: next(looks))
    assert rec.batches == [[1]]
    assert clock.pauses == [FlushIntervals().not_ready] * 2


def test_loop_returns_when_stopped_with_nothing_due() -> None:
    async def go() -> None:
        deb = deb_on(JumpClock())
        stop = asyncio.Event()
        stop.set()
        policy = FlushPolicy(lambda: PLENTY, lambda: RATE)
        loop = FlushLoop(deb, policy, Recorder(stop, 1), max_batch=10, ready=lambda: True)
        await asyncio.wait_for(loop.run(stop), 5)

    asyncio.run(go())


# ----- stale marks, in memory --------------------------------------------------------------------
def no_pool() -> asyncpg.Pool:
    raise AssertionError("committed webhook effects are durable already: no SQL")


def test_committed_webhook_effects_are_timed_not_written() -> None:
    async def go() -> None:
        clock = JumpClock()
        metrics = Metrics()
        marks = StaleMarks(no_pool, metrics, debounce=2.0, max_delay=10.0, clock=clock)
        marks.on_committed([Effect("variant", 7), Effect("variant", 8), Effect("sales_order", 70)])
        assert not marks.poll_wake.is_set()
        assert (len(marks.variants), len(marks.orders)) == (2, 1)
        assert marks.variants.due() == []  # a webhook burst waits for its quiet time
        clock.now = 1.0
        assert marks.orders.due() == [70]  # sales orders wait at most a second
        clock.now = 2.0
        assert sorted(marks.variants.due()) == [7, 8]
        marks.on_committed([Effect("poll", "sales_order_rows")])
        assert marks.poll_wake.is_set()
        value = metrics.registry.get_sample_value("katsyncd_debounce_marks_total")
        assert value == 2.0

    asyncio.run(go())


def test_reload_timings_keep_the_order_cap() -> None:
    async def go() -> None:
        marks = StaleMarks(no_pool, Metrics(), debounce=0.5, max_delay=4.0, clock=JumpClock())
        assert marks.orders.debounce == 0.5
        marks.configure(3.0, 9.0)
        assert (marks.variants.debounce, marks.variants.max_delay) == (3.0, 9.0)
        assert (marks.orders.debounce, marks.orders.max_delay) == (1.0, 9.0)

    asyncio.run(go())


# ----- leading edge gate -------------------------------------------------------------------------
def test_leading_edge_only_for_few_arrivals_and_a_quarter_minutes_budget() -> None:
    from katsyncd.flush import LEADING_MAX_ARRIVALS

    plenty = FlushPolicy(lambda: RATE / 4, lambda: RATE)
    short = FlushPolicy(lambda: RATE / 4 - 1, lambda: RATE)
    assert plenty.leading_allowed(1)
    assert plenty.leading_allowed(LEADING_MAX_ARRIVALS)
    assert not plenty.leading_allowed(LEADING_MAX_ARRIVALS + 1)  # a burst: batch it
    assert not short.leading_allowed(1)  # the budget is protected


def test_loop_reads_a_quiet_days_change_on_its_leading_edge() -> None:
    clock = JumpClock()
    deb = deb_on(clock, debounce=2.0)
    policy = FlushPolicy(lambda: PLENTY, lambda: RATE)
    deb.set_leading_gate(policy.leading_allowed, leading=0.03)
    read: list[tuple[float, list[int]]] = []

    async def handle(batch: list[int]) -> None:
        read.append((clock.now, batch))
        stop.set()

    stop = asyncio.Event()
    loop = FlushLoop(deb, policy, handle, max_batch=10, ready=lambda: True, pause=clock.pause)
    deb.mark([42])
    clock.now = 0.03  # the debouncer's wait_due sees it due (the test moves time by hand)
    asyncio.run(loop.run(stop))
    assert read == [(0.03, [42])]


# ----- the tail's reserve in a burst --------------------------------------------------------------
def test_in_a_burst_a_read_keeps_the_tails_reserve_for_a_bounded_time() -> None:
    from katsyncd.flush import RESERVE_HOLD_SECONDS

    clock = JumpClock()
    deb = deb_on(clock, debounce=1.0, max_delay=10.0)
    tokens = [10.5]
    policy = FlushPolicy(lambda: tokens[0], lambda: RATE, reserve=lambda: 10.0)
    deb.mark(range(20))  # 20 event marks in the quiet second: a burst
    due = list(range(20))
    assert policy.holds_reserve(deb, due)  # 10.5 - 1 < 10: the tail needs them
    tokens[0] = 11.0
    assert not policy.holds_reserve(deb, due)  # 11 - 1 >= 10: affordable
    tokens[0] = 0.0
    clock.now = 3 * 10.0  # three max_delays: still held (the old bound forced a read here)
    deb.mark(range(100, 110))  # still arriving
    assert policy.holds_reserve(deb, due)
    clock.now = RESERVE_HOLD_SECONDS - 0.01
    deb.mark(range(110, 120))
    assert policy.holds_reserve(deb, due)
    clock.now = RESERVE_HOLD_SECONDS
    deb.mark(range(120, 130))
    assert not policy.holds_reserve(deb, due)  # held long enough: read anyway


def test_a_batch_bigger_than_the_bucket_above_the_reserve_waits_for_a_full_bucket() -> None:
    """100 keys at one a page cost 100 requests: more than a bucket of RATE ever holds above
    the reserve, so the read waits for a full bucket rather than for ever."""
    clock = JumpClock()
    deb = deb_on(clock, debounce=1.0, max_delay=10.0)
    tokens = [RATE - 0.5]
    policy = FlushPolicy(lambda: tokens[0], lambda: RATE, reserve=lambda: RATE / 2)
    policy.per_page = lambda: 1  # type: ignore[method-assign]
    deb.mark(range(100))
    assert policy.holds_reserve(deb, list(range(100)))
    tokens[0] = RATE
    assert not policy.holds_reserve(deb, list(range(100)))


def test_variants_wait_for_sales_orders_being_resolved_at_most_a_quiet_time() -> None:
    """The tail of a burst: the orders it left are resolved first (they mark variants), then
    one read covers every variant; never waiting longer than a quiet time at a stretch."""
    clock = JumpClock()
    deb = deb_on(clock, debounce=2.0)
    deb.mark([1, 2], settled=True)  # due now
    resolving = [True]
    policy = VariantFlushPolicy(
        lambda: PLENTY,
        lambda: RATE,
        katana=Sweep(),
        locations=lambda: 1,
        catalogs_pending=lambda: False,
        orders_first=lambda: resolving[0],
    )
    due = deb.due()
    assert policy.wait_for_more(deb, due)
    assert policy.short_wait  # the loop looks again in tens of ms (quiet-day latency)
    resolving[0] = False
    assert not policy.wait_for_more(deb, due)
    assert not policy.short_wait
    resolving[0] = True
    clock.now = 5.0
    assert policy.wait_for_more(deb, due)  # a new wait starts
    clock.now = 6.99
    assert policy.wait_for_more(deb, due)
    clock.now = 7.0
    assert not policy.wait_for_more(deb, due)  # waited a quiet time: read anyway


def test_a_burst_is_over_after_its_lull_and_leaves_everything_due() -> None:
    """A fast burst ends LULL_GAPS mean gaps after its last event (at least a quarter of the
    quiet time): every key it left pending is due then, not a quiet time after its own last
    mark. A key marked after the burst keeps its own quiet time."""
    clock = JumpClock()
    deb = deb_on(clock, debounce=2.0, max_delay=10.0)
    policy = FlushPolicy(lambda: 0.0, lambda: RATE, reserve=lambda: 100.0)
    for step in range(200):  # 100 events a second for 2 s
        clock.now = step / 100
        deb.mark([step % 50])
    last = clock.now
    assert bursting(deb) and deb.due() == []  # each key marked every 0.5 s: none is quiet
    assert policy.holds_reserve(deb, list(range(50)))
    assert deb.stream_quiet_at == last + 0.5  # 5 mean gaps of 10 ms < a quarter of 2 s
    clock.now = last + 0.49
    assert bursting(deb) and len(deb.due()) < len(deb)
    clock.now = last + 0.5
    assert not bursting(deb)  # over: the tail spends the reserve
    assert not policy.holds_reserve(deb, deb.due())
    assert sorted(deb.due()) == list(range(50))  # every pending key, at once
    deb.take(range(50))
    deb.mark([7])  # 0.5 s later the stream's rate still counts: its lull again
    assert deb.due_at(7) == clock.now + 0.5
    deb.take([7])
    clock.now = last + 5.0
    deb.mark([7])  # a lone event after a quiet time: its own quiet time
    assert deb.due_at(7) == clock.now + 2.0


def test_a_slow_stream_keeps_the_quiet_time_as_its_lull() -> None:
    deb = deb_on(JumpClock(), debounce=2.0)
    assert deb.lull(3) == 2.0  # the leading edge's few: each key its own quiet time
    assert deb.lull(5) == 2.0  # 5 gaps of 0.4 s would be 2 s: the quiet time caps it
    assert deb.lull(20) == 0.5  # 5 gaps of 0.1 s; the floor is a quarter of the quiet time
    assert deb.lull(1000) == 0.5


def test_the_working_set_counts_keys_marked_within_the_window_read_or_not() -> None:
    from katsyncd.debounce import WORKING_SET_SECONDS

    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark(range(10))
    deb.take(range(10))  # read: no longer pending, still in the working set
    assert len(deb) == 0 and deb.working_set() == 10
    clock.now = 30.0
    deb.mark(range(5, 15))
    assert deb.working_set() == 15
    deb.mark([99], first_seen=-500.0)  # put back after a failed read: pending, no new mark
    assert deb.working_set() == 16
    clock.now = WORKING_SET_SECONDS + 0.5  # the first marks of 0-4 have left the window
    assert deb.working_set() == 11  # 5-14 (marked at 30 s) and the pending 99


def test_no_burst_no_reserve_and_variant_costs_count_a_cheaper_sweep() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    policy = FlushPolicy(lambda: 0.0, lambda: RATE, reserve=lambda: 100.0)
    deb.mark([1, 2])  # two events: not a burst
    assert not policy.holds_reserve(deb, [1, 2])
    narrow = variant_policy(Sweep(ids=20, pages=8), SHORT)
    assert narrow.cost(100) == 5  # 5 chunks of 20 ids
    assert narrow.cost(1000) == 8  # 50 chunks, or a sweep of 8 pages
    assert variant_policy(Sweep(ids=20, pages=None), SHORT).cost(1000) == 50
    assert narrow.tail_cost(deb) == 1


def test_a_held_sweep_lasts_as_long_as_the_burst_from_its_first_event() -> None:
    from katsyncd.flush import SWEEP_HOLD_IN_BURST_SECONDS

    clock = JumpClock()
    deb = deb_on(clock, debounce=1.0, max_delay=4.0)
    sweep = Sweep(cheaper_from=100, pages=10, ids=20)  # a 10 s sweep at 60/min: cap 20 s
    deb.mark([1], first_seen=-100.0)  # left pending from before (a warm-up)
    policy = variant_policy(sweep, SHORT)
    for _ in range(300):  # a burst from t=0 to t=30: held throughout, past the 20 s cap
        deb.mark(range(int(clock.now * 10) % 500, int(clock.now * 10) % 500 + 5))
        clock.now += 0.1
        assert policy.hold_sweep(deb, deb.due()), clock.now
    assert deb.stream_started == 0.0
    clock.now += 1.5  # the burst is over: one read settles it all
    assert not policy.hold_sweep(deb, deb.due())
    start = clock.now
    while clock.now < start + SWEEP_HOLD_IN_BURST_SECONDS:  # an endless burst ...
        deb.mark(range(600, 610))
        clock.now += 0.5
    assert not policy.hold_sweep(deb, deb.due())  # ... is held at most this long


def test_a_held_sweep_outlasts_max_delay_while_a_burst_keeps_marking_the_same_variants() -> None:
    """bench --scenario burst --array-filter-limit 20: the burst walks a fixed set of
    variants; max_delay after each one's first mark every pending variant is due while events
    still arrive. That is no end of the burst: the sweep stays held until the events stop."""
    clock = JumpClock()
    deb = deb_on(clock, debounce=1.0, max_delay=4.0)
    policy = variant_policy(Sweep(cheaper_from=100, pages=10, ids=20), PLENTY)
    touched = list(range(200))
    for step in range(300):  # t=0..30: every variant marked by t=2, then marked again
        deb.mark(touched[(step * 7) % 200 : (step * 7) % 200 + 7])
        clock.now += 0.1
        assert policy.hold_sweep(deb, deb.due()), clock.now
    assert len(deb.due()) == len(deb) == len(touched)  # all due, yet the burst goes on
    clock.now += 1.5  # the events stop: one read settles them all
    assert not policy.hold_sweep(deb, deb.due())
    assert not policy.wait_for_more(deb, deb.due())


def test_a_flush_loop_is_busy_while_its_handler_reads_and_not_after_a_failure() -> None:
    clock = JumpClock()
    deb = deb_on(clock)
    deb.mark([1], settled=True)
    seen: list[bool] = []

    async def go() -> None:
        stop = asyncio.Event()

        async def read(batch: list[int]) -> None:
            seen.append(loop.busy)
            stop.set()
            raise RuntimeError("katana down")

        loop = FlushLoop(
            deb,
            FlushPolicy(lambda: PLENTY, lambda: RATE),
            read,
            max_batch=10,
            ready=lambda: True,
            pause=clock.pause,
        )
        await asyncio.wait_for(loop.run(stop), 5)
        seen.append(loop.busy)

    asyncio.run(go())
    assert seen == [True, False]
