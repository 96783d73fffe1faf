"""A world and a running daemon with the status pages on (issue 13): the integration and
browser tests share them."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from katsyncd.config import load_config
from katsyncd.daemon import Daemon
from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.sim.world import World, WorldStore, free_port
from tests.support.harness import eventually, make_config_data, write_config

XSS_SKU = "<script>alert(1)</script>"
TOKEN = "ui-token-0123456789abcdef0123"


@dataclass
class UiWorld:
    """Two stores over two Katana locations, with the rule cases the SKU page explains."""

    world: World
    main: WorldStore  # counts both locations
    east: WorldStore  # counts only "East" (S12), ignores orders typed into Katana (S5)
    s8_winner: int
    s8_loser: int
    s7_items: int  # items with the S7 SKU in "main"
    s12: int  # the S12 variant (stock at both locations)
    east_location: int


def build_world(world: World) -> UiWorld:
    k = world.katana
    west = k.add_location("West", is_primary=True)
    east = k.add_location("East")
    now = datetime.now(UTC)
    # S12: stock at both locations; S4/S5: an order from the shop and one typed into Katana.
    v = k.add_product_variant("S12-A", in_stock={west: 10, east: 50})
    k.create_sales_order([(v, 4)], location_id=east, ecommerce_order_type="bigCommerce")
    k.create_sales_order([(v, 6)], location_id=east)
    # S8: two live variants with one SKU; the one created later wins.
    loser = k.add_product_variant("S8-A", in_stock={west: 1}, created_at=now - timedelta(days=9))
    winner = k.add_product_variant("S8-A", in_stock={west: 7}, created_at=now)
    k.add_product_variant("S7-A", in_stock={west: 8})
    k.add_product_variant(XSS_SKU, in_stock={west: 3})
    k.add_product_variant("KATANA-ONLY", in_stock={west: 2})
    skus = ["S12-A", "S8-A", "S7-A", XSS_SKU]
    main = world.add_store("main", skus, settings={"buffer": 1})
    main.sim.add_product("Same SKU again", "S7-A", tracking="product")
    main.sim.add_product("Group", "S7-G", tracking="variant", variant_skus=["S7-A"])
    main.sim.add_product("Only here", "BC-ONLY", tracking="product", inventory_level=5)
    east_store = world.add_store(
        "east",
        ["S12-A", "S8-A"],
        settings={"katana_locations": ["East"], "katana_sales_orders_count": False},
    )
    return UiWorld(world, main, east_store, winner, loser, 3, v, east)


def ui_config(
    world: World, db_url: str, path: Path, *, host: str = "127.0.0.1", **server: Any
) -> Path:
    data = make_config_data(world, db_url, free_port())
    listen = data["server"]["listen"].replace("127.0.0.1", host)
    data["server"] = {"listen": listen, "ui": True, **server}
    return write_config(path, data)


def token_file(tmp: Path) -> Path:
    path = tmp / "status-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def basic(password: str, user: str = "shop") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@asynccontextmanager
async def running(path: Path, *, subscribe: World | None = None) -> AsyncIterator[Daemon]:
    """The daemon in this process from the config at ``path``, ready (and subscribed to the
    world's webhooks when given)."""
    daemon = Daemon(load_config(path), config_path=path)
    task = asyncio.create_task(daemon.run(install_signals=False))
    await eventually(lambda: daemon.ready or task.done(), 30)
    if task.done():
        task.result()
    if subscribe is not None and daemon.http_port is not None:
        subscribe.subscribe(daemon.http_port, SUBSCRIBED_EVENTS)
    try:
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
