"""Pure rule tests: each of S3, S4, S5, S8, S10, S11, S12 fails here if the rule breaks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from katsyncd.models import InventoryRow, KatanaLocation, KatanaVariant
from katsyncd.rules import (
    BC_MAX_QUANTITY,
    CommitRow,
    LevelRules,
    clamp_level,
    compute_level,
    pick_winner,
    resolve_locations,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def inv(variant: int, loc: int, in_stock: str, committed: str = "0") -> InventoryRow:
    return InventoryRow(variant, loc, Decimal(in_stock), Decimal(committed))


def so(
    qty: str, *, loc: int | None = 1, status: str = "NOT_SHIPPED", channel: bool = True
) -> CommitRow:
    return CommitRow(1, loc, Decimal(qty), status, channel)


def variant(
    vid: int,
    sku: str | None = "A",
    *,
    age_days: int = 0,
    type_: str = "product",
    deleted: bool = False,
) -> KatanaVariant:
    created = T0 - timedelta(days=age_days)
    return KatanaVariant(vid, sku, type_, created, created, T0 if deleted else None)


def test_s3_in_stock_mode_ignores_commitments() -> None:
    rows = [inv(1, 1, "10")]
    assert compute_level(rows, [so("4")], LevelRules(quantity="in_stock")) == 10


def test_s3_minus_committed_mode_subtracts_open_so_rows() -> None:
    rows = [inv(1, 1, "10")]
    assert compute_level(rows, [so("4")], LevelRules()) == 6


def test_s4_katana_committed_including_mo_subassembly_is_not_used() -> None:
    # Katana says 9 committed (4 on a sales order, 5 as an MO ingredient): only the 4 count.
    rows = [inv(1, 1, "10", committed="9")]
    assert compute_level(rows, [so("4")], LevelRules()) == 6


@pytest.mark.parametrize("status", ["PENDING", "PACKED", "DELIVERED"])
def test_s4_only_open_orders_commit(status: str) -> None:
    assert compute_level([inv(1, 1, "10")], [so("4", status=status)], LevelRules()) == 10


@pytest.mark.parametrize("status", ["PARTIALLY_PACKED", "PARTIALLY_DELIVERED"])
def test_s4_partial_orders_still_commit(status: str) -> None:
    assert compute_level([inv(1, 1, "10")], [so("4", status=status)], LevelRules()) == 6


def test_s5_katana_created_orders_can_be_left_out() -> None:
    rows = [inv(1, 1, "10")]
    commits = [so("3", channel=True), so("2", channel=False)]
    assert compute_level(rows, commits, LevelRules(count_katana_orders=True)) == 5
    assert compute_level(rows, commits, LevelRules(count_katana_orders=False)) == 7


def test_s11_floor_and_clamp() -> None:
    assert clamp_level(Decimal("7.9")) == 7
    assert clamp_level(Decimal("-3")) == 0
    assert clamp_level(Decimal("-0.5")) == 0
    assert clamp_level(Decimal(BC_MAX_QUANTITY) * 3) == BC_MAX_QUANTITY
    assert compute_level([inv(1, 1, "2.5")], [so("4")], LevelRules()) == 0


def test_s12_locations_filter_stock_and_commitments() -> None:
    rows = [inv(1, 1, "10"), inv(1, 2, "20")]
    commits = [so("3", loc=1), so("5", loc=2)]
    assert compute_level(rows, commits, LevelRules()) == 22
    assert compute_level(rows, commits, LevelRules(locations=frozenset({2}))) == 15
    assert compute_level(rows, commits, LevelRules(locations=frozenset())) == 0


def test_buffer_and_max_quantity() -> None:
    rows = [inv(1, 1, "10")]
    assert compute_level(rows, [], LevelRules(buffer=3)) == 7
    assert compute_level(rows, [], LevelRules(buffer=30)) == 0
    assert compute_level(rows, [], LevelRules(max_quantity=4)) == 4


def test_s8_latest_created_live_variant_wins() -> None:
    old, new = variant(1, age_days=10), variant(2, age_days=1)
    assert pick_winner([old, new]) == new
    assert pick_winner([old, variant(3, age_days=0, deleted=True)]) == old


def test_s8_tie_breaks_on_id() -> None:
    assert pick_winner([variant(5), variant(9)]) == variant(9)


def test_s10_materials_deleted_and_skuless_never_win() -> None:
    assert pick_winner([variant(1, type_="material")]) is None
    assert pick_winner([variant(1, deleted=True)]) is None
    assert pick_winner([variant(1, sku=None)]) is None


def test_s12_resolve_location_names_and_ids() -> None:
    known = [KatanaLocation(1, "Main"), KatanaLocation(2, "Outlet"), KatanaLocation(3, "7")]
    assert resolve_locations([], known) == (None, [])
    assert resolve_locations(["Outlet", 1], known) == (frozenset({1, 2}), [])
    assert resolve_locations(["7"], known) == (frozenset({3}), [])
    assert resolve_locations(["Nowhere", "99"], known) == (frozenset(), ["Nowhere", "99"])


def test_order_signature_ignores_quantity_formatting_but_not_changes() -> None:
    from katsyncd.models import SalesOrder, SalesOrderRow
    from katsyncd.persistence.mirror import order_signature

    def order(qty: str, status: str = "NOT_SHIPPED") -> SalesOrder:
        return SalesOrder(
            1, status, 1, None, "katana", T0, None, (SalesOrderRow(10, 5, Decimal(qty), None),)
        )

    assert order_signature(order("3")) == order_signature(order("3.00000"))
    assert order_signature(order("3")) != order_signature(order("4"))
    assert order_signature(order("3")) != order_signature(order("3", "PACKED"))
