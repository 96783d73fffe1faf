"""SIGHUP reload: load → validate → diff → apply, live, without dropping a webhook."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from katsyncd.daemon import Daemon
from katsyncd.sim.world import World
from tests.support.harness import (
    converge,
    eventually,
    get_json,
    katana_signature,
    make_config_data,
    running_daemon,
    write_config,
)
from tests.support.pg import database_closed

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def world(world: World) -> World:
    a = world.katana.add_location("Main", is_primary=True)
    b = world.katana.add_location("Outlet")
    v = world.katana.add_product_variant("R-A", in_stock={a: 10, b: 5})
    world.katana.create_sales_order([(v, 2)], location_id=a)  # typed into Katana
    return world


def current_data(d: Daemon, world: World, db_url: str) -> dict[str, Any]:
    _, port = d.config.server.host_port
    return make_config_data(world, db_url, port)


async def reload_with(d: Daemon, path: Path, data: dict[str, Any]) -> bool:
    write_config(path, data)
    return await d.reload()


async def level_row(d: Daemon, column: str, expected: int) -> bool:
    """Store "main"'s level row for R-A has ``column == expected``."""
    value = await d.db.pool.fetchval(
        f"SELECT {column} FROM item_level WHERE store = 'main' AND sku = 'R-A'"
    )
    return bool(value == expected)


def gauge(d: Daemon, name: str) -> float:
    for metric in d.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(name)


async def test_store_settings_change_live(world: World, db_url: str, tmp_path: Path) -> None:
    store = world.add_store("main", ["R-A"])
    path = tmp_path / "katsyncd.toml"
    async with running_daemon(world, db_url, config_path=path) as d:
        await eventually(lambda: store.sim.level("R-A") == 13)  # 15 - 2 committed
        data = current_data(d, world, db_url)
        data["stores"][0]["quantity"] = "in_stock"
        assert await reload_with(d, path, data)
        await eventually(lambda: store.sim.level("R-A") == 15)
        data["stores"][0]["katana_locations"] = ["Outlet"]
        assert await reload_with(d, path, data)
        await eventually(lambda: store.sim.level("R-A") == 5)
        data["stores"][0].update(
            quantity="in_stock_minus_committed",
            katana_locations=[],
            katana_sales_orders_count=False,
        )
        assert await reload_with(d, path, data)
        await eventually(lambda: store.sim.level("R-A") == 15)  # the Katana-typed order ignored
        data["stores"][0]["katana_sales_orders_count"] = True
        data["stores"][0]["buffer"] = 3
        assert await reload_with(d, path, data)
        await eventually(lambda: store.sim.level("R-A") == 10)
        assert gauge(d, "katsyncd_config_last_reload_successful") == 1


async def test_switching_writes_off_dry_run_and_on(
    world: World, db_url: str, tmp_path: Path
) -> None:
    store = world.add_store("main", ["R-A"])
    path = tmp_path / "katsyncd.toml"
    async with running_daemon(world, db_url, config_path=path) as d:
        await eventually(lambda: store.sim.level("R-A") == 13)
        data = current_data(d, world, db_url)
        data["stores"][0]["stock_sync"] = False
        assert await reload_with(d, path, data)
        writes = len(store.sim.adjustments)
        world.katana.adjust_stock(world.katana.live_variant_for_sku("R-A") or 0, 1, 7)
        # The daemon has seen the change (the new desired level is recorded) and writes nothing.
        await eventually(lambda: level_row(d, "desired", 20))
        assert len(store.sim.adjustments) == writes and store.sim.level("R-A") == 13
        data["stores"][0].update(stock_sync=True, dry_run=True)
        assert await reload_with(d, path, data)
        # The writer is back and handled the level, as a dry run: recorded, not written.
        await eventually(lambda: level_row(d, "dry_run_recorded", 20))
        assert len(store.sim.adjustments) == writes
        data["stores"][0]["dry_run"] = False
        assert await reload_with(d, path, data)
        await eventually(lambda: store.sim.level("R-A") == 20)


async def test_add_and_remove_stores(world: World, db_url: str, tmp_path: Path) -> None:
    first = world.add_store("first", ["R-A"])
    path = tmp_path / "katsyncd.toml"
    async with running_daemon(world, db_url, config_path=path) as d:
        await eventually(lambda: first.sim.level("R-A") == 13)
        second = world.add_store("second", ["R-A"], settings={"quantity": "in_stock"})
        assert await reload_with(d, path, current_data(d, world, db_url))
        await eventually(lambda: second.sim.level("R-A") == 15)
        world.stores.remove(first)
        assert await reload_with(d, path, current_data(d, world, db_url))
        assert "first" not in d.stores
        world.katana.adjust_stock(world.katana.live_variant_for_sku("R-A") or 0, 1, 1)
        await eventually(lambda: second.sim.level("R-A") == 16)
        assert first.sim.level("R-A") == 13


async def test_sync_and_katana_settings_change_live(
    world: World, db_url: str, tmp_path: Path
) -> None:
    world.add_store("main", ["R-A"])
    path = tmp_path / "katsyncd.toml"
    async with running_daemon(world, db_url, config_path=path) as d:
        data = current_data(d, world, db_url)
        data["sync"].update(debounce_seconds=0.7, max_delay_seconds=4.0)
        data["katana"]["requests_per_minute"] = 123
        assert await reload_with(d, path, data)
        assert (d.variants.debounce, d.variants.max_delay) == (0.7, 4.0)
        assert d.katana_limiter.snapshot()["requests_per_minute"] == 123


async def test_invalid_file_keeps_old_config_and_listen_needs_restart(
    world: World, db_url: str, tmp_path: Path
) -> None:
    store = world.add_store("main", ["R-A"])
    path = tmp_path / "katsyncd.toml"
    async with running_daemon(world, db_url, config_path=path) as d:
        await eventually(lambda: store.sim.level("R-A") == 13)
        before = d.config
        path.write_text(path.read_text() + "\n[bogus]\nkey = 1\n")
        assert not await d.reload()
        assert d.config is before
        assert gauge(d, "katsyncd_config_last_reload_successful") == 0
        data = current_data(d, world, db_url)
        data["server"]["listen"] = "127.0.0.1:1"
        assert await reload_with(d, path, data)
        assert gauge(d, "katsyncd_config_last_reload_successful") == 1
        assert gauge(d, "katsyncd_config_last_reload_success_timestamp_seconds") > 0
        _, status = await get_json(d, "/status")
        assert status["restart_required"] == ["server.listen"]
        assert d.config.server.host_port != ("127.0.0.1", 1) or d.http_port != 1


async def test_reload_under_webhook_load_loses_nothing(
    world: World, db_url: str, tmp_path: Path
) -> None:
    world.katana.populate(60, locations=2, seed=5)
    skus = [f"KS-{i:05d}" for i in range(60)]
    world.add_store("main", skus)
    path = tmp_path / "katsyncd.toml"
    async with running_daemon(world, db_url, config_path=path) as d:
        await converge(world)
        url = f"http://127.0.0.1:{d.http_port}/webhooks/katana"
        ids = list(world.katana.variants)

        async def fire(session: aiohttp.ClientSession, i: int) -> int:
            vid = ids[i % len(ids)]
            world.katana.adjust_stock(vid, min(world.katana.locations), 1)
            body = json.dumps(
                {"action": "current_inventory.product_updated", "object": {"id": vid}}
            ).encode()
            headers = {"x-sha2-signature": katana_signature(body)}
            async with session.post(url, data=body, headers=headers) as r:
                return r.status

        async def reloads() -> None:
            for n in range(5):
                data = current_data(d, world, db_url)
                data["sync"]["debounce_seconds"] = 0.2 + n / 10
                assert await reload_with(d, path, data)
                await asyncio.sleep(0.05)  # the scenario: reloads spread among the webhooks

        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(reloads(), *(fire(session, i) for i in range(300)))
        assert all(code == 200 for code in results[1:])
        await converge(world, 30)


async def test_rule_change_during_postgres_outage_is_applied_after_recovery(
    world: World, db_url: str, tmp_path: Path
) -> None:
    """Finding 1: buffer 3 → 5 reloaded while Postgres is down. The recompute cannot mark the
    store's variants then; it stays pending (metric 0, /status says so) and is retried until
    it succeeds, so the new rule reaches the store without a second SIGHUP."""
    store = world.add_store("main", ["R-A"])
    path = tmp_path / "katsyncd.toml"
    async with running_daemon(world, db_url, config_path=path) as d:
        await eventually(lambda: store.sim.level("R-A") == 13)
        data = current_data(d, world, db_url)
        data["stores"][0]["buffer"] = 5
        async with database_closed(db_url):
            assert await reload_with(d, path, data)  # the file is good: it is in force
            assert d.config.store("main").buffer == 5
            assert gauge(d, "katsyncd_config_last_reload_successful") == 0
            assert gauge(d, "katsyncd_config_reload_pending_stores") == 1
        await eventually(lambda: store.sim.level("R-A") == 8, 30)  # 13 - 5
        assert gauge(d, "katsyncd_config_last_reload_successful") == 1
        assert gauge(d, "katsyncd_config_reload_pending_stores") == 0
        _, status = await get_json(d, "/status")
        assert status["reload"]["result"] == "applied"
        assert status["reload"]["pending_recompute"] == []


async def test_deeply_nested_file_on_reload_keeps_the_daemon_running(
    world: World, db_url: str, tmp_path: Path
) -> None:
    """Finding 4: a RecursionError escaped reload() and stopped the daemon (exit 1)."""
    store = world.add_store("main", ["R-A"])
    path = tmp_path / "katsyncd.toml"
    async with running_daemon(world, db_url, config_path=path) as d:
        await eventually(lambda: store.sim.level("R-A") == 13)
        before = d.config
        path.write_text(path.read_text() + "[extra]\nlevel = " + "[" * 5000 + "]" * 5000 + "\n")
        assert not await d.reload()
        assert d.config is before and not d.stop_event.is_set()
        assert d.life.reload.result == "failed"
        assert d.life.reload.problems == [
            f"{path}: invalid TOML (arrays or inline tables nested more than 32 levels deep)"
        ]
        assert gauge(d, "katsyncd_config_last_reload_successful") == 0
