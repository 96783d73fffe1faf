"""From the database to the explanation's inputs (the one read path for page and terminal)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from katsyncd.config import StoreConfig
from katsyncd.models import KatanaLocation
from katsyncd.persistence import locations as stored_locations
from katsyncd.persistence import ui as stored
from katsyncd.rules import CommitRow, pick_winner
from katsyncd.stores import store_rules
from katsyncd.ui.explain import Inputs, ItemState, OrderRow, PushRow, StockAt, StoreInput

RECENT_PUSHES = 20


async def load_inputs(pool: asyncpg.Pool, stores: Sequence[StoreConfig], sku: str) -> Inputs:
    """Everything recorded about ``sku`` for these stores."""
    variants = await stored.variants_with_sku(pool, sku)
    winner = pick_winner(variants)
    stock, orders = [], []
    if winner is not None:
        stock = [_stock(r) for r in await stored.inventory_of(pool, winner.id)]
        orders = [_order(r) for r in await stored.order_rows_of(pool, winner.id)]
    known = await stored_locations.all_locations(pool)
    names = [s.name for s in stores]
    items = await stored.items_with_sku(pool, sku, names)
    pushes = await stored.pushes_of_sku(pool, sku, names, RECENT_PUSHES)
    return Inputs(
        sku=sku,
        variants=tuple(variants),
        stock=tuple(stock),
        orders=tuple(orders),
        locations={loc.id: loc.name for loc in known},
        stores=tuple(_store(s, known, items) for s in stores),
        pushes=tuple(_push(r) for r in pushes),
    )


def _stock(r: asyncpg.Record) -> StockAt:
    return StockAt(r["location_id"], r["in_stock"], r["read_at"])


def _order(r: asyncpg.Record) -> OrderRow:
    row = CommitRow(
        r["variant_id"], r["location_id"], r["quantity"], r["status"], r["from_channel"]
    )
    return OrderRow(r["so_id"], r["order_no"], row)


def _push(r: asyncpg.Record) -> PushRow:
    return PushRow(
        r["at"],
        r["store"],
        r["item_key"],
        r["old_quantity"],
        r["new_quantity"],
        r["reason"],
        r["outcome"],
    )


def _store(sc: StoreConfig, known: list[KatanaLocation], items: list[asyncpg.Record]) -> StoreInput:
    mine = [r for r in items if r["store"] == sc.name]
    return StoreInput(
        name=sc.name,
        rules=store_rules(sc, known),
        bc_location_id=sc.location_id,
        stock_sync=sc.stock_sync,
        dry_run=sc.dry_run,
        items=tuple(_item(r) for r in mine if r["location_id"] in (None, sc.location_id)),
    )


def _item(r: asyncpg.Record) -> ItemState:
    return ItemState(
        item_key=r["item_key"],
        tracking=r["tracking"],
        desired=r["desired"],
        desired_at=r["desired_at"],
        reason=r["reason"],
        pushed=r["pushed"],
        pushed_at=r["pushed_at"],
        dry_run_recorded=r["dry_run_recorded"],
        failed_desired=r["failed_desired"],
        failed_reason=r["failed_reason"],
    )
