"""High availability end to end: two and three ``katsyncd run`` replicas on one database behind
a balancer, the simulators in this process. Throughout every test, each BigCommerce store has at
most one write in flight (counted by the simulator) and replicas never write in the same
stretch of time."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from katsyncd.sim.quirks import Quirks
from katsyncd.sim.world import World
from tests.support.ha import Cluster, Replica, burst, cluster, steady_load
from tests.support.harness import converge, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

N_VARIANTS = 200


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = await World.start(
        katana_rpm=600, bc_quota=150, webhook_retry_delays=(0.5, 1.0, 2.0), quirks=Quirks()
    )
    w.katana.populate(N_VARIANTS, locations=2, seed=5)
    skus = [f"KS-{i:05d}" for i in range(N_VARIANTS)]
    w.add_store("main", skus)
    w.add_store("outlet", skus[::2], settings={"quantity": "in_stock", "buffer": 1})
    yield w
    await w.stop()


def assert_one_writer(c: Cluster, old: Replica, new: Replica) -> None:
    """One write in flight per store; both replicas wrote, the old leader's writes all ended
    before the new leader's first began."""
    assert c.max_writes_in_flight() <= 1
    before, after = c.writes_of(old), c.writes_of(new)
    assert before and after, (len(before), len(after))
    assert max(end for _, end in before) <= min(start for start, _ in after)


async def test_kill_9_of_the_leader_mid_burst_another_leads_within_15_s_and_syncs_it_all(
    world: World, db_url: str, tmp_path: Path
) -> None:
    async with cluster(world, db_url, tmp_path) as c:  # the default 10 s lease
        first = await c.start_replica()
        leader = await c.wait_leader()
        assert leader is first
        second = await c.start_replica()
        await converge(world, 60)
        await burst(world, 150, random.Random(2), 1.0)
        assert c.balancer.by_port[second.port] > 0  # the burst was split between them
        first.proc.kill9()  # its webhooks in flight fail; Katana retries them (on the survivor)
        killed = time.monotonic()
        c.out_of_rotation(first)  # its readiness probe fails
        assert await c.pending_marks() > 0  # it died with acknowledged marks not synced
        assert await c.wait_leader(20, other_than=first) is second
        failover = time.monotonic() - killed
        assert failover < 15, failover
        await c.stable(60)
        await converge(world, 30)
        assert_one_writer(c, first, second)


async def test_rolling_update_under_webhook_load_answers_every_webhook_2xx(
    world: World, db_url: str, tmp_path: Path
) -> None:
    async with cluster(world, db_url, tmp_path, lease_seconds=30) as c:
        a = await c.start_replica()
        await c.wait_leader()
        b = await c.start_replica()
        await converge(world, 60)
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(world, random.Random(3), 25, stop))
        for old in (a, b):  # maxSurge 1, maxUnavailable 0: a new pod first, then one old goes
            await c.start_replica()
            was_leader = (await c.leader()) is old
            c.out_of_rotation(old)  # endpoints updated during the preStop pause
            old.proc.signal(signal.SIGTERM)
            assert await old.proc.wait_exit(30) == 0
            exited = time.monotonic()
            if was_leader:  # handed over on release (NOTIFY), not after the 30 s lease expired
                await c.wait_leader(10, other_than=old)
                assert time.monotonic() - exited < 10
            answered = sum(c.balancer.answers.values())  # the load goes on between the steps
            await eventually(_answered_at_least(c, answered + 25), 30)
        stop.set()
        assert await load > 50
        await c.stable(60)
        await converge(world, 30)
        assert c.balancer.non_2xx == 0, c.balancer.answers
        assert c.max_writes_in_flight() <= 1


async def test_a_leader_cut_off_from_postgres_stops_writing_before_another_takes_over(
    world: World, db_url: str, tmp_path: Path, pg_server_url: str
) -> None:
    """Each replica logs in as its own role: the leader's role is locked out and its
    connections terminated (pg_terminate_backend), as in a partition between it and Postgres."""
    roles = [f"ha_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    admin = await asyncpg.connect(pg_server_url)
    try:
        for role in roles:
            await admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
        async with cluster(world, db_url, tmp_path, lease_seconds=6) as c:
            first = await c.start_replica(_as(db_url, roles[0]))
            assert await c.wait_leader() is first
            second = await c.start_replica(_as(db_url, roles[1]))
            await converge(world, 60)
            stop = asyncio.Event()
            load = asyncio.create_task(steady_load(world, random.Random(4), 20, stop))
            await admin.execute(f"ALTER ROLE {roles[0]} NOLOGIN")
            await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                roles[0],
            )
            assert await c.wait_leader(20, other_than=first) is second
            await admin.execute(f"ALTER ROLE {roles[0]} LOGIN")
            stop.set()
            await load
            await c.stable(60)
            await converge(world, 30)
            assert_one_writer(c, first, second)
            assert (await c.leader()) is second  # the old leader came back as a follower
    finally:
        await _drop_roles(admin, roles)
        await admin.close()


async def test_postgres_unreachable_webhooks_503_the_lease_lapses_and_it_converges_after(
    world: World, db_url: str, tmp_path: Path, pg_server_url: str
) -> None:
    """Both replicas lose Postgres (their roles locked out, their connections terminated) for
    longer than the lease: webhooks are answered 503, the lease lapses, and once Postgres is
    back a replica leads again with a new epoch; no process restarts."""
    roles = [f"ha_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    admin = await asyncpg.connect(pg_server_url)
    try:
        for role in roles:
            await admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
        async with cluster(world, db_url, tmp_path, lease_seconds=4) as c:
            replicas = [await c.start_replica(_as(db_url, role)) for role in roles]
            await c.wait_leader()
            held = await c.lease()
            assert held is not None
            await converge(world, 60)
            stop = asyncio.Event()
            load = asyncio.create_task(steady_load(world, random.Random(7), 10, stop))
            for role in roles:
                await admin.execute(f"ALTER ROLE {role} NOLOGIN")
                await admin.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                    role,
                )
            await eventually(lambda: c.balancer.answers[503] > 0, 20)
            await eventually(_lapsed(c), 20)
            for role in roles:
                await admin.execute(f"ALTER ROLE {role} LOGIN")
            stop.set()
            await load
            await c.wait_leader(20)
            again = await c.lease()
            assert again is not None and again[1] > held[1]
            await c.stable(60)
            await converge(world, 60)
            assert all(r.proc.proc is not None and r.proc.proc.poll() is None for r in replicas)
            assert set(c.balancer.answers) <= {200, 503}
            assert c.max_writes_in_flight() <= 1
    finally:
        await _drop_roles(admin, roles)
        await admin.close()


def _answered_at_least(c: Cluster, n: int) -> Callable[[], bool]:
    return lambda: sum(c.balancer.answers.values()) >= n


def _lapsed(c: Cluster) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await c.lease() is None

    return check


async def test_a_follower_only_webhook_stream_reaches_the_leader_within_the_debounce(
    world: World, db_url: str, tmp_path: Path
) -> None:
    async with cluster(world, db_url, tmp_path) as c:
        c.sync = {"poll_interval_seconds": 3600.0}  # after the first polls: webhooks only
        leader = await c.start_replica()
        assert await c.wait_leader() is leader
        await c.start_replica()
        await converge(world, 60)
        c.out_of_rotation(leader)  # every webhook now goes to the follower
        rng = random.Random(6)
        for _ in range(5):  # each change reaches the leader only through the follower's NOTIFY
            world.katana.random_activity(rng)
            await converge(world, 10)  # debounce 0.5 s, max delay 2 s, then the write
        assert c.balancer.by_port[leader.port] == 0
        assert c.max_writes_in_flight() <= 1


def _as(db_url: str, role: str) -> str:
    return db_url.replace("postgres@", f"{role}@", 1)


async def _drop_roles(admin: asyncpg.Connection, roles: list[str]) -> None:
    for role in roles:
        await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
