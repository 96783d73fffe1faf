"""Event → BigCommerce latency of ``current_inventory.*`` webhooks, by what their ``object``
names (issue 8).

``python -m bench.inventory_shapes [--runs 3] [--events 10] [--variants 200]
[--shapes variant,product] [--database-url URL]``

Each run starts a fresh world (Katana simulator with ``inventory_event_shape`` set, one
BigCommerce store selling every SKU), runs katsyncd in this process with the default sync
settings (debounce 2 s, max delay 10 s, polls every 30 s) and, once the initial sync is done,
makes ``--events`` stock adjustments, one at a time. Katana sends no webhook for an
adjustment, so each is followed by ``current_inventory.product_updated`` (the shape under
test) and nothing else. Latency is the first accepted BigCommerce write naming the SKU minus
the moment the event was emitted (both ``time.monotonic()`` in this process). Prints, per
shape, each run's p50 and the median, min and max of those p50s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Sequence

from bench.pg import PgServer
from bench.scenarios.quiet import write_latency
from bench.workload import QuietEvent
from katsyncd.config import build_config
from katsyncd.daemon import Daemon
from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.logsetup import configure as configure_logs
from katsyncd.sim.quirks import InventoryEventShape, KatanaQuirks, Quirks
from katsyncd.sim.world import World, free_port

EVENT = "current_inventory.product_updated"
WAIT_LIMIT_SECONDS = 90.0  # per event; longer than any poll interval


async def _until(check: object, limit: float) -> bool:
    assert callable(check)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return bool(check())


async def one_run(
    pg: PgServer, shape: InventoryEventShape, *, variants: int, events: int, seed: int
) -> list[float]:
    """Latencies (seconds) of ``events`` stock events in this shape; a miss is ``inf``."""
    world = await World.start(quirks=Quirks(katana=KatanaQuirks(inventory_event_shape=shape)))
    db_url = await pg.create_database(f"shape_{shape}")
    try:
        k = world.katana
        ids = k.populate(variants, locations=2, seed=seed)
        skus = {vid: k.variants[vid].sku for vid in ids}
        store = world.add_store("main", [s for s in skus.values() if s])
        port = free_port()
        data = world.config_data(port=port, database={"url": db_url})
        daemon = Daemon(build_config(data, source="<bench>"))
        task = asyncio.create_task(daemon.run(install_signals=False))
        try:
            if not await _until(lambda: daemon.ready or task.done(), 60):
                raise RuntimeError("katsyncd did not become ready")
            world.subscribe(port, SUBSCRIBED_EVENTS)
            if not await _until(world.converged, 180):
                raise RuntimeError(f"initial sync incomplete: {world.wrong()}")
            rng = random.Random(seed)
            primary = min(k.locations)
            out: list[float] = []
            for _ in range(events):
                vid = rng.choice(ids)
                sku = skus[vid]
                assert sku is not None
                k.adjust_stock(vid, primary, rng.choice((-2, -1, 3, 5)))
                ev = QuietEvent("stock", sku, vid, time.monotonic())
                k.emit(EVENT, vid)
                done = await _until(lambda: not store.wrong(k), WAIT_LIMIT_SECONDS)
                took = write_latency(store, ev) if done else None
                out.append(float("inf") if took is None else took)
            return out
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 60)
    finally:
        await world.stop()
        await pg.drop_database(db_url)


async def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.inventory_shapes", description=__doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--events", type=int, default=10)
    p.add_argument("--variants", type=int, default=200)
    p.add_argument("--shapes", default="variant,product")
    p.add_argument("--database-url")
    args = p.parse_args(argv)
    configure_logs("warning")
    shapes: list[InventoryEventShape] = []
    for s in args.shapes.split(","):
        if s not in ("variant", "product", "no_href"):
            p.error(f"unknown shape {s!r}")
        shapes.append(s)
    async with PgServer(args.database_url) as pg:
        for shape in shapes:
            p50s = []
            for run in range(args.runs):
                lat = await one_run(pg, shape, variants=args.variants, events=args.events, seed=run)
                p50 = statistics.median(lat)
                p50s.append(p50)
                misses = sum(1 for x in lat if x == float("inf"))
                print(
                    f"{shape:8} run {run + 1}: p50 {p50:.2f} s  max {max(lat):.2f} s  "
                    f"({len(lat)} events, {misses} not written within {WAIT_LIMIT_SECONDS:g} s)",
                    flush=True,
                )
            print(
                f"{shape:8} p50 over {args.runs} runs: median {statistics.median(p50s):.2f} s, "
                f"min {min(p50s):.2f} s, max {max(p50s):.2f} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
