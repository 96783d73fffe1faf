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

import argparse
import asyncio
import contextlib
import csv
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from katsyncd.bigcommerce import BcError, BigCommerceClient
from katsyncd.catalog import refresh_catalog
from katsyncd.config import Config
from katsyncd.db import Database
from katsyncd.engine import Engine, Level, StoreView, desired_levels
from katsyncd.katana import KatanaError, PageHook
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

log = structlog.get_logger(__name__)

RECONCILE_REASON = "reconcile"  # item_level.reason of what a reconcile records
PUSH_REASON = "katsyncd: reconcile"  # BigCommerce adjustment reason of the CLI's writes
SCHEDULED = "scheduled"
SCHEDULE_JITTER = (0.8, 1.2)  # the periodic run lands within ±20 % of the interval
RECHECK_SECONDS = 60.0  # the loop re-reads the configured interval at least this often
RETRY_SECONDS = 300.0  # a failed reconcile is tried again this much later
CSV_COLUMNS = (
    "store",
    "sku",
    "item_key",
    "location_id",
    "bigcommerce_now",
    "katana_says",
    "action",
)
SHOWN_DIFF_ROWS = 50  # the terminal report shows this many differences per store
SHOWN_SKUS = 20  # ... and this many SKUs of each unmatched / untracked list

LevelKey = tuple[str, str, int]  # (store, item_key, location_id)


# ----- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiffRow:
    """An item whose BigCommerce level differs from what Katana says it should be."""

    store: str
    sku: str
    item_key: str
    location_id: int
    bigcommerce_now: int | None  # None: BigCommerce returned no level for the item
    katana_says: int
    action: str  # would_write (dry run) | queued (a writer pushes it) | written | rejected

    def csv_row(self) -> list[str | int]:
        now = "" if self.bigcommerce_now is None else self.bigcommerce_now
        return [
            self.store,
            self.sku,
            self.item_key,
            self.location_id,
            now,
            self.katana_says,
            self.action,
        ]


@dataclass(frozen=True, slots=True)
class Duplicate:
    """S8: a SKU on several live Katana product variants; the one created latest wins."""

    sku: str
    winner: int
    losers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SkuSides:
    """How one store's SKU index compares with Katana's live product SKUs (S6, S7)."""

    matched: frozenset[str]
    unmatched_katana: list[str]  # live Katana product SKUs with no BigCommerce item
    unmatched_bigcommerce: list[str]  # tracked BigCommerce SKUs with no live Katana variant
    untracked: list[str]  # SKUs of BigCommerce items that do not track stock
    fan_out: dict[str, list[str]]  # S7: matched SKU -> its several tracked item keys


@dataclass
class StoreReport:
    """What one store's reconcile found and did."""

    store: str
    location_id: int
    dry_run: bool
    sides: SkuSides
    matched_items: int
    duplicates: list[Duplicate]
    diff: list[DiffRow]

    @property
    def changed(self) -> int:
        """Items whose BigCommerce level differs from Katana's."""
        return len(self.diff)

    @property
    def unchanged(self) -> int:
        return self.matched_items - self.changed

    def count(self, action: str) -> int:
        return sum(1 for r in self.diff if r.action == action)

    def summary(self) -> dict[str, Any]:
        """Counts for ``/status`` and the log."""
        return {
            "dry_run": self.dry_run,
            "matched_skus": len(self.sides.matched),
            "matched_items": self.matched_items,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "written": self.count("written"),
            "rejected": self.count("rejected"),
            "unmatched_katana": len(self.sides.unmatched_katana),
            "unmatched_bigcommerce": len(self.sides.unmatched_bigcommerce),
            "untracked": len(self.sides.untracked),
            "duplicates": len(self.duplicates),
            "fan_out": len(self.sides.fan_out),
        }


@dataclass
class ReconcileReport:
    """One reconcile: a report per store plus what it cost at Katana."""

    stores: list[StoreReport]
    dry_run: bool
    inventory_rows: int = 0
    inventory_pages: int = 0
    sales_orders: int = 0  # open sales orders re-read into the mirror
    sales_order_requests: int = 0  # what that re-read cost at Katana
    reverified_variants: int = 0
    seconds: float = 0.0

    def store(self, name: str) -> StoreReport:
        return next(s for s in self.stores if s.store == name)

    def diff(self) -> Iterator[DiffRow]:
        for s in self.stores:
            yield from s.diff

    def summary(self, *, reason: str, started_at: float) -> dict[str, Any]:
        """The JSON-ready summary the daemon shows in ``/status``."""
        return {
            "reason": reason,
            "outcome": "dry_run" if self.dry_run else "ok",
            "started_at": datetime.fromtimestamp(started_at, UTC).isoformat(),
            "seconds": round(self.seconds, 3),
            "inventory_rows": self.inventory_rows,
            "inventory_pages": self.inventory_pages,
            "sales_orders": self.sales_orders,
            "sales_order_requests": self.sales_order_requests,
            "reverified_variants": self.reverified_variants,
            "stores": {s.store: s.summary() for s in self.stores},
        }


# ----- pure helpers ----------------------------------------------------------------------------


def compare_skus(
    katana_skus: Collection[str], bc_items: Iterable[tuple[str, str, str]]
) -> SkuSides:
    """Pure (S6, S7): ``bc_items`` are (item_key, sku, tracking) of one store's SKU index."""
    tracked: dict[str, list[str]] = defaultdict(list)
    untracked: set[str] = set()
    for item_key, sku, tracking in bc_items:
        if tracking == "none":
            untracked.add(sku)
        else:
            tracked[sku].append(item_key)
    katana = set(katana_skus)
    matched = katana & tracked.keys()
    return SkuSides(
        matched=frozenset(matched),
        unmatched_katana=sorted(katana - tracked.keys() - untracked),
        unmatched_bigcommerce=sorted(tracked.keys() - katana),
        untracked=sorted(untracked),
        fan_out={s: sorted(tracked[s]) for s in sorted(matched) if len(tracked[s]) > 1},
    )


def duplicates_in(
    skus: Collection[str],
    live_ids: Mapping[str, Sequence[int]],
    winners: Mapping[str, KatanaVariant],
) -> list[Duplicate]:
    """Pure (S8): the duplicated SKUs among ``skus``, each with its winner and losers."""
    out = []
    for sku in sorted(set(skus) & live_ids.keys()):
        winner = winners.get(sku)
        if winner is not None:
            losers = tuple(i for i in live_ids[sku] if i != winner.id)
            out.append(Duplicate(sku, winner.id, losers))
    return out


def level_key(lv: Level) -> LevelKey:
    return (lv.store, lv.item_key, lv.location_id)


def diff_levels(
    levels: Iterable[Level],
    says: Mapping[LevelKey, int],
    bc_now: Mapping[str, int],
    action: str,
) -> list[DiffRow]:
    """Pure: the levels whose BigCommerce value (``bc_now`` by item key) is not what Katana
    says (``says``; a level missing there says its own quantity)."""
    out = []
    for lv in levels:
        want = says.get(level_key(lv), lv.quantity)
        have = bc_now.get(lv.item_key)
        if have != want:
            out.append(DiffRow(lv.store, lv.sku, lv.item_key, lv.location_id, have, want, action))
    return sorted(out, key=lambda r: (r.store, r.sku, r.item_key))


def suspect_variants(
    levels: Iterable[Level],
    recorded: Mapping[LevelKey, int],
    inventory: Mapping[int, list[InventoryRow]],
) -> set[int]:
    """Pure: variants whose sweep result is not trusted as is, but re-read (in bulk) first.

    A level contradicting one recorded earlier may be the sweep's age, not Katana's truth (the
    live path can have recorded a fresher value meanwhile). A winner with no inventory row at
    all may have been deleted or archived since the mirror saw it (S10): the re-read tells.
    """
    out = set()
    for lv in levels:
        was = recorded.get(level_key(lv))
        if (was is not None and was != lv.quantity) or lv.variant_id not in inventory:
            out.add(lv.variant_id)
    return out


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


# ----- the daemon's schedule -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReconcileAsk:
    """A reconcile wanted at ``due`` (monotonic seconds) for ``stores`` (None: every store
    with stock sync on)."""

    reason: str
    stores: frozenset[str] | None
    due: float


class ReconcileSchedule:
    """When the daemon reconciles next: every interval (jittered; 0 = never, first run one
    interval after start) and soon when asked. Timing only; the daemon's loop acts on it."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.wake = asyncio.Event()
        self._clock = clock
        self._rng = rng or random.Random()
        self._asks: list[ReconcileAsk] = []
        self._interval = 0.0

    def set_interval(self, seconds: float) -> None:
        """Adopt the configured interval; a change re-plans the periodic run from now."""
        if seconds != self._interval:
            self._interval = seconds
            self._asks = [a for a in self._asks if a.reason != SCHEDULED]
            self.plan_next()

    def plan_next(self) -> None:
        """Plan the periodic run one jittered interval from now, unless planned or off."""
        if self._interval > 0 and not any(a.reason == SCHEDULED for a in self._asks):
            self._add(SCHEDULED, None, self._interval * self._rng.uniform(*SCHEDULE_JITTER))

    def ask(
        self, reason: str, stores: Collection[str] | None = None, *, delay: float = 0.0
    ) -> None:
        """Want a reconcile of ``stores`` (None: all) ``delay`` seconds from now."""
        self._add(reason, None if stores is None else frozenset(stores), delay)
        self.wake.set()

    def take_due(self) -> ReconcileAsk | None:
        """Every ask that is due, merged into one (reasons joined, stores united)."""
        now = self._clock()
        due = [a for a in self._asks if a.due <= now]
        if not due:
            return None
        self._asks = [a for a in self._asks if a.due > now]
        stores = (
            None
            if any(a.stores is None for a in due)
            else frozenset().union(*(a.stores or () for a in due))
        )
        return ReconcileAsk(",".join(sorted({a.reason for a in due})), stores, now)

    def seconds_until_due(self) -> float:
        """How long the loop may sleep (bounded, so a changed interval is picked up)."""
        nxt = min((a.due for a in self._asks), default=self._clock() + RECHECK_SECONDS)
        return max(0.0, min(nxt - self._clock(), RECHECK_SECONDS))

    def _add(self, reason: str, stores: frozenset[str] | None, delay: float) -> None:
        self._asks.append(ReconcileAsk(reason, stores, self._clock() + delay))


# ----- the command line ------------------------------------------------------------------------


class RichPageProgress:
    """A progress bar with time remaining for the Katana inventory sweep (a terminal)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]Katana inventory[/bold] pages"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = self._progress.add_task("inventory", total=None)

    def __enter__(self) -> RichPageProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def __call__(self, done: int, total: int | None) -> None:
        self._progress.update(self._task, completed=done, total=total)


@contextlib.contextmanager
def page_progress(console: Console) -> Iterator[PageHook]:
    """A rich bar when stdout is a terminal, else plain ``reconcile_progress`` log lines."""
    if not sys.stdout.isatty():
        yield log_progress
        return
    with RichPageProgress(console) as bar:
        yield bar


async def run_reconcile_cli(cfg: Config, args: argparse.Namespace) -> int:
    """``katsyncd reconcile [--store NAME] [--dry-run] [--output FILE.csv]``."""
    from katsyncd.cli import EXIT_CONFIG, EXIT_FAILURE

    names = list(dict.fromkeys(args.store or cfg.store_names))
    unknown = [n for n in names if n not in cfg.store_names]
    if unknown or not names:
        print(_unknown_stores_message(unknown, cfg.store_names), file=sys.stderr)
        return EXIT_CONFIG
    console = Console(soft_wrap=True)
    try:
        report = await _reconcile_once(cfg, names, dry_run=args.dry_run, console=console)
    except (KatanaError, BcError, OSError, asyncpg.PostgresError) as exc:
        print(f"katsyncd: reconcile failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    render_report(console, report)
    if args.output:
        rows = write_csv(Path(args.output), report.diff())
        console.print(f"Differences written to {args.output} ({rows} rows).")
    return 0


def _unknown_stores_message(unknown: Sequence[str], known: Sequence[str]) -> str:
    if not known:
        return "katsyncd: no stores are configured ([[stores]] in the config file)"
    return f"katsyncd: unknown store(s): {', '.join(unknown)} (configured: {', '.join(known)})"


async def _reconcile_once(
    cfg: Config, names: Sequence[str], *, dry_run: bool, console: Console
) -> ReconcileReport:
    """The daemon's components, built the same way, used for one reconcile and closed."""
    from katsyncd.daemon import Daemon

    daemon = Daemon(cfg)
    async with daemon.offline():
        with page_progress(console) as on_page:
            return await daemon.reconcile("cli", names, dry_run=dry_run, push=True, on_page=on_page)


def write_csv(path: Path, rows: Iterable[DiffRow]) -> int:
    """The differences as CSV (columns ``CSV_COLUMNS``); returns how many rows were written."""
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        for r in rows:
            out.writerow(r.csv_row())
            n += 1
    return n


def render_report(console: Console, report: ReconcileReport) -> None:
    """The report for a person: a summary table, then each store's details."""
    console.print(_summary_table(report))
    for s in report.stores:
        _render_store(console, s)
    mode = "dry run: nothing was written" if report.dry_run else "done"
    console.print(
        f"Katana: {report.inventory_rows} inventory rows in {report.inventory_pages} pages, "
        f"{report.sales_orders} open sales orders in {report.sales_order_requests} requests, "
        f"{report.reverified_variants} variants re-read; {report.seconds:.1f} s ({mode})."
    )


SUMMARY_ROWS = (
    ("Matched SKUs", "matched_skus"),
    ("Matched items", "matched_items"),
    ("Changed (BigCommerce differs)", "changed"),
    ("Unchanged", "unchanged"),
    ("Written", "written"),
    ("Rejected", "rejected"),
    ("Katana SKUs not in BigCommerce", "unmatched_katana"),
    ("BigCommerce SKUs not in Katana", "unmatched_bigcommerce"),
    ("BigCommerce items not tracking stock", "untracked"),
    ("S8: SKUs on several Katana variants", "duplicates"),
    ("S7: SKUs on several BigCommerce items", "fan_out"),
)


def _summary_table(report: ReconcileReport) -> Table:
    """One column per store, one row per count (stays narrow with many counts)."""
    table = Table(title="Reconcile (dry run)" if report.dry_run else "Reconcile")
    table.add_column("")
    for s in report.stores:
        dry = s.dry_run and not report.dry_run
        table.add_column(f"{s.store} (dry run)" if dry else s.store, justify="right")
    counts = [s.summary() for s in report.stores]
    for label, key in SUMMARY_ROWS:
        table.add_row(label, *(str(c[key]) for c in counts))
    return table


def _render_store(console: Console, s: StoreReport) -> None:
    if s.diff:
        console.print(_diff_table(s))
    for d in s.duplicates:
        losers = ", ".join(map(str, d.losers))
        console.print(
            f"[{s.store}] S8 {d.sku}: variant {d.winner} wins over {losers}", markup=False
        )
    for sku, keys in s.sides.fan_out.items():
        console.print(f"[{s.store}] S7 {sku}: same level to {', '.join(keys)}", markup=False)
    _render_skus(console, s.store, "Katana SKUs not in BigCommerce", s.sides.unmatched_katana)
    _render_skus(console, s.store, "BigCommerce SKUs not in Katana", s.sides.unmatched_bigcommerce)
    _render_skus(console, s.store, "BigCommerce SKUs not tracking stock", s.sides.untracked)


def _diff_table(s: StoreReport) -> Table:
    table = Table(title=f"{s.store}: {s.changed} differences")
    for h in ("SKU", "Item", "Location", "BigCommerce now", "Katana says", "Action"):
        table.add_column(h, justify="right" if h in ("BigCommerce now", "Katana says") else "left")
    for r in s.diff[:SHOWN_DIFF_ROWS]:
        now = "?" if r.bigcommerce_now is None else str(r.bigcommerce_now)
        table.add_row(r.sku, r.item_key, str(r.location_id), now, str(r.katana_says), r.action)
    if s.changed > SHOWN_DIFF_ROWS:
        table.caption = f"… and {s.changed - SHOWN_DIFF_ROWS} more (all of them: --output FILE.csv)"
    return table


def _render_skus(console: Console, store: str, what: str, skus: Sequence[str]) -> None:
    if not skus:
        return
    shown = ", ".join(skus[:SHOWN_SKUS])
    more = f" … and {len(skus) - SHOWN_SKUS} more" if len(skus) > SHOWN_SKUS else ""
    console.print(f"[{store}] {what} ({len(skus)}): {shown}{more}", markup=False)
