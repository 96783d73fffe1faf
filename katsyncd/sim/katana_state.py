"""The simulated Katana account: master data, documents, the stock ledger and the oracle.

Everything here is synchronous and in memory. Operations change stock only through
:meth:`KatanaState._move`, which appends an inventory movement, so the ledger and the levels
cannot disagree. Webhook events go through the :meth:`KatanaState._on_event` hook, which the
simulator (``katana.py``) overrides to queue deliveries.

Simplifications (documented because tests rely on them):

* Partial sales-order statuses (``PARTIALLY_PACKED``/``PARTIALLY_DELIVERED``) keep every row
  committed and take nothing out of stock: the simulator does not model which rows were packed.
* Deleting a sales order soft-deletes its rows too (they then show only through
  ``/sales_order_rows?include_deleted=true``); deleting a ``PACKED``/``DELIVERED`` order does
  not put its stock back.
* Replacing a sales order's rows soft-deletes the old rows and creates new ones.
* Single rows can be edited in place (quantity, variant) or soft-deleted, as Katana's UI and
  ``PATCH``/``DELETE /sales_order_rows/{id}`` do, only while the order is not PACKED/DELIVERED.
  Katana sends no webhook for rows; whether the order's ``updated_at`` moves too is
  ``KatanaQuirks.row_edits_bump_order``.
* Manufacturing orders go straight from ``NOT_STARTED`` to ``DONE`` (no partial completion);
  an open MO commits ``quantity_per_unit * planned_quantity`` of each ingredient.
* Negative stock is allowed, as in Katana.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from katsyncd.sim.katana_model import (
    OPEN_SO_STATUSES,
    SHIPPED_SO_STATUSES,
    SO_STATUSES,
    ZERO,
    Item,
    Location,
    ManufacturingOrder,
    Movement,
    PurchaseOrder,
    RecipeRow,
    SalesOrder,
    SalesOrderRow,
    Variant,
    WebhookSubscription,
    datetime_to_ms,
    dec,
)

MAX_BC_QUANTITY = 2_147_483_647
QUANTITY_MODES = frozenset({"in_stock", "in_stock_minus_committed"})

# First id of each number space; variants start higher so that ids of different kinds rarely
# look alike in tests (products and materials share values on purpose: they do in Katana).
_ID_START = {"variant": 1001, "movement": 5001}
_STORE_NAMES = {
    "bigCommerce": "katsyncd-demo",
    "shopify": "acme.myshopify.com",
    "wooCommerce": "shop.example.com",
}

Rows = Sequence[tuple[int, int | Decimal]]


def _within(location_id: int, locations: Collection[int] | None) -> bool:
    """Location filter of the oracle: None or empty means every location."""
    return not locations or location_id in locations


class KatanaState:
    """One Katana account held in memory, plus the oracle computed from it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last_ms = 0
        self._bulk_ms: int | None = None
        self.version = 0  # bumped by every mutation (each one takes a stamp)
        self._last_ids: dict[str, int] = {}
        self.locations: dict[int, Location] = {}
        self.items: dict[tuple[str, int], Item] = {}
        self.variants: dict[int, Variant] = {}
        self.stock: dict[int, dict[int, Decimal]] = {}  # variant id -> location id -> qty
        self.sales_orders: dict[int, SalesOrder] = {}
        self.sales_order_rows: dict[int, SalesOrderRow] = {}
        self.manufacturing_orders: dict[int, ManufacturingOrder] = {}
        self.recipe_rows: dict[int, RecipeRow] = {}
        self.purchase_orders: dict[int, PurchaseOrder] = {}
        self.movements: list[Movement] = []
        self.webhooks: dict[int, WebhookSubscription] = {}
        self._inventory_keys: list[tuple[int, int]] | None = None  # sorted (location, variant)
        self._by_sku: dict[str, list[int]] = {}
        self._rows_by_variant: dict[int, list[SalesOrderRow]] = {}
        self._recipes_by_variant: dict[int, list[RecipeRow]] = {}
        self._mos_by_output: dict[int, list[ManufacturingOrder]] = {}

    # ------------------------------------------------------------------ plumbing

    def _on_event(self, event: str, object_id: int, status: str | None) -> None:
        """Hook called for every webhook event an operation causes (overridden by the sim)."""

    def _stamp(self) -> int:
        """Now in epoch ms, strictly later than any earlier stamp (so updated_at polls work);
        inside :meth:`bulk` every operation shares one stamp."""
        self.version += 1
        if self._bulk_ms is not None:
            return self._bulk_ms
        ms = max(int(self._clock() * 1000), self._last_ms + 1)
        self._last_ms = ms
        return ms

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        """Build state under one timestamp, so a large catalogue does not push the clock
        into the future by a millisecond per object."""
        self._bulk_ms = self._stamp()
        try:
            yield
        finally:
            self._bulk_ms = None

    def _next_id(self, kind: str) -> int:
        new = self._last_ids.get(kind, _ID_START.get(kind, 1) - 1) + 1
        self._last_ids[kind] = new
        return new

    def _location(self, location_id: int) -> Location:
        location = self.locations.get(location_id)
        if location is None or location.deleted_at is not None:
            raise KeyError(f"unknown location {location_id}")
        return location

    def _variant(self, variant_id: int) -> Variant:
        variant = self.variants.get(variant_id)
        if variant is None:
            raise KeyError(f"unknown variant {variant_id}")
        return variant

    def _live_sales_order(self, so_id: int) -> SalesOrder:
        order = self.sales_orders.get(so_id)
        if order is None or order.deleted_at is not None:
            raise KeyError(f"unknown or deleted sales order {so_id}")
        return order

    def parent_of(self, variant: Variant) -> Item:
        """The product or material a variant belongs to."""
        return self.items[(variant.type, variant.parent_id)]

    def pick_variant(self, rng: random.Random, kind: str, *, tries: int = 50) -> int | None:
        """A random live, unarchived variant of ``kind``, or None. Ids are dense, so random
        probing finds one in O(1) on a large catalogue; a full scan is the fallback."""
        first, last = _ID_START["variant"], self._last_ids.get("variant", 0)
        for _ in range(tries if last >= first else 0):
            variant = self.variants.get(rng.randint(first, last))
            if variant is not None and variant.type == kind and self._is_live(variant):
                return variant.id
        found = [v.id for v in self.variants.values() if v.type == kind and self._is_live(v)]
        return rng.choice(found) if found else None

    def _is_live(self, variant: Variant) -> bool:
        return variant.deleted_at is None and not self.is_archived(variant)

    def is_archived(self, variant: Variant) -> bool:
        """Whether the variant's product or material is archived."""
        return self.parent_of(variant).archived_at is not None

    def _ensure_row(self, variant_id: int, location_id: int) -> None:
        """Make the (variant, location) inventory row exist (it then shows in /inventory)."""
        per_location = self.stock.setdefault(variant_id, {})
        if location_id not in per_location:
            per_location[location_id] = ZERO
            self._inventory_keys = None

    def inventory_keys(self) -> list[tuple[int, int]]:
        """Every inventory row as (location id, variant id), in /inventory order."""
        if self._inventory_keys is None:
            self._inventory_keys = sorted(
                (location_id, variant_id)
                for variant_id, per_location in self.stock.items()
                for location_id in per_location
            )
        return self._inventory_keys

    def _move(
        self,
        variant_id: int,
        location_id: int,
        delta: Decimal,
        cause: tuple[str, int, str, int],
        now: int,
    ) -> None:
        """Change in_stock and append the movement. ``cause`` = (resource_type, resource_id,
        caused_by_order_no, caused_by_resource_id)."""
        self._ensure_row(variant_id, location_id)
        balance = self.stock[variant_id][location_id] + delta
        self.stock[variant_id][location_id] = balance
        resource_type, resource_id, order_no, order_id = cause
        movement_id = self._next_id("movement")
        self.movements.append(
            Movement(
                id=movement_id,
                variant_id=variant_id,
                location_id=location_id,
                resource_type=resource_type,
                resource_id=resource_id,
                caused_by_order_no=order_no,
                caused_by_resource_id=order_id,
                quantity_change=delta,
                balance_after=balance,
                value_per_unit=self._variant(variant_id).purchase_price,
                rank=movement_id,
                created_at=now,
            )
        )

    def _stock_event(self, variant_id: int) -> None:
        """``current_inventory.<type>_updated`` for a variant whose stock changed."""
        kind = self._variant(variant_id).type
        self._on_event(f"current_inventory.{kind}_updated", variant_id, None)

    # ------------------------------------------------------------------ master data

    def add_location(self, name: str, *, is_primary: bool = False) -> int:
        """Create a location; a new primary location demotes the previous one."""
        now = self._stamp()
        if is_primary:
            for other in self.locations.values():
                if other.is_primary:
                    other.is_primary, other.updated_at = False, now
        location_id = self._next_id("location")
        self.locations[location_id] = Location(location_id, name, is_primary, now, now)
        return location_id

    def add_product_variant(
        self,
        sku: str | None,
        *,
        in_stock: Mapping[int, int | Decimal] | None = None,
        created_at: datetime | None = None,
        product_id: int | None = None,
    ) -> int:
        """Create a product variant (in a new product unless ``product_id`` is given) with
        opening stock per location id. Returns the variant id."""
        now = self._stamp()
        parent = self._parent("product", product_id, sku, now)
        created = now if created_at is None else datetime_to_ms(created_at)
        return self._add_variant(parent, sku, created, now, in_stock or {})

    def add_material_variant(
        self, sku: str | None, *, in_stock: Mapping[int, int | Decimal] | None = None
    ) -> int:
        """Create a material (with one variant) and its opening stock. Returns the variant id."""
        now = self._stamp()
        parent = self._parent("material", None, sku, now)
        return self._add_variant(parent, sku, now, now, in_stock or {})

    def _parent(self, kind: str, item_id: int | None, sku: str | None, now: int) -> Item:
        if item_id is not None and (kind, item_id) in self.items:
            return self.items[(kind, item_id)]
        if item_id is None:
            item_id = self._next_id(kind)
        else:
            self._last_ids[kind] = max(self._last_ids.get(kind, 0), item_id)
        item = Item(item_id, kind, f"{kind.title()} {sku or item_id}", now, now)
        self.items[(kind, item_id)] = item
        return item

    def _add_variant(
        self,
        parent: Item,
        sku: str | None,
        created: int,
        now: int,
        in_stock: Mapping[int, int | Decimal],
    ) -> int:
        for location_id in in_stock:
            self._location(location_id)
        variant_id = self._next_id("variant")
        sales_price = Decimal(10 + variant_id % 90) + Decimal("0.99")
        purchase_price = (sales_price * Decimal("0.4")).quantize(Decimal("0.01"))
        self.variants[variant_id] = Variant(
            variant_id, sku, parent.kind, parent.id, sales_price, purchase_price, created, now
        )
        if sku is not None:
            self._by_sku.setdefault(sku, []).append(variant_id)
        for location_id, qty in in_stock.items():
            self._opening_stock(variant_id, location_id, dec(qty), now)
        return variant_id

    def _opening_stock(self, variant_id: int, location_id: int, qty: Decimal, now: int) -> None:
        self._ensure_row(variant_id, location_id)
        if qty:
            cause = ("SystemGenerated", variant_id, "Opening stock", variant_id)
            self._move(variant_id, location_id, qty, cause, now)

    def delete_variant(self, variant_id: int) -> None:
        """Soft-delete a variant (deleted_at and updated_at set); emits ``variant.deleted``."""
        variant = self._variant(variant_id)
        if variant.deleted_at is not None:
            return
        now = self._stamp()
        variant.deleted_at = variant.updated_at = now
        self._on_event("variant.deleted", variant_id, None)

    def archive_variant(self, variant_id: int) -> None:
        """Archive the variant's product (or material): all its variants disappear from
        /variants and /inventory unless ``include_archived=true``; emits ``<kind>.updated``."""
        variant = self._variant(variant_id)
        parent = self.parent_of(variant)
        if parent.archived_at is not None:
            return
        now = self._stamp()
        parent.archived_at = parent.updated_at = now
        for sibling in self.variants.values():
            if sibling.type == parent.kind and sibling.parent_id == parent.id:
                sibling.updated_at = now
        self._on_event(f"{parent.kind}.updated", parent.id, None)

    def set_sku(self, variant_id: int, sku: str | None) -> None:
        """Change a variant's SKU (variant code); emits ``variant.updated``."""
        variant = self._variant(variant_id)
        if variant.sku is not None:
            self._by_sku[variant.sku].remove(variant_id)
        if sku is not None:
            self._by_sku.setdefault(sku, []).append(variant_id)
        variant.sku = sku
        variant.updated_at = self._stamp()
        self._on_event("variant.updated", variant_id, None)

    # ------------------------------------------------------------------ sales orders

    def create_sales_order(
        self,
        rows: Rows,
        *,
        location_id: int,
        status: str = "NOT_SHIPPED",
        ecommerce_order_type: str | None = None,
        row_location_ids: Sequence[int | None] | None = None,
    ) -> int:
        """Create a sales order; ``ecommerce_order_type`` None means it was created in Katana.
        Emits ``sales_order.created``. Returns the order id."""
        self._check_status(status)
        self._location(location_id)
        row_locations = list(row_location_ids or [None] * len(rows))
        if len(row_locations) != len(rows):
            raise ValueError("row_location_ids must have one entry per row")
        self._check_rows(rows, row_locations)
        now = self._stamp()
        so_id = self._next_id("sales_order")
        order = SalesOrder(
            id=so_id,
            order_no=f"SO-{so_id}",
            customer_id=1 + so_id % 50,
            location_id=location_id,
            status=status,
            source=ecommerce_order_type or "katana",
            ecommerce_order_type=ecommerce_order_type,
            ecommerce_store_name=self._store_name(ecommerce_order_type),
            ecommerce_order_id=None if ecommerce_order_type is None else str(100_000 + so_id),
            created_at=now,
            updated_at=now,
        )
        self.sales_orders[so_id] = order
        self._add_rows(order, rows, row_locations, now)
        self._sync_shipped(order, now)
        self._on_event("sales_order.created", so_id, order.status)
        return so_id

    @staticmethod
    def _store_name(ecommerce_order_type: str | None) -> str | None:
        if ecommerce_order_type is None:
            return None
        return _STORE_NAMES.get(ecommerce_order_type, "store.example.com")

    @staticmethod
    def _check_status(status: str) -> None:
        if status not in SO_STATUSES:
            raise ValueError(f"unknown sales order status {status!r}")

    def _check_rows(self, rows: Rows, locations: Sequence[int | None]) -> None:
        """Refuse unknown variants or locations before anything changes."""
        for (variant_id, qty), row_location in zip(rows, locations, strict=True):
            self._variant(variant_id)
            dec(qty)
            if row_location is not None:
                self._location(row_location)

    def _add_rows(
        self, order: SalesOrder, rows: Rows, locations: Sequence[int | None], now: int
    ) -> None:
        for (variant_id, qty), row_location in zip(rows, locations, strict=True):
            variant = self.variants[variant_id]
            row = SalesOrderRow(
                id=self._next_id("sales_order_row"),
                sales_order_id=order.id,
                variant_id=variant_id,
                quantity=dec(qty),
                location_id=row_location,
                price_per_unit=variant.sales_price,
                created_at=now,
                updated_at=now,
            )
            order.rows.append(row)
            self.sales_order_rows[row.id] = row
            self._rows_by_variant.setdefault(variant_id, []).append(row)
            self._ensure_row(variant_id, order.row_location(row))

    def _sync_shipped(self, order: SalesOrder, now: int) -> None:
        """Take shipped rows out of stock (or put them back) to match the order's status."""
        shipped = order.status in SHIPPED_SO_STATUSES
        for row in order.rows:
            target = row.quantity if shipped and row.deleted_at is None else ZERO
            delta = target - row.shipped
            if delta:
                cause = ("SalesOrderRow", row.id, order.order_no, order.id)
                self._move(row.variant_id, order.row_location(row), -delta, cause, now)
                row.shipped = target

    def update_sales_order_rows(self, so_id: int, rows: Rows) -> None:
        """Replace the order's rows (old rows are soft-deleted, new rows ship from the order's
        location); stock follows if the order is shipped. Emits ``sales_order.updated``."""
        order = self._live_sales_order(so_id)
        self._check_rows(rows, [None] * len(rows))
        now = self._stamp()
        for row in order.live_rows():
            row.deleted_at = row.updated_at = now
        self._add_rows(order, rows, [None] * len(rows), now)
        order.updated_at = now
        self._sync_shipped(order, now)
        self._on_event("sales_order.updated", so_id, order.status)

    def _row_edits_bump_order(self) -> bool:
        """Whether a row edit also bumps its order's ``updated_at`` (the simulator reads its
        quirks; bare state: yes)."""
        return True

    def _editable_row(self, row_id: int) -> tuple[SalesOrder, SalesOrderRow]:
        row = self.sales_order_rows.get(row_id)
        if row is None or row.deleted_at is not None:
            raise KeyError(f"unknown or deleted sales order row {row_id}")
        order = self._live_sales_order(row.sales_order_id)
        if order.status in SHIPPED_SO_STATUSES:
            raise ValueError(f"sales order {order.id} is {order.status}: its rows are frozen")
        return order, row

    def _touch_row(self, order: SalesOrder, row: SalesOrderRow) -> int:
        now = self._stamp()
        row.updated_at = now
        if self._row_edits_bump_order():
            order.updated_at = now
        return now

    def set_sales_order_row_quantity(self, row_id: int, quantity: int | Decimal) -> None:
        """Change one row's quantity. No webhook (Katana has no row events)."""
        order, row = self._editable_row(row_id)
        row.quantity = dec(quantity)
        self._touch_row(order, row)

    def move_sales_order_row(self, row_id: int, variant_id: int) -> None:
        """Point one row at another variant (its commitment moves with it). No webhook."""
        order, row = self._editable_row(row_id)
        self._variant(variant_id)
        self._rows_by_variant[row.variant_id].remove(row)
        row.variant_id = variant_id
        self._rows_by_variant.setdefault(variant_id, []).append(row)
        self._ensure_row(variant_id, order.row_location(row))
        self._touch_row(order, row)

    def delete_sales_order_row(self, row_id: int) -> None:
        """Soft-delete one row (it then shows only through ``/sales_order_rows`` with
        ``include_deleted=true``; nested rows omit it). No webhook."""
        order, row = self._editable_row(row_id)
        row.deleted_at = self._touch_row(order, row)

    def set_sales_order_status(self, so_id: int, status: str) -> None:
        """Move an order to ``status``: PACKED/DELIVERED take its rows out of stock, going back
        to an open status puts them back. Emits ``sales_order.updated`` and, for PACKED or
        DELIVERED, ``sales_order.packed``/``sales_order.delivered`` as well."""
        self._check_status(status)
        order = self._live_sales_order(so_id)
        if order.status == status:
            return
        now = self._stamp()
        order.status, order.updated_at = status, now
        self._sync_shipped(order, now)
        self._on_event("sales_order.updated", so_id, status)
        if status in SHIPPED_SO_STATUSES:
            self._on_event(f"sales_order.{status.lower()}", so_id, status)

    def delete_sales_order(self, so_id: int) -> None:
        """Soft-delete an order and its rows: commitments go, but stock already taken out by
        PACKED/DELIVERED is NOT put back. Emits ``sales_order.deleted`` (no href)."""
        order = self._live_sales_order(so_id)
        now = self._stamp()
        order.deleted_at = order.updated_at = now
        for row in order.live_rows():
            row.deleted_at = row.updated_at = now
        self._on_event("sales_order.deleted", so_id, order.status)

    # ------------------------------------------------------------------ other stock moves

    def adjust_stock(self, variant_id: int, location_id: int, delta: int | Decimal) -> None:
        """A stock adjustment (one row, signed quantity). Katana sends no webhook for it."""
        change = self._nonzero(delta)
        self._variant(variant_id)
        self._location(location_id)
        adjustment_id = self._next_id("stock_adjustment")
        row_id = self._next_id("stock_adjustment_row")
        cause = ("StockAdjustmentRow", row_id, f"SA-{adjustment_id}", adjustment_id)
        self._move(variant_id, location_id, change, cause, self._stamp())

    def transfer_stock(
        self, variant_id: int, from_location: int, to_location: int, qty: int | Decimal
    ) -> None:
        """Move stock between locations (two movements). Katana sends no webhook for it."""
        amount = self._positive(qty)
        if from_location == to_location:
            raise ValueError("a transfer needs two different locations")
        self._variant(variant_id)
        self._location(from_location)
        self._location(to_location)
        transfer_id = self._next_id("stock_transfer")
        row_id = self._next_id("stock_transfer_row")
        cause = ("StockTransferRow", row_id, f"ST-{transfer_id}", transfer_id)
        now = self._stamp()
        self._move(variant_id, from_location, -amount, cause, now)
        self._move(variant_id, to_location, amount, cause, now)

    def receive_purchase_order(self, variant_id: int, location_id: int, qty: int | Decimal) -> int:
        """A one-row purchase order received in full. Emits ``purchase_order.received`` and
        ``current_inventory.<type>_updated``. Returns the purchase order id."""
        amount = self._positive(qty)
        self._variant(variant_id)
        self._location(location_id)
        now = self._stamp()
        po_id, row_id = self._next_id("purchase_order"), self._next_id("purchase_order_row")
        self.purchase_orders[po_id] = PurchaseOrder(
            po_id, f"PO-{po_id}", row_id, variant_id, location_id, amount, now, now
        )
        cause = ("PurchaseOrderRow", row_id, f"PO-{po_id}", po_id)
        self._move(variant_id, location_id, amount, cause, now)
        self._on_event("purchase_order.received", po_id, "RECEIVED")
        self._stock_event(variant_id)
        return po_id

    @staticmethod
    def _nonzero(value: int | Decimal) -> Decimal:
        amount = dec(value)
        if not amount:
            raise ValueError("quantity must not be zero")
        return amount

    @staticmethod
    def _positive(value: int | Decimal) -> Decimal:
        amount = dec(value)
        if amount <= 0:
            raise ValueError("quantity must be positive")
        return amount

    # ------------------------------------------------------------------ manufacturing

    def create_manufacturing_order(
        self,
        variant_id: int,
        qty: int | Decimal,
        ingredients: Rows,
        *,
        location_id: int,
    ) -> int:
        """An MO making ``qty`` of a product from (ingredient variant id, quantity per unit).
        Its ingredients, subassembly products included, become committed in /inventory.
        Emits ``manufacturing_order.created``. Returns the MO id."""
        planned = self._positive(qty)
        self._variant(variant_id)
        self._location(location_id)
        recipe_lines = [
            (self._variant(v).id, self._positive(per_unit)) for v, per_unit in ingredients
        ]
        now = self._stamp()
        mo_id = self._next_id("manufacturing_order")
        order = ManufacturingOrder(
            mo_id, f"MO-{mo_id}", variant_id, planned, location_id, "NOT_STARTED", now, now
        )
        for ingredient_id, per_unit in recipe_lines:
            recipe = RecipeRow(
                self._next_id("recipe_row"), mo_id, ingredient_id, per_unit, now, now
            )
            order.ingredients.append(recipe)
            self.recipe_rows[recipe.id] = recipe
            self._recipes_by_variant.setdefault(ingredient_id, []).append(recipe)
            self._ensure_row(ingredient_id, location_id)
        self._ensure_row(variant_id, location_id)
        self.manufacturing_orders[mo_id] = order
        self._mos_by_output.setdefault(variant_id, []).append(order)
        self._on_event("manufacturing_order.created", mo_id, order.status)
        return mo_id

    def complete_manufacturing_order(self, mo_id: int) -> None:
        """Finish an MO: ingredients are consumed (commitments released), the product is added.
        Emits ``manufacturing_order.done`` and ``current_inventory.*_updated`` per variant."""
        order = self.manufacturing_orders.get(mo_id)
        if order is None or not order.is_open:
            raise KeyError(f"unknown or closed manufacturing order {mo_id}")
        now = self._stamp()
        for recipe in order.ingredients:
            used = recipe.quantity_per_unit * order.planned_quantity
            cause = ("ProductionIngredient", recipe.id, order.order_no, mo_id)
            self._move(recipe.variant_id, order.location_id, -used, cause, now)
            recipe.consumed, recipe.updated_at = used, now
        cause = ("Production", mo_id, order.order_no, mo_id)
        self._move(order.variant_id, order.location_id, order.planned_quantity, cause, now)
        order.status, order.done_at, order.updated_at = "DONE", now, now
        self._on_event("manufacturing_order.done", mo_id, "DONE")
        changed = [order.variant_id] + [recipe.variant_id for recipe in order.ingredients]
        for variant_id in dict.fromkeys(changed):
            self._stock_event(variant_id)

    # ------------------------------------------------------------------ oracle

    def in_stock(self, variant_id: int, locations: Collection[int] | None = None) -> Decimal:
        """In stock of a variant over ``locations`` (None or empty: all locations)."""
        per_location = self.stock.get(variant_id, {})
        return sum(
            (qty for loc, qty in per_location.items() if _within(loc, locations)), start=ZERO
        )

    def committed_katana(
        self, variant_id: int, locations: Collection[int] | None = None
    ) -> Decimal:
        """Katana's ``quantity_committed``: open sales-order rows plus open MO ingredients."""
        from_orders = self._so_commitment(variant_id, locations, count_katana_orders=True)
        return from_orders + self._mo_commitment(variant_id, locations)

    def committed_for_sync(
        self,
        variant_id: int,
        *,
        count_katana_orders: bool,
        locations: Collection[int] | None = None,
    ) -> Decimal:
        """Committed as the stock sync counts it (S4, S5): only open sales-order rows of the
        variant itself; orders created in Katana only when ``count_katana_orders``."""
        return self._so_commitment(variant_id, locations, count_katana_orders=count_katana_orders)

    def _so_commitment(
        self, variant_id: int, locations: Collection[int] | None, *, count_katana_orders: bool
    ) -> Decimal:
        total = ZERO
        for row in self._rows_by_variant.get(variant_id, ()):
            order = self.sales_orders[row.sales_order_id]
            if (
                row.deleted_at is None
                and order.deleted_at is None
                and order.status in OPEN_SO_STATUSES
                and (count_katana_orders or order.ecommerce_order_type is not None)
                and _within(order.row_location(row), locations)
            ):
                total += row.quantity
        return total

    def _mo_commitment(self, variant_id: int, locations: Collection[int] | None) -> Decimal:
        total = ZERO
        for recipe in self._recipes_by_variant.get(variant_id, ()):
            order = self.manufacturing_orders[recipe.manufacturing_order_id]
            if order.is_open and _within(order.location_id, locations):
                total += recipe.quantity_per_unit * order.planned_quantity - recipe.consumed
        return total

    def expected_katana(self, variant_id: int, location_id: int) -> Decimal:
        """Katana's ``quantity_expected`` at one location: output of open MOs."""
        orders = self._mos_by_output.get(variant_id, ())
        return sum(
            (mo.planned_quantity for mo in orders if mo.is_open and mo.location_id == location_id),
            start=ZERO,
        )

    def live_variant_for_sku(self, sku: str) -> int | None:
        """S8: the live (not deleted, not archived) product variant with exactly this SKU that
        was created latest (ties: highest id), or None."""
        candidates = [
            self.variants[variant_id]
            for variant_id in self._by_sku.get(sku, ())
            if self._is_live_product(self.variants[variant_id])
        ]
        if not candidates:
            return None
        return max(candidates, key=lambda v: (v.created_at, v.id)).id

    def _is_live_product(self, variant: Variant) -> bool:
        return variant.type == "product" and self._is_live(variant)

    def expected_level(
        self,
        sku: str,
        *,
        mode: str = "in_stock_minus_committed",
        count_katana_orders: bool = True,
        locations: Collection[int] | None = None,
        buffer: int = 0,
        max_quantity: int | None = None,
    ) -> int | None:
        """The level katsyncd must write for ``sku`` (S3-S5, S8, S10-S12), or None when no live
        product variant has that SKU."""
        if mode not in QUANTITY_MODES:
            raise ValueError(f"unknown quantity mode {mode!r}")
        variant_id = self.live_variant_for_sku(sku)
        if variant_id is None:
            return None
        qty = self.in_stock(variant_id, locations)
        if mode == "in_stock_minus_committed":
            qty -= self.committed_for_sync(
                variant_id, count_katana_orders=count_katana_orders, locations=locations
            )
        qty -= buffer
        if max_quantity is not None:
            qty = min(qty, Decimal(max_quantity))
        return max(0, min(math.floor(qty), MAX_BC_QUANTITY))
