"""One store failing (every BigCommerce request answered 503), from start-up and mid-run: the
other stores' lag (a Katana change → right in stores "a" and "b") against a healthy phase."""

from __future__ import annotations

import random
import statistics
import time

from faults.common import Context, Daemon, make_world, store, wait_right
from faults.report import Expect, Row
from katsyncd.sim.world import World

FAILING = 10**9  # "every request from now on"; cleared by hand


def _fail(world: World, name: str) -> None:
    store(world, name).sim.fail_next(FAILING, 503)


def _heal(world: World, name: str) -> None:
    store(world, name).sim._faults.clear()  # the simulator keeps injected faults in this list


async def _lags(ctx: Context, world: World, rng: random.Random) -> list[float]:
    """Seconds from a Katana change (webhook emitted) until stores "a" and "b" are right."""
    a = store(world, "a")
    sold = sorted(set(a.skus) & set(store(world, "b").skus))
    lags: list[float] = []
    for _ in range(ctx.profile.lag_events):
        sku = rng.choice(sold)
        vid = world.katana.live_variant_for_sku(sku)
        assert vid is not None
        world.katana.adjust_stock(
            vid, rng.choice(sorted(world.katana.locations)), rng.randint(1, 9)
        )
        world.katana.emit("current_inventory.product_updated", vid)
        took = await wait_right(world, ctx.profile.converge_cap, only={"a", "b"}, poll=0.05)
        lags.append(ctx.profile.converge_cap if took is None else took)
    return lags


async def failing_store(ctx: Context) -> list[Row]:
    p = ctx.profile
    name = "one store failing"
    world = await make_world(ctx, stores=3)
    _fail(world, "c")
    daemon = Daemon(ctx, world, "failstore", sync={"poll_interval_seconds": 30.0})
    rng = random.Random(31)
    try:
        await daemon.start()
        if await wait_right(world, p.converge_cap, only={"a", "b"}) is None:
            raise RuntimeError(f"stores a, b did not converge with c failing:\n{daemon.log_tail()}")
        from_start = await _lags(ctx, world, rng)
        _heal(world, "c")
        if await wait_right(world, p.converge_cap) is None:
            raise RuntimeError(f"store c did not converge once healed:\n{daemon.log_tail()}")
        healthy = await _lags(ctx, world, rng)
        _fail(world, "c")
        for s in store(world, "c").skus[:5]:  # give c a backlog while it fails
            vid = world.katana.live_variant_for_sku(s)
            assert vid is not None
            world.katana.adjust_stock(vid, 1, 1)
            world.katana.emit("current_inventory.product_updated", vid)
        started = time.monotonic()
        mid_run = await _lags(ctx, world, rng)
        ctx.say(
            name,
            f"lags healthy {healthy}, from start {from_start}, mid-run {mid_run} "
            f"({time.monotonic() - started:.0f} s)",
        )
        _heal(world, "c")
    finally:
        await daemon.stop()
        await world.stop()
    base = max(healthy)
    margin = Expect(base + 2.0, unit=" s")  # a healthy store's lag, plus 2 s of slack
    return [
        Row(
            name,
            "other stores' lag, all healthy (median / max)",
            statistics.median(healthy),
            "s",
            note=f"max {max(healthy):.2f} s",
        ),
        Row(
            name,
            "other stores' lag, store c failing from start-up (max)",
            max(from_start),
            "s",
            margin,
            note=f"median {statistics.median(from_start):.2f} s",
        ),
        Row(
            name,
            "other stores' lag, store c failing mid-run (max)",
            max(mid_run),
            "s",
            margin,
            note=f"median {statistics.median(mid_run):.2f} s",
        ),
    ]
