"""Rate-limiter arithmetic and waiting, driven by a hand-cranked clock (no network).

``ManualClock.sleep`` only returns when the test advances the clock past the deadline, so the
async tests are deterministic and take no wall-clock time.
"""

from __future__ import annotations

import asyncio

import pytest

from katsyncd.models import Priority
from katsyncd.ratelimit import BcLimiter, KatanaLimiter
from tests.support.clocks import FixedDraw

LIVE, POLL, RECONCILE = Priority.LIVE, Priority.POLL, Priority.RECONCILE
WALL_EPOCH = 1_700_000_000.0


class ManualClock:
    """Monotonic + wall clocks and a sleep that waits for ``advance``."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL_EPOCH + self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now + seconds, future)
        self._sleepers.append(entry)
        try:
            await future
        finally:
            self._sleepers.remove(entry)

    async def advance(self, seconds: float) -> None:
        """Move time forward, release due sleepers, and let every task run."""
        self.now += seconds
        for deadline, future in list(self._sleepers):
            if deadline <= self.now + 1e-9 and not future.done():
                future.set_result(None)
        await settle()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def katana(clock: ManualClock, rpm: int = 60, **kwargs: float) -> KatanaLimiter:
    return KatanaLimiter(rpm, clock=clock, wall_clock=clock.wall, sleep=clock.sleep, **kwargs)


def drain(limiter: KatanaLimiter) -> int:
    taken = 0
    while limiter.try_acquire(LIVE):
        taken += 1
    return taken


class Grants:
    """Start acquire() tasks and record (name, clock time) as each is granted."""

    def __init__(self, limiter: KatanaLimiter, clock: ManualClock) -> None:
        self.limiter, self.clock = limiter, clock
        self.order: list[tuple[str, float]] = []
        self.tasks: dict[str, asyncio.Task[float]] = {}

    def start(self, name: str, priority: Priority) -> None:
        async def run() -> float:
            waited = await self.limiter.acquire(priority)
            self.order.append((name, self.clock.now))
            return waited

        self.tasks[name] = asyncio.create_task(run(), name=name)

    def names(self) -> list[str]:
        return [name for name, _ in self.order]


# -- KatanaLimiter: arithmetic ------------------------------------------------------------------


def test_bucket_starts_full_and_holds_capacity() -> None:
    clock = ManualClock()
    limiter = katana(clock, rpm=60)
    assert limiter.available() == 60
    assert drain(limiter) == 60
    assert limiter.available() == pytest.approx(0)
    assert limiter.snapshot()["granted_total"] == 60


def test_refill_at_rpm_over_sixty_per_second_up_to_capacity() -> None:
    clock = ManualClock()
    limiter = katana(clock, rpm=60)
    drain(limiter)
    clock.now += 1.5
    assert limiter.available() == pytest.approx(1.5)
    assert limiter.delay_for(LIVE) == 0
    clock.now += 1000
    assert limiter.available() == 60


def test_budget_plans_with_the_harsher_of_the_bucket_and_a_sliding_window() -> None:
    """A bucket says a token spent now is back within a second; a sliding window gives it
    back 60 s later. ``budget()`` is the lower of the two: 30 spent in the first 10 s leave
    30 for the window until they age out one by one, whatever the bucket refilled."""
    clock = ManualClock()
    limiter = katana(clock, rpm=60)
    for _ in range(30):
        assert limiter.try_acquire(LIVE)
        clock.now += 1 / 3
    assert limiter.window_left() == 30
    clock.now = 40.0
    assert limiter.available() == 60  # the bucket is full again
    assert limiter.budget() == 30  # the window still holds all 30
    clock.now = 64.9  # the first 15 left the window (one every 1/3 s from t=0)
    assert limiter.budget() == 45
    clock.now = 70.0
    assert limiter.budget() == 60 and limiter.snapshot()["window_left"] == 60


def test_delay_for_an_empty_bucket_is_one_token_of_refill() -> None:
    clock = ManualClock()
    limiter = katana(clock, rpm=120)
    drain(limiter)
    assert limiter.delay_for(LIVE) == pytest.approx(0.5)
    assert limiter.delay_for(POLL) == pytest.approx(0.5)


def test_reconcile_needs_the_reserve_left_over() -> None:
    clock = ManualClock()
    limiter = katana(clock, rpm=60, reserve_fraction=0.25)  # reserve: 15 tokens
    for _ in range(44):
        assert limiter.try_acquire(RECONCILE)
    assert limiter.available() == pytest.approx(16)
    assert limiter.try_acquire(RECONCILE)  # leaves exactly the 15-token reserve
    assert not limiter.try_acquire(RECONCILE)
    assert limiter.delay_for(RECONCILE) == pytest.approx(1.0)
    assert limiter.try_acquire(LIVE)  # the reserve is for live and poll traffic
    assert limiter.try_acquire(POLL)


def test_observe_lowers_tokens_to_remaining_but_never_raises_them() -> None:
    clock = ManualClock()
    limiter = katana(clock)
    limiter.observe(limit=60, remaining=5, reset=None)
    assert limiter.available() == 5
    limiter.observe(limit=60, remaining=50, reset=None)
    assert limiter.available() == 5
    limiter.observe(limit=None, remaining=None, reset=None)
    assert limiter.available() == 5


def test_observe_adopts_a_lower_server_limit() -> None:
    clock = ManualClock()
    limiter = katana(clock, rpm=60)
    limiter.observe(limit=30, remaining=None, reset=None)
    assert limiter.snapshot()["requests_per_minute"] == 30
    assert limiter.available() == 30
    limiter.observe(limit=100, remaining=None, reset=None)  # never above the configured rate
    assert limiter.snapshot()["requests_per_minute"] == 60


@pytest.mark.parametrize("scale", [1, 1000], ids=["seconds", "milliseconds"])
def test_nothing_remaining_pauses_until_reset_in_seconds_or_ms(scale: int) -> None:
    clock = ManualClock()
    limiter = katana(clock)
    limiter.observe(limit=60, remaining=0, reset=(clock.wall() + 10) * scale)
    assert limiter.snapshot()["paused_for_seconds"] == pytest.approx(10)
    assert limiter.available() == 0
    assert limiter.delay_for(LIVE) == pytest.approx(10)


def test_reset_in_the_past_or_far_future_is_bounded() -> None:
    clock = ManualClock()
    limiter = katana(clock)
    limiter.observe(limit=60, remaining=0, reset=clock.wall() - 5)
    assert limiter.snapshot()["paused_for_seconds"] == 0
    limiter.observe(limit=60, remaining=0, reset=clock.wall() + 3600)
    assert limiter.snapshot()["paused_for_seconds"] == pytest.approx(60)


def test_remaining_left_without_reset_just_lowers_tokens() -> None:
    clock = ManualClock()
    limiter = katana(clock)
    limiter.observe(limit=60, remaining=0, reset=None)
    assert limiter.snapshot()["paused_for_seconds"] == 0
    assert limiter.delay_for(LIVE) == pytest.approx(1.0)


def test_pause_for_blocks_and_empties_the_bucket() -> None:
    clock = ManualClock()
    limiter = katana(clock)
    limiter.pause_for(5)
    assert limiter.available() == 0
    assert not limiter.try_acquire(LIVE)
    assert limiter.delay_for(LIVE) == pytest.approx(5)
    clock.now += 5
    assert limiter.available() == pytest.approx(5)  # refilled from zero during the pause
    limiter.pause_for(2)
    limiter.pause_for(1)  # a shorter pause never shortens a longer one
    assert limiter.snapshot()["paused_for_seconds"] == pytest.approx(2)


def test_set_rate_changes_refill_and_capacity() -> None:
    clock = ManualClock()
    limiter = katana(clock, rpm=60)
    limiter.set_rate(30)
    assert limiter.available() == 30  # tokens above the new capacity are dropped
    drain(limiter)
    limiter.set_rate(120)
    assert limiter.delay_for(LIVE) == pytest.approx(0.5)
    clock.now += 1000
    assert limiter.available() == 120
    assert limiter.snapshot()["requests_per_minute"] == 120
    with pytest.raises(ValueError):
        limiter.set_rate(0)


def test_snapshot_shape() -> None:
    limiter = katana(ManualClock())
    assert set(limiter.snapshot()) >= {
        "requests_per_minute",
        "available",
        "paused_for_seconds",
        "waiting_live",
        "waiting_poll",
        "waiting_reconcile",
        "granted_total",
    }


def test_bad_reserve_fraction_is_refused() -> None:
    with pytest.raises(ValueError):
        KatanaLimiter(60, reserve_fraction=1.0)


# -- KatanaLimiter: waiting ---------------------------------------------------------------------


async def test_acquire_returns_at_once_with_tokens() -> None:
    limiter = katana(ManualClock())
    assert await limiter.acquire(RECONCILE) == 0.0


async def test_acquire_waits_for_refill_and_reports_the_wait() -> None:
    clock = ManualClock()
    limiter = katana(clock)
    drain(limiter)
    grants = Grants(limiter, clock)
    grants.start("a", LIVE)
    task = grants.tasks["a"]
    await settle()
    assert not task.done()
    await clock.advance(0.5)
    assert not task.done()
    await clock.advance(0.5)
    assert await task == pytest.approx(1.0)


async def test_priorities_live_then_poll_then_reconcile_behind_its_reserve() -> None:
    clock = ManualClock()
    limiter = katana(clock, rpm=60, reserve_fraction=0.25)
    drain(limiter)
    grants = Grants(limiter, clock)
    grants.start("reconcile", RECONCILE)
    grants.start("poll", POLL)
    grants.start("live", LIVE)
    await settle()
    snap = limiter.snapshot()
    assert (snap["waiting_live"], snap["waiting_poll"], snap["waiting_reconcile"]) == (1, 1, 1)
    for _ in range(20):
        await clock.advance(1.0)
    # live at 1 s, poll at 2 s, reconcile once 16 tokens (15 reserve + 1) have refilled.
    assert grants.order == [("live", 1.0), ("poll", 2.0), ("reconcile", 18.0)]


async def test_fifo_within_a_priority() -> None:
    clock = ManualClock()
    limiter = katana(clock)
    drain(limiter)
    grants = Grants(limiter, clock)
    for name in ("first", "second", "third"):
        grants.start(name, POLL)
        await settle()
    for _ in range(3):
        await clock.advance(1.0)
    assert grants.names() == ["first", "second", "third"]


async def test_newcomer_cannot_jump_a_waiting_queue_of_its_priority() -> None:
    clock = ManualClock()
    limiter = katana(clock)
    drain(limiter)
    grants = Grants(limiter, clock)
    grants.start("waiting", LIVE)
    await settle()
    clock.now += 1.0  # a token exists, but the head has not woken yet
    assert not limiter.try_acquire(LIVE)
    await clock.advance(0)
    assert grants.names() == ["waiting"]


async def test_live_passes_a_reconcile_waiting_for_its_reserve() -> None:
    clock = ManualClock()
    limiter = katana(clock, rpm=60, reserve_fraction=0.25)
    for _ in range(50):
        limiter.try_acquire(LIVE)
    grants = Grants(limiter, clock)
    grants.start("reconcile", RECONCILE)
    await settle()
    assert limiter.snapshot()["waiting_reconcile"] == 1
    assert await limiter.acquire(LIVE) == 0.0
    assert await limiter.acquire(POLL) == 0.0
    assert grants.order == []


async def test_cancelled_head_leaks_no_token_and_wakes_the_next() -> None:
    clock = ManualClock()
    limiter = katana(clock)
    drain(limiter)
    grants = Grants(limiter, clock)
    grants.start("head", LIVE)
    head = grants.tasks["head"]
    grants.start("next", LIVE)
    await settle()
    head.cancel()
    await settle()
    assert head.cancelled()
    await clock.advance(1.0)
    assert grants.names() == ["next"]
    snap = limiter.snapshot()
    assert snap["granted_total"] == 61
    assert snap["waiting_live"] == 0
    assert limiter.available() == pytest.approx(0)


async def test_cancelled_middle_waiter_is_skipped() -> None:
    clock = ManualClock()
    limiter = katana(clock)
    drain(limiter)
    grants = Grants(limiter, clock)
    grants.start("a", POLL)
    grants.start("b", POLL)
    middle = grants.tasks["b"]
    grants.start("c", POLL)
    await settle()
    middle.cancel()
    for _ in range(3):
        await clock.advance(1.0)
    assert grants.names() == ["a", "c"]
    assert limiter.available() == pytest.approx(1.0)  # the third second's token is unused


async def test_cancelled_high_priority_head_lets_lower_priority_through() -> None:
    clock = ManualClock()
    limiter = katana(clock)
    drain(limiter)
    grants = Grants(limiter, clock)
    grants.start("poll", POLL)
    await settle()
    grants.start("live", LIVE)
    live = grants.tasks["live"]
    await settle()
    live.cancel()
    await clock.advance(1.0)
    assert grants.names() == ["poll"]


async def test_pause_during_a_wait_delays_the_grant() -> None:
    clock = ManualClock()
    limiter = katana(clock)
    drain(limiter)
    grants = Grants(limiter, clock)
    grants.start("a", LIVE)
    await clock.advance(0.5)
    limiter.pause_for(10)  # until 10.5
    for _ in range(12):
        await clock.advance(1.0)
    assert grants.names() == ["a"]
    assert grants.order[0][1] >= 10.5


async def test_real_clock_waits_are_short_and_bounded() -> None:
    limiter = KatanaLimiter(6000)  # 100 tokens per second
    drain(limiter)
    waited = await asyncio.wait_for(limiter.acquire(LIVE), timeout=2.0)
    assert 0.0 < waited < 1.0


# -- BcLimiter ----------------------------------------------------------------------------------


def bc_headers(
    left: int, reset_ms: int, quota: int = 150, window_ms: int = 30_000
) -> dict[str, str]:
    return {
        "X-Rate-Limit-Requests-Left": str(left),
        "X-Rate-Limit-Time-Reset-Ms": str(reset_ms),
        "X-Rate-Limit-Requests-Quota": str(quota),
        "X-Rate-Limit-Time-Window-Ms": str(window_ms),
    }


def bc(clock: ManualClock, **kwargs: object) -> BcLimiter:
    return BcLimiter(clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


def test_no_headers_no_wait() -> None:
    limiter = bc(ManualClock())
    assert limiter.delay() == 0
    assert limiter.snapshot()["left"] is None


def test_requests_left_at_the_floor_waits_for_the_reset() -> None:
    clock = ManualClock()
    limiter = bc(clock)
    limiter.observe(bc_headers(left=5, reset_ms=1500))
    assert limiter.delay() == 0
    limiter.observe(bc_headers(left=1, reset_ms=1500))
    assert limiter.delay() == pytest.approx(1.5)
    clock.now += 1.5
    assert limiter.delay() == 0  # the window rolled over


def test_header_names_are_case_insensitive() -> None:
    limiter = bc(ManualClock())
    limiter.observe({k.lower(): v for k, v in bc_headers(left=0, reset_ms=800).items()})
    assert limiter.delay() == pytest.approx(0.8)
    assert limiter.snapshot() == {
        "quota": 150,
        "left": 0,
        "reset_ms": 800,
        "window_ms": 30_000,
        "consecutive_429": 0,
        "blocked_for_seconds": 0.0,
    }


async def test_floor_is_configurable_and_sends_count_down() -> None:
    clock = ManualClock()
    limiter = bc(clock, floor=3)
    limiter.observe(bc_headers(left=5, reset_ms=2000))
    assert limiter.delay() == 0
    assert await limiter.wait() == 0.0
    assert await limiter.wait() == 0.0  # 5 -> 4 -> 3: now at the floor
    assert limiter.snapshot()["left"] == 3
    assert limiter.delay() == pytest.approx(2.0)


def test_garbage_headers_are_ignored() -> None:
    limiter = bc(ManualClock())
    limiter.observe({"X-Rate-Limit-Requests-Left": "lots", "X-Rate-Limit-Time-Reset-Ms": "-5"})
    assert limiter.delay() == 0
    assert limiter.snapshot()["left"] is None


def test_429_waits_the_longer_of_reset_and_retry_after_and_doubles() -> None:
    clock = ManualClock()
    limiter = bc(clock)
    headers = {**bc_headers(left=0, reset_ms=2000), "X-Retry-After": "3"}
    assert limiter.on_429(headers) == pytest.approx(3.0)
    assert limiter.delay() == pytest.approx(3.0)
    assert limiter.on_429(headers) == pytest.approx(6.0)
    assert limiter.on_429(headers) == pytest.approx(12.0)
    assert [limiter.on_429(headers) for _ in range(4)] == [24.0, 48.0, 60.0, 60.0]
    assert limiter.snapshot()["consecutive_429"] == 7
    limiter.on_success()
    assert limiter.on_429(bc_headers(left=0, reset_ms=5000)) == pytest.approx(5.0)


def test_429_without_rate_headers_backs_off_from_one_second_with_jitter() -> None:
    clock = ManualClock()
    low = bc(clock, rng=FixedDraw(0.0))
    assert [low.on_429({}) for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    high = bc(clock, rng=FixedDraw(1.0))
    assert [high.on_429({}) for _ in range(3)] == [1.5, 3.0, 6.0]


def test_429_with_reset_zero_still_waits_a_little() -> None:
    limiter = bc(ManualClock())
    assert limiter.on_429(bc_headers(left=0, reset_ms=0)) > 0


async def test_wait_honours_a_429_and_reports_the_wait() -> None:
    clock = ManualClock()
    limiter = bc(clock)
    limiter.on_429({"X-Retry-After": "2"})
    task = asyncio.create_task(limiter.wait())
    await settle()
    await clock.advance(1.0)
    assert not task.done()
    await clock.advance(1.0)
    assert await task == pytest.approx(2.0)
    assert await limiter.wait() == 0.0


async def test_a_poll_is_not_starved_by_a_stream_of_live_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import katsyncd.ratelimit as rl

    monkeypatch.setattr(rl, "POLL_MAX_WAIT_SECONDS", 0.3)
    limiter = rl.KatanaLimiter(600)  # 10 a second
    while limiter.try_acquire(Priority.LIVE):
        pass  # empty the bucket
    stop = asyncio.Event()

    async def live_stream() -> None:
        while not stop.is_set():
            await limiter.acquire(Priority.LIVE)

    streams = [asyncio.create_task(live_stream()) for _ in range(3)]
    try:
        waited = await asyncio.wait_for(limiter.acquire(Priority.POLL), 3.0)
    finally:
        stop.set()
        for t in streams:
            t.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    assert 0.25 <= waited < 1.5


# ----- max_share and the poll reserve ----------------------------------------------------------
def test_max_share_takes_a_fraction_of_the_accounts_quota() -> None:
    limiter = KatanaLimiter(60, share=0.8, clock=lambda: 0.0)
    assert limiter.requests_per_minute == 48
    assert limiter.available() == 48
    limiter.observe(limit=100, remaining=100, reset=None)  # the account's quota is 100
    assert limiter.requests_per_minute == 60  # the configured rate still caps it
    limiter.set_share(0.5)
    assert limiter.requests_per_minute == 50
    assert limiter.snapshot()["max_share"] == 0.5
    assert limiter.snapshot()["account_requests_per_minute"] == 100


def test_max_share_leaves_the_rest_of_the_window_to_other_apps() -> None:
    limiter = KatanaLimiter(60, share=0.8, clock=lambda: 0.0)
    limiter.observe(limit=60, remaining=20, reset=None)  # others used 40 of the 60
    assert limiter.available() == 8  # 12 stay for them


def test_bad_share_is_refused() -> None:
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="share"):
            KatanaLimiter(60, share=bad)
    limiter = KatanaLimiter(60)
    with pytest.raises(ValueError, match="share"):
        limiter.set_share(0.0)


def test_polls_leave_the_reserve_to_live_reads_once_the_window_is_known() -> None:
    limiter = KatanaLimiter(60, poll_reserve=2.0, initial_tokens=1.0, clock=lambda: 0.0)
    assert limiter.try_acquire(Priority.POLL)  # at start: the first poll does not wait
    limiter.observe(limit=60, remaining=2, reset=None)
    assert not limiter.try_acquire(Priority.POLL)  # 2 tokens: both are for live reads
    assert limiter.try_acquire(Priority.LIVE)


def test_polls_also_leave_an_extra_reserve_asked_each_time() -> None:
    extra = [5.0]
    limiter = KatanaLimiter(60, poll_reserve=1.0, clock=lambda: 0.0)
    limiter.set_poll_reserve(lambda: extra[0])
    limiter.observe(limit=60, remaining=6, reset=None)
    assert not limiter.try_acquire(Priority.POLL)  # 6 < 1 + 5 + 1
    extra[0] = 0.0  # the burst is over
    assert limiter.try_acquire(Priority.POLL)
