"""Incremental Katana polls (variants, sales orders, sales-order rows, inventory movements) and
the sales-order resolver that turns sales-order webhooks into stale variants.

Webhooks are hints; polls are the safety net for what sends no webhook (stock adjustments,
transfers) and for deliveries Katana gave up on. Each poll resumes from a watermark in
Postgres, so changes made while katsyncd was down are caught up on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from katsyncd.coldstart import ColdResult, ColdSweep
from katsyncd.db import Database
from katsyncd.engine import Engine
from katsyncd.katana import KatanaClient
from katsyncd.metrics import Metrics
from katsyncd.models import (
    OPEN_SO_STATUSES,
    KatanaVariant,
    Movement,
    Priority,
    SalesOrder,
    SalesOrderRowChange,
)
from katsyncd.persistence import mirror, stale, watermarks
from katsyncd.readorder import ReadOrder

log = structlog.get_logger(__name__)

WATERMARK_OVERLAP = timedelta(seconds=5)  # re-read a little: same-millisecond updates, skew
BOOTSTRAP_SKEW = timedelta(minutes=5)  # first watermark is this far before our clock
CLOCK_SKEW_MARGIN = timedelta(seconds=2)  # between Katana's clock and ours
MIN_TRIGGERED_POLL_SPACING_SECONDS = 10.0  # webhook-triggered polls coalesce to at most this
# sales_order_rows runs after sales_orders: a new order is mirrored before its rows are seen;
# variants after both: a cold start's first variants poll records levels, which need the
# open orders' commitments (S4) mirrored.
POLL_KINDS = ("sales_orders", "sales_order_rows", "variants", "movements", "variant_sweep")
# A full variant sweep finds archived variants (they vanish without a deleted_at); it costs
# ceil(variants / 250) requests, so webhook hints may trigger it at most this often.
MIN_SWEEP_SPACING_SECONDS = 300.0

MarkFn = Callable[[Collection[int], str], Awaitable[None]]
TimeFn = Callable[[Collection[int]], None]
PageCounter = Callable[[int, int | None], None]


@dataclass
class MirrorReplace:
    """What one full re-read of the open sales orders cost and changed."""

    orders: int = 0
    requests: int = 0
    marked: int = 0


class Poller:
    def __init__(
        self,
        db: Database,
        katana: KatanaClient,
        engine: Engine,
        metrics: Metrics,
        *,
        mark: MarkFn,
        mark_orders: MarkFn | None = None,
        timed: TimeFn | None = None,
        timed_orders: TimeFn | None = None,
        cold: ColdSweep | None = None,
        timed_commitments: TimeFn | None = None,
    ) -> None:
        self.db = db
        self.katana = katana
        self.engine = engine
        self.metrics = metrics
        self._mark = mark
        self._mark_orders = mark_orders
        # Marks a mirror write already made durable (in its own transaction) are only timed;
        # without these hooks (tests) they are marked again through mark / mark_orders.
        self._timed = timed
        self._timed_orders = timed_orders
        # The first variants poll of an empty mirror, as one /inventory?extend=variant sweep;
        # with it, every variant the mirror gains is levelled or marked (see catalog_may_start).
        self._cold = cold
        self._timed_commitments = timed_commitments  # only committed stock changed
        # Writes of orders or rows to the mirror happen under this lock, and skip what a read
        # started later already wrote (``ReadOrder``), so a write never replaces what a later
        # read already wrote; reads (which wait for tokens) hold no lock.
        self._orders_lock = asyncio.Lock()
        self._read_order = ReadOrder()
        self._orders_bootstrapped = False  # this process mirrored every open order itself
        self._seen_movements: dict[int, datetime] = {}
        self.last_poll: dict[str, float] = {}

    async def watermark(self, kind: str) -> datetime | None:
        return await watermarks.get(self.db.pool, kind)

    async def _marked(self, ids: Collection[int], reason: str) -> None:
        """Variants the mirror write that found them already marked durably: time them."""
        if not ids:
            return
        if self._timed is not None:
            self._timed(ids)
        else:
            await self._mark(ids, reason)

    async def _marked_orders(self, ids: Collection[int], reason: str) -> None:
        """Sales orders a mirror write already marked durably for resolving: time them."""
        if not ids:
            return
        if self._timed_orders is not None:
            self._timed_orders(ids)
        elif self._mark_orders is not None:
            await self._mark_orders(ids, reason)

    async def _set_watermark(self, kind: str, at: datetime) -> None:
        await watermarks.advance(self.db.pool, kind, at)
        self.metrics.poll_watermark.labels(kind).set(at.timestamp())

    async def poll(self, kind: str) -> int:
        """Run one poll of this kind; returns how many variants it marked stale."""
        fn = {
            "variants": self.poll_variants,
            "sales_orders": self.poll_sales_orders,
            "sales_order_rows": self.poll_sales_order_rows,
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
    def catalog_may_start(self) -> bool:
        """Whether a store's catalogue may be indexed before the mirror is complete: with a
        cold sweep every variant mirrored later gets its levels or a stale mark, so no SKU
        the catalogue names is missed."""
        return self._cold is not None

    async def poll_variants(self) -> int:
        since = await self.watermark("variants")
        start = datetime.now(UTC)
        db_start = await watermarks.db_clock(self.db.pool)
        if since is None and self._cold is not None:
            cold = await self._cold_sweep(self._cold)
            if cold is not None and cold.complete:
                await self._set_watermark("variants", cold.newest or start - BOOTSTRAP_SKEW)
                return await self.expand_product_marks(db_start)
        newest: datetime | None = None
        marked = 0
        # With a cold sweep a catalogue may be indexed already: what the mirror gains from
        # this read (the sweep's fallback) is marked, as on any later poll.
        plain = since is None and self._cold is None
        async for page in self.katana.variants(
            updated_at_min=None if since is None else since - WATERMARK_OVERLAP,
            include_deleted=since is not None,
            product_only=True,
            priority=Priority.POLL,
        ):
            marked += await self._apply_variants(page, bootstrap=plain)
            newest = (
                max([newest or page[0].updated_at, *(v.updated_at for v in page)])
                if page
                else newest
            )
        await self._set_watermark("variants", newest or (since or start - BOOTSTRAP_SKEW))
        return marked + await self.expand_product_marks(db_start)

    async def _cold_sweep(self, cold: ColdSweep) -> ColdResult | None:
        """The cold sweep, after the open orders are mirrored (its levels need them, S4)."""
        if await self.watermark("sales_orders") is None:
            await self.poll("sales_orders")
        return await cold.run()

    async def expand_product_marks(self, polled_since: datetime) -> int:
        """Product marks the mirror could not expand when their webhook was committed (see
        ``mark_products``): after a variants poll that started at ``polled_since`` (database
        clock), mark each product's live variants, in the transaction that deletes the product
        mark, so a crash in between loses nothing. Returns how many variants it marked."""
        taken = await stale.expand_product_marks(self.db.pool, polled_since)
        if not taken.variants and not taken.products:
            return 0
        ids, products = taken.variants, taken.products
        log.info("product_marks_expanded", products=products[:20], variants=len(ids))
        if ids:
            await self._mark(ids, "product_marked")
        return len(ids)

    async def _apply_variants(self, page: list[KatanaVariant], *, bootstrap: bool) -> int:
        products = [v for v in page if v.type == "product"]
        if not products:
            return 0
        if bootstrap:
            await mirror.upsert_variants(self.db.pool, products)
            return 0  # the catalogue index marks what matches once both sides are known
        ids = await mirror.apply_variants(self.db.pool, products, mark="variant_changed")
        await self._marked(ids, "variant_changed")
        return len(ids)

    async def sweep_variants(self) -> int:
        """Read every live variant; mirror rows Katana no longer lists (archived, or deleted
        without our seeing it) stop syncing (S10) and their SKUs are recomputed (S8)."""
        seen: list[int] = []
        db_start = await watermarks.db_clock(self.db.pool)
        async for page in self.katana.variants(
            include_deleted=False, product_only=True, priority=Priority.POLL
        ):
            await mirror.upsert_variants(self.db.pool, [v for v in page if v.type == "product"])
            seen.extend(v.id for v in page)
        gone, ids = await mirror.retire_absent_variants(self.db.pool, seen, mark="variant_gone")
        expanded = await self.expand_product_marks(db_start)
        if not gone:
            return expanded
        skus = sorted({sku for _, sku in gone if sku})
        log.info("variants_gone", count=len(gone), skus=skus[:20])
        await self._marked(ids, "variant_gone")
        return len(ids) + expanded

    # ----- sales orders ----------------------------------------------------------------------
    async def poll_sales_orders(self) -> int:
        since = await self.watermark("sales_orders")
        start = datetime.now(UTC)
        if since is None:
            async with self._orders_lock:
                newest = await self._bootstrap_sales_orders()
            self._orders_bootstrapped = True
            await self._set_watermark("sales_orders", newest or start - BOOTSTRAP_SKEW)
            return 0
        marked, newest = await self._orders_since(since - WATERMARK_OVERLAP, Priority.POLL)
        await self._set_watermark("sales_orders", max(newest or since, since))
        return marked

    async def _orders_since(
        self,
        since: datetime,
        priority: Priority,
        on_page: PageCounter | None = None,
        *,
        locked: bool = False,
    ) -> tuple[int, datetime | None]:
        marked, newest = 0, None
        ticket = self._read_order.start()
        try:
            async for page in self.katana.sales_orders(
                updated_at_min=since, include_deleted=True, priority=priority, on_page=on_page
            ):
                marked += await self._apply_orders(page, ticket=ticket, locked=locked)
                newest = max([newest or page[0].updated_at, *(o.updated_at for o in page)])
        finally:
            self._read_order.done(ticket)
        return marked, newest

    async def _bootstrap_sales_orders(self) -> datetime | None:
        """First start: mirror every open order (one filtered sweep per open status)."""
        newest: datetime | None = None
        for status in sorted(OPEN_SO_STATUSES):
            async for page in self.katana.sales_orders(
                status=status, include_deleted=False, priority=Priority.POLL
            ):
                await mirror.apply_sales_orders(self.db.pool, page)
                newest = (
                    max([newest or page[0].updated_at, *(o.updated_at for o in page)])
                    if page
                    else newest
                )
        return newest

    # ----- sales-order rows ------------------------------------------------------------------
    async def poll_sales_order_rows(self) -> int:
        """Rows changed since the watermark (soft-deleted ones included): Katana sends no row
        event and need not bump the order's ``updated_at`` when a row changes."""
        since = await self.watermark("sales_order_rows")
        start = datetime.now(UTC)
        if since is None:
            # Never every historical row: a first start has just mirrored the open orders; a
            # mirror from before this poll existed is replaced from the open orders once.
            marked = 0
            if not self._orders_bootstrapped and await self.watermark("sales_orders") is not None:
                marked = (await self.replace_open_sales_orders(Priority.POLL)).marked
            await self._set_watermark("sales_order_rows", start - BOOTSTRAP_SKEW)
            return marked
        marked, newest = await self._rows_since(since - WATERMARK_OVERLAP, Priority.POLL)
        await self._set_watermark("sales_order_rows", max(newest or since, since))
        return marked

    async def _rows_since(
        self,
        since: datetime,
        priority: Priority,
        on_page: PageCounter | None = None,
        *,
        locked: bool = False,
    ) -> tuple[int, datetime | None]:
        latest: dict[int, SalesOrderRowChange] = {}
        ticket = self._read_order.start()
        try:
            async for page in self.katana.sales_order_rows(
                updated_at_min=since, include_deleted=True, priority=priority, on_page=on_page
            ):
                for r in page:
                    seen = latest.get(r.id)
                    if seen is None or seen.updated_at <= r.updated_at:
                        latest[r.id] = r
            if not latest:
                return 0, None
            async with self._locked(locked):
                touched, unknown = await self._apply_rows(ticket, list(latest.values()))
        finally:
            self._read_order.done(ticket)
        await self._marked(touched, "sales_order_row")
        if unknown:
            log.info("sales_order_rows_unknown_orders", orders=sorted(unknown)[:20])
            await self._marked_orders(unknown, "sales_order_row")
        return len(touched), max(r.updated_at for r in latest.values())

    # ----- full re-read (reconcile) ----------------------------------------------------------
    async def replace_open_sales_orders(
        self, priority: Priority = Priority.RECONCILE
    ) -> MirrorReplace:
        """Re-read every open sales order from scratch and make the mirror exactly that, in one
        transaction, marking every variant whose committed sums changed. Costs one request per
        250 open orders of each open status (Katana's ``status`` filter takes one value), plus
        one request each for the orders and rows changed while the sweep ran, re-applied so a
        change a poll wrote meanwhile is not undone."""
        out = MirrorReplace()

        def count(done: int, total: int | None) -> None:
            out.requests += 1

        started = datetime.now(UTC)
        orders: dict[int, SalesOrder] = {}
        for status in sorted(OPEN_SO_STATUSES):
            async for page in self.katana.sales_orders(
                status=status, include_deleted=False, priority=priority, on_page=count
            ):
                orders.update((o.id, o) for o in page)
        out.orders = len(orders)
        async with self._orders_lock:
            barrier = self._read_order.start()
            try:
                touched = await mirror.replace_sales_orders(
                    self.db.pool, list(orders.values()), mark="sales_orders_reread"
                )
                # reads started before this point may be older than the sweep: the re-reads
                # below bring every change since the sweep started
                self._read_order.supersede_all(barrier)
            finally:
                self._read_order.done(barrier)
            since = started - WATERMARK_OVERLAP - CLOCK_SKEW_MARGIN
            quick = min(priority, Priority.POLL)  # short reads: do not hold the lock long
            marked, _ = await self._orders_since(since, quick, count, locked=True)
            rows_marked, _ = await self._rows_since(since, quick, count, locked=True)
        await self._marked(touched, "sales_orders_reread")
        out.marked = len(touched) + marked + rows_marked
        self._orders_bootstrapped = True
        for kind in ("sales_orders", "sales_order_rows"):
            if await self.watermark(kind) is None:
                await self._set_watermark(kind, started - BOOTSTRAP_SKEW)
        log.info(
            "sales_orders_reread",
            orders=out.orders,
            requests=out.requests,
            variants_changed=len(touched),
        )
        return out

    def _locked(self, held: bool) -> contextlib.AbstractAsyncContextManager[object]:
        """The orders lock, unless the caller already holds it."""
        return contextlib.nullcontext() if held else self._orders_lock

    async def _apply_rows(
        self, ticket: int, rows: list[SalesOrderRowChange]
    ) -> tuple[set[int], set[int]]:
        """Row changes to the mirror, but not those of orders a later read already wrote."""
        skip = self._read_order.superseded(ticket, {r.sales_order_id for r in rows})
        rows = [r for r in rows if r.sales_order_id not in skip]
        if not rows:
            return set(), set()
        out = await mirror.apply_row_changes(self.db.pool, rows, mark="sales_order_row")
        self._read_order.written(ticket, {r.sales_order_id for r in rows})
        return out

    async def _apply_orders(
        self,
        orders: list[SalesOrder],
        *,
        missing: Collection[int] = (),
        ticket: int | None = None,
        locked: bool = False,
    ) -> int:
        """Orders read (``missing``: asked for, not returned) to the mirror, but not those a
        read started after ``ticket`` already wrote; marks their variants."""
        async with self._locked(locked):
            if ticket is not None:
                skip = self._read_order.superseded(ticket, [*(o.id for o in orders), *missing])
                orders = [o for o in orders if o.id not in skip]
                missing = [i for i in missing if i not in skip]
            applied = await mirror.apply_sales_orders_split(
                self.db.pool, orders, missing=missing, mark="sales_order"
            )
            if ticket is not None:
                self._read_order.written(ticket, [*(o.id for o in orders), *missing])
        moved, committed = applied.stock_moved, applied.touched - applied.stock_moved
        await self._marked(moved, "sales_order")
        if committed and self._timed_commitments is not None:
            self._timed_commitments(committed)  # the level follows from the mirror (S4)
        else:
            await self._marked(committed, "sales_order")
        return len(applied.touched)

    async def resolve_sales_orders(self, so_ids: Collection[int]) -> int:
        """Read these orders now (a webhook named them), refresh the mirror, mark variants."""
        gens = await stale.sales_order_mark_gens(self.db.pool, so_ids)
        wanted = set(so_ids)
        found: set[int] = set()
        marked = 0
        if math.ceil(len(wanted) / self.katana.effective_ids_per_request) > 1:
            marked += await self._resolve_by_poll(wanted, found)
        rest = sorted(wanted - found)
        if rest:
            marked += await self._resolve_by_ids(rest)
        await stale.clear_sales_order_marks(self.db.pool, gens)
        return marked

    async def _resolve_by_ids(self, so_ids: list[int]) -> int:
        """Read these orders by id (no lock held while waiting for tokens) and write them."""
        ticket = self._read_order.start()
        try:
            fetched: list[SalesOrder] = []
            async for page in self.katana.sales_orders(
                ids=so_ids, include_deleted=True, priority=Priority.LIVE
            ):
                fetched.extend(page)
            missing = set(so_ids) - {o.id for o in fetched}
            return await self._apply_orders(fetched, missing=missing, ticket=ticket)
        finally:
            self._read_order.done(ticket)

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
        ticket = self._read_order.start()
        try:
            async with contextlib.aclosing(reader) as orders:
                async for page in orders:
                    marked += await self._apply_orders(page, ticket=ticket)
                    found.update(o.id for o in page if o.id in wanted)
                    newest = max([newest, *(o.updated_at for o in page)])
                    done, total = pages
                    left = math.ceil(len(wanted - found) / self.katana.effective_ids_per_request)
                    if done is not None and total is not None and total - done >= left:
                        complete = total <= done
                        break
        finally:
            self._read_order.done(ticket)
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
        newest, ids, seen = since, set(), {}
        by_variant: dict[int, list[Movement]] = {}
        async for page in self.katana.inventory_movements(
            updated_at_min=since - WATERMARK_OVERLAP, priority=Priority.POLL
        ):
            for m in page:
                if m.id not in self._seen_movements and not self._already_read(m):
                    ids.add(m.variant_id)
                by_variant.setdefault(m.variant_id, []).append(m)
                seen[m.id] = m.updated_at
                newest = max(newest, m.updated_at)
        ids = {v for v in ids if not self.engine.inventory_cache.reflects(by_variant[v])}
        if ids:
            await self._mark(ids, "inventory_movement")
        # Only now are these movements "seen": a read cut after some pages (an error) must not
        # make the next poll skip movements it never marked.
        self._seen_movements.update(seen)
        self._forget_movements(newest - 2 * WATERMARK_OVERLAP)
        await self._set_watermark("movements", newest)
        return len(ids)

    def _already_read(self, m: Movement) -> bool:
        """The variant was read after this movement happened (a webhook led to it)."""
        read = self.engine.last_read.get(m.variant_id)
        return read is not None and m.updated_at < read - CLOCK_SKEW_MARGIN

    def _forget_movements(self, before: datetime) -> None:
        self._seen_movements = {k: v for k, v in self._seen_movements.items() if v >= before}
