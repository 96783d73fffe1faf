"""End to end: ``katsyncd run`` as a subprocess, signals and kill -9 for real, the simulators
in this process, a real Postgres. Every matched SKU of both stores must converge."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.sim.quirks import Quirks
from katsyncd.sim.world import World, free_port
from tests.support.harness import (
    DaemonProcess,
    converge,
    eventually,
    make_config_data,
    write_config,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

N_VARIANTS = 300


@pytest.fixture
async def world(quirks: Quirks) -> AsyncIterator[World]:
    """Burst, kill -9 and SIGTERM catch-up run against both readings of the loosely
    documented API behaviours."""
    w = await World.start(
        katana_rpm=600, bc_quota=150, webhook_retry_delays=(0.5, 1.0, 2.0), quirks=quirks
    )
    w.katana.populate(N_VARIANTS, locations=2, seed=3)
    skus = [f"KS-{i:05d}" for i in range(N_VARIANTS)]
    w.add_store("main", skus)
    w.add_store(
        "outlet",
        skus[::2],
        tracking="variant",
        settings={"quantity": "in_stock", "katana_sales_orders_count": False, "buffer": 1},
    )
    yield w
    await w.stop()


@pytest.fixture
def daemon_factory(
    world: World, db_url: str, tmp_path: Path
) -> Iterator[tuple[DaemonProcess, int]]:
    port = free_port()
    data = make_config_data(world, db_url, port, debounce_seconds=0.5, max_delay_seconds=2.0)
    proc = DaemonProcess(write_config(tmp_path / "katsyncd.toml", data), tmp_path / "daemon.log")
    yield proc, port
    proc.stop()


async def start_synced(proc: DaemonProcess, port: int, world: World) -> None:
    """Start the daemon, subscribe it to the webhooks, wait for the initial full sync."""
    proc.start()
    await proc.wait_ready(port)
    world.subscribe(port, SUBSCRIBED_EVENTS)
    await converge(world, 60)


async def burst(world: World, n: int, rng: random.Random, seconds: float) -> None:
    """n mixed Katana changes (orders, MOs, receipts, adjustments, transfers) plus extra
    current_inventory hints, spread over ``seconds``."""
    ids = list(world.katana.variants)
    for i in range(n):
        world.katana.random_activity(rng)
        if i % 3 == 0:
            world.katana.emit("current_inventory.product_updated", rng.choice(ids))
        await asyncio.sleep(seconds / n)  # the scenario: changes spread over time, not a wait


async def test_burst_converges_and_a_failing_store_does_not_delay_the_other(
    world: World, daemon_factory: tuple[DaemonProcess, int]
) -> None:
    proc, port = daemon_factory
    await start_synced(proc, port, world)
    outlet = world.stores[1].sim
    outlet.window_ms = 3000  # keeps BigCommerce's documented wait-for-reset short for a test
    outlet.fail_next(6, 500, path_prefix="/inventory/adjustments")
    outlet.fail_next(2, 429, path_prefix="/inventory/adjustments")
    await burst(world, 400, random.Random(1), 3.0)
    main = world.stores[0]
    await eventually(lambda: not main.wrong(world.katana), 30)  # while "outlet" still fails
    await converge(world, 90)
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit(30) == 0


async def test_kill_9_mid_burst_then_restart_loses_nothing(
    world: World, daemon_factory: tuple[DaemonProcess, int], db_url: str
) -> None:
    proc, port = daemon_factory
    await start_synced(proc, port, world)
    rng = random.Random(2)
    await burst(world, 150, rng, 1.0)
    proc.kill9()  # acknowledged marks are in Postgres; nothing else survives
    conn = await asyncpg.connect(db_url)
    try:
        pending = await conn.fetchval(
            "SELECT (SELECT count(*) FROM stale_variant) + (SELECT count(*) FROM stale_sales_order)"
        )
    finally:
        await conn.close()
    assert pending > 0  # killed with work in flight
    await burst(world, 100, rng, 0.5)  # Katana keeps retrying while we are down
    proc.start()
    await proc.wait_ready(port)
    await converge(world, 90)


async def test_sigterm_mid_burst_exits_0_and_restart_converges(
    world: World, daemon_factory: tuple[DaemonProcess, int]
) -> None:
    proc, port = daemon_factory
    await start_synced(proc, port, world)
    rng = random.Random(4)
    await burst(world, 150, rng, 1.0)
    proc.signal(signal.SIGTERM)
    assert await proc.wait_exit(30) == 0
    await burst(world, 50, rng, 0.3)
    proc.start()
    await proc.wait_ready(port)
    await converge(world, 90)
