"""Why a SKU shows the number it shows: one explanation model, rendered by the ``/sku/{sku}``
page and by ``katsyncd explain`` alike.

Pure: :func:`explain` takes what persistence recorded (:class:`Inputs`) and applies the same
rules the engine applies (``katsyncd.rules``), step by step, so each number on the page is
traceable to its inputs (S4, S5, S7, S8, S12, buffer and cap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from katsyncd.models import OPEN_SO_STATUSES, KatanaVariant
from katsyncd.rules import (
    CommitRow,
    LevelRules,
    clamp_level,
    counts,
    pick_winner,
)


# ----- inputs (what persistence recorded) --------------------------------------------------
@dataclass(frozen=True, slots=True)
class StockAt:
    """The winner's stock at one Katana location, as last read (``katana_inventory``)."""

    location_id: int
    in_stock: Decimal
    read_at: datetime


@dataclass(frozen=True, slots=True)
class OrderRow:
    """An open or closed sales-order row of the winner (the mirror), with its order number."""

    so_id: int
    order_no: str | None
    row: CommitRow


@dataclass(frozen=True, slots=True)
class ItemState:
    """One BigCommerce item with the SKU in one store (``bc_item`` + ``item_level``)."""

    item_key: str
    tracking: str
    desired: int | None = None
    desired_at: datetime | None = None
    reason: str | None = None
    pushed: int | None = None
    pushed_at: datetime | None = None
    dry_run_recorded: int | None = None
    failed_desired: int | None = None
    failed_reason: str | None = None


@dataclass(frozen=True, slots=True)
class StoreInput:
    name: str
    rules: LevelRules
    bc_location_id: int
    stock_sync: bool
    dry_run: bool
    items: tuple[ItemState, ...] = ()


@dataclass(frozen=True, slots=True)
class PushRow:
    at: datetime
    store: str
    item_key: str
    old_quantity: int | None
    new_quantity: int
    reason: str
    outcome: str


@dataclass(frozen=True, slots=True)
class Inputs:
    sku: str
    variants: tuple[KatanaVariant, ...]
    stock: tuple[StockAt, ...]  # of the winner
    orders: tuple[OrderRow, ...]  # of the winner
    locations: dict[int, str]  # Katana location id → name
    stores: tuple[StoreInput, ...]
    pushes: tuple[PushRow, ...] = ()


# ----- the explanation ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VariantLine:
    variant: KatanaVariant
    winner: bool
    why: str


@dataclass(frozen=True, slots=True)
class LocationLine:
    location: str
    in_stock: Decimal
    counts: bool


@dataclass(frozen=True, slots=True)
class OrderLine:
    order: str  # its order number, or "#<id>"
    status: str
    location: str
    quantity: Decimal
    counts: bool
    why: str


@dataclass(frozen=True, slots=True)
class ItemLine:
    item: ItemState
    bigcommerce: int | None  # what BigCommerce has, as far as katsyncd knows
    source: str  # where that number comes from
    state: str  # in sync | pending | failed | dry-run | off


@dataclass(frozen=True, slots=True)
class StoreExplanation:
    name: str
    mode: str  # on | dry-run | off
    quantity: str
    locations: list[LocationLine]
    in_stock: Decimal
    orders: list[OrderLine]
    committed: Decimal
    buffer: int
    max_quantity: int | None
    level: int | None  # None: no winner
    steps: list[str]
    items: list[ItemLine]


@dataclass(frozen=True, slots=True)
class Explanation:
    sku: str
    variants: list[VariantLine]
    winner: KatanaVariant | None
    stock_read_at: datetime | None
    stores: list[StoreExplanation]
    pushes: list[PushRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def explain(inp: Inputs) -> Explanation:
    """The explanation of one SKU's level in every store given."""
    winner = pick_winner(inp.variants)
    read_at = max((s.read_at for s in inp.stock), default=None)
    return Explanation(
        sku=inp.sku,
        variants=[_variant_line(v, winner) for v in _by_age(inp.variants)],
        winner=winner,
        stock_read_at=read_at,
        stores=[_store(inp, s, winner) for s in inp.stores],
        pushes=list(inp.pushes),
        notes=_notes(inp, winner),
    )


def _by_age(variants: tuple[KatanaVariant, ...]) -> list[KatanaVariant]:
    return sorted(variants, key=lambda v: (v.created_at, v.id), reverse=True)


def _variant_line(v: KatanaVariant, winner: KatanaVariant | None) -> VariantLine:
    if winner is not None and v.id == winner.id:
        return VariantLine(v, True, _win_reason(v))
    if v.deleted_at is not None:
        return VariantLine(v, False, "deleted or archived in Katana (S10)")
    if v.type != "product":
        return VariantLine(v, False, f"a {v.type}, not a product variant (S10)")
    return VariantLine(v, False, "created earlier than the winner (S8)")


def _win_reason(v: KatanaVariant) -> str:
    return f"live product variant created latest ({v.created_at:%Y-%m-%d %H:%M:%S} UTC) (S8)"


def _notes(inp: Inputs, winner: KatanaVariant | None) -> list[str]:
    notes = []
    if not inp.variants:
        notes.append("No Katana variant carries this SKU (exact, case-sensitive match, S6).")
    elif winner is None:
        notes.append("No live product variant carries this SKU: nothing is synced (S10).")
    elif not inp.stock:
        notes.append("No inventory read of the winner is recorded yet: stock shows as 0.")
    if not any(s.items for s in inp.stores):
        notes.append("No store's catalogue has an item with this SKU: written nowhere (S6).")
    return notes


def _mode(s: StoreInput) -> str:
    if not s.stock_sync:
        return "off"
    return "dry-run" if s.dry_run else "on"


def _store(inp: Inputs, s: StoreInput, winner: KatanaVariant | None) -> StoreExplanation:
    rules = s.rules
    locs = [_location_line(inp, st, rules) for st in inp.stock]
    stock = sum((ln.in_stock for ln in locs if ln.counts), Decimal(0))
    orders = [_order_line(inp, o, rules) for o in inp.orders]
    minus = rules.quantity == "in_stock_minus_committed"
    committed = sum((o.quantity for o in orders if o.counts), Decimal(0)) if minus else Decimal(0)
    level, steps = _level(stock, committed, rules) if winner is not None else (None, [])
    return StoreExplanation(
        name=s.name,
        mode=_mode(s),
        quantity=rules.quantity,
        locations=locs,
        in_stock=stock,
        orders=orders,
        committed=committed,
        buffer=rules.buffer,
        max_quantity=rules.max_quantity,
        level=level,
        steps=steps,
        items=[_item_line(s, it) for it in s.items],
    )


def _location_line(inp: Inputs, st: StockAt, rules: LevelRules) -> LocationLine:
    name = inp.locations.get(st.location_id, f"location {st.location_id}")
    return LocationLine(name, st.in_stock, counts(st.location_id, rules.locations))


def _order_line(inp: Inputs, o: OrderRow, rules: LevelRules) -> OrderLine:
    r = o.row
    ok, why = _order_counts(r, rules)
    loc = "—" if r.location_id is None else inp.locations.get(r.location_id, str(r.location_id))
    return OrderLine(o.order_no or f"#{o.so_id}", r.so_status, loc, r.quantity, ok, why)


def _order_counts(r: CommitRow, rules: LevelRules) -> tuple[bool, str]:
    """S4/S5/S12 for one row, the way ``rules.committed_for_sync`` decides it."""
    if rules.quantity == "in_stock":
        return False, "the store syncs in_stock: commitments are not subtracted (S3)"
    if r.so_status not in OPEN_SO_STATUSES:
        return False, f"order is {r.so_status}: not open (S4)"
    if not counts(r.location_id, rules.locations):
        return False, "at a Katana location this store does not count (S12)"
    if not r.from_channel and not rules.count_katana_orders:
        return False, "created in Katana, and this store ignores such orders (S5)"
    return True, "open order row of this variant (S4)"


def _level(stock: Decimal, committed: Decimal, rules: LevelRules) -> tuple[int, list[str]]:
    """The level, and each step of its computation (``rules.compute_level``)."""
    q = stock - committed - rules.buffer
    steps = [f"in stock at counted locations: {qty(stock)}"]
    if rules.quantity == "in_stock_minus_committed":
        steps.append(f"- committed by open sales orders: {qty(committed)}")
    if rules.buffer:
        steps.append(f"- buffer: {rules.buffer}")
    if rules.max_quantity is not None:
        steps.append(f"capped at max_quantity: {rules.max_quantity}")
        q = min(q, Decimal(rules.max_quantity))
    level = clamp_level(q)
    steps.append(f"= {level} (whole units, 0 … 2,147,483,647, S11)")
    return level, steps


def _item_line(s: StoreInput, it: ItemState) -> ItemLine:
    if it.tracking == "none":
        return ItemLine(it, None, "inventory tracking is off for this item", "untracked")
    if s.dry_run or not s.stock_sync:
        return ItemLine(it, it.pushed, _source(it), "dry-run" if s.stock_sync else "off")
    return ItemLine(it, it.pushed, _source(it), _item_state(it))


def _source(it: ItemState) -> str:
    if it.pushed is None:
        return "never written by katsyncd, and not seen by a reconcile yet"
    if it.pushed_at is None:
        return "as a reconcile read it from BigCommerce"
    return f"as katsyncd last wrote it, {it.pushed_at:%Y-%m-%d %H:%M:%S} UTC"


def _item_state(it: ItemState) -> str:
    if it.failed_desired is not None and it.failed_desired == it.desired:
        return "failed"
    if it.desired is None:
        return "not computed yet"
    return "in sync" if it.desired == it.pushed else "pending"


def qty(d: Decimal) -> str:
    """A quantity as Katana shows it: ``10``, ``2.5`` (no exponent, no trailing zeros)."""
    return f"{d.normalize():f}"
