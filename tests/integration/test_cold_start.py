"""The cold start: one ``/inventory?extend=variant`` sweep (a stream per location) builds the
variant mirror and the first levels (``katsyncd/coldstart.py``), against the Katana simulator
playing both readings of what the spec leaves loose (row order within a location, ``extend``
with a ``location_id`` filter): the pessimistic reading abandons the sweep and falls back to
the ``/variants`` sweep, and every store still ends right."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from katsyncd.coldstart import ColdSweep
from katsyncd.db import Database
from katsyncd.engine import Engine
from katsyncd.katana import KatanaClient
from katsyncd.metrics import Metrics
from katsyncd.persistence import marks as stored
from katsyncd.persistence import mirror
from katsyncd.ratelimit import KatanaLimiter
from katsyncd.sim.katana import KatanaSim
from katsyncd.sim.quirks import KatanaQuirks, Quirks
from katsyncd.sim.world import World
from tests.support.harness import converge, running_daemon, start_world

pytestmark = pytest.mark.timeout(120)

VARIANTS = 1200  # about 6 pages a location


def by_endpoint(sim: KatanaSim) -> Counter[str]:
    return Counter(r.path for r in sim.request_log)


def rows_per_location(sim: KatanaSim) -> Counter[int]:
    return Counter(loc for loc, _ in sim.inventory_keys())


@pytest.fixture
async def world(quirks: Quirks) -> AsyncIterator[World]:
    w = await start_world(quirks)
    yield w
    await w.stop()


async def test_a_cold_start_reads_the_inventory_once_and_every_store_ends_right(
    world: World, db_url: str, quirks: Quirks
) -> None:
    k = world.katana
    ids = k.populate(VARIANTS, locations=2)
    skus = [k.variants[i].sku or "" for i in ids]
    # S8 across pages: a newer variant of an early SKU, created after the rest
    loc = min(k.locations)
    k.add_product_variant(skus[3], in_stock={loc: 3})
    world.add_store("a", skus)
    world.add_store("b", skus[::2], tracking="variant")
    async with running_daemon(world, db_url, subscribe=False):
        await converge(world, 60)
        calls = by_endpoint(k)
    floor_per_stream = sum(math.ceil(n / 250) for n in rows_per_location(k).values())
    if not quirks.pessimistic:
        assert calls["/inventory"] == floor_per_stream  # one pass, no second sweep
        assert calls["/variants"] == 1  # the count check, no /variants sweep
    else:  # the sweep is abandoned on its first page: /variants sweep, then /inventory
        assert calls["/variants"] >= math.ceil(VARIANTS / 250)
        assert calls["/inventory"] >= 2


async def test_a_variant_without_inventory_rows_is_found_by_the_count_check(
    world: World, db_url: str
) -> None:
    k = world.katana
    loc = k.add_location("Main", is_primary=True)
    ago = datetime.now(UTC) - timedelta(minutes=5)  # before the sweep: the count covers them
    old = k.add_product_variant("NR-1", in_stock={loc: 5}, created_at=ago)
    k.add_product_variant("NR-2", in_stock={loc: 4}, created_at=ago)
    # the S8 winner of NR-1 has no inventory row anywhere: its level is 0, not 5
    parent = k.variants[old].parent_id
    k.add_product_variant("NR-1", product_id=parent, created_at=ago + timedelta(seconds=1))
    world.add_store("main", ["NR-1", "NR-2"])
    async with running_daemon(world, db_url, subscribe=False):
        await converge(world, 30)
    assert by_endpoint(k)["/variants"] >= 2  # the count, then the /variants sweep


class Killed(Exception):
    """The process died here (kill -9): nothing after this point happened."""


class DyingEngine(Engine):
    """Dies at the level record, after the cold sweep's mirror write committed."""

    async def record(self, *args: Any, **kwargs: Any) -> int:
        raise Killed


async def test_a_cold_sweep_killed_after_its_mirror_write_leaves_every_variant_marked(
    db_url: str,
) -> None:
    sim = KatanaSim(requests_per_minute=6000, webhook_retry_delays=())
    await sim.start()
    db = Database(db_url)
    await db.open()
    try:
        loc = sim.add_location("Main")
        ids = [sim.add_product_variant(f"CK-{i}", in_stock={loc: i}) for i in range(300)]
        async with aiohttp.ClientSession() as session:
            katana = KatanaClient(session, sim.base_url, sim.api_key, KatanaLimiter(6000))
            timed: list[int] = []

            def sweep(engine: Engine) -> ColdSweep:
                return ColdSweep(
                    db,
                    katana,
                    engine,
                    locations=lambda: [loc],
                    catalogs_awaited=lambda: False,
                    catalog_refreshed=asyncio.Event(),
                    timed=timed.extend,
                )

            with pytest.raises(Killed):
                await sweep(DyingEngine(db, katana, Metrics(), stores=list)).run()
            mirrored = {v.id for v in await mirror.variants_by_ids(db.pool, ids)}
            marked = {v for v, _ in await stored.stale_variants(db.pool)}
            assert mirrored and mirrored <= marked  # the mirror write and its marks: one tx

            # the restarted process sweeps again: levels recorded, every mark cleared
            result = await sweep(Engine(db, katana, Metrics(), stores=list)).run()
            assert result is not None and result.complete
            assert await stored.stale_variants(db.pool) == []
    finally:
        await db.close()
        await sim.stop()


@pytest.mark.parametrize(
    ("quirk", "locations"),
    [
        (KatanaQuirks(inventory_order="newest_first"), 1),  # the unfiltered read
        (KatanaQuirks(inventory_order="newest_first"), 2),
        (KatanaQuirks(inventory_extend_with_location=False), 2),
        (KatanaQuirks(inventory_extend_with_location=False), 1),  # no filter: not affected
    ],
    ids=["newest-first-1loc", "newest-first-2loc", "no-extend-with-location", "1loc-unfiltered"],
)
async def test_each_loose_reading_alone_falls_back_only_when_it_must(
    db_url: str, quirk: KatanaQuirks, locations: int
) -> None:
    world = await start_world(Quirks(katana=quirk))
    try:
        k = world.katana
        ids = k.populate(600, locations=locations)
        world.add_store("a", [k.variants[i].sku or "" for i in ids])
        async with running_daemon(world, db_url, subscribe=False):
            await converge(world, 60)
        swept = by_endpoint(k)["/variants"] > 1
        assert swept == (quirk.inventory_order == "newest_first" or locations > 1)
    finally:
        await world.stop()


async def test_variants_no_store_sells_are_neither_read_nor_re_checked(db_url: str) -> None:
    """A fallback marks every variant it mirrors, possibly before any catalogue is indexed:
    their flush reads nothing, and none is taken for gone ("no inventory rows") and re-read
    through /variants."""
    sim = KatanaSim(requests_per_minute=6000, webhook_retry_delays=())
    await sim.start()
    db = Database(db_url)
    await db.open()
    try:
        loc = sim.add_location("Main")
        ids = [sim.add_product_variant(f"NS-{i}", in_stock={loc: i}) for i in range(60)]
        async with aiohttp.ClientSession() as session:
            katana = KatanaClient(session, sim.base_url, sim.api_key, KatanaLimiter(6000))
            async for page in katana.variants(product_only=True):
                await mirror.upsert_variants(db.pool, page)
            before = len(sim.request_log)
            engine = Engine(db, katana, Metrics(), stores=list)
            assert await engine.refresh(ids, reason="test") == 0
        assert sim.request_log[before:] == []
    finally:
        await db.close()
        await sim.stop()
