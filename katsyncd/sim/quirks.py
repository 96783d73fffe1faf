"""How the simulators play the behaviours Katana and BigCommerce document loosely.

Where an API's documentation does not settle a behaviour, our client and our simulator could
share one guess and the tests would stay green while a real account is slow or wrong. Every
such point is a field here, with the reading katsyncd was first written for as the default
("optimistic") and the other reading available, so a test can run in both modes.
:func:`pessimistic` turns every field to the unhelpful reading at once (``katsyncd demo
--pessimistic``, the ``quirks`` fixtures in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# What ``object.id`` / ``object.href`` of a ``current_inventory.*`` webhook are. Undocumented:
# Katana's own examples show a product href; one third-party handler reads a variant id.
InventoryEventShape = Literal["variant", "product", "no_href"]
# What a gateway does with more repeated array values (``variant_id=…``) than it accepts.
OverLimit = Literal["ignore", "reject"]
# The order of ``/inventory`` rows within one location. The spec only says "sorted order, with
# the oldest locations appearing first".
InventoryOrder = Literal["variant_id", "newest_first"]
# How the quota of "60 requests per minute" is counted. Undocumented: a sliding window (a
# request counts for 60 s after it was made) or a fixed one (every count ends together 60 s
# after the window's first request).
RateWindowKind = Literal["sliding", "fixed"]


@dataclass(frozen=True, slots=True)
class KatanaQuirks:
    inventory_event_shape: InventoryEventShape = "variant"
    """``variant``: ``object.id`` is the variant id, href ``…/variants/{id}``; ``product``: the
    product id with href ``…/products/{id}`` (Katana's documented example); ``no_href``: the
    product id and no ``href`` at all."""

    array_filter_limit: int | None = None
    """Most repeated values one array filter (``variant_id``, ``ids``, ``sales_order_ids``…)
    is honoured with; ``None`` is no limit."""

    array_filter_over_limit: OverLimit = "ignore"
    """Above the limit: ``ignore`` drops the filter silently (rows for ids not asked for come
    back, as qs does past its array limit); ``reject`` answers 400 naming the parameter."""

    rate_limit_headers: bool = True
    """Whether answers carry ``X-Ratelimit-*`` (documented; ``False`` plays a gateway that
    strips them: katsyncd must then keep to the quota by its own count). Not part of
    :func:`pessimistic`: a fault to test, not a reading of the docs."""

    row_edits_bump_order: bool = True
    """Whether editing, moving or deleting a sales-order row bumps the order's own
    ``updated_at`` (undocumented; the rows' ``updated_at`` always moves)."""

    inventory_order: InventoryOrder = "variant_id"
    """Within one location, ``/inventory`` rows come by ascending ``variant_id``
    (``variant_id``) or newest variant first (``newest_first``). The spec orders only the
    locations (oldest first)."""

    rate_window: RateWindowKind = "sliding"
    """``sliding``: a request counts for 60 s after it was made; ``fixed``: the window starts
    at its first request and every count ends together 60 s later (``X-Ratelimit-Reset`` is
    that end). katsyncd plans with the sliding reading (``KatanaLimiter.budget``), the
    harsher for a burst's tail. Not part of :func:`pessimistic`: neither reading is the
    unhelpful one everywhere, so tests run both on purpose."""

    inventory_extend_with_location: bool = True
    """Whether ``GET /inventory?location_id=…&extend=variant`` embeds the ``variant`` (the spec
    lists both parameters and says nothing of their combination); ``False``: a location filter
    drops ``extend``."""


@dataclass(frozen=True, slots=True)
class BigCommerceQuirks:
    include_fields_keeps_variants: bool = True
    """Whether ``GET /v3/catalog/products?include=variants&include_fields=…`` still embeds the
    variants when ``include_fields`` does not name ``variants`` (the spec does not say)."""

    rate_limit_headers: bool = True
    """Whether answers carry ``X-Rate-Limit-*`` (documented; ``False`` plays a proxy that
    strips them). Not part of :func:`pessimistic`."""

    errors_name_items: bool = True
    """Whether a rejected stock write says which items were wrong (a 422 with ``errors``
    keyed by item); ``False``: 4xx answers carry only a title."""


@dataclass(frozen=True, slots=True)
class Quirks:
    katana: KatanaQuirks = KatanaQuirks()
    bigcommerce: BigCommerceQuirks = BigCommerceQuirks()

    @property
    def pessimistic(self) -> bool:
        return self != Quirks()


def optimistic() -> Quirks:
    """The readings katsyncd was first written for."""
    return Quirks()


def pessimistic(inventory_event_shape: InventoryEventShape = "product") -> Quirks:
    """Every loosely documented behaviour played the unhelpful way."""
    return Quirks(
        KatanaQuirks(
            inventory_event_shape=inventory_event_shape,
            array_filter_limit=20,
            array_filter_over_limit="ignore",
            row_edits_bump_order=False,
            inventory_order="newest_first",
            inventory_extend_with_location=False,
        ),
        BigCommerceQuirks(include_fields_keeps_variants=False, errors_name_items=False),
    )
