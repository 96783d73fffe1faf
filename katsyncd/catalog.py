"""Per-store SKU index (S6, S7): BigCommerce's stock-tracked items by SKU, kept in Postgres.

A refresh reads the catalogue in pages, stores what changed, and marks the Katana variants of
new or re-SKU'd items stale so they get a level without waiting for a Katana change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import structlog

from katsyncd.bigcommerce import BigCommerceClient
from katsyncd.db import Database
from katsyncd.models import BcItem
from katsyncd.persistence import catalog

log = structlog.get_logger(__name__)

MarkFn = Callable[[Collection[int], str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CatalogStats:
    items: int
    added: int
    removed: int
    untracked: int


def diff_index(
    current: dict[str, tuple[str, str]], fresh: Collection[BcItem]
) -> tuple[list[BcItem], list[str]]:
    """Pure: items new or changed (sku/tracking) and keys that disappeared."""
    seen = {i.item_key for i in fresh}
    changed = [i for i in fresh if current.get(i.item_key) != (i.sku, i.tracking)]
    removed = [k for k in current if k not in seen]
    return changed, removed


async def refresh_catalog(
    store: str, client: BigCommerceClient, db: Database, mark: MarkFn
) -> CatalogStats:
    return await apply_catalog(store, await read_catalog(client), db, mark)


async def read_catalog(client: BigCommerceClient) -> list[BcItem]:
    """Every stock item of the store's catalogue (reads only: safe to abandon)."""
    fresh: list[BcItem] = []
    async for page in client.catalog_items():
        fresh.extend(page)
    return fresh


async def apply_catalog(
    store: str, fresh: list[BcItem], db: Database, mark: MarkFn
) -> CatalogStats:
    """Store what changed in the index and mark the variants of new or re-SKU'd items."""
    current = await catalog.index(db.pool, store)
    changed, removed = diff_index(current, fresh)
    # Marked durably with the index change; ``mark`` again only times them (it bumps the
    # marks' generation: at worst one more read).
    ids = await catalog.update_index(db.pool, store, changed, removed, mark="catalog")
    if ids:
        await mark(ids, "catalog")
    stats = CatalogStats(
        len(fresh), len(changed), len(removed), sum(1 for i in fresh if i.tracking == "none")
    )
    log.info(
        "catalog_refreshed",
        store=store,
        items=stats.items,
        added=stats.added,
        removed=stats.removed,
        untracked=stats.untracked,
    )
    return stats
