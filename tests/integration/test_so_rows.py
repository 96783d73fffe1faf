"""Committed stock never drifts: sales-order rows changed without touching their order (no
webhook; the order's ``updated_at`` moves only under ``row_edits_bump_order``) reach
BigCommerce after the next ``sales_order_rows`` poll, and a full reconcile repairs the same
drift from a from-scratch re-read of the open orders. Real daemon, Postgres and simulators."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from katsyncd.daemon import Daemon
from katsyncd.models import OPEN_SO_STATUSES
from katsyncd.sim.quirks import KatanaQuirks, Quirks
from katsyncd.sim.world import World
from tests.support.harness import converge, eventually, running_daemon, start_world

pytestmark = pytest.mark.timeout(90)

READINGS = [True, False]
READING_IDS = ["row_edits_bump_order", "order_untouched"]


@pytest.fixture(params=READINGS, ids=READING_IDS)
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    quirks = Quirks(katana=KatanaQuirks(row_edits_bump_order=request.param))
    w = await start_world(quirks)
    yield w
    await w.stop()


def catalogue(world: World) -> tuple[int, int, list[int]]:
    """Variants A and B sold in one store, one channel order with three rows on A."""
    k = world.katana
    main = k.add_location("Main", is_primary=True)
    a = k.add_product_variant("ROW-A", in_stock={main: 50})
    b = k.add_product_variant("ROW-B", in_stock={main: 50})
    so = k.create_sales_order(
        [(a, 3), (a, 4), (a, 5)], location_id=main, ecommerce_order_type="bigCommerce"
    )
    world.add_store("main", ["ROW-A", "ROW-B"])
    return a, b, [r.id for r in k.sales_orders[so].rows]


def polls(d: Daemon, kind: str) -> float:
    value = d.metrics.registry.get_sample_value(
        "katsyncd_poll_runs_total", {"kind": kind, "outcome": "ok"}
    )
    return value or 0.0


async def test_row_edits_reach_bigcommerce_after_the_next_poll(world: World, db_url: str) -> None:
    _, b, (first, second, third) = catalogue(world)
    k, store = world.katana, world.stores[0]
    async with running_daemon(world, db_url) as d:
        await converge(world)
        assert (store.sim.level("ROW-A"), store.sim.level("ROW-B")) == (38, 50)
        # Each edit: BigCommerce right once a rows poll has started after it (one interval).
        k.set_sales_order_row_quantity(first, 10)
        after = polls(d, "sales_order_rows") + 1
        await eventually(lambda: polls(d, "sales_order_rows") >= after)
        await converge(world, 5)
        assert store.sim.level("ROW-A") == 31

        k.move_sales_order_row(second, b)  # A loses 4, B gains it: both re-synced
        after = polls(d, "sales_order_rows") + 1
        await eventually(lambda: polls(d, "sales_order_rows") >= after)
        await converge(world, 5)
        assert (store.sim.level("ROW-A"), store.sim.level("ROW-B")) == (35, 46)

        k.delete_sales_order_row(third)
        after = polls(d, "sales_order_rows") + 1
        await eventually(lambda: polls(d, "sales_order_rows") >= after)
        await converge(world, 5)
        assert (store.sim.level("ROW-A"), store.sim.level("ROW-B")) == (40, 46)
        watermark = await d.db.pool.fetchval(
            "SELECT updated_at FROM poll_watermark WHERE kind = 'sales_order_rows'"
        )
        assert watermark is not None
        assert d.metrics.registry.get_sample_value(
            "katsyncd_poll_watermark_timestamp_seconds", {"kind": "sales_order_rows"}
        ) == pytest.approx(watermark.timestamp())


async def test_row_of_an_unknown_order_gets_it_resolved(world: World, db_url: str) -> None:
    """A row whose order is not mirrored (the mirror lost it): the order is read by id."""
    k = world.katana
    real_clock = k._clock
    k._clock = lambda: real_clock() - 3600.0  # an old order: no order poll's overlap re-reads it
    _, b, (first, _, _) = catalogue(world)
    k._clock = real_clock
    k.create_sales_order([(b, 1)], location_id=min(k.locations))  # the newest order
    async with running_daemon(world, db_url) as d:
        await converge(world)
        await d.db.pool.execute("DELETE FROM katana_sales_order")  # mirror lost every order
        k.set_sales_order_row_quantity(first, 1)
        await converge(world)
        mirrored = await d.db.pool.fetchval("SELECT count(*) FROM katana_so_row")
        assert mirrored == 4
    so = str(k.sales_order_rows[first].sales_order_id)
    by_id = [r for r in k.request_log if r.path == "/sales_orders" and ("ids", so) in r.query]
    if not world.quirks.katana.row_edits_bump_order:  # else the order poll may re-mirror it
        assert by_id, "the unknown order was never resolved by id"


async def test_reconcile_repairs_row_drift(world: World, db_url: str) -> None:
    a, b, (first, second, third) = catalogue(world)
    k, store = world.katana, world.stores[0]
    async with running_daemon(world, db_url, poll_interval_seconds=3600.0) as d:
        await converge(world)
        await eventually(lambda: polls(d, "sales_order_rows") >= 1)
        k.set_sales_order_row_quantity(first, 10)
        k.move_sales_order_row(second, b)
        k.delete_sales_order_row(third)
        assert world.wrong()  # no poll will run for an hour: only the reconcile can repair
        before = len(k.request_log)
        report = await d.reconcile("test")
        await converge(world, 10)
        assert (store.sim.level("ROW-A"), store.sim.level("ROW-B")) == (40, 46)
        # ceil(open orders / 250) per open status (one order here), plus the two catch-up
        # reads of what changed during the sweep.
        assert report.sales_orders == 1
        assert report.sales_order_requests == len(OPEN_SO_STATUSES) + 2
        summary = d.last_reconcile or {}
        assert summary["sales_order_requests"] == report.sales_order_requests
        reread = [
            r for r in k.request_log[before:] if r.path in ("/sales_orders", "/sales_order_rows")
        ]
        assert len(reread) == report.sales_order_requests
        rows = await d.db.pool.fetch(
            "SELECT variant_id, quantity FROM katana_so_row ORDER BY row_id"
        )
        assert [(r["variant_id"], r["quantity"]) for r in rows] == [(a, 10), (b, 4)]


@pytest.mark.timeout(120)
async def test_bootstrap_reads_historical_rows_once(db_url: str) -> None:
    """First start, no watermark: the open orders are read once by status; /sales_order_rows
    is only ever asked for rows changed after the start (never the history)."""
    quirks = Quirks(katana=KatanaQuirks(row_edits_bump_order=False))
    world = await World.start(katana_rpm=6000, bc_quota=1000, quirks=quirks)
    try:
        k = world.katana
        real_clock = k._clock
        k._clock = lambda: real_clock() - 3600.0  # the history is an hour old
        main = k.add_location("Main", is_primary=True)
        v = k.add_product_variant("HIST", in_stock={main: 10_000})
        for i in range(600):
            so = k.create_sales_order([(v, 1)], location_id=main, ecommerce_order_type="shopify")
            if i % 6 == 0:
                k.set_sales_order_status(so, "DELIVERED")
        k._clock = real_clock
        world.add_store("main", ["HIST"])
        started = datetime.now(UTC)
        async with running_daemon(world, db_url) as d:
            await eventually(lambda: polls(d, "sales_order_rows") >= 3, 30)
            await converge(world)
            open_ = "SELECT count(*) FROM katana_sales_order WHERE status = 'NOT_SHIPPED'"
            assert await d.db.pool.fetchval(open_) == 500
        sweeps = [r for r in k.request_log if r.path == "/sales_orders"]
        by_status = [r for r in sweeps if any(key == "status" for key, _ in r.query)]
        assert len(by_status) == math.ceil(500 / 250) + len(OPEN_SO_STATUSES) - 1
        row_reads = [r for r in k.request_log if r.path == "/sales_order_rows"]
        assert len(row_reads) >= 2  # the first poll only sets the watermark
        for r in row_reads:
            since = datetime.fromisoformat(dict(r.query)["updated_at_min"].replace("Z", "+00:00"))
            assert since > started - timedelta(minutes=30)  # the history is an hour old
    finally:
        await world.stop()


async def test_mirror_from_before_the_row_poll_is_replaced_once(world: World, db_url: str) -> None:
    """A mirror that exists (an order watermark) but was never followed by the row poll (an
    upgrade) may have missed any row edit: it is replaced from the open orders once."""
    _, _, (first, _, _) = catalogue(world)
    async with running_daemon(world, db_url) as d:
        await converge(world)
        await eventually(lambda: polls(d, "sales_order_rows") >= 1)
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("DELETE FROM poll_watermark WHERE kind = 'sales_order_rows'")
        await conn.execute("UPDATE katana_so_row SET quantity = 99 WHERE row_id = $1", first)
    finally:
        await conn.close()
    before = len(world.katana.request_log)
    async with running_daemon(world, db_url, subscribe=False) as d:
        await eventually(lambda: polls(d, "sales_order_rows") >= 1)
        rows = await d.db.pool.fetch("SELECT row_id, quantity FROM katana_so_row ORDER BY row_id")
        assert [r["quantity"] for r in rows] == [3, 4, 5]
        await converge(world)
    sweeps = [
        r
        for r in world.katana.request_log[before:]
        if r.path == "/sales_orders" and any(key == "status" for key, _ in r.query)
    ]
    assert len(sweeps) == len(OPEN_SO_STATUSES)  # once, not per poll
