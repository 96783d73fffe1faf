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
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import asyncpg
import structlog

from katsyncd.db import Conn, Database, Q
from katsyncd.katana import KatanaClient
from katsyncd.metrics import Metrics
from katsyncd.models import (
    BcItem,
    InventoryRow,
    KatanaVariant,
    Priority,
    SalesOrder,
)
from katsyncd.rules import CommitRow, LevelRules, compute_level, pick_winner

log = structlog.get_logger(__name__)


@dataclass
class StoreView:
    """What the engine needs to know about a store (built from config, swapped on reload)."""

    name: str
    rules: LevelRules
    location_id: int  # S12: BigCommerce location written to
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class Level:
    store: str
    item_key: str
    location_id: int
    sku: str
    variant_id: int
    quantity: int


def variant_from_row(r: asyncpg.Record) -> KatanaVariant:
    return KatanaVariant(
        id=r["id"],
        sku=r["sku"],
        type=r["type"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        deleted_at=r["deleted_at"],
    )


OrderSignature = tuple[
    str, int | None, bool, bool, tuple[tuple[int, int, int | None, Decimal], ...]
]


def order_signature(o: SalesOrder) -> OrderSignature:
    """What of an order the commitments depend on (pure)."""
    live = o.deleted_at is None
    rows = (
        tuple(sorted((r.id, r.variant_id, r.location_id, r.quantity) for r in o.rows))
        if live
        else ()
    )
    return (o.status, o.location_id, o.ecommerce_order_type is not None, not live, rows)


class _HasIdAndStamp(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def updated_at(self) -> datetime: ...


_Identified = TypeVar("_Identified", bound=_HasIdAndStamp)


def latest_by_id(rows: Iterable[_Identified]) -> list[_Identified]:
    """One row per id, the most recently updated (first seen on a tie), in first-seen order."""
    out: dict[int, _Identified] = {}
    for row in rows:
        kept = out.get(row.id)
        if kept is None or row.updated_at > kept.updated_at:
            out[row.id] = row
    return list(out.values())


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

    # ----- mirror maintenance -------------------------------------------------------------
    async def upsert_variants(self, variants: Collection[KatanaVariant]) -> None:
        if not variants:
            return
        vs = latest_by_id(variants)  # one row per id, or ON CONFLICT fails the whole batch
        await self.db.pool.execute(
            Q["upsert_variants"],
            [v.id for v in vs],
            [v.sku for v in vs],
            [v.type for v in vs],
            [v.created_at for v in vs],
            [v.updated_at for v in vs],
            [v.deleted_at for v in vs],
            [v.product_id for v in vs],
        )

    async def apply_sales_orders(
        self, orders: Collection[SalesOrder], *, missing: Collection[int] = ()
    ) -> set[int]:
        """Refresh the sales-order mirror; returns the variants whose commitments may differ.

        Orders identical to the mirror (a poll's overlap, a webhook for an edit that did not
        touch rows or status) change nothing and mark nothing.
        """
        orders = latest_by_id(orders)  # a read may repeat an order; upsert each once
        seen = {o.id for o in orders}
        missing = sorted(set(missing) - seen)
        so_ids = [o.id for o in orders] + missing
        if not so_ids:
            return set()
        async with self.db.pool.acquire() as conn, conn.transaction():
            before = await self._mirrored_orders(conn, so_ids)
            changed = [o for o in orders if before.get(o.id) != order_signature(o)]
            gone = [i for i in missing if i in before]
            ids = [o.id for o in changed] + gone
            if not ids:
                return set()
            touched = {r["variant_id"] for r in await conn.fetch(Q["so_row_variants"], ids)}
            await conn.execute(Q["delete_so_rows"], ids)
            if gone:
                await conn.execute(Q["delete_sales_orders"], gone)
            if changed:
                await self._insert_orders(conn, changed)
        touched.update(r.variant_id for o in changed for r in o.rows)
        return touched

    async def replace_sales_orders(self, orders: Collection[SalesOrder]) -> set[int]:
        """Make the sales-order mirror exactly ``orders`` (a full re-read of the open orders),
        in one transaction; returns the variants whose committed sums changed."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            before = await self._commit_sums(conn)
            await conn.execute(Q["delete_all_sales_orders"])  # rows go with them (cascade)
            if orders:
                await self._insert_orders(conn, orders)
            after = await self._commit_sums(conn)
        return {v for v in before.keys() | after.keys() if before.get(v) != after.get(v)}

    @staticmethod
    async def _commit_sums(conn: Conn) -> dict[int, set[tuple[Any, ...]]]:
        """Per variant: (location, status, from channel, summed quantity) of live orders."""
        out: dict[int, set[tuple[Any, ...]]] = defaultdict(set)
        for r in await conn.fetch(Q["commit_sums"]):
            out[r["variant_id"]].add(
                (r["location_id"], r["status"], r["from_channel"], r["quantity"])
            )
        return out

    @staticmethod
    async def _mirrored_orders(conn: Conn, so_ids: list[int]) -> dict[int, OrderSignature]:
        rows: dict[int, list[tuple[int, int, int | None, Decimal]]] = defaultdict(list)
        for r in await conn.fetch(Q["so_rows_for_orders"], so_ids):
            rows[r["so_id"]].append((r["row_id"], r["variant_id"], r["location_id"], r["quantity"]))
        return {
            o["id"]: (
                o["status"],
                o["location_id"],
                o["from_channel"],
                o["deleted_at"] is not None,
                tuple(sorted(rows[o["id"]])),
            )
            for o in await conn.fetch(Q["sales_orders_by_ids"], so_ids)
        }

    async def _insert_orders(self, conn: Conn, orders: Collection[SalesOrder]) -> None:
        os_ = list(orders)
        await conn.execute(
            Q["upsert_sales_orders"],
            [o.id for o in os_],
            [o.status for o in os_],
            [o.location_id for o in os_],
            [o.ecommerce_order_type is not None for o in os_],
            [o.updated_at for o in os_],
            [o.deleted_at for o in os_],
        )
        rows = [(o.id, r) for o in os_ if o.deleted_at is None for r in o.rows]
        if rows:
            await conn.execute(
                Q["insert_so_rows"],
                [so for so, _ in rows],
                [r.id for _, r in rows],
                [r.variant_id for _, r in rows],
                [r.location_id for _, r in rows],
                [r.quantity for _, r in rows],
            )

    # ----- the read-compute-record step ----------------------------------------------------
    async def refresh(
        self,
        variant_ids: Collection[int],
        *,
        reason: str,
        priority: Priority = Priority.LIVE,
        gens: Mapping[int, int] | None = None,
        stale_since: Mapping[int, datetime] | None = None,
    ) -> int:
        """Recompute the levels of these variants' SKUs in every store; returns levels changed.

        ``gens`` are the stale-mark generations to clear once the levels are recorded.
        """
        winners = await self._winners_for(variant_ids, priority)
        items = await self._items_for(winners.keys())
        inventory = await self._read_winners(winners, items, priority)
        if await self._confirm_live(winners, inventory, priority):
            # A winner without inventory rows was deleted or archived since the mirror saw it
            # (S10): with the mirror corrected, the next winner of its SKU (if any) is read.
            winners = await self.winners_for_skus(list(winners))
            inventory = await self._read_winners(winners, items, priority)
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
    ) -> dict[int, list[InventoryRow]]:
        """Bulk-read the inventory of winners that some store sells (never per variant)."""
        skus = {sku for _, sku in items}
        read = {v.id for sku, v in winners.items() if sku in skus}
        if not read:
            return {}
        self.reads += 1
        started = datetime.now(UTC)
        rows = group_inventory(await self.katana.inventory(read, priority=priority))
        self.last_read.update(dict.fromkeys(read, started))
        return rows

    async def _confirm_live(
        self,
        winners: Mapping[str, KatanaVariant],
        inventory: Mapping[int, list[InventoryRow]],
        priority: Priority,
    ) -> bool:
        """Re-read winners that came back with no inventory rows; True if any is gone.

        Katana's /inventory leaves out deleted and archived variants, so "no rows" is either a
        variant with no stock records yet or one that stopped syncing. /variants tells which.
        """
        empty = [v.id for v in winners.values() if v.id not in inventory]
        if not empty:
            return False
        seen = await self._fetch_variants(empty, priority)
        gone = {v.id for v in seen if v.deleted_at is not None}
        gone |= set(empty) - {v.id for v in seen}  # archived: hidden from /variants too
        await self.upsert_variants([v for v in seen if v.deleted_at is not None])
        if gone - {v.id for v in seen}:
            await self.db.pool.execute(Q["mark_variants_gone"], sorted(gone - {v.id for v in seen}))
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
        commits = await self._commitments({v.id for v in winners.values()})
        stores = list(self._stores())
        levels = desired_levels(winners, inventory, commits, items, stores)
        since = self._since_by_sku(winners, variant_ids, stale_since)
        changed = await self._store_levels(levels, reason, since, gens)
        for s in stores:
            if any(lv.store == s.name for lv in changed):
                s.wake.set()
        return len(changed)

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
        rows = await self.db.pool.fetch(Q["variants_by_ids"], list(variant_ids))
        known = {r["id"] for r in rows}
        unknown = [v for v in variant_ids if v not in known]
        if unknown:
            fetched = await self._fetch_variants(unknown, priority)
            await self.upsert_variants(fetched)
            rows = await self.db.pool.fetch(Q["variants_by_ids"], list(variant_ids))
        skus = sorted({r["sku"] for r in rows if r["sku"]})
        return await self.winners_for_skus(skus)

    async def winners_for_skus(self, skus: Collection[str]) -> dict[str, KatanaVariant]:
        """S8 over the mirror: the live product variant created latest, per SKU."""
        cands: dict[str, list[KatanaVariant]] = defaultdict(list)
        for r in await self.db.pool.fetch(Q["live_variants_by_skus"], list(skus)):
            cands[r["sku"]].append(variant_from_row(r))
        winners = {sku: pick_winner(vs) for sku, vs in cands.items()}
        return {sku: v for sku, v in winners.items() if v is not None}

    async def _fetch_variants(self, ids: list[int], priority: Priority) -> list[KatanaVariant]:
        out: list[KatanaVariant] = []
        async for page in self.katana.variants_by_ids(ids, priority=priority):
            out.extend(page)
        return out

    async def _items_for(self, skus: Collection[str]) -> dict[tuple[str, str], list[BcItem]]:
        names = [s.name for s in self._stores()]
        out: dict[tuple[str, str], list[BcItem]] = defaultdict(list)
        if not skus or not names:
            return out
        for r in await self.db.pool.fetch(Q["bc_items_for_skus"], names, list(skus)):
            out[(r["store"], r["sku"])].append(
                BcItem(r["sku"], r["product_id"], r["variant_id"], r["tracking"])
            )
        return out

    async def items_for(self, skus: Collection[str]) -> dict[tuple[str, str], list[BcItem]]:
        return await self._items_for(skus)

    async def _commitments(self, variant_ids: Collection[int]) -> dict[int, list[CommitRow]]:
        out: dict[int, list[CommitRow]] = defaultdict(list)
        if not variant_ids:
            return out
        for r in await self.db.pool.fetch(Q["commit_rows_for_variants"], list(variant_ids)):
            out[r["variant_id"]].append(
                CommitRow(
                    r["variant_id"], r["location_id"], r["quantity"], r["status"], r["from_channel"]
                )
            )
        return out

    async def _store_levels(
        self,
        levels: list[Level],
        reason: str,
        since: Mapping[str, datetime],
        gens: Mapping[int, int] | None,
    ) -> list[Level]:
        async with self.db.pool.acquire() as conn, conn.transaction():
            changed = await self._changed_levels(conn, levels)
            if changed:
                await conn.execute(
                    Q["upsert_levels"],
                    [lv.store for lv in changed],
                    [lv.item_key for lv in changed],
                    [lv.location_id for lv in changed],
                    [lv.sku for lv in changed],
                    [lv.variant_id for lv in changed],
                    [lv.quantity for lv in changed],
                    [reason] * len(changed),
                    [since.get(lv.sku) for lv in changed],
                )
            if gens:
                await conn.execute(Q["clear_stale_variants"], list(gens), list(gens.values()))
        return changed

    async def _changed_levels(self, conn: Conn, levels: list[Level]) -> list[Level]:
        """Drop levels equal to what is already desired; count those BigCommerce already has."""
        if not levels:
            return []
        current: dict[tuple[str, str, int], Any] = {
            (r["store"], r["item_key"], r["location_id"]): r
            for r in await conn.fetch(
                Q["levels_for"], list({lv.store for lv in levels}), [lv.item_key for lv in levels]
            )
        }
        changed = []
        for lv in levels:
            cur = current.get((lv.store, lv.item_key, lv.location_id))
            if cur is not None and cur["pushed"] == lv.quantity:
                self.metrics.bc_writes_skipped.labels(lv.store).inc()
            if cur is None or cur["desired"] != lv.quantity:
                changed.append(lv)
        return changed
