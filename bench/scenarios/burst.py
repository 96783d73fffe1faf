"""burst: a busy minute. A catalogue of ``variants``, two stores, then ``webhooks`` Katana
webhooks over ``seconds`` touching ``touched`` variants (sales orders created and packed, stock
adjustments announced with ``current_inventory.product_updated``). Variants of the scenario
(``SHAPES``): ``burst`` on 2 Katana locations, ``burst-1loc`` and ``burst-3loc`` on 1 and 3,
``burst-orders`` with a sales-order-heavy mix (``workload.ORDER_HEAVY``).

Measured from the first burst event until every store is right (or the cap): Katana requests,
BigCommerce requests per store, seconds from the last event until right, and the share of
SKUs right at the end. katsyncd's warm-up (start, initial catalogue sync) happens before the
burst and is reported separately; the baseline has none (its stores start with correct levels).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.context import Context
from bench.profiles import Burst
from bench.report import Row, Target
from bench.systems import Baseline, Katsyncd, System, WarmUp
from bench.workload import ORDER_HEAVY, STOCK_HEAVY, BurstDriver, Mix, drive
from bench.world import (
    SEED,
    Counts,
    Oracle,
    build_world,
    katana_by_endpoint,
    seed_levels,
    wait_katana_window,
)
from katsyncd.sim.world import World

NAME = "burst"


@dataclass(frozen=True, slots=True)
class Shape:
    """One variant of the burst scenario: its name, Katana locations and operation mix."""

    name: str
    locations: int = 2
    mix: Mix = STOCK_HEAVY


SHAPES = (
    Shape(NAME),
    Shape("burst-1loc", locations=1),
    Shape("burst-3loc", locations=3),
    Shape("burst-orders", mix=ORDER_HEAVY),
)


@dataclass
class BurstRun:
    warm: WarmUp
    window_wait: float = 0.0
    sent: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    counts: Counts | None = None
    endpoints: dict[str, int] = field(default_factory=dict)
    converged_after: float | None = None
    right_all: float = 0.0
    right_touched: float = 0.0
    cpu_seconds: float | None = None


def scenario(shape: Shape) -> Callable[[Context], Awaitable[list[Row]]]:
    async def run(ctx: Context) -> list[Row]:
        p = ctx.profile.burst
        sync = ctx.profile.sync.as_config()
        k = await _one(ctx, Katsyncd(ctx.pg, ctx.workdir, shape.name, sync=sync), p, shape)
        b = await _one(ctx, Baseline(ctx.workdir, shape.name, rpm=p.katana_rpm), p, shape)
        _notes(ctx, p, shape, k, b)
        return _rows(p, shape.name, k, b)

    return run


run = scenario(SHAPES[0])


async def _one(ctx: Context, system: System, p: Burst, shape: Shape) -> BurstRun:
    world = await build_world(
        p.variants,
        katana_rpm=p.katana_rpm,
        bc_quota=p.bc_quota,
        quirks=ctx.quirks,
        locations=shape.locations,
    )
    try:
        if isinstance(system, Baseline):
            seed_levels(world)
        ctx.say(shape.name, f"{system.name}: starting on {p.variants:,} variants")
        await system.start(world)
        warm = await system.warm_up(world, p.warmup_cap_seconds)
        ctx.say(shape.name, f"{system.name}: warm-up {_secs(warm.seconds)}")
        out = BurstRun(warm)
        out.window_wait = await wait_katana_window(world, at_most=p.katana_rpm // 5)
        await _burst(ctx, world, system, p, shape, out)
        return out
    finally:
        await system.stop()
        await world.stop()


async def _burst(
    ctx: Context, world: World, system: System, p: Burst, shape: Shape, run: BurstRun
) -> None:
    products = sorted(v.id for v in world.katana.variants.values() if v.type == "product")
    touched = random.Random(SEED).sample(products, min(p.touched, len(products)))
    before, first_log = Counts.take(world), len(world.katana.request_log)
    driver = BurstDriver(world.katana, touched, shape.mix)
    ctx.say(shape.name, f"{system.name}: {p.webhooks:,} webhooks over {p.seconds:g} s")
    assert system.proc is not None
    cpu_before = system.proc.cpu_seconds()
    oracle = Oracle(world)
    async with ctx.profiled(system, shape.name):
        run.sent, last = await drive(driver, p.webhooks, p.seconds)
        left = max(0.0, p.converge_cap_seconds - (time.monotonic() - last))
        took = await oracle.wait(left, poll=0.5)
    run.converged_after = None if took is None else time.monotonic() - last
    run.cpu_seconds = _delta(cpu_before, system.proc.cpu_seconds())
    run.ops = dict(driver.ops)
    run.counts = Counts.take(world).since(before)
    run.endpoints = katana_by_endpoint(world, first_log)
    run.right_all = oracle.fraction_right()
    touched_skus = {world.katana.variants[v].sku or "" for v in touched}
    run.right_touched = oracle.fraction_right(touched_skus)
    ctx.say(
        shape.name,
        f"{system.name}: right after {_secs(run.converged_after)}, "
        f"{100 * run.right_all:.1f} % right, Katana {run.counts.katana}, BC {run.counts.bc}",
    )


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _rows(p: Burst, name: str, k: BurstRun, b: BurstRun) -> list[Row]:
    assert k.counts is not None and b.counts is not None
    cap = f"not right within {p.converge_cap_seconds:g} s"
    rows = [
        Row(
            name,
            "warm-up: start → all stores right",
            "s",
            k.warm.seconds,
            None,
            baseline_note="none (stores pre-seeded)",
        ),
        Row(name, "warm-up: Katana requests", "", k.warm.katana_requests, 0),
        Row(name, "webhooks sent", "", k.sent, b.sent),
        Row(
            name,
            "Katana requests (burst + until right)",
            "",
            k.counts.katana,
            b.counts.katana,
            Target(100),
        ),
        Row(name, "Katana 429 answers", "", k.counts.katana_429, b.counts.katana_429),
    ]
    for store in sorted(k.counts.bc):
        rows.append(
            Row(
                name,
                f"BigCommerce requests, store {store}",
                "",
                k.counts.bc[store],
                b.counts.bc.get(store),
                Target(10),
            )
        )
    rows += [
        Row(
            name,
            "last event → every SKU right",
            "s",
            k.converged_after,
            b.converged_after,
            Target(5, unit=" s"),  # issue 10: every SKU right within 5 s of the last event
            note="" if k.converged_after is not None else cap,
            baseline_note="" if b.converged_after is not None else cap,
        ),
        Row(name, "SKUs right at the end (all)", "%", 100 * k.right_all, 100 * b.right_all),
        Row(
            name,
            "SKUs right at the end (touched)",
            "%",
            100 * k.right_touched,
            100 * b.right_touched,
        ),
        Row(name, "CPU time of the system's process", "s", k.cpu_seconds, b.cpu_seconds),
    ]
    return rows


def _notes(ctx: Context, p: Burst, shape: Shape, k: BurstRun, b: BurstRun) -> None:
    name = shape.name
    ctx.note(
        name,
        f"{shape.locations} Katana locations, mix {shape.mix}; "
        f"{p.variants:,} variants, stores a (all SKUs, product-tracked) and b (every other SKU, "
        f"variant-tracked); {p.webhooks:,} webhooks over {p.seconds:g} s touching "
        f"{p.touched:,} variants; quotas Katana {p.katana_rpm}/min, BigCommerce "
        f"{p.bc_quota}/30 s. Operations: {k.ops}. Counts run from the first burst event until "
        f"every SKU is right, or {p.converge_cap_seconds:g} s after the last event.",
    )
    ctx.note(name, f"katsyncd Katana requests by endpoint: {k.endpoints}")
    ctx.note(name, f"baseline Katana requests by endpoint: {_top(b.endpoints)}")
    if k.window_wait > 1:
        ctx.note(
            name,
            f"after katsyncd's warm-up the bench waited {k.window_wait:.0f} s for Katana's "
            "60-second window to drain, so the burst starts with the budget a steady state has.",
        )


def _top(endpoints: dict[str, int], n: int = 6) -> dict[str, int]:
    return dict(list(endpoints.items())[:n])
