"""The sync rules as pure functions (no I/O): S3-S5, S8, S10-S12 and the store's safety rules.

Everything a level depends on is passed in, so each rule is tested without a loop or network.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal

from katsyncd.models import (
    OPEN_SO_STATUSES,
    InventoryRow,
    KatanaLocation,
    KatanaVariant,
    QuantityMode,
)

BC_MAX_QUANTITY = 2_147_483_647  # S11: BigCommerce's per-location ceiling
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class LevelRules:
    """The per-store settings that change a computed level."""

    quantity: QuantityMode = "in_stock_minus_committed"  # S3
    count_katana_orders: bool = True  # S5
    locations: frozenset[int] | None = None  # S12: Katana location ids; None = all
    buffer: int = 0
    max_quantity: int | None = None


@dataclass(frozen=True, slots=True)
class CommitRow:
    """An open sales-order row of the variant itself (S4), from the mirror."""

    variant_id: int
    location_id: int | None
    quantity: Decimal
    so_status: str
    from_channel: bool


def counts(location_id: int | None, locations: frozenset[int] | None) -> bool:
    """S12: whether stock at this Katana location counts toward the store."""
    return locations is None or location_id in locations


def in_stock(rows: Iterable[InventoryRow], locations: frozenset[int] | None) -> Decimal:
    return sum((r.in_stock for r in rows if counts(r.location_id, locations)), ZERO)


def committed_for_sync(
    rows: Iterable[CommitRow], *, count_katana_orders: bool, locations: frozenset[int] | None
) -> Decimal:
    """S4/S5: only the variant's own rows on open sales orders; MO commitments never count."""
    total = ZERO
    for r in rows:
        if r.so_status not in OPEN_SO_STATUSES or not counts(r.location_id, locations):
            continue
        if r.from_channel or count_katana_orders:
            total += r.quantity
    return total


def clamp_level(q: Decimal) -> int:
    """S11: whole units, 0 … 2,147,483,647."""
    return max(0, min(BC_MAX_QUANTITY, math.floor(q)))


def compute_level(
    inventory: Iterable[InventoryRow], commitments: Iterable[CommitRow], rules: LevelRules
) -> int:
    """The level one store should show for one Katana variant."""
    q = in_stock(inventory, rules.locations)
    if rules.quantity == "in_stock_minus_committed":
        q -= committed_for_sync(
            commitments, count_katana_orders=rules.count_katana_orders, locations=rules.locations
        )
    q -= rules.buffer
    if rules.max_quantity is not None:
        q = min(q, Decimal(rules.max_quantity))
    return clamp_level(q)


def is_syncable(v: KatanaVariant) -> bool:
    """S10: live product variants with a SKU."""
    return v.type == "product" and v.deleted_at is None and bool(v.sku)


def pick_winner(candidates: Iterable[KatanaVariant]) -> KatanaVariant | None:
    """S8: of several live variants with one SKU, the one created latest (ties: highest id)."""
    live = [v for v in candidates if is_syncable(v)]
    return max(live, key=lambda v: (v.created_at, v.id), default=None)


def resolve_locations(
    wanted: Collection[str | int], known: Collection[KatanaLocation]
) -> tuple[frozenset[int] | None, list[str]]:
    """S12: map configured names or ids to Katana location ids; also list what did not match.

    An empty configuration means all locations (None). Names match exactly, ids by number.
    """
    if not wanted:
        return None, []
    by_name = {loc.name: loc.id for loc in known}
    ids = {loc.id for loc in known}
    found: set[int] = set()
    missing: list[str] = []
    for w in wanted:
        if isinstance(w, int) or (w.isdigit() and w not in by_name):
            if int(w) in ids:
                found.add(int(w))
                continue
        elif w in by_name:
            found.add(by_name[w])
            continue
        missing.append(str(w))
    return frozenset(found), missing
