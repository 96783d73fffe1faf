"""Inventory rows the engine read last, per variant, while nothing since says its stock moved.

A sales order created or edited while open changes only what is committed, which the
sales-order mirror knows (S4); its variants' levels can then be recomputed from the rows read
last instead of a new ``/inventory`` read. Any other mark of a variant (a stock webhook, a
movement, a delivered order, a reconcile, ...) forgets its rows, including rows of a read
still in flight when the mark came (they may predate the change). Bounded: the least
recently stored variants are dropped beyond ``capacity``. Pure state, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from katsyncd.models import InventoryRow, Movement

DEFAULT_CAPACITY = 20_000  # variants (a burst's touched set; the footprint stays small)


@dataclass(eq=False)
class PendingRead:
    """A read in flight: the variants asked for (``None``: any variant, a sweep whose pages
    are not known in advance), and those marked since it started."""

    ids: frozenset[int] | None
    spoiled: set[int] = field(default_factory=set)  # stock in question: rows not kept
    announced: set[int] = field(default_factory=set)  # a webhook since the start (sweeps)

    def covers(self, variant_id: int) -> bool:
        return self.ids is None or variant_id in self.ids


class InventoryCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._rows: OrderedDict[int, tuple[InventoryRow, ...]] = OrderedDict()
        self._reads: list[PendingRead] = []
        self.hits = 0

    def __len__(self) -> int:
        return len(self._rows)

    def begin(self, ids: Iterable[int]) -> PendingRead:
        """A read of these variants starts (call ``end`` with its rows, or ``abandon``)."""
        read = PendingRead(frozenset(ids))
        self._reads.append(read)
        return read

    def begin_sweep(self) -> PendingRead:
        """A sweep starts: it may return any variant (``keep`` its rows as they come)."""
        read = PendingRead(None)
        self._reads.append(read)
        return read

    def end(self, read: PendingRead, rows: Mapping[int, list[InventoryRow]]) -> None:
        """Keep what ``read`` returned for variants nothing marked meanwhile (variants with
        no rows are not kept: they may be gone, and the engine checks that)."""
        self.abandon(read)
        self.keep(read, rows)

    def keep(self, read: PendingRead, rows: Mapping[int, list[InventoryRow]]) -> None:
        """Keep rows ``read`` returned for variants nothing marked since it started."""
        for v, r in rows.items():
            if r and read.covers(v) and v not in read.spoiled:
                self._rows[v] = tuple(r)
                self._rows.move_to_end(v)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)

    def abandon(self, read: PendingRead) -> None:
        if read in self._reads:
            self._reads.remove(read)

    def forget(self, ids: Collection[int]) -> None:
        """Their stock may have moved: drop their rows, and spoil reads in flight."""
        for v in ids:
            self._rows.pop(v, None)
        for read in self._reads:
            read.spoiled.update(v for v in ids if read.covers(v))

    def forget_all(self) -> None:
        """Nothing kept is known to be current any more (a new leadership term: another replica
        may have led meanwhile, and this one saw none of its marks)."""
        self._rows.clear()
        for read in self._reads:
            read.ids = frozenset()  # covers nothing now: keeps nothing

    def announce(self, ids: Collection[int]) -> None:
        """A webhook (here or at another replica) said these variants changed: a sweep under
        way must leave their marks for a read of their own (its pages may predate it)."""
        for read in self._reads:
            read.announced.update(v for v in ids if read.covers(v))

    def rows(self, variant_id: int) -> list[InventoryRow] | None:
        cached = self._rows.get(variant_id)
        return None if cached is None else list(cached)

    def reflects(self, movements: Collection[Movement]) -> bool:
        """The rows kept for these movements' variant show, at each location, the balance
        after the newest of them: what they changed has been read (no read needed)."""
        newest: dict[tuple[int, int], Movement] = {}
        for m in movements:
            key = (m.variant_id, m.location_id)
            cur = newest.get(key)
            if cur is None or (m.updated_at, m.id) > (cur.updated_at, cur.id):
                newest[key] = m
        return bool(newest) and all(self._shows(m) for m in newest.values())

    def _shows(self, m: Movement) -> bool:
        rows = self._rows.get(m.variant_id)
        if rows is None or m.balance_after is None:
            return False
        at = [r for r in rows if r.location_id == m.location_id]
        return len(at) == 1 and at[0].in_stock == m.balance_after
