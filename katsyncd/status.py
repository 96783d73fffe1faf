"""What the daemon shows about itself: the ``/status`` document, the readiness probe, the
gauges refreshed every few seconds (and push_log pruned hourly)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from katsyncd import __version__
from katsyncd.config import Config
from katsyncd.db import Database
from katsyncd.katana import KatanaClient
from katsyncd.marks import StaleMarks
from katsyncd.metrics import Metrics
from katsyncd.persistence import status as stored
from katsyncd.ratelimit import KatanaLimiter
from katsyncd.stores import StoreRegistry, StoreRuntime
from katsyncd.waiting import wait_stop

log = structlog.get_logger(__name__)

GAUGES_REFRESH_SECONDS = 2.0
PRUNE_EVERY_SECONDS = 3600.0
READY_DB_TIMEOUT_SECONDS = 0.8  # /readyz answers within a second, database or not
LISTED_SKUS = 100  # SKUs listed per store in /status (the count is exact)
RECENT_PUSHES = 10


@dataclass
class ReloadState:
    """What the last reload did: ``applied``, ``pending`` (the config is in force but some
    store's rule recompute could not be marked yet; retried until it is) or ``failed`` (the
    file was refused; the old config runs). ``None`` before the first reload."""

    result: str | None = None
    at: float | None = None  # when the result was reached (Unix time)
    problems: list[str] = field(default_factory=list)
    pending_recompute: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "at": _iso(self.at),
            "problems": self.problems,
            "pending_recompute": self.pending_recompute,
        }


@dataclass
class Lifecycle:
    """Where the daemon is in its life: set by the composition root, read by everyone."""

    started_at: float = field(default_factory=time.time)
    ready: bool = False  # started: listener up, marks loaded
    draining: bool = False  # a stop was asked for
    restart_required: list[str] = field(default_factory=list)  # keys a reload cannot apply
    reload: ReloadState = field(default_factory=ReloadState)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


async def readiness(db: Database, life: Lifecycle) -> tuple[bool, dict[str, Any]]:
    """Readiness: config loaded, Postgres reachable, migrations applied, not draining."""
    checks: dict[str, Any] = {"config": True, "draining": life.draining}
    try:
        pending = await stored.database_check(db.pool, READY_DB_TIMEOUT_SECONDS)
        checks["database"] = True
        checks["migrations_pending"] = pending
    except Exception as exc:
        checks["database"] = False
        checks["database_error"] = type(exc).__name__
        pending = []
    ok = life.ready and checks["database"] and not pending and not life.draining
    return ok, checks


class StatusReporter:
    def __init__(
        self,
        life: Lifecycle,
        db: Database,
        metrics: Metrics,
        stores: StoreRegistry,
        marks: StaleMarks,
        limiter: KatanaLimiter,
        katana: KatanaClient,
        *,
        last_reconcile: Callable[[], dict[str, Any] | None],
        config: Callable[[], Config],
        leadership: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self._leadership = leadership
        self._life = life
        self._db = db
        self._metrics = metrics
        self._stores = stores
        self._marks = marks
        self._limiter = limiter
        self._katana = katana
        self._last_reconcile = last_reconcile
        self._config = config

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh the gauges every few seconds; prune push_log every hour."""
        pruned = 0.0
        while not stop.is_set():
            await self.update_gauges()
            if time.monotonic() - pruned > PRUNE_EVERY_SECONDS:
                days = self._config().sync.push_log_retention_days
                await stored.prune_push_log(self._db.pool, days)
                pruned = time.monotonic()
            await wait_stop(stop, GAUGES_REFRESH_SECONDS)

    async def update_gauges(self) -> None:
        self._metrics.stale_variants_pending.set(len(self._marks.variants))
        self._metrics.katana_budget_remaining.set(self._limiter.available())
        budget = self._limiter.snapshot()
        self._metrics.katana_max_share.set(budget["max_share"])
        self._metrics.katana_requests_per_minute.set(budget["requests_per_minute"])
        stats = await stored.store_stats(self._db.pool)
        for rt in self._stores:
            name = rt.config.name
            st = stats.get(name, stored.StoreStats())
            self._metrics.store_backlog.labels(name).set(st.pending(rt.config.dry_run))
            rt.unmatched = await stored.unmatched_skus(self._db.pool, name)
            self._metrics.unmatched_skus.labels(name).set(len(rt.unmatched))

    async def document(self) -> dict[str, Any]:
        """The ``/status`` JSON."""
        pool = self._db.pool
        stats = await stored.store_stats(pool)
        stores = [await self._store(rt, stats.get(rt.config.name)) for rt in self._stores]
        life = self._life
        return {
            "version": __version__,
            "uptime_seconds": round(time.time() - life.started_at, 1),
            "ready": life.ready,
            "draining": life.draining,
            "restart_required": life.restart_required,
            "reload": life.reload.to_json(),
            "stale_variants_pending": len(self._marks.variants),
            "stale_sales_orders_pending": len(self._marks.orders),
            "katana": {
                "budget": self._limiter.snapshot(),
                "watermarks": await stored.watermarks(pool),
                "ids_per_request": self._katana.id_filter_status(),
            },
            "leadership": None if self._leadership is None else await self._leadership(),
            "stores": stores,
            "last_reconcile": self._last_reconcile(),
        }

    async def _store(self, rt: StoreRuntime, st: stored.StoreStats | None) -> dict[str, Any]:
        cfg, writer, name = rt.config, rt.writer, rt.config.name
        stats = st or stored.StoreStats()
        pool = self._db.pool
        return {
            "name": name,
            "stock_sync": cfg.stock_sync,
            "dry_run": cfg.dry_run,
            "quantity": cfg.quantity,
            "location_id": cfg.location_id,
            "items": stats.items,
            "backlog": stats.pending(cfg.dry_run),
            "failed_items": stats.failed,
            "last_push": _iso(stats.last_push),
            "last_error": writer.last_error,
            "state": "ok" if writer.error_state is None else "error",
            "error": None if writer.error_state is None else writer.error_state.to_json(),
            "unmatched_skus_count": len(rt.unmatched),
            "unmatched_skus": rt.unmatched[:LISTED_SKUS],
            "untracked_skus": (await stored.untracked_skus(pool, name))[:LISTED_SKUS],
            "held_by_oversell_guard": writer.held,
            "recent_pushes": await stored.recent_pushes(pool, name, RECENT_PUSHES),
            "unknown_katana_locations": rt.unmatched_locations,
            "rate_limit": rt.limiter.snapshot(),
        }
