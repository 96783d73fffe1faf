"""The cold start: one ``/inventory?extend=variant`` sweep builds the variant mirror and the
first levels together, instead of a ``/variants`` sweep followed by an ``/inventory`` sweep.

One stream per Katana location (``location_id=…``; with one location, the unfiltered read),
read furthest-behind first through ``VariantAssembler``: a variant is complete once every
stream has passed it. Complete variants are mirrored at once, with their stale marks in the
same transaction (``mirror.apply_variants``), and their rows are held (compact: integral
quantities as ints). The first complete variants, then every ``RECORD_VARIANTS`` more, get
their levels recorded for the stores whose catalogue is indexed, so the first BigCommerce
write follows the first pages. While some store's first catalogue read is under way (and
its reads are not failing: S9) the marks stay and the rows wait, at most ``HOLD_ROWS`` of
them, so that store's levels need no second read; otherwise (and at the end of the sweep,
after waiting for such a read at most ``CATALOG_WAIT_SECONDS``) the levels are recorded
clearing the marks at the generation read just before (``Engine.record``). A crash before
that leaves the marks, which the flusher reads after the restart; a catalogue indexed while
the rows wait marks mirrored variants too, and the record that follows clears those marks
(the flusher skips a key whose mark is gone). Past ``HOLD_ROWS`` the rows are recorded and
let go, and that store's catalogue marks them for the flusher. As the mirror doubles the
tables it fills are analyzed (the planner would otherwise still think them empty).

What the spec leaves loose is checked, never assumed; the sweep is abandoned (held variants
mirrored and marked, the caller runs the ``/variants`` sweep, which marks what is new: the old
cost of two sweeps) when a page embeds no ``variant`` (a gateway that drops ``extend`` with a
location filter), a stream does not come by ascending variant id, or a stream's
``total_records`` changes mid-read (offset paging shifted). At the end one ``/variants``
request of one row compares Katana's count of live product variants created before the sweep
with the count the sweep saw: a variant with no inventory row anywhere is in no stream, and a
mismatch (or no count) makes the caller run the ``/variants`` sweep too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import structlog

from katsyncd.assembler import Assembled, Stream, VariantAssembler
from katsyncd.bigcommerce import MAX_WRITE_ITEMS
from katsyncd.db import Database
from katsyncd.engine import Engine
from katsyncd.invcache import PendingRead
from katsyncd.katana import InventoryPage, KatanaClient
from katsyncd.models import InventoryRow, Priority
from katsyncd.persistence import marks as stored_marks
from katsyncd.persistence import mirror
from katsyncd.waiting import wait_stop

log = structlog.get_logger(__name__)

REASON = "cold_start"
HOLD_ROWS = 120_000  # rows of complete variants held while a first catalogue read is under way
CATALOG_WAIT_SECONDS = 120.0  # the sweep's last rows wait at most this for such a read
COUNT_MARGIN = timedelta(seconds=5)  # variants counted: created this long before the start
# Levels are recorded for the first complete variants at once, then per this many: one
# BigCommerce write holds up to MAX_WRITE_ITEMS items, a record per page would send 125.
RECORD_VARIANTS = MAX_WRITE_ITEMS
ANALYZE_FROM = 1000  # variants mirrored before the first ANALYZE (then at every doubling)

TimeFn = Callable[[Collection[int]], None]  # StaleMarks.time_variants: marks already durable
Reader = AsyncGenerator[InventoryPage, None]
Quantity = int | Decimal  # an integral quantity held as an int: a third of the memory
Compact = tuple[int, Quantity, Quantity]  # (location id, in stock, committed)


def compact(row: InventoryRow) -> Compact:
    return (row.location_id, _small(row.in_stock), _small(row.committed))


def expand(variant_id: int, rows: list[Compact]) -> list[InventoryRow]:
    return [InventoryRow(variant_id, loc, Decimal(q), Decimal(c)) for loc, q, c in rows]


def _small(q: Decimal) -> Quantity:
    whole = int(q)
    return whole if whole == q else q


@dataclass(frozen=True, slots=True)
class ColdResult:
    """How a cold sweep ended. ``complete``: the mirror holds every live product variant and
    each has its levels or a stale mark; otherwise the ``/variants`` sweep must run."""

    complete: bool
    newest: datetime | None  # latest ``updated_at`` seen (the variants watermark)
    pages: int
    variants: int
    why: str = ""


@dataclass
class _Held:
    """Mirrored variants whose marks are not cleared yet: their rows (compact) and the
    variants their mirror writes marked."""

    rows: dict[int, list[Compact]] = field(default_factory=dict)
    marked: set[int] = field(default_factory=set)
    count: int = 0  # rows


@dataclass
class _Sweep:
    """One sweep's progress."""

    asm: VariantAssembler
    started: datetime
    totals: dict[Stream, int | None] = field(default_factory=dict)
    held: _Held = field(default_factory=_Held)
    fresh: dict[int, list[Compact]] = field(default_factory=dict)  # no levels recorded yet
    settles: int = 0
    analyzed: int = 0  # variants mirrored at the last ANALYZE
    pages: int = 0
    variants: int = 0
    counted: int = 0  # live product variants created before ``started - COUNT_MARGIN``
    newest: datetime | None = None

    def note(self, batch: list[Assembled]) -> None:
        cutoff = self.started - COUNT_MARGIN
        self.variants += len(batch)
        self.counted += sum(1 for a in batch if a.variant.created_at < cutoff)
        latest = max((a.variant.updated_at for a in batch), default=None)
        if latest is not None and (self.newest is None or latest > self.newest):
            self.newest = latest

    def accept(self, stream: Stream, page: InventoryPage) -> str:
        """Take one page; the reason to abandon the sweep, or "" to go on."""
        if not page.extended:
            return "extend_ignored"
        if self.totals.setdefault(stream, page.total_records) != page.total_records:
            return "inventory_changed_during_read"
        variants = [v for v in page.variants if v is not None]
        if not self.asm.add(stream, page.rows, variants):
            return "not_by_variant_id"
        return ""


class ColdSweep:
    """The first variants poll of an empty mirror, as one ``/inventory?extend=variant`` sweep."""

    def __init__(
        self,
        db: Database,
        katana: KatanaClient,
        engine: Engine,
        *,
        locations: Callable[[], Collection[int]],
        catalogs_awaited: Callable[[], bool],
        catalog_refreshed: asyncio.Event,
        timed: TimeFn,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._katana = katana
        self._engine = engine
        self._locations = locations  # Katana's locations (read before the first poll)
        self._catalogs_awaited = catalogs_awaited  # a first catalogue read is under way
        self._catalog_refreshed = catalog_refreshed  # set after each catalogue refresh
        self._timed = timed  # times marks already durable in the debouncer
        self._clock = clock
        self._pending = PendingRead(frozenset())  # the sweep under way (``run``)

    async def run(self) -> ColdResult | None:
        """One sweep; None when Katana's locations are unknown (nothing was read)."""
        streams: list[Stream] = sorted(self._locations())
        if not streams:
            return None
        sweep = _Sweep(VariantAssembler(streams), datetime.now(UTC))
        log.info("cold_sweep_started", streams=len(streams))
        cache = self._engine.inventory_cache
        self._pending = cache.begin_sweep()  # marks from now on spoil what the sweep read
        try:
            why = await self._read_all(sweep, streams)
            if why:
                return await self._abandon(sweep, why)
            await self._wait_catalogs(self._clock() + CATALOG_WAIT_SECONDS)
            await self._record(sweep)
        finally:
            cache.abandon(self._pending)
        totals = [t for t in sweep.totals.values() if t is not None]
        if len(totals) == len(streams):
            self._katana.note_inventory_rows(sum(totals))
        return await self._check_count(sweep)

    async def _read_all(self, sweep: _Sweep, streams: list[Stream]) -> str:
        readers: dict[Stream, Reader] = {
            # One location: the unfiltered read (no filter whose combination with ``extend``
            # the spec leaves open).
            s: self._katana.inventory_with_variants(
                location_id=s if len(streams) > 1 else None, priority=Priority.POLL
            )
            for s in streams
        }
        try:
            return await self._read(sweep, readers)
        finally:
            for reader in readers.values():
                with contextlib.suppress(Exception):
                    await reader.aclose()

    async def _read(self, sweep: _Sweep, readers: Mapping[Stream, Reader]) -> str:
        """Read the stream furthest behind until all end; the reason to abandon, or ""."""
        while (stream := sweep.asm.next_stream()) is not None:
            page = await anext(readers[stream], None)
            if page is None:
                sweep.asm.end(stream)
            else:
                sweep.pages += 1
                why = sweep.accept(stream, page)
                if why:
                    return why
            sweep.fresh.update(await self._mirror(sweep, sweep.asm.take_complete()))
            if sweep.fresh and (sweep.settles == 0 or len(sweep.fresh) >= RECORD_VARIANTS):
                await self._settle(sweep)
        return ""

    async def _settle(self, sweep: _Sweep) -> None:
        """Record the levels of what is held, or, while a first catalogue read is under way
        and fewer than ``HOLD_ROWS`` rows are held, only the fresh variants' levels for the
        stores indexed so far (the marks stay, the rows wait for the other catalogues)."""
        fresh, sweep.fresh = sweep.fresh, {}
        sweep.settles += 1
        if sweep.variants >= max(ANALYZE_FROM, 2 * sweep.analyzed):
            await mirror.analyze(self._db.pool)  # a mirror that doubled: fresh statistics
            sweep.analyzed = sweep.variants
        if not self._catalogs_awaited() or sweep.held.count >= HOLD_ROWS:
            await self._record(sweep)
        else:
            await self._levels(fresh, clear=False)

    async def _mirror(self, sweep: _Sweep, complete: list[Assembled]) -> dict[int, list[Compact]]:
        """Mirror complete variants with their marks (one transaction); hold their rows."""
        if not complete:
            return {}
        products = [a.variant for a in complete]
        rows = {a.variant.id: [compact(r) for r in a.rows] for a in complete}
        held = sweep.held
        held.marked |= await mirror.apply_variants(self._db.pool, products, mark=REASON)
        held.rows.update(rows)
        held.count += sum(len(a.rows) for a in complete)
        sweep.note(complete)
        return rows

    async def _wait_catalogs(self, deadline: float) -> None:
        """Until no first catalogue read is under way, or the deadline."""
        event = self._catalog_refreshed
        while self._catalogs_awaited() and self._clock() < deadline:
            event.clear()
            await wait_stop(event, min(1.0, deadline - self._clock()))

    async def _record(self, sweep: _Sweep) -> None:
        """Record the held variants' levels (``RECORD_VARIANTS`` at a time: bounded memory),
        clearing the marks of the SKUs they win; time the other marks (SKUs won by a variant
        read elsewhere) for the flusher, and every one if a record fails. Let the rows go."""
        held, sweep.held, sweep.fresh = sweep.held, _Held(), {}
        settled: set[int] = set()
        ids = list(held.rows)
        try:
            for i in range(0, len(ids), RECORD_VARIANTS):
                chunk = {v: held.rows[v] for v in ids[i : i + RECORD_VARIANTS]}
                settled |= await self._levels(chunk, clear=True)
        except Exception:
            self._timed(held.marked)
            raise
        self._engine.last_read.update(dict.fromkeys(ids, sweep.started))
        self._timed(held.marked - settled)

    async def _levels(self, rows: dict[int, list[Compact]], *, clear: bool) -> set[int]:
        """Record the levels of the SKUs these variants win; with ``clear``, clear the marks
        of those SKUs' variants at the generation read now. Returns those variants."""
        if not rows:
            return set()
        pool = self._db.pool
        known = await mirror.variants_by_ids(pool, list(rows))
        winners = await self._engine.winners_for_skus(sorted({v.sku for v in known if v.sku}))
        won = {sku: w for sku, w in winners.items() if w.id in rows}
        settled = set(await mirror.live_variant_ids_by_skus(pool, list(won)))
        settled |= {v.id for v in known if not v.sku}
        gens = (await stored_marks.variant_marks(pool, sorted(settled))).gens if clear else {}
        # A variant marked since the sweep began (a webhook, another replica's NOTIFY) may have
        # changed after its page was read: its mark stays for the flusher's own read.
        gens = {v: g for v, g in gens.items() if v not in self._pending.announced}
        items = await self._engine.items_for(list(won))
        inventory = {w.id: expand(w.id, rows[w.id]) for w in won.values()}
        await self._engine.record(won, inventory, items, reason=REASON, gens=gens)
        self._engine.inventory_cache.keep(self._pending, inventory)  # a sales order reuses them
        return settled

    async def _abandon(self, sweep: _Sweep, why: str) -> ColdResult:
        """Mirror what is held with its marks (the flusher reads it); the rest is the
        ``/variants`` sweep's."""
        await self._mirror(sweep, sweep.asm.take_all())
        held, sweep.held = sweep.held, _Held()
        self._timed(held.marked)
        log.warning("cold_sweep_abandoned", why=why, pages=sweep.pages, variants=sweep.variants)
        self._count_plan(False)
        return ColdResult(False, sweep.newest, sweep.pages, sweep.variants, why)

    def _count_plan(self, complete: bool) -> None:
        plan = "cold_sweep" if complete else "cold_sweep_fallback"
        self._engine.metrics.katana_read_plans.labels(endpoint="/inventory", plan=plan).inc()

    async def _check_count(self, sweep: _Sweep) -> ColdResult:
        """Compare Katana's count of live product variants created before the sweep with the
        sweep's: a variant with no inventory row is in no stream."""
        katana = await self._katana.count_product_variants(
            created_before=sweep.started - COUNT_MARGIN
        )
        complete = katana == sweep.counted
        log.info(
            "cold_sweep_done",
            pages=sweep.pages + 1,
            variants=sweep.variants,
            counted=sweep.counted,
            katana_count=katana,
            complete=complete,
        )
        why = "" if complete else "variants_without_inventory"
        self._count_plan(complete)
        return ColdResult(complete, sweep.newest, sweep.pages + 1, sweep.variants, why)
