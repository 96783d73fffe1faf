"""VariantAssembler: whole variants from per-location /inventory streams (pure), and the cold
sweep's page checks (``_Sweep.accept``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from katsyncd.assembler import VariantAssembler
from katsyncd.coldstart import _Sweep, compact, expand
from katsyncd.katana import InventoryPage
from katsyncd.models import InventoryRow, KatanaVariant

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def variant(vid: int, *, kind: str = "product", updated: int = 0) -> KatanaVariant:
    stamp = T0 + timedelta(seconds=updated)
    return KatanaVariant(vid, f"SKU-{vid}", kind, T0, stamp)


def row(vid: int, loc: int, qty: int = 1) -> InventoryRow:
    return InventoryRow(vid, loc, Decimal(qty), Decimal(0))


def page(loc: int, ids: list[int], **kinds: str) -> tuple[list[InventoryRow], list[KatanaVariant]]:
    return [row(i, loc) for i in ids], [variant(i, kind=kinds.get(f"v{i}", "product")) for i in ids]


def completed(asm: VariantAssembler) -> dict[int, list[int]]:
    return {a.variant.id: sorted(r.location_id for r in a.rows) for a in asm.take_complete()}


def test_a_variant_completes_once_every_stream_has_passed_it() -> None:
    asm = VariantAssembler([1, 2])
    assert asm.add(1, *page(1, [10, 11, 13]))
    assert completed(asm) == {}  # stream 2 has read nothing yet
    assert asm.next_stream() == 2
    assert asm.add(2, *page(2, [10, 12]))
    # stream 2 is at 12: 10, 11 (no row at 2) and 12 (no row at 1) are complete, 13 is not
    assert completed(asm) == {10: [1, 2], 11: [1], 12: [2]}
    assert asm.held_rows == 1
    assert asm.next_stream() == 2  # furthest behind
    asm.end(2)
    assert completed(asm) == {13: [1]}
    asm.end(1)
    assert asm.next_stream() is None
    assert asm.held_rows == 0


def test_materials_are_never_held() -> None:
    asm = VariantAssembler([1])
    assert asm.add(1, *page(1, [5, 6], v6="material"))
    assert completed(asm) == {5: [1]}


def test_a_stream_that_does_not_ascend_is_refused_and_nothing_is_held() -> None:
    asm = VariantAssembler([1, 2])
    assert asm.add(1, *page(1, [1, 2]))
    assert not asm.add(1, *page(1, [3, 2]))  # not ascending within the page
    assert not asm.add(1, *page(1, [2, 4]))  # repeats the last id of the previous page
    assert asm.held_rows == 2
    assert sorted(a.variant.id for a in asm.take_all()) == [1, 2]
    assert asm.held_rows == 0


def test_the_newer_copy_of_a_variant_read_twice_is_kept() -> None:
    asm = VariantAssembler([1, 2])
    asm.add(1, [row(7, 1)], [variant(7, updated=0)])
    asm.add(2, [row(7, 2)], [variant(7, updated=5)])
    (only,) = asm.take_complete()
    assert only.variant.updated_at == T0 + timedelta(seconds=5)
    assert len(only.rows) == 2


def sweep_page(ids: list[int], total: int | None, *, extended: bool = True) -> InventoryPage:
    rows, variants = page(1, ids)
    return InventoryPage(rows, list(variants) if extended else [None] * len(ids), total)


def test_the_sweep_is_abandoned_on_a_page_it_cannot_trust() -> None:
    def fresh() -> _Sweep:
        return _Sweep(VariantAssembler([1]), T0)

    ok = fresh()
    assert ok.accept(1, sweep_page([1, 2], 4)) == ""
    assert ok.accept(1, sweep_page([3, 4], 4)) == ""
    assert fresh().accept(1, sweep_page([1], 4, extended=False)) == "extend_ignored"
    shifted = fresh()
    assert shifted.accept(1, sweep_page([1, 2], 4)) == ""
    assert shifted.accept(1, sweep_page([3], 3)) == "inventory_changed_during_read"
    unordered = fresh()
    assert unordered.accept(1, sweep_page([2, 1], 2)) == "not_by_variant_id"


def test_held_rows_are_compact_and_come_back_equal() -> None:
    rows = [
        InventoryRow(9, 1, Decimal("5.00000"), Decimal("0.00000")),
        InventoryRow(9, 2, Decimal("2.50000"), Decimal("-1")),
    ]
    held = [compact(r) for r in rows]
    assert held == [(1, 5, 0), (2, Decimal("2.5"), -1)]
    assert isinstance(held[0][1], int)  # integral quantities held as ints
    assert expand(9, held) == rows  # equal values (Decimal("5") == Decimal("5.00000"))
