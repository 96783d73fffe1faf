"""The composition root: builds every component from a Config, runs them under one TaskGroup,
reacts to signals (SIGTERM/SIGINT stop, SIGHUP reload) and shuts down in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import structlog
from aiohttp import web

from katsyncd import __version__, sdnotify
from katsyncd.bigcommerce import BigCommerceClient
from katsyncd.catalog import refresh_catalog
from katsyncd.config import (
    Config,
    ConfigDiff,
    ConfigError,
    StoreConfig,
    diff_config,
    load_config,
)
from katsyncd.db import Database, Q
from katsyncd.debounce import Debouncer
from katsyncd.engine import Engine, StoreView
from katsyncd.ingest import Effect, GroupCommitter
from katsyncd.katana import KatanaClient, PageHook
from katsyncd.metrics import Metrics
from katsyncd.models import Priority
from katsyncd.poller import (
    MIN_SWEEP_SPACING_SECONDS,
    MIN_TRIGGERED_POLL_SPACING_SECONDS,
    POLL_KINDS,
    Poller,
)
from katsyncd.ratelimit import BcLimiter, KatanaLimiter
from katsyncd.reconcile import (
    RETRY_SECONDS,
    ReconcileAsk,
    Reconciler,
    ReconcileReport,
    ReconcileSchedule,
    ReconcileTarget,
    log_progress,
)
from katsyncd.rules import LevelRules, resolve_locations
from katsyncd.writer import StoreWriter

log = structlog.get_logger(__name__)

# Infrastructure errors a loop survives (Postgres restarting, a network blip).
TRANSIENT_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)

MAX_VARIANTS_PER_FLUSH = 5000
MAX_ORDERS_PER_RESOLVE = 1000
KATANA_PAGE_ROWS = 250  # Katana's page size (rows)
STATUS_REFRESH_SECONDS = 2.0
LOOP_ERROR_BACKOFF_SECONDS = 2.0
CATALOG_RETRY_SECONDS = 30.0  # a failed catalogue read is retried this soon


@dataclass
class StoreRuntime:
    config: StoreConfig
    view: StoreView
    client: BigCommerceClient
    limiter: BcLimiter
    writer: StoreWriter
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    catalog_refreshed_at: float | None = None  # monotonic; None = never
    unmatched: list[str] = field(default_factory=list)
    unmatched_locations: list[str] = field(default_factory=list)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.boot_config = config  # what the listener and the pool were built from
        self.restart_required: list[str] = []
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.rng = rng or random.Random()
        self.stop_event = asyncio.Event()
        self.draining = False
        self.ready = False
        self.reload_requested = asyncio.Event()
        self.started_at = time.time()
        self.db = Database(
            config.database.url,
            state_dir=Path(config.database.state_dir),
            min_size=config.database.pool_min_size,
            max_size=config.database.pool_max_size,
        )
        self.session: aiohttp.ClientSession | None = None
        self.katana_limiter = KatanaLimiter(config.katana.requests_per_minute)
        self.katana: KatanaClient | None = None
        self.engine: Engine | None = None
        self.poller: Poller | None = None
        self.variants = Debouncer(config.sync.debounce_seconds, config.sync.max_delay_seconds)
        self.orders = Debouncer(
            min(config.sync.debounce_seconds, 1.0), config.sync.max_delay_seconds
        )
        self.committer = GroupCommitter(lambda: self.db.pool, on_committed=self._on_committed)
        self.stores: dict[str, StoreRuntime] = {}
        self.locations: dict[int, str] = {}
        self._poll_wake = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.http_port: int | None = None
        self.last_reconcile: dict[str, Any] | None = None
        self.reconcile_schedule = ReconcileSchedule(rng=self.rng)

    # ----- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, install_signals: bool = True) -> None:
        """Start everything, run until stopped, then shut down in order."""
        if install_signals:
            self._install_signals()
        await self.db.open()
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": f"katsyncd/{__version__}"},
        )
        try:
            self._build_clients()
            await self._start_http()
            await self._load_durable_marks()
            self.ready = True
            self.metrics.config_reload_ok.set(1)
            self.metrics.config_reload_ts.set(time.time())
            sdnotify.ready()
            log.info(
                "daemon_started",
                listen=self.config.server.listen,
                port=self.http_port,
                stores=[s.name for s in self.config.stores],
            )
            await self._supervise()
        finally:
            await self._shutdown()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)

    def _on_sigint(self) -> None:
        if self.stop_event.is_set():
            log.warning("second_interrupt_exiting_now")
            raise SystemExit(130)
        self.request_stop()

    def request_stop(self) -> None:
        if not self.stop_event.is_set():
            log.info("stop_requested")
            self.draining = True
            sdnotify.stopping()
        self.stop_event.set()

    async def _supervise(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            _ = self._spawn("group-committer", lambda: self.committer.run(self.stop_event))
            _ = self._spawn("variant-flusher", self._variant_loop)
            _ = self._spawn("order-resolver", self._order_loop)
            _ = self._spawn("poller", self._poll_loop)
            _ = self._spawn("catalog", self._catalog_loop)
            _ = self._spawn("status", self._status_loop)
            _ = self._spawn("reload", self._reload_loop)
            _ = self._spawn("reconcile", self._reconcile_loop)
            for rt in self.stores.values():
                self._start_writer(rt)
            await self.stop_event.wait()
            for rt in self.stores.values():
                rt.stop.set()
            await self._drain(tg)
        self._tg = None

    async def _drain(self, tg: asyncio.TaskGroup) -> None:
        """Finish in-flight work within the shutdown bound, then cancel what is left.

        A writer waiting (on its limiter, or backing off after an error) is cancelled at once:
        its backlog is durable. A writer with a request on the wire gets to finish it.
        """
        deadline = time.monotonic() + self.config.server.shutdown_timeout_seconds
        pending = {t for t in self._tasks if not t.done()}
        while pending and time.monotonic() < deadline:
            for rt in self.stores.values():
                if rt.task in pending and rt.client.writes_in_flight == 0:
                    rt.task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        for t in pending:
            log.warning("shutdown_cancelling", task=t.get_name())
            t.cancel()

    async def _shutdown(self) -> None:
        self.ready = False
        if self._runner is not None:
            await self._runner.cleanup()
        if self.session is not None:
            await self.session.close()
        await self.db.close()
        log.info("daemon_stopped")

    # ----- wiring ------------------------------------------------------------------------------
    def _build_clients(self) -> None:
        assert self.session is not None
        k = self.config.katana
        self.katana = KatanaClient(
            self.session,
            k.base_url,
            k.api_key_value(),
            self.katana_limiter,
            self.metrics,
            timeout=k.timeout_seconds,
            rng=self.rng,
            ids_per_request=k.ids_per_request,
        )
        self.engine = Engine(self.db, self.katana, self.metrics, stores=self._store_views)
        self.poller = Poller(
            self.db, self.katana, self.engine, self.metrics, mark=self.mark_variants
        )
        for sc in self.config.stores:
            self.stores[sc.name] = self._make_store(sc)

    def _make_store(self, sc: StoreConfig) -> StoreRuntime:
        assert self.session is not None
        limiter = BcLimiter()
        client = BigCommerceClient(
            self.session,
            sc.api_base_url,
            sc.store_hash,
            sc.access_token_value(),
            limiter,
            self.metrics,
            store_name=sc.name,
            timeout=sc.write_timeout_seconds,
            rng=self.rng,
        )
        view = StoreView(sc.name, self._rules(sc), sc.location_id)
        writer = StoreWriter(
            view,
            client,
            self.db,
            self.metrics,
            dry_run=lambda: self.stores[sc.name].config.dry_run,
            guard=lambda: self._guard_delay(sc.name),
            recheck=self.mark_variants,
            rng=self.rng,
        )
        return StoreRuntime(sc, view, client, limiter, writer)

    def _guard_delay(self, name: str) -> float | None:
        """The oversell guard's hold for this store (None: off)."""
        rt = self.stores.get(name)
        if rt is None or not rt.config.oversell_guard:
            return None
        return rt.config.increase_delay_seconds

    def _rules(self, sc: StoreConfig) -> LevelRules:
        from katsyncd.models import KatanaLocation

        known = [KatanaLocation(i, n) for i, n in self.locations.items()]
        locs, _missing = resolve_locations(sc.katana_locations, known)
        if sc.katana_locations and not known:
            locs = frozenset()  # not resolved yet: count nothing rather than everything
        return LevelRules(
            sc.quantity, sc.katana_sales_orders_count, locs, sc.buffer, sc.max_quantity
        )

    def _store_views(self) -> list[StoreView]:
        return [rt.view for rt in self.stores.values()]

    def _start_writer(self, rt: StoreRuntime) -> None:
        if self._tg is None or not rt.config.stock_sync:
            return
        rt.stop = asyncio.Event()
        stop = rt.stop
        rt.task = self._spawn(f"writer:{rt.config.name}", lambda: rt.writer.run(stop))

    def _spawn(self, name: str, fn: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        assert self._tg is not None
        task = self._tg.create_task(self._guard(name, fn), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start_http(self) -> None:
        from katsyncd.httpapp import build_app

        app = build_app(self)
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.config.server.shutdown_timeout_seconds,
        )
        await self._runner.setup()
        host, port = self.config.server.host_port
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else port

    async def _guard(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Run a loop under supervision.

        Database and network outages are ridden out: the loop restarts after a backoff (the
        durable marks make that safe). Anything else is a bug: the daemon stops with a clear
        log line and systemd or Kubernetes restarts it.
        """
        failures = 0
        while True:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:
                failures += 1
                delay = min(30.0, LOOP_ERROR_BACKOFF_SECONDS * 2 ** min(failures, 4))
                log.warning(
                    "task_retrying", task=name, error=str(exc) or type(exc).__name__, retry_in=delay
                )
                await _sleep(self.stop_event, delay)
                if self.stop_event.is_set():
                    return
            except Exception:
                log.exception("task_crashed", task=name)
                self.request_stop()
                raise

    # ----- marks -------------------------------------------------------------------------------
    def _on_committed(self, effects: list[Effect]) -> None:
        variant_ids = [int(e.ident) for e in effects if e.kind == "variant"]
        self.metrics.debounce_marks.inc(len(variant_ids))
        self.variants.mark(variant_ids)
        self.orders.mark(int(e.ident) for e in effects if e.kind == "sales_order")
        if any(e.kind == "poll" for e in effects):
            self._poll_wake.set()

    async def mark_variants(self, ids: Collection[int], reason: str) -> None:
        """Durably mark variants stale (polls, catalogue, reconcile) and feed the debouncer."""
        ids = sorted(set(ids))
        for i in range(0, len(ids), 10000):
            chunk = ids[i : i + 10000]
            await self.db.pool.execute(Q["mark_variants"], chunk, [reason] * len(chunk))
        self.metrics.debounce_marks.inc(len(ids))
        self.variants.mark(ids, settled=True)  # from a read of Katana: no quiet time needed

    async def _load_durable_marks(self) -> None:
        now = self.variants._clock()
        for r in await self.db.pool.fetch(Q["load_stale_variants"]):
            self.variants.mark([r["variant_id"]], first_seen=now - r["age"])
        for r in await self.db.pool.fetch(Q["load_stale_sales_orders"]):
            self.orders.mark([r["so_id"]], first_seen=now - r["age"])
        log.info("stale_marks_loaded", variants=len(self.variants), sales_orders=len(self.orders))

    # ----- loops -------------------------------------------------------------------------------
    async def _variant_loop(self) -> None:
        await self._debounced_loop(
            self.variants,
            MAX_VARIANTS_PER_FLUSH,
            self._flush_variants,
            self._variants_per_page(),
            widen=self._widen_to_sweep,
            hold=self._hold_sweep,
        )

    async def _order_loop(self) -> None:
        await self._debounced_loop(
            self.orders, MAX_ORDERS_PER_RESOLVE, self._resolve_orders, lambda: KATANA_PAGE_ROWS
        )

    async def _debounced_loop(
        self,
        deb: Debouncer,
        max_batch: int,
        handle: Callable[[list[int]], Awaitable[None]],
        per_page: Callable[[], int],
        *,
        widen: Callable[[Debouncer, list[int], int], list[int]] | None = None,
        hold: Callable[[Debouncer, list[int]], bool] | None = None,
    ) -> None:
        """Hand due keys to ``handle`` in bulk; on failure the keys go back (their marks are
        durable anyway) and the loop backs off.

        (Measured with ``python -m bench --scenario burst``: capping a batch at one page while
        tokens are short gave 32 BigCommerce writes per store instead of 3, against a target
        of 10; large batches stay.)
        """
        while await deb.wait_due(self.stop_event):
            if not self._mirror_ready():
                await _sleep(self.stop_event, 0.2)
                continue
            due = deb.due()
            page = per_page()
            if self._should_wait_for_more(deb, due, page) or (hold is not None and hold(deb, due)):
                await _sleep(self.stop_event, 0.25)
                continue
            batch = sorted(due, key=deb.due_at)[:max_batch]  # most overdue first
            if widen is not None:
                batch = widen(deb, batch, max_batch)
            firsts = deb.take(batch)
            try:
                await handle(batch)
            except Exception as exc:
                log.warning("flush_failed", keys=len(batch), error=str(exc) or type(exc).__name__)
                deb.mark(batch, first_seen=min(firsts.values()))
                await _sleep(self.stop_event, LOOP_ERROR_BACKOFF_SECONDS)

    async def _flush_variants(self, batch: list[int]) -> None:
        assert self.engine is not None
        rows = await self.db.pool.fetch(Q["stale_variant_gens"], batch)
        gens = {r["variant_id"]: r["gen"] for r in rows}
        since = {r["variant_id"]: r["first_marked_at"] for r in rows}
        reason = ",".join(sorted({r["reason"] for r in rows})) or "stale"
        started = time.monotonic()
        changed = await self.engine.refresh(batch, reason=reason, gens=gens, stale_since=since)
        self.metrics.debounce_flushed_variants.inc(len(batch))
        log.info(
            "variants_flushed",
            variants=len(batch),
            levels_changed=changed,
            reason=reason,
            seconds=round(time.monotonic() - started, 3),
        )

    def _mirror_ready(self) -> bool:
        assert self.poller is not None
        return all(k in self.poller.last_poll for k in ("variants", "sales_orders"))

    def _budget_plenty(self) -> bool:
        return self.katana_limiter.available() >= self.config.katana.requests_per_minute / 2

    def _variants_per_page(self) -> Callable[[], int]:
        """Variants one /inventory request reads: one row per (variant, location), and no more
        ids than the gateway honours."""

        def per_page() -> int:
            assert self.katana is not None
            rows = max(1, KATANA_PAGE_ROWS // max(1, len(self.locations)))
            return min(rows, self.katana.effective_ids_per_request)

        return per_page

    def _hold_sweep(self, deb: Debouncer, due: list[int]) -> bool:
        """With few ids per request (fewer than an /inventory page holds) and the budget short
        of the whole read (a sweep, or the id chunks if fewer),
        hold the read while marks are still arriving (some pending variant is inside its
        quiet time): a read of many id chunks or a sweep started mid-burst is stale before it
        ends and is paid again; after the burst one read (usually a sweep) settles them all.
        Held at most twice a full sweep's duration at the configured rate (or ``max_delay``
        if longer) after the oldest mark.
        At start, flushes wait for every store's first catalog refresh (seconds): its marks
        would otherwise arrive during the first read, which is usually a sweep behind a
        gateway with few ids per request (the size is learned during that read), and cost a
        second one.

        (Measured with ``python -m bench --scenario burst --array-filter-limit 20``, see
        docs/PERFORMANCE.md.)"""
        assert self.katana is not None
        if any(rt.catalog_refreshed_at is None for rt in self.stores.values()):
            return True  # a first catalog refresh is about to mark its SKUs: one read for all
        variants_per_page = max(1, KATANA_PAGE_ROWS // max(1, len(self.locations)))
        if self.katana.effective_ids_per_request >= variants_per_page:
            return False  # ids are not the bottleneck: the page-sized batching applies
        pages = self.katana.inventory_sweep_pages() or 0
        cost = min(pages or len(deb), math.ceil(len(deb) / self.katana.effective_ids_per_request))
        if len(due) >= len(deb) or self.katana_limiter.available() >= max(
            cost, self.config.katana.requests_per_minute / 2
        ):
            return False  # the burst is over, or the budget holds the whole read
        sweep_seconds = pages * 60.0 / self.config.katana.requests_per_minute
        oldest = deb.oldest_first_seen(deb.due(now=math.inf))
        cap = max(deb.max_delay, 2 * sweep_seconds)
        return oldest is not None and deb._clock() < oldest + cap

    def _widen_to_sweep(self, deb: Debouncer, batch: list[int], max_batch: int) -> list[int]:
        """When every pending variant together costs more id chunks than one full /inventory
        sweep, the sweep settles them all for the same requests: take them all (most overdue
        first, up to ``max_batch``). Reading a variant before its quiet time is over is
        correct (its mark clears only up to the generation read); it saves a read later."""
        assert self.katana is not None
        if len(deb) <= len(batch) or not self.katana.inventory_sweep_cheaper(len(deb)):
            return batch
        chosen = set(batch)
        rest = sorted((k for k in deb.due(now=math.inf) if k not in chosen), key=deb.due_at)
        return [*batch, *rest][:max_batch]

    def _should_wait_for_more(self, deb: Debouncer, due: list[int], per_page: int) -> bool:
        """In a burst with the Katana budget low, wait for a full page (or the deadline)
        rather than spend a request on a few keys. On a quiet day read at once."""
        if self._budget_plenty():
            return False
        if len(due) >= per_page or len(deb) < per_page:
            return False  # a full page is ready, or there is no burst to wait for
        oldest = deb.oldest_first_seen(due)
        return oldest is not None and deb._clock() < oldest + deb.max_delay

    async def _resolve_orders(self, batch: list[int]) -> None:
        assert self.poller is not None
        marked = await self.poller.resolve_sales_orders(batch)
        log.info("sales_orders_resolved", orders=len(batch), variants_marked=marked)

    async def _poll_loop(self) -> None:
        assert self.poller is not None
        await self._refresh_locations()
        await self._catch_up_check()
        loop = asyncio.get_running_loop()
        next_due = dict.fromkeys(POLL_KINDS, 0.0)
        next_due["variant_sweep"] = loop.time() + self._poll_every("variant_sweep")
        spacing = dict.fromkeys(POLL_KINDS, MIN_TRIGGERED_POLL_SPACING_SECONDS)
        spacing["variant_sweep"] = MIN_SWEEP_SPACING_SECONDS
        while not self.stop_event.is_set():
            requested = {r["kind"] for r in await self.db.pool.fetch(Q["take_poll_requests"])}
            now = loop.time()
            for kind in POLL_KINDS:
                spacing_ok = now - self.poller.last_poll.get(kind, -1e9) >= spacing[kind]
                if now >= next_due[kind] or (kind in requested and spacing_ok):
                    await self._poll_one(kind)
                    next_due[kind] = loop.time() + self._interval(self._poll_every(kind))
                elif kind in requested:
                    await self.db.pool.execute(Q["request_polls"], [kind])
            self._poll_wake.clear()
            wait = max(0.05, min(next_due.values()) - loop.time())
            await _wait_either(
                self.stop_event, self._poll_wake, min(wait, MIN_TRIGGERED_POLL_SPACING_SECONDS)
            )

    async def _poll_one(self, kind: str) -> None:
        assert self.poller is not None
        try:
            marked = await self.poller.poll(kind)
            log.info("poll_done", kind=kind, variants_marked=marked)
        except Exception as exc:
            log.warning("poll_failed", kind=kind, error=str(exc))

    def _poll_every(self, kind: str) -> float:
        sync = self.config.sync
        if kind == "variant_sweep":
            return sync.catalog_refresh_seconds
        return sync.poll_interval_seconds

    def _interval(self, seconds: float) -> float:
        return seconds * self.rng.uniform(0.9, 1.1)

    async def _refresh_locations(self) -> None:
        assert self.katana is not None
        try:
            locs = await self.katana.locations(priority=Priority.POLL)
        except Exception as exc:
            log.warning("katana_locations_failed", error=str(exc))
            rows = await self.db.pool.fetch(Q["all_locations"])
            self.locations = {r["id"]: r["name"] for r in rows}
        else:
            await self.db.pool.execute(
                Q["replace_locations"], [loc.id for loc in locs], [loc.name for loc in locs]
            )
            self.locations = {loc.id: loc.name for loc in locs}
        for rt in self.stores.values():
            self._apply_rules(rt)

    def _apply_rules(self, rt: StoreRuntime) -> None:
        from katsyncd.models import KatanaLocation

        rt.view.rules = self._rules(rt.config)
        known = [KatanaLocation(i, n) for i, n in self.locations.items()]
        _, rt.unmatched_locations = resolve_locations(rt.config.katana_locations, known)
        if rt.unmatched_locations:
            log.warning(
                "katana_locations_unknown", store=rt.config.name, names=rt.unmatched_locations
            )

    async def _catch_up_check(self) -> None:
        """After downtime, polls resume from their watermarks; a gap too old gets a reconcile."""
        assert self.poller is not None
        wm = await self.poller.watermark("movements")
        if wm is None:
            return
        gap = (datetime.now(UTC) - wm).total_seconds()
        log.info("catch_up", gap_seconds=round(gap, 1))
        if gap > self.config.sync.catch_up_max_gap_seconds:
            log.warning("catch_up_gap_too_old_reconciling", gap_seconds=round(gap))
            self.reconcile_schedule.ask("catch_up_gap")

    # ----- reconcile ---------------------------------------------------------------------------
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
        assert self.engine is not None and self.poller is not None
        targets = self._reconcile_targets(stores, dry_run=dry_run, push=push)
        started = time.time()
        log.info("reconcile_started", reason=reason, stores=[t.name for t in targets])
        try:
            report = await Reconciler(self.db, self.engine, self.poller).run(
                targets, dry_run=dry_run, push=push, on_page=on_page or log_progress
            )
        except Exception as exc:
            self.metrics.reconcile_runs.labels("error").inc()
            self.last_reconcile = {
                "reason": reason,
                "outcome": "error",
                "started_at": _iso(started),
                "error": str(exc)[:500],
            }
            raise
        self.last_reconcile = report.summary(reason=reason, started_at=started)
        self.metrics.reconcile_runs.labels(self.last_reconcile["outcome"]).inc()
        return report

    def _reconcile_targets(
        self, names: Collection[str] | None, *, dry_run: bool, push: bool
    ) -> list[ReconcileTarget]:
        if names is None:
            names = [n for n, rt in self.stores.items() if rt.config.stock_sync]
        out = []
        for name in names:
            rt = self.stores.get(name)
            if rt is not None and (push or rt.config.stock_sync):
                dry = dry_run or (push and not rt.config.writes_enabled)
                out.append(ReconcileTarget(rt.view, rt.client, dry_run=dry))
        return out

    async def _reconcile_loop(self) -> None:
        """Full reconciles, one at a time: every ``sync.reconcile_interval_seconds`` (jittered;
        0 = off) and soon when asked (a catch-up gap, a store switched on by a reload)."""
        schedule = self.reconcile_schedule
        while not self.stop_event.is_set():
            schedule.set_interval(self.config.sync.reconcile_interval_seconds)
            ask = schedule.take_due()
            if ask is None:
                schedule.wake.clear()
                await _wait_either(self.stop_event, schedule.wake, schedule.seconds_until_due())
                continue
            while not self._mirror_ready() and not self.stop_event.is_set():
                await _sleep(self.stop_event, 0.2)
            await self._reconcile_until_stopped(ask)
            schedule.plan_next()

    async def _reconcile_until_stopped(self, ask: ReconcileAsk) -> None:
        """Run one asked-for reconcile; a stop cancels it. Each step commits on its own, so a
        cancelled reconcile leaves nothing wrong behind (the next one redoes the rest)."""
        run = asyncio.create_task(self._reconcile_logged(ask), name="reconcile-run")
        stop = asyncio.create_task(self.stop_event.wait(), name="reconcile-stop")
        try:
            await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run

    async def _reconcile_logged(self, ask: ReconcileAsk) -> None:
        """A failed scheduled reconcile is logged and asked for again later, never fatal."""
        try:
            await self.reconcile(ask.reason, ask.stores)
        except Exception as exc:
            log.warning("reconcile_failed", reason=ask.reason, error=str(exc))
            self.reconcile_schedule.ask(ask.reason, ask.stores, delay=RETRY_SECONDS)

    def _reconcile_switched_on(self, diff: ConfigDiff) -> None:
        """A store switched on by a reload (or added with stock sync on) is reconciled soon, so
        it starts from what BigCommerce holds rather than waiting for Katana changes."""
        added = [n for n in diff.stores_added if self.config.store(n).stock_sync]
        names = [*diff.stores_switched_on, *added]
        if names:
            self.reconcile_schedule.ask("store_switched_on", names)

    @contextlib.asynccontextmanager
    async def offline(self) -> AsyncIterator[Daemon]:
        """The components ``run`` builds, connected, with no loop or listener running: for
        one-shot commands (``katsyncd reconcile``)."""
        await self.db.open()
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": f"katsyncd/{__version__}"},
        )
        try:
            self._build_clients()
            await self._refresh_locations()
            yield self
        finally:
            await self.session.close()
            await self.db.close()

    async def _catalog_loop(self) -> None:
        while not self.stop_event.is_set():
            every = self.config.sync.catalog_refresh_seconds
            for rt in list(self.stores.values()):
                last = rt.catalog_refreshed_at
                if last is None or time.monotonic() - last >= every:
                    await self._refresh_store_catalog(rt)
            await _sleep(self.stop_event, 1.0)

    async def _refresh_store_catalog(self, rt: StoreRuntime) -> None:
        while not self._mirror_ready() and not self.stop_event.is_set():
            await _sleep(self.stop_event, 0.2)
        try:
            await refresh_catalog(rt.config.name, rt.client, self.db, self.mark_variants)
            rt.catalog_refreshed_at = time.monotonic()
        except Exception as exc:
            log.warning("catalog_refresh_failed", store=rt.config.name, error=str(exc))
            rt.catalog_refreshed_at = (
                time.monotonic() - self.config.sync.catalog_refresh_seconds + 30
            )

    async def _status_loop(self) -> None:
        retention_checked = 0.0
        while not self.stop_event.is_set():
            await self._update_gauges()
            if time.monotonic() - retention_checked > 3600:
                await self.db.pool.execute(
                    Q["prune_push_log"], self.config.sync.push_log_retention_days
                )
                retention_checked = time.monotonic()
            await _sleep(self.stop_event, STATUS_REFRESH_SECONDS)

    async def _update_gauges(self) -> None:
        self.metrics.stale_variants_pending.set(len(self.variants))
        self.metrics.katana_budget_remaining.set(self.katana_limiter.available())
        stats = {r["store"]: r for r in await self.db.pool.fetch(Q["store_stats"])}
        for name, rt in self.stores.items():
            st = stats.get(name)
            self.metrics.store_backlog.labels(name).set(
                0 if st is None else st["dry_run_backlog" if rt.config.dry_run else "backlog"]
            )
            rt.unmatched = [r["sku"] for r in await self.db.pool.fetch(Q["unmatched_skus"], name)]
            self.metrics.unmatched_skus.labels(name).set(len(rt.unmatched))

    # ----- reload ------------------------------------------------------------------------------
    async def _reload_loop(self) -> None:
        while not self.stop_event.is_set():
            await _wait_either(self.stop_event, self.reload_requested, None)
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                await self.reload()

    async def reload(self, new: Config | None = None) -> bool:
        """Load → validate → diff → apply. A bad file keeps the old config running."""
        sdnotify.reloading()
        try:
            if new is None:
                if self.config_path is None:
                    raise ConfigError(["no config file to reload (demo or in-memory config)"])
                new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            self.metrics.config_reload_ok.set(0)
            log.error("config_reload_failed", problems=exc.problems)
            sdnotify.ready()
            return False
        await self._apply_config(new)
        self.metrics.config_reload_ok.set(1)
        self.metrics.config_reload_ts.set(time.time())
        sdnotify.ready()
        return True

    async def _apply_config(self, new: Config) -> None:
        diff = diff_config(self.config, new)
        old, self.config = self.config, new
        self.restart_required = diff_config(self.boot_config, new).restart_required
        if self.restart_required:
            log.warning("config_needs_restart", keys=self.restart_required)
        if diff.katana_changed:
            self.katana_limiter.set_rate(new.katana.requests_per_minute)
            if self.katana is not None:
                self.katana.api_key = new.katana.api_key_value()
                self.katana.base_url = new.katana.base_url.rstrip("/")
                self.katana.ids_per_request = new.katana.ids_per_request
        if diff.log_changed:
            from katsyncd import logsetup

            logsetup.configure(new.log.level, new.log.format)
        self.variants.configure(new.sync.debounce_seconds, new.sync.max_delay_seconds)
        self.orders.configure(min(new.sync.debounce_seconds, 1.0), new.sync.max_delay_seconds)
        for name in diff.stores_removed:
            rt = self.stores.pop(name)
            rt.stop.set()
        for name in diff.stores_added:
            rt = self._make_store(new.store(name))
            self.stores[name] = rt
            self._apply_rules(rt)
            self._start_writer(rt)
        for name in set(diff.stores_changed) - set(diff.stores_added):
            await self._reconfigure_store(name, new.store(name), old.store(name))
        for name in diff.stores_rules_changed:
            await self._recompute_store(name)
        self._reconcile_switched_on(diff)
        log.info(
            "config_reloaded",
            added=diff.stores_added,
            removed=diff.stores_removed,
            changed=diff.stores_changed,
        )

    async def _reconfigure_store(self, name: str, sc: StoreConfig, old: StoreConfig) -> None:
        rt = self.stores[name]
        connection_changed = (
            sc.api_base_url,
            sc.store_hash,
            sc.access_token_value(),
            sc.write_timeout_seconds,
        ) != (old.api_base_url, old.store_hash, old.access_token_value(), old.write_timeout_seconds)
        rt.config = sc
        if connection_changed:
            rt.stop.set()
            fresh = self._make_store(sc)
            self.stores[name] = fresh
            rt = fresh
        else:
            rt.view.location_id = sc.location_id
        self._apply_rules(rt)
        if not sc.stock_sync:
            rt.stop.set()
        elif rt.task is None or rt.task.done() or rt.stop.is_set():
            self._start_writer(rt)
        rt.view.wake.set()

    async def _recompute_store(self, name: str) -> None:
        """A store's rules changed: every matched variant is re-read and recomputed."""
        skus = [r["sku"] for r in await self.db.pool.fetch(Q["matched_skus"], [name])]
        ids = [r["id"] for r in await self.db.pool.fetch(Q["live_variant_ids_by_skus"], skus)]
        await self.mark_variants(ids, "config_changed")

    # ----- status ------------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        stats = {r["store"]: dict(r) for r in await self.db.pool.fetch(Q["store_stats"])}
        stores = []
        for name, rt in self.stores.items():
            st = stats.get(name, {})
            stores.append(
                {
                    "name": name,
                    "stock_sync": rt.config.stock_sync,
                    "dry_run": rt.config.dry_run,
                    "quantity": rt.config.quantity,
                    "location_id": rt.config.location_id,
                    "items": st.get("items", 0),
                    "backlog": st.get("dry_run_backlog" if rt.config.dry_run else "backlog", 0),
                    "failed_items": st.get("failed", 0),
                    "last_push": _iso(st.get("last_push")),
                    "last_error": rt.writer.last_error,
                    "unmatched_skus_count": len(rt.unmatched),
                    "unmatched_skus": rt.unmatched[:100],
                    "untracked_skus": [
                        r["sku"] for r in await self.db.pool.fetch(Q["untracked_skus"], name)
                    ][:100],
                    "held_by_oversell_guard": rt.writer.held,
                    "recent_pushes": [
                        _push_json(r)
                        for r in await self.db.pool.fetch(Q["recent_pushes"], name, 10)
                    ],
                    "unknown_katana_locations": rt.unmatched_locations,
                    "rate_limit": rt.limiter.snapshot(),
                }
            )
        marks = {
            r["kind"]: {
                "updated_at": r["updated_at"].isoformat(),
                "polled_at": r["polled_at"].isoformat(),
            }
            for r in await self.db.pool.fetch(Q["all_watermarks"])
        }
        return {
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "ready": self.ready,
            "draining": self.draining,
            "restart_required": self.restart_required,
            "stale_variants_pending": len(self.variants),
            "stale_sales_orders_pending": len(self.orders),
            "katana": {
                "budget": self.katana_limiter.snapshot(),
                "watermarks": marks,
                "ids_per_request": None if self.katana is None else self.katana.id_filter_status(),
            },
            "stores": stores,
            "last_reconcile": self.last_reconcile,
        }


def _push_json(r: asyncpg.Record) -> dict[str, Any]:
    out = dict(r)
    out["at"] = r["at"].isoformat()
    return out


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _wait_either(a: asyncio.Event, b: asyncio.Event, seconds: float | None) -> None:
    waiters = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
