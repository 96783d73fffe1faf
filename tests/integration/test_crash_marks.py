"""A process killed between a mirror write and its stale marks loses no change (issue 11,
kill -9 finding): the mirror and the marks of what it changed commit in one transaction.

Each case reads a change through a Poller whose mark callback "dies" (raises) right after the
mirror write, then reads it again through a fresh Poller (the restarted process, polls resuming
from the watermark that was not advanced). The second read finds the mirror already equal to
Katana and marks nothing, so the variant must already carry its durable mark from the first.
Before the fix the mirror committed first and the mark afterwards, and a kill in between left
the item wrong with nothing pending (the fault suite's "KS-00127: 24 where Katana says 26").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import pytest

from katsyncd.catalog import apply_catalog
from katsyncd.db import Database
from katsyncd.engine import Engine
from katsyncd.katana import KatanaClient, KatanaError
from katsyncd.metrics import Metrics
from katsyncd.models import BcItem, KatanaVariant
from katsyncd.persistence import marks as stored
from katsyncd.persistence import mirror, stale
from katsyncd.poller import Poller
from katsyncd.ratelimit import KatanaLimiter
from katsyncd.sim.katana import KatanaSim
from katsyncd.sim.quirks import KatanaQuirks, pessimistic

pytestmark = pytest.mark.timeout(60)


class Killed(Exception):
    """The process died here (kill -9): nothing after this point happened."""


@dataclass
class Rig:
    sim: KatanaSim
    db: Database
    session: aiohttp.ClientSession

    def poller(self, *, dies: bool, page_size: int = 250) -> Poller:
        async def mark(ids: Collection[int], reason: str) -> None:
            if dies:
                raise Killed(reason)
            await stored.mark_variants(self.db.pool, ids, reason)

        async def mark_orders(ids: Collection[int], reason: str) -> None:
            if dies:
                raise Killed(reason)
            await stored.mark_sales_orders(self.db.pool, ids, reason)

        katana = KatanaClient(
            self.session,
            self.sim.base_url,
            self.sim.api_key,
            KatanaLimiter(6000),
            page_size=page_size,
        )
        engine = Engine(self.db, katana, Metrics(), stores=list)
        return Poller(self.db, katana, engine, Metrics(), mark=mark, mark_orders=mark_orders)

    async def marked(self) -> set[int]:
        return {v for v, _ in await stored.stale_variants(self.db.pool)}

    async def orders_marked(self) -> set[int]:
        return {so for so, _ in await stored.stale_sales_orders(self.db.pool)}


@pytest.fixture(params=["optimistic", "pessimistic"])
async def rig(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[Rig]:
    quirks = KatanaQuirks() if request.param == "optimistic" else pessimistic().katana
    sim = KatanaSim(requests_per_minute=6000, webhook_retry_delays=(), quirks=quirks)
    await sim.start()
    db = Database(db_url)
    await db.open()
    try:
        async with aiohttp.ClientSession() as session:
            yield Rig(sim, db, session)
    finally:
        await db.close()
        await sim.stop()


async def bootstrap(rig: Rig) -> None:
    """A first start: every poll has run once, the mirror holds what Katana holds."""
    first = rig.poller(dies=False)
    for kind in ("variants", "sales_orders", "sales_order_rows", "movements"):
        await first.poll(kind)
    assert await rig.marked() == set()


async def test_sales_orders_poll_killed_after_mirror_write(rig: Rig) -> None:
    loc = rig.sim.add_location("Main")
    v = rig.sim.add_product_variant("SKU-A", in_stock={loc: 26})
    await bootstrap(rig)
    rig.sim.create_sales_order([(v, 2)], location_id=loc)

    with pytest.raises(Killed):
        await rig.poller(dies=True).poll("sales_orders")
    await rig.poller(dies=False).poll("sales_orders")  # the restarted process

    assert v in await rig.marked()


async def test_rows_poll_killed_after_mirror_write(rig: Rig) -> None:
    loc = rig.sim.add_location("Main")
    v, w = (rig.sim.add_product_variant(s, in_stock={loc: 26}) for s in ("SKU-A", "SKU-B"))
    so = rig.sim.create_sales_order([(v, 2)], location_id=loc)
    await bootstrap(rig)
    rig.sim.update_sales_order_rows(so, [(w, 3)])  # v loses the commitment, w gains it

    with pytest.raises(Killed):
        await rig.poller(dies=True).poll("sales_order_rows")
    await rig.poller(dies=False).poll("sales_order_rows")

    assert {v, w} <= await rig.marked()


async def test_resolve_killed_after_mirror_write(rig: Rig) -> None:
    loc = rig.sim.add_location("Main")
    v = rig.sim.add_product_variant("SKU-A", in_stock={loc: 26})
    await bootstrap(rig)
    so = rig.sim.create_sales_order([(v, 2)], location_id=loc)
    await stored.mark_sales_orders(rig.db.pool, [so], "webhook")  # its webhook's durable mark

    with pytest.raises(Killed):
        await rig.poller(dies=True).resolve_sales_orders([so])
    assert so in await rig.orders_marked()  # not resolved: the order mark stays
    await rig.poller(dies=False).resolve_sales_orders([so])

    assert so not in await rig.orders_marked()
    assert v in await rig.marked()


async def test_variants_poll_killed_after_mirror_write(rig: Rig) -> None:
    loc = rig.sim.add_location("Main")
    v = rig.sim.add_product_variant("SKU-A", in_stock={loc: 26})
    await bootstrap(rig)
    rig.sim.set_sku(v, "SKU-B")

    with pytest.raises(Killed):
        await rig.poller(dies=True).poll("variants")
    await rig.poller(dies=False).poll("variants")

    assert v in await rig.marked()


async def test_sweep_killed_after_mirror_write(rig: Rig) -> None:
    loc = rig.sim.add_location("Main")
    old = rig.sim.add_product_variant("SKU-A", in_stock={loc: 26})
    await bootstrap(rig)
    new = rig.sim.add_product_variant("SKU-A", in_stock={loc: 5})  # S8: the newer one wins
    await rig.poller(dies=False).poll("variants")
    await stored_clear(rig)
    rig.sim.archive_variant(new)  # gone without a deleted_at: only a sweep sees it

    with pytest.raises(Killed):
        await rig.poller(dies=True).poll("variant_sweep")
    await rig.poller(dies=False).poll("variant_sweep")

    assert {old, new} <= await rig.marked()


async def test_catalogue_refresh_killed_after_index_write(rig: Rig) -> None:
    """The same for a BigCommerce catalogue refresh: a new item's variant stays marked."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    await mirror.upsert_variants(rig.db.pool, [KatanaVariant(7, "SKU-A", "product", t0, t0)])
    fresh = [BcItem("SKU-A", 1, None, "product")]

    async def dies(ids: Collection[int], reason: str) -> None:
        raise Killed(reason)

    async def marks(ids: Collection[int], reason: str) -> None:
        await stored.mark_variants(rig.db.pool, ids, reason)

    with pytest.raises(Killed):
        await apply_catalog("a", fresh, rig.db, dies)
    await apply_catalog("a", fresh, rig.db, marks)  # the restarted process's refresh

    assert 7 in await rig.marked()


async def test_movements_poll_cut_mid_read_skips_nothing_next_time(rig: Rig) -> None:
    """A movements poll whose read fails after its first page marks nothing and keeps its
    watermark; the next poll (same process) must not treat that page's movements as seen."""
    loc = rig.sim.add_location("Main")
    v, w = (rig.sim.add_product_variant(s, in_stock={loc: 26}) for s in ("SKU-A", "SKU-B"))
    await bootstrap(rig)
    poller = rig.poller(dies=False, page_size=1)
    await poller.poll("movements")  # the opening stock, within the first watermark's skew
    await stored_clear(rig)
    rig.sim.adjust_stock(v, loc, -2)
    rig.sim.adjust_stock(w, loc, -2)  # newest first: w's movement is the first page
    read = poller.katana.inventory_movements

    def cut(**kwargs: object) -> AsyncIterator[list[object]]:
        async def pages() -> AsyncIterator[list[object]]:
            async for page in read(**kwargs):  # type: ignore[arg-type]
                yield page
                raise KatanaError("HTTP 503", status=503, endpoint="/inventory_movements")

        return pages()

    setattr(poller.katana, "inventory_movements", cut)  # noqa: B010
    with pytest.raises(KatanaError):
        await poller.poll("movements")
    setattr(poller.katana, "inventory_movements", read)  # noqa: B010
    await poller.poll("movements")

    assert {v, w} <= await rig.marked()


async def stored_clear(rig: Rig) -> None:
    """The marks so far were read and recorded (a flush)."""
    gens = (await stored.variant_marks(rig.db.pool, sorted(await rig.marked()))).gens
    async with rig.db.pool.acquire() as conn:
        await stale.clear_variant_marks(conn, gens)
    assert await rig.marked() == set()
