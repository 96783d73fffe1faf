"""Stale-mark statements that components run inside their own transactions: the webhook group
commit's marks, the product-mark expansion after a variants poll, the clears that go with
recorded levels or a resolved sales order.

(The daemon's own mark reads and writes, outside any other transaction, are the daemon
breakup's ``persistence/marks.py``.)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from katsyncd.db import Q
from katsyncd.persistence import Conn, Executor


@dataclass(slots=True)
class ProductMarks:
    """What product marks became: variants marked, and products the mirror does not know yet
    (kept in ``stale_product`` until a variants poll can expand them) or, on expansion, took."""

    variants: set[int] = field(default_factory=set)
    products: list[int] = field(default_factory=list)


async def mark_variants(conn: Conn, reasons: Mapping[int, str]) -> None:
    """Mark these variants stale (variant id → reason)."""
    if reasons:
        await conn.execute(Q["mark_variants"], list(reasons), list(reasons.values()))


async def mark_sales_orders(conn: Conn, reasons: Mapping[int, str]) -> None:
    """Mark these sales orders for resolving (order id → reason)."""
    if reasons:
        await conn.execute(Q["mark_sales_orders"], list(reasons), list(reasons.values()))


async def mark_products(conn: Conn, reasons: Mapping[int, str]) -> ProductMarks:
    """Mark every live product variant the mirror knows of each product; a product it does not
    know is kept (``ProductMarks.products``) for the next variants poll to expand."""
    out = ProductMarks()
    if not reasons:
        return out
    for r in await conn.fetch(Q["mark_products"], list(reasons), list(reasons.values())):
        if r["kind"] == "variant":
            out.variants.add(r["id"])
        else:
            out.products.append(r["id"])
    out.products.sort()
    return out


async def request_polls(conn: Conn, kinds: Collection[str]) -> None:
    """Ask the daemon's schedule for these polls soon (durably)."""
    if kinds:
        await conn.execute(Q["request_polls"], sorted(kinds))


async def expand_product_marks(pool: asyncpg.Pool, polled_since: datetime) -> ProductMarks:
    """After a variants poll that started at ``polled_since`` (database clock): kept product
    marks the mirror can now expand become variant marks, in the statement that deletes them
    (``ProductMarks.products``: every product mark taken)."""
    out = ProductMarks()
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(Q["expand_stale_products"], polled_since)
    for r in rows:
        if r["kind"] == "variant":
            out.variants.add(r["id"])
        else:
            out.products.append(r["id"])
    out.products.sort()
    return out


async def clear_variant_marks(conn: Conn, gens: Mapping[int, int]) -> None:
    """Clear variant marks still at these generations (variant id → gen)."""
    if gens:
        await conn.execute(Q["clear_stale_variants"], list(gens), list(gens.values()))


async def sales_order_mark_gens(ex: Executor, so_ids: Collection[int]) -> dict[int, int]:
    """The current generation of each of these sales orders' marks (unmarked ones left out)."""
    return {r["so_id"]: r["gen"] for r in await ex.fetch(Q["stale_sales_order_gens"], list(so_ids))}


async def clear_sales_order_marks(ex: Executor, gens: Mapping[int, int]) -> None:
    """Clear sales-order marks still at these generations (order id → gen)."""
    if gens:
        await ex.execute(Q["clear_stale_sales_orders"], list(gens), list(gens.values()))
