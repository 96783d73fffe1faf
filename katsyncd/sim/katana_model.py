"""Records, constants and wire helpers of the Katana simulator. No I/O here.

Times are kept as integer milliseconds since the epoch (Katana's wire precision) and rendered
as ``2021-04-14T10:39:40.054Z``. Quantities are :class:`~decimal.Decimal` throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

ZERO = Decimal(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_QTY_PLACES = Decimal("0.00001")

# Sales-order statuses as the oracle of this simulator sees them (kept independent of
# katsyncd's own constants on purpose: the simulator is the reference they are tested against).
OPEN_SO_STATUSES = frozenset({"NOT_SHIPPED", "PARTIALLY_PACKED", "PARTIALLY_DELIVERED"})
SHIPPED_SO_STATUSES = frozenset({"PACKED", "DELIVERED"})
SO_STATUSES = OPEN_SO_STATUSES | SHIPPED_SO_STATUSES | {"PENDING"}
OPEN_MO_STATUSES = frozenset({"NOT_STARTED", "BLOCKED", "IN_PROGRESS", "PARTIALLY_COMPLETED"})

_EVENT_GROUPS: dict[str, tuple[str, ...]] = {
    "sales_order": (
        "created",
        "approved",
        "updated",
        "deleted",
        "packed",
        "delivered",
        "availability_updated",
    ),
    "purchase_order": (
        "created",
        "approved",
        "updated",
        "deleted",
        "partially_received",
        "received",
    ),
    "purchase_order_row": ("created", "updated", "deleted", "received"),
    "manufacturing_order": ("created", "updated", "deleted", "in_progress", "blocked", "done"),
    "manufacturing_order_operation_row": (
        "created",
        "updated",
        "deleted",
        "in_progress",
        "paused",
        "blocked",
        "completed",
    ),
    "manufacturing_order_recipe_row": ("created", "updated", "deleted", "ingredients_in_stock"),
    "current_inventory": (
        "product_updated",
        "material_updated",
        "product_out_of_stock",
        "material_out_of_stock",
    ),
    "product": ("created", "updated", "deleted"),
    "material": ("created", "updated", "deleted"),
    "variant": ("created", "updated", "deleted"),
    "product_recipe_row": ("created", "updated", "deleted"),
    "outsourced_purchase_order": ("created", "approved", "updated", "deleted", "received"),
    "outsourced_purchase_order_row": ("created", "updated", "deleted", "received"),
    "outsourced_purchase_order_recipe_row": ("created", "updated", "deleted"),
}

#: The 61 webhook events Katana knows (KATANA_API.md §2).
WEBHOOK_EVENTS: frozenset[str] = frozenset(
    f"{group}.{action}" for group, actions in _EVENT_GROUPS.items() for action in actions
)

#: Events whose payload carries no ``href`` (KATANA_API.md §2, "No href on some deletes").
EVENTS_WITHOUT_HREF = frozenset({"sales_order.deleted", "product_recipe_row.deleted"})


def iso(ms: int) -> str:
    """Render epoch milliseconds the way Katana does: ``2021-04-14T10:39:40.054Z``."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def iso_or_none(ms: int | None) -> str | None:
    """:func:`iso`, passing ``None`` through."""
    return None if ms is None else iso(ms)


def datetime_to_ms(moment: datetime) -> int:
    """Epoch milliseconds of ``moment`` (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def parse_time_us(value: str) -> int:
    """Parse an ISO 8601 filter value leniently into epoch microseconds.

    Accepts ``Z`` or an offset, with or without fractional seconds, a bare date, and a ``+``
    that arrived as a space because the client forgot to percent-encode it.
    Raises ``ValueError`` when the value is not a date.
    """
    text = value.strip()
    if " " in text and "T" in text:
        text = text.replace(" ", "+")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def dec(value: int | Decimal | str) -> Decimal:
    """A quantity as a Decimal (floats are refused: they would bring binary noise)."""
    if isinstance(value, float):
        raise TypeError("quantities must be int, Decimal or str, not float")
    return value if isinstance(value, Decimal) else Decimal(value)


def fmt_qty(value: Decimal) -> str:
    """A decimal string with five places, like ``/inventory`` returns: ``"7.00000"``."""
    return f"{value.quantize(_QTY_PLACES):f}"


def num(value: Decimal) -> int | float:
    """A JSON number for a Decimal: an int when whole, else a float."""
    if value == value.to_integral_value():
        return int(value)
    return float(value)


@dataclass(slots=True)
class Location:
    id: int
    name: str
    is_primary: bool
    created_at: int
    updated_at: int
    deleted_at: int | None = None


@dataclass(slots=True)
class Item:
    """A product or a material: the parent of variants; archiving happens here."""

    id: int
    kind: str  # "product" | "material"
    name: str
    created_at: int
    updated_at: int
    archived_at: int | None = None
    deleted_at: int | None = None


@dataclass(slots=True)
class Variant:
    id: int
    sku: str | None
    type: str  # "product" | "material"
    parent_id: int  # product_id or material_id, by type
    sales_price: Decimal
    purchase_price: Decimal
    created_at: int
    updated_at: int
    deleted_at: int | None = None


@dataclass(slots=True)
class SalesOrderRow:
    id: int
    sales_order_id: int
    variant_id: int
    quantity: Decimal
    location_id: int | None  # None: the order's location
    price_per_unit: Decimal
    created_at: int
    updated_at: int
    deleted_at: int | None = None
    shipped: Decimal = ZERO  # quantity currently taken out of in_stock for this row


@dataclass(slots=True)
class SalesOrder:
    id: int
    order_no: str
    customer_id: int
    location_id: int
    status: str
    source: str
    ecommerce_order_type: str | None
    ecommerce_store_name: str | None
    ecommerce_order_id: str | None
    created_at: int
    updated_at: int
    rows: list[SalesOrderRow] = field(default_factory=list)
    deleted_at: int | None = None

    def live_rows(self) -> list[SalesOrderRow]:
        """Rows that are not soft-deleted."""
        return [row for row in self.rows if row.deleted_at is None]

    def row_location(self, row: SalesOrderRow) -> int:
        """Where a row ships from: its own location, else the order's."""
        return self.location_id if row.location_id is None else row.location_id


@dataclass(slots=True)
class RecipeRow:
    """One ingredient of a manufacturing order (``/manufacturing_order_recipe_rows``)."""

    id: int
    manufacturing_order_id: int
    variant_id: int
    quantity_per_unit: Decimal
    created_at: int
    updated_at: int
    consumed: Decimal = ZERO


@dataclass(slots=True)
class ManufacturingOrder:
    id: int
    order_no: str
    variant_id: int
    planned_quantity: Decimal
    location_id: int
    status: str
    created_at: int
    updated_at: int
    ingredients: list[RecipeRow] = field(default_factory=list)
    done_at: int | None = None
    deleted_at: int | None = None

    @property
    def is_open(self) -> bool:
        """Open MOs commit their ingredients and expect their product."""
        return self.deleted_at is None and self.status in OPEN_MO_STATUSES


@dataclass(slots=True)
class PurchaseOrder:
    """A purchase order with one row, received in full when created."""

    id: int
    order_no: str
    row_id: int
    variant_id: int
    location_id: int
    quantity: Decimal
    created_at: int
    updated_at: int


@dataclass(slots=True)
class Movement:
    id: int
    variant_id: int
    location_id: int
    resource_type: str
    resource_id: int
    caused_by_order_no: str
    caused_by_resource_id: int
    quantity_change: Decimal
    balance_after: Decimal
    value_per_unit: Decimal
    rank: int
    created_at: int


@dataclass(slots=True)
class WebhookSubscription:
    id: int
    url: str
    token: str
    enabled: bool
    description: str | None
    subscribed_events: list[str]
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request the simulator answered (``path`` is the part after ``/v1``)."""

    method: str
    path: str
    query: list[tuple[str, str]]
    status: int
    at: float


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One webhook delivery attempt; ``status`` is None on a connection error or timeout."""

    webhook_id: int
    event: str
    object_id: int
    attempt: int
    status: int | None
    at: float
