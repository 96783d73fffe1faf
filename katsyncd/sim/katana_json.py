"""Wire shapes of the Katana simulator: resource JSON and webhook request validation.

Resource JSON follows the community spec's shapes (Variant, Inventory, SalesOrder, ...);
fields the simulator does not model carry neutral values (null, [] or "0.00000").
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from katsyncd.sim.katana_http import Json, detail
from katsyncd.sim.katana_model import (
    WEBHOOK_EVENTS,
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
    fmt_qty,
    iso,
    iso_or_none,
    num,
)

if TYPE_CHECKING:
    from katsyncd.sim.katana_state import KatanaState

_WEBHOOK_FIELDS = ("url", "enabled", "subscribed_events", "description")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# ---------------------------------------------------------------------- webhook validation


def webhook_url_allowed(url: str) -> bool:
    """Katana requires https; the simulator also allows plain http to a loopback host so
    tests can run a local receiver without TLS."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.netloc)
    return parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS


def webhook_problems(body: object, *, create: bool) -> list[Json]:
    """Ajv-style details of everything wrong with a create/update webhook body."""
    if not isinstance(body, dict):
        return [detail("", "type", "should be object")]
    problems = [
        detail(
            "",
            "additionalProperties",
            "should NOT have additional properties",
            additionalProperty=key,
        )
        for key in body
        if key not in _WEBHOOK_FIELDS
    ]
    if create:
        problems += [
            detail("", "required", f"should have required property '{key}'", missingProperty=key)
            for key in ("url", "subscribed_events")
            if key not in body
        ]
    return problems + _field_problems(body)


def _field_problems(body: Mapping[str, Any]) -> list[Json]:
    problems: list[Json] = []
    url = body.get("url")
    if "url" in body and not (isinstance(url, str) and webhook_url_allowed(url)):
        problems.append(detail(".url", "pattern", 'should match pattern "^https://.*$"'))
    if "enabled" in body and not isinstance(body["enabled"], bool):
        problems.append(detail(".enabled", "type", "should be boolean"))
    if "description" in body and not isinstance(body["description"], str | None):
        problems.append(detail(".description", "type", "should be string"))
    if "subscribed_events" in body:
        problems += event_problems(body["subscribed_events"])
    return problems


def event_problems(events: object) -> list[Json]:
    """Details for a ``subscribed_events`` value that is not a non-empty list of events."""
    if not isinstance(events, list):
        return [detail(".subscribed_events", "type", "should be array")]
    if not events:
        return [detail(".subscribed_events", "minItems", "should NOT have fewer than 1 items")]
    return [
        detail(
            f".subscribed_events[{index}]", "enum", "should be equal to one of the allowed values"
        )
        for index, event in enumerate(events)
        if event not in WEBHOOK_EVENTS
    ]


# ---------------------------------------------------------------------- resource JSON


def location_json(location: Location) -> Json:
    """The Location object."""
    return {
        "id": location.id,
        "name": location.name,
        "legal_name": location.name,
        "address_id": None,
        "address": None,
        "is_primary": location.is_primary,
        "sales_allowed": True,
        "manufacturing_allowed": True,
        "purchase_allowed": True,
        "created_at": iso(location.created_at),
        "updated_at": iso(location.updated_at),
        "deleted_at": iso_or_none(location.deleted_at),
    }


def item_json(item: Item, variants: list[Json] | None = None) -> Json:
    """A product or material (the parent of variants), minimal."""
    body: Json = {
        "id": item.id,
        "name": item.name,
        "type": item.kind,
        "uom": "pcs",
        "is_sellable": item.kind == "product",
        "archived_at": iso_or_none(item.archived_at),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
        "deleted_at": iso_or_none(item.deleted_at),
    }
    if variants is not None:
        body["variants"] = variants
    return body


def variant_json(state: KatanaState, variant: Variant, *, extend: bool = False) -> Json:
    """The Variant object; ``extend`` adds ``product_or_material``."""
    body: Json = {
        "id": variant.id,
        "sku": variant.sku,
        "product_id": variant.parent_id if variant.type == "product" else None,
        "material_id": variant.parent_id if variant.type == "material" else None,
        "type": variant.type,
        "sales_price": num(variant.sales_price),
        "purchase_price": num(variant.purchase_price),
        "internal_barcode": None,
        "registered_barcode": None,
        "supplier_item_codes": [],
        "lead_time": None,
        "minimum_order_quantity": None,
        "config_attributes": [],
        "custom_fields": [],
        "abc_classification": None,
        "created_at": iso(variant.created_at),
        "updated_at": iso(variant.updated_at),
        "deleted_at": iso_or_none(variant.deleted_at),
    }
    if extend:
        body["product_or_material"] = item_json(state.parent_of(variant))
    return body


def inventory_json(state: KatanaState, key: tuple[int, int], extend: set[str]) -> Json:
    """The Inventory object for (location id, variant id); quantities are decimal strings."""
    location_id, variant_id = key
    variant = state.variants[variant_id]
    in_stock = state.stock[variant_id][location_id]
    committed = state.committed_katana(variant_id, {location_id})
    expected = state.expected_katana(variant_id, location_id)
    zero = fmt_qty(Decimal(0))
    body: Json = {
        "variant_id": variant_id,
        "location_id": location_id,
        "safety_stock_level": zero,
        "reorder_point": zero,
        "average_cost": fmt_qty(variant.purchase_price),
        "value_in_stock": fmt_qty(in_stock * variant.purchase_price),
        "quantity_in_stock": fmt_qty(in_stock),
        "quantity_committed": fmt_qty(committed),
        "quantity_expected": fmt_qty(expected),
        "quantity_missing_or_excess": fmt_qty(in_stock - committed + expected),
        "quantity_potential": zero,
        "archived_at": iso_or_none(state.parent_of(variant).archived_at),
    }
    if "variant" in extend:
        body["variant"] = variant_json(state, variant)
    if "location" in extend:
        body["location"] = location_json(state.locations[location_id])
    return body


def sales_order_row_json(row: SalesOrderRow) -> Json:
    """The SalesOrderRow object (quantity as a number)."""
    total = row.quantity * row.price_per_unit
    return {
        "id": row.id,
        "sales_order_id": row.sales_order_id,
        "variant_id": row.variant_id,
        "quantity": num(row.quantity),
        "location_id": row.location_id,
        "tax_rate_id": None,
        "price_per_unit": f"{row.price_per_unit:.10f}",
        "price_per_unit_in_base_currency": num(row.price_per_unit),
        "total": num(total),
        "total_in_base_currency": num(total),
        "total_discount": None,
        "cogs_value": None,
        "product_availability": "IN_STOCK",
        "product_expected_date": None,
        "linked_manufacturing_order_id": None,
        "attributes": [],
        "batch_transactions": [],
        "serial_numbers": [],
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "deleted_at": iso_or_none(row.deleted_at),
    }


def sales_order_json(order: SalesOrder) -> Json:
    """The SalesOrder object with its live rows nested (deleted rows are never nested)."""
    rows = [sales_order_row_json(row) for row in order.live_rows()]
    total = sum((row.quantity * row.price_per_unit for row in order.live_rows()), Decimal(0))
    return {
        "id": order.id,
        "order_no": order.order_no,
        "customer_id": order.customer_id,
        "location_id": order.location_id,
        "status": order.status,
        "source": order.source,
        "ecommerce_order_type": order.ecommerce_order_type,
        "ecommerce_store_name": order.ecommerce_store_name,
        "ecommerce_order_id": order.ecommerce_order_id,
        "currency": "USD",
        "total": num(total),
        "total_in_base_currency": num(total),
        "order_created_date": iso(order.created_at),
        "delivery_date": None,
        "picked_date": None,
        "invoicing_status": None,
        "product_availability": "IN_STOCK",
        "production_status": "NOT_APPLICABLE",
        "linked_manufacturing_order_id": None,
        "additional_info": None,
        "customer_ref": None,
        "sales_order_rows": rows,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "deleted_at": iso_or_none(order.deleted_at),
    }


def movement_json(movement: Movement) -> Json:
    """The InventoryMovement object."""
    value = movement.value_per_unit
    return {
        "id": movement.id,
        "variant_id": movement.variant_id,
        "location_id": movement.location_id,
        "resource_type": movement.resource_type,
        "resource_id": movement.resource_id,
        "caused_by_order_no": movement.caused_by_order_no,
        "caused_by_resource_id": movement.caused_by_resource_id,
        "movement_date": iso(movement.created_at),
        "quantity_change": num(movement.quantity_change),
        "balance_after": num(movement.balance_after),
        "value_per_unit": num(value),
        "value_in_stock_after": num(movement.balance_after * value),
        "average_cost_after": num(value),
        "rank": movement.rank,
        "created_at": iso(movement.created_at),
        "updated_at": iso(movement.created_at),
    }


def manufacturing_order_json(order: ManufacturingOrder) -> Json:
    """The ManufacturingOrder object (recipe rows are not nested, as in Katana)."""
    done = order.status == "DONE"
    return {
        "id": order.id,
        "order_no": order.order_no,
        "status": order.status,
        "variant_id": order.variant_id,
        "planned_quantity": num(order.planned_quantity),
        "actual_quantity": num(order.planned_quantity) if done else None,
        "completed_quantity": num(order.planned_quantity) if done else 0,
        "remaining_quantity": 0 if done else num(order.planned_quantity),
        "includes_partial_completions": False,
        "location_id": order.location_id,
        "order_created_date": iso(order.created_at),
        "production_deadline_date": None,
        "done_date": iso_or_none(order.done_at),
        "additional_info": "",
        "is_linked_to_sales_order": False,
        "ingredient_availability": "IN_STOCK",
        "sales_order_id": None,
        "sales_order_row_id": None,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "deleted_at": iso_or_none(order.deleted_at),
    }


def recipe_row_json(state: KatanaState, recipe: RecipeRow) -> Json:
    """The ManufacturingOrderRecipeRow object."""
    order = state.manufacturing_orders[recipe.manufacturing_order_id]
    planned = recipe.quantity_per_unit * order.planned_quantity
    return {
        "id": recipe.id,
        "manufacturing_order_id": recipe.manufacturing_order_id,
        "variant_id": recipe.variant_id,
        "planned_quantity_per_unit": num(recipe.quantity_per_unit),
        "total_actual_quantity": num(planned),
        "total_consumed_quantity": num(recipe.consumed),
        "total_remaining_quantity": num(planned - recipe.consumed),
        "ingredient_availability": "IN_STOCK",
        "created_at": iso(recipe.created_at),
        "updated_at": iso(recipe.updated_at),
        "deleted_at": None,
    }


def purchase_order_json(order: PurchaseOrder) -> Json:
    """A received one-row PurchaseOrder."""
    row = {
        "id": order.row_id,
        "purchase_order_id": order.id,
        "variant_id": order.variant_id,
        "quantity": num(order.quantity),
        "received_date": iso(order.created_at),
    }
    return {
        "id": order.id,
        "order_no": order.order_no,
        "status": "RECEIVED",
        "entity_type": "regular",
        "location_id": order.location_id,
        "purchase_order_rows": [row],
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "deleted_at": None,
    }


def webhook_json(subscription: WebhookSubscription) -> Json:
    """The WebhookDto object."""
    return {
        "id": subscription.id,
        "url": subscription.url,
        "token": subscription.token,
        "enabled": subscription.enabled,
        "description": subscription.description,
        "subscribed_events": list(subscription.subscribed_events),
        "created_at": iso(subscription.created_at),
        "updated_at": iso(subscription.updated_at),
    }
