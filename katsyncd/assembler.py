"""Whole variants from per-location ``/inventory?extend=variant`` streams (the cold start).

Katana lists ``/inventory`` location by location ("oldest locations first"); within a location
it sends rows by ascending variant id (``katsyncd.sim.quirks``: the spec does not say, so the
order is checked, never assumed). The cold start reads one stream per location, always the one
furthest behind next: a variant is complete (its row at every location seen, or passed without
one) once every open stream's last variant id is at or past it. Only the variants between the
streams' fronts are held, about a page per stream. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from katsyncd.models import InventoryRow, KatanaVariant

Stream = int  # a location id


@dataclass(slots=True)
class Assembled:
    """One product variant and its inventory rows (one per location that has one)."""

    variant: KatanaVariant
    rows: list[InventoryRow] = field(default_factory=list)


class VariantAssembler:
    """Holds the rows of product variants some stream has not passed yet."""

    def __init__(self, streams: Collection[Stream]) -> None:
        self._front: dict[Stream, float] = dict.fromkeys(streams, -math.inf)
        self._open: set[Stream] = set(streams)
        self._held: dict[int, Assembled] = {}
        self.held_rows = 0

    def next_stream(self) -> Stream | None:
        """The open stream furthest behind (None once every stream has ended)."""
        if not self._open:
            return None
        return min(self._open, key=lambda s: self._front[s])

    def add(
        self,
        stream: Stream,
        rows: Sequence[InventoryRow],
        variants: Sequence[KatanaVariant],
    ) -> bool:
        """Hold one page's rows of product variants (materials never sync, S10). False, and
        nothing held, when the page does not continue the stream by ascending variant id."""
        ids = [r.variant_id for r in rows]
        if any(b <= a for a, b in zip([self._front[stream], *ids], ids, strict=False)):
            return False
        for row, variant in zip(rows, variants, strict=True):
            if variant.type == "product":
                self._hold(row, variant)
        if ids:
            self._front[stream] = ids[-1]
        return True

    def _hold(self, row: InventoryRow, variant: KatanaVariant) -> None:
        entry = self._held.setdefault(variant.id, Assembled(variant))
        if variant.updated_at > entry.variant.updated_at:
            entry.variant = variant  # the newer copy of a variant edited between two reads
        entry.rows.append(row)
        self.held_rows += 1

    def end(self, stream: Stream) -> None:
        """The stream has no more pages."""
        self._open.discard(stream)

    def take_complete(self) -> list[Assembled]:
        """The variants every open stream has passed, removed from what is held."""
        bound = min((self._front[s] for s in self._open), default=math.inf)
        return self._take([k for k in self._held if k <= bound])

    def take_all(self) -> list[Assembled]:
        """Everything held, complete or not (the sweep is abandoned)."""
        return self._take(list(self._held))

    def _take(self, ids: list[int]) -> list[Assembled]:
        out = [self._held.pop(i) for i in ids]
        self.held_rows -= sum(len(a.rows) for a in out)
        return out
