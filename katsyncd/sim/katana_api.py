"""Routes of the Katana simulator: the documented GET endpoints, webhook CRUD, and the
middleware that applies auth, the rate limit, injected faults, latency and the request log.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from aiohttp import web

from katsyncd.sim.katana_http import (
    ApiError,
    FaultPlan,
    Params,
    RateWindow,
    error_response,
    find,
    paginated,
    validation_error,
)
from katsyncd.sim.katana_json import (
    inventory_json,
    item_json,
    location_json,
    manufacturing_order_json,
    movement_json,
    purchase_order_json,
    recipe_row_json,
    sales_order_json,
    sales_order_row_json,
    variant_json,
    webhook_json,
    webhook_problems,
)
from katsyncd.sim.katana_model import (
    Item,
    Location,
    ManufacturingOrder,
    Movement,
    RecipeRow,
    RequestRecord,
    SalesOrder,
    SalesOrderRow,
    Variant,
    WebhookSubscription,
)

if TYPE_CHECKING:
    from katsyncd.sim.katana import KatanaSim
    from katsyncd.sim.katana_state import KatanaState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

_PAGING = frozenset({"page", "limit"})
_DATES = ("created_at", "updated_at")
_CACHE_SIZE = 32  # distinct list queries remembered (each until the next state change)

_log = structlog.get_logger(__name__)


def _int_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise ApiError(404) from None


def _one(found: object | None) -> Any:
    if found is None or getattr(found, "deleted_at", None) is not None:
        raise ApiError(404)
    return found


# ---------------------------------------------------------------------- the application


class KatanaApi:
    """The aiohttp application of one simulator: handlers, rate window and fault plan."""

    def __init__(self, sim: KatanaSim, clock: Callable[[], float]) -> None:
        self._sim = sim
        self._clock = clock
        self.window = RateWindow(clock, fixed=lambda: sim.quirks.rate_window == "fixed")
        self.faults = FaultPlan()
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[int, list[Any]]] = {}

    def application(self) -> web.Application:
        """A fresh aiohttp application serving ``/v1``."""
        app = web.Application(middlewares=[self._middleware])
        get = self._routes_get()
        app.router.add_routes([web.get(path, handler) for path, handler in get.items()])
        app.router.add_routes(
            [
                web.post("/v1/webhooks", self.create_webhook),
                web.patch("/v1/webhooks/{id}", self.update_webhook),
                web.delete("/v1/webhooks/{id}", self.delete_webhook),
            ]
        )
        return app

    def _routes_get(self) -> dict[str, Handler]:
        return {
            "/v1/variants": self.list_variants,
            "/v1/variants/{id}": self.get_variant,
            "/v1/inventory": self.list_inventory,
            "/v1/inventory_movements": self.list_movements,
            "/v1/sales_orders": self.list_sales_orders,
            "/v1/sales_orders/{id}": self.get_sales_order,
            "/v1/sales_order_rows": self.list_sales_order_rows,
            "/v1/sales_order_rows/{id}": self.get_sales_order_row,
            "/v1/locations": self.list_locations,
            "/v1/locations/{id}": self.get_location,
            "/v1/manufacturing_orders": self.list_manufacturing_orders,
            "/v1/manufacturing_orders/{id}": self.get_manufacturing_order,
            "/v1/manufacturing_order_recipe_rows": self.list_recipe_rows,
            "/v1/purchase_orders/{id}": self.get_purchase_order,
            "/v1/products/{id}": self.get_product,
            "/v1/materials/{id}": self.get_material,
            "/v1/webhooks": self.list_webhooks,
            "/v1/webhooks/{id}": self.get_webhook,
        }

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not (request.path == "/v1" or request.path.startswith("/v1/")):
            return await handler(request)
        at = self._clock()
        if self._sim.latency > 0:
            await asyncio.sleep(self._sim.latency)
        path = request.path[3:]
        response = await self._answer(request, handler, path)
        if self._sim.quirks.rate_limit_headers:
            response.headers.update(self.window.headers(self._sim.requests_per_minute))
        record = RequestRecord(
            request.method, path, list(request.query.items()), response.status, at
        )
        self._sim.request_log.append(record)
        return response

    async def _answer(
        self, request: web.Request, handler: Handler, path: str
    ) -> web.StreamResponse:
        if not self._authorized(request):
            return error_response(401)
        limit = self._sim.requests_per_minute
        if not self.window.admit(limit):
            response = error_response(429)
            response.headers["Retry-After"] = str(self.window.retry_after(limit))
            return response
        fault = self.faults.take(path)
        if fault is not None:
            return FaultPlan.response(fault)
        try:
            return await handler(request)
        except ApiError as error:
            return error.response()
        except web.HTTPException as error:
            return error_response(error.status)
        except Exception:  # a simulator bug: answer like Katana would, keep the traceback
            _log.exception("katana_sim_handler_failed", method=request.method, path=path)
            return error_response(500)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expected = self._sim.api_key.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)

    def _params(self, request: web.Request, *, dates: Iterable[str] = ()) -> Params:
        """The query of a list endpoint, its array filters capped per the quirks."""
        quirks = self._sim.quirks
        return Params(
            request.query,
            dates=dates,
            array_limit=quirks.array_filter_limit,
            over_limit=quirks.array_filter_over_limit,
        )

    def _find(self, request: web.Request, items: Iterable[T], keep: Callable[[T], bool]) -> list[T]:
        """The items passing ``keep``, remembered per query (paging aside) until the state
        changes, so walking N pages costs O(records) rather than O(pages x records)."""
        query = tuple(sorted((k, v) for k, v in request.query.items() if k not in _PAGING))
        key = (request.path, (*query, ("quirks", repr(self._sim.quirks))))
        cached = self._cache.get(key)
        if cached is not None and cached[0] == self._state.version:
            found: list[T] = cached[1]
            return found
        found = find(items, keep)
        self._cache[key] = (self._state.version, found)
        while len(self._cache) > _CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        return found

    # ------------------------------------------------------------------ variants, inventory

    @property
    def _state(self) -> KatanaState:
        return self._sim

    async def list_variants(self, request: web.Request) -> web.Response:
        """GET /variants."""
        p = self._params(request, dates=_DATES)
        state = self._state
        ids, skus, types = p.ints("ids"), p.strs("sku"), p.strs("type")
        product_ids, material_ids = p.ints("product_id"), p.ints("material_id")
        deleted, archived = p.flag("include_deleted"), p.flag("include_archived")

        def keep(v: Variant) -> bool:
            return (
                (ids is None or v.id in ids)
                and (skus is None or v.sku in skus)
                and (types is None or v.type in types)
                and (product_ids is None or (v.type == "product" and v.parent_id in product_ids))
                and (material_ids is None or (v.type == "material" and v.parent_id in material_ids))
                and (deleted or v.deleted_at is None)
                and (archived or not state.is_archived(v))
                and p.time_ok("created_at", v.created_at)
                and p.time_ok("updated_at", v.updated_at)
            )

        extend = "product_or_material" in (p.strs("extend") or set())
        found = self._find(request, state.variants.values(), keep)
        return paginated(p, found, lambda v: variant_json(state, v, extend=extend))

    async def get_variant(self, request: web.Request) -> web.Response:
        """GET /variants/{id}."""
        variant = _one(self._state.variants.get(_int_id(request)))
        extend = "product_or_material" in (Params(request.query).strs("extend") or set())
        return web.json_response(variant_json(self._state, variant, extend=extend))

    async def list_inventory(self, request: web.Request) -> web.Response:
        """GET /inventory: one row per (variant, location), oldest location first."""
        p = self._params(request)
        state = self._state
        variant_ids, location_ids = p.ints("variant_id"), p.ints("location_id")
        archived = p.flag("include_archived")
        if variant_ids is None:
            keys = state.inventory_keys()
        else:
            keys = sorted((loc, vid) for vid in variant_ids for loc in state.stock.get(vid, {}))

        def keep(key: tuple[int, int]) -> bool:
            location_id, variant_id = key
            variant = state.variants[variant_id]
            return (
                (location_ids is None or location_id in location_ids)
                and variant.deleted_at is None
                and state.locations[location_id].deleted_at is None
                and (archived or not state.is_archived(variant))
            )

        extend = p.strs("extend") or set()
        quirks = self._sim.quirks
        if location_ids is not None and not quirks.inventory_extend_with_location:
            extend = set()  # this gateway drops ``extend`` when a location is filtered
        found = self._find(request, keys, keep)
        if quirks.inventory_order == "newest_first":
            found = sorted(found, key=lambda key: (key[0], -key[1]))
        return paginated(p, found, lambda key: inventory_json(state, key, extend))

    async def list_movements(self, request: web.Request) -> web.Response:
        """GET /inventory_movements, newest first."""
        p = self._params(request, dates=_DATES)
        ids, variant_ids = p.ints("ids"), p.ints("variant_ids")
        location_ids, types = p.ints("location_id"), p.strs("resource_type")
        resource_ids, order_ids = p.ints("resource_id"), p.ints("caused_by_resource_id")
        order_nos = p.strs("caused_by_order_no")

        def keep(m: Movement) -> bool:
            return (
                (ids is None or m.id in ids)
                and (variant_ids is None or m.variant_id in variant_ids)
                and (location_ids is None or m.location_id in location_ids)
                and (types is None or m.resource_type in types)
                and (resource_ids is None or m.resource_id in resource_ids)
                and (order_ids is None or m.caused_by_resource_id in order_ids)
                and (order_nos is None or m.caused_by_order_no in order_nos)
                and p.time_ok("created_at", m.created_at)
                and p.time_ok("updated_at", m.created_at)
            )

        return paginated(
            p, self._find(request, reversed(self._state.movements), keep), movement_json
        )

    # ------------------------------------------------------------------ sales orders

    async def list_sales_orders(self, request: web.Request) -> web.Response:
        """GET /sales_orders with nested rows."""
        p = self._params(request, dates=_DATES)
        ids, statuses, deleted = p.ints("ids"), p.strs("status"), p.flag("include_deleted")
        string_filters = {
            name: p.strs(name)
            for name in (
                "ecommerce_order_type",
                "ecommerce_store_name",
                "ecommerce_order_id",
                "order_no",
                "source",
            )
        }
        locations, customers = p.ints("location_id"), p.ints("customer_id")

        def keep(o: SalesOrder) -> bool:
            return (
                (ids is None or o.id in ids)
                and (statuses is None or o.status in statuses)
                and (deleted or o.deleted_at is None)
                and (locations is None or o.location_id in locations)
                and (customers is None or o.customer_id in customers)
                and all(
                    wanted is None or getattr(o, name) in wanted
                    for name, wanted in string_filters.items()
                )
                and p.time_ok("created_at", o.created_at)
                and p.time_ok("updated_at", o.updated_at)
            )

        return paginated(
            p, self._find(request, self._state.sales_orders.values(), keep), sales_order_json
        )

    async def get_sales_order(self, request: web.Request) -> web.Response:
        """GET /sales_orders/{id}."""
        order = _one(self._state.sales_orders.get(_int_id(request)))
        return web.json_response(sales_order_json(order))

    async def list_sales_order_rows(self, request: web.Request) -> web.Response:
        """GET /sales_order_rows (the place where deleted rows show, with include_deleted)."""
        p = self._params(request, dates=_DATES)
        ids, order_ids = p.ints("ids"), p.ints("sales_order_ids")
        variant_ids, locations = p.ints("variant_id"), p.ints("location_id")
        deleted = p.flag("include_deleted")

        def keep(r: SalesOrderRow) -> bool:
            return (
                (ids is None or r.id in ids)
                and (order_ids is None or r.sales_order_id in order_ids)
                and (variant_ids is None or r.variant_id in variant_ids)
                and (locations is None or r.location_id in locations)
                and (deleted or r.deleted_at is None)
                and p.time_ok("created_at", r.created_at)
                and p.time_ok("updated_at", r.updated_at)
            )

        found = self._find(request, self._state.sales_order_rows.values(), keep)
        return paginated(p, found, sales_order_row_json)

    async def get_sales_order_row(self, request: web.Request) -> web.Response:
        """GET /sales_order_rows/{id}."""
        row = _one(self._state.sales_order_rows.get(_int_id(request)))
        return web.json_response(sales_order_row_json(row))

    # ------------------------------------------------------------------ other resources

    async def list_locations(self, request: web.Request) -> web.Response:
        """GET /locations."""
        p = self._params(request, dates=_DATES)
        ids, names, deleted = p.ints("ids"), p.strs("name"), p.flag("include_deleted")
        primary = None if p.first("is_primary") is None else p.flag("is_primary")

        def keep(loc: Location) -> bool:
            return (
                (ids is None or loc.id in ids)
                and (names is None or loc.name in names)
                and (primary is None or loc.is_primary == primary)
                and (deleted or loc.deleted_at is None)
                and p.time_ok("created_at", loc.created_at)
                and p.time_ok("updated_at", loc.updated_at)
            )

        return paginated(
            p, self._find(request, self._state.locations.values(), keep), location_json
        )

    async def get_location(self, request: web.Request) -> web.Response:
        """GET /locations/{id}."""
        return web.json_response(location_json(_one(self._state.locations.get(_int_id(request)))))

    async def list_manufacturing_orders(self, request: web.Request) -> web.Response:
        """GET /manufacturing_orders."""
        p = self._params(request, dates=_DATES)
        ids, statuses, locations = p.ints("ids"), p.strs("status"), p.ints("location_id")
        deleted = p.flag("include_deleted")

        def keep(mo: ManufacturingOrder) -> bool:
            return (
                (ids is None or mo.id in ids)
                and (statuses is None or mo.status in statuses)
                and (locations is None or mo.location_id in locations)
                and (deleted or mo.deleted_at is None)
                and p.time_ok("created_at", mo.created_at)
                and p.time_ok("updated_at", mo.updated_at)
            )

        found = self._find(request, self._state.manufacturing_orders.values(), keep)
        return paginated(p, found, manufacturing_order_json)

    async def get_manufacturing_order(self, request: web.Request) -> web.Response:
        """GET /manufacturing_orders/{id}."""
        order = _one(self._state.manufacturing_orders.get(_int_id(request)))
        return web.json_response(manufacturing_order_json(order))

    async def list_recipe_rows(self, request: web.Request) -> web.Response:
        """GET /manufacturing_order_recipe_rows."""
        p = self._params(request, dates=_DATES)
        ids, orders = p.ints("ids"), p.ints("manufacturing_order_id")
        variant_ids = p.ints("variant_id")

        def keep(r: RecipeRow) -> bool:
            return (
                (ids is None or r.id in ids)
                and (orders is None or r.manufacturing_order_id in orders)
                and (variant_ids is None or r.variant_id in variant_ids)
                and p.time_ok("created_at", r.created_at)
                and p.time_ok("updated_at", r.updated_at)
            )

        state = self._state
        found = self._find(request, state.recipe_rows.values(), keep)
        return paginated(p, found, lambda r: recipe_row_json(state, r))

    async def get_purchase_order(self, request: web.Request) -> web.Response:
        """GET /purchase_orders/{id} (the href of ``purchase_order.received``)."""
        order = _one(self._state.purchase_orders.get(_int_id(request)))
        return web.json_response(purchase_order_json(order))

    async def get_product(self, request: web.Request) -> web.Response:
        """GET /products/{id} (the href of ``product.updated``)."""
        return self._item("product", _int_id(request))

    async def get_material(self, request: web.Request) -> web.Response:
        """GET /materials/{id} (the href of ``material.updated``)."""
        return self._item("material", _int_id(request))

    def _item(self, kind: str, item_id: int) -> web.Response:
        state = self._state
        item: Item = _one(state.items.get((kind, item_id)))
        variants = [
            variant_json(state, v)
            for v in state.variants.values()
            if v.type == kind and v.parent_id == item_id and v.deleted_at is None
        ]
        return web.json_response(item_json(item, variants))

    # ------------------------------------------------------------------ webhooks

    async def list_webhooks(self, request: web.Request) -> web.Response:
        """GET /webhooks."""
        p = self._params(request)
        ids, urls = p.ints("ids"), p.strs("url")
        enabled = None if p.first("enabled") is None else p.flag("enabled")

        def keep(w: WebhookSubscription) -> bool:
            return (
                (ids is None or w.id in ids)
                and (urls is None or w.url in urls)
                and (enabled is None or w.enabled == enabled)
            )

        return paginated(p, find(self._state.webhooks.values(), keep), webhook_json)

    async def get_webhook(self, request: web.Request) -> web.Response:
        """GET /webhooks/{id}."""
        return web.json_response(webhook_json(self._webhook(request)))

    async def create_webhook(self, request: web.Request) -> web.Response:
        """POST /webhooks."""
        body = await self._body(request, create=True)
        subscription = self._sim.add_webhook(
            body["url"],
            body["subscribed_events"],
            enabled=body.get("enabled", True),
            description=body.get("description"),
        )
        return web.json_response(webhook_json(subscription))

    async def update_webhook(self, request: web.Request) -> web.Response:
        """PATCH /webhooks/{id}: only the fields sent change."""
        subscription = self._webhook(request)
        body = await self._body(request, create=False)
        self._sim.change_webhook(subscription, body)
        return web.json_response(webhook_json(subscription))

    async def delete_webhook(self, request: web.Request) -> web.Response:
        """DELETE /webhooks/{id} -> 204."""
        subscription = self._webhook(request)
        del self._state.webhooks[subscription.id]
        return web.Response(status=204)

    def _webhook(self, request: web.Request) -> WebhookSubscription:
        found: WebhookSubscription = _one(self._state.webhooks.get(_int_id(request)))
        return found

    @staticmethod
    async def _body(request: web.Request, *, create: bool) -> dict[str, Any]:
        try:
            body: object = json.loads(await request.read() or b"null")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "Request body is not valid JSON") from None
        problems = webhook_problems(body, create=create)
        if problems:
            raise validation_error(problems)
        assert isinstance(body, dict)  # webhook_problems rejects anything else
        return body
