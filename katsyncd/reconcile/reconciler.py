"""Full reconcile: the whole catalogue re-read in bulk and compared with BigCommerce's levels.

Webhooks can be lost and some Katana changes send none, and a merchant can edit a level by
hand in BigCommerce; the reconcile repairs all of it. It refreshes the mirrors (variants, sales
orders) and each store's SKU index, reads the WHOLE Katana inventory (one request per 250 rows,
never per variant), computes every matched item's level with the engine's pure rules, reads
what BigCommerce holds now, and reports the difference per store.

Unless it is a dry run, the levels are recorded through the engine and what BigCommerce was
seen holding is recorded as ``pushed``, so the difference between desired and pushed is exactly
what BigCommerce lacks: the daemon's writers push that, or ``katsyncd reconcile`` pushes it
itself. The sweep can be minutes old by the time it is recorded, so a level that contradicts one
katsyncd recorded earlier is re-read (in bulk, at reconcile priority) before it is trusted: the
live path may have recorded a fresher value meanwhile (``suspect_variants``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from katsyncd.bigcommerce import BigCommerceClient
from katsyncd.catalog import refresh_catalog
from katsyncd.db import Database
from katsyncd.engine import Engine, Level, StoreView, desired_levels
from katsyncd.katana import PageHook
from katsyncd.models import (
    AbsoluteItem,
    BcItem,
    InventoryRow,
    KatanaVariant,
    Priority,
)
from katsyncd.persistence import catalog, mirror, watermarks
from katsyncd.persistence import levels as stored_levels
from katsyncd.poller import Poller
from katsyncd.reconcile.report import (
    DiffRow,
    LevelKey,
    ReconcileReport,
    SkuSides,
    StoreReport,
    compare_skus,
    diff_levels,
    duplicates_in,
    suspect_variants,
)

log = structlog.get_logger(__name__)

RECONCILE_REASON = "reconcile"  # item_level.reason of what a reconcile records
PUSH_REASON = "katsyncd: reconcile"  # BigCommerce adjustment reason of the CLI's writes


def log_progress(done: int, total: int | None) -> None:
    """Plain progress lines (daemon, or a CLI whose stdout is not a terminal)."""
    log.info("reconcile_progress", pages_done=done, pages_total=total)


# ----- the reconciler --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReconcileTarget:
    """One store to reconcile. ``dry_run``: compute and report, record and write nothing."""

    view: StoreView
    client: BigCommerceClient
    dry_run: bool = False

    @property
    def name(self) -> str:
        return self.view.name


@dataclass
class _Plan:
    """What the mirrors say before the sweep: the SKU sides per store and who wins each SKU."""

    sides: dict[str, SkuSides]
    winners: dict[str, KatanaVariant]
    items: dict[tuple[str, str], list[BcItem]]
    live_ids: dict[str, list[int]]  # duplicated SKUs only


@dataclass
class _Seen:
    """What BigCommerce holds for one store's items, and when (database clock) it was read."""

    at: datetime
    levels: dict[str, int] = field(default_factory=dict)


async def _no_mark(ids: Collection[int], reason: str) -> None:
    """The reconcile computes every level itself; the catalogue refresh need not mark."""


class Reconciler:
    """One full reconcile of some stores (see the module docstring). Holds no state between runs."""

    def __init__(self, db: Database, engine: Engine, poller: Poller) -> None:
        self.db = db
        self.engine = engine
        self.poller = poller
        self.katana = engine.katana

    async def run(
        self,
        targets: Sequence[ReconcileTarget],
        *,
        dry_run: bool = False,
        push: bool = False,
        on_page: PageHook | None = None,
    ) -> ReconcileReport:
        """Reconcile ``targets``. ``push``: write the differences to BigCommerce here (the CLI)
        rather than leave them to the writers. ``dry_run`` writes nothing to BigCommerce or to
        the levels (the mirrors and the SKU index are still refreshed)."""
        started = time.monotonic()
        report = ReconcileReport([], dry_run)
        if not targets:
            return report  # e.g. every store asked for was switched off meanwhile
        targets = [replace(t, dry_run=t.dry_run or dry_run) for t in targets]
        await self._refresh_sources(targets, report)
        plan = await self._plan(targets)
        inventory = await self._read_inventory(plan, report, on_page)
        levels = await self._levels(plan, inventory, targets)
        seen = {t.name: await self._read_bigcommerce(t, plan) for t in targets}
        live = [t for t in targets if not t.dry_run]
        report.reverified_variants = await self._record(plan, inventory, levels, live)
        says = await self._recorded(levels, live)
        await self._observe(live, seen)
        for t in targets:
            report.stores.append(await self._store_report(t, plan, levels, says, seen, push))
        report.seconds = time.monotonic() - started
        _log_report(report)
        return report

    # ----- sources ---------------------------------------------------------------------------
    async def _refresh_sources(
        self, targets: Sequence[ReconcileTarget], report: ReconcileReport
    ) -> None:
        """Mirrors current (the variants bootstrapped when new, the open sales orders re-read
        from scratch: row edits need not show in an order's ``updated_at``) and each store's
        SKU index fresh."""
        await self.poller.poll("variants")
        reread = await self.poller.replace_open_sales_orders()
        report.sales_orders, report.sales_order_requests = reread.orders, reread.requests
        for t in targets:
            await refresh_catalog(t.name, t.client, self.db, _no_mark)

    async def _plan(self, targets: Sequence[ReconcileTarget]) -> _Plan:
        katana = await mirror.live_product_skus(self.db.pool)
        sides = {}
        for t in targets:
            index = await catalog.index(self.db.pool, t.name)
            sides[t.name] = compare_skus(katana, ((k, s, tr) for k, (s, tr) in index.items()))
        matched = set().union(*(s.matched for s in sides.values()))
        winners = await self.engine.winners_for_skus(sorted(matched))
        names = set(sides)
        items = {
            k: v for k, v in (await self.engine.items_for(list(winners))).items() if k[0] in names
        }
        dups = await mirror.duplicate_live_skus(self.db.pool)
        return _Plan(sides, winners, items, dups)

    async def _read_inventory(
        self, plan: _Plan, report: ReconcileReport, on_page: PageHook | None
    ) -> dict[int, list[InventoryRow]]:
        """The whole Katana inventory in pages of 250 rows; kept: the winners' rows."""
        wanted = {v.id for v in plan.winners.values()}
        out: dict[int, list[InventoryRow]] = defaultdict(list)

        def count_page(done: int, total: int | None) -> None:
            report.inventory_pages = done
            if on_page is not None:
                on_page(done, total)

        async for page in self.katana.all_inventory(
            priority=Priority.RECONCILE, on_page=count_page
        ):
            report.inventory_rows += len(page)
            for row in page:
                if row.variant_id in wanted:
                    out[row.variant_id].append(row)
        return dict(out)  # a winner absent here had no row at all (see suspect_variants)

    async def _levels(
        self,
        plan: _Plan,
        inventory: Mapping[int, list[InventoryRow]],
        targets: Sequence[ReconcileTarget],
    ) -> list[Level]:
        """Every matched item's level per store, by the engine's pure rules."""
        commitments = await mirror.commitments(self.db.pool, {v.id for v in plan.winners.values()})
        views = [t.view for t in targets]
        return desired_levels(plan.winners, inventory, commitments, plan.items, views)

    async def _read_bigcommerce(self, target: ReconcileTarget, plan: _Plan) -> _Seen:
        items = [i for (store, _), its in plan.items.items() if store == target.name for i in its]
        seen = _Seen(await watermarks.db_clock(self.db.pool))
        if items:
            seen.levels = await target.client.inventory_levels(items, target.view.location_id)
        return seen

    # ----- recording -------------------------------------------------------------------------
    async def _record(
        self,
        plan: _Plan,
        inventory: Mapping[int, list[InventoryRow]],
        levels: Sequence[Level],
        targets: Sequence[ReconcileTarget],
    ) -> int:
        """Record the sweep's levels through the engine; returns how many variants were re-read
        instead (see ``suspects``)."""
        names = {t.name for t in targets}
        mine = [lv for lv in levels if lv.store in names]
        if not mine:
            return 0
        suspects = suspect_variants(mine, await self._desired_now(mine), inventory)
        trusted = {sku: v for sku, v in plan.winners.items() if v.id not in suspects}
        items = {k: v for k, v in plan.items.items() if k[0] in names}
        # the sweep's rows and the engine's kept ones may differ in age: keep neither
        self.engine.inventory_cache.forget(list(inventory))
        await self.engine.record(trusted, inventory, items, reason=RECONCILE_REASON)
        if suspects:
            await self.engine.refresh(
                suspects, reason=RECONCILE_REASON, priority=Priority.RECONCILE
            )
        return len(suspects)

    async def _desired_now(self, levels: Sequence[Level]) -> dict[LevelKey, int]:
        return await stored_levels.desired_now(self.db.pool, levels)

    async def _recorded(
        self, levels: Sequence[Level], targets: Sequence[ReconcileTarget]
    ) -> dict[LevelKey, int]:
        """What is recorded as desired now for the live targets' items (after the re-reads)."""
        names = {t.name for t in targets}
        mine = [lv for lv in levels if lv.store in names]
        return await self._desired_now(mine) if mine else {}

    async def _observe(self, targets: Sequence[ReconcileTarget], seen: Mapping[str, _Seen]) -> None:
        """Record what BigCommerce holds as ``pushed``: what already matches is not rewritten,
        and a level edited by hand in BigCommerce becomes backlog again."""
        for t in targets:
            s = seen[t.name]
            await stored_levels.record_observed(
                self.db.pool, t.name, t.view.location_id, s.levels, s.at
            )

    # ----- per store -------------------------------------------------------------------------
    async def _store_report(
        self,
        target: ReconcileTarget,
        plan: _Plan,
        levels: Sequence[Level],
        says: Mapping[LevelKey, int],
        seen: Mapping[str, _Seen],
        push: bool,
    ) -> StoreReport:
        mine = [lv for lv in levels if lv.store == target.name]
        action = "would_write" if target.dry_run else ("written" if push else "queued")
        diff = diff_levels(mine, says, seen[target.name].levels, action)
        if push and diff and not target.dry_run:
            diff = await self._push(target, diff)
        sides = plan.sides[target.name]
        dups = duplicates_in(sides.matched, plan.live_ids, plan.winners)
        return StoreReport(
            target.name, target.view.location_id, target.dry_run, sides, len(mine), dups, diff
        )

    async def _push(self, target: ReconcileTarget, diff: list[DiffRow]) -> list[DiffRow]:
        """Write the differences now (isolating rejected items) and record them as pushed."""
        items = [AbsoluteItem(r.item_key, r.location_id, r.katana_says, r.sku) for r in diff]
        outcome = await target.client.write_isolating(items, reason=PUSH_REASON)
        prior = {
            (r.item_key, r.location_id): stored_levels.Prior(r.bigcommerce_now, RECONCILE_REASON)
            for r in diff
        }
        await stored_levels.record_pushes(self.db.pool, target.name, outcome, prior)
        rejected = {(i.item_key, i.location_id) for i, _ in outcome.rejected}
        return [
            replace(r, action="rejected") if (r.item_key, r.location_id) in rejected else r
            for r in diff
        ]


def _log_report(report: ReconcileReport) -> None:
    for s in report.stores:
        log.info("reconcile_store", store=s.store, **s.summary())
    log.info(
        "reconcile_done",
        stores=len(report.stores),
        dry_run=report.dry_run,
        inventory_rows=report.inventory_rows,
        inventory_pages=report.inventory_pages,
        sales_orders=report.sales_orders,
        sales_order_requests=report.sales_order_requests,
        reverified_variants=report.reverified_variants,
        seconds=round(report.seconds, 3),
    )
