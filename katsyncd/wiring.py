"""Wiring: every component built from a Config, in one place, for the daemon and for one-shot
commands alike.

``connected`` opens the database (migrated) and the HTTP session and yields the ``Parts``;
``build_offline`` adds Katana's locations, for a one-shot command (``katsyncd reconcile``);
``daemon_loops`` builds the loops the daemon supervises on top of the parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from katsyncd import __version__
from katsyncd.coldstart import ColdSweep
from katsyncd.config import Config
from katsyncd.db import Database
from katsyncd.engine import Engine
from katsyncd.flush import (
    MAX_ORDERS_PER_RESOLVE,
    MAX_VARIANTS_PER_FLUSH,
    FlushLoop,
    FlushPolicy,
    VariantFlushPolicy,
    bursting,
    flush_variants,
    resolve_orders,
)
from katsyncd.ingest import GroupCommitter, Notice
from katsyncd.katana import KatanaClient, PageHook
from katsyncd.leadership import Leadership, marks_payload
from katsyncd.marks import StaleMarks
from katsyncd.metrics import Metrics
from katsyncd.poller import Poller
from katsyncd.ratelimit import KatanaLimiter
from katsyncd.reconcile import ReconcileReport
from katsyncd.schedules import (
    CatalogSchedule,
    PollSchedule,
    Reconciles,
    mirror_ready,
    refresh_locations,
)
from katsyncd.status import Lifecycle, StatusReporter
from katsyncd.stores import StoreRegistry

Loop = Callable[[asyncio.Event], Awaitable[None]]  # runs until the event is set
# Katana requests a fresh process may send before Katana has said what is left of the
# account's window (the previous process may have spent it): then its X-Ratelimit-Remaining.
KATANA_START_TOKENS = 1.0
REPLICA_HEADER = "X-Katsyncd-Replica"
# Polls leave this many Katana tokens to live reads (the tail of a burst: a page or two).
KATANA_POLL_RESERVE = 2.0


class ConfigRef:
    """The config in force; a reload swaps it, components read it through ``get``."""

    def __init__(self, config: Config) -> None:
        self.value = config

    def get(self) -> Config:
        return self.value


@dataclass
class Parts:
    """The components, connected, with no loop or listener running."""

    config: ConfigRef
    db: Database
    metrics: Metrics
    katana_limiter: KatanaLimiter
    katana: KatanaClient
    engine: Engine
    poller: Poller
    marks: StaleMarks
    committer: GroupCommitter
    stores: StoreRegistry
    reconciles: Reconciles
    leadership: Leadership | None  # None: a one-shot command (no lease, no fencing)

    def mirror_ready(self) -> bool:
        return mirror_ready(self.poller)()

    async def reconcile(
        self,
        reason: str,
        stores: Collection[str] | None = None,
        *,
        dry_run: bool = False,
        push: bool = False,
        on_page: PageHook | None = None,
    ) -> ReconcileReport:
        """One full reconcile (see ``schedules.Reconciles.reconcile``)."""
        return await self.reconciles.reconcile(
            reason, stores, dry_run=dry_run, push=push, on_page=on_page
        )


def database(config: Config, name: str = "katsyncd") -> Database:
    d = config.database
    return Database(
        d.url,
        state_dir=Path(d.state_dir),
        min_size=d.pool_min_size,
        max_size=d.pool_max_size,
        application_name=name,
    )


def build(
    config: ConfigRef,
    db: Database,
    session: aiohttp.ClientSession,
    metrics: Metrics,
    rng: random.Random,
    replica: str | None = None,
    *,
    cold_start: bool = True,
) -> Parts:
    """Every component, from the config (no I/O: the pool is opened by the caller). With a
    ``replica`` name the parts run under the leader lease (the daemon).

    ``cold_start``: the first variants poll of an empty mirror is the ``/inventory?extend=
    variant`` sweep (the daemon); without it, the ``/variants`` sweep (a one-shot reconcile,
    which reads the whole inventory itself right after)."""
    cfg = config.get()
    lead = (
        None
        if replica is None
        else Leadership(lambda: db.pool, replica, cfg.ha.lease_seconds, metrics)
    )
    notice: Notice | None = None if replica is None else functools.partial(marks_payload, replica)
    k = cfg.katana
    limiter = KatanaLimiter(
        k.requests_per_minute,
        share=k.max_share,
        poll_reserve=KATANA_POLL_RESERVE,
        initial_tokens=KATANA_START_TOKENS,
    )
    katana = KatanaClient(
        session,
        k.base_url,
        k.api_key_value(),
        limiter,
        metrics,
        timeout=k.timeout_seconds,
        rng=rng,
        ids_per_request=k.ids_per_request,
    )
    marks = StaleMarks(
        lambda: db.pool,
        metrics,
        debounce=cfg.sync.debounce_seconds,
        max_delay=cfg.sync.max_delay_seconds,
        notice=notice,
    )
    fence = None if lead is None else lead.fence
    stores = StoreRegistry(session, db, metrics, recheck=marks.mark_variants, rng=rng, fence=fence)
    engine = Engine(db, katana, metrics, stores=stores.views)
    cold = (
        ColdSweep(
            db,
            katana,
            engine,
            locations=lambda: list(stores.locations),
            catalogs_awaited=stores.catalogs_awaited,
            catalog_refreshed=stores.catalog_refreshed,
            timed=marks.time_variants,
        )
        if cold_start
        else None
    )
    marks.stock_in_question = engine.inventory_cache.forget
    marks.announced = engine.inventory_cache.announce
    poller = Poller(
        db,
        katana,
        engine,
        metrics,
        mark=marks.mark_variants,
        mark_orders=marks.mark_sales_orders,
        timed=marks.time_variants,
        timed_orders=marks.time_sales_orders,
        cold=cold,
        timed_commitments=marks.time_commitments,
    )
    for sc in cfg.stores:
        _ = stores.add(sc)
    return Parts(
        config=config,
        db=db,
        metrics=metrics,
        katana_limiter=limiter,
        katana=katana,
        engine=engine,
        poller=poller,
        marks=marks,
        committer=GroupCommitter(lambda: db.pool, on_committed=marks.on_committed, notice=notice),
        stores=stores,
        reconciles=Reconciles(db, engine, poller, stores, metrics, config.get, rng=rng),
        leadership=lead,
    )


def apply_katana_config(parts: Parts, new: Config) -> None:
    """A reload changed ``[katana]``: the limiter's rate and the client's settings follow."""
    parts.katana_limiter.set_rate(new.katana.requests_per_minute)
    parts.katana_limiter.set_share(new.katana.max_share)
    parts.katana.api_key = new.katana.api_key_value()
    parts.katana.base_url = new.katana.base_url.rstrip("/")
    parts.katana.ids_per_request = new.katana.ids_per_request


@contextlib.asynccontextmanager
async def connected(
    config: ConfigRef,
    *,
    metrics: Metrics,
    rng: random.Random,
    replica: str | None = None,
    cold_start: bool = True,
) -> AsyncIterator[Parts]:
    """The parts with the database open (migrated) and an HTTP session; both closed after.
    ``replica``: this daemon's name in the leader lease (its connections and requests say it)."""
    headers = {"User-Agent": f"katsyncd/{__version__}"}
    if replica is not None:  # which replica sent a request (BigCommerce's and Katana's logs)
        headers[REPLICA_HEADER] = replica
    db = database(config.get(), "katsyncd" if replica is None else f"katsyncd {replica}"[:63])
    await db.open()
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None), headers=headers
        ) as session:
            yield build(config, db, session, metrics, rng, replica, cold_start=cold_start)
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def build_offline(
    config: Config, *, metrics: Metrics | None = None, rng: random.Random | None = None
) -> AsyncIterator[Parts]:
    """For one-shot commands: the parts connected, Katana's locations read (the stores' rules
    resolved), no loop or listener running."""
    async with connected(
        ConfigRef(config),
        metrics=metrics or Metrics(),
        rng=rng or random.Random(),
        cold_start=False,  # a reconcile reads the whole inventory itself
    ) as parts:
        await refresh_locations(parts.katana, parts.db, parts.stores)
        yield parts


@dataclass
class DaemonLoops:
    status: StatusReporter
    always: list[tuple[str, Loop]]  # (task name, loop) every replica runs, in this order
    leading: list[tuple[str, Loop]]  # what only the leader runs (with the store writers)


def flush_loops(parts: Parts) -> tuple[FlushLoop, FlushLoop]:
    """The variant flusher and the sales-order resolver, on the Katana budget and rate."""
    ready = mirror_ready(parts.poller)
    limiter = parts.katana_limiter

    def rate() -> float:
        return limiter.requests_per_minute

    marks = parts.marks

    def variant_tail() -> float:
        """The forecast of a burst's variant reads after it: the variants it touched within
        Katana's window (a burst that goes on re-marks what it already marked, so a read
        mid-burst does not shorten the tail), read in pages."""
        return variant_policy.cost(marks.variants.working_set())

    def cap() -> float:
        return rate() / 2  # the tail never holds more than half the bucket (reads go on)

    def reserve_for_variants() -> float:
        """Variant reads (and polls) in a burst leave what the tail will need: the variant
        tail, the pending sales orders' pages (resolved first: they mark variants) and one
        more page."""
        return min(cap(), variant_tail() + order_policy.cost(len(marks.orders)) + 1)

    def reserve_for_orders() -> float:
        """Sales-order resolves leave the variant tail and one page: an order read mid-burst
        is not paid again (it comes back only if the order changes) and a resolved new
        order lowers what BigCommerce shows at once (S4, from the kept inventory), so orders
        go first. (bench --scenario burst: keeping the pending orders' pages for them too,
        no order was resolved until the burst was over.)"""
        return min(cap(), variant_tail() + 1)

    variant_policy = VariantFlushPolicy(
        limiter.budget,
        rate,
        katana=parts.katana,
        locations=lambda: len(parts.stores.locations),
        catalogs_pending=parts.stores.catalogs_pending,
        reserve=reserve_for_variants,
        orders_first=lambda: orders.busy or orders_due_now(),
    )
    variants = FlushLoop(
        parts.marks.variants,
        variant_policy,
        flush_variants(parts.db, parts.engine, parts.metrics),
        max_batch=MAX_VARIANTS_PER_FLUSH,
        ready=ready,
    )
    order_policy = FlushPolicy(limiter.budget, rate, reserve=reserve_for_orders)

    def orders_due_now() -> bool:
        """Sales orders the resolver is about to read: due, no burst holding them."""
        return not bursting(marks.orders) and bool(marks.orders.due())

    # in a burst polls leave the tail's tokens too (they re-read what webhooks announce)
    limiter.set_poll_reserve(lambda: reserve_for_variants() if bursting(marks.variants) else 0.0)
    parts.marks.variants.set_leading_gate(variant_policy.leading_allowed)
    parts.marks.orders.set_leading_gate(order_policy.leading_allowed)
    orders = FlushLoop(
        parts.marks.orders,
        order_policy,
        resolve_orders(parts.poller),
        max_batch=MAX_ORDERS_PER_RESOLVE,
        ready=ready,
    )
    return variants, orders


def daemon_loops(parts: Parts, life: Lifecycle, rng: random.Random) -> DaemonLoops:
    """The loops the daemon runs over ``parts`` (each ``loop(stop)`` until ``stop`` is set)."""
    config, marks = parts.config.get, parts.marks
    variants, orders = flush_loops(parts)
    polls = PollSchedule(
        parts.poller,
        parts.katana,
        parts.db,
        parts.stores,
        parts.reconciles.schedule,
        config,
        wake=marks.poll_wake,
        rng=rng,
    )
    ready = mirror_ready(parts.poller)

    def catalog_ready() -> bool:
        return parts.poller.catalog_may_start() or ready()

    catalog = CatalogSchedule(
        parts.stores, parts.db, marks.mark_variants, config, ready=catalog_ready
    )
    status = StatusReporter(
        life,
        parts.db,
        parts.metrics,
        parts.stores,
        marks,
        parts.katana_limiter,
        parts.katana,
        last_reconcile=lambda: parts.reconciles.last,
        config=config,
        leadership=None if parts.leadership is None else parts.leadership.describe,
    )
    return DaemonLoops(
        status,
        [("group-committer", parts.committer.run), ("status", status.run)],
        [
            ("variant-flusher", variants.run),
            ("order-resolver", orders.run),
            ("poller", polls.run),
            ("catalog", catalog.run),
            ("reconcile", parts.reconciles.run),
        ],
    )
