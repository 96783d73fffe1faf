"""Simulated worlds for the benchmark, the oracle checks and request accounting.

Every scenario builds a *fresh* world per system under test from the same seed, so katsyncd
and the baseline see the same catalogue, the same stores and the same workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from katsyncd.sim.katana import KatanaSim
from katsyncd.sim.quirks import Quirks
from katsyncd.sim.world import World, WorldStore

SEED = 7
SKU_PREFIX = "KS-"
HISTORY_SECONDS = 30 * 86_400.0  # the catalogue was built over the last 30 days


@contextlib.contextmanager
def history(katana: KatanaSim, seconds: float, records: int) -> Iterator[None]:
    """What is built inside gets timestamps spread over the last ``seconds`` (about
    ``records`` of them), like an account with a history: a freshly started system's
    incremental polls then see only recent changes as new, instead of a catalogue whose every
    record carries the same just-now stamp (``populate`` builds under one bulk stamp). Only the
    simulator's record stamps move; its rate window and webhook clock keep real time."""
    real = katana._clock
    start, step = real() - seconds, seconds / max(1, records)
    tick = itertools.count()
    katana._clock = lambda: start + next(tick) * step
    katana.bulk = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # stamp each record
    try:
        yield
    finally:
        katana._clock = real
        del katana.bulk


def skus(n: int) -> list[str]:
    return [f"{SKU_PREFIX}{i:05d}" for i in range(n)]


async def build_world(
    variants: int,
    *,
    katana_rpm: int,
    bc_quota: int,
    stores: int = 2,
    quirks: Quirks | None = None,
    locations: int = 2,
) -> World:
    """``variants`` Katana product variants on ``locations`` locations; store "a" sells every
    SKU as a simple product tracked by product; store "b" (if ``stores`` is 2) sells every
    other SKU as variants (5 per product) tracked by variant. Both push In stock - Committed
    over every location."""
    world = await World.start(katana_rpm=katana_rpm, bc_quota=bc_quota, quirks=quirks)
    with history(world.katana, HISTORY_SECONDS, records=2 * variants + 10):
        world.katana.populate(variants, locations=locations, seed=SEED, sku_prefix=SKU_PREFIX)
    all_skus = skus(variants)
    world.add_store("a", all_skus, tracking="product")
    if stores >= 2:
        world.add_store("b", all_skus[::2], tracking="variant")
    return world


def seed_levels(world: World) -> None:
    """Put the correct level on every BigCommerce item (a store already in sync)."""
    for store in world.stores:
        loc = int(store.settings.get("location_id", 1))
        for sku in store.skus:
            want = store.expected(world.katana, sku)
            for kind, ident in store.sim.items_for_sku(sku):
                store.sim.set_level(kind, ident, loc, want or 0)


# ----- the oracle -----------------------------------------------------------------------------


class Oracle:
    """Whether every store is right, checked cheaply: the SKU found wrong last time is checked
    first, and the check stops at the first wrong SKU."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._suspect: tuple[WorldStore, str] | None = None

    def _right(self, store: WorldStore, sku: str) -> bool:
        want = store.expected(self.world.katana, sku)
        if want is None:
            return True
        return store.sim.level(sku, int(store.settings.get("location_id", 1))) == want

    def converged(self) -> bool:
        if self._suspect is not None and not self._right(*self._suspect):
            return False
        for store in self.world.stores:
            for sku in store.skus:
                if not self._right(store, sku):
                    self._suspect = (store, sku)
                    return False
        self._suspect = None
        return True

    async def wait(self, limit: float, *, poll: float = 0.25) -> float | None:
        """Seconds until every store is right, or None if not within ``limit``."""
        start = time.monotonic()
        while True:
            if self.converged():
                return time.monotonic() - start
            if time.monotonic() - start >= limit:
                return None
            await asyncio.sleep(poll)

    def fraction_right(self, only: Iterable[str] | None = None) -> float:
        """Share of (store, SKU) pairs that are right, over all SKUs or ``only`` these."""
        wanted = None if only is None else set(only)
        total = right = 0
        for store in self.world.stores:
            for sku in store.skus:
                if wanted is not None and sku not in wanted:
                    continue
                total += 1
                right += self._right(store, sku)
        return right / total if total else 1.0


# ----- request accounting ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    """Requests the simulators answered so far (429s included)."""

    katana: int
    katana_429: int
    bc: dict[str, int]

    @classmethod
    def take(cls, world: World) -> Counts:
        log = world.katana.request_log
        return cls(
            katana=len(log),
            katana_429=sum(1 for r in log if r.status == 429),
            bc={s.name: s.sim.request_count() for s in world.stores},
        )

    def since(self, earlier: Counts) -> Counts:
        return Counts(
            katana=self.katana - earlier.katana,
            katana_429=self.katana_429 - earlier.katana_429,
            bc={k: v - earlier.bc.get(k, 0) for k, v in self.bc.items()},
        )


def katana_by_endpoint(world: World, since_index: int = 0) -> dict[str, int]:
    """Katana requests by endpoint ("/inventory", "/variants", "/sales_orders/{id}", …)."""
    out: Counter[str] = Counter()
    for r in world.katana.request_log[since_index:]:
        parts = r.path.split("/")
        if len(parts) > 2 and parts[2].isdigit():
            parts[2] = "{id}"
        out["/".join(parts)] += 1
    return dict(out.most_common())


def katana_window_used(world: World) -> int:
    """Requests the Katana simulator admitted in the last 60 s (its sliding window)."""
    now = time.time()  # the simulator's request log and rate window use wall-clock time
    return sum(1 for r in world.katana.request_log if r.status != 429 and r.at > now - 60.0)


async def wait_katana_window(world: World, *, at_most: int, cap: float = 65.0) -> float:
    """Wait until the Katana window holds at most ``at_most`` requests; returns seconds."""
    start = time.monotonic()
    while True:
        waited = time.monotonic() - start
        if katana_window_used(world) <= at_most or waited >= cap:
            return waited
        await asyncio.sleep(0.5)


def store_named(world: World, name: str) -> WorldStore:
    return next(s for s in world.stores if s.name == name)


def sold_everywhere(world: World) -> list[str]:
    """SKUs every store sells."""
    sets = [set(s.skus) for s in world.stores]
    first: Sequence[str] = world.stores[0].skus
    return [sku for sku in first if all(sku in s for s in sets)]
