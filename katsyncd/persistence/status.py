"""What the ``/status`` document, the gauges and the readiness probe read, and push_log pruning."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg

from katsyncd.db import Q, pending_migrations


@dataclass(frozen=True, slots=True)
class StoreStats:
    """One store's ``item_level`` totals (zeros for a store with no items yet)."""

    items: int = 0
    backlog: int = 0
    dry_run_backlog: int = 0
    failed: int = 0
    last_push: float | None = None  # epoch seconds

    def pending(self, dry_run: bool) -> int:
        """The backlog the store's writer works through (dry-run records count in dry run)."""
        return self.dry_run_backlog if dry_run else self.backlog


async def store_stats(pool: asyncpg.Pool) -> dict[str, StoreStats]:
    return {
        r["store"]: StoreStats(
            items=r["items"],
            backlog=r["backlog"],
            dry_run_backlog=r["dry_run_backlog"],
            failed=r["failed"],
            last_push=r["last_push"],
        )
        for r in await pool.fetch(Q["store_stats"])
    }


async def unmatched_skus(pool: asyncpg.Pool, store: str) -> list[str]:
    """Live Katana product SKUs the store's catalogue lacks (S6), sorted."""
    return [r["sku"] for r in await pool.fetch(Q["unmatched_skus"], store)]


async def untracked_skus(pool: asyncpg.Pool, store: str) -> list[str]:
    """SKUs of the store's items with inventory tracking off, sorted."""
    return [r["sku"] for r in await pool.fetch(Q["untracked_skus"], store)]


async def recent_pushes(pool: asyncpg.Pool, store: str, limit: int) -> list[dict[str, Any]]:
    """The store's last pushes, newest first, as JSON-ready dicts."""
    out = []
    for r in await pool.fetch(Q["recent_pushes"], store, limit):
        row = dict(r)
        row["at"] = r["at"].isoformat()
        out.append(row)
    return out


async def watermarks(pool: asyncpg.Pool) -> dict[str, dict[str, str]]:
    """Every poll watermark, as ISO timestamps by poll kind."""
    return {
        r["kind"]: {
            "updated_at": r["updated_at"].isoformat(),
            "polled_at": r["polled_at"].isoformat(),
        }
        for r in await pool.fetch(Q["all_watermarks"])
    }


async def prune_push_log(pool: asyncpg.Pool, retention_days: int) -> None:
    """Delete push_log rows older than ``retention_days``."""
    await pool.execute(Q["prune_push_log"], retention_days)


async def database_check(pool: asyncpg.Pool, seconds: float) -> list[int]:
    """Postgres lends a connection and answers within ``seconds`` in all: the migrations not
    applied yet. Raises ``TimeoutError`` past the bound (a frozen server, a lock, a pool
    exhausted by hung queries), whichever step hangs. The check runs as its own task and is
    left to unwind in the background: giving a connection back to a frozen server can hang
    too, and the probe must answer regardless."""
    check = asyncio.ensure_future(_database_check(pool))
    try:
        done, _ = await asyncio.wait({check}, timeout=seconds)
    finally:
        if not check.done():
            check.cancel()
            check.add_done_callback(_retrieve)
    if not done:
        raise TimeoutError(f"database check over {seconds} s")
    return check.result()


async def _database_check(pool: asyncpg.Pool) -> list[int]:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
        return await pending_migrations(conn)


def _retrieve(task: asyncio.Future[list[int]]) -> None:
    if not task.cancelled():
        _ = task.exception()
