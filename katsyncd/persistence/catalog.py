"""Each store's SKU index (``bc_item``): BigCommerce's items by SKU, as the last catalogue
refresh read them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence

import asyncpg

from katsyncd.db import Q
from katsyncd.models import BcItem
from katsyncd.persistence import Executor
from katsyncd.persistence.mirror import live_variant_ids_by_skus
from katsyncd.persistence.stale import mark_variants

IndexEntry = tuple[str, str]  # (sku, tracking) of one item key


async def index(ex: Executor, store: str) -> dict[str, IndexEntry]:
    """The store's index: item key → (sku, tracking); untracked items included."""
    return {
        r["item_key"]: (r["sku"], r["tracking"]) for r in await ex.fetch(Q["bc_item_keys"], store)
    }


async def update_index(
    pool: asyncpg.Pool,
    store: str,
    changed: Sequence[BcItem],
    removed: Collection[str],
    *,
    mark: str | None = None,
) -> list[int]:
    """Upsert new or changed items and drop removed ones with their levels, in one
    transaction. With a ``mark`` reason, the live Katana variants of the changed tracked
    items' SKUs are marked stale in that transaction (a crash after it must not leave a new
    item unmarked: the next refresh finds the index equal); returns them."""
    ids: list[int] = []
    async with pool.acquire() as conn, conn.transaction():
        if changed:
            await conn.execute(
                Q["upsert_bc_items"],
                store,
                [i.item_key for i in changed],
                [i.sku for i in changed],
                [i.product_id for i in changed],
                [i.variant_id for i in changed],
                [i.tracking for i in changed],
            )
        if removed:
            await conn.execute(Q["delete_bc_items"], store, list(removed))
            await conn.execute(Q["delete_item_levels"], store, list(removed))
        skus = sorted({i.sku for i in changed if i.tracking != "none"})
        if mark is not None and skus:
            ids = await live_variant_ids_by_skus(conn, skus)
            await mark_variants(conn, dict.fromkeys(ids, mark))
    return ids


async def tracked_items(
    ex: Executor, stores: Collection[str], skus: Collection[str]
) -> dict[tuple[str, str], list[BcItem]]:
    """The stock-tracked items carrying these SKUs in these stores, by (store, sku)."""
    out: dict[tuple[str, str], list[BcItem]] = defaultdict(list)
    if not skus or not stores:
        return out
    for r in await ex.fetch(Q["bc_items_for_skus"], list(stores), list(skus)):
        out[(r["store"], r["sku"])].append(
            BcItem(r["sku"], r["product_id"], r["variant_id"], r["tracking"])
        )
    return out
