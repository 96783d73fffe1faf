"""The simulated world of ``katsyncd demo``: two stores with different settings over one Katana
catalogue, and a stream of random Katana activity."""

from __future__ import annotations

import asyncio
import contextlib
import random

from katsyncd.sim.world import World


def build_world_stores(world: World, n_products: int) -> None:
    """Store "main" sells 90 % of the catalogue as simple products (plus one SKU Katana does not
    have); store "outlet" sells every other SKU as variants, counts only the first warehouse,
    ignores orders typed into Katana and holds 2 units back."""
    skus = [f"KS-{i:05d}" for i in range(n_products)]
    main = world.add_store(
        "main", skus[: int(n_products * 0.9)], settings={"quantity": "in_stock_minus_committed"}
    )
    main.sim.add_product("Only in BigCommerce", "BC-ONLY-1", tracking="product")
    first = world.katana.locations[min(world.katana.locations)].name
    world.add_store(
        "outlet",
        skus[::2],
        tracking="variant",
        settings={
            "quantity": "in_stock",
            "katana_sales_orders_count": False,
            "buffer": 2,
            "katana_locations": [first],
        },
    )


async def activity(world: World, rate: float, stop: asyncio.Event, counter: list[int]) -> None:
    """Random Katana changes, ``rate`` a second, until ``stop``; ``counter[0]`` counts them."""
    rng = random.Random(11)
    while not stop.is_set():
        world.katana.random_activity(rng)
        counter[0] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0 / rate)
