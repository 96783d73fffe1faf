"""Client-side rate limiters for Katana (one per process) and BigCommerce (one per store).

Both are plain state plus async waiting: no background task and no network. The clock and the
sleep function are injected, so tests drive time by hand. Waiting never holds a resource, so
cancelling a waiter at any await point leaks nothing.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from katsyncd.backoff import doubled, escalating_delay
from katsyncd.models import Priority

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# A poll waits at most this long behind live reads (polls are part of correctness).
POLL_MAX_WAIT_SECONDS = 60.0

# Float slack when comparing token counts, so a sleep of exactly the computed delay succeeds.
_EPSILON = 1e-9
# Katana's quota is per 60 s window; a reset further away than this is treated as garbage.
KATANA_WINDOW_SECONDS = 60.0
# Katana's docs call X-Ratelimit-Reset milliseconds, their example is seconds: below 1e12 = s.
_EPOCH_MS_THRESHOLD = 1e12

BC_MAX_429_DELAY_SECONDS = 60.0
BC_OVERLOAD_BASE_SECONDS = 1.0
# A 429 whose headers say "reset in 0 ms" still waits this long (doubling on repeats).
BC_MIN_429_DELAY_SECONDS = 0.25
# Used when Requests-Left is at the floor but neither reset nor window headers came back.
BC_DEFAULT_WINDOW_MS = 30_000


class _Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` per second. Pure arithmetic."""

    def __init__(self, requests_per_minute: int, now: float) -> None:
        self.capacity = float(requests_per_minute)
        self.rate = requests_per_minute / 60.0
        self.tokens = self.capacity
        self._last = now

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last refill (a clock going backwards adds none)."""
        elapsed = max(0.0, now - self._last)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self._last = max(self._last, now)

    def resize(self, requests_per_minute: int) -> None:
        """Change capacity and rate; tokens above the new capacity are dropped."""
        self.capacity = float(requests_per_minute)
        self.rate = requests_per_minute / 60.0
        self.tokens = min(self.tokens, self.capacity)

    def seconds_until(self, level: float) -> float:
        """How long until the bucket holds ``level`` tokens (0 if it already does)."""
        missing = level - self.tokens
        return 0.0 if missing <= _EPSILON else missing / self.rate


@dataclass(eq=False)
class _Waiter:
    priority: Priority
    since: float = 0.0  # when it started waiting (the limiter's clock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def _reset_to_epoch_seconds(reset: float) -> float:
    """Katana's X-Ratelimit-Reset as epoch seconds, whether it was sent in seconds or ms."""
    return reset if reset < _EPOCH_MS_THRESHOLD else reset / 1000.0


def _check_rate(requests_per_minute: int) -> int:
    if requests_per_minute < 1:
        raise ValueError(f"requests_per_minute must be >= 1, got {requests_per_minute}")
    return requests_per_minute


class KatanaLimiter:
    """One per process; every Katana call goes through it.

    A token bucket (capacity = requests_per_minute, refilled at rpm/60 per second) that also
    obeys the server: ``observe`` lowers the tokens to X-Ratelimit-Remaining (other apps share
    the account) and adopts a lower X-Ratelimit-Limit; ``pause_for`` blocks everyone after a 429.
    Waiters are served LIVE before POLL before RECONCILE, FIFO within a priority. A RECONCILE
    waiter only takes a token that leaves ``reserve_fraction`` of the capacity in the bucket,
    so a full reconcile never starves live changes; a POLL waiter one that leaves
    ``poll_reserve`` tokens (the last tokens are for the tail of a burst; not before the
    server's first X-Ratelimit-Remaining is known at start, so the first poll does not wait).

    ``share`` (``[katana] max_share``) is the fraction of the account's quota (the server's
    X-Ratelimit-Limit, else the configured rate) this process may use: the bucket's capacity
    and rate are ``min(configured, floor(account * share))``, at least 1.

    Only the head waiter (first of the most urgent non-empty queue) sleeps on the clock; the
    others wait on their own event and are woken when they become head.
    """

    def __init__(
        self,
        requests_per_minute: int,
        *,
        reserve_fraction: float = 0.25,
        poll_reserve: float = 0.0,
        share: float = 1.0,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        initial_tokens: float | None = None,
    ) -> None:
        if not 0.0 <= reserve_fraction < 1.0:
            raise ValueError(f"reserve_fraction must be in [0, 1), got {reserve_fraction}")
        if poll_reserve < 0.0:
            raise ValueError(f"poll_reserve must be >= 0, got {poll_reserve}")
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._configured = _check_rate(requests_per_minute)
        self._server_limit: int | None = None
        self._share = _check_share(share)
        self._reserve_fraction = reserve_fraction
        self._poll_reserve = poll_reserve
        self._extra_poll_reserve: Callable[[], float] = lambda: 0.0
        self._bucket = _Bucket(self._effective_rate(), clock())
        self._paused_until = -math.inf
        # After a server-imposed pause the window frees requests one by one, not all at once:
        # tokens that accrued during the pause are not spendable (else two go out at the reset
        # and the second gets a 429).
        self._clamp_after_pause = False
        self._queues: dict[Priority, deque[_Waiter]] = {p: deque() for p in Priority}
        self._granted = 0
        # When each token of the last KATANA_WINDOW_SECONDS was taken (see ``budget``).
        self._grants: deque[float] = deque()
        # Start state (a restart): with ``initial_tokens`` the bucket starts that low (the
        # account's window may be nearly spent by the previous process) and the first
        # X-Ratelimit-Remaining is adopted as the bucket, up or down; without, it starts full.
        self._adopt_remaining = initial_tokens is not None
        if initial_tokens is not None:
            self._bucket.tokens = min(self._bucket.capacity, max(0.0, initial_tokens))
        self._seen: tuple[int, float, int] | None = None  # remaining, reset (epoch s), granted

    # -- waiting -------------------------------------------------------------------------------

    async def acquire(self, priority: Priority) -> float:
        """Wait for a token at ``priority`` and take it; returns the seconds waited."""
        start = self._clock()
        if self.try_acquire(priority):
            return 0.0
        waiter = _Waiter(priority, since=start)
        self._queues[priority].append(waiter)
        try:
            await self._wait_turn(waiter)
        finally:
            self._leave(waiter)
        return max(0.0, self._clock() - start)

    def try_acquire(self, priority: Priority) -> bool:
        """Take a token now if allowed and nobody as or more urgent is already waiting."""
        if any(self._queues[p] for p in Priority if p <= priority) or self._aged_poll_waiting():
            return False
        if self.delay_for(priority) > 0.0:
            return False
        self._take()
        return True

    async def _wait_turn(self, waiter: _Waiter) -> None:
        while True:
            head = self._head()
            if head is waiter:
                delay = self.delay_for(waiter.priority)
                if delay <= 0.0:
                    self._take()  # no await between taking and returning: cancel-safe
                    return
                await self._sleep(delay)
            else:
                if head is not None:
                    head.wake.set()  # the head changed under us (a poll aged): hand over
                await waiter.wake.wait()
                waiter.wake.clear()

    def _head(self) -> _Waiter | None:
        """The most urgent waiter; a poll that has waited POLL_MAX_WAIT_SECONDS goes first, so
        a sustained burst of live reads cannot starve the polls that catch what sends no
        webhook (stock adjustments, transfers)."""
        polls = self._queues[Priority.POLL]
        if polls and self._clock() - polls[0].since >= POLL_MAX_WAIT_SECONDS:
            return polls[0]
        for priority in Priority:
            if self._queues[priority]:
                return self._queues[priority][0]
        return None

    def _aged_poll_waiting(self) -> bool:
        polls = self._queues[Priority.POLL]
        return bool(polls) and self._clock() - polls[0].since >= POLL_MAX_WAIT_SECONDS

    def _leave(self, waiter: _Waiter) -> None:
        """Drop a granted or cancelled waiter and wake whoever is head now."""
        queue = self._queues[waiter.priority]
        if waiter in queue:
            queue.remove(waiter)
        head = self._head()
        if head is not None:
            head.wake.set()

    def _take(self) -> None:
        self._bucket.tokens -= 1.0
        self._granted += 1
        self._grants.append(self._clock())

    # -- arithmetic ----------------------------------------------------------------------------

    def delay_for(self, priority: Priority) -> float:
        """Seconds until a waiter at ``priority`` may take a token (0: now), ignoring queues."""
        now = self._clock()
        self._bucket.refill(now)
        if self._clamp_after_pause and now >= self._paused_until:
            self._bucket.tokens = min(self._bucket.tokens, 1.0)
            self._clamp_after_pause = False
        paused = max(0.0, self._paused_until - now)
        needed = self._needed(priority)
        wait = self._bucket.seconds_until(needed)
        if priority is Priority.POLL and self._extra_poll_reserve() > 0.0:
            wait = max(wait, self._window_seconds_until(needed))  # a burst's tail: see budget
        return max(paused, wait)

    def _window_seconds_until(self, needed: float) -> float:
        """Seconds until ``window_left()`` is at least ``needed`` (grants age out in order)."""
        short = math.ceil(needed - self.window_left() - _EPSILON)
        if short <= 0:
            return 0.0
        grants = self._grants
        if short > len(grants):
            return KATANA_WINDOW_SECONDS
        return max(0.0, grants[short - 1] + KATANA_WINDOW_SECONDS - self._clock())

    def _needed(self, priority: Priority) -> float:
        """Tokens the bucket must hold before ``priority`` may take one."""
        capacity = self._bucket.capacity
        if priority is Priority.RECONCILE:
            reserve = self._reserve_fraction * capacity
        elif priority is Priority.POLL and not self._adopt_remaining:
            reserve = self._poll_reserve + self._extra_poll_reserve()
        else:
            reserve = 0.0
        return max(1.0, min(capacity, reserve + 1.0))

    def observe(self, *, limit: int | None, remaining: int | None, reset: float | None) -> None:
        """Fold in one response's X-Ratelimit-* headers (any of them may be missing).

        ``reset`` is an epoch timestamp, in seconds if below 1e12 and in ms otherwise. When the
        server says nothing remains, everyone waits until that reset (at most one window).
        """
        now = self._clock()
        self._bucket.refill(now)
        if limit is not None and limit > 0 and limit != self._server_limit:
            self._server_limit = limit
            self._bucket.resize(self._effective_rate())
        if remaining is not None:
            ours = remaining - self._left_for_others()
            if self._adopt_remaining:
                self._adopt_remaining = False
                # the answered request is one of those granted; the others may not be counted
                others = max(0, self._granted - 1)
                self._bucket.tokens = min(self._bucket.capacity, float(ours - others))
            self._bucket.tokens = min(self._bucket.tokens, float(max(0, ours)))
            if reset is not None:
                self._seen = (remaining, _reset_to_epoch_seconds(reset), self._granted)
            if remaining <= 0 and reset is not None:
                self._pause_until_reset(now, reset)

    def _pause_until_reset(self, now: float, reset: float) -> None:
        wait = _reset_to_epoch_seconds(reset) - self._wall_clock()
        wait = min(max(wait, 0.0), KATANA_WINDOW_SECONDS)
        self._paused_until = max(self._paused_until, now + wait)
        self._clamp_after_pause = True

    def window_state(self) -> tuple[int, float] | None:
        """What the server last said of its window, brought up to now: requests left (less
        those granted since) and when it resets (epoch seconds); None if it never said. Kept
        by the daemon across a restart (``restore``)."""
        if self._seen is None:
            return None
        remaining, reset, granted = self._seen
        if self._clock() < self._paused_until:
            remaining = 0
        return max(0, remaining - (self._granted - granted)), reset

    def restore(self, remaining: int, reset: float) -> None:
        """Start from a window state kept by the previous process (``window_state``): fewer
        tokens than that, and a pause until the reset if nothing was left. A reset already
        past says nothing any more."""
        if _reset_to_epoch_seconds(reset) <= self._wall_clock():
            return
        now = self._clock()
        self._bucket.refill(now)
        self._bucket.tokens = min(self._bucket.tokens, float(max(0, remaining)))
        if remaining <= 0:
            self._pause_until_reset(now, reset)

    def pause_for(self, seconds: float) -> None:
        """Block every waiter for ``seconds`` (a 429's Retry-After); the bucket restarts empty."""
        now = self._clock()
        self._bucket.refill(now)
        self._bucket.tokens = min(self._bucket.tokens, 0.0)
        self._paused_until = max(self._paused_until, now + max(0.0, seconds))
        self._clamp_after_pause = True

    def set_rate(self, requests_per_minute: int) -> None:
        """Live reload: a new configured rate (the server's lower limit still wins)."""
        self._bucket.refill(self._clock())
        self._configured = _check_rate(requests_per_minute)
        self._bucket.resize(self._effective_rate())

    def set_poll_reserve(self, extra: Callable[[], float]) -> None:
        """More tokens polls must leave, asked each time (e.g. a burst's tail, which the
        flush policy knows); polls still go first after ``POLL_MAX_WAIT_SECONDS``."""
        self._extra_poll_reserve = extra

    def set_share(self, share: float) -> None:
        """Live reload: a new ``max_share`` of the account's quota."""
        self._bucket.refill(self._clock())
        self._share = _check_share(share)
        self._bucket.resize(self._effective_rate())

    def _effective_rate(self) -> int:
        """Requests a minute this process may send: the configured rate, and no more than
        ``share`` of the account's quota (the server's limit once it said one)."""
        account = self._configured if self._server_limit is None else self._server_limit
        return max(1, min(self._configured, math.floor(account * self._share + _EPSILON)))

    def _left_for_others(self) -> int:
        """Requests of the account's window ``share`` leaves to other apps (0 at share 1):
        this process never brings X-Ratelimit-Remaining below it."""
        if self._share >= 1.0:
            return 0
        account = self._configured if self._server_limit is None else self._server_limit
        return account - max(1, math.floor(account * self._share + _EPSILON))

    @property
    def requests_per_minute(self) -> int:
        """The rate the bucket refills at (what budget arithmetic elsewhere should use)."""
        return self._effective_rate()

    # -- reporting -----------------------------------------------------------------------------

    def available(self) -> float:
        """Tokens that could be spent now (0 while paused)."""
        now = self._clock()
        self._bucket.refill(now)
        return 0.0 if now < self._paused_until else max(0.0, self._bucket.tokens)

    def window_left(self) -> float:
        """Requests this process may still send before its own grants of the last
        ``KATANA_WINDOW_SECONDS`` leave a sliding window: the capacity less those grants."""
        now = self._clock()
        grants = self._grants
        while grants and grants[0] <= now - KATANA_WINDOW_SECONDS:
            grants.popleft()
        return max(0.0, self._bucket.capacity - len(grants))

    def budget(self) -> float:
        """Tokens to plan with: ``available()``, and no more than a sliding window would have
        left. Katana documents a quota "per minute" without saying whether the window slides,
        resets or refills: a bucket's steady refill is the kindest reading (a request sent
        now returns a token within a second), a sliding window the harshest (it returns 60 s
        later, all at the same pace it was spent). Acquiring follows the server (``observe``);
        deciding what to spend now against what a burst's tail will need follows the
        harshest reading, so a kinder server only leaves tokens unspent a little longer."""
        return min(self.available(), self.window_left())

    def snapshot(self) -> dict[str, float | int]:
        """State for /status and the metrics gauge."""
        return {
            "requests_per_minute": self._effective_rate(),
            "account_requests_per_minute": self._server_limit or self._configured,
            "max_share": self._share,
            "available": self.available(),
            "window_left": self.window_left(),
            "paused_for_seconds": max(0.0, self._paused_until - self._clock()),
            "waiting_live": len(self._queues[Priority.LIVE]),
            "waiting_poll": len(self._queues[Priority.POLL]),
            "waiting_reconcile": len(self._queues[Priority.RECONCILE]),
            "granted_total": self._granted,
        }


def _check_share(share: float) -> float:
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    return share


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _header_float(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = _header_float(headers, name)
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class _BcHeaders:
    """The X-Rate-Limit-* family of one response; every field may be missing."""

    quota: int | None
    left: int | None
    reset_ms: float | None
    window_ms: float | None
    retry_after_s: float | None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> _BcHeaders:
        h = _lower_headers(headers)
        return cls(
            quota=_header_int(h, "x-rate-limit-requests-quota"),
            left=_header_int(h, "x-rate-limit-requests-left"),
            reset_ms=_header_float(h, "x-rate-limit-time-reset-ms"),
            window_ms=_header_float(h, "x-rate-limit-time-window-ms"),
            retry_after_s=_header_float(h, "x-retry-after"),
        )

    def server_delay(self) -> float | None:
        """The wait a 429 asks for: max(reset, retry-after), or None without such headers."""
        if self.reset_ms is None and self.retry_after_s is None:
            return None
        return max((self.reset_ms or 0.0) / 1000.0, self.retry_after_s or 0.0)


class BcLimiter:
    """Per store. Fed by X-Rate-Limit-* headers.

    When Requests-Left reaches ``floor`` the next request waits Time-Reset-Ms. A 429 waits
    max(Time-Reset-Ms, X-Retry-After * 1000), doubled on consecutive 429s (cap 60 s); a 429
    without those headers (platform under load) backs off exponentially with jitter from 1 s.
    """

    def __init__(
        self,
        *,
        floor: int = 1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        overload_base: float = BC_OVERLOAD_BASE_SECONDS,
        max_delay: float = BC_MAX_429_DELAY_SECONDS,
    ) -> None:
        self._floor = floor
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._overload_base = overload_base
        self._max_delay = max_delay
        self._quota: int | None = None
        self._left: int | None = None
        self._reset_ms: float | None = None
        self._window_ms: float | None = None
        self._reset_at = -math.inf
        self._blocked_until = -math.inf
        self._consecutive_429 = 0

    async def wait(self) -> float:
        """Wait until a request may be sent and count it; returns the seconds waited."""
        start = self._clock()
        while (delay := self.delay()) > 0.0:
            await self._sleep(delay)
        if self._left is not None:
            self._left -= 1
        return max(0.0, self._clock() - start)

    def delay(self) -> float:
        """Seconds before the next request may go (0: now)."""
        now = self._clock()
        delay = self._blocked_until - now
        if self._left is not None and self._left <= self._floor:
            if self._reset_at > now:
                delay = max(delay, self._reset_at - now)
            else:
                self._left = None  # the window has rolled over; the next response tells us more
        return max(0.0, delay)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Fold in one response's rate headers (names are case-insensitive)."""
        self._apply(_BcHeaders.parse(headers))

    def _apply(self, parsed: _BcHeaders) -> None:
        self._quota = parsed.quota if parsed.quota is not None else self._quota
        self._window_ms = parsed.window_ms if parsed.window_ms is not None else self._window_ms
        if parsed.reset_ms is not None:
            self._reset_ms = parsed.reset_ms
        if parsed.left is None:
            return
        self._left = parsed.left
        reset_ms = parsed.reset_ms if parsed.reset_ms is not None else self._window_ms
        self._reset_at = self._clock() + (reset_ms or BC_DEFAULT_WINDOW_MS) / 1000.0

    def on_429(self, headers: Mapping[str, str]) -> float:
        """Record a 429 and block the next request; returns the delay imposed."""
        parsed = _BcHeaders.parse(headers)
        self._apply(parsed)
        self._consecutive_429 += 1
        server = parsed.server_delay()
        if server is None:
            delay = escalating_delay(
                self._consecutive_429 - 1,
                base=self._overload_base,
                cap=self._max_delay,
                rng=self._rng,
            )
        else:
            delay = doubled(
                max(server, BC_MIN_429_DELAY_SECONDS), self._consecutive_429, cap=self._max_delay
            )
        self._blocked_until = max(self._blocked_until, self._clock() + delay)
        return delay

    def on_success(self) -> None:
        """A request went through: the next 429 starts the escalation afresh."""
        self._consecutive_429 = 0

    def snapshot(self) -> dict[str, float | int | None]:
        """State for /status."""
        return {
            "quota": self._quota,
            "left": self._left,
            "reset_ms": self._reset_ms,
            "window_ms": self._window_ms,
            "consecutive_429": self._consecutive_429,
            "blocked_for_seconds": max(0.0, self._blocked_until - self._clock()),
        }
