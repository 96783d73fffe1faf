"""Issue 10: leading edge, the inventory kept for commitment-only changes, max_share.
The real daemon in-process, real Postgres, real HTTP to the simulators.

The debounce here is 30 s (max_delay 60 s): a level right within 15 s can only come from a
leading-edge read, with no timing assertion that could flake."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from katsyncd.sim.quirks import Quirks
from katsyncd.sim.world import World
from tests.support.harness import (
    eventually,
    get_json,
    metric,
    running_daemon,
    settled,
    start_world,
)

pytestmark = pytest.mark.timeout(90)
SLOW = {"debounce_seconds": 30.0, "max_delay_seconds": 60.0}
STOCK = "current_inventory.product_updated"


@pytest.fixture
async def world(quirks: Quirks) -> AsyncIterator[World]:
    w = await start_world(quirks)
    yield w
    await w.stop()


def inventory_reads(world: World) -> int:
    return world.katana.request_count("/inventory")


async def test_a_lone_stock_change_is_read_on_its_leading_edge(world: World, db_url: str) -> None:
    k = world.katana
    a = k.add_location("Main", is_primary=True)
    v = k.add_product_variant("LE-1", in_stock={a: 5})
    store = world.add_store("main", ["LE-1"])
    async with running_daemon(world, db_url, **SLOW):
        await eventually(lambda: store.sim.level("LE-1") == 5, 70)
        k.adjust_stock(v, a, 3)
        k.emit(STOCK, v)
        await eventually(lambda: store.sim.level("LE-1") == 8)  # well inside the 30 s debounce


async def test_a_new_sales_order_is_recomputed_from_the_kept_inventory(
    world: World, db_url: str
) -> None:
    k = world.katana
    a = k.add_location("Main", is_primary=True)
    v = k.add_product_variant("SO-1", in_stock={a: 10})
    store = world.add_store("main", ["SO-1"])
    async with running_daemon(world, db_url, **SLOW) as d:
        await eventually(lambda: store.sim.level("SO-1") == 10, 70)
        reads = inventory_reads(world)
        k.create_sales_order([(v, 4)], location_id=a, ecommerce_order_type="bigCommerce")
        await eventually(lambda: store.sim.level("SO-1") == 6)  # leading edge, no debounce
        assert inventory_reads(world) == reads  # committed stock comes from the mirror (S4)
        assert metric(d, "katsyncd_inventory_cache_hits_total") >= 1


async def test_an_unannounced_stock_change_is_not_hidden_by_the_kept_inventory(
    world: World, db_url: str
) -> None:
    k = world.katana
    a = k.add_location("Main", is_primary=True)
    v = k.add_product_variant("SO-2", in_stock={a: 10})
    store = world.add_store("main", ["SO-2"])
    async with running_daemon(world, db_url, **SLOW):
        await eventually(lambda: store.sim.level("SO-2") == 10, 70)
        k.adjust_stock(v, a, 5)  # no webhook: only the movements poll tells
        await eventually(lambda: store.sim.level("SO-2") == 15)
        k.adjust_stock(v, a, 1)  # again unannounced, and a sales order at once
        reads = inventory_reads(world)
        k.create_sales_order([(v, 2)], location_id=a, ecommerce_order_type="bigCommerce")
        await eventually(lambda: store.sim.level("SO-2") == 14)  # 16 in stock - 2
        assert inventory_reads(world) > reads


async def test_a_packed_order_reads_inventory_its_stock_moved(world: World, db_url: str) -> None:
    k = world.katana
    a = k.add_location("Main", is_primary=True)
    v = k.add_product_variant("SO-3", in_stock={a: 10})
    store = world.add_store("main", ["SO-3"])
    quiet_polls = {**SLOW, "poll_interval_seconds": 120.0}  # no movements poll to fix it
    async with running_daemon(world, db_url, **quiet_polls) as d:
        await eventually(lambda: store.sim.level("SO-3") == 10, 70)
        so = k.create_sales_order([(v, 4)], location_id=a, ecommerce_order_type="bigCommerce")
        await eventually(lambda: store.sim.level("SO-3") == 6)
        reads = inventory_reads(world)
        k.set_sales_order_status(so, "PACKED")  # 6 in stock, nothing committed: still 6
        await eventually(lambda: inventory_reads(world) > reads)
        await eventually(lambda: settled(d))
        assert store.sim.level("SO-3") == 6  # the kept 10 in stock would have made it 10


async def test_max_share_shows_in_status_and_metrics_and_reloads(
    world: World, db_url: str, tmp_path: object
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    k = world.katana
    a = k.add_location("Main", is_primary=True)
    k.add_product_variant("MS-1", in_stock={a: 1})
    world.add_store("main", ["MS-1"])
    path = tmp_path / "katsyncd.toml"
    async with running_daemon(world, db_url, config_path=path) as d:
        _, doc = await get_json(d, "/status")
        budget = doc["katana"]["budget"]
        assert budget["max_share"] == 0.8
        assert budget["requests_per_minute"] == int(budget["account_requests_per_minute"] * 0.8)
        text = path.read_text().replace("[katana]\n", "[katana]\nmax_share = 0.5\n", 1)
        path.write_text(text)
        assert await d.reload()
        await eventually(lambda: d.katana_limiter.snapshot()["max_share"] == 0.5)
        await eventually(lambda: metric(d, "katsyncd_katana_max_share") == 0.5)
        snap = d.katana_limiter.snapshot()
        assert snap["requests_per_minute"] == int(snap["account_requests_per_minute"] * 0.5)
