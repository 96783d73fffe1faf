"""The engine's kept inventory and the sales-order read order: pure state, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from katsyncd.invcache import InventoryCache
from katsyncd.models import InventoryRow, Movement, SalesOrder
from katsyncd.persistence.mirror import stock_neutral
from katsyncd.readorder import ReadOrder

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(v: int, loc: int, stock: int) -> InventoryRow:
    return InventoryRow(v, loc, Decimal(stock), Decimal(0))


def moved(mid: int, v: int, loc: int, after: int | None, at: int = 0) -> Movement:
    balance = None if after is None else Decimal(after)
    return Movement(mid, v, loc, T0 + timedelta(seconds=at), balance)


def test_a_read_is_kept_and_a_stock_mark_forgets_it() -> None:
    c = InventoryCache()
    read = c.begin([1, 2, 3])
    c.end(read, {1: [row(1, 10, 5)], 2: [row(2, 10, 7)]})  # 3 had no rows: not kept
    assert c.rows(1) == [row(1, 10, 5)] and c.rows(3) is None and len(c) == 2
    c.forget([1])
    assert c.rows(1) is None and c.rows(2) is not None


def test_a_mark_during_a_read_spoils_that_variant_of_the_read() -> None:
    c = InventoryCache()
    read = c.begin([1, 2])
    c.forget([2])  # a webhook while the read was in flight: its rows may predate it
    c.end(read, {1: [row(1, 10, 5)], 2: [row(2, 10, 7)]})
    assert c.rows(1) is not None and c.rows(2) is None


def test_a_new_leadership_term_forgets_everything_kept_and_in_flight() -> None:
    c = InventoryCache()
    c.end(c.begin([1]), {1: [row(1, 10, 5)]})
    read = c.begin([2])
    c.forget_all()  # another replica may have led meanwhile: nothing kept is known current
    c.end(read, {2: [row(2, 10, 7)]})
    assert c.rows(1) is None and c.rows(2) is None and len(c) == 0


def test_a_sweep_keeps_what_no_mark_spoiled_and_hears_of_webhooks() -> None:
    c = InventoryCache()
    sweep = c.begin_sweep()  # pages not known in advance: any variant
    c.forget([2])  # stock in question (a catalogue or poll mark): 2's rows are not kept
    c.announce([3])  # a webhook: the sweep must leave 3's mark for a read of its own
    c.keep(sweep, {1: [row(1, 10, 5)], 2: [row(2, 10, 7)], 3: [row(3, 10, 1)]})
    assert c.rows(1) == [row(1, 10, 5)] and c.rows(2) is None
    assert sweep.announced == {3} and sweep.spoiled == {2}
    c.abandon(sweep)
    c.announce([4])
    assert 4 not in sweep.announced  # over: no longer listening


def test_an_abandoned_read_keeps_nothing_and_the_cache_is_bounded() -> None:
    c = InventoryCache(capacity=2)
    c.abandon(c.begin([9]))
    for v in (1, 2, 3):
        c.end(c.begin([v]), {v: [row(v, 10, v)]})
    assert c.rows(1) is None and c.rows(2) is not None and c.rows(3) is not None


def test_movements_are_reflected_only_by_the_newest_balance_at_each_location() -> None:
    c = InventoryCache()
    c.end(c.begin([1]), {1: [row(1, 10, 8), row(1, 20, 3)]})
    assert c.reflects([moved(1, 1, 10, 5, at=0), moved(2, 1, 10, 8, at=1)])
    assert not c.reflects([moved(2, 1, 10, 8, at=1), moved(3, 1, 10, 9, at=2)])
    assert not c.reflects([moved(1, 1, 10, 8), moved(4, 1, 20, 4)])  # one location differs
    assert not c.reflects([moved(1, 1, 10, None)])  # no balance_after: read
    assert not c.reflects([moved(1, 2, 10, 8)])  # nothing kept for the variant
    assert not c.reflects([])


def order(
    status: str, *, created: int | None = 0, updated: int = 0, deleted: bool = False
) -> SalesOrder:
    return SalesOrder(
        1,
        status,
        None,
        None,
        None,
        T0 + timedelta(seconds=updated),
        T0 if deleted else None,
        created_at=None if created is None else T0 + timedelta(seconds=created),
    )


def sig(status: str) -> tuple[str, None, bool, bool, tuple[()]]:
    return (status, None, False, False, ())


def test_which_order_changes_move_no_stock() -> None:
    assert stock_neutral(None, order("NOT_SHIPPED"))  # created just now
    assert stock_neutral(None, order("PENDING"))
    assert stock_neutral(sig("NOT_SHIPPED"), order("NOT_SHIPPED", updated=60))  # rows edited
    assert stock_neutral(sig("NOT_SHIPPED"), order("NOT_SHIPPED", deleted=True))
    assert stock_neutral(sig("NOT_SHIPPED"), None)  # gone from Katana while not shipped
    assert not stock_neutral(sig("NOT_SHIPPED"), order("PACKED", updated=60))
    assert not stock_neutral(sig("PARTIALLY_PACKED"), order("NOT_SHIPPED", updated=60))
    assert not stock_neutral(None, order("NOT_SHIPPED", updated=60))  # maybe moved back
    assert not stock_neutral(None, order("NOT_SHIPPED", created=None))  # no created_at
    assert not stock_neutral(None, order("DELIVERED"))


def test_a_write_skips_orders_a_later_read_already_wrote() -> None:
    ro = ReadOrder()
    old, new = ro.start(), ro.start()
    ro.written(new, [1])
    assert ro.superseded(old, [1, 2]) == {1}
    assert ro.superseded(new, [1, 2]) == set()
    ro.done(new)
    ro.done(old)
    assert ro.superseded(ro.start(), [1]) == set()  # no read open: forgotten


def test_a_full_re_read_supersedes_every_read_started_before_it() -> None:
    ro = ReadOrder()
    early = ro.start()
    barrier = ro.start()
    ro.supersede_all(barrier)
    later = ro.start()
    assert ro.superseded(early, [5, 6]) == {5, 6}
    assert ro.superseded(later, [5]) == set()
