"""Issue 8: ``current_inventory.*`` events whose ``object`` names a product (or carries no
``href``) reach BigCommerce within the debounce, not at the next poll."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from katsyncd.db import Q, load_migrations
from katsyncd.ingest import Effect, GroupCommitter, _Pending, parse_event, read_href
from katsyncd.sim.quirks import InventoryEventShape, KatanaQuirks
from katsyncd.sim.world import World
from tests.support.harness import converge, eventually, running_daemon
from tests.support.pg import empty_database

STOCK = "current_inventory.product_updated"
# Polls this far apart cannot be what brings a change to BigCommerce within a test.
NO_POLLS = 600.0


# ----- href parsing (pure) ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("https://api.katanamrp.com/v1/variants/12", ("variant", 12)),
        ("https://api.katanamrp.com/v1/products/7", ("product", 7)),
        ("https://api.katanamrp.com/v1/materials/3", ("material", 3)),
        ("http://127.0.0.1:5555/v1/products/7/", ("product", 7)),
        ("https://example.test/products/7?extend=variants", ("product", 7)),
        ("/v1/variants/12", ("variant", 12)),
        (" https://api.katanamrp.com/v1/products/7 ", ("product", 7)),
        (None, ("no_href", None)),
        ("https://api.katanamrp.com/v1/inventory/7", ("unrecognized", None)),
        ("https://api.katanamrp.com/v1/products/prod-456", ("unrecognized", None)),
        ("https://api.katanamrp.com/v1/products/7/variants", ("unrecognized", None)),
        (7, ("unrecognized", None)),
    ],
)
def test_read_href(href: object, expected: tuple[str, int | None]) -> None:
    assert read_href(href) == expected


def body(obj: dict[str, object], action: str = STOCK) -> bytes:
    return json.dumps(
        {"resource_type": "current_inventory", "action": action, "object": obj}
    ).encode()


def test_a_variant_href_marks_the_variant() -> None:
    ev = parse_event(body({"id": 12, "href": "https://api.katanamrp.com/v1/variants/12"}))
    assert (ev.reading, ev.effects) == ("variant", (Effect("variant", 12),))


def test_a_product_href_marks_the_product() -> None:
    ev = parse_event(body({"id": "7", "href": "https://api.katanamrp.com/v1/products/7"}))
    assert (ev.reading, ev.effects) == ("product", (Effect("product", 7),))
    out = parse_event(
        body({"id": 7, "href": "https://x/v1/products/7"}, "current_inventory.product_out_of_stock")
    )
    assert out.effects == (Effect("product", 7),)


def test_a_material_href_marks_nothing() -> None:  # S10: materials never sync
    ev = parse_event(body({"id": 3, "href": "https://api.katanamrp.com/v1/materials/3"}))
    assert (ev.reading, ev.effects) == ("material", ())


@pytest.mark.parametrize(
    "obj", [{"id": 7}, {"id": 7, "href": "https://api.katanamrp.com/v1/inventory/7"}]
)
def test_no_or_unreadable_href_marks_every_reading(obj: dict[str, object]) -> None:
    ev = parse_event(body(obj))
    assert set(ev.effects) == {Effect("variant", 7), Effect("product", 7)}
    assert ev.reading == ("no_href" if "href" not in obj else "unrecognized")


def test_href_id_wins_over_a_different_object_id() -> None:
    ev = parse_event(body({"id": 1, "href": "https://api.katanamrp.com/v1/products/7"}))
    assert ev.effects == (Effect("product", 7),)


def test_other_events_ignore_href_reading() -> None:
    ev = parse_event(body({"id": 4, "href": "https://x/v1/variants/4"}, "variant.updated"))
    assert ev.reading is None and Effect("variant", 4) in ev.effects


# ----- durable product marks (real Postgres) ------------------------------------------------
@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert p is not None
    yield p
    await p.close()


async def mirror(pool: asyncpg.Pool, *rows: tuple[int, int, datetime | None]) -> None:
    """Mirror product variants (variant id, product id, deleted_at)."""
    now = datetime.now(UTC)
    await pool.execute(
        Q["upsert_variants"],
        [r[0] for r in rows],
        [f"SKU-{r[0]}" for r in rows],
        ["product"] * len(rows),
        [now] * len(rows),
        [now] * len(rows),
        [r[2] for r in rows],
        [r[1] for r in rows],
    )


async def commit(pool: asyncpg.Pool, effects: tuple[Effect, ...]) -> list[Effect]:
    seen: list[Effect] = []
    committer = GroupCommitter(lambda: pool, on_committed=seen.extend)
    await committer._commit([_pending(effects)])
    return seen


def _pending(effects: tuple[Effect, ...]) -> _Pending:
    return _Pending(effects, f"webhook:{STOCK}")


async def test_a_known_product_marks_its_live_variants_in_the_commit(pool: asyncpg.Pool) -> None:
    await mirror(pool, (101, 7, None), (102, 7, None), (103, 7, datetime.now(UTC)), (201, 8, None))
    seen = await commit(pool, (Effect("product", 7),))
    stale = {r["variant_id"] for r in await pool.fetch("SELECT variant_id FROM stale_variant")}
    assert stale == {101, 102}  # not the deleted one, not another product's
    assert {e for e in seen if e.kind == "variant"} == {
        Effect("variant", 101),
        Effect("variant", 102),
    }
    assert await pool.fetchval("SELECT count(*) FROM stale_product") == 0
    assert await pool.fetchval("SELECT count(*) FROM poll_request") == 0


async def test_an_unknown_product_is_kept_and_asks_for_a_variants_poll(pool: asyncpg.Pool) -> None:
    seen = await commit(pool, (Effect("product", 9), Effect("variant", 9)))
    assert await pool.fetchval("SELECT array_agg(product_id) FROM stale_product") == [9]
    assert await pool.fetchval("SELECT array_agg(kind) FROM poll_request") == ["variants"]
    assert Effect("poll", "variants") in seen  # wakes the poll loop
    # A crash here loses nothing: the mark is in Postgres. Whoever polls next expands it.
    await mirror(pool, (901, 9, None), (902, 9, None))
    since = await pool.fetchval(Q["db_clock"])
    rows = await pool.fetch(Q["expand_stale_products"], since)
    assert {(r["kind"], r["id"]) for r in rows} == {
        ("variant", 901),
        ("variant", 902),
        ("product", 9),
    }
    rows = await pool.fetch("SELECT variant_id, reason FROM stale_variant")
    reasons = {r["variant_id"]: r["reason"] for r in rows}
    assert reasons == {9: f"webhook:{STOCK}", 901: f"webhook:{STOCK}", 902: f"webhook:{STOCK}"}
    assert await pool.fetchval("SELECT count(*) FROM stale_product") == 0


async def test_a_product_still_unknown_after_a_poll_is_dropped_only_if_older(
    pool: asyncpg.Pool,
) -> None:
    await commit(pool, (Effect("product", 5),))
    after_mark = await pool.fetchval(Q["db_clock"])
    # A poll that started before the mark keeps it (the next poll may still see the product).
    assert await pool.fetch(Q["expand_stale_products"], datetime(2000, 1, 1, tzinfo=UTC)) == []
    assert await pool.fetchval("SELECT count(*) FROM stale_product") == 1
    # A poll that started after it and still found no live variant drops it.
    rows = await pool.fetch(Q["expand_stale_products"], after_mark)
    assert [(r["kind"], r["id"]) for r in rows] == [("product", 5)]
    assert await pool.fetchval("SELECT count(*) FROM stale_variant") == 0


# ----- end to end: the daemon in-process against the simulators -----------------------------
@pytest.mark.parametrize("shape", ["variant", "product", "no_href"])
async def test_a_stock_event_alone_reaches_bigcommerce_within_seconds(
    world: World, db_url: str, shape: InventoryEventShape
) -> None:
    k = world.katana
    k.quirks = KatanaQuirks(inventory_event_shape=shape)
    a = k.add_location("Main", is_primary=True)
    first = k.add_product_variant("TH-A", in_stock={a: 5})
    second = k.add_product_variant("TH-B", in_stock={a: 7}, product_id=k.variants[first].parent_id)
    store = world.add_store("main", ["TH-A", "TH-B", "TH-NEW"])
    async with running_daemon(world, db_url, poll_interval_seconds=NO_POLLS) as daemon:
        await converge(world)
        k.adjust_stock(second, a, 4)  # Katana sends no webhook for an adjustment…
        k.emit(STOCK, second)  # …so this event, in the quirk's shape, is the only news
        started = time.monotonic()
        await eventually(lambda: store.sim.level("TH-B") == 11, limit=5)
        assert time.monotonic() - started < 5
        if shape == "variant":
            return
        # A product the mirror has never seen: an early variants poll, then its variants.
        # (Triggered polls are at most 10 s apart, so this can take up to ~10 s after start.)
        new = k.add_product_variant("TH-NEW", in_stock={a: 3})
        k.adjust_stock(new, a, 2)
        k.emit(STOCK, new)
        await eventually(lambda: store.sim.level("TH-NEW") == 5, limit=15)
        assert daemon.poller is not None
        assert daemon.poller.last_poll.get("movements", 0) < daemon.poller.last_poll["variants"]
        assert await daemon.db.pool.fetchval("SELECT count(*) FROM stale_product") == 0
        refs = daemon.metrics.webhook_inventory_refs.labels(shape)._value.get()
        assert refs >= 2


async def test_a_kept_product_mark_survives_a_restart(world: World, db_url: str) -> None:
    """The daemon stops after acknowledging a product it cannot expand yet (its variants poll
    fails); the next start polls variants first and expands the durable mark."""
    k = world.katana
    k.quirks = KatanaQuirks(inventory_event_shape="product")
    a = k.add_location("Main", is_primary=True)
    k.add_product_variant("RS-A", in_stock={a: 5})
    store = world.add_store("main", ["RS-A", "RS-NEW"])
    async with running_daemon(world, db_url, poll_interval_seconds=NO_POLLS) as daemon:
        await converge(world)
        k.fail_next(100_000, 500, path_prefix="/variants")  # no variants poll can succeed
        new = k.add_product_variant("RS-NEW", in_stock={a: 4})
        product = k.variants[new].parent_id
        k.emit(STOCK, new)
        await k.drain_webhooks(5)
        kept = await daemon.db.pool.fetchval("SELECT array_agg(product_id) FROM stale_product")
        assert kept == [product]  # acknowledged, durable, not expanded
    k.clear_faults()
    async with running_daemon(world, db_url, poll_interval_seconds=NO_POLLS) as daemon:
        await eventually(lambda: store.sim.level("RS-NEW") == 4, limit=10)
        assert await daemon.db.pool.fetchval("SELECT count(*) FROM stale_product") == 0


async def test_upgrading_a_mirror_asks_for_a_sweep_to_learn_products(pg_server_url: str) -> None:
    """Rows mirrored before migration 0003 have no product_id: the first start sweeps."""
    async with empty_database(pg_server_url, prefix="katsyncd_t_upgrade_") as url:
        conn = await asyncpg.connect(url)
        try:
            for mig in load_migrations():
                if mig.version < 3:
                    await conn.execute(mig.sql)
            await conn.execute(
                "INSERT INTO katana_variant (id, sku, type, created_at, updated_at)"
                " VALUES (1, 'OLD', 'product', now(), now())"
            )
            await conn.execute(next(m.sql for m in load_migrations() if m.version == 3))
            assert await conn.fetchval("SELECT array_agg(kind) FROM poll_request") == [
                "variant_sweep"
            ]
        finally:
            await conn.close()
