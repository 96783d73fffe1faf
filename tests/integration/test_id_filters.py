"""A gateway in front of Katana that honours only 20 repeated id values (issue 8): the daemon,
in this process against the simulators, must notice (rows for ids it did not ask for, or a 400
naming the parameter), lower its ids per request, show it in /status and a metric, and still
converge a burst without losing a stale mark or failing a mirror upsert."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import structlog

from katsyncd.db import Database
from katsyncd.models import KatanaVariant, SalesOrder, SalesOrderRow
from katsyncd.persistence import mirror
from katsyncd.sim.quirks import KatanaQuirks, OverLimit, Quirks
from katsyncd.sim.world import World
from tests.support.harness import converge, eventually, get_json, running_daemon

pytestmark = pytest.mark.timeout(240)

N_VARIANTS = 300
LIMIT = 20


@pytest.fixture(params=["ignore", "reject"])
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    mode: OverLimit = request.param
    quirks = Quirks(KatanaQuirks(array_filter_limit=LIMIT, array_filter_over_limit=mode))
    w = await World.start(
        katana_rpm=6000, bc_quota=150, webhook_retry_delays=(0.5, 1.0, 2.0), quirks=quirks
    )
    w.katana.populate(N_VARIANTS, locations=2, seed=5)
    skus = [f"KS-{i:05d}" for i in range(N_VARIANTS)]
    w.add_store("main", skus)
    w.add_store("outlet", skus[::2], tracking="variant")
    yield w
    await w.stop()


async def burst(world: World, n: int, rng: random.Random, seconds: float) -> None:
    """n mixed Katana changes (sales orders among them) plus current_inventory hints."""
    ids = list(world.katana.variants)
    for i in range(n):
        world.katana.random_activity(rng)
        if i % 2 == 0:
            world.katana.emit("current_inventory.product_updated", rng.choice(ids))
        if i % 50 == 49:
            await asyncio.sleep(seconds * 50 / n)


def long_filters(world: World, start: int) -> int:
    """Katana requests since ``start`` that sent more than LIMIT values of one array filter."""
    count = 0
    for record in world.katana.request_log[start:]:
        keys = [k for k, _ in record.query if k in ("ids", "variant_id")]
        if any(keys.count(k) > LIMIT for k in set(keys)):
            count += 1
    return count


async def test_a_burst_converges_with_ids_per_request_lowered(world: World, db_url: str) -> None:
    mode = world.quirks.katana.array_filter_over_limit
    with structlog.testing.capture_logs() as logs:
        async with running_daemon(world, db_url) as daemon:
            await converge(world, 60)
            await burst(world, 300, random.Random(11), 2.0)
            await converge(world, 90)
            after = len(world.katana.request_log)
            status, body = await get_json(daemon, "/status")
            assert status == 200
            ids = body["katana"]["ids_per_request"]
            assert ids["configured"] == 250 and ids["effective"] == LIMIT
            assert [e["how"] for e in ids["lowered"]] == [
                "ignored" if mode == "ignore" else "rejected"
            ]
            registry = daemon.metrics.registry
            assert registry.get_sample_value("katsyncd_katana_ids_per_request") == LIMIT
            failures = sum(
                s.value
                for metric in registry.collect()
                if metric.name == "katsyncd_katana_id_filter_failures"
                for s in metric.samples
                if s.name.endswith("_total")
            )
            assert failures >= 1
            # Once lowered, never again more than LIMIT ids in one request.
            await burst(world, 100, random.Random(12), 0.5)
            await converge(world, 90)
            assert long_filters(world, after) == 0
    events = [e["event"] for e in logs]
    assert events.count("katana_id_filter_limited") == 1  # logged once
    upsert_errors = [e for e in logs if "cannot affect row a second time" in str(e)]
    assert upsert_errors == []


async def test_orders_named_by_webhooks_are_read_by_the_poll_when_cheaper(
    world: World, db_url: str
) -> None:
    async with running_daemon(world, db_url) as daemon:
        await converge(world, 60)
        assert daemon.katana is not None
        katana = daemon.katana
        await eventually(lambda: katana.effective_ids_per_request == LIMIT, 30)
        start = len(world.katana.request_log)
        products = sorted(v.id for v in world.katana.variants.values() if v.type == "product")
        for variant_id in products[:200]:  # 200 webhooks: 10 id chunks of 20, or a 1-page poll
            world.katana.create_sales_order([(variant_id, 1)], location_id=1)
        await converge(world, 60)
        reads = [r for r in world.katana.request_log[start:] if r.path == "/sales_orders"]
        by_ids = [r for r in reads if any(k == "ids" for k, _ in r.query)]
        # The 200 orders are learned by an incremental read (the resolver's planned poll, or
        # the scheduled poll when it comes first on a busy machine), not one request per chunk
        # of 20 ids; converge() above saw every order's commitment reach BigCommerce.
        assert len(by_ids) < 10, [len([v for k, v in r.query if k == "ids"]) for r in by_ids]


async def test_mirror_upserts_take_each_record_once(db_url: str) -> None:
    """A read that returns an order or a variant twice (a gateway that dropped the filter,
    overlapping chunks) must not fail the batch with "ON CONFLICT DO UPDATE command cannot
    affect row a second time"; the most recently updated copy wins."""
    db = Database(db_url)
    await db.open()
    try:
        t0 = datetime(2024, 1, 1, tzinfo=UTC)
        old = SalesOrder(
            1, "NOT_SHIPPED", 1, None, None, t0, None, (SalesOrderRow(10, 7, Decimal(1), None),)
        )
        new = replace(old, status="PACKED", updated_at=t0 + timedelta(seconds=1))
        touched = await mirror.apply_sales_orders(db.pool, [new, old, new], missing=[1, 2])
        assert touched == {7}
        status = await db.pool.fetchval("SELECT status FROM katana_sales_order WHERE id = 1")
        assert status == "PACKED"
        v = KatanaVariant(5, "SKU-5", "product", t0, t0)
        await mirror.upsert_variants(
            db.pool, [v, replace(v, sku="SKU-5B", updated_at=t0 + timedelta(seconds=1)), v]
        )
        sku = await db.pool.fetchval("SELECT sku FROM katana_variant WHERE id = 5")
        assert sku == "SKU-5B"
    finally:
        await db.close()
