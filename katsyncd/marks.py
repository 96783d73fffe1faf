"""Stale marks: the one place that marks variants and sales orders stale.

A mark has two halves. The durable half is a row in Postgres (``persistence.marks``; the
webhook path writes it inside the group commit), so a restart loses none. The timing half is
one in-memory ``Debouncer`` per kind: a burst of marks for one key becomes one read. Other
components get ``mark_variants`` / ``mark_sales_orders`` as callables (``MarkFn``), never this
object.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection

import asyncpg
import structlog

from katsyncd.debounce import Debouncer
from katsyncd.ingest import Effect, Notice
from katsyncd.metrics import Metrics
from katsyncd.persistence import lease
from katsyncd.persistence import marks as stored

log = structlog.get_logger(__name__)

MarkFn = Callable[[Collection[int], str], Awaitable[None]]
ORDER_DEBOUNCE_CAP_SECONDS = 1.0  # sales orders are resolved at most this long after a mark


class StaleMarks:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        metrics: Metrics,
        *,
        debounce: float,
        max_delay: float,
        clock: Callable[[], float] = time.monotonic,
        notice: Notice | None = None,
    ) -> None:
        self._pool = pool
        self._notice = notice  # a follower's durable marks are announced to the leader
        # Only the leader times marks; a follower's would never be flushed. Until the
        # composition root says otherwise (one-shot commands, tests), this process leads.
        self.active = True
        self._metrics = metrics
        self.variants = Debouncer(debounce, max_delay, clock=clock)
        self.orders = Debouncer(min(debounce, ORDER_DEBOUNCE_CAP_SECONDS), max_delay, clock=clock)
        self.poll_wake = asyncio.Event()  # a committed webhook asked for a poll
        # Told of every variant mark that may mean its stock moved (all but commitment-only
        # marks, ``time_commitments``): the engine's inventory cache forgets them.
        self.stock_in_question: Callable[[Collection[int]], None] = lambda ids: None
        self.announced: Callable[[Collection[int]], None] = lambda ids: None  # webhooks only

    def configure(self, debounce: float, max_delay: float) -> None:
        """New timings (a reload); pending marks keep their first-seen times."""
        self.variants.configure(debounce, max_delay)
        self.orders.configure(min(debounce, ORDER_DEBOUNCE_CAP_SECONDS), max_delay)

    def on_committed(self, effects: list[Effect]) -> None:
        """The group committer made these webhook effects durable: time them."""
        if not self.active:
            return  # the commit's NOTIFY tells the leader
        self._time_effects(effects)

    def _time_effects(self, effects: list[Effect]) -> None:
        variant_ids = [int(e.ident) for e in effects if e.kind == "variant"]
        self.stock_in_question(variant_ids)
        self.announced(variant_ids)
        self._metrics.debounce_marks.inc(len(variant_ids))
        self.variants.mark(variant_ids)
        self.orders.mark(int(e.ident) for e in effects if e.kind == "sales_order")
        if any(e.kind == "poll" for e in effects):
            self.poll_wake.set()

    async def mark_variants(self, ids: Collection[int], reason: str) -> None:
        """Durably mark variants stale (polls, catalogue, reconcile, rules) and time them."""
        unique = sorted(set(ids))
        await stored.mark_variants(self._pool(), unique, reason)
        if self.active:
            self.time_variants(unique)
        elif self._notice is not None and unique:
            await lease.notify(self._pool(), lease.MARKS_CHANNEL, self._notice(unique, [], []))

    def time_variants(self, ids: Collection[int]) -> None:
        """Time variants marked durably in the caller's own transaction (a mirror write)."""
        if not self.active:
            return
        unique = sorted(set(ids))
        self.stock_in_question(unique)
        self._metrics.debounce_marks.inc(len(unique))
        self.variants.mark(unique, settled=True)  # from a read of Katana: no quiet time needed

    def time_commitments(self, ids: Collection[int]) -> None:
        """Time variants whose committed stock alone changed (an open sales order created or
        edited, marked durably by the mirror write): their stock is not in question."""
        unique = sorted(set(ids))
        self._metrics.debounce_marks.inc(len(unique))
        self.variants.mark(unique, settled=True)

    async def mark_sales_orders(self, ids: Collection[int], reason: str) -> None:
        """Durably mark sales orders for resolution (a row poll met an order not mirrored)."""
        unique = sorted(set(ids))
        if not unique:
            return
        await stored.mark_sales_orders(self._pool(), unique, reason)
        if self.active:
            self.time_sales_orders(unique)
        elif self._notice is not None:
            await lease.notify(self._pool(), lease.MARKS_CHANNEL, self._notice([], unique, []))

    def time_sales_orders(self, ids: Collection[int]) -> None:
        """Time sales orders marked durably in the caller's own transaction (a mirror write)."""
        if self.active:
            self.orders.mark(sorted(set(ids)), settled=True)

    async def load(self) -> None:
        """At start: time the durable marks a previous run left, backdated by their age."""
        pool = self._pool()
        now = self.variants.now()
        loaded = await stored.stale_variants(pool)
        for variant_id, age in loaded:
            self.variants.mark([variant_id], first_seen=now - age)
        # Marks may come from notices this replica missed (webhooks at another replica): their
        # stock is in question like any webhook's (the kept inventory of them is forgotten;
        # faults ha-postgres-restart: a follower's webhooks, their NOTIFY missed while the
        # leader's LISTEN reconnected, were recomputed from stale kept rows and cleared).
        loaded_ids = [variant_id for variant_id, _ in loaded]
        self.stock_in_question(loaded_ids)
        self.announced(loaded_ids)
        for so_id, age in await stored.stale_sales_orders(pool):
            self.orders.mark([so_id], first_seen=now - age)
        log.info("stale_marks_loaded", variants=len(self.variants), sales_orders=len(self.orders))

    # ----- leadership --------------------------------------------------------------------------
    async def activate(self) -> None:
        """This replica leads now: time every durable mark (a dead leader's included)."""
        self.deactivate()
        self.active = True  # first: a commit racing the load below is timed either way
        await self.load()

    def deactivate(self) -> None:
        """A follower times nothing: forget what is timed (it stays durable)."""
        self.active = False
        for debouncer in (self.variants, self.orders):
            _ = debouncer.take(list(debouncer.due(float("inf"))))
        self.poll_wake.clear()

    def on_notice(self, variants: list[int], orders: list[int], polls: list[str]) -> None:
        """Another replica committed these marks (its NOTIFY): time them as if committed here."""
        if not self.active:
            return
        effects = [Effect("variant", i) for i in variants]
        effects += [Effect("sales_order", i) for i in orders]
        effects += [Effect("poll", p) for p in polls]
        self._time_effects(effects)
