"""In-process BigCommerce API simulator: a real aiohttp server hosting any number of stores.

Every store lives under ``/stores/{store_hash}/v3`` and serves the read endpoints katsyncd
resolves SKUs with plus the one write it makes::

    GET /v3/catalog/products        GET /v3/catalog/variants
    GET /v3/inventory/items         GET /v3/inventory/locations
    PUT /v3/inventory/adjustments/absolute

Shapes, limits, rate-limit headers and error bodies follow ``shared/docs/BIGCOMMERCE_API.md``
and the official OpenAPI files. Each store has its own fixed-window quota, fault injection
(5xx, 429 with or without headers, garbage bodies, rejected SKUs, a 4xx for every write via
``answer_writes``, disabled or removed locations), latency, and accounting (request log,
accepted adjustments, highest number of writes in flight). ``BigCommerceQuirks`` picks the
reading of ``include_fields`` (keeps or drops embedded variants) and of write errors (name the
items or carry only a title).

Where BigCommerce's behaviour is undocumented the simulator picks the stricter reading and
says so in a comment, so that a client passing against it is not relying on luck.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, NoReturn, TypeGuard, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from katsyncd.sim.quirks import BigCommerceQuirks

__all__ = ["BigCommerceSim", "RequestRecord", "RequestValidator", "SimStore"]

RequestValidator = Callable[[str, str, Mapping[str, str], bytes], None]
"""``(method, full url, headers, body)``; raises to reject a request as off-spec."""

ItemKind = Literal["product", "variant"]
TrackingMode = Literal["product", "variant", "none"]

MAX_QUANTITY: Final = 2_147_483_647  # per item and location, Inventory API rejects above
MAX_ADJUSTMENT_ITEMS: Final = 2000  # items per adjustment request
DEFAULT_LIMIT: Final = 50
CATALOG_MAX_LIMIT: Final = 250  # products (documented) and variants (same cap assumed)
INVENTORY_MAX_LIMIT: Final = 1000  # inventory items and locations ("limit of 1000 items")
SUBRESOURCE_PAGE_LIMIT: Final = 10  # include=options/modifiers cuts pages to 10 products
DEFAULT_QUOTA: Final = 150  # Standard/Plus plan: 150 requests ...
DEFAULT_WINDOW_MS: Final = 30_000  # ... per 30 s
ERROR_TYPE_URL: Final = (
    "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes"
)
JSON: Final = "application/json"
PROBLEM_JSON: Final = "application/problem+json"
GARBAGE_BODY: Final = b"<html><body><h1>502 Bad Gateway</h1>upstream hiccup</body></html>"
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
SHUTDOWN_TIMEOUT_SECONDS: Final = 2.0
V3_PREFIX: Final = "/v3"
ADJUSTMENTS_PREFIX: Final = "/inventory/adjustments"
WEEKDAYS: Final = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
FIRST_PRODUCT_ID: Final = 100
FIRST_VARIANT_ID: Final = 10_000  # distinct ranges make a product id sent as variant_id fail
FIRST_SKU_ID: Final = 50_000

_T = TypeVar("_T")

# Titles BigCommerce answers these statuses with on a write (``answer_writes``).
WRITE_ERROR_TITLES: Final = {
    400: "Bad Request: the request body could not be read",
    401: "Unauthorized",
    403: "You don't have a required scope to access the endpoint",
    404: "Not Found",
    409: "Conflict: the request conflicts with the current state of the store",
    413: f"The maximum items allowed in the array is {MAX_ADJUSTMENT_ITEMS}",
}


# --------------------------------------------------------------------------- records


REPLICA = "X-Katsyncd-Replica"  # a katsyncd replica names itself in this header


@dataclass(frozen=True, slots=True)
class WriteSpan:
    """One inventory write as the store saw it: when it arrived and was answered, and who
    sent it (the User-Agent and the replica header katsyncd sends)."""

    start: float
    end: float
    agent: str
    status: int


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request a store received (rate-limited and rejected ones included)."""

    method: str
    path: str  # after /v3, e.g. "/inventory/adjustments/absolute"
    query: list[tuple[str, str]]
    status: int
    at: float  # the simulator's clock when the request arrived
    body: Any  # parsed JSON body, or None when empty / not JSON


@dataclass(slots=True)
class _Location:
    id: int
    code: str
    label: str
    enabled: bool


@dataclass(eq=False, slots=True)
class _Variant:
    id: int
    product_id: int
    sku: str
    sku_id: int | None  # None for a base variant
    option_values: list[dict[str, Any]]
    levels: dict[int, int] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class _Product:
    id: int
    name: str
    tracking: TrackingMode
    base: _Variant  # always exists; hidden once the product has option variants
    created: datetime
    modified: datetime
    options: list[_Variant] = field(default_factory=list)
    levels: dict[int, int] = field(default_factory=dict)  # stock when tracked by product

    @property
    def sku(self) -> str:
        return self.base.sku

    @property
    def visible_variants(self) -> list[_Variant]:
        """What ``/catalog/variants`` shows: the option variants, else the base variant."""
        return self.options or [self.base]

    @property
    def base_variant_id(self) -> int | None:
        return None if self.options else self.base.id

    def tracked_items(self) -> list[_Item]:
        if self.tracking == "product":
            return [_Item("product", self, None)]
        if self.tracking == "variant":
            return [_Item("variant", self, v) for v in self.visible_variants]
        return []

    def variant_level(self, variant: _Variant, location_id: int) -> int:
        """Stock a variant shows: its own, or the product's for a product-tracked base."""
        if self.tracking == "variant":
            return variant.levels.get(location_id, 0)
        if self.tracking == "product" and variant is self.base:
            return self.levels.get(location_id, 0)
        return 0

    def catalog_level(self, location_id: int = 1) -> int:
        """Product ``inventory_level``: product stock, or the sum over tracked variants."""
        if self.tracking == "product":
            return self.levels.get(location_id, 0)
        if self.tracking == "variant":
            return sum(v.levels.get(location_id, 0) for v in self.visible_variants)
        return 0


@dataclass(frozen=True, slots=True)
class _Item:
    """A stock-tracked item: a product tracked by product, or a variant tracked by variant."""

    kind: ItemKind
    product: _Product
    variant: _Variant | None

    @property
    def ident(self) -> int:
        return self.variant.id if self.variant is not None else self.product.id

    @property
    def sku(self) -> str:
        return self.variant.sku if self.variant is not None else self.product.sku

    @property
    def levels(self) -> dict[int, int]:
        return self.variant.levels if self.variant is not None else self.product.levels

    @property
    def variant_id(self) -> int:
        return self.variant.id if self.variant is not None else self.product.base.id

    @property
    def sku_id(self) -> int | None:
        return self.variant.sku_id if self.variant is not None else None


@dataclass(slots=True)
class _Index:
    """Lookups rebuilt lazily after catalogue changes (SKU keys are case-folded)."""

    products: list[_Product]  # by id
    products_by_sku: dict[str, list[_Product]]
    variants_by_sku: dict[str, list[_Variant]]
    variants: list[_Variant]  # all visible variants, by id
    items: list[_Item]  # all tracked items, by product id then variant id


@dataclass(slots=True)
class _Fault:
    kind: Literal["status", "garbage"]
    remaining: int
    path_prefix: str
    status: int = 500
    with_rate_headers: bool = True


@dataclass(slots=True)
class _Window:
    """A fixed rate-limit window that starts with the first request after the last one ended."""

    started: float | None = None
    used: int = 0

    def roll(self, now: float, window_ms: int) -> None:
        if self.started is None or (now - self.started) * 1000 >= window_ms:
            self.started = now
            self.used = 0

    def reset_ms(self, now: float, window_ms: int) -> int:
        if self.started is None:
            return window_ms
        return max(0, math.ceil(window_ms - (now - self.started) * 1000))


@dataclass(frozen=True, slots=True)
class _Call:
    """One parsed request to a store."""

    method: str
    path: str  # after /v3
    query: list[tuple[str, str]]
    headers: Mapping[str, str]
    json: Any

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)


class _ApiError(Exception):
    """Raised by endpoint code; becomes an error response with BigCommerce's body shape."""

    def __init__(self, status: int, title: str, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.errors = dict(errors or {})


# --------------------------------------------------------------------------- pure helpers


def rate_limit_headers(quota: int, window_ms: int, left: int, reset_ms: int) -> dict[str, str]:
    """The ``X-Rate-Limit-*`` headers BigCommerce puts on every response."""
    return {
        "X-Rate-Limit-Time-Window-Ms": str(window_ms),
        "X-Rate-Limit-Time-Reset-Ms": str(reset_ms),
        "X-Rate-Limit-Requests-Quota": str(quota),
        "X-Rate-Limit-Requests-Left": str(max(0, left)),
    }


def retry_after_seconds(reset_ms: int) -> int:
    """``X-Retry-After``: whole seconds until the window refills (at least 1)."""
    return max(1, math.ceil(reset_ms / 1000))


def problem(status: int, title: str, errors: Mapping[str, str] | None = None) -> dict[str, Any]:
    """BigCommerce's error body: ``{status, title, type, errors}``."""
    return {"status": status, "title": title, "type": ERROR_TYPE_URL, "errors": dict(errors or {})}


def _fold(sku: str) -> str:
    return sku.casefold()


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _now() -> datetime:
    return datetime.now(UTC)


def _page(rows: Sequence[_T], page: int, limit: int) -> Sequence[_T]:
    start = (page - 1) * limit
    return rows[start : start + limit]


def _split_store_path(path: str) -> tuple[str, str] | None:
    """``/stores/{hash}/v3/rest`` -> ``(hash, "/rest")``; None for anything else."""
    parts = path.split("/", 4)
    if len(parts) < 4 or parts[0] or parts[1] != "stores" or not parts[2]:
        return None
    if "/" + parts[3] != V3_PREFIX:
        return None
    return parts[2], "/" + (parts[4] if len(parts) > 4 else "")


def _content_type_for(path: str) -> str:
    """Inventory endpoints answer errors as problem+json, the catalogue as plain JSON."""
    return PROBLEM_JSON if path.startswith("/inventory") else JSON


def _json_response(
    doc: Any,
    status: int = 200,
    *,
    content_type: str = JSON,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        body=json.dumps(doc, separators=(",", ":")).encode(),
        status=status,
        content_type=content_type,
        headers=dict(headers or {}),
    )


def _parse_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


# --------------------------------------------------------------------------- query parsing


def _int_param(call: _Call, name: str) -> int | None:
    raw = call.param(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise _ApiError(
            422, f"Invalid query parameter: {name}", {name: "must be an integer"}
        ) from None


def _int_set(call: _Call, name: str) -> set[int] | None:
    raw = call.param(name)
    if raw is None:
        return None
    try:
        return {int(part) for part in _csv(raw)}
    except ValueError:
        raise _ApiError(422, f"Invalid query parameter: {name}", {name: "integers only"}) from None


_TRUE_WORDS: Final = frozenset({"true", "1", "yes", "y", "t", "on"})
_FALSE_WORDS: Final = frozenset({"false", "0", "no", "n", "f", "off"})


def _bool_param(call: _Call, name: str) -> bool | None:
    raw = call.param(name)
    if raw is None:
        return None
    if raw.lower() in _TRUE_WORDS:
        return True
    if raw.lower() in _FALSE_WORDS:
        return False
    raise _ApiError(422, f"Invalid query parameter: {name}", {name: "must be true or false"})


def _datetime_param(call: _Call, name: str) -> datetime | None:
    raw = call.param(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        raise _ApiError(422, f"Invalid query parameter: {name}", {name: "not a date"}) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _paging(call: _Call, max_limit: int) -> tuple[int, int]:
    """``(page, limit)``: limits above the maximum are capped, as BigCommerce does."""
    page = _int_param(call, "page") or 1
    limit = _int_param(call, "limit") or DEFAULT_LIMIT
    if page < 1 or limit < 1:
        raise _ApiError(422, "Invalid query parameter: page and limit must be positive")
    return page, min(limit, max_limit)


def _sku_filter(call: _Call) -> set[str] | None:
    """Case-folded SKUs from ``sku`` and/or ``sku:in``; None when neither is given."""
    wanted: set[str] | None = None
    for name in ("sku", "sku:in"):
        raw = call.param(name)
        if raw is None:
            continue
        values = {_fold(raw)} if name == "sku" else {_fold(s) for s in _csv(raw)}
        wanted = values if wanted is None else wanted & values
    return wanted


def _pagination(call: _Call, total: int, count: int, page: int, limit: int) -> dict[str, Any]:
    """``meta.pagination`` with query-string links that keep the request's filters."""
    total_pages = math.ceil(total / limit)
    links = {"current": _link(call, page, limit)}
    if page > 1:
        links["previous"] = _link(call, page - 1, limit)
    if page < total_pages:
        links["next"] = _link(call, page + 1, limit)
    return {
        "total": total,
        "count": count,
        "per_page": limit,
        "current_page": page,
        "total_pages": total_pages,
        "links": links,
    }


def _link(call: _Call, page: int, limit: int) -> str:
    kept = [(k, v) for k, v in call.query if k not in ("page", "limit")]
    return "?" + urlencode([*kept, ("page", str(page)), ("limit", str(limit))], safe=",:")


def _collection(
    call: _Call, rows: Sequence[_T], render: Callable[[_T], dict[str, Any]], max_limit: int
) -> dict[str, Any]:
    page, limit = _paging(call, max_limit)
    return _render_page(call, rows, render, page, limit)


def _render_page(
    call: _Call, rows: Sequence[_T], render: Callable[[_T], dict[str, Any]], page: int, limit: int
) -> dict[str, Any]:
    data = [render(row) for row in _page(rows, page, limit)]
    return {
        "data": data,
        "meta": {"pagination": _pagination(call, len(rows), len(data), page, limit)},
    }


def _project(doc: dict[str, Any], call: _Call, keep: Iterable[str] = ()) -> dict[str, Any]:
    """Apply ``include_fields`` / ``exclude_fields``; ``id`` and ``keep`` always stay."""
    include, exclude = (
        set(_csv(call.param("include_fields"))),
        set(_csv(call.param("exclude_fields"))),
    )
    always = {"id", *keep}
    if include:
        doc = {k: v for k, v in doc.items() if k in include or k in always}
    return {k: v for k, v in doc.items() if k not in exclude or k in always}


# --------------------------------------------------------------------------- JSON documents


def _variant_json(product: _Product, variant: _Variant) -> dict[str, Any]:
    return {
        "id": variant.id,
        "product_id": product.id,
        "sku": variant.sku,
        "sku_id": variant.sku_id,
        "option_values": list(variant.option_values),
        "price": None,
        "calculated_price": 0.0,
        "sale_price": None,
        "retail_price": None,
        "cost_price": 0.0,
        "weight": None,
        "calculated_weight": 0.0,
        "width": None,
        "height": None,
        "depth": None,
        "is_free_shipping": False,
        "fixed_cost_shipping_price": None,
        "purchasing_disabled": False,
        "purchasing_disabled_message": "",
        "image_url": "",
        "upc": "",
        "mpn": "",
        "gtin": "",
        "inventory_level": product.variant_level(variant, 1),
        "inventory_warning_level": 0,
        "bin_picking_number": "",
    }


def _product_json(product: _Product, with_variants: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": product.id,
        "name": product.name,
        "type": "physical",
        "sku": product.sku,
        "description": "",
        "weight": 0.0,
        "width": 0.0,
        "depth": 0.0,
        "height": 0.0,
        "price": 0.0,
        "cost_price": 0.0,
        "retail_price": 0.0,
        "sale_price": 0.0,
        "calculated_price": 0.0,
        "categories": [],
        "brand_id": 0,
        "inventory_level": product.catalog_level(1),
        "inventory_warning_level": 0,
        "inventory_tracking": product.tracking,
        "total_sold": 0,
        "is_visible": True,
        "is_featured": False,
        "upc": "",
        "mpn": "",
        "gtin": "",
        "bin_picking_number": "",
        "availability": "available",
        "condition": "New",
        "custom_url": {"url": f"/product-{product.id}/", "is_customized": False},
        "date_created": _iso(product.created),
        "date_modified": _iso(product.modified),
        "base_variant_id": product.base_variant_id,
    }
    if with_variants:
        doc["variants"] = [_variant_json(product, v) for v in product.visible_variants]
    return doc


def _location_json(location: _Location) -> dict[str, Any]:
    closed = {"open": False, "opening": "00:00", "closing": "00:00"}
    return {
        "id": location.id,
        "code": location.code,
        "label": location.label,
        "description": "",
        "managed_by_external_source": False,
        "type_id": "PHYSICAL",
        "enabled": location.enabled,
        "operating_hours": {day: dict(closed) for day in WEEKDAYS},
        "time_zone": "Etc/UTC",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "address": {
            "address1": f"{location.id} Warehouse Road",
            "address2": "",
            "city": "Austin",
            "state": "TX",
            "zip": "78701",
            "email": "warehouse@example.com",
            "phone": "800-555-0198",
            "geo_coordinates": {"latitude": 30.27, "longitude": -97.74},
            "country_code": "US",
        },
        "storefront_visibility": True,
        "special_hours": [],
    }


def _item_location_json(item: _Item, location: _Location) -> dict[str, Any]:
    onhand = item.levels.get(location.id, 0)
    return {
        "location_id": location.id,
        "location_code": location.code,
        "location_name": location.label,
        "available_to_sell": onhand,  # safety stock is always 0 here
        "total_inventory_onhand": onhand,
        "location_enabled": location.enabled,
        "settings": {
            "safety_stock": 0,
            "is_in_stock": onhand > 0,
            "warning_level": 0,
            "bin_picking_number": "",
        },
    }


def _item_json(item: _Item, locations: Sequence[_Location]) -> dict[str, Any]:
    return {
        "identity": {
            "sku": item.sku,
            "variant_id": item.variant_id,
            "product_id": item.product.id,
            "sku_id": item.sku_id,
        },
        "locations": [_item_location_json(item, loc) for loc in locations],
    }


# --------------------------------------------------------------------------- the store


class SimStore:
    """One simulated BigCommerce store: catalogue, per-location stock, quota, faults, log.

    The test-facing methods edit the store directly (like a merchant in the control panel);
    the HTTP endpoints see the same state.
    """

    allow_duplicate_skus: bool
    """Katana documents one SKU on several BigCommerce items (rule S7), BigCommerce itself
    answers 409 to duplicates. The simulator allows them unless this is set to False."""

    def __init__(
        self,
        store_hash: str,
        access_token: str,
        *,
        quota: int = DEFAULT_QUOTA,
        window_ms: int = DEFAULT_WINDOW_MS,
        locations: Sequence[tuple[int, str, str, bool]] = ((1, "DEFAULT", "Default", True),),
        clock: Callable[[], float] = time.monotonic,
        quirks: Callable[[], BigCommerceQuirks] = BigCommerceQuirks,
    ) -> None:
        self.store_hash = store_hash
        self.quirks = quirks  # the simulator's current quirks (tests may swap them)
        self.access_token = access_token
        self.quota = quota
        self.window_ms = window_ms
        self.latency = 0.0
        self.allow_duplicate_skus = True
        self.request_log: list[RequestRecord] = []
        self.adjustments: list[dict[str, Any]] = []
        self.max_concurrent_writes = 0  # the most writes this store ever had in flight at once
        self.write_spans: list[WriteSpan] = []
        self._clock = clock
        self._locations = {
            lid: _Location(lid, code, label, on) for lid, code, label, on in locations
        }
        self._products: dict[int, _Product] = {}
        self._variants: dict[int, _Variant] = {}
        self._index: _Index | None = None
        self._next_ids = {
            "product": FIRST_PRODUCT_ID,
            "variant": FIRST_VARIANT_ID,
            "sku": FIRST_SKU_ID,
        }
        self._window = _Window()
        self._faults: list[_Fault] = []
        self._rejected_skus: frozenset[str] = frozenset()
        self._write_status: int | None = None
        self._writes_in_flight = 0

    # ---- catalogue editing

    def add_product(
        self,
        name: str,
        sku: str,
        *,
        tracking: str = "product",
        variant_skus: Sequence[str] = (),
        inventory_level: int = 0,
    ) -> int:
        """Create a product and return its id.

        ``tracking``: ``"product"`` (stock on the product), ``"variant"`` (stock on each
        variant) or ``"none"``. ``variant_skus`` gives the product option variants (its own
        ``sku`` is then the hidden base variant's); without them it is a simple product with
        one visible base variant. Every tracked item starts with ``inventory_level`` at
        location 1.
        """
        mode = _tracking_mode(tracking)
        self._check_new_skus([sku, *variant_skus])
        now = _now()
        base = _Variant(self._take_id("variant"), 0, sku, None, [])
        product = _Product(self._take_id("product"), name, mode, base, now, now)
        base.product_id = product.id
        self._products[product.id] = product
        self._variants[base.id] = base
        for variant_sku in variant_skus:
            self._attach_variant(product, variant_sku)
        for item in product.tracked_items():
            item.levels[1] = inventory_level
        if self._index is not None:  # seeding big catalogues must not rebuild per product
            _index_product(self._index, product)
        return product.id

    def add_variant(self, product_id: int, sku: str) -> int:
        """Add an option variant to a product and return its id.

        The first option variant turns a simple product into one with options: its base
        variant disappears from the variant lists and ``base_variant_id`` becomes null.
        """
        product = self._product(product_id)
        self._check_new_skus([sku])
        variant = self._attach_variant(product, sku)
        if product.tracking == "variant":
            variant.levels[1] = 0
        product.modified = _now()
        self._index = None
        return variant.id

    def set_sku(
        self, *, product_id: int | None = None, variant_id: int | None = None, sku: str
    ) -> None:
        """Change the SKU of a product (its base variant) or of a variant."""
        if (product_id is None) == (variant_id is None):
            raise ValueError("give exactly one of product_id and variant_id")
        if product_id is not None:
            variant = self._product(product_id).base
        else:
            variant = self._variants.get(variant_id or 0) or _missing("variant", variant_id)
        self._check_new_skus([sku], ignore=variant)
        variant.sku = sku
        self._products[variant.product_id].modified = _now()
        self._index = None

    def delete_product(self, product_id: int) -> None:
        """Delete a product with all its variants and stock."""
        product = self._products.pop(product_id, None) or _missing("product", product_id)
        for variant in [product.base, *product.options]:
            self._variants.pop(variant.id, None)
        self._index = None

    def base_variant_id(self, product_id: int) -> int:
        """The id of a product's base variant (hidden from the API once it has options)."""
        return self._product(product_id).base.id

    # ---- stock inspection and editing

    def items_for_sku(self, sku: str) -> list[tuple[str, int]]:
        """Stock-tracked items whose SKU equals ``sku`` exactly (case-sensitive):
        ``[("product", product_id) | ("variant", variant_id), ...]`` in id order."""
        return [(item.kind, item.ident) for item in self._items_with_sku(sku)]

    def level(self, sku: str, location_id: int = 1) -> int | None:
        """Stock of the first tracked item with exactly this SKU; None if there is none."""
        items = self._items_with_sku(sku)
        return items[0].levels.get(location_id, 0) if items else None

    def level_of(self, kind: str, ident: int, location_id: int = 1) -> int | None:
        """Stock of one tracked item (``kind`` is "product" or "variant"); None if untracked."""
        item = self._tracked(kind, ident)
        return item.levels.get(location_id, 0) if item else None

    def set_level(self, kind: str, ident: int, location_id: int, qty: int) -> None:
        """Set stock by hand, as a merchant would in the control panel."""
        item = self._tracked(kind, ident) or _missing(f"tracked {kind}", ident)
        if location_id not in self._locations:
            _missing("location", location_id)
        if not 0 <= qty <= MAX_QUANTITY:
            raise ValueError(f"quantity {qty} outside 0..{MAX_QUANTITY}")
        item.levels[location_id] = qty
        item.product.modified = _now()

    # ---- faults

    def fail_next(
        self, n: int, status: int = 500, *, path_prefix: str = "", with_rate_headers: bool = True
    ) -> None:
        """Answer the next ``n`` requests under ``path_prefix`` (after /v3) with ``status``.

        A 429 carries the rate-limit headers (requests left 0) plus ``X-Retry-After``
        unless ``with_rate_headers`` is False (BigCommerce's "platform under load" case).
        """
        self._faults.append(_Fault("status", n, path_prefix, status, with_rate_headers))

    def garbage_next(self, n: int, *, path_prefix: str = "") -> None:
        """Answer the next ``n`` requests under ``path_prefix`` with 200 and a non-JSON body."""
        self._faults.append(_Fault("garbage", n, path_prefix))

    def reject_skus(self, skus: Collection[str]) -> None:
        """Make absolute adjustments touching an item with one of these SKUs fail with 422.

        Replaces the previous set; pass an empty collection to stop rejecting.
        """
        self._rejected_skus = frozenset(skus)

    def answer_writes(self, status: int | None) -> None:
        """Answer every stock write with ``status`` (a 4xx such as 400, 401, 403, 404, 409,
        413) and BigCommerce's title for it, until called with None. Reads are unaffected, as
        with a token that lacks only the ``store_inventory`` modify scope."""
        if status is not None and not 400 <= status < 500:
            raise ValueError(f"answer_writes takes a 4xx status, not {status}")
        self._write_status = status

    def set_location_enabled(self, location_id: int, enabled: bool) -> None:
        """Enable or disable a location, as a merchant would in the control panel."""
        location = self._locations.get(location_id) or _missing("location", location_id)
        location.enabled = enabled

    def remove_location(self, location_id: int) -> None:
        """Delete a location (and with it the stock levels kept there)."""
        if self._locations.pop(location_id, None) is None:
            _missing("location", location_id)

    # ---- accounting

    def request_count(self, path_prefix: str = "", method: str | None = None) -> int:
        """How many logged requests start with ``path_prefix`` (after /v3), optionally by method."""
        return sum(
            1
            for rec in self.request_log
            if rec.path.startswith(path_prefix) and (method is None or rec.method == method.upper())
        )

    # ---- internals: catalogue

    def _take_id(self, kind: str) -> int:
        ident = self._next_ids[kind]
        self._next_ids[kind] = ident + 1
        return ident

    def _attach_variant(self, product: _Product, sku: str) -> _Variant:
        sku_id = self._take_id("sku")
        label = {"id": sku_id, "label": sku, "option_id": 1, "option_display_name": "Option"}
        variant = _Variant(self._take_id("variant"), product.id, sku, sku_id, [label])
        product.options.append(variant)
        self._variants[variant.id] = variant
        return variant

    def _product(self, product_id: int) -> _Product:
        return self._products.get(product_id) or _missing("product", product_id)

    def _check_new_skus(self, skus: Sequence[str], ignore: _Variant | None = None) -> None:
        """BigCommerce's 409 on duplicate SKUs (case-insensitive), when duplicates are off."""
        if self.allow_duplicate_skus:
            return
        folded = [_fold(s) for s in skus if s]
        if len(set(folded)) != len(folded):
            raise ValueError(f"duplicate SKU among {list(skus)}")
        index = self._lookup()
        for key in folded:
            holders = [v for v in index.variants_by_sku.get(key, []) if v is not ignore]
            products = [p for p in index.products_by_sku.get(key, []) if p.base is not ignore]
            if holders or products:
                raise ValueError(f"SKU {key!r} already exists in store {self.store_hash}")

    def _lookup(self) -> _Index:
        """The SKU and item lookups, rebuilt after the catalogue changed."""
        if self._index is None:
            self._index = _build_index(self._products.values())
        return self._index

    def _items_with_sku(self, sku: str) -> list[_Item]:
        return [item for item in self._items_with_folded_sku(_fold(sku)) if item.sku == sku]

    def _items_with_folded_sku(self, folded: str) -> list[_Item]:
        index = self._lookup()
        items = [
            p.tracked_items()[0]
            for p in index.products_by_sku.get(folded, [])
            if p.tracking == "product"
        ]
        for variant in index.variants_by_sku.get(folded, []):
            product = self._products[variant.product_id]
            if product.tracking == "variant":
                items.append(_Item("variant", product, variant))
        return sorted(items, key=lambda i: (i.product.id, i.ident))

    def _tracked(self, kind: str, ident: int) -> _Item | None:
        if kind == "product":
            product = self._products.get(ident)
            return (
                _Item("product", product, None)
                if product and product.tracking == "product"
                else None
            )
        if kind == "variant":
            variant = self._variants.get(ident)
            product = self._products.get(variant.product_id) if variant else None
            if (
                variant
                and product
                and product.tracking == "variant"
                and variant in product.visible_variants
            ):
                return _Item("variant", product, variant)
            return None
        raise ValueError(f"kind must be 'product' or 'variant', not {kind!r}")

    # ---- internals: HTTP gateway (auth, rate limit, faults, latency, accounting)

    async def _serve(self, call: _Call, validator_error: str | None) -> web.Response:
        """Answer one request to this store and log it."""
        at = self._clock()
        writing = call.path.startswith(ADJUSTMENTS_PREFIX)
        if writing:
            self._writes_in_flight += 1
            self.max_concurrent_writes = max(self.max_concurrent_writes, self._writes_in_flight)
        status = 0  # 0: the handler was cancelled (the client went away)
        try:
            response = await self._respond(call, validator_error)
            status = response.status
        finally:
            if writing:
                self._writes_in_flight -= 1
                agent = f"{call.headers.get('User-Agent', '')} {call.headers.get(REPLICA, '')}"
                self.write_spans.append(WriteSpan(at, self._clock(), agent, status))
        self.request_log.append(
            RequestRecord(call.method, call.path, call.query, response.status, at, call.json)
        )
        return response

    async def _respond(self, call: _Call, validator_error: str | None) -> web.Response:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        ctype = _content_type_for(call.path)
        if validator_error is not None:  # a test harness verdict: costs no quota
            body = problem(400, validator_error)
            return _json_response(
                body, 400, content_type=PROBLEM_JSON, headers=self._rate_headers()
            )
        if call.headers.get("X-Auth-Token") != self.access_token:  # costs no quota either
            body = problem(401, "Unauthorized: invalid X-Auth-Token")
            return _json_response(body, 401, content_type=ctype, headers=self._rate_headers())
        limited = self._take_quota()
        if limited is not None:
            return _json_response(
                problem(429, "Too many requests"), 429, content_type=ctype, headers=limited
            )
        headers = self._rate_headers()
        fault = self._take_fault(call.path)
        if fault is not None:
            return self._fault_response(fault, ctype, headers)
        if self._write_status is not None and call.path.startswith(ADJUSTMENTS_PREFIX):
            status = self._write_status
            body = problem(status, WRITE_ERROR_TITLES.get(status, "Client error"))
            return _json_response(body, status, content_type=ctype, headers=headers)
        return self._dispatch(call, ctype, headers)

    def _take_quota(self) -> dict[str, str] | None:
        """Spend one request; the 429 headers if the window is already used up."""
        now = self._clock()
        self._window.roll(now, self.window_ms)
        if self._window.used < self.quota:
            self._window.used += 1
            return None
        return self._rate_headers(left=0, retry_after=True)

    def _rate_headers(
        self, *, left: int | None = None, retry_after: bool = False
    ) -> dict[str, str]:
        reset_ms = self._window.reset_ms(self._clock(), self.window_ms)
        remaining = self.quota - self._window.used if left is None else left
        headers = rate_limit_headers(self.quota, self.window_ms, remaining, reset_ms)
        if not self.quirks().rate_limit_headers:
            headers = {}
        if retry_after:
            headers["X-Retry-After"] = str(retry_after_seconds(reset_ms))
        return headers

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if path.startswith(fault.path_prefix):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _fault_response(self, fault: _Fault, ctype: str, headers: dict[str, str]) -> web.Response:
        if fault.kind == "garbage":
            return web.Response(body=GARBAGE_BODY, status=200, content_type=JSON, headers=headers)
        if fault.status == 429:
            headers = (
                self._rate_headers(left=0, retry_after=True) if fault.with_rate_headers else {}
            )
        title = "Too many requests" if fault.status == 429 else "Simulated server error"
        return _json_response(
            problem(fault.status, title), fault.status, content_type=ctype, headers=headers
        )

    def _dispatch(self, call: _Call, ctype: str, headers: dict[str, str]) -> web.Response:
        methods = _ROUTES.get(call.path)
        if methods is None:
            return _json_response(
                problem(404, "Not found"), 404, content_type=ctype, headers=headers
            )
        handler = methods.get(call.method)
        if handler is None:
            allow = {"Allow": ", ".join(sorted(methods))}
            body = problem(405, "Method not allowed")
            return _json_response(body, 405, content_type=ctype, headers={**headers, **allow})
        try:
            return _json_response(handler(self, call), headers=headers)
        except _ApiError as err:
            body = problem(err.status, err.title, err.errors)
            return _json_response(body, err.status, content_type=ctype, headers=headers)


def _tracking_mode(tracking: str) -> TrackingMode:
    if tracking == "product":
        return "product"
    if tracking == "variant":
        return "variant"
    if tracking == "none":
        return "none"
    raise ValueError(f"tracking must be 'product', 'variant' or 'none', not {tracking!r}")


def _missing(what: str, ident: object) -> NoReturn:
    raise KeyError(f"no {what} {ident}")


def _build_index(products: Iterable[_Product]) -> _Index:
    """Products arrive in id order (ids only grow and dicts keep insertion order)."""
    index = _Index([], {}, {}, [], [])
    for product in products:
        _index_product(index, product)
    index.variants.sort(key=lambda v: v.id)  # options added later to older products
    return index


def _index_product(index: _Index, product: _Product) -> None:
    """Add the newest product; its variant ids are the highest, so ``variants`` stays sorted."""
    index.products.append(product)
    index.products_by_sku.setdefault(_fold(product.sku), []).append(product)
    for variant in product.visible_variants:
        index.variants_by_sku.setdefault(_fold(variant.sku), []).append(variant)
        index.variants.append(variant)
    index.items.extend(product.tracked_items())


# --------------------------------------------------------------------------- endpoints


def _get_products(store: SimStore, call: _Call) -> dict[str, Any]:
    """``GET /catalog/products`` with the filters katsyncd and common clients use."""
    page, limit = _paging(call, CATALOG_MAX_LIMIT)
    include = set(_csv(call.param("include")))
    if include & {"options", "modifiers"}:
        limit = min(limit, SUBRESOURCE_PAGE_LIMIT)
    rows = _select_products(store, call)
    # The spec's include_fields enum has no ``variants``: whether naming other fields keeps the
    # embedded variants is undocumented, so the simulator plays both readings.
    keep = ["variants"] if "variants" in include else []
    if call.param("include_fields") and not store.quirks().include_fields_keeps_variants:
        keep = []

    def render(product: _Product) -> dict[str, Any]:
        return _project(_product_json(product, "variants" in include), call, keep)

    return _render_page(call, rows, render, page, limit)


def _select_products(store: SimStore, call: _Call) -> Sequence[_Product]:
    skus = _sku_filter(call)
    ids = _id_filter(call)
    tracking = call.param("inventory_tracking")
    since = _datetime_param(call, "date_modified:min")
    index = store._lookup()
    if skus is not None:
        found = {p.id: p for s in skus for p in index.products_by_sku.get(s, [])}
        candidates: Sequence[_Product] = sorted(found.values(), key=lambda p: p.id)
    elif ids is not None:
        candidates = [store._products[i] for i in sorted(ids) if i in store._products]
    elif tracking is None and since is None:
        return index.products  # unfiltered paging stays cheap on big catalogues
    else:
        candidates = index.products
    return [
        p
        for p in candidates
        if (ids is None or p.id in ids)
        and (tracking is None or p.tracking == tracking)
        and (since is None or p.modified >= since)
    ]


def _id_filter(call: _Call) -> set[int] | None:
    """Intersection of ``id`` and ``id:in``; None when neither is given."""
    single, many = _int_param(call, "id"), _int_set(call, "id:in")
    if single is None:
        return many
    return {single} if many is None else many & {single}


def _get_variants(store: SimStore, call: _Call) -> dict[str, Any]:
    """``GET /catalog/variants``; ``sku:in`` is undocumented but widely used, so supported."""
    skus = _sku_filter(call)
    ids = _id_filter(call)
    product_ids = _int_set(call, "product_id:in")
    index = store._lookup()
    if skus is not None:
        candidates = sorted(
            (v for s in skus for v in index.variants_by_sku.get(s, [])), key=lambda v: v.id
        )
    else:
        candidates = index.variants
    rows = [
        v
        for v in candidates
        if (ids is None or v.id in ids) and (product_ids is None or v.product_id in product_ids)
    ]

    def render(variant: _Variant) -> dict[str, Any]:
        return _project(_variant_json(store._products[variant.product_id], variant), call)

    return _collection(call, rows, render, CATALOG_MAX_LIMIT)


def _get_inventory_items(store: SimStore, call: _Call) -> dict[str, Any]:
    """``GET /inventory/items``: per-location stock of tracked items."""
    skus = _sku_filter(call)
    variant_ids = _int_set(call, "variant_id:in")
    product_ids = _int_set(call, "product_id:in")
    if skus is not None:
        candidates = sorted(
            (i for s in skus for i in store._items_with_folded_sku(s)),
            key=lambda i: (i.product.id, i.ident),
        )
    else:
        candidates = store._lookup().items
    rows = [
        i
        for i in candidates
        if (variant_ids is None or i.variant_id in variant_ids)
        and (product_ids is None or i.product.id in product_ids)
    ]
    locations = _select_locations(store, call)
    return _collection(call, rows, lambda item: _item_json(item, locations), INVENTORY_MAX_LIMIT)


def _select_locations(store: SimStore, call: _Call) -> list[_Location]:
    ids = _int_set(call, "location_id:in")
    codes = set(_csv(call.param("location_code:in"))) or None
    is_default = _bool_param(call, "is_default")
    is_active = _bool_param(call, "is_active")
    types = set(_csv(call.param("type_id:in"))) or None
    return [
        loc
        for loc in store._locations.values()
        if (ids is None or loc.id in ids)
        and (codes is None or loc.code in codes)
        and (is_default is None or (loc.id == 1) == is_default)
        and (is_active is None or loc.enabled == is_active)
        and (types is None or "PHYSICAL" in types)
    ]


def _get_locations(store: SimStore, call: _Call) -> dict[str, Any]:
    """``GET /inventory/locations``."""
    return _collection(call, _select_locations(store, call), _location_json, INVENTORY_MAX_LIMIT)


def _put_absolute_adjustment(store: SimStore, call: _Call) -> dict[str, Any]:
    """``PUT /inventory/adjustments/absolute``: all items are applied, or none (422)."""
    items = _adjustment_items(call.json, named=store.quirks().errors_name_items)
    plan = _plan_adjustment(store, items)
    now = _now()
    for item, location_id, quantity in plan:
        item.levels[location_id] = quantity
        item.product.modified = now
    transaction_id = str(uuid.uuid4())
    store.adjustments.append({**call.json, "transaction_id": transaction_id})
    return {"transaction_id": transaction_id}


_IDENTITY_KEYS: Final = ("sku", "variant_id", "product_id")


def _adjustment_items(body: Any, *, named: bool = True) -> list[dict[str, Any]]:
    """Structural checks of an adjustment body; 413 above 2,000 items, 422 otherwise."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise _ApiError(422, "Payload contains invalid fields", {"items": "items must be an array"})
    if "reason" in body and not isinstance(body["reason"], str):
        raise _ApiError(
            422, "Payload contains invalid fields", {"reason": "reason must be a string"}
        )
    items: list[Any] = body["items"]
    if len(items) > MAX_ADJUSTMENT_ITEMS:
        raise _ApiError(413, f"The maximum items allowed in the array is {MAX_ADJUSTMENT_ITEMS}")
    errors: dict[str, str] = {}
    for pos, item in enumerate(items):
        errors.update(_item_errors(pos, item))
    if errors:
        raise _ApiError(422, "Payload contains invalid fields", errors if named else None)
    return items


def _item_errors(pos: int, item: Any) -> dict[str, str]:
    key = f"items.{pos}"
    if not isinstance(item, dict):
        return {key: "item must be an object"}
    errors: dict[str, str] = {}
    for name in ("location_id", "quantity"):
        if not _is_int(item.get(name)):
            errors[f"{key}.{name}"] = f"{name} is required and must be an integer"
    quantity = item.get("quantity")
    if _is_int(quantity) and not 0 <= quantity <= MAX_QUANTITY:
        errors[f"{key}.quantity"] = f"quantity must be between 0 and {MAX_QUANTITY}"
    identities = [k for k in _IDENTITY_KEYS if k in item]
    if len(identities) != 1:
        errors[key] = "exactly one of sku, variant_id, product_id is required"
    elif not _identity_type_ok(identities[0], item[identities[0]]):
        errors[f"{key}.{identities[0]}"] = f"{identities[0]} has the wrong type"
    return errors


def _identity_type_ok(key: str, value: Any) -> bool:
    return isinstance(value, str) if key == "sku" else _is_int(value)


@dataclass(slots=True)
class _AdjustmentProblems:
    """Everything wrong with an adjustment, in the order BigCommerce reports it."""

    locations: list[int] = field(default_factory=list)
    tracking: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    def raise_if_any(self, *, named: bool = True) -> None:
        """``named=False`` (quirk ``errors_name_items``): the title says what is wrong but not
        with which items or locations."""
        if self.locations:
            ids = ",".join(str(i) for i in dict.fromkeys(self.locations))
            raise _ApiError(
                422, f"Location not found, identities: [{ids}]" if named else "Location not found"
            )
        if self.tracking:
            raise _ApiError(
                422,
                "[" + ", ".join(self.tracking) + "]"
                if named
                else "Items are tracked differently than addressed",
            )
        if self.invalid:
            raise _ApiError(
                422,
                "Invalid items, identities: [" + ", ".join(self.invalid) + "]"
                if named
                else "Invalid items",
            )


def _plan_adjustment(store: SimStore, items: list[dict[str, Any]]) -> list[tuple[_Item, int, int]]:
    """Resolve every item to a tracked item and an enabled location, or reject them all."""
    problems = _AdjustmentProblems()
    plan: list[tuple[_Item, int, int]] = []
    for raw in items:
        location = store._locations.get(raw["location_id"])
        if location is None or not location.enabled:
            problems.locations.append(raw["location_id"])
        target = _resolve_identity(store, raw, problems)
        if target is not None:
            plan.append((target, raw["location_id"], raw["quantity"]))
    problems.raise_if_any(named=store.quirks().errors_name_items)
    return plan


def _resolve_identity(
    store: SimStore, raw: Mapping[str, Any], problems: _AdjustmentProblems
) -> _Item | None:
    key = next(k for k in _IDENTITY_KEYS if k in raw)
    value = raw[key]
    label = f"{key} {value}"
    if key == "sku":
        target, mismatch = _resolve_sku(store, value)
    else:
        target, mismatch = _resolve_id(store, key, value)
    if mismatch is not None:
        problems.tracking.append(f"Item with {label} {mismatch}")
    elif target is None or target.sku in store._rejected_skus:
        problems.invalid.append(label)
        return None
    return target


_TRACKED_BY_PRODUCT: Final = "is tracked by product, please update stock by product id"
_TRACKED_BY_VARIANT: Final = "is tracked by variant, please update stock by variant id"
_NOT_TRACKED: Final = "is not tracked, please enable inventory tracking first"


def _resolve_id(store: SimStore, key: str, ident: int) -> tuple[_Item | None, str | None]:
    """``(tracked item, None)``, ``(None, tracking-mode complaint)`` or ``(None, None)``."""
    kind: ItemKind = "variant" if key == "variant_id" else "product"
    item = store._tracked(kind, ident)
    if item is not None:
        return item, None
    if kind == "product":
        product = store._products.get(ident)
    else:
        variant = store._variants.get(ident)
        product = store._products.get(variant.product_id) if variant else None
        if product is not None and variant not in product.visible_variants:
            product = None  # the hidden base variant of a product with options
    return None, _mismatch(kind, product)


def _mismatch(kind: ItemKind, product: _Product | None) -> str | None:
    if product is None:
        return None
    if product.tracking == "none":
        return _NOT_TRACKED
    return _TRACKED_BY_PRODUCT if kind == "variant" else _TRACKED_BY_VARIANT


def _resolve_sku(store: SimStore, sku: str) -> tuple[_Item | None, str | None]:
    """Like BigCommerce: the item holding that SKU (case-insensitive; the first if several)."""
    folded = _fold(sku)
    items = store._items_with_folded_sku(folded)
    if items:
        return items[0], None
    lookup = store._lookup()
    variants = lookup.variants_by_sku.get(folded)
    if variants:
        return None, _mismatch("variant", store._products[variants[0].product_id])
    products = lookup.products_by_sku.get(folded)
    return None, _mismatch("product", products[0] if products else None)


_Handler = Callable[[SimStore, _Call], dict[str, Any]]

_ROUTES: Final[dict[str, dict[str, _Handler]]] = {
    "/catalog/products": {"GET": _get_products},
    "/catalog/variants": {"GET": _get_variants},
    "/inventory/items": {"GET": _get_inventory_items},
    "/inventory/locations": {"GET": _get_locations},
    "/inventory/adjustments/absolute": {"PUT": _put_absolute_adjustment},
}


# --------------------------------------------------------------------------- the server


class BigCommerceSim:
    """A real HTTP server (aiohttp) hosting simulated stores under ``/stores/{hash}/v3``.

    ``request_validator``, when set, sees every request first; if it raises, the request is
    answered 400 (problem+json carrying the message) and the message is appended to
    ``spec_violations``. Tests install ``tests.support.bcspec.make_validator()`` there.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        quirks: BigCommerceQuirks | None = None,
    ) -> None:
        self.quirks = quirks or BigCommerceQuirks()
        self.base_url = ""
        self.request_validator: RequestValidator | None = None
        self.spec_violations: list[str] = []
        self._clock = clock
        self._stores: dict[str, SimStore] = {}
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start listening; return the API base URL, e.g. ``http://127.0.0.1:54321``."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def add_store(
        self,
        store_hash: str,
        access_token: str,
        *,
        quota: int = DEFAULT_QUOTA,
        window_ms: int = DEFAULT_WINDOW_MS,
        locations: Sequence[tuple[int, str, str, bool]] = ((1, "DEFAULT", "Default", True),),
    ) -> SimStore:
        """Create a store; ``locations`` are ``(id, code, label, enabled)``."""
        if store_hash in self._stores:
            raise ValueError(f"store {store_hash!r} already exists")
        store = SimStore(
            store_hash,
            access_token,
            quota=quota,
            window_ms=window_ms,
            locations=locations,
            clock=self._clock,
            quirks=lambda: self.quirks,
        )
        self._stores[store_hash] = store
        return store

    def store(self, store_hash: str) -> SimStore:
        """The store with this hash (KeyError if there is none)."""
        return self._stores[store_hash]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        violation = self._check_spec(request, body)
        split = _split_store_path(request.path)
        store = self._stores.get(split[0]) if split else None
        if store is None or split is None:
            if violation is not None:
                return _json_response(problem(400, violation), 400, content_type=PROBLEM_JSON)
            return _json_response(problem(404, "Store not found"), 404, content_type=PROBLEM_JSON)
        call = _Call(
            request.method,
            split[1],
            list(request.query.items()),
            request.headers,
            _parse_json(body),
        )
        return await store._serve(call, violation)

    def _check_spec(self, request: web.Request, body: bytes) -> str | None:
        if self.request_validator is None:
            return None
        try:
            self.request_validator(request.method, str(request.url), request.headers, body)
        except Exception as exc:  # the validator's verdict, whatever its type
            message = str(exc) or type(exc).__name__
            self.spec_violations.append(message)
            return message
        return None
