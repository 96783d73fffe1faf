"""The persistence package against a real Postgres (and, for the two push paths, the BigCommerce
simulator over real HTTP): what each function records, and that the SQL has one home."""

from __future__ import annotations

import ast
import concurrent.futures
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from katsyncd.bigcommerce import BigCommerceClient
from katsyncd.db import Database
from katsyncd.engine import Engine, StoreView
from katsyncd.katana import KatanaClient
from katsyncd.metrics import Metrics
from katsyncd.models import (
    AbsoluteItem,
    BcItem,
    KatanaVariant,
    Level,
    SalesOrder,
    SalesOrderRow,
    SalesOrderRowChange,
)
from katsyncd.persistence import catalog, levels, mirror, stale, watermarks
from katsyncd.poller import Poller
from katsyncd.ratelimit import BcLimiter, KatanaLimiter
from katsyncd.reconcile import RECONCILE_REASON, DiffRow, Reconciler, ReconcileTarget
from katsyncd.rules import LevelRules
from katsyncd.sim.bigcommerce import BigCommerceSim
from katsyncd.writer import StoreWriter

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


def order(so_id: int, *rows: tuple[int, int, str], status: str = "NOT_SHIPPED") -> SalesOrder:
    """An order at location 1; rows are (row id, variant id, quantity)."""
    return SalesOrder(
        so_id,
        status,
        1,
        None,
        None,
        T0,
        None,
        tuple(SalesOrderRow(r, v, Decimal(q), None) for r, v, q in rows),
    )


# ----- push recording: one function for the writer and for reconcile --push ----------------------

SKUS = ("DROP", "RAISE", "REJECTED")  # a decrease, an increase, an item BigCommerce rejects
DESIRED = {"DROP": 0, "RAISE": 7, "REJECTED": 5}
BC_HAS = 3


async def seed_levels(pool: asyncpg.Pool, store: str, keys: dict[str, str]) -> None:
    """The same backlog for ``store``: BigCommerce was given 3, the levels now differ."""
    for n, sku in enumerate(SKUS):
        await pool.execute(
            "INSERT INTO item_level (store, item_key, location_id, sku, variant_id, desired,"
            " desired_at, reason, pushed) VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8)",
            store,
            keys[sku],
            sku,
            100 + n,
            DESIRED[sku],
            T0 + timedelta(seconds=n),  # backlog order: DROP (a decrease), RAISE, REJECTED
            RECONCILE_REASON,
            BC_HAS,
        )


async def store_rows(pool: asyncpg.Pool, store: str) -> tuple[list[Any], list[Any]]:
    log = await pool.fetch(
        "SELECT sku, item_key, location_id, old_quantity, new_quantity, reason, outcome,"
        " transaction_id FROM push_log WHERE store = $1 ORDER BY id",
        store,
    )
    item_levels = await pool.fetch(
        "SELECT sku, item_key, desired, pushed, failed_desired, failed_reason, stale_since"
        " FROM item_level WHERE store = $1 ORDER BY sku",
        store,
    )
    return [dict(r) for r in log], [dict(r) for r in item_levels]


async def test_writer_and_reconcile_push_record_the_same_rows(db: Database) -> None:
    """A store writer's push and a reconcile's ``--push`` of the same differences leave the same
    ``item_level`` and ``push_log`` rows (both go through ``levels.record_pushes``)."""
    sim = BigCommerceSim()
    await sim.start()
    try:
        keys: dict[str, dict[str, str]] = {}
        for store in ("writer", "reconcile"):
            shop = sim.add_store(f"h{store}", f"t-{store}")
            for sku in SKUS:
                shop.add_product(sku, sku, inventory_level=BC_HAS)
            shop.reject_skus(["REJECTED"])
            keys[store] = {sku: f"p:{shop.items_for_sku(sku)[0][1]}" for sku in SKUS}
            await seed_levels(db.pool, store, keys[store])
        async with aiohttp.ClientSession() as session:

            def client(store: str) -> BigCommerceClient:
                return BigCommerceClient(
                    session, sim.base_url, f"h{store}", f"t-{store}", BcLimiter(), store_name=store
                )

            view = StoreView("writer", LevelRules(), 1)
            writer = StoreWriter(view, client("writer"), db, Metrics(), dry_run=lambda: False)
            assert await writer.push_once() == len(SKUS)

            katana = KatanaClient(session, "http://127.0.0.1:9/v1", "k", KatanaLimiter(60))
            engine = Engine(db, katana, Metrics(), stores=list)
            poller = Poller(db, katana, engine, Metrics(), mark=_no_mark)
            target = ReconcileTarget(StoreView("reconcile", LevelRules(), 1), client("reconcile"))
            diff = [  # the writer's backlog order: the decrease first
                DiffRow(
                    "reconcile", sku, keys["reconcile"][sku], 1, BC_HAS, DESIRED[sku], "written"
                )
                for sku in SKUS
            ]
            # The reconcile's own push step (the rest of a run needs Katana; see test_reconcile).
            pushed = await Reconciler(db, engine, poller)._push(target, diff)
            assert [r.action for r in pushed] == ["written", "written", "rejected"]

        by_writer = await store_rows(db.pool, "writer")
        by_reconcile = await store_rows(db.pool, "reconcile")
    finally:
        await sim.stop()

    log, item_levels = by_writer
    assert [(r["sku"], r["old_quantity"], r["new_quantity"], r["outcome"]) for r in log] == [
        ("DROP", 3, 0, "written"),
        ("RAISE", 3, 7, "written"),
        ("REJECTED", 3, 5, "rejected"),
    ]
    assert all(r["reason"] == RECONCILE_REASON for r in log)
    assert log[0]["transaction_id"] and log[0]["transaction_id"] == log[1]["transaction_id"]
    assert log[2]["transaction_id"]  # a rejected item's row says why
    assert [(r["sku"], r["pushed"], r["failed_desired"]) for r in item_levels] == [
        ("DROP", 0, None),
        ("RAISE", 7, None),
        ("REJECTED", 3, 5),
    ]
    assert item_levels[1]["failed_reason"] is None and item_levels[2]["failed_reason"]

    def comparable(rows: tuple[list[Any], list[Any]]) -> tuple[list[Any], list[Any]]:
        log, item_levels = rows
        # Transaction ids are BigCommerce's, one set per store; the rejection text is compared.
        return (
            [
                {**r, "transaction_id": bool(r["transaction_id"])}
                if r["outcome"] == "written"
                else r
                for r in log
            ],
            item_levels,
        )

    assert comparable(by_reconcile) == comparable(by_writer)


async def _no_mark(ids: Any, reason: str) -> None:
    raise AssertionError("nothing is marked by a push")


async def test_dry_run_logs_what_would_be_written_once(db: Database) -> None:
    await seed_levels(db.pool, "dry", {sku: f"p:{n}" for n, sku in enumerate(SKUS)})
    rows = await levels.backlog(db.pool, "dry", 10, dry_run=True)
    assert [r["sku"] for r in rows] == list(SKUS)
    prior = {
        (r["item_key"], r["location_id"]): levels.Prior(r["pushed"], r["reason"]) for r in rows
    }
    items = [AbsoluteItem(r["item_key"], 1, r["desired"], r["sku"]) for r in rows]
    await levels.record_dry_run(db.pool, "dry", items, prior)
    assert await levels.backlog(db.pool, "dry", 10, dry_run=True) == []
    log, item_levels = await store_rows(db.pool, "dry")
    assert [(r["sku"], r["old_quantity"], r["new_quantity"], r["outcome"]) for r in log] == [
        ("DROP", 3, 0, "dry_run"),
        ("RAISE", 3, 7, "dry_run"),
        ("REJECTED", 3, 5, "dry_run"),
    ]
    assert [r["pushed"] for r in item_levels] == [3, 3, 3]  # nothing was written


# ----- levels --------------------------------------------------------------------------------


async def test_store_levels_records_changes_once_and_clears_marks_at_their_generation(
    db: Database,
) -> None:
    lv = [Level("s", "p:1", 1, "A", 10, 4), Level("s", "p:2", 1, "B", 11, 0)]
    async with db.pool.acquire() as conn:
        await stale.mark_variants(conn, {10: "test", 11: "test"})
    gens = {r["variant_id"]: r["gen"] for r in await db.pool.fetch("SELECT * FROM stale_variant")}
    async with db.pool.acquire() as conn:  # variant 11 is marked again after its read
        await stale.mark_variants(conn, {11: "again"})
    since = {"A": T0, "B": T0}

    stored = await levels.store_levels(db.pool, lv, "test", since, gens)
    assert stored.changed == lv and not stored.already_pushed
    left = [r["variant_id"] for r in await db.pool.fetch("SELECT variant_id FROM stale_variant")]
    assert left == [11]  # the newer mark survives: its change may not be in what was read
    assert await levels.desired_now(db.pool, lv) == {("s", "p:1", 1): 4, ("s", "p:2", 1): 0}

    again = await levels.store_levels(db.pool, lv, "test", since)
    assert again.changed == [] and not again.already_pushed

    await db.pool.execute("UPDATE item_level SET pushed = desired WHERE item_key = 'p:1'")
    moved = [Level("s", "p:1", 1, "A", 10, 4), Level("s", "p:2", 1, "B", 11, 2)]
    stored = await levels.store_levels(db.pool, moved, "test", since)
    assert stored.changed == [moved[1]]
    assert stored.already_pushed == {"s": 1}  # BigCommerce already holds p:1's level


async def test_record_observed_yields_to_a_newer_push(db: Database) -> None:
    lv = [Level("s", "p:1", 1, "A", 10, 4), Level("s", "p:2", 1, "B", 11, 5)]
    await levels.store_levels(db.pool, lv, "test", {"A": T0, "B": T0})
    read_at = await watermarks.db_clock(db.pool)
    await db.pool.execute(  # a writer pushed p:2 after the reconcile read BigCommerce
        "UPDATE item_level SET pushed = 5, pushed_at = now() WHERE item_key = 'p:2'"
    )
    await levels.record_observed(db.pool, "s", 1, {"p:1": 4, "p:2": 9}, read_at)
    rows = await db.pool.fetch("SELECT item_key, pushed FROM item_level")
    assert {r["item_key"]: r["pushed"] for r in rows} == {"p:1": 4, "p:2": 5}
    backlog = await levels.backlog(db.pool, "s", 10, dry_run=False)
    assert backlog == []


# ----- the Katana mirror -----------------------------------------------------------------------


async def test_sales_orders_apply_replace_rows_and_commitments(db: Database) -> None:
    pool = db.pool
    touched = await mirror.apply_sales_orders(
        pool, [order(1, (10, 7, "2")), order(2, (20, 8, "1"))]
    )
    assert touched == {7, 8}
    commits = await mirror.commitments(pool, [7, 8, 9])
    assert {v: [c.quantity for c in rows] for v, rows in commits.items()} == {
        7: [Decimal(2)],
        8: [Decimal(1)],
    }
    # The same orders again (a poll's overlap): nothing changes, nothing is marked.
    assert await mirror.apply_sales_orders(pool, [order(1, (10, 7, "2.000"))]) == set()
    # An order Katana no longer returns leaves the mirror; its variants may differ.
    assert await mirror.apply_sales_orders(pool, [], missing=[2, 3]) == {8}

    rows = [
        SalesOrderRowChange(10, 1, 9, Decimal(2), None, T0, None),  # moved from variant 7 to 9
        SalesOrderRowChange(30, 5, 7, Decimal(1), None, T0, None),  # an order not mirrored
    ]
    assert await mirror.apply_row_changes(pool, rows) == ({7, 9}, {5})
    assert set(await mirror.commitments(pool, [7, 9])) == {9}

    # A full re-read: the mirror becomes exactly these orders.
    assert await mirror.replace_sales_orders(pool, [order(4, (40, 9, "2"))]) == set()
    assert await mirror.replace_sales_orders(pool, [order(4, (40, 9, "3"))]) == {9}
    assert await mirror.replace_sales_orders(pool, []) == {9}
    assert await mirror.commitments(pool, [7, 8, 9]) == {}


async def test_variants_winners_and_sweeps(db: Database) -> None:
    pool = db.pool
    old = KatanaVariant(1, "A", "product", T0, T0)
    new = KatanaVariant(2, "A", "product", T0 + timedelta(days=1), T0)
    material = KatanaVariant(3, "A", "material", T0 + timedelta(days=2), T0)
    other = KatanaVariant(4, "B", "product", T0, T0)
    await mirror.upsert_variants(pool, [old, new, material, other])
    winners = await mirror.winners_for_skus(pool, ["A", "B", "C"])
    assert {sku: v.id for sku, v in winners.items()} == {"A": 2, "B": 4}  # S8: created latest
    assert await mirror.duplicate_live_skus(pool) == {"A": [1, 2]}
    assert await mirror.live_product_skus(pool) == {"A", "B"}

    # An older copy never replaces a newer one.
    await mirror.upsert_variants(
        pool, [KatanaVariant(4, "B-OLD", "product", T0, T0 - timedelta(days=1))]
    )
    assert [v.sku for v in await mirror.variants_by_ids(pool, [4])] == ["B"]

    await mirror.mark_variants_gone(pool, [2])
    assert {sku: v.id for sku, v in (await mirror.winners_for_skus(pool, ["A"])).items()} == {
        "A": 1
    }
    gone = await mirror.delete_absent_variants(pool, seen=[1])
    assert gone == [(4, "B")]
    assert await mirror.live_variant_ids_by_skus(pool, ["A", "B"]) == [1]


# ----- marks, watermarks, the SKU index ----------------------------------------------------------


async def test_product_marks_wait_for_the_mirror_then_expand(db: Database) -> None:
    pool = db.pool
    async with pool.acquire() as conn, conn.transaction():
        marks = await stale.mark_products(conn, {50: "webhook"})
    assert marks.variants == set() and marks.products == [50]
    before_poll = await watermarks.db_clock(pool)
    await mirror.upsert_variants(pool, [KatanaVariant(7, "A", "product", T0, T0, product_id=50)])
    taken = await stale.expand_product_marks(pool, before_poll)
    assert taken.variants == {7} and taken.products == [50]
    marked = [r["variant_id"] for r in await pool.fetch("SELECT variant_id FROM stale_variant")]
    assert marked == [7]
    assert (await stale.expand_product_marks(pool, before_poll)).products == []


async def test_sales_order_marks_clear_only_at_their_generation(db: Database) -> None:
    async with db.pool.acquire() as conn:
        await stale.mark_sales_orders(conn, {1: "webhook", 2: "webhook"})
    gens = await stale.sales_order_mark_gens(db.pool, [1, 2, 3])
    assert set(gens) == {1, 2}
    async with db.pool.acquire() as conn:
        await stale.mark_sales_orders(conn, {2: "again"})
    await stale.clear_sales_order_marks(db.pool, gens)
    left = await stale.sales_order_mark_gens(db.pool, [1, 2])
    assert set(left) == {2} and left[2] != gens[2]  # marked again after the read: kept


async def test_watermarks_never_move_backwards(db: Database) -> None:
    assert await watermarks.get(db.pool, "variants") is None
    await watermarks.advance(db.pool, "variants", T0)
    await watermarks.advance(db.pool, "variants", T0 - timedelta(hours=1))
    assert await watermarks.get(db.pool, "variants") == T0
    await watermarks.advance(db.pool, "variants", T0 + timedelta(hours=1))
    assert await watermarks.get(db.pool, "variants") == T0 + timedelta(hours=1)
    assert await watermarks.get(db.pool, "movements") is None


async def test_catalog_index_update_drops_levels_of_removed_items(db: Database) -> None:
    pool = db.pool
    a, b = BcItem("A", 1, None, "product"), BcItem("B", 2, 20, "variant")
    await catalog.update_index(pool, "s", [a, b, BcItem("C", 3, None, "none")], [])
    assert await catalog.index(pool, "s") == {
        "p:1": ("A", "product"),
        "v:20": ("B", "variant"),
        "p:3": ("C", "none"),
    }
    tracked = await catalog.tracked_items(pool, ["s", "other"], ["A", "B", "C"])
    assert dict(tracked) == {("s", "A"): [a], ("s", "B"): [b]}  # untracked items carry no level
    await levels.store_levels(pool, [Level("s", "p:1", 1, "A", 10, 4)], "test", {"A": T0})
    await catalog.update_index(pool, "s", [], ["p:1"])
    assert set(await catalog.index(pool, "s")) == {"v:20", "p:3"}
    assert await pool.fetchval("SELECT count(*) FROM item_level") == 0


# ----- one home for the SQL ----------------------------------------------------------------------

QUERY_METHODS = {"execute", "executemany", "fetch", "fetchrow", "fetchval", "copy_records_to_table"}
# Modules that may still run SQL: the persistence package and the database module itself.
SQL_HOMES = {"katsyncd/db.py"}


def parse(source: str) -> ast.Module:
    """``ast.parse`` on a thread of its own: CPython 3.11.7 can fail a parse with "AST
    constructor recursion depth mismatch" on a thread whose recursion counter an earlier
    RecursionError left off (the hostile-input tests nest JSON and TOML past the limit)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(ast.parse, source).result()


def sql_runners() -> dict[str, list[str]]:
    """Modules outside the persistence package that name a query or call a query method."""
    out: dict[str, list[str]] = {}
    for path in sorted((REPO / "katsyncd").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(("katsyncd/persistence/", "katsyncd/sim/")) or rel in SQL_HOMES:
            continue
        found = []
        for node in ast.walk(parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "katsyncd.db":
                found += [f"imports Q (line {node.lineno})" for a in node.names if a.name == "Q"]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in QUERY_METHODS
            ):
                found.append(f".{node.func.attr}() (line {node.lineno})")
        if found:
            out[rel] = found
    return out


def test_only_the_persistence_package_runs_sql() -> None:
    runners = sql_runners()
    assert runners == {}
