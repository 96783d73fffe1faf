"""Leadership: one replica per database (one Katana account) leads; the others follow.

The leader holds a lease in Postgres (``persistence.lease``), renewed every ``ttl / 3`` on the
database clock. Fencing has two halves:

- locally, the leader keeps a deadline: the monotonic time its last successful renewal was
  *sent*, plus the lease time, minus a margin. It is earlier than the expiry Postgres recorded
  (that was computed after the request left), so the leader stops before anyone may take over.
  Every BigCommerce write runs under ``Fence.guard``: it starts only with ``MIN_WRITE_SECONDS``
  left, and is cut off at the deadline;
- in Postgres, the transaction that records a push checks holder, epoch and expiry
  (``Fence.token`` → ``persistence.lease.fence``) and rolls back otherwise.

``LeaseState`` is the pure state machine (an injected clock); ``Leadership`` runs it against
Postgres; ``Notifications`` is the LISTEN connection (marks committed elsewhere, a lease handed
over) and reconnects when Postgres drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from katsyncd.backoff import exponential
from katsyncd.metrics import Metrics
from katsyncd.persistence import lease as stored
from katsyncd.persistence.lease import LeaseLost, LeaseRow
from katsyncd.waiting import wait_either, wait_stop

log = structlog.get_logger(__name__)

MIN_WRITE_SECONDS = 1.0  # a write never starts with less of the lease left than this
RETRY_SECONDS = 0.5  # a renewal that failed (Postgres unreachable) is retried this soon
MAX_PAYLOAD_BYTES = 7000  # Postgres caps a NOTIFY payload at 8000 bytes
DB_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

__all__ = ["Fence", "Leadership", "LeaseLost", "LeaseState", "Notifications", "replica_id"]


def replica_id() -> str:
    """This process's name in the lease: host, pid and a random suffix (never reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Term:
    """One leadership term of this replica."""

    epoch: int
    acquired: float  # monotonic
    deadline: float  # monotonic: all leader work has stopped by then


class LeaseState:
    """The lease as this replica sees it (pure: the clock is injected)."""

    def __init__(self, holder: str, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.term: Term | None = None
        self.last_epoch: int | None = None

    @property
    def renew_every(self) -> float:
        return self.ttl / 3

    @property
    def margin(self) -> float:
        """How long before the recorded expiry the leader has stopped: pauses, clock rates."""
        return self.ttl / 5

    @property
    def leading(self) -> bool:
        return self.term is not None

    def gained(self, epoch: int, sent_at: float) -> Term:
        self.term = Term(epoch, sent_at, sent_at + self.ttl - self.margin)
        self.last_epoch = epoch
        return self.term

    def renewed(self, sent_at: float) -> None:
        if self.term is not None:
            self.term.deadline = max(self.term.deadline, sent_at + self.ttl - self.margin)

    def seconds_left(self) -> float:
        """Seconds until the local deadline (0 as a follower)."""
        if self.term is None:
            return 0.0
        return max(0.0, self.term.deadline - self.clock())

    def expired(self) -> bool:
        """A leader whose renewals failed until its deadline must step down now."""
        return self.term is not None and self.clock() >= self.term.deadline

    def ended(self) -> None:
        self.term = None

    def next_wake(self, last_attempt: float) -> float:
        """Seconds until the next renewal (never past the deadline)."""
        due = last_attempt + self.renew_every
        if self.term is not None:
            due = min(due, self.term.deadline)
        return max(0.0, due - self.clock())


class Fence:
    """What a writer holds while it writes: the term it writes under, cut at the deadline
    (which each renewal moves on: ``extend``)."""

    def __init__(self, state: LeaseState) -> None:
        self._state = state
        self._writes: set[asyncio.Timeout] = set()

    def extend(self) -> None:
        """A renewal moved the deadline: so do the cut-offs of the writes on the wire."""
        if not self._writes:
            return
        at = asyncio.get_running_loop().time() + self._state.seconds_left()
        for cut in self._writes:
            cut.reschedule(at)

    def token(self) -> tuple[str, int]:
        """(holder, epoch) of the current term, for the recording transaction's check."""
        term = self._state.term
        if term is None or self._state.expired():
            raise LeaseLost("not the leader")
        return self._state.holder, term.epoch

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[tuple[str, int]]:
        """Run a write under the lease: refused with less than ``MIN_WRITE_SECONDS`` left,
        cut off (``LeaseLost``) at the deadline."""
        token = self.token()
        left = self._state.seconds_left()
        if left < MIN_WRITE_SECONDS:
            raise LeaseLost(f"{left:.1f} s of the lease left: no write starts")
        try:
            async with asyncio.timeout(left) as cut:
                self._writes.add(cut)
                try:
                    yield token
                finally:
                    self._writes.discard(cut)
        except TimeoutError:
            if self._state.seconds_left() > 0:
                raise  # the write's own timeout
            raise LeaseLost("the lease deadline cut a write short") from None


Probe = Callable[[], Awaitable[None]]


class Leadership:
    """Takes, renews and releases the lease; ``leading`` is set while this replica leads and
    ``lost`` once a term ended without a release (the leader work must stop at once)."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        holder: str,
        ttl: float,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self.state = LeaseState(holder, ttl, clock)
        self.fence = Fence(self.state)
        self._metrics = metrics
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self.wake = asyncio.Event()  # the lease was handed over: try at once
        self._released = asyncio.Event()  # wakes the renewal wait at a release
        self.seen: LeaseRow | None = None  # the lease row as last read
        self._next_try = 0.0

    @property
    def holder(self) -> str:
        return self.state.holder

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` (and, if leading then, until the term ends by ``release``)."""
        while not stop.is_set() or self.state.leading:
            if self.state.leading:
                await self._keep()
            elif self._released.is_set():
                # it let the lease go for another replica: no racing it for the lease (the
                # NOTIFY reaches the others while this loop would already be acquiring)
                self._released.clear()
                await wait_stop(stop, self.state.renew_every)
            elif not stop.is_set():
                await self._follow(stop)

    async def _keep(self) -> None:
        wait = await self._keep_once()
        if wait is not None:
            await wait_either(self.lost, self._released, wait)

    async def _keep_once(self) -> float | None:
        """Renew once; the seconds until the next attempt, or None if the term ended."""
        attempt = self.state.clock()
        term = self.state.term
        assert term is not None
        try:
            ok = await stored.renew(self._pool(), self.holder, term.epoch, self.state.ttl)
        except DB_ERRORS as exc:
            log.warning("lease_renew_failed", error=str(exc) or type(exc).__name__)
            ok = None
        if self.state.term is not term:
            return None  # released meanwhile
        if ok:
            self.state.renewed(attempt)
            self.fence.extend()
            self._metrics.leader_lease_age.set(self.state.clock() - term.acquired)
        elif ok is False or self.state.expired():
            self._step_down("taken" if ok is False else "expired")
            return None
        wait = self.state.next_wake(attempt)
        return wait if ok else min(RETRY_SECONDS, wait)

    async def _follow(self, stop: asyncio.Event) -> None:
        # Cleared before the attempt, not after: a release NOTIFY that arrives while the
        # attempt is under way must wake the wait below, not be wiped by it.
        self.wake.clear()
        sent = self.state.clock()
        try:
            epoch = await stored.acquire(self._pool(), self.holder, self.state.ttl)
            self.seen = await stored.read(self._pool())
        except DB_ERRORS as exc:
            log.debug("lease_acquire_failed", error=str(exc) or type(exc).__name__)
            epoch = None
        if epoch is not None and not stop.is_set():
            self._gain(epoch, sent)
            return
        await wait_either(stop, self.wake, self._follow_wait())

    def _follow_wait(self) -> float:
        """Until the lease seen expires (a dead leader's), at most one renewal interval."""
        every = self.state.renew_every
        if self.seen is None:
            return every
        return min(every, max(0.05, self.seen.expires_in + 0.05))

    def _gain(self, epoch: int, sent: float) -> None:
        term = self.state.gained(epoch, sent)
        self.lost.clear()
        self._released.clear()
        self.leading.set()
        self._metrics.leader.set(1)
        self._metrics.leader_epoch.set(epoch)
        self._metrics.leader_lease_age.set(self.state.clock() - term.acquired)
        self._metrics.leader_transitions.labels("acquired").inc()
        log.info("leader_acquired", holder=self.holder, epoch=epoch)

    def _step_down(self, why: str) -> None:
        epoch = self.state.last_epoch
        self.state.ended()
        self.leading.clear()
        self.lost.set()
        self._metrics.leader.set(0)
        self._metrics.leader_lease_age.set(0)
        self._metrics.leader_transitions.labels(why).inc()
        log.error("leader_lost", holder=self.holder, epoch=epoch, why=why)

    async def release(self) -> None:
        """A clean stop: the leader work has stopped; let the lease go and tell the others."""
        term = self.state.term
        if term is None:
            return
        self.state.ended()
        self.leading.clear()
        self._released.set()
        self._metrics.leader.set(0)
        self._metrics.leader_lease_age.set(0)
        self._metrics.leader_transitions.labels("released").inc()
        try:
            async with self._pool().acquire(timeout=2) as conn:
                await stored.release(conn, self.holder, term.epoch)
            log.info("leader_released", holder=self.holder, epoch=term.epoch)
        except DB_ERRORS as exc:  # it expires by itself
            log.warning("lease_release_failed", error=str(exc) or type(exc).__name__)

    async def describe(self) -> dict[str, Any]:
        """The ``leadership`` part of ``/status``."""
        with contextlib.suppress(*DB_ERRORS):
            self.seen = await stored.read(self._pool())
        seen = self.seen
        return {
            "role": "leader" if self.state.leading else "follower",
            "replica": self.holder,
            "holder": seen.holder if seen else None,
            "epoch": seen.epoch if seen else None,
            "lease_age_seconds": round(seen.age, 3) if seen else None,
            "expires_in": round(seen.expires_in, 3) if seen else None,
            "lease_seconds": self.state.ttl,
        }


# ----- what replicas tell each other ----------------------------------------------------------


def marks_payload(replica: str, variants: list[int], orders: list[int], polls: list[str]) -> str:
    """A commit's marks for the leader (``all``: too many to list, reload them from Postgres)."""
    body = json.dumps({"r": replica, "v": variants, "o": orders, "p": polls})
    if len(body.encode()) <= MAX_PAYLOAD_BYTES:
        return body
    return json.dumps({"r": replica, "all": True})


@dataclass(frozen=True, slots=True)
class MarksNotice:
    replica: str
    variants: list[int]
    orders: list[int]
    polls: list[str]
    reload_all: bool


def parse_marks(payload: str) -> MarksNotice | None:
    """A marks payload, or None if it is not one (logged, ignored)."""
    try:
        d = json.loads(payload)
        return MarksNotice(
            str(d["r"]),
            [int(i) for i in d.get("v", [])],
            [int(i) for i in d.get("o", [])],
            [str(p) for p in d.get("p", [])],
            bool(d.get("all", False)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("marks_notice_unreadable", error=str(exc), payload=payload[:200])
        return None


Handler = Callable[[str, str], None]  # (channel, payload)


class Notifications:
    """One LISTEN connection for the marks and lease channels, reconnected when dropped;
    ``on_connected`` runs after every (re)connection (notifications may have been missed)."""

    def __init__(
        self,
        url: Callable[[], str],
        handler: Handler,
        on_connected: Probe,
        *,
        check_every: float = 2.0,
    ) -> None:
        self._url = url
        self._handler = handler
        self._on_connected = on_connected
        self._check_every = check_every

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                await self._session(stop)
                attempt = 0
            except DB_ERRORS as exc:
                attempt += 1
                delay = exponential(attempt, base=0.2, cap=5.0)
                log.warning("listen_failed", error=str(exc) or type(exc).__name__, retry_in=delay)
                await wait_stop(stop, delay)

    async def _session(self, stop: asyncio.Event) -> None:
        channels = (stored.MARKS_CHANNEL, stored.LEASE_CHANNEL)
        async with stored.listening(self._url(), channels, self._on_notice) as conn:
            await self._on_connected()
            while not await wait_stop(stop, self._check_every):
                if not await stored.alive(conn, within=self._check_every):
                    break
        if not stop.is_set():
            log.warning("listen_connection_lost")

    def _on_notice(self, channel: str, payload: str) -> None:
        self._handler(channel, payload)
