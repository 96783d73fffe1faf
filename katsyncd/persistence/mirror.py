"""The Katana mirror: variants, sales orders and their rows, winners per SKU, commitments.

Writes that compare with what is mirrored (variants, sales orders, rows) run in one transaction
each and return the variants whose levels may differ; given a ``mark`` reason they also mark
those variants stale in that transaction. They must: the next read of the same change finds the
mirror already equal and marks nothing, so a crash between a committed mirror write and a
separate mark would leave an item wrong with nothing pending (the kill -9 finding in
docs/RELIABILITY.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import asyncpg

from katsyncd.db import Q
from katsyncd.models import (
    STOCK_NEUTRAL_SO_STATUSES,
    InventoryRow,
    KatanaVariant,
    SalesOrder,
    SalesOrderRowChange,
)
from katsyncd.persistence import Conn, Executor
from katsyncd.persistence.stale import mark_sales_orders, mark_variants
from katsyncd.rules import CommitRow, pick_winner

# An order whose updated_at is within this of its created_at was never updated (a new order).
NEW_ORDER_SECONDS = 1.0
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


def variant_from_row(r: asyncpg.Record) -> KatanaVariant:
    return KatanaVariant(
        id=r["id"],
        sku=r["sku"],
        type=r["type"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        deleted_at=r["deleted_at"],
    )


# ----- variants -----------------------------------------------------------------------------
async def upsert_variants(ex: Executor, variants: Collection[KatanaVariant]) -> None:
    """Mirror these variants (an older copy never replaces a newer one)."""
    if not variants:
        return
    vs = latest_by_id(variants)  # one row per id, or ON CONFLICT fails the whole batch
    await ex.execute(
        Q["upsert_variants"],
        [v.id for v in vs],
        [v.sku for v in vs],
        [v.type for v in vs],
        [v.created_at for v in vs],
        [v.updated_at for v in vs],
        [v.deleted_at for v in vs],
        [v.product_id for v in vs],
    )


async def apply_variants(
    pool: asyncpg.Pool, products: Collection[KatanaVariant], *, mark: str
) -> set[int]:
    """Mirror these product variants read by a poll and, in the same transaction, mark stale
    every variant whose sync may differ: new ones, changed SKUs, deletions, and every live
    variant of the SKUs involved (S8). Returns the variants marked."""
    if not products:
        return set()
    async with pool.acquire() as conn, conn.transaction():
        before = {v.id: v.sku for v in await variants_by_ids(conn, [v.id for v in products])}
        await upsert_variants(conn, products)
        changed = [
            v
            for v in products
            if v.id not in before or before[v.id] != v.sku or v.deleted_at is not None
        ]
        if not changed:
            return set()
        skus = {v.sku for v in products if v.sku} | {s for s in before.values() if s}
        ids = set(await live_variant_ids_by_skus(conn, skus)) | {v.id for v in changed}
        await mark_variants(conn, dict.fromkeys(sorted(ids), mark))
    return ids


async def analyze(ex: Executor) -> None:
    """Refresh the planner's statistics of the mirror and the tables a cold start fills."""
    await ex.execute(Q["analyze_sync_tables"])


async def variants_by_ids(ex: Executor, ids: Collection[int]) -> list[KatanaVariant]:
    """The mirrored variants among ``ids`` (deleted ones included)."""
    return [variant_from_row(r) for r in await ex.fetch(Q["variants_by_ids"], list(ids))]


async def winners_for_skus(ex: Executor, skus: Collection[str]) -> dict[str, KatanaVariant]:
    """S8 over the mirror: the live product variant created latest, per SKU."""
    cands: dict[str, list[KatanaVariant]] = defaultdict(list)
    for r in await ex.fetch(Q["live_variants_by_skus"], list(skus)):
        cands[r["sku"]].append(variant_from_row(r))
    winners = {sku: pick_winner(vs) for sku, vs in cands.items()}
    return {sku: v for sku, v in winners.items() if v is not None}


async def live_variant_ids_by_skus(ex: Executor, skus: Collection[str]) -> list[int]:
    """Every live product variant carrying one of these SKUs."""
    return [r["id"] for r in await ex.fetch(Q["live_variant_ids_by_skus"], list(skus))]


async def mark_variants_gone(ex: Executor, ids: Collection[int]) -> None:
    """These variants stopped syncing (S10) without a ``deleted_at`` we saw: delete them now."""
    await ex.execute(Q["mark_variants_gone"], sorted(ids))


async def delete_absent_variants(
    ex: Executor, seen: Collection[int]
) -> list[tuple[int, str | None]]:
    """After a full sweep: every live product variant not in ``seen`` is deleted now; returns
    (id, sku) of each."""
    return [
        (r["id"], r["sku"]) for r in await ex.fetch(Q["mark_absent_variants_deleted"], list(seen))
    ]


async def retire_absent_variants(
    pool: asyncpg.Pool, seen: Collection[int], *, mark: str
) -> tuple[list[tuple[int, str | None]], set[int]]:
    """``delete_absent_variants`` and, in the same transaction, mark stale the variants gone
    and every live variant of their SKUs (the next winner, S8). Returns ((id, sku) gone,
    variants marked)."""
    async with pool.acquire() as conn, conn.transaction():
        gone = await delete_absent_variants(conn, seen)
        if not gone:
            return gone, set()
        skus = sorted({sku for _, sku in gone if sku})
        ids = set(await live_variant_ids_by_skus(conn, skus)) | {i for i, _ in gone}
        await mark_variants(conn, dict.fromkeys(sorted(ids), mark))
    return gone, ids


async def live_product_skus(ex: Executor) -> set[str]:
    """Every SKU a live Katana product variant carries (S6, S10)."""
    return {r["sku"] for r in await ex.fetch(Q["live_product_skus"])}


async def duplicate_live_skus(ex: Executor) -> dict[str, list[int]]:
    """S8: SKUs carried by more than one live product variant, with every such variant id."""
    return {r["sku"]: list(r["ids"]) for r in await ex.fetch(Q["duplicate_live_skus"])}


# ----- sales orders and rows ------------------------------------------------------------------
async def apply_sales_orders(
    pool: asyncpg.Pool,
    orders: Collection[SalesOrder],
    *,
    missing: Collection[int] = (),
    mark: str | None = None,
) -> set[int]:
    """Refresh the sales-order mirror; returns the variants whose commitments may differ
    (marked stale with reason ``mark``, if given, in the same transaction).

    Orders identical to the mirror (a poll's overlap, a webhook for an edit that did not
    touch rows or status) change nothing and mark nothing. ``missing`` are orders Katana no
    longer returns: they leave the mirror.
    """
    return (await apply_sales_orders_split(pool, orders, missing=missing, mark=mark)).touched


@dataclass(frozen=True, slots=True)
class OrdersApplied:
    touched: set[int]  # variants whose commitments may differ
    stock_moved: set[int]  # of those, variants whose stock an order's change may have moved


def stock_neutral(before: OrderSignature | None, after: SalesOrder | None) -> bool:
    """Pure: whether an order's change moved no stock (only commitments changed): it is and
    was NOT_SHIPPED/PENDING (or is new, created so), or was NOT_SHIPPED and was deleted.
    Anything else (packed, delivered, moved back, an unknown earlier state) may have."""
    was = None if before is None else before[0]
    if after is None or after.deleted_at is not None:
        return was in STOCK_NEUTRAL_SO_STATUSES
    if after.status not in STOCK_NEUTRAL_SO_STATUSES:
        return False
    if was is not None:
        return was in STOCK_NEUTRAL_SO_STATUSES
    return _is_new(after)


def _is_new(o: SalesOrder) -> bool:
    """Never updated since it was created (so never packed or delivered)."""
    if o.created_at is None:
        return False
    return abs((o.updated_at - o.created_at).total_seconds()) <= NEW_ORDER_SECONDS


async def apply_sales_orders_split(
    pool: asyncpg.Pool,
    orders: Collection[SalesOrder],
    *,
    missing: Collection[int] = (),
    mark: str | None = None,
) -> OrdersApplied:
    """``apply_sales_orders``, telling apart the variants of orders whose change may have
    moved stock (``stock_neutral``)."""
    orders = latest_by_id(orders)  # a read may repeat an order; upsert each once
    seen = {o.id for o in orders}
    missing = sorted(set(missing) - seen)
    so_ids = [o.id for o in orders] + missing
    if not so_ids:
        return OrdersApplied(set(), set())
    async with pool.acquire() as conn, conn.transaction():
        before = await _mirrored_orders(conn, so_ids)
        changed = [o for o in orders if before.get(o.id) != order_signature(o)]
        gone = [i for i in missing if i in before]
        ids = [o.id for o in changed] + gone
        if not ids:
            return OrdersApplied(set(), set())
        old_rows = await conn.fetch(Q["so_rows_for_orders"], ids)
        await conn.execute(Q["delete_so_rows"], ids)
        if gone:
            await conn.execute(Q["delete_sales_orders"], gone)
        if changed:
            await _insert_orders(conn, changed)
        by_order = _variants_by_order(old_rows, changed)
        touched = {v for vs in by_order.values() for v in vs}
        after = {o.id: o for o in changed}
        moved = {
            v
            for so_id, vs in by_order.items()
            if not stock_neutral(before.get(so_id), after.get(so_id))
            for v in vs
        }
        if mark is not None:
            await mark_variants(conn, dict.fromkeys(sorted(touched), mark))
    return OrdersApplied(touched, moved)


def _variants_by_order(
    old_rows: Collection[asyncpg.Record], changed: Collection[SalesOrder]
) -> dict[int, set[int]]:
    out: dict[int, set[int]] = defaultdict(set)
    for r in old_rows:
        out[r["so_id"]].add(r["variant_id"])
    for o in changed:
        out[o.id].update(r.variant_id for r in o.rows)
    return out


async def replace_sales_orders(
    pool: asyncpg.Pool, orders: Collection[SalesOrder], *, mark: str | None = None
) -> set[int]:
    """Make the sales-order mirror exactly ``orders`` (a full re-read of the open orders),
    in one transaction; returns the variants whose committed sums changed (marked stale with
    reason ``mark``, if given, in that transaction)."""
    async with pool.acquire() as conn, conn.transaction():
        before = await _commit_sums(conn)
        await conn.execute(Q["delete_all_sales_orders"])  # rows go with them (cascade)
        if orders:
            await _insert_orders(conn, orders)
        after = await _commit_sums(conn)
        changed = {v for v in before.keys() | after.keys() if before.get(v) != after.get(v)}
        if mark is not None:
            await mark_variants(conn, dict.fromkeys(sorted(changed), mark))
    return changed


async def apply_row_changes(
    pool: asyncpg.Pool, rows: Collection[SalesOrderRowChange], *, mark: str | None = None
) -> tuple[set[int], set[int]]:
    """Bring mirrored orders' rows in line with these (one transaction); returns (variants
    whose committed stock may differ, orders not in the mirror that need resolving), both
    marked with reason ``mark``, if given, in that transaction."""
    so_ids = sorted({r.sales_order_id for r in rows})
    touched: set[int] = set()
    unknown: set[int] = set()
    async with pool.acquire() as conn, conn.transaction():
        known = {r["id"] for r in await conn.fetch(Q["known_sales_order_ids"], so_ids)}
        live = {r["id"] for r in await conn.fetch(Q["live_sales_order_ids"], so_ids)}
        mirrored = {
            r["row_id"]: r for r in await conn.fetch(Q["so_rows_by_row_ids"], [r.id for r in rows])
        }
        upserts: list[SalesOrderRowChange] = []
        deletes: list[int] = []
        for r in rows:
            if r.sales_order_id not in known:
                if r.deleted_at is None:  # a deleted row of an unknown order commits nothing
                    unknown.add(r.sales_order_id)
                continue
            if r.sales_order_id not in live:
                continue  # a deleted order's rows commit nothing and are not mirrored
            cur = mirrored.get(r.id)
            if r.deleted_at is not None:
                if cur is not None:
                    deletes.append(r.id)
                    touched.add(cur["variant_id"])
                continue
            now = (r.variant_id, r.location_id, r.quantity)
            if cur is None or (cur["variant_id"], cur["location_id"], cur["quantity"]) != now:
                upserts.append(r)
                touched.add(r.variant_id)  # moved: the new variant gains the commitment...
                if cur is not None:
                    touched.add(cur["variant_id"])  # ...and the old one loses it
        if deletes:
            await conn.execute(Q["delete_so_rows_by_row_ids"], deletes)
        if upserts:
            await conn.execute(
                Q["upsert_so_rows"],
                [r.sales_order_id for r in upserts],
                [r.id for r in upserts],
                [r.variant_id for r in upserts],
                [r.location_id for r in upserts],
                [r.quantity for r in upserts],
            )
        if mark is not None:
            await mark_variants(conn, dict.fromkeys(sorted(touched), mark))
            await mark_sales_orders(conn, dict.fromkeys(sorted(unknown), mark))
    return touched, unknown


async def commitments(ex: Executor, variant_ids: Collection[int]) -> dict[int, list[CommitRow]]:
    """The live sales-order rows of these variants, as the rules read them (S4, S5)."""
    out: dict[int, list[CommitRow]] = defaultdict(list)
    if not variant_ids:
        return out
    for r in await ex.fetch(Q["commit_rows_for_variants"], list(variant_ids)):
        out[r["variant_id"]].append(
            CommitRow(
                r["variant_id"], r["location_id"], r["quantity"], r["status"], r["from_channel"]
            )
        )
    return out


async def _commit_sums(conn: Conn) -> dict[int, set[tuple[Any, ...]]]:
    """Per variant: (location, status, from channel, summed quantity) of live orders."""
    out: dict[int, set[tuple[Any, ...]]] = defaultdict(set)
    for r in await conn.fetch(Q["commit_sums"]):
        out[r["variant_id"]].add((r["location_id"], r["status"], r["from_channel"], r["quantity"]))
    return out


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


async def _insert_orders(conn: Conn, orders: Collection[SalesOrder]) -> None:
    os_ = list(orders)
    await conn.execute(
        Q["upsert_sales_orders"],
        [o.id for o in os_],
        [o.status for o in os_],
        [o.location_id for o in os_],
        [o.ecommerce_order_type is not None for o in os_],
        [o.updated_at for o in os_],
        [o.deleted_at for o in os_],
        [o.order_no for o in os_],
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


# ----- the inventory each level was computed from (shown by `katsyncd explain`) ----------------
async def record_inventory(pool: asyncpg.Pool, rows: Mapping[int, Sequence[InventoryRow]]) -> None:
    """Replace what is recorded of these variants' stock per location with this read."""
    if not rows:
        return
    flat = [r for v in rows.values() for r in v]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q["forget_inventory"], list(rows))
        await conn.execute(
            Q["record_inventory"],
            [r.variant_id for r in flat],
            [r.location_id for r in flat],
            [r.in_stock for r in flat],
        )
