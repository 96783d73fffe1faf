"""Workloads: real Katana mutations through the simulator (which emit their own webhooks),
replayed identically against each system from the same seed.

Each operation changes stock or commitments of a chosen variant, so a system that misses an
event leaves a store visibly wrong.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from katsyncd.sim.katana import KatanaSim

STOCK_EVENT = "current_inventory.product_updated"
WORKLOAD_SEED = 1234


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of a burst's operations (the rest are stock adjustments)."""

    create: float  # sales orders created
    pack: float  # burst orders packed (when one is open)


STOCK_HEAVY = Mix(create=0.25, pack=0.15)  # the burst scenario
ORDER_HEAVY = Mix(create=0.55, pack=0.35)  # burst-orders: a sale-day minute


@dataclass
class BurstDriver:
    """Operations on ``touched`` variants: sales orders created (1 webhook), burst orders
    packed (2 webhooks: updated + packed), stock adjustments announced with
    ``current_inventory.product_updated`` (1 webhook), in the shares ``mix`` gives.
    Adjustments first walk every touched variant once, so all of them really change."""

    katana: KatanaSim
    touched: list[int]
    mix: Mix = STOCK_HEAVY
    rng: random.Random = field(default_factory=lambda: random.Random(WORKLOAD_SEED))
    open_orders: list[int] = field(default_factory=list)
    _walk: list[int] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._walk = list(self.touched)
        self.rng.shuffle(self._walk)
        self._locations = sorted(self.katana.locations)

    def step(self) -> int:
        """Do one operation; returns how many webhooks it emitted (one subscriber)."""
        r = self.rng.random()
        if r < self.mix.create:
            return self._create_order()
        if r < self.mix.create + self.mix.pack and self.open_orders:
            return self._pack()
        return self._adjust()

    def _count(self, op: str) -> None:
        self.ops[op] = self.ops.get(op, 0) + 1

    def _create_order(self) -> int:
        picks = self.rng.sample(self.touched, self.rng.randint(1, 3))
        rows = [(v, self.rng.randint(1, 3)) for v in picks]
        channel = "bigCommerce" if self.rng.random() < 0.7 else None
        so_id = self.katana.create_sales_order(
            rows, location_id=self.rng.choice(self._locations), ecommerce_order_type=channel
        )
        self.open_orders.append(so_id)
        self._count("sales_order_created")
        return 1

    def _pack(self) -> int:
        so_id = self.open_orders.pop(self.rng.randrange(len(self.open_orders)))
        self.katana.set_sales_order_status(so_id, "PACKED")
        self._count("sales_order_packed")
        return 2

    def _adjust(self) -> int:
        variant = self._walk.pop() if self._walk else self.rng.choice(self.touched)
        delta = self.rng.choice((-1, 1)) * self.rng.randint(1, 10)
        self.katana.adjust_stock(variant, self.rng.choice(self._locations), delta)
        self.katana.emit(STOCK_EVENT, variant)
        self._count("stock_adjusted_and_announced")
        return 1


async def drive(driver: BurstDriver, webhooks: int, seconds: float) -> tuple[int, float]:
    """Spread ``webhooks`` evenly over ``seconds``; returns (sent, monotonic time of the last)."""
    start = time.monotonic()
    sent = 0
    last = start
    while sent < webhooks:
        elapsed = time.monotonic() - start
        due = min(webhooks, math.ceil(webhooks * elapsed / seconds))
        while sent < due:
            sent += driver.step()
            last = time.monotonic()
        await asyncio.sleep(0.02)
    return sent, last


# ----- quiet: single events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuietEvent:
    kind: str  # "stock" or "sales_order"
    sku: str
    variant_id: int
    emitted: float  # time.monotonic(), the BigCommerce simulator's clock


def quiet_event(katana: KatanaSim, kind: str, sku: str, rng: random.Random) -> QuietEvent:
    """One event that changes the level of ``sku`` in every store (its level is > 0)."""
    variant_id = katana.live_variant_for_sku(sku)
    assert variant_id is not None
    location = rng.choice(sorted(katana.locations))
    if kind == "stock":
        katana.adjust_stock(variant_id, location, rng.randint(1, 5))
        emitted = time.monotonic()
        katana.emit(STOCK_EVENT, variant_id)
    else:
        emitted = time.monotonic()
        katana.create_sales_order(
            [(variant_id, 1)], location_id=location, ecommerce_order_type="bigCommerce"
        )
    return QuietEvent(kind, sku, variant_id, emitted)


# ----- ingest: signed webhook bodies ----------------------------------------------------------


def webhook_bodies(
    variant_ids: Sequence[int], so_ids: Sequence[int], n: int, seed: int = WORKLOAD_SEED
) -> list[bytes]:
    """``n`` Katana webhook bodies: 80 % ``current_inventory.product_updated`` on catalogue
    variants, 20 % ``sales_order.updated`` on existing orders (shaped like the simulator's)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if so_ids and rng.random() < 0.2:
            payload = {
                "resource_type": "sales_order",
                "action": "sales_order.updated",
                "webhook_id": 1,
                "object": {"id": rng.choice(so_ids), "status": "NOT_SHIPPED", "href": "x"},
            }
        else:
            vid = variant_ids[i % len(variant_ids)]
            payload = {
                "resource_type": "current_inventory",
                "action": STOCK_EVENT,
                "webhook_id": 1,
                "object": {"id": vid, "href": f"https://api.katanamrp.com/v1/variants/{vid}"},
            }
        out.append(json.dumps(payload, separators=(",", ":")).encode())
    return out
