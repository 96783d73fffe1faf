"""The leader lease against a real Postgres: the SQL's rules (database clock, epochs, fencing
in the recording transaction), two ``Leadership``s on one database, and a handover through
LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from katsyncd.leadership import Leadership, Notifications
from katsyncd.metrics import Metrics
from katsyncd.models import AbsoluteItem, WriteOutcome
from katsyncd.persistence import lease, levels
from tests.support.harness import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


async def test_acquire_renew_release_follow_the_database_clock(pool: asyncpg.Pool) -> None:
    assert await lease.acquire(pool, "a", 30) == 1
    assert await lease.acquire(pool, "b", 30) is None  # held
    assert await lease.renew(pool, "a", 1, 30)
    assert not await lease.renew(pool, "a", 2, 30)  # not that epoch
    assert not await lease.renew(pool, "b", 1, 30)  # not that holder
    row = await lease.read(pool)
    assert row is not None and (row.holder, row.epoch) == ("a", 1) and 29 < row.expires_in <= 30
    async with pool.acquire() as conn:
        assert await lease.release(conn, "a", 1)
        assert not await lease.release(conn, "a", 1)  # already let go
    assert not await lease.renew(pool, "a", 1, 30)  # a released lease is not renewed
    assert await lease.acquire(pool, "b", 30) == 2  # at once: no waiting for the expiry


async def test_an_expired_lease_is_taken_with_a_new_epoch(pool: asyncpg.Pool) -> None:
    assert await lease.acquire(pool, "a", 0.3) == 1
    await eventually(lambda: _expired(pool), 5)
    assert not await lease.renew(pool, "a", 1, 30)  # too late: it has expired
    assert await lease.acquire(pool, "b", 30) == 2


async def _expired(pool: asyncpg.Pool) -> bool:
    row = await lease.read(pool)
    return row is not None and row.expires_in <= 0


def _outcome(qty: int) -> WriteOutcome:
    out = WriteOutcome()
    out.written.append(AbsoluteItem("p:1", 1, qty, "SKU-1"))
    out.transaction_ids.append("t1")
    return out


async def _seed_level(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO item_level (store, item_key, location_id, sku, desired, reason)"
        " VALUES ('main', 'p:1', 1, 'SKU-1', 5, 'test')"
    )


async def test_a_push_is_recorded_only_under_the_lease_it_was_written_under(
    pool: asyncpg.Pool,
) -> None:
    await _seed_level(pool)
    prior = {("p:1", 1): levels.Prior(None, "test")}
    assert await lease.acquire(pool, "a", 30) == 1
    await levels.record_pushes(pool, "main", _outcome(5), prior, fence=("a", 1))
    async with pool.acquire() as conn:
        assert await lease.release(conn, "a", 1)
    assert await lease.acquire(pool, "b", 30) == 2
    with pytest.raises(lease.LeaseLost):
        await levels.record_pushes(pool, "main", _outcome(4), prior, fence=("a", 1))
    pushed = await pool.fetchval("SELECT pushed FROM item_level WHERE item_key = 'p:1'")
    logged = await pool.fetchval("SELECT count(*) FROM push_log")
    assert (pushed, logged) == (5, 1)  # the fenced record rolled back whole


async def test_a_takeover_waits_for_a_recording_transaction_in_flight(pool: asyncpg.Pool) -> None:
    assert await lease.acquire(pool, "a", 0.5) == 1
    async with pool.acquire() as conn, conn.transaction():
        await lease.fence(conn, "a", 1)  # the recording transaction holds a share lock
        await eventually(lambda: _expired(pool), 5)
        takeover = asyncio.ensure_future(lease.acquire(pool, "b", 30))
        done, _ = await asyncio.wait({takeover}, timeout=0.5)
        assert not done  # blocked until the record commits
    assert await takeover == 2


async def test_two_replicas_one_leader_and_a_handover_by_notify(db_url: str) -> None:
    pools = [await asyncpg.create_pool(db_url, min_size=1, max_size=2) for _ in range(2)]
    reps = [Leadership(_getter(p), f"r{i}", 20.0, Metrics()) for i, p in enumerate(pools)]
    stops = [asyncio.Event(), asyncio.Event()]
    runs = [asyncio.create_task(r.run(s)) for r, s in zip(reps, stops, strict=True)]
    listeners, connected = [], [asyncio.Event(), asyncio.Event()]
    for r, s, c in zip(reps, stops, connected, strict=True):
        n = Notifications(lambda: db_url, _waker(r), _setter(c))
        listeners.append(asyncio.create_task(n.run(s)))
    try:
        await eventually(lambda: any(r.leading.is_set() for r in reps), 10)
        leader = next(r for r in reps if r.leading.is_set())
        follower = next(r for r in reps if r is not leader)
        assert not follower.leading.is_set()
        await eventually(lambda: all(c.is_set() for c in connected), 10)  # both LISTENing
        started = time.monotonic()
        await leader.release()  # the 20 s lease is handed over: no waiting for the expiry
        await eventually(lambda: follower.leading.is_set(), 5)
        assert time.monotonic() - started < 5
        assert follower.state.term is not None and follower.state.term.epoch == 2
    finally:
        for s in stops:
            s.set()
        for r in reps:
            await r.release()
        await asyncio.wait_for(asyncio.gather(*runs, *listeners), 10)
        for p in pools:
            await p.close()


def _getter(pool: asyncpg.Pool) -> Callable[[], asyncpg.Pool]:
    return lambda: pool


def _waker(r: Leadership) -> Callable[[str, str], None]:
    def on(channel: str, payload: str) -> None:
        if channel == lease.LEASE_CHANNEL:
            r.wake.set()

    return on


def _setter(event: asyncio.Event) -> Callable[[], Awaitable[None]]:
    async def connected() -> None:
        event.set()

    return connected
