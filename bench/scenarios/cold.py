"""cold: a first start on a big account. ``variants`` Katana variants, two stores, empty state.

katsyncd starts with an empty database and runs until every store is right. The baseline does
the cold start such integrations have (``--initial-sync``): it reads the whole ``/inventory``
and then writes every SKU to every store, one lookup and one write per SKU.

At 60 requests a minute a cold start takes many minutes, so the Katana simulator (and
katsyncd's configured rate) is raised and the Katana part is reported as the time it takes at
60/min = requests / 60 minutes. The floor is ceil(inventory rows / 250): reading every
inventory row once, 250 to a page. The baseline's per-SKU BigCommerce phase is measured on its
first ``baseline_max_skus`` SKUs and extrapolated linearly (it costs the same for every SKU).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from bench.context import Context
from bench.profiles import BC_QUOTA, BC_WINDOW_MS, KATANA_RPM, Cold
from bench.report import Row
from bench.systems import Baseline, Katsyncd
from bench.world import Counts, Oracle, build_world, katana_by_endpoint
from katsyncd.sim.world import World

NAME = "cold"
WRITE_PATH = "/inventory/adjustments/absolute"
BASELINE_BC_QUOTA = 1_000_000  # the baseline's BigCommerce phase runs unthrottled, then scaled
KATANA_PAGE_ROWS = 250


@dataclass
class ColdRun:
    wall: float | None = None
    counts: Counts | None = None
    bc_full: dict[str, float] = field(default_factory=dict)  # extrapolated to every SKU
    endpoints: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    right: float = 0.0
    first_write: float | None = None  # seconds after start: the first BigCommerce stock write
    last_inventory: float | None = None  # ... and the last Katana /inventory page
    peak_mib: float | None = None  # the process's VmHWM at the end

    @property
    def floor(self) -> int:
        return math.ceil(self.rows / KATANA_PAGE_ROWS)

    def katana_minutes(self) -> float | None:
        return None if self.counts is None else self.counts.katana / KATANA_RPM

    def bc_minutes(self) -> float | None:
        per_second = BC_QUOTA / (BC_WINDOW_MS / 1000)
        return max(self.bc_full.values()) / per_second / 60 if self.bc_full else None


async def run(ctx: Context) -> list[Row]:
    p = ctx.profile.cold
    k = await _katsyncd(ctx, p)
    b = await _baseline(ctx, p)
    _notes(ctx, p, k, b)
    return _rows(p, k, b)


async def _katsyncd(ctx: Context, p: Cold) -> ColdRun:
    world = await build_world(
        p.variants, katana_rpm=p.katana_rpm, bc_quota=p.bc_quota, quirks=ctx.quirks
    )
    system = Katsyncd(
        ctx.pg, ctx.workdir, NAME, sync=ctx.profile.sync.as_config(), rpm=p.katana_rpm
    )
    out = ColdRun(rows=len(world.katana.inventory_keys()))
    try:
        ctx.say(NAME, f"katsyncd: cold start on {p.variants:,} variants")
        await system.start(world)
        oracle = Oracle(world)
        took = await oracle.wait(p.cap_seconds, poll=1.0)
        out.wall = None if took is None else time.monotonic() - system.started_at
        out.counts = Counts.take(world)
        out.bc_full = {k: float(v) for k, v in out.counts.bc.items()}
        out.endpoints = katana_by_endpoint(world)
        out.right = oracle.fraction_right()
        _timings(world, system.started_at, out)
        out.peak_mib = _peak_mib(system)
        ctx.say(NAME, f"katsyncd: right after {out.wall or 0:.1f} s, Katana {out.counts.katana}")
        return out
    finally:
        await system.stop()
        await world.stop()


async def _baseline(ctx: Context, p: Cold) -> ColdRun:
    world = await build_world(
        p.variants, katana_rpm=p.katana_rpm, bc_quota=BASELINE_BC_QUOTA, quirks=ctx.quirks
    )
    system = Baseline(
        ctx.workdir,
        NAME,
        rpm=p.katana_rpm,
        initial_sync=True,
        initial_sync_max_skus=p.baseline_max_skus,
    )
    out = ColdRun(rows=len(world.katana.inventory_keys()))
    try:
        ctx.say(NAME, f"baseline: initial sync, BigCommerce part on {p.baseline_max_skus:,} SKUs")
        await system.start(world, subscribe=False)
        await system.wait_initial_sync(p.cap_seconds)
        out.wall = time.monotonic() - system.started_at
        out.counts = Counts.take(world)
        out.bc_full = _extrapolate(world, out.counts, (await system.status())["initial_skus"])
        out.endpoints = katana_by_endpoint(world)
        _timings(world, system.started_at, out)
        out.peak_mib = _peak_mib(system)
        return out
    finally:
        await system.stop()
        await world.stop()


def _timings(world: World, started: float, out: ColdRun) -> None:
    """When the first BigCommerce stock write and the last Katana /inventory page arrived."""
    writes = [
        r.at
        for store in world.stores
        for r in store.sim.request_log
        if r.method == "PUT" and r.path == WRITE_PATH and r.status < 300
    ]
    # The Katana simulator stamps requests with the wall clock, BigCommerce's with monotonic.
    wall = time.time() - time.monotonic()
    pages = [r.at for r in world.katana.request_log if r.path == "/inventory" and r.status < 300]
    out.first_write = min(writes) - started if writes else None
    out.last_inventory = max(pages) - wall - started if pages else None


def _peak_mib(system: Katsyncd | Baseline) -> float | None:
    if system.proc is None:
        return None
    hwm = system.proc.status_kib("VmHWM")
    return None if hwm is None else hwm / 1024


def _extrapolate(world: World, counts: Counts, done_skus: int) -> dict[str, float]:
    """Per-store requests for ``done_skus`` SKUs, scaled to every Katana SKU."""
    total = sum(1 for v in world.katana.variants.values() if v.type == "product" and v.sku)
    scale = total / max(1, done_skus)
    return {name: n * scale for name, n in counts.bc.items()}


def _rows(p: Cold, k: ColdRun, b: ColdRun) -> list[Row]:
    assert k.counts is not None and b.counts is not None
    rows = [
        Row(NAME, "Katana requests", "", k.counts.katana, b.counts.katana, note=f"floor {k.floor}"),
        Row(
            NAME,
            "Katana requests ÷ floor ceil(rows/250)",
            "x",
            k.counts.katana / k.floor,
            b.counts.katana / b.floor,
        ),
        Row(NAME, "Katana time at 60/min", "min", k.katana_minutes(), b.katana_minutes()),
    ]
    for store in sorted(k.bc_full):
        rows.append(
            Row(
                NAME,
                f"BigCommerce requests, store {store}",
                "",
                k.bc_full[store],
                b.bc_full.get(store),
                baseline_note="extrapolated",
            )
        )
    rows += [
        Row(NAME, "BigCommerce time at 150/30 s", "min", k.bc_minutes(), b.bc_minutes()),
        Row(
            NAME,
            "wall time (Katana quota raised)",
            "s",
            k.wall,
            b.wall,
            note="" if k.wall is not None else f"not right within {p.cap_seconds:g} s",
            baseline_note=f"{p.baseline_max_skus:,} SKUs written",
        ),
        Row(
            NAME,
            "first BigCommerce write, after start",
            "s",
            k.first_write,
            b.first_write,
            note=_before_last_page(k),
        ),
        Row(
            NAME,
            "last Katana /inventory page, after start",
            "s",
            k.last_inventory,
            b.last_inventory,
        ),
        Row(NAME, "process peak RSS (VmHWM)", "MiB", k.peak_mib, b.peak_mib),
        Row(
            NAME,
            "SKUs right at the end",
            "%",
            100 * k.right,
            None,
            baseline_note="partial by design",
        ),
    ]
    return rows


def _before_last_page(run: ColdRun) -> str:
    if run.first_write is None or run.last_inventory is None:
        return ""
    return "before the last page" if run.first_write < run.last_inventory else "after the last page"


def _notes(ctx: Context, p: Cold, k: ColdRun, b: ColdRun) -> None:
    ctx.note(
        NAME,
        f"{p.variants:,} product variants ({k.rows:,} inventory rows incl. materials, floor "
        f"{k.floor}); Katana simulator and katsyncd at {p.katana_rpm}/min, minutes at 60/min "
        f"= requests / 60; katsyncd's stores at {p.bc_quota}/30 s; the baseline's "
        f"BigCommerce phase ran on its first {p.baseline_max_skus:,} SKUs, unthrottled, and is "
        "scaled to every SKU.",
    )
    ctx.note(NAME, f"katsyncd Katana requests by endpoint: {k.endpoints}")
    ctx.note(NAME, f"baseline Katana requests by endpoint: {b.endpoints}")
