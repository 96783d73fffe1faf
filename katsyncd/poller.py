"""Incremental Katana polls (variants, sales orders, inventory movements) and the sales-order
resolver that turns sales-order webhooks into stale variants.

Webhooks are hints; polls are the safety net for what sends no webhook (stock adjustments,
transfers) and for deliveries Katana gave up on. Each poll resumes from a watermark in
Postgres, so changes made while katsyncd was down are caught up on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta

import structlog

from katsyncd.db import Database, Q
from katsyncd.engine import Engine
from katsyncd.katana import KatanaClient
from katsyncd.metrics import Metrics
from katsyncd.models import OPEN_SO_STATUSES, KatanaVariant, Movement, Priority, SalesOrder

log = structlog.get_logger(__name__)

WATERMARK_OVERLAP = timedelta(seconds=5)  # re-read a little: same-millisecond updates, skew
BOOTSTRAP_SKEW = timedelta(minutes=5)  # first watermark is this far before our clock
CLOCK_SKEW_MARGIN = timedelta(seconds=2)  # between Katana's clock and ours
MIN_TRIGGERED_POLL_SPACING_SECONDS = 10.0  # webhook-triggered polls coalesce to at most this
POLL_KINDS = ("variants", "sales_orders", "movements", "variant_sweep")
# A full variant sweep finds archived variants (they vanish without a deleted_at); it costs
# ceil(variants / 250) requests, so webhook hints may trigger it at most this often.
MIN_SWEEP_SPACING_SECONDS = 300.0

MarkFn = Callable[[Collection[int], str], Awaitable[None]]


class Poller:
    def __init__(
        self,
        db: Database,
        katana: KatanaClient,
        engine: Engine,
        metrics: Metrics,
        *,
        mark: MarkFn,
    ) -> None:
        self.db = db
        self.katana = katana
        self.engine = engine
        self.metrics = metrics
        self._mark = mark
        self._seen_movements: dict[int, datetime] = {}
        self.last_poll: dict[str, float] = {}

    async def watermark(self, kind: str) -> datetime | None:
        value: datetime | None = await self.db.pool.fetchval(Q["get_watermark"], kind)
        return value

    async def _set_watermark(self, kind: str, at: datetime) -> None:
        await self.db.pool.execute(Q["set_watermark"], kind, at)
        self.metrics.poll_watermark.labels(kind).set(at.timestamp())

    async def poll(self, kind: str) -> int:
        """Run one poll of this kind; returns how many variants it marked stale."""
        fn = {
            "variants": self.poll_variants,
            "sales_orders": self.poll_sales_orders,
            "movements": self.poll_movements,
            "variant_sweep": self.sweep_variants,
        }[kind]
        try:
            marked = await fn()
        except Exception:
            self.metrics.poll_runs.labels(kind, "error").inc()
            raise
        self.metrics.poll_runs.labels(kind, "ok").inc()
        self.last_poll[kind] = asyncio.get_running_loop().time()
        return marked

    # ----- variants --------------------------------------------------------------------------
    async def poll_variants(self) -> int:
        since = await self.watermark("variants")
        start = datetime.now(UTC)
        newest: datetime | None = None
        marked = 0
        async for page in self.katana.variants(
            updated_at_min=None if since is None else since - WATERMARK_OVERLAP,
            include_deleted=since is not None,
            product_only=True,
            priority=Priority.POLL,
        ):
            marked += await self._apply_variants(page, bootstrap=since is None)
            newest = (
                max([newest or page[0].updated_at, *(v.updated_at for v in page)])
                if page
                else newest
            )
        await self._set_watermark("variants", newest or (since or start - BOOTSTRAP_SKEW))
        return marked

    async def _apply_variants(self, page: list[KatanaVariant], *, bootstrap: bool) -> int:
        products = [v for v in page if v.type == "product"]
        if not products:
            return 0
        before = {
            r["id"]: r["sku"]
            for r in await self.db.pool.fetch(Q["variants_by_ids"], [v.id for v in products])
        }
        await self.engine.upsert_variants(products)
        if bootstrap:
            return 0  # the catalogue index marks what matches once both sides are known
        skus = {v.sku for v in products if v.sku} | {s for s in before.values() if s}
        changed = [
            v
            for v in products
            if v.id not in before or before[v.id] != v.sku or v.deleted_at is not None
        ]
        if not changed:
            return 0
        ids = {r["id"] for r in await self.db.pool.fetch(Q["live_variant_ids_by_skus"], list(skus))}
        ids |= {v.id for v in changed}
        await self._mark(ids, "variant_changed")
        return len(ids)

    async def sweep_variants(self) -> int:
        """Read every live variant; mirror rows Katana no longer lists (archived, or deleted
        without our seeing it) stop syncing (S10) and their SKUs are recomputed (S8)."""
        seen: list[int] = []
        async for page in self.katana.variants(
            include_deleted=False, product_only=True, priority=Priority.POLL
        ):
            await self.engine.upsert_variants([v for v in page if v.type == "product"])
            seen.extend(v.id for v in page)
        gone = await self.db.pool.fetch(Q["mark_absent_variants_deleted"], seen)
        if not gone:
            return 0
        skus = sorted({r["sku"] for r in gone if r["sku"]})
        ids = {r["id"] for r in await self.db.pool.fetch(Q["live_variant_ids_by_skus"], skus)}
        ids |= {r["id"] for r in gone}
        log.info("variants_gone", count=len(gone), skus=skus[:20])
        await self._mark(ids, "variant_gone")
        return len(ids)

    # ----- sales orders ----------------------------------------------------------------------
    async def poll_sales_orders(self) -> int:
        since = await self.watermark("sales_orders")
        start = datetime.now(UTC)
        if since is None:
            newest = await self._bootstrap_sales_orders()
            await self._set_watermark("sales_orders", newest or start - BOOTSTRAP_SKEW)
            return 0
        marked, newest = 0, since
        async for page in self.katana.sales_orders(
            updated_at_min=since - WATERMARK_OVERLAP, include_deleted=True, priority=Priority.POLL
        ):
            marked += await self._apply_orders(page)
            newest = max([newest, *(o.updated_at for o in page)])
        await self._set_watermark("sales_orders", newest)
        return marked

    async def _bootstrap_sales_orders(self) -> datetime | None:
        """First start: mirror every open order (one filtered sweep per open status)."""
        newest: datetime | None = None
        for status in sorted(OPEN_SO_STATUSES):
            async for page in self.katana.sales_orders(
                status=status, include_deleted=False, priority=Priority.POLL
            ):
                await self.engine.apply_sales_orders(page)
                newest = (
                    max([newest or page[0].updated_at, *(o.updated_at for o in page)])
                    if page
                    else newest
                )
        return newest

    async def _apply_orders(
        self, orders: list[SalesOrder], *, missing: Collection[int] = ()
    ) -> int:
        touched = await self.engine.apply_sales_orders(orders, missing=missing)
        if touched:
            await self._mark(touched, "sales_order")
        return len(touched)

    async def resolve_sales_orders(self, so_ids: Collection[int]) -> int:
        """Read these orders now (a webhook named them), refresh the mirror, mark variants."""
        gens = {
            r["so_id"]: r["gen"]
            for r in await self.db.pool.fetch(Q["stale_sales_order_gens"], list(so_ids))
        }
        wanted = set(so_ids)
        found: set[int] = set()
        marked = 0
        if math.ceil(len(wanted) / self.katana.effective_ids_per_request) > 1:
            marked += await self._resolve_by_poll(wanted, found)
        rest = sorted(wanted - found)
        fetched: list[SalesOrder] = []
        if rest:
            async for page in self.katana.sales_orders(
                ids=rest, include_deleted=True, priority=Priority.LIVE
            ):
                fetched.extend(page)
        missing = set(rest) - {o.id for o in fetched}
        marked += await self._apply_orders(fetched, missing=missing)
        if gens:
            await self.db.pool.execute(
                Q["clear_stale_sales_orders"], list(gens), list(gens.values())
            )
        return marked

    async def _resolve_by_poll(self, wanted: set[int], found: set[int]) -> int:
        """Read orders by an incremental ``updated_at_min`` poll while its remaining pages are
        fewer than the id chunks still needed (a webhook-named order was just updated, so the
        poll usually holds it). Every order read is applied (they are current facts); the ids
        seen are added to ``found``; the rest are left to id chunks. Returns variants marked.
        """
        since = await self.watermark("sales_orders")
        if since is None:
            return 0
        pages: list[int | None] = [None, None]

        def on_page(done: int, total: int | None) -> None:
            pages[0], pages[1] = done, total

        marked, newest, complete = 0, since, True
        reader = self.katana.sales_orders(
            updated_at_min=since - WATERMARK_OVERLAP,
            include_deleted=True,
            priority=Priority.LIVE,
            on_page=on_page,
        )
        async with contextlib.aclosing(reader) as orders:
            async for page in orders:
                marked += await self._apply_orders(page)
                found.update(o.id for o in page if o.id in wanted)
                newest = max([newest, *(o.updated_at for o in page)])
                done, total = pages
                left = math.ceil(len(wanted - found) / self.katana.effective_ids_per_request)
                if done is not None and total is not None and total - done >= left:
                    complete = total <= done
                    break
        if complete:
            await self._set_watermark("sales_orders", newest)
        self.metrics.katana_read_plans.labels(endpoint="/sales_orders", plan="poll").inc()
        return marked

    # ----- inventory movements ---------------------------------------------------------------
    async def poll_movements(self) -> int:
        since = await self.watermark("movements")
        start = datetime.now(UTC)
        if since is None:
            await self._set_watermark("movements", start - BOOTSTRAP_SKEW)
            return 0
        newest, ids = since, set()
        async for page in self.katana.inventory_movements(
            updated_at_min=since - WATERMARK_OVERLAP, priority=Priority.POLL
        ):
            for m in page:
                if m.id not in self._seen_movements and not self._already_read(m):
                    ids.add(m.variant_id)
                self._seen_movements[m.id] = m.updated_at
                newest = max(newest, m.updated_at)
        if ids:
            await self._mark(ids, "inventory_movement")
        self._forget_movements(newest - 2 * WATERMARK_OVERLAP)
        await self._set_watermark("movements", newest)
        return len(ids)

    def _already_read(self, m: Movement) -> bool:
        """The variant was read after this movement happened (a webhook led to it)."""
        read = self.engine.last_read.get(m.variant_id)
        return read is not None and m.updated_at < read - CLOCK_SKEW_MARGIN

    def _forget_movements(self, before: datetime) -> None:
        self._seen_movements = {k: v for k, v in self._seen_movements.items() if v >= before}
