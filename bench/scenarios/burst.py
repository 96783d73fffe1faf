"""burst: a busy minute. A catalogue of ``variants``, two stores, then ``webhooks`` Katana
webhooks over ``seconds`` touching ``touched`` variants (sales orders created and packed, stock
adjustments announced with ``current_inventory.product_updated``).

Measured from the first burst event until every store is right (or the cap): Katana requests,
BigCommerce requests per store, seconds from the last event until right, and the share of
SKUs right at the end. katsyncd's warm-up (start, initial catalogue sync) happens before the
burst and is reported separately; the baseline has none (its stores start with correct levels).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from bench.context import Context
from bench.profiles import Burst
from bench.report import Row, Target
from bench.systems import Baseline, Katsyncd, System, WarmUp
from bench.workload import BurstDriver, drive
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


async def run(ctx: Context) -> list[Row]:
    p = ctx.profile.burst
    sync = ctx.profile.sync.as_config()
    k = await _one(ctx, Katsyncd(ctx.pg, ctx.workdir, NAME, sync=sync), p)
    b = await _one(ctx, Baseline(ctx.workdir, NAME, rpm=p.katana_rpm), p)
    _notes(ctx, p, k, b)
    return _rows(p, k, b)


async def _one(ctx: Context, system: System, p: Burst) -> BurstRun:
    world = await build_world(
        p.variants, katana_rpm=p.katana_rpm, bc_quota=p.bc_quota, quirks=ctx.quirks
    )
    try:
        if isinstance(system, Baseline):
            seed_levels(world)
        ctx.say(NAME, f"{system.name}: starting on {p.variants:,} variants")
        await system.start(world)
        warm = await system.warm_up(world, p.warmup_cap_seconds)
        ctx.say(NAME, f"{system.name}: warm-up {_secs(warm.seconds)}")
        run = BurstRun(warm)
        run.window_wait = await wait_katana_window(world, at_most=p.katana_rpm // 5)
        await _burst(ctx, world, system, p, run)
        return run
    finally:
        await system.stop()
        await world.stop()


async def _burst(ctx: Context, world: World, system: System, p: Burst, run: BurstRun) -> None:
    products = sorted(v.id for v in world.katana.variants.values() if v.type == "product")
    touched = random.Random(SEED).sample(products, min(p.touched, len(products)))
    before, first_log = Counts.take(world), len(world.katana.request_log)
    driver = BurstDriver(world.katana, touched)
    ctx.say(NAME, f"{system.name}: {p.webhooks:,} webhooks over {p.seconds:g} s")
    assert system.proc is not None
    cpu_before = system.proc.cpu_seconds()
    oracle = Oracle(world)
    async with ctx.profiled(system, NAME):
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
        NAME,
        f"{system.name}: right after {_secs(run.converged_after)}, "
        f"{100 * run.right_all:.1f} % right, Katana {run.counts.katana}, BC {run.counts.bc}",
    )


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _rows(p: Burst, k: BurstRun, b: BurstRun) -> list[Row]:
    assert k.counts is not None and b.counts is not None
    cap = f"not right within {p.converge_cap_seconds:g} s"
    rows = [
        Row(
            NAME,
            "warm-up: start → all stores right",
            "s",
            k.warm.seconds,
            None,
            baseline_note="none (stores pre-seeded)",
        ),
        Row(NAME, "warm-up: Katana requests", "", k.warm.katana_requests, 0),
        Row(NAME, "webhooks sent", "", k.sent, b.sent),
        Row(
            NAME,
            "Katana requests (burst + until right)",
            "",
            k.counts.katana,
            b.counts.katana,
            Target(100),
        ),
        Row(NAME, "Katana 429 answers", "", k.counts.katana_429, b.counts.katana_429),
    ]
    for store in sorted(k.counts.bc):
        rows.append(
            Row(
                NAME,
                f"BigCommerce requests, store {store}",
                "",
                k.counts.bc[store],
                b.counts.bc.get(store),
                Target(10),
            )
        )
    rows += [
        Row(
            NAME,
            "last event → every SKU right",
            "s",
            k.converged_after,
            b.converged_after,
            Target(15, unit=" s"),
            note="" if k.converged_after is not None else cap,
            baseline_note="" if b.converged_after is not None else cap,
        ),
        Row(NAME, "SKUs right at the end (all)", "%", 100 * k.right_all, 100 * b.right_all),
        Row(
            NAME,
            "SKUs right at the end (touched)",
            "%",
            100 * k.right_touched,
            100 * b.right_touched,
        ),
        Row(NAME, "CPU time of the system's process", "s", k.cpu_seconds, b.cpu_seconds),
    ]
    return rows


def _notes(ctx: Context, p: Burst, k: BurstRun, b: BurstRun) -> None:
    ctx.note(
        NAME,
        f"{p.variants:,} variants, stores a (all SKUs, product-tracked) and b (every other SKU, "
        f"variant-tracked); {p.webhooks:,} webhooks over {p.seconds:g} s touching "
        f"{p.touched:,} variants; quotas Katana {p.katana_rpm}/min, BigCommerce "
        f"{p.bc_quota}/30 s. Operations: {k.ops}. Counts run from the first burst event until "
        f"every SKU is right, or {p.converge_cap_seconds:g} s after the last event.",
    )
    ctx.note(NAME, f"katsyncd Katana requests by endpoint: {k.endpoints}")
    ctx.note(NAME, f"baseline Katana requests by endpoint: {_top(b.endpoints)}")
    if k.window_wait > 1:
        ctx.note(
            NAME,
            f"after katsyncd's warm-up the bench waited {k.window_wait:.0f} s for Katana's "
            "60-second window to drain, so the burst starts with the budget a steady state has.",
        )


def _top(endpoints: dict[str, int], n: int = 6) -> dict[str, int]:
    return dict(list(endpoints.items())[:n])
