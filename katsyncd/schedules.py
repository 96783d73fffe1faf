"""The daemon's schedules: Katana polls (and Katana's locations), each store's catalogue
refresh, and full reconciles. Each ``run(stop)`` is one supervised loop; intervals come from
the live config (a reload changes them) through ``Callable[[], Config]``."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Collection, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from katsyncd.bigcommerce import PRODUCTS_PATH, BcStoreError
from katsyncd.catalog import apply_catalog, read_catalog
from katsyncd.config import Config, ConfigDiff
from katsyncd.db import Database
from katsyncd.engine import Engine
from katsyncd.katana import KatanaClient, PageHook
from katsyncd.marks import MarkFn
from katsyncd.metrics import Metrics
from katsyncd.models import Priority
from katsyncd.persistence import locations as stored_locations
from katsyncd.persistence import marks as stored_marks
from katsyncd.poller import (
    MIN_SWEEP_SPACING_SECONDS,
    MIN_TRIGGERED_POLL_SPACING_SECONDS,
    POLL_KINDS,
    Poller,
)
from katsyncd.reconcile import (
    RETRY_SECONDS,
    ReconcileAsk,
    Reconciler,
    ReconcileReport,
    ReconcileSchedule,
    ReconcileTarget,
    log_progress,
)
from katsyncd.stores import StoreRegistry, StoreRuntime
from katsyncd.waiting import wait_either, wait_stop

log = structlog.get_logger(__name__)

ConfigSource = Callable[[], Config]
_T = TypeVar("_T")
MIRROR_WAIT_SECONDS = 0.2  # how often a loop waiting for the first polls looks again
CATALOG_TICK_SECONDS = 1.0  # how often the catalogue loop looks for a store due
CATALOG_RETRY_SECONDS = 30.0  # a failed catalogue read is retried this soon


def mirror_ready(poller: Poller) -> Callable[[], bool]:
    """Whether the Katana mirror is populated: variants and sales orders polled once."""
    return lambda: all(k in poller.last_poll for k in ("variants", "sales_orders"))


async def wait_mirror(ready: Callable[[], bool], stop: asyncio.Event) -> None:
    while not ready() and not stop.is_set():
        await wait_stop(stop, MIRROR_WAIT_SECONDS)


async def refresh_locations(katana: KatanaClient, db: Database, stores: StoreRegistry) -> None:
    """Read Katana's locations (the mirrored list if Katana cannot be reached) and resolve
    every store's ``katana_locations`` against them."""
    try:
        locs = await katana.locations(priority=Priority.POLL)
    except Exception as exc:
        log.warning("katana_locations_failed", error=str(exc))
        locs = await stored_locations.all_locations(db.pool)
    else:
        await stored_locations.replace_locations(db.pool, locs)
    stores.set_locations(locs)


class PollSchedule:
    """Each poll kind at its interval (jittered), and sooner when a webhook asks for it."""

    def __init__(
        self,
        poller: Poller,
        katana: KatanaClient,
        db: Database,
        stores: StoreRegistry,
        reconciles: ReconcileSchedule,
        config: ConfigSource,
        *,
        wake: asyncio.Event,
        rng: random.Random,
    ) -> None:
        self._poller = poller
        self._katana = katana
        self._db = db
        self._stores = stores
        self._reconciles = reconciles
        self._config = config
        self._wake = wake  # set when a committed webhook asked for a poll
        self._rng = rng

    async def run(self, stop: asyncio.Event) -> None:
        await refresh_locations(self._katana, self._db, self._stores)
        await self._catch_up_check()
        loop = asyncio.get_running_loop()
        next_due = dict.fromkeys(POLL_KINDS, 0.0)
        next_due["variant_sweep"] = loop.time() + self._every("variant_sweep")
        spacing = dict.fromkeys(POLL_KINDS, MIN_TRIGGERED_POLL_SPACING_SECONDS)
        spacing["variant_sweep"] = MIN_SWEEP_SPACING_SECONDS
        while not stop.is_set():
            requested = await stored_marks.take_poll_requests(self._db.pool)
            now = loop.time()
            for kind in POLL_KINDS:
                spacing_ok = now - self._poller.last_poll.get(kind, -1e9) >= spacing[kind]
                if now >= next_due[kind] or (kind in requested and spacing_ok):
                    await self._poll_one(kind)
                    next_due[kind] = loop.time() + self._every(kind) * self._rng.uniform(0.9, 1.1)
                elif kind in requested:
                    await stored_marks.request_polls(self._db.pool, [kind])
            self._wake.clear()
            wait = max(0.05, min(next_due.values()) - loop.time())
            await wait_either(stop, self._wake, min(wait, MIN_TRIGGERED_POLL_SPACING_SECONDS))

    async def _poll_one(self, kind: str) -> None:
        try:
            marked = await self._poller.poll(kind)
            log.info("poll_done", kind=kind, variants_marked=marked)
        except Exception as exc:
            log.warning("poll_failed", kind=kind, error=str(exc))

    def _every(self, kind: str) -> float:
        sync = self._config().sync
        if kind == "variant_sweep":
            return sync.catalog_refresh_seconds
        return sync.poll_interval_seconds

    async def _catch_up_check(self) -> None:
        """After downtime, polls resume from their watermarks; a gap too old gets a reconcile."""
        wm = await self._poller.watermark("movements")
        if wm is None:
            return
        gap = (datetime.now(UTC) - wm).total_seconds()
        log.info("catch_up", gap_seconds=round(gap, 1))
        if gap > self._config().sync.catch_up_max_gap_seconds:
            log.warning("catch_up_gap_too_old_reconciling", gap_seconds=round(gap))
            self._reconciles.ask("catch_up_gap")


class CatalogSchedule:
    """Each store's BigCommerce catalogue re-read every ``sync.catalog_refresh_seconds``.

    Stores are independent (S9): each due store's refresh runs as its own task with its own
    retry, so a store whose catalogue fails (and is retried by the client for a minute) never
    delays another store's refresh, least of all its first one.
    """

    def __init__(
        self,
        stores: StoreRegistry,
        db: Database,
        mark: MarkFn,
        config: ConfigSource,
        *,
        ready: Callable[[], bool],
    ) -> None:
        self._stores = stores
        self._db = db
        self._mark = mark
        self._config = config
        self._ready = ready

    async def run(self, stop: asyncio.Event) -> None:
        """Start a refresh for every due store that has none running; a stop lets the running
        ones finish (the drain bounds them): a refresh cut between its index update and its
        marks would leave new items unmarked until the next reconcile."""
        running: dict[str, asyncio.Task[None]] = {}
        async with asyncio.TaskGroup() as tg:
            while not stop.is_set():
                every = self._config().sync.catalog_refresh_seconds
                for rt in self._stores:
                    name = rt.config.name
                    task = running.get(name)
                    if task is not None and not task.done():
                        continue
                    last = rt.catalog_refreshed_at
                    if last is None or time.monotonic() - last >= every:
                        running[name] = tg.create_task(
                            self._refresh(rt, stop), name=f"catalog:{name}"
                        )
                await wait_stop(stop, CATALOG_TICK_SECONDS)

    async def _refresh(self, rt: StoreRuntime, stop: asyncio.Event) -> None:
        await wait_mirror(self._ready, stop)
        try:
            fresh = await _unless_stopped(read_catalog(rt.client), stop)
            if fresh is None:
                return  # stopped while reading: nothing was written, the next start reads again
            await apply_catalog(rt.config.name, fresh, self._db, self._mark)
            rt.catalog_refreshed_at = time.monotonic()
            self._stores.catalog_refreshed.set()
        except Exception as exc:
            if isinstance(exc, BcStoreError):
                rt.writer.set_error(exc.kind, exc.status, str(exc), PRODUCTS_PATH)
            log.warning("catalog_refresh_failed", store=rt.config.name, error=str(exc))
            every = self._config().sync.catalog_refresh_seconds
            rt.catalog_refreshed_at = time.monotonic() - every + CATALOG_RETRY_SECONDS


async def _unless_stopped(work: Coroutine[Any, Any, _T], stop: asyncio.Event) -> _T | None:
    """``work``'s result, or None if ``stop`` was set first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


class Reconciles:
    """Full reconciles: run on demand (``katsyncd reconcile``) or on the schedule, one at a
    time; the last one's summary is kept for ``/status``."""

    def __init__(
        self,
        db: Database,
        engine: Engine,
        poller: Poller,
        stores: StoreRegistry,
        metrics: Metrics,
        config: ConfigSource,
        *,
        rng: random.Random,
    ) -> None:
        self._db = db
        self._engine = engine
        self._poller = poller
        self._stores = stores
        self._metrics = metrics
        self._config = config
        self.schedule = ReconcileSchedule(rng=rng)
        self.last: dict[str, Any] | None = None

    async def reconcile(
        self,
        reason: str,
        stores: Collection[str] | None = None,
        *,
        dry_run: bool = False,
        push: bool = False,
        on_page: PageHook | None = None,
    ) -> ReconcileReport:
        """One full reconcile of ``stores`` (None: every store with stock sync on).

        ``push`` (``katsyncd reconcile``) writes the differences itself, and only to stores
        whose writes are enabled; otherwise levels are recorded and the writers push them.
        """
        targets = self._targets(stores, dry_run=dry_run, push=push)
        started = time.time()
        log.info("reconcile_started", reason=reason, stores=[t.name for t in targets])
        try:
            report = await Reconciler(self._db, self._engine, self._poller).run(
                targets, dry_run=dry_run, push=push, on_page=on_page or log_progress
            )
        except Exception as exc:
            self._metrics.reconcile_runs.labels("error").inc()
            self.last = {
                "reason": reason,
                "outcome": "error",
                "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
                "error": str(exc)[:500],
            }
            raise
        self.last = report.summary(reason=reason, started_at=started)
        self._metrics.reconcile_runs.labels(self.last["outcome"]).inc()
        return report

    def _targets(
        self, names: Collection[str] | None, *, dry_run: bool, push: bool
    ) -> list[ReconcileTarget]:
        by_name = self._stores.by_name
        if names is None:
            names = [n for n, rt in by_name.items() if rt.config.stock_sync]
        out = []
        for name in names:
            rt = by_name.get(name)
            if rt is not None and (push or rt.config.stock_sync):
                dry = dry_run or (push and not rt.config.writes_enabled)
                out.append(ReconcileTarget(rt.view, rt.client, dry_run=dry))
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Every ``sync.reconcile_interval_seconds`` (jittered; 0 = off) and soon when asked
        (a catch-up gap, a store switched on by a reload)."""
        schedule = self.schedule
        ready = mirror_ready(self._poller)
        while not stop.is_set():
            schedule.set_interval(self._config().sync.reconcile_interval_seconds)
            ask = schedule.take_due()
            if ask is None:
                schedule.wake.clear()
                await wait_either(stop, schedule.wake, schedule.seconds_until_due())
                continue
            await wait_mirror(ready, stop)
            await self._until_stopped(ask, stop)
            schedule.plan_next()

    async def _until_stopped(self, ask: ReconcileAsk, stop: asyncio.Event) -> None:
        """Run one asked-for reconcile; a stop cancels it. Each step commits on its own, so a
        cancelled reconcile leaves nothing wrong behind (the next one redoes the rest)."""
        run = asyncio.create_task(self._logged(ask), name="reconcile-run")
        stopped = asyncio.create_task(stop.wait(), name="reconcile-stop")
        try:
            await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run

    async def _logged(self, ask: ReconcileAsk) -> None:
        """A failed scheduled reconcile is logged and asked for again later, never fatal."""
        try:
            await self.reconcile(ask.reason, ask.stores)
        except Exception as exc:
            log.warning("reconcile_failed", reason=ask.reason, error=str(exc))
            self.schedule.ask(ask.reason, ask.stores, delay=RETRY_SECONDS)

    def ask_switched_on(self, diff: ConfigDiff, new: Config) -> None:
        """A store switched on by a reload (or added with stock sync on) is reconciled soon, so
        it starts from what BigCommerce holds rather than waiting for Katana changes."""
        added = [n for n in diff.stores_added if new.store(n).stock_sync]
        names = [*diff.stores_switched_on, *added]
        if names:
            self.schedule.ask("store_switched_on", names)
