"""One writer task per store (S9): pushes desired levels that differ from pushed ones.

One request in flight per store, batches of up to 2,000 items, the store's own limiter; a
store that is slow, failing or rate-limited only delays itself. Dry-run stores record what
they would write and never call BigCommerce (S1).

A write answered with a store-wide error (401/403, 404, other 4xx but 422, a location that is
missing or disabled) puts the store in an error state (``StoreErrorState``: what, since when,
what to check) until the next successful write; the batch stays in the backlog and the writer
retries with capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog

from katsyncd.backoff import backoff_delay
from katsyncd.bigcommerce import (
    ABSOLUTE_PATH,
    STORE_ERROR_HINTS,
    BcError,
    BcStoreError,
    BigCommerceClient,
    StoreErrorKind,
)
from katsyncd.db import Database
from katsyncd.engine import StoreView
from katsyncd.leadership import Fence, LeaseLost
from katsyncd.metrics import Metrics
from katsyncd.models import AbsoluteItem, WriteOutcome
from katsyncd.persistence import levels
from katsyncd.persistence.levels import ItemAt, Prior
from katsyncd.waiting import wait_either

log = structlog.get_logger(__name__)

MAX_BATCH_ITEMS = 2000  # BigCommerce's limit for one absolute adjustment
RECORD_GRACE_SECONDS = 5.0  # a cancelled writer still waits this long for its record
IDLE_CHECK_SECONDS = 1.0  # backlog re-check even without a wake-up (held increases age)

MarkFn = Callable[[Collection[int], str], Awaitable[None]]
STORE_ERROR_KINDS: tuple[StoreErrorKind, ...] = ("auth", "not_found", "location", "request")


@dataclass(frozen=True, slots=True)
class StoreErrorState:
    """Why a store cannot be written to right now, for ``/status``."""

    kind: StoreErrorKind
    status: int | None
    message: str
    endpoint: str
    since: float  # unix time the state began

    @property
    def hint(self) -> str:
        return STORE_ERROR_HINTS[self.kind]

    def same_as(self, other: StoreErrorState) -> bool:
        return (self.kind, self.status, self.message, self.endpoint) == (
            other.kind,
            other.status,
            other.message,
            other.endpoint,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
            "endpoint": self.endpoint,
            "hint": self.hint,
            "since": datetime.fromtimestamp(self.since, UTC).isoformat(),
        }


@dataclass(frozen=True, slots=True)
class GuardSplit:
    write: list[asyncpg.Record]
    held: int
    recheck: list[asyncpg.Record]


def split_for_guard(rows: Sequence[asyncpg.Record], delay: float) -> GuardSplit:
    """Oversell guard (pure): decreases and first writes go now; an increase over what
    BigCommerce was last given waits ``delay`` seconds, is re-read from Katana, and only then
    goes out (with whatever the re-read says)."""
    write, recheck, held = [], [], 0
    for r in rows:
        increase = r["pushed"] is not None and r["desired"] > r["pushed"]
        age = r["increase_age"]
        if not increase or age is None:
            write.append(r)
        elif age < delay:
            held += 1
        elif not r["guard_checked"]:
            recheck.append(r)
            held += 1
        elif r["rereading"]:
            held += 1
        else:
            write.append(r)
    return GuardSplit(write, held, recheck)


class StoreWriter:
    def __init__(
        self,
        view: StoreView,
        client: BigCommerceClient,
        db: Database,
        metrics: Metrics,
        *,
        dry_run: Callable[[], bool],
        guard: Callable[[], float | None] = lambda: None,
        recheck: MarkFn | None = None,
        batch_items: int = MAX_BATCH_ITEMS,
        error_backoff_cap: float = 60.0,
        rng: random.Random | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.view = view
        self._fence = fence  # None: no lease (a one-shot command); else writes run under it
        self.client = client
        self.db = db
        self.metrics = metrics
        self._dry_run = dry_run
        self._guard = guard  # the increase delay in seconds, or None when the guard is off
        self._recheck = recheck
        self.held = 0  # increases the oversell guard is holding back right now
        self._batch = batch_items
        self._backoff_cap = error_backoff_cap
        self._rng = rng or random.Random()
        self.last_push_at: float | None = None
        self.last_error: str | None = None
        self.error_state: StoreErrorState | None = None
        self.retry_now = asyncio.Event()  # cuts an error backoff short (set on reload)
        self.recording = False  # a write's answer is being recorded: the drain waits for it
        self.requests = 0

    @property
    def name(self) -> str:
        return self.view.name

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop``: push, then sleep until woken or the idle re-check."""
        failures = 0
        while not stop.is_set():
            try:
                did = await self.push_once()
                failures = 0
            except LeaseLost as exc:  # the leader work is being stopped: wait for it
                log.warning("store_write_fenced", store=self.name, why=str(exc))
                await wait_either(stop, self.retry_now, IDLE_CHECK_SECONDS)
                continue
            except (TimeoutError, BcError, asyncpg.PostgresError, OSError) as exc:
                failures += 1
                self.last_error = str(exc)
                delay = backoff_delay(failures, base=1.0, cap=self._backoff_cap, rng=self._rng)
                if isinstance(exc, BcStoreError):  # logged by set_error once per change
                    self.set_error(exc.kind, exc.status, str(exc))
                    log.debug("store_write_retry", store=self.name, retry_in=round(delay, 2))
                else:
                    log.warning(
                        "store_write_failed",
                        store=self.name,
                        error=str(exc),
                        retry_in=round(delay, 2),
                    )
                self.retry_now.clear()
                await wait_either(stop, self.retry_now, delay)
                continue
            if not did:
                self.view.wake.clear()
                await wait_either(stop, self.view.wake, IDLE_CHECK_SECONDS)

    async def push_once(self) -> int:
        """Push one batch of the backlog; returns items handled (0 = nothing to do)."""
        dry = self._dry_run()
        rows = await levels.backlog(self.db.pool, self.name, self._batch, dry_run=dry)
        if not rows:
            return 0
        if dry:
            await self._record_dry_run(rows)
            return len(rows)
        to_write = await self._apply_guard(rows)
        if not to_write:
            return 0
        items = [
            AbsoluteItem(r["item_key"], r["location_id"], r["desired"], r["sku"]) for r in to_write
        ]
        reason = _reason(to_write)
        started = time.monotonic()
        async with self._leased() as token:
            outcome = await self.client.write_isolating(items, reason=f"katsyncd: {reason}")
        self.requests += len(outcome.transaction_ids) + len(outcome.rejected)
        await self._record_through_cancel(to_write, outcome, token)
        self.last_push_at = time.time()
        self.last_error = None
        if outcome.transaction_ids:
            self.clear_error()
        log.info(
            "store_pushed",
            store=self.name,
            items=len(outcome.written),
            rejected=len(outcome.rejected),
            reason=reason,
            seconds=round(time.monotonic() - started, 3),
        )
        return len(to_write)

    def set_error(
        self,
        kind: StoreErrorKind,
        status: int | None,
        message: str,
        endpoint: str = ABSOLUTE_PATH,
    ) -> None:
        """Enter (or stay in) an error state; logged once per change."""
        old = self.error_state
        new = StoreErrorState(kind, status, message, endpoint, time.time())
        if old is not None and old.same_as(new):
            return
        self.error_state = new
        for k in STORE_ERROR_KINDS:
            self.metrics.store_error.labels(self.name, k).set(1 if k == kind else 0)
        log.error(
            "store_error",
            store=self.name,
            endpoint=endpoint,
            kind=kind,
            status=status,
            error=message,
            hint=STORE_ERROR_HINTS[kind],
        )

    def clear_error(self, kind: StoreErrorKind | None = None) -> None:
        """Leave the error state (only if it is of ``kind``, when given)."""
        old = self.error_state
        if old is None or (kind is not None and old.kind != kind):
            return
        self.error_state = None
        self.metrics.store_error.labels(self.name, old.kind).set(0)
        log.info("store_error_cleared", store=self.name, kind=old.kind)

    async def _apply_guard(self, rows: Sequence[asyncpg.Record]) -> Sequence[asyncpg.Record]:
        delay = self._guard()
        if delay is None:
            self.held = 0
            return rows
        split = split_for_guard(rows, delay)
        self.held = split.held
        if split.recheck and self._recheck is not None:
            await levels.mark_guard_checked(
                self.db.pool, self.name, [r["item_key"] for r in split.recheck]
            )
            variants = {r["variant_id"] for r in split.recheck if r["variant_id"] is not None}
            await self._recheck(variants, "oversell_guard_recheck")
            log.info("oversell_guard_recheck", store=self.name, items=len(split.recheck))
        return split.write

    def _leased(self) -> contextlib.AbstractAsyncContextManager[tuple[str, int] | None]:
        """The write runs under the lease (cut at its deadline), when there is one."""
        if self._fence is None:
            return contextlib.nullcontext(None)
        return self._fence.guard()

    async def _record_through_cancel(
        self,
        rows: Sequence[asyncpg.Record],
        outcome: WriteOutcome,
        token: tuple[str, int] | None = None,
    ) -> None:
        """Record a write BigCommerce has answered even if the writer is cancelled meanwhile
        (a stop): a rolled-back record would send the write again after a restart. While
        ``recording`` the drain does not cancel the writer; a cancellation that comes anyway
        (the shutdown deadline) waits up to ``RECORD_GRACE_SECONDS`` for the commit, then goes
        on."""
        self.recording = True
        record = asyncio.ensure_future(self._record(rows, outcome, token))
        try:
            await asyncio.shield(record)
        except asyncio.CancelledError:
            done, _ = await asyncio.wait({record}, timeout=RECORD_GRACE_SECONDS)
            if not done:
                log.warning("store_record_cut_short", store=self.name, items=len(rows))
            record.add_done_callback(_retrieve)
            raise
        finally:
            self.recording = False

    async def _record(
        self,
        rows: Sequence[asyncpg.Record],
        outcome: WriteOutcome,
        token: tuple[str, int] | None = None,
    ) -> None:
        old = {(r["item_key"], r["location_id"]): r for r in rows}
        await levels.record_pushes(self.db.pool, self.name, outcome, _prior(rows), fence=token)
        self._observe(outcome.written, outcome.rejected, old)

    def _observe(
        self,
        ok: Sequence[AbsoluteItem],
        bad: Sequence[tuple[AbsoluteItem, str]],
        old: dict[tuple[str, int], asyncpg.Record],
    ) -> None:
        now = datetime.now(UTC)
        self.metrics.bc_items_written.labels(self.name).inc(len(ok))
        self.metrics.bc_items_failed.labels(self.name).inc(len(bad))
        if ok:
            self.metrics.store_last_push.labels(self.name).set(time.time())
        lag = self.metrics.sync_lag_seconds.labels(self.name)
        for i in ok:
            since = old[(i.item_key, i.location_id)]["stale_since"]
            if since is not None:
                lag.observe(max(0.0, (now - since).total_seconds()))
        for i, why in bad:
            log.warning(
                "store_item_rejected",
                store=self.name,
                sku=i.sku,
                item=i.item_key,
                quantity=i.quantity,
                why=why[:300],
            )

    async def _record_dry_run(self, rows: Sequence[asyncpg.Record]) -> None:
        items = [
            AbsoluteItem(r["item_key"], r["location_id"], r["desired"], r["sku"]) for r in rows
        ]
        await levels.record_dry_run(self.db.pool, self.name, items, _prior(rows))
        log.info("store_dry_run", store=self.name, items=len(rows))


def _retrieve(task: asyncio.Future[None]) -> None:
    """Consume a finished record's outcome (it is logged by whoever awaited it, or lost with
    a cancelled writer): no "exception was never retrieved" at exit."""
    if not task.cancelled():
        _ = task.exception()


def _prior(rows: Sequence[asyncpg.Record]) -> dict[ItemAt, Prior]:
    """Each backlog row's level as BigCommerce was last given it, and why it changed."""
    return {
        (r["item_key"], r["location_id"]): Prior(r["pushed"], r["reason"], r["stale_since"])
        for r in rows
    }


def _reason(rows: Sequence[asyncpg.Record]) -> str:
    reasons = sorted({r["reason"] for r in rows})
    return ",".join(reasons[:5]) + ("…" if len(reasons) > 5 else "")
