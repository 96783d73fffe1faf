"""What the status page and ``katsyncd explain`` read (issue 13). Reads only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from katsyncd.db import Q
from katsyncd.models import KatanaVariant
from katsyncd.persistence import Executor
from katsyncd.persistence.mirror import variant_from_row

CSV_BATCH = 1000  # rows fetched per round trip while a CSV export streams


async def variants_with_sku(ex: Executor, sku: str) -> list[KatanaVariant]:
    """Every mirrored Katana variant carrying exactly this SKU (live or not), newest first."""
    return [variant_from_row(r) for r in await ex.fetch(Q["variants_with_sku"], sku)]


async def inventory_of(ex: Executor, variant_id: int) -> list[asyncpg.Record]:
    """The variant's stock per Katana location as last read (location_id, in_stock, read_at)."""
    return list(await ex.fetch(Q["inventory_of_variant"], variant_id))


async def order_rows_of(ex: Executor, variant_id: int) -> list[asyncpg.Record]:
    """The variant's rows on mirrored (not deleted) sales orders, with order number and status."""
    return list(await ex.fetch(Q["order_rows_of_variant"], variant_id))


async def items_with_sku(ex: Executor, sku: str, stores: Collection[str]) -> list[asyncpg.Record]:
    """The stores' catalogue items with this SKU, each with its ``item_level`` row(s) if any."""
    return list(await ex.fetch(Q["items_with_sku"], sku, list(stores)))


async def pushes_of_sku(
    ex: Executor, sku: str, stores: Collection[str], limit: int
) -> list[asyncpg.Record]:
    return list(await ex.fetch(Q["pushes_of_sku"], sku, list(stores), limit))


@dataclass(frozen=True, slots=True)
class PushFilter:
    """A ``/pushes`` query: every field optional; ``before_id`` pages (keyset)."""

    store: str | None = None
    sku: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None

    def args(self) -> tuple[Any, ...]:
        return (self.store, self.sku, self.since, self.until, self.before_id)


async def push_page(ex: Executor, f: PushFilter, limit: int) -> list[asyncpg.Record]:
    """Up to ``limit`` push_log rows matching ``f``, newest first."""
    return list(await ex.fetch(Q["push_page"], *f.args(), limit))


async def stream_pushes(pool: asyncpg.Pool, f: PushFilter) -> AsyncIterator[asyncpg.Record]:
    """Every push_log row matching ``f``, newest first, in keyset batches (no long cursor
    holds a connection while a slow client reads)."""
    before = f.before_id
    while True:
        page = await push_page(
            pool, PushFilter(f.store, f.sku, f.since, f.until, before), CSV_BATCH
        )
        for row in page:
            yield row
        if len(page) < CSV_BATCH:
            return
        before = page[-1]["id"]


async def push_lag(ex: Executor) -> dict[str, asyncpg.Record]:
    """Per store: lag p50/p99 (seconds) over the last hour and levels written in 5 minutes."""
    return {r["store"]: r for r in await ex.fetch(Q["push_lag"])}


async def sku_agreement(ex: Executor) -> dict[str, asyncpg.Record]:
    """Per store: SKUs matched, and how many are right (pushed; recorded in dry run)."""
    return {r["store"]: r for r in await ex.fetch(Q["sku_agreement"])}


async def failed_items(ex: Executor, store: str, limit: int) -> list[asyncpg.Record]:
    """Items BigCommerce rejected, with its reason."""
    return list(await ex.fetch(Q["failed_items"], store, limit))


async def unmatched_page(
    ex: Executor, store: str, side: str, query: str, limit: int, offset: int
) -> list[str]:
    """Unmatched SKUs of one side (``katana``: Katana has them, the store lacks them;
    ``bigcommerce``: the reverse) containing ``query``, sorted."""
    name = "unmatched_katana_page" if side == "katana" else "unmatched_bigcommerce_page"
    return [r["sku"] for r in await ex.fetch(Q[name], store, query, limit, offset)]


async def unmatched_bigcommerce_count(ex: Executor, store: str) -> int:
    return int(await ex.fetchval(Q["unmatched_bigcommerce_count"], store))
