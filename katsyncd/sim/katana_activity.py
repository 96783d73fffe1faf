"""Catalogue building and random business activity for the Katana simulator (demo, benchmarks).

Both work only through :class:`~katsyncd.sim.katana_state.KatanaState`'s public operations,
so everything they do moves stock, writes movements and emits webhooks exactly like a test
calling those operations by hand.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable

from katsyncd.sim.katana_model import SalesOrder
from katsyncd.sim.katana_state import KatanaState

_LOCATION_NAMES = ("Main warehouse", "East warehouse", "Retail store", "Factory")
_RECENT = 300  # how many recent documents random activity picks from

Action = Callable[[KatanaState, random.Random], str | None]


def ensure_locations(state: KatanaState, count: int) -> list[int]:
    """The first ``count`` live locations, creating what is missing (the first is primary
    unless a primary already exists)."""
    live = sorted(loc.id for loc in state.locations.values() if loc.deleted_at is None)
    has_primary = any(state.locations[loc].is_primary for loc in live)
    while len(live) < count:
        index = len(live)
        name = _LOCATION_NAMES[index] if index < len(_LOCATION_NAMES) else f"Location {index + 1}"
        live.append(state.add_location(name, is_primary=not has_primary and index == 0))
    return live[:count]


def populate(
    state: KatanaState,
    n_variants: int,
    *,
    locations: int = 2,
    seed: int = 0,
    sku_prefix: str = "KS-",
) -> list[int]:
    """Build a catalogue: ``n_variants`` product variants with SKUs ``{prefix}{i:05d}``
    (i from 0) grouped 1-3 per product, random stock 0..200 per location, plus about one
    material per ten products (SKU ``MAT-{prefix}{j:05d}``). Returns the product variant ids."""
    rng = random.Random(seed)
    location_ids = ensure_locations(state, locations)
    with state.bulk():
        variant_ids = _add_products(state, rng, n_variants, location_ids, sku_prefix)
        n_materials = max(1, n_variants // 10) if n_variants else 0
        for index in range(n_materials):
            stock = {loc: rng.randint(0, 500) for loc in location_ids}
            state.add_material_variant(f"MAT-{sku_prefix}{index:05d}", in_stock=stock)
    return variant_ids


def _add_products(
    state: KatanaState, rng: random.Random, n: int, location_ids: list[int], sku_prefix: str
) -> list[int]:
    variant_ids: list[int] = []
    while len(variant_ids) < n:
        product_id: int | None = None
        for _ in range(min(rng.choice((1, 1, 1, 2, 3)), n - len(variant_ids))):
            stock = {loc: rng.randint(0, 200) for loc in location_ids}
            sku = f"{sku_prefix}{len(variant_ids):05d}"
            variant_id = state.add_product_variant(sku, in_stock=stock, product_id=product_id)
            product_id = state.variants[variant_id].parent_id
            variant_ids.append(variant_id)
    return variant_ids


def random_activity(state: KatanaState, rng: random.Random) -> str:
    """Perform one weighted random operation and describe it. Mostly sales orders being
    created, packed and delivered; some edits, deletions, adjustments, transfers, purchase
    receipts and manufacturing orders. Needs a location and a product variant."""
    if state.pick_variant(rng, "product") is None or not _locations(state):
        raise RuntimeError("random_activity needs a catalogue: call populate() first")
    action = rng.choices(_ACTIONS, weights=_WEIGHTS)[0]
    return action(state, rng) or _create_sales_order(state, rng) or "nothing happened"


def _locations(state: KatanaState) -> list[int]:
    return [loc.id for loc in state.locations.values() if loc.deleted_at is None]


def _sku(state: KatanaState, variant_id: int) -> str:
    return state.variants[variant_id].sku or f"variant#{variant_id}"


def _recent_orders(state: KatanaState, statuses: Iterable[str]) -> list[SalesOrder]:
    wanted = set(statuses)
    recent = itertools.islice(reversed(state.sales_orders.values()), _RECENT)
    return [o for o in recent if o.deleted_at is None and o.status in wanted]


def _distinct_products(state: KatanaState, rng: random.Random, count: int) -> list[int]:
    picks = (state.pick_variant(rng, "product") for _ in range(count))
    return list(dict.fromkeys(p for p in picks if p is not None))


def _create_sales_order(state: KatanaState, rng: random.Random) -> str | None:
    variant_ids = _distinct_products(state, rng, rng.randint(1, 3))
    rows = [(variant_id, rng.randint(1, 3)) for variant_id in variant_ids]
    channel = "bigCommerce" if rng.random() < 0.7 else None
    so_id = state.create_sales_order(
        rows, location_id=rng.choice(_locations(state)), ecommerce_order_type=channel
    )
    lines = ", ".join(f"{qty} x {_sku(state, vid)}" for vid, qty in rows)
    return f"SO-{so_id} created ({channel or 'katana'}): {lines}"


def _set_status(
    state: KatanaState, rng: random.Random, sources: tuple[str, ...], target: str
) -> str | None:
    orders = _recent_orders(state, sources)
    if not orders:
        return None
    order = rng.choice(orders)
    state.set_sales_order_status(order.id, target)
    return f"{order.order_no} {target.lower()}"


def _pack(state: KatanaState, rng: random.Random) -> str | None:
    return _set_status(state, rng, ("NOT_SHIPPED",), "PACKED")


def _deliver(state: KatanaState, rng: random.Random) -> str | None:
    return _set_status(state, rng, ("NOT_SHIPPED", "PACKED"), "DELIVERED")


def _edit_sales_order(state: KatanaState, rng: random.Random) -> str | None:
    orders = _recent_orders(state, ("NOT_SHIPPED",))
    if not orders:
        return None
    order = rng.choice(orders)
    rows = [(row.variant_id, row.quantity + rng.randint(1, 2)) for row in order.live_rows()]
    state.update_sales_order_rows(order.id, rows)
    return f"{order.order_no} quantities raised"


def _delete_sales_order(state: KatanaState, rng: random.Random) -> str | None:
    orders = _recent_orders(state, ("NOT_SHIPPED", "PENDING"))
    if not orders:
        return None
    order = rng.choice(orders)
    state.delete_sales_order(order.id)
    return f"{order.order_no} deleted"


def _adjust(state: KatanaState, rng: random.Random) -> str | None:
    variant_id = state.pick_variant(rng, rng.choice(("product", "product", "material")))
    if variant_id is None:
        return None
    delta = rng.choice((-1, 1)) * rng.randint(1, 10)
    location_id = rng.choice(_locations(state))
    state.adjust_stock(variant_id, location_id, delta)
    return f"stock adjustment {delta:+d} {_sku(state, variant_id)} at location {location_id}"


def _transfer(state: KatanaState, rng: random.Random) -> str | None:
    locations = _locations(state)
    variant_id = state.pick_variant(rng, "product")
    if len(locations) < 2 or variant_id is None:
        return None
    source, target = rng.sample(locations, 2)
    qty = rng.randint(1, 10)
    state.transfer_stock(variant_id, source, target, qty)
    return f"transfer {qty} x {_sku(state, variant_id)} {source} -> {target}"


def _receive(state: KatanaState, rng: random.Random) -> str | None:
    kind = "material" if rng.random() < 0.6 else "product"
    variant_id = state.pick_variant(rng, kind) or state.pick_variant(rng, "product")
    if variant_id is None:
        return None
    qty = rng.randint(10, 100)
    po_id = state.receive_purchase_order(variant_id, rng.choice(_locations(state)), qty)
    return f"PO-{po_id} received: {qty} x {_sku(state, variant_id)}"


def _create_mo(state: KatanaState, rng: random.Random) -> str | None:
    output = state.pick_variant(rng, "product")
    if output is None:
        return None
    ingredients = {state.pick_variant(rng, "material") for _ in range(rng.randint(1, 3))}
    if rng.random() < 0.3:
        ingredients.add(state.pick_variant(rng, "product"))
    recipe = [(v, rng.randint(1, 3)) for v in ingredients if v is not None and v != output]
    qty = rng.randint(1, 10)
    location_id = rng.choice(_locations(state))
    mo_id = state.create_manufacturing_order(output, qty, recipe, location_id=location_id)
    return f"MO-{mo_id} created: make {qty} x {_sku(state, output)}"


def _complete_mo(state: KatanaState, rng: random.Random) -> str | None:
    recent = itertools.islice(reversed(state.manufacturing_orders.values()), _RECENT)
    open_orders = [mo for mo in recent if mo.is_open]
    if not open_orders:
        return None
    order = rng.choice(open_orders)
    state.complete_manufacturing_order(order.id)
    return f"{order.order_no} done: +{order.planned_quantity} x {_sku(state, order.variant_id)}"


_PLAN: tuple[tuple[Action, int], ...] = (
    (_create_sales_order, 36),
    (_pack, 16),
    (_deliver, 14),
    (_edit_sales_order, 4),
    (_delete_sales_order, 2),
    (_adjust, 9),
    (_transfer, 4),
    (_receive, 6),
    (_create_mo, 5),
    (_complete_mo, 4),
)
_ACTIONS = [action for action, _ in _PLAN]
_WEIGHTS = [weight for _, weight in _PLAN]
