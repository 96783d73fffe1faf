"""The sync engine: from "these variants may be stale" to desired levels per store.

Reads Katana in bulk, applies the pure rules, and records each store's desired levels in the
same transaction that clears the stale marks it answered. Writers (one per store) push the
difference between desired and pushed levels.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from katsyncd.db import Database
from katsyncd.invcache import InventoryCache
from katsyncd.katana import KatanaClient
from katsyncd.metrics import Metrics
from katsyncd.models import BcItem, InventoryRow, KatanaVariant, Priority
from katsyncd.models import Level as Level  # re-exported: reconcile and tests name it here
from katsyncd.persistence import catalog, levels, mirror
from katsyncd.rules import CommitRow, LevelRules, compute_level

log = structlog.get_logger(__name__)


@dataclass
class StoreView:
    """What the engine needs to know about a store (built from config, swapped on reload)."""

    name: str
    rules: LevelRules
    location_id: int  # S12: BigCommerce location written to
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def group_inventory(rows: Iterable[InventoryRow]) -> dict[int, list[InventoryRow]]:
    out: dict[int, list[InventoryRow]] = defaultdict(list)
    for r in rows:
        out[r.variant_id].append(r)
    return out


def desired_levels(
    winners: Mapping[str, KatanaVariant],
    inventory: Mapping[int, list[InventoryRow]],
    commitments: Mapping[int, list[CommitRow]],
    items: Mapping[tuple[str, str], list[BcItem]],
    stores: Collection[StoreView],
) -> list[Level]:
    """Pure: every (store, item) level implied by the winners (S6, S7, S9)."""
    out: list[Level] = []
    for store in stores:
        for sku, v in winners.items():
            targets = items.get((store.name, sku), [])
            if not targets:
                continue
            q = compute_level(inventory.get(v.id, []), commitments.get(v.id, []), store.rules)
            out.extend(
                Level(store.name, it.item_key, store.location_id, sku, v.id, q) for it in targets
            )
    return out


class Engine:
    """Owns the read-compute-record step. Safe to call concurrently for disjoint variants."""

    def __init__(
        self,
        db: Database,
        katana: KatanaClient,
        metrics: Metrics,
        *,
        stores: Callable[[], Collection[StoreView]],
    ) -> None:
        self.db = db
        self.katana = katana
        self.metrics = metrics
        self._stores = stores
        self.reads = 0
        # When each variant's inventory was last read (its read started): a stock movement
        # older than that is already reflected and needs no second read.
        self.last_read: dict[int, datetime] = {}
        # Rows read last, kept while nothing says the stock moved (only commitments changed).
        self.inventory_cache = InventoryCache()

    # ----- the read-compute-record step ----------------------------------------------------
    async def refresh(
        self,
        variant_ids: Collection[int],
        *,
        reason: str,
        priority: Priority = Priority.LIVE,
        gens: Mapping[int, int] | None = None,
        stale_since: Mapping[int, datetime] | None = None,
        stop_if_lowered: bool = False,
    ) -> int:
        """Recompute the levels of these variants' SKUs in every store; returns levels changed.

        ``gens`` are the stale-mark generations to clear once the levels are recorded.
        ``stop_if_lowered``: see ``KatanaClient.inventory`` (``IdsLimitLowered``, nothing
        recorded).
        """
        winners = await self._winners_for(variant_ids, priority)
        items = await self._items_for(winners.keys())
        inventory = await self._read_winners(winners, items, priority, stop_if_lowered)
        if await self._confirm_live(winners, inventory, items, priority):
            # A winner without inventory rows was deleted or archived since the mirror saw it
            # (S10): with the mirror corrected, the next winner of its SKU (if any) is read.
            winners = await self.winners_for_skus(list(winners))
            inventory = await self._read_winners(winners, items, priority, stop_if_lowered)
        return await self.record(
            winners,
            inventory,
            items,
            reason=reason,
            gens=gens,
            stale_since=stale_since,
            variant_ids=variant_ids,
        )

    async def _read_winners(
        self,
        winners: Mapping[str, KatanaVariant],
        items: Mapping[tuple[str, str], list[BcItem]],
        priority: Priority,
        stop_if_lowered: bool = False,
    ) -> dict[int, list[InventoryRow]]:
        """Bulk-read the inventory of winners that some store sells (never per variant)."""
        skus = {sku for _, sku in items}
        wanted = {v.id for sku, v in winners.items() if sku in skus}
        cache = self.inventory_cache
        rows = {v: r for v in wanted if (r := cache.rows(v)) is not None}
        read = wanted - rows.keys()
        if rows:
            self.metrics.inventory_cache_hits.inc(len(rows))
        if not read:
            return rows
        self.reads += 1
        started = datetime.now(UTC)
        pending = cache.begin(read)
        try:
            got = await self.katana.inventory(
                read, priority=priority, stop_if_lowered=stop_if_lowered
            )
            fresh = group_inventory(got)
        finally:
            cache.abandon(pending)
        cache.end(pending, fresh)
        self.last_read.update(dict.fromkeys(read, started))
        return rows | fresh

    async def _confirm_live(
        self,
        winners: Mapping[str, KatanaVariant],
        inventory: Mapping[int, list[InventoryRow]],
        items: Mapping[tuple[str, str], list[BcItem]],
        priority: Priority,
    ) -> bool:
        """Re-read winners that came back with no inventory rows; True if any is gone.

        Katana's /inventory leaves out deleted and archived variants, so "no rows" is either a
        variant with no stock records yet or one that stopped syncing. /variants tells which.
        Only winners that were read count (``_read_winners`` reads those some store sells).
        """
        sold = {sku for _, sku in items}
        empty = [v.id for sku, v in winners.items() if sku in sold and v.id not in inventory]
        if not empty:
            return False
        seen = await self._fetch_variants(empty, priority)
        gone = {v.id for v in seen if v.deleted_at is not None}
        gone |= set(empty) - {v.id for v in seen}  # archived: hidden from /variants too
        await mirror.upsert_variants(self.db.pool, [v for v in seen if v.deleted_at is not None])
        if gone - {v.id for v in seen}:
            await mirror.mark_variants_gone(self.db.pool, gone - {v.id for v in seen})
        return bool(gone)

    async def record(
        self,
        winners: Mapping[str, KatanaVariant],
        inventory: Mapping[int, list[InventoryRow]],
        items: Mapping[tuple[str, str], list[BcItem]],
        *,
        reason: str,
        gens: Mapping[int, int] | None = None,
        stale_since: Mapping[int, datetime] | None = None,
        variant_ids: Collection[int] = (),
    ) -> int:
        """Compute levels from inventory already read and record them with the mark clear."""
        await mirror.record_inventory(self.db.pool, inventory)  # what explain shows
        commits = await mirror.commitments(self.db.pool, {v.id for v in winners.values()})
        stores = list(self._stores())
        wanted = desired_levels(winners, inventory, commits, items, stores)
        since = self._since_by_sku(winners, variant_ids, stale_since)
        stored = await levels.store_levels(self.db.pool, wanted, reason, since, gens)
        for store, n in stored.already_pushed.items():
            self.metrics.bc_writes_skipped.labels(store).inc(n)
        for s in stores:
            if any(lv.store == s.name for lv in stored.changed):
                s.wake.set()
        return len(stored.changed)

    @staticmethod
    def _since_by_sku(
        winners: Mapping[str, KatanaVariant],
        variant_ids: Collection[int],
        stale_since: Mapping[int, datetime] | None,
    ) -> dict[str, datetime]:
        now = datetime.now(UTC)
        if not stale_since:
            return dict.fromkeys(winners, now)
        oldest = min((stale_since[v] for v in variant_ids if v in stale_since), default=now)
        return dict.fromkeys(winners, oldest)

    async def _winners_for(
        self, variant_ids: Collection[int], priority: Priority
    ) -> dict[str, KatanaVariant]:
        known = await mirror.variants_by_ids(self.db.pool, variant_ids)
        mirrored = {v.id for v in known}
        unknown = [v for v in variant_ids if v not in mirrored]
        if unknown:
            fetched = await self._fetch_variants(unknown, priority)
            await mirror.upsert_variants(self.db.pool, fetched)
            known = await mirror.variants_by_ids(self.db.pool, variant_ids)
        skus = sorted({v.sku for v in known if v.sku})
        return await self.winners_for_skus(skus)

    async def winners_for_skus(self, skus: Collection[str]) -> dict[str, KatanaVariant]:
        """S8 over the mirror: the live product variant created latest, per SKU."""
        return await mirror.winners_for_skus(self.db.pool, skus)

    async def _fetch_variants(self, ids: list[int], priority: Priority) -> list[KatanaVariant]:
        out: list[KatanaVariant] = []
        async for page in self.katana.variants_by_ids(ids, priority=priority):
            out.extend(page)
        return out

    async def _items_for(self, skus: Collection[str]) -> dict[tuple[str, str], list[BcItem]]:
        names = [s.name for s in self._stores()]
        return await catalog.tracked_items(self.db.pool, names, skus)

    async def items_for(self, skus: Collection[str]) -> dict[tuple[str, str], list[BcItem]]:
        return await self._items_for(skus)
