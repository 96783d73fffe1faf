"""What a reconcile found and did (the report types), and the pure comparisons it is made of.

No I/O: the reconciler (``katsyncd.reconcile.reconciler``) reads, records and writes; these
functions only compare what it read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from katsyncd.models import InventoryRow, KatanaVariant, Level

LevelKey = tuple[str, str, int]  # (store, item_key, location_id)


# ----- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiffRow:
    """An item whose BigCommerce level differs from what Katana says it should be."""

    store: str
    sku: str
    item_key: str
    location_id: int
    bigcommerce_now: int | None  # None: BigCommerce returned no level for the item
    katana_says: int
    action: str  # would_write (dry run) | queued (a writer pushes it) | written | rejected


@dataclass(frozen=True, slots=True)
class Duplicate:
    """S8: a SKU on several live Katana product variants; the one created latest wins."""

    sku: str
    winner: int
    losers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SkuSides:
    """How one store's SKU index compares with Katana's live product SKUs (S6, S7)."""

    matched: frozenset[str]
    unmatched_katana: list[str]  # live Katana product SKUs with no BigCommerce item
    unmatched_bigcommerce: list[str]  # tracked BigCommerce SKUs with no live Katana variant
    untracked: list[str]  # SKUs of BigCommerce items that do not track stock
    fan_out: dict[str, list[str]]  # S7: matched SKU -> its several tracked item keys


@dataclass
class StoreReport:
    """What one store's reconcile found and did."""

    store: str
    location_id: int
    dry_run: bool
    sides: SkuSides
    matched_items: int
    duplicates: list[Duplicate]
    diff: list[DiffRow]

    @property
    def changed(self) -> int:
        """Items whose BigCommerce level differs from Katana's."""
        return len(self.diff)

    @property
    def unchanged(self) -> int:
        return self.matched_items - self.changed

    def count(self, action: str) -> int:
        return sum(1 for r in self.diff if r.action == action)

    def summary(self) -> dict[str, Any]:
        """Counts for ``/status`` and the log."""
        return {
            "dry_run": self.dry_run,
            "matched_skus": len(self.sides.matched),
            "matched_items": self.matched_items,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "written": self.count("written"),
            "rejected": self.count("rejected"),
            "unmatched_katana": len(self.sides.unmatched_katana),
            "unmatched_bigcommerce": len(self.sides.unmatched_bigcommerce),
            "untracked": len(self.sides.untracked),
            "duplicates": len(self.duplicates),
            "fan_out": len(self.sides.fan_out),
        }


@dataclass
class ReconcileReport:
    """One reconcile: a report per store plus what it cost at Katana."""

    stores: list[StoreReport]
    dry_run: bool
    inventory_rows: int = 0
    inventory_pages: int = 0
    sales_orders: int = 0  # open sales orders re-read into the mirror
    sales_order_requests: int = 0  # what that re-read cost at Katana
    reverified_variants: int = 0
    seconds: float = 0.0

    def store(self, name: str) -> StoreReport:
        return next(s for s in self.stores if s.store == name)

    def diff(self) -> Iterator[DiffRow]:
        for s in self.stores:
            yield from s.diff

    def summary(self, *, reason: str, started_at: float) -> dict[str, Any]:
        """The JSON-ready summary the daemon shows in ``/status``."""
        return {
            "reason": reason,
            "outcome": "dry_run" if self.dry_run else "ok",
            "started_at": datetime.fromtimestamp(started_at, UTC).isoformat(),
            "seconds": round(self.seconds, 3),
            "inventory_rows": self.inventory_rows,
            "inventory_pages": self.inventory_pages,
            "sales_orders": self.sales_orders,
            "sales_order_requests": self.sales_order_requests,
            "reverified_variants": self.reverified_variants,
            "stores": {s.store: s.summary() for s in self.stores},
        }


# ----- pure comparisons ------------------------------------------------------------------------


def compare_skus(
    katana_skus: Collection[str], bc_items: Iterable[tuple[str, str, str]]
) -> SkuSides:
    """Pure (S6, S7): ``bc_items`` are (item_key, sku, tracking) of one store's SKU index."""
    tracked: dict[str, list[str]] = defaultdict(list)
    untracked: set[str] = set()
    for item_key, sku, tracking in bc_items:
        if tracking == "none":
            untracked.add(sku)
        else:
            tracked[sku].append(item_key)
    katana = set(katana_skus)
    matched = katana & tracked.keys()
    return SkuSides(
        matched=frozenset(matched),
        unmatched_katana=sorted(katana - tracked.keys() - untracked),
        unmatched_bigcommerce=sorted(tracked.keys() - katana),
        untracked=sorted(untracked),
        fan_out={s: sorted(tracked[s]) for s in sorted(matched) if len(tracked[s]) > 1},
    )


def duplicates_in(
    skus: Collection[str],
    live_ids: Mapping[str, Sequence[int]],
    winners: Mapping[str, KatanaVariant],
) -> list[Duplicate]:
    """Pure (S8): the duplicated SKUs among ``skus``, each with its winner and losers."""
    out = []
    for sku in sorted(set(skus) & live_ids.keys()):
        winner = winners.get(sku)
        if winner is not None:
            losers = tuple(i for i in live_ids[sku] if i != winner.id)
            out.append(Duplicate(sku, winner.id, losers))
    return out


def level_key(lv: Level) -> LevelKey:
    return (lv.store, lv.item_key, lv.location_id)


def diff_levels(
    levels: Iterable[Level],
    says: Mapping[LevelKey, int],
    bc_now: Mapping[str, int],
    action: str,
) -> list[DiffRow]:
    """Pure: the levels whose BigCommerce value (``bc_now`` by item key) is not what Katana
    says (``says``; a level missing there says its own quantity)."""
    out = []
    for lv in levels:
        want = says.get(level_key(lv), lv.quantity)
        have = bc_now.get(lv.item_key)
        if have != want:
            out.append(DiffRow(lv.store, lv.sku, lv.item_key, lv.location_id, have, want, action))
    return sorted(out, key=lambda r: (r.store, r.sku, r.item_key))


def suspect_variants(
    levels: Iterable[Level],
    recorded: Mapping[LevelKey, int],
    inventory: Mapping[int, list[InventoryRow]],
) -> set[int]:
    """Pure: variants whose sweep result is not trusted as is, but re-read (in bulk) first.

    A level contradicting one recorded earlier may be the sweep's age, not Katana's truth (the
    live path can have recorded a fresher value meanwhile). A winner with no inventory row at
    all may have been deleted or archived since the mirror saw it (S10): the re-read tells.
    """
    out = set()
    for lv in levels:
        was = recorded.get(level_key(lv))
        if (was is not None and was != lv.quantity) or lv.variant_id not in inventory:
            out.add(lv.variant_id)
    return out
