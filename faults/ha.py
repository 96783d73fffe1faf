"""High-availability figures: ``python -m faults.ha [--rounds 5] [--idle-seconds 20]``.

Runs ``katsyncd run`` replicas as subprocesses on one fresh database (on
``KATSYNCD_TEST_DATABASE_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``)
behind an in-process balancer, against the in-process simulators (the e2e tests' harness,
``tests/support/ha.py``), and prints:

1. failover after ``kill -9`` of the leader right after a burst split between two replicas
   (default ``[ha] lease_seconds`` = 10): seconds until the survivor holds the lease, and
   until every acknowledged mark is synced; median, min and max over the rounds;
2. a simulated rolling update of a 2-replica Deployment (surge one, take one out of rotation,
   SIGTERM it; twice) under 25 Katana changes a second: the webhooks Katana got answered and
   how many were not 2xx, and how long each handover took;
3. with the polls off and Katana's webhooks going to a follower only, the time from a Katana
   change until BigCommerce is right (the marks reach the leader by NOTIFY);
4. the Postgres load one idle follower adds: committed transactions a second on the database
   (``pg_stat_database.xact_commit``) with the leader alone and with one follower more.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from katsyncd.db import migrate
from katsyncd.sim.world import World
from tests.support.ha import Cluster, Replica, burst, cluster, steady_load
from tests.support.harness import converge

ADMIN_URL = os.environ.get(
    "KATSYNCD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
N_VARIANTS = 200


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    name = f"katsyncd_ha_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    await migrate(conn)
    await conn.close()
    try:
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def make_world() -> World:
    w = await World.start(katana_rpm=600, bc_quota=150, webhook_retry_delays=(0.5, 1.0, 2.0))
    w.katana.populate(N_VARIANTS, locations=2, seed=5)
    skus = [f"KS-{i:05d}" for i in range(N_VARIANTS)]
    w.add_store("main", skus)
    w.add_store("outlet", skus[::2], settings={"quantity": "in_stock", "buffer": 1})
    return w


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.2f} s, min {min(values):.2f} s, "
        f"max {max(values):.2f} s (n={len(values)})"
    )


async def failover(rounds: int, tmp: Path) -> None:
    world = await make_world()
    try:
        (tmp / "failover").mkdir(exist_ok=True)
        async with fresh_database() as url, cluster(world, url, tmp / "failover") as c:
            await c.start_replica()
            leader = await c.wait_leader()
            await c.start_replica()
            await converge(world, 60)
            took, synced = [], []
            rng = random.Random(1)
            for i in range(rounds):
                await burst(world, 150, rng, 1.0)
                leader.proc.kill9()
                killed = time.monotonic()
                c.out_of_rotation(leader)
                pending = await c.pending_marks()
                new = await c.wait_leader(30, other_than=leader)
                took.append(time.monotonic() - killed)
                await c.stable(90)
                await converge(world, 30)
                synced.append(time.monotonic() - killed)
                print(
                    f"  round {i + 1}: leader after {took[-1]:.2f} s, {pending} acknowledged "
                    f"marks pending at the kill, all synced after {synced[-1]:.2f} s"
                )
                leader = new
                await c.start_replica()  # back to two replicas
            print(f"failover (kill -9 → new leader): {spread(took)}")
            print(f"kill -9 → every acknowledged mark synced: {spread(synced)}")
            print(f"max writes in flight per store (all rounds): {c.max_writes_in_flight()}")
    finally:
        await world.stop()


async def rolling_update(tmp: Path) -> None:
    world = await make_world()
    (tmp / "rolling").mkdir(exist_ok=True)
    try:
        async with fresh_database() as url, cluster(world, url, tmp / "rolling") as c:
            a = await c.start_replica()
            await c.wait_leader()
            b = await c.start_replica()
            await converge(world, 60)
            stop = asyncio.Event()
            load = asyncio.create_task(steady_load(world, random.Random(3), 25, stop))
            for old in (a, b):
                await roll_one(c, old)
            stop.set()
            changes = await load
            await c.stable(90)
            await converge(world, 30)
            total = sum(c.balancer.answers.values())
            print(
                f"rolling update: {changes} Katana changes, {total} webhooks answered, "
                f"{c.balancer.non_2xx} not 2xx ({dict(c.balancer.answers)}); "
                f"max writes in flight per store {c.max_writes_in_flight()}"
            )
    finally:
        await world.stop()


async def roll_one(c: Cluster, old: Replica) -> None:
    await c.start_replica()
    was_leader = (await c.leader()) is old
    c.out_of_rotation(old)
    old.proc.signal(signal.SIGTERM)
    code = await old.proc.wait_exit(45)
    exited = time.monotonic()
    if was_leader:
        await c.wait_leader(30, other_than=old)
        print(f"  leader SIGTERM: exit {code}, lease taken {time.monotonic() - exited:.2f} s after")
    else:
        print(f"  follower SIGTERM: exit {code}")


async def follower_latency(changes: int, tmp: Path) -> None:
    world = await make_world()
    (tmp / "latency").mkdir(exist_ok=True)
    try:
        async with fresh_database() as url, cluster(world, url, tmp / "latency") as c:
            c.sync = {"poll_interval_seconds": 3600.0}  # webhooks only after the first polls
            leader = await c.start_replica()
            await c.wait_leader()
            await c.start_replica()
            await converge(world, 60)
            c.out_of_rotation(leader)  # Katana reaches only the follower
            rng, took = random.Random(8), []
            for _ in range(changes):
                world.katana.random_activity(rng)
                start = time.monotonic()
                await converge(world, 30)
                took.append(time.monotonic() - start)
            print(
                "Katana change → BigCommerce right, webhooks to the follower only (debounce "
                f"0.5 s, max delay 2 s, no polls): {spread(took)}"
            )
    finally:
        await world.stop()


async def xacts(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        n: int = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return n


async def rate(url: str, seconds: float) -> float:
    before = await xacts(url)
    await asyncio.sleep(seconds)  # the measuring window
    return (await xacts(url) - before - 1) / seconds  # less this measurement's own connect


async def follower_load(seconds: float, tmp: Path) -> None:
    world = await make_world()
    (tmp / "load").mkdir(exist_ok=True)
    try:
        async with fresh_database() as url, cluster(world, url, tmp / "load") as c:
            await c.start_replica()
            await c.wait_leader()
            await converge(world, 60)
            await c.stable(60)
            alone = await rate(url, seconds)
            await c.start_replica()
            await asyncio.sleep(3)  # let the follower's start-up settle before measuring
            both = await rate(url, seconds)
            print(
                f"idle Postgres load: leader alone {alone:.2f} commits/s, with one follower "
                f"{both:.2f} commits/s → a follower adds {both - alone:.2f} transactions/s "
                f"(over {seconds:.0f} s windows)"
            )
    finally:
        await world.stop()


async def run(rounds: int, idle: float) -> None:
    with tempfile.TemporaryDirectory(prefix="katsyncd-ha-") as d:
        tmp = Path(d)
        print(f"katsyncd HA figures ({sys.platform}, {os.cpu_count()} CPUs)")
        await failover(rounds, tmp)
        await rolling_update(tmp)
        await follower_latency(10, tmp)
        await follower_load(idle, tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults.ha", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="kill -9 rounds (default 5)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="load window")
    args = parser.parse_args(argv)
    asyncio.run(run(args.rounds, args.idle_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
