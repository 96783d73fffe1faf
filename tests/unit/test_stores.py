"""The store registry in memory: rules resolved against Katana's locations, the settings the
writer reads through it, and a reload applied per store. Nothing here opens a connection."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from katsyncd.config import StoreConfig
from katsyncd.db import Database
from katsyncd.metrics import Metrics
from katsyncd.models import KatanaLocation
from katsyncd.stores import StoreRegistry, store_rules

MAIN, BACK = KatanaLocation(1, "Main"), KatanaLocation(2, "Back")


def store(**over: Any) -> StoreConfig:
    data: dict[str, Any] = {"name": "shop", "store_hash": "abc", "access_token": "t", **over}
    return StoreConfig.model_validate(data)


async def no_marks(ids: Collection[int], reason: str) -> None:
    raise AssertionError("nothing is marked here")


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[StoreRegistry]:
    async with aiohttp.ClientSession() as session:
        db = Database("postgresql://unused", state_dir=tmp_path)  # never opened
        yield StoreRegistry(session, db, Metrics(), recheck=no_marks, rng=random.Random(0))


def test_rules_count_nothing_until_katana_locations_are_known() -> None:
    sc = store(katana_locations=["Main"])
    assert store_rules(sc, []).locations == frozenset()
    assert store_rules(sc, [MAIN, BACK]).locations == frozenset({1})
    assert store_rules(store(), []).locations is None  # no filter: every location


async def test_locations_read_resolve_every_store_and_name_the_unknown(
    registry: StoreRegistry,
) -> None:
    rt = registry.add(store(katana_locations=["Main", "Gone"]))
    assert rt.view.rules.locations == frozenset()
    registry.set_locations([MAIN, BACK])
    assert rt.view.rules.locations == frozenset({1})
    assert rt.unmatched_locations == ["Gone"]


async def test_writer_settings_follow_the_registry(registry: StoreRegistry) -> None:
    rt = registry.add(store(oversell_guard=True, increase_delay_seconds=5.0))
    assert registry.guard_delay("shop") == 5.0
    rt.config = store(dry_run=True)
    assert registry.guard_delay("shop") is None
    assert rt.writer._dry_run()
    assert registry.guard_delay("removed") is None


async def test_catalogs_pending_until_every_store_refreshed_once(registry: StoreRegistry) -> None:
    a = registry.add(store(name="a"))
    b = registry.add(store(name="b"))
    assert registry.catalogs_pending()
    a.catalog_refreshed_at = b.catalog_refreshed_at = 1.0
    assert not registry.catalogs_pending()


async def test_writers_start_only_under_a_supervisor(registry: StoreRegistry) -> None:
    rt = registry.add(store())
    registry.start_writer(rt)  # a one-shot command: no task group, no writer
    assert rt.task is None
    started: list[str] = []

    def spawn(name: str, fn: Any) -> asyncio.Task[None]:
        started.append(name)
        return asyncio.get_running_loop().create_task(asyncio.sleep(0))

    registry.spawn = spawn
    registry.start_writer(rt)
    registry.start_writer(registry.add(store(name="off", stock_sync=False)))
    assert started == ["writer:shop"]
    assert rt.task is not None
    await rt.task


async def test_reload_keeps_the_runtime_unless_the_connection_changed(
    registry: StoreRegistry,
) -> None:
    old = registry.add(store(location_id=1))
    registry.reconfigure("shop", store(location_id=7), old.config)
    assert registry.by_name["shop"] is old
    assert old.view.location_id == 7
    assert old.view.wake.is_set()
    registry.reconfigure("shop", store(location_id=7, store_hash="other"), old.config)
    fresh = registry.by_name["shop"]
    assert fresh is not old
    assert old.stop.is_set()  # the old writer stops; the new one has its own client
    assert fresh.client is not old.client


async def test_removing_a_store_stops_its_writer(registry: StoreRegistry) -> None:
    rt = registry.add(store())
    registry.remove("shop")
    assert rt.stop.is_set()
    assert "shop" not in registry.by_name


async def test_rules_recompute_stays_pending_until_it_is_marked(
    registry: StoreRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postgres unavailable: the store stays pending (and is named), a store removed
    meanwhile is dropped, and a later attempt with Postgres back clears it."""
    registry.add(store())
    registry.add(store(name="other", store_hash="def"))
    marked: list[str] = []
    down = True

    async def recompute(name: str) -> None:
        if down:
            raise OSError("connection refused")
        marked.append(name)

    monkeypatch.setattr(registry, "recompute", recompute)
    assert await registry.recompute_pending(["shop", "other", "unknown"]) == ["other", "shop"]
    assert await registry.recompute_pending() == ["other", "shop"]  # a retry, nothing new
    registry.remove("other")
    down = False
    assert await registry.recompute_pending() == []
    assert marked == ["shop"]
