"""quiet: single events, spaced out. Each event changes one SKU sold by both stores,
alternately a stock adjustment announced with ``current_inventory.product_updated`` and a sales
order created (``sales_order.created``).

Latency is measured at the BigCommerce simulator: the arrival time of the first successful
``PUT /v3/inventory/adjustments/absolute`` naming that SKU's item, minus the moment the event
was emitted. Both use ``time.monotonic()`` in the bench process (the simulator's clock).
"""

from __future__ import annotations

import asyncio
import random
import statistics
from dataclasses import dataclass, field

from bench.context import Context
from bench.loadgen import percentile
from bench.profiles import Quiet
from bench.report import Row, Target
from bench.systems import Baseline, Katsyncd, System
from bench.workload import QuietEvent, quiet_event
from bench.world import (
    SEED,
    Counts,
    Oracle,
    build_world,
    seed_levels,
    sold_everywhere,
    wait_katana_window,
)
from katsyncd.sim.world import World, WorldStore

NAME = "quiet"
ABSOLUTE = "/inventory/adjustments/absolute"


@dataclass
class QuietRun:
    latencies: dict[str, list[float]] = field(default_factory=dict)  # by event kind
    missing: int = 0
    counts: Counts | None = None

    def all(self) -> list[float]:
        return sorted(x for v in self.latencies.values() for x in v)


def write_latency(store: WorldStore, ev: QuietEvent) -> float | None:
    """Seconds from the event to the first accepted write of its SKU's item in ``store``."""
    keys = {
        ("product_id" if kind == "product" else "variant_id", ident)
        for kind, ident in store.sim.items_for_sku(ev.sku)
    }
    arrivals = [
        rec.at
        for rec in store.sim.request_log
        if rec.method == "PUT"
        and rec.path == ABSOLUTE
        and rec.status == 200
        and rec.at >= ev.emitted
        and _names(rec.body, keys, ev.sku)
    ]
    return min(arrivals) - ev.emitted if arrivals else None


def _names(body: object, keys: set[tuple[str, int]], sku: str) -> bool:
    items = body.get("items", []) if isinstance(body, dict) else []
    return any(it.get("sku") == sku or any(it.get(k) == v for k, v in keys) for it in items)


async def run(ctx: Context) -> list[Row]:
    p = ctx.profile.quiet
    sync = ctx.profile.sync.as_config()
    k = await _one(ctx, Katsyncd(ctx.pg, ctx.workdir, NAME, sync=sync), p)
    b = await _one(ctx, Baseline(ctx.workdir, NAME, rpm=p.katana_rpm), p)
    ctx.note(
        NAME,
        f"{p.events} events {p.spacing_seconds:g} s apart on {p.variants:,} variants, 2 stores "
        f"(latency samples = events x stores); katsyncd debounce "
        f"{ctx.profile.sync.debounce_seconds:g} s.",
    )
    return _rows(ctx, k, b)


def _candidates(world: World) -> list[str]:
    """SKUs sold in every store whose level is above 0 everywhere (so any change shows)."""
    out = []
    for sku in sold_everywhere(world):
        levels = [s.expected(world.katana, sku) or 0 for s in world.stores]
        if min(levels) > 0:
            out.append(sku)
    return out


async def _one(ctx: Context, system: System, p: Quiet) -> QuietRun:
    world = await build_world(
        p.variants, katana_rpm=p.katana_rpm, bc_quota=p.bc_quota, quirks=ctx.quirks
    )
    try:
        if isinstance(system, Baseline):
            seed_levels(world)
        await system.start(world)
        await system.warm_up(world, 120.0)
        await wait_katana_window(world, at_most=p.katana_rpm // 5)
        return await _events(ctx, world, system, p)
    finally:
        await system.stop()
        await world.stop()


async def _events(ctx: Context, world: World, system: System, p: Quiet) -> QuietRun:
    rng = random.Random(SEED)
    chosen = rng.sample(_candidates(world), p.events)
    before = Counts.take(world)
    ctx.say(NAME, f"{system.name}: {p.events} events, one every {p.spacing_seconds:g} s")
    events = []
    async with ctx.profiled(system, NAME):
        for i, sku in enumerate(chosen):
            kind = "stock" if i % 2 == 0 else "sales_order"
            events.append(quiet_event(world.katana, kind, sku, rng))
            await asyncio.sleep(p.spacing_seconds)
        await Oracle(world).wait(p.tail_seconds, poll=0.2)
    await asyncio.sleep(0.5)
    out = QuietRun(counts=Counts.take(world).since(before))
    for ev in events:
        for store in world.stores:
            lat = write_latency(store, ev)
            if lat is None:
                out.missing += 1
            else:
                out.latencies.setdefault(ev.kind, []).append(lat)
    p50 = _p(out.all(), 50)
    ctx.say(NAME, f"{system.name}: p50 {p50 or 0:.2f} s, missing {out.missing}")
    return out


def _p(values: list[float], q: float) -> float | None:
    return None if not values else percentile(sorted(values), q)


def _rows(ctx: Context, k: QuietRun, b: QuietRun) -> list[Row]:
    rows = [
        Row(
            NAME,
            "event → BigCommerce write, p50",
            "s",
            _p(k.all(), 50),
            _p(b.all(), 50),
            Target(0.3, unit=" s"),  # issue 10: the leading edge, not the debounce
        ),
        Row(
            NAME,
            "event → BigCommerce write, p99",
            "s",
            _p(k.all(), 99),
            _p(b.all(), 99),
            Target(1.0, unit=" s"),
        ),
    ]
    for kind, label in (("stock", "stock events"), ("sales_order", "sales-order events")):
        kl, bl = k.latencies.get(kind, []), b.latencies.get(kind, [])
        rows.append(Row(NAME, f"p50, {label} only", "s", _p(kl, 50), _p(bl, 50)))
        rows.append(Row(NAME, f"p99, {label} only", "s", _p(kl, 99), _p(bl, 99)))
    rows.append(Row(NAME, "events never written", "", k.missing, b.missing))
    if k.all() and b.all():
        rows.append(Row(NAME, "mean", "s", statistics.fmean(k.all()), statistics.fmean(b.all())))
    assert k.counts is not None and b.counts is not None
    rows.append(Row(NAME, "Katana requests", "", k.counts.katana, b.counts.katana))
    for store in sorted(k.counts.bc):
        rows.append(
            Row(
                NAME,
                f"BigCommerce requests, store {store}",
                "",
                k.counts.bc[store],
                b.counts.bc.get(store),
            )
        )
    return rows
