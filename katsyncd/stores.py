"""The stores: one runtime per configured BigCommerce store (client, limiter, writer), built,
reconfigured and removed per store on a reload, and the check of each store's location."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import structlog

from katsyncd.bigcommerce import (
    LOCATIONS_PATH,
    BcError,
    BcStoreError,
    BigCommerceClient,
    location_problem,
)
from katsyncd.config import StoreConfig
from katsyncd.db import Database
from katsyncd.engine import StoreView
from katsyncd.leadership import Fence
from katsyncd.marks import MarkFn
from katsyncd.metrics import Metrics
from katsyncd.models import KatanaLocation
from katsyncd.persistence import marks as stored_marks
from katsyncd.ratelimit import BcLimiter
from katsyncd.rules import LevelRules, resolve_locations
from katsyncd.writer import StoreWriter

log = structlog.get_logger(__name__)

# What keeps a rules recompute from marking now (Postgres restarting, a network blip).
# (A connection terminated mid-statement can also surface as asyncpg's InternalClientError.)
DB_UNAVAILABLE = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

# Start a named task under supervision (None: no task group, as in a one-shot command).
Spawn = Callable[[str, Callable[[], Awaitable[None]]], "asyncio.Task[None] | None"]


def no_spawn(name: str, fn: Callable[[], Awaitable[None]]) -> asyncio.Task[None] | None:
    return None


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


def store_rules(sc: StoreConfig, known: list[KatanaLocation]) -> LevelRules:
    """The store's level rules, its ``katana_locations`` resolved against Katana's list."""
    locs, _missing = resolve_locations(sc.katana_locations, known)
    if sc.katana_locations and not known:
        locs = frozenset()  # not resolved yet: count nothing rather than everything
    return LevelRules(sc.quantity, sc.katana_sales_orders_count, locs, sc.buffer, sc.max_quantity)


class StoreRegistry:
    """Every store's runtime, by name, and Katana's locations their rules resolve against."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        db: Database,
        metrics: Metrics,
        *,
        recheck: MarkFn,
        rng: random.Random,
        fence: Fence | None = None,
    ) -> None:
        self._session = session
        self._fence = fence  # the leader lease every writer writes under (None: none)
        self._db = db
        self._metrics = metrics
        self._recheck = recheck
        self._rng = rng
        self.by_name: dict[str, StoreRuntime] = {}
        self.locations: dict[int, str] = {}
        self.catalog_refreshed = asyncio.Event()  # set after each successful catalogue read
        self.spawn: Spawn = no_spawn  # the composition root sets its supervisor once running
        # Stores whose rules changed and whose variants are not durably marked yet.
        self.pending_recompute: set[str] = set()
        self._recompute_lock = asyncio.Lock()

    # ----- the set of stores ----------------------------------------------------------------
    def __iter__(self) -> Iterator[StoreRuntime]:
        return iter(list(self.by_name.values()))

    def views(self) -> list[StoreView]:
        return [rt.view for rt in self.by_name.values()]

    def catalogs_pending(self) -> bool:
        """Some store's first catalogue refresh has not happened yet."""
        return any(rt.catalog_refreshed_at is None for rt in self.by_name.values())

    def catalogs_awaited(self) -> bool:
        """Some store's first catalogue refresh has not happened yet and its reads are not
        failing (S9: a store failing from start-up is not waited for)."""
        return any(
            rt.catalog_refreshed_at is None and not rt.client.reads_failing
            for rt in self.by_name.values()
        )

    def add(self, sc: StoreConfig) -> StoreRuntime:
        rt = self._build(sc)
        self.by_name[sc.name] = rt
        return rt

    def remove(self, name: str) -> None:
        self.pending_recompute.discard(name)
        rt = self.by_name.pop(name)
        rt.stop.set()
        rt.writer.clear_error()

    def _build(self, sc: StoreConfig) -> StoreRuntime:
        limiter = BcLimiter()
        client = BigCommerceClient(
            self._session,
            sc.api_base_url,
            sc.store_hash,
            sc.access_token_value(),
            limiter,
            self._metrics,
            store_name=sc.name,
            timeout=sc.write_timeout_seconds,
            rng=self._rng,
        )
        view = StoreView(sc.name, store_rules(sc, self._known()), sc.location_id)
        writer = StoreWriter(
            view,
            client,
            self._db,
            self._metrics,
            dry_run=lambda: self.by_name[sc.name].config.dry_run,
            guard=lambda: self.guard_delay(sc.name),
            recheck=self._recheck,
            rng=self._rng,
            fence=self._fence,
        )
        return StoreRuntime(sc, view, client, limiter, writer)

    def guard_delay(self, name: str) -> float | None:
        """The oversell guard's hold for this store (None: off)."""
        rt = self.by_name.get(name)
        if rt is None or not rt.config.oversell_guard:
            return None
        return rt.config.increase_delay_seconds

    # ----- Katana's locations -----------------------------------------------------------------
    def _known(self) -> list[KatanaLocation]:
        return [KatanaLocation(i, n) for i, n in self.locations.items()]

    def set_locations(self, locations: list[KatanaLocation]) -> None:
        """Katana's locations were read: every store's rules resolve against them again."""
        self.locations = {loc.id: loc.name for loc in locations}
        for rt in self:
            self.apply_rules(rt)

    def apply_rules(self, rt: StoreRuntime) -> None:
        known = self._known()
        rt.view.rules = store_rules(rt.config, known)
        _, rt.unmatched_locations = resolve_locations(rt.config.katana_locations, known)
        if rt.unmatched_locations:
            log.warning(
                "katana_locations_unknown", store=rt.config.name, names=rt.unmatched_locations
            )

    # ----- tasks --------------------------------------------------------------------------
    def start_writer(self, rt: StoreRuntime) -> None:
        if not rt.config.stock_sync:
            return
        stop = asyncio.Event()
        task = self.spawn(f"writer:{rt.config.name}", lambda: rt.writer.run(stop))
        if task is not None:
            rt.stop, rt.task = stop, task

    def spawn_location_check(self, rt: StoreRuntime) -> None:
        _ = self.spawn(f"location-check:{rt.config.name}", lambda: check_location(rt))

    # ----- reload, per store ----------------------------------------------------------------
    def reconfigure(self, name: str, sc: StoreConfig, old: StoreConfig) -> None:
        """Apply a store's changed settings; a new connection gets a fresh runtime."""
        rt = self.by_name[name]
        connection_changed = (
            sc.api_base_url,
            sc.store_hash,
            sc.access_token_value(),
            sc.write_timeout_seconds,
        ) != (old.api_base_url, old.store_hash, old.access_token_value(), old.write_timeout_seconds)
        rt.config = sc
        if connection_changed:
            rt.stop.set()
            rt.writer.clear_error()  # the new connection is checked afresh
            rt = self.add(sc)
        else:
            rt.view.location_id = sc.location_id
        self.apply_rules(rt)
        if not sc.stock_sync:
            rt.stop.set()
        elif rt.task is None or rt.task.done() or rt.stop.is_set():
            self.start_writer(rt)
        rt.view.wake.set()

    async def recompute(self, name: str) -> None:
        """A store's rules changed: every matched variant is re-read and recomputed."""
        ids = await stored_marks.store_variant_ids(self._db.pool, name)
        await self._recheck(ids, "config_changed")

    async def recompute_pending(self, names: Iterable[str] = ()) -> list[str]:
        """Add ``names`` to the stores whose rules changed, then mark each one's variants.

        A store leaves the pending set only once its marks are durable (then the flusher
        recomputes them under the rules already in force). With Postgres unavailable the
        store stays pending and the caller retries; the stores still pending are returned.
        """
        self.pending_recompute |= {n for n in names if n in self.by_name}
        async with self._recompute_lock:
            for name in sorted(self.pending_recompute):
                if name not in self.by_name:
                    self.pending_recompute.discard(name)
                    continue
                try:
                    await self.recompute(name)
                except DB_UNAVAILABLE as exc:
                    log.warning(
                        "rules_recompute_pending",
                        store=name,
                        error=str(exc) or type(exc).__name__,
                    )
                    break  # the database is the same for every store: retry them all later
                self.pending_recompute.discard(name)
                log.info("rules_recompute_marked", store=name)
        return sorted(self.pending_recompute)


async def check_location(rt: StoreRuntime) -> None:
    """At start and on reload: is the store's ``location_id`` an enabled location?

    Says so either way; a missing or disabled location puts the store in the ``location``
    error state. Writes are still attempted (with backoff): they are classified the same
    way, and the first one that succeeds clears the state.
    """
    name, location_id = rt.config.name, rt.config.location_id
    try:
        locations = await rt.client.locations()
    except BcStoreError as exc:
        rt.writer.set_error(exc.kind, exc.status, str(exc), LOCATIONS_PATH)
        return
    except (BcError, aiohttp.ClientError, TimeoutError) as exc:
        if isinstance(exc, BcError) and exc.status == 404:
            rt.writer.set_error("not_found", 404, str(exc), LOCATIONS_PATH)
            return
        log.warning(
            "store_location_check_failed",
            store=name,
            endpoint=LOCATIONS_PATH,
            error=str(exc) or type(exc).__name__,
        )
        return
    problem = location_problem(locations, location_id)
    if problem is None:
        log.info("store_location_ok", store=name, location_id=location_id)
        rt.writer.clear_error("location")
    else:
        rt.writer.set_error("location", None, problem, LOCATIONS_PATH)
