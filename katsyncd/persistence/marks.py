"""Stale marks in Postgres: variants and sales orders waiting to be read, and polls asked for.

The durable half of the stale marks (``katsyncd.marks`` keeps the in-memory timing). The
webhook path writes its marks inside the group commit; everything else marks through here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from katsyncd.db import Q

MARK_CHUNK = 10000  # ids per statement (keeps one statement's arrays bounded)


async def mark_variants(pool: asyncpg.Pool, ids: Collection[int], reason: str) -> None:
    """Mark variants stale (``ids`` sorted and without repeats: one row each)."""
    ordered = sorted(set(ids))
    for i in range(0, len(ordered), MARK_CHUNK):
        chunk = ordered[i : i + MARK_CHUNK]
        await pool.execute(Q["mark_variants"], chunk, [reason] * len(chunk))


async def mark_sales_orders(pool: asyncpg.Pool, ids: Collection[int], reason: str) -> None:
    """Mark sales orders for resolution."""
    ordered = sorted(set(ids))
    if ordered:
        await pool.execute(Q["mark_sales_orders"], ordered, [reason] * len(ordered))


async def stale_variants(pool: asyncpg.Pool) -> list[tuple[int, float]]:
    """Every variant marked stale, with the age of its mark in seconds."""
    return [(r["variant_id"], r["age"]) for r in await pool.fetch(Q["load_stale_variants"])]


async def stale_sales_orders(pool: asyncpg.Pool) -> list[tuple[int, float]]:
    """Every sales order marked for resolution, with the age of its mark in seconds."""
    return [(r["so_id"], r["age"]) for r in await pool.fetch(Q["load_stale_sales_orders"])]


@dataclass(frozen=True, slots=True)
class VariantMarks:
    """The marks of a batch about to be read: what clears them (``gens``) and why."""

    gens: dict[int, int]
    since: dict[int, datetime]
    reason: str


async def variant_marks(pool: asyncpg.Pool, ids: list[int]) -> VariantMarks:
    rows = await pool.fetch(Q["stale_variant_gens"], ids)
    return VariantMarks(
        gens={r["variant_id"]: r["gen"] for r in rows},
        since={r["variant_id"]: r["first_marked_at"] for r in rows},
        reason=",".join(sorted({r["reason"] for r in rows})) or "stale",
    )


async def take_poll_requests(pool: asyncpg.Pool) -> set[str]:
    """The poll kinds asked for (by webhooks), removed as they are taken."""
    return {r["kind"] for r in await pool.fetch(Q["take_poll_requests"])}


async def request_polls(pool: asyncpg.Pool, kinds: list[str]) -> None:
    """Ask for these polls again (a request taken too soon after the last poll of its kind)."""
    await pool.execute(Q["request_polls"], kinds)


async def store_variant_ids(pool: asyncpg.Pool, store: str) -> list[int]:
    """The live variants whose SKUs the store's catalogue matches (to mark on a rules change)."""
    skus = [r["sku"] for r in await pool.fetch(Q["matched_skus"], [store])]
    return [r["id"] for r in await pool.fetch(Q["live_variant_ids_by_skus"], skus)]
