"""Plain value types shared by the clients, the rules and the engine. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import IntEnum
from typing import Literal

QuantityMode = Literal["in_stock", "in_stock_minus_committed"]
Tracking = Literal["product", "variant", "none"]

# Sales-order statuses whose rows commit stock (PENDING orders are quotes; PACKED/DELIVERED
# already left in_stock). Partial states keep their rows committed: the API does not say which
# rows were packed, so katsyncd errs toward not overselling.
OPEN_SO_STATUSES = frozenset({"NOT_SHIPPED", "PARTIALLY_PACKED", "PARTIALLY_DELIVERED"})
# Statuses between which an order moves no stock: only what is committed changes (packing or
# delivering takes stock out, moving back restores it).
STOCK_NEUTRAL_SO_STATUSES = frozenset({"NOT_SHIPPED", "PENDING"})


class Priority(IntEnum):
    """Who gets the next Katana request first (lower value wins)."""

    LIVE = 0  # stale variants / sales orders from webhooks
    POLL = 1  # incremental polls
    RECONCILE = 2  # full catalogue sweeps


@dataclass(frozen=True, slots=True)
class InventoryRow:
    """One row of Katana ``GET /inventory``: a variant at a location."""

    variant_id: int
    location_id: int
    in_stock: Decimal
    committed: Decimal


@dataclass(frozen=True, slots=True)
class KatanaVariant:
    id: int
    sku: str | None
    type: str  # "product" | "material"
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    product_id: int | None = None


@dataclass(frozen=True, slots=True)
class SalesOrderRow:
    id: int
    variant_id: int
    quantity: Decimal
    location_id: int | None  # None: the order's location


@dataclass(frozen=True, slots=True)
class SalesOrder:
    id: int
    status: str
    location_id: int | None
    ecommerce_order_type: str | None
    source: str | None
    updated_at: datetime
    deleted_at: datetime | None
    rows: tuple[SalesOrderRow, ...] = ()
    order_no: str | None = None  # Katana's order number, shown by `katsyncd explain`
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SalesOrderRowChange:
    """One row of ``GET /sales_order_rows`` (with its order id and soft-delete time): what the
    incremental row poll reads, since row edits need not bump the order's ``updated_at``."""

    id: int
    sales_order_id: int
    variant_id: int
    quantity: Decimal
    location_id: int | None  # None: the order's location
    updated_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class Movement:
    id: int
    variant_id: int
    location_id: int
    updated_at: datetime
    balance_after: Decimal | None = None  # in stock at the location after the movement


@dataclass(frozen=True, slots=True)
class KatanaLocation:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class BcItem:
    """A stock-tracked BigCommerce item: a product tracked by product, or a variant."""

    sku: str
    product_id: int
    variant_id: int | None
    tracking: Tracking

    @property
    def item_key(self) -> str:
        """Stable identity used in Postgres: ``p:<product_id>`` or ``v:<variant_id>``."""
        if self.tracking == "variant" and self.variant_id is not None:
            return f"v:{self.variant_id}"
        return f"p:{self.product_id}"


@dataclass(frozen=True, slots=True)
class AbsoluteItem:
    """One item of ``PUT /v3/inventory/adjustments/absolute``."""

    item_key: str  # "p:<id>" or "v:<id>"
    location_id: int
    quantity: int
    sku: str = ""

    def to_json(self) -> dict[str, int]:
        kind, _, ident = self.item_key.partition(":")
        key = "variant_id" if kind == "v" else "product_id"
        return {"location_id": self.location_id, "quantity": self.quantity, key: int(ident)}


@dataclass(slots=True)
class WriteOutcome:
    """What one isolated write of a batch achieved."""

    written: list[AbsoluteItem] = field(default_factory=list)
    rejected: list[tuple[AbsoluteItem, str]] = field(default_factory=list)
    transaction_ids: list[str] = field(default_factory=list)
    # Items of a 422 naming none that the isolation budget left unpinned: neither written nor
    # rejected, they stay in the backlog for the next push.
    unresolved: list[AbsoluteItem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Level:
    """The level one store's item should hold at one location (a row of ``item_level``)."""

    store: str
    item_key: str
    location_id: int
    sku: str
    variant_id: int
    quantity: int
