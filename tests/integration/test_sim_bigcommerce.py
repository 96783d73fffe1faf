"""The BigCommerce simulator over real HTTP, with every request checked against the specs.

Each test's simulator has ``tests.support.bcspec.make_validator()`` installed, and every response a
test reads is checked against the spec's response schema. ``spec_violations`` must be empty
at teardown; the few tests that send off-spec requests on purpose clear it themselves.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from katsyncd.sim.bigcommerce import MAX_QUANTITY, BigCommerceSim, SimStore
from tests.support.bcspec import (
    RequestValidator,
    ResponseChecker,
    SpecViolation,
    make_response_checker,
    make_validator,
    spec_checked,
    specs_dir,
)

TOKEN = "token-a"
HASH = "store-a"
LOCATIONS = (
    (1, "DEFAULT", "Default", True),
    (2, "WH2", "Warehouse 2", True),
    (3, "OLD", "Old", False),
)
ABSOLUTE = "/inventory/adjustments/absolute"
JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


class FakeClock:
    """The simulator's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    """A spec-abiding API client for one store that checks every response it reads."""

    session: aiohttp.ClientSession
    sim: BigCommerceSim
    check: ResponseChecker
    store_hash: str = HASH
    token: str = TOKEN

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> Reply:
        url = f"{self.sim.base_url}/stores/{self.store_hash}/v3{path}"
        sent = {"Accept": "application/json", "X-Auth-Token": self.token, **(headers or {})}
        async with self.session.request(
            method, url, params=params, json=body, headers=sent
        ) as resp:
            reply = Reply(resp.status, resp.headers.copy(), await resp.read())
            if check:
                self.check(method, str(resp.url), sent, reply.status, reply.headers, reply.body)
        return reply

    async def get(self, path: str, params: Mapping[str, str] | None = None, **kw: Any) -> Reply:
        return await self.request("GET", path, params, **kw)

    async def adjust(self, items: list[dict[str, Any]], **kw: Any) -> Reply:
        return await self.request("PUT", ABSOLUTE, body={"reason": "test", "items": items}, **kw)


@dataclass(frozen=True)
class Catalog:
    """Ids of the seeded catalogue."""

    simple: int  # "SIMPLE-1", tracked by product, level 5
    simple_base: int  # its base variant
    shirt: int  # "SHIRT", tracked by variant, options SHIRT-S / SHIRT-M at level 3
    shirt_base: int  # its hidden base variant
    shirt_s: int
    shirt_m: int
    gift: int  # "GIFT", not tracked


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def validator() -> RequestValidator:
    return make_validator()


@pytest.fixture(scope="session")
def checker() -> ResponseChecker:
    return make_response_checker()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(validator: RequestValidator, clock: FakeClock) -> AsyncIterator[BigCommerceSim]:
    async with spec_checked(BigCommerceSim(clock=clock), validator) as simulator:
        yield simulator


@pytest.fixture
def store(sim: BigCommerceSim) -> SimStore:
    return sim.add_store(HASH, TOKEN, locations=LOCATIONS)


@pytest.fixture
def api(
    sim: BigCommerceSim, store: SimStore, session: aiohttp.ClientSession, checker: ResponseChecker
) -> Client:
    return Client(session, sim, checker)


@pytest.fixture
def catalog(store: SimStore) -> Catalog:
    simple = store.add_product("Mug", "SIMPLE-1", inventory_level=5)
    shirt = store.add_product(
        "Shirt", "SHIRT", tracking="variant", variant_skus=["SHIRT-S", "SHIRT-M"], inventory_level=3
    )
    gift = store.add_product("Gift card", "GIFT", tracking="none")
    (_, shirt_s), (_, shirt_m) = (
        store.items_for_sku("SHIRT-S")[0],
        store.items_for_sku("SHIRT-M")[0],
    )
    return Catalog(
        simple,
        store.base_variant_id(simple),
        shirt,
        store.base_variant_id(shirt),
        shirt_s,
        shirt_m,
        gift,
    )


def spec_url(path: str) -> str:
    return f"http://127.0.0.1:1/stores/abc123/v3{path}"


# --------------------------------------------------------------------------- the validator itself


def test_specs_dir_points_at_shared_specs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert (specs_dir() / "inventory.v3.yml").is_file()
    monkeypatch.setenv("KATSYNCD_BC_SPECS_DIR", str(tmp_path))
    assert specs_dir() == tmp_path


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "PUT",
            ABSOLUTE,
            {"reason": "r", "items": [{"location_id": 1, "quantity": 3, "variant_id": 4}]},
        ),
        (
            "PUT",
            ABSOLUTE,
            {
                "items": [
                    {"location_id": 2, "quantity": 0, "sku": "A"},
                    {"location_id": 1, "quantity": 9, "product_id": 7},
                ]
            },
        ),
        ("GET", "/inventory/items?variant_id:in=1,2&location_id:in=1&page=2&limit=1000", None),
        ("GET", "/inventory/items?sku:in=A,B&product_id:in=5", None),
        ("GET", "/catalog/products?include=variants&limit=250&sku:in=A,B&id:in=1,2", None),
        (
            "GET",
            "/catalog/products?include_fields=sku,inventory_level&date_modified:min=2025-01-01T00:00:00Z",
            None,
        ),
        ("GET", "/catalog/variants?sku:in=A,B&product_id:in=1,2&limit=250", None),
        ("GET", "/inventory/locations?is_default=true&location_id:in=1,2", None),
    ],
)
def test_validator_accepts_documented_requests(
    validator: RequestValidator, method: str, path: str, body: Any
) -> None:
    headers = {**JSON_HEADERS, "X-Auth-Token": "t"}
    validator(
        method, spec_url(path), headers, json.dumps(body).encode() if body is not None else b""
    )


GOOD_ITEM = {"location_id": 1, "quantity": 3, "variant_id": 4}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "expected"),
    [
        (
            "PUT",
            ABSOLUTE,
            {"items": [{"quantity": 3, "variant_id": 4}]},
            None,
            "'location_id' is a required property",
        ),
        (
            "PUT",
            ABSOLUTE,
            {"items": [{**GOOD_ITEM, "quantity": "3"}]},
            None,
            "'3' is not of type 'integer'",
        ),
        ("PUT", ABSOLUTE, {"items": [{**GOOD_ITEM, "sku": "A"}]}, None, "more than one oneOf"),
        ("PUT", ABSOLUTE, {"reason": "no items"}, None, "'items' is a required property"),
        ("PUT", ABSOLUTE, b"{not json", None, "deserialize"),
        (
            "PUT",
            ABSOLUTE,
            {"items": [GOOD_ITEM]},
            {"Content-Type": None},
            "missing required header Content-Type",
        ),
        (
            "PUT",
            ABSOLUTE,
            {"items": [GOOD_ITEM]},
            {"Accept": None},
            "missing required header Accept",
        ),
        ("PUT", ABSOLUTE, {"items": [GOOD_ITEM]}, {"X-Auth-Token": None}, "X-Auth-Token"),
        ("GET", "/inventory/items?limit=abc", None, None, "limit"),
        ("GET", "/inventory/items?variant_id:in=1,x", None, None, "variant_id:in"),
        ("GET", "/catalog/products?limit=251", None, None, "maximum of 250"),
        ("GET", "/catalog/products?include=varients", None, None, "include"),
        ("GET", "/inventory/locations?is_default=maybe", None, None, "is_default"),
        ("POST", ABSOLUTE, {"items": [GOOD_ITEM]}, None, "has no POST"),
        ("GET", "/catalog/brandz", None, None, "no path"),
    ],
)
def test_validator_rejects_off_spec_requests(
    validator: RequestValidator,
    method: str,
    path: str,
    body: Any,
    headers: Mapping[str, str | None] | None,
    expected: str,
) -> None:
    merged = {**JSON_HEADERS, "X-Auth-Token": "t", **(headers or {})}
    sent = {k: v for k, v in merged.items() if v is not None}
    raw = (
        body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    )
    with pytest.raises(SpecViolation, match=r"\.yml") as caught:
        validator(method, spec_url(path), sent, raw)
    assert expected in str(caught.value)


def test_response_checker_rejects_a_wrong_shape(checker: ResponseChecker) -> None:
    bad = json.dumps({"data": [{"id": "not-an-int", "name": 5}]}).encode()
    headers = {"Content-Type": "application/json"}
    with pytest.raises(SpecViolation, match=r"products_catalog\.v3\.yml"):
        checker("GET", spec_url("/catalog/products"), JSON_HEADERS, 200, headers, bad)


async def test_off_spec_request_is_answered_400_and_recorded(
    api: Client, sim: BigCommerceSim, store: SimStore, catalog: Catalog
) -> None:
    reply = await api.adjust(
        [{"location_id": 1, "quantity": "9", "product_id": catalog.simple}], check=False
    )
    assert reply.status == 400
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert "inventory.v3.yml" in reply.json["title"]
    assert sim.spec_violations == [reply.json["title"]]
    assert store.level("SIMPLE-1") == 5 and store.adjustments == []
    assert store.request_log[-1].status == 400
    sim.spec_violations.clear()


# --------------------------------------------------------------------------- catalogue reads


async def test_products_paging_with_variants(
    api: Client, store: SimStore, catalog: Catalog
) -> None:
    extra = [store.add_product(f"P{i}", f"P-{i}", inventory_level=i) for i in range(4)]
    seen: list[dict[str, Any]] = []
    for page in (1, 2, 3):
        reply = await api.get(
            "/catalog/products", {"include": "variants", "limit": "3", "page": str(page)}
        )
        assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
        pagination = reply.json["meta"]["pagination"]
        assert (pagination["total"], pagination["total_pages"], pagination["per_page"]) == (7, 3, 3)
        assert pagination["current_page"] == page and pagination["count"] == len(reply.json["data"])
        assert ("previous" in pagination["links"]) == (page > 1)
        assert ("next" in pagination["links"]) == (page < 3)
        seen += reply.json["data"]
    assert pagination["links"]["current"] == "?include=variants&page=3&limit=3"
    assert [p["id"] for p in seen] == [catalog.simple, catalog.shirt, catalog.gift, *extra]
    simple, shirt, gift = seen[0], seen[1], seen[2]
    assert simple["base_variant_id"] == catalog.simple_base
    assert len(simple["variants"]) == 1
    base = simple["variants"][0]
    assert (base["id"], base["sku"], base["sku_id"], base["option_values"]) == (
        catalog.simple_base,
        "SIMPLE-1",
        None,
        [],
    )
    assert (simple["inventory_tracking"], simple["inventory_level"]) == ("product", 5)
    assert shirt["base_variant_id"] is None and shirt["inventory_level"] == 6
    assert [v["sku"] for v in shirt["variants"]] == ["SHIRT-S", "SHIRT-M"]
    assert all(v["option_values"] and isinstance(v["sku_id"], int) for v in shirt["variants"])
    assert (gift["inventory_tracking"], gift["inventory_level"]) == ("none", 0)
    plain = await api.get("/catalog/products", {"limit": "1"})
    assert "variants" not in plain.json["data"][0]


async def test_product_filters(api: Client, catalog: Catalog) -> None:
    async def ids(params: Mapping[str, str]) -> list[int]:
        return [p["id"] for p in (await api.get("/catalog/products", params)).json["data"]]

    assert await ids({"sku": "SIMPLE-1"}) == [catalog.simple]
    assert await ids({"sku": "simple-1"}) == [
        catalog.simple
    ]  # BigCommerce SKUs are case-insensitive
    assert await ids({"sku": "SHIRT-S"}) == []  # products filter on the main SKU only
    assert await ids({"sku:in": "GIFT,SHIRT,NOPE"}) == [catalog.shirt, catalog.gift]
    assert await ids({"id:in": f"{catalog.gift},{catalog.simple}"}) == [
        catalog.simple,
        catalog.gift,
    ]
    assert await ids({"inventory_tracking": "variant"}) == [catalog.shirt]
    assert await ids({"date_modified:min": "2000-01-01T00:00:00Z"}) == [
        catalog.simple,
        catalog.shirt,
        catalog.gift,
    ]
    assert await ids({"date_modified:min": "2999-01-01T00:00:00Z"}) == []
    fields = await api.get(
        "/catalog/products", {"include_fields": "sku,inventory_level", "include": "variants"}
    )
    assert set(fields.json["data"][0]) == {"id", "sku", "inventory_level", "variants"}


async def test_variants_endpoint(api: Client, store: SimStore, catalog: Catalog) -> None:
    async def skus(params: Mapping[str, str]) -> list[str]:
        return [v["sku"] for v in (await api.get("/catalog/variants", params)).json["data"]]

    # simple products show their base variant; a product with options hides its base
    assert await skus({}) == ["SIMPLE-1", "SHIRT-S", "SHIRT-M", "GIFT"]
    assert await skus({"sku": "shirt-m"}) == ["SHIRT-M"]
    assert await skus({"sku:in": "SHIRT-S,SIMPLE-1,SHIRT"}) == ["SIMPLE-1", "SHIRT-S"]
    assert await skus({"product_id:in": str(catalog.shirt)}) == ["SHIRT-S", "SHIRT-M"]
    assert await skus({"id:in": f"{catalog.shirt_m},{catalog.simple_base}"}) == [
        "SIMPLE-1",
        "SHIRT-M",
    ]
    reply = await api.get(
        "/catalog/variants", {"sku": "SHIRT-S", "include_fields": "sku,inventory_level"}
    )
    assert reply.json["data"] == [{"id": catalog.shirt_s, "sku": "SHIRT-S", "inventory_level": 3}]
    capped = await api.get("/catalog/variants", {"limit": "900"})
    assert capped.json["meta"]["pagination"]["per_page"] == 250


async def test_tracking_modes(store: SimStore, catalog: Catalog) -> None:
    assert store.items_for_sku("SIMPLE-1") == [("product", catalog.simple)]
    assert store.items_for_sku("SHIRT-S") == [("variant", catalog.shirt_s)]
    assert store.items_for_sku("SHIRT") == []  # base SKU of a variant-tracked product
    assert store.items_for_sku("GIFT") == [] and store.level("GIFT") is None
    assert store.items_for_sku("simple-1") == [] and store.level("simple-1") is None
    assert store.level("SIMPLE-1") == 5 and store.level("SIMPLE-1", 2) == 0
    assert store.level_of("variant", catalog.simple_base) is None
    assert store.level_of("product", catalog.shirt) is None
    store.set_level("variant", catalog.shirt_m, 2, 11)
    assert store.level_of("variant", catalog.shirt_m, 2) == 11
    with pytest.raises(KeyError):
        store.set_level("product", catalog.gift, 1, 1)
    with pytest.raises(KeyError):
        store.set_level("product", catalog.simple, 99, 1)
    with pytest.raises(ValueError):
        store.set_level("product", catalog.simple, 1, -1)


async def test_catalogue_edits(api: Client, store: SimStore, catalog: Catalog) -> None:
    red = store.add_variant(catalog.simple, "SIMPLE-1-RED")
    # still tracked by product, but the base variant is hidden now
    assert store.items_for_sku("SIMPLE-1") == [("product", catalog.simple)]
    product = (
        await api.get("/catalog/products", {"id:in": str(catalog.simple), "include": "variants"})
    ).json["data"][0]
    assert product["base_variant_id"] is None and [v["id"] for v in product["variants"]] == [red]
    store.set_sku(variant_id=catalog.shirt_s, sku="SHIRT-SMALL")
    assert store.items_for_sku("SHIRT-S") == [] and store.level("SHIRT-SMALL") == 3
    store.set_sku(product_id=catalog.simple, sku="MUG")
    assert store.items_for_sku("MUG") == [("product", catalog.simple)]
    store.delete_product(catalog.shirt)
    assert store.items_for_sku("SHIRT-M") == [] and store.level("SHIRT-M") is None
    variants = (await api.get("/catalog/variants")).json["data"]
    assert [v["sku"] for v in variants] == ["GIFT", "SIMPLE-1-RED"]  # by id
    with pytest.raises(ValueError):
        store.set_sku(product_id=catalog.simple, variant_id=red, sku="X")
    with pytest.raises(ValueError):
        store.add_product("Bad", "BAD", tracking="bin")


# --------------------------------------------------------------------------- inventory reads


async def test_inventory_items(api: Client, store: SimStore, catalog: Catalog) -> None:
    store.set_level("product", catalog.simple, 2, 8)
    reply = await api.get("/inventory/items", {"sku:in": "SIMPLE-1,SHIRT-S,GIFT"})
    items = reply.json["data"]
    assert [i["identity"] for i in items] == [
        {
            "sku": "SIMPLE-1",
            "variant_id": catalog.simple_base,
            "product_id": catalog.simple,
            "sku_id": None,
        },
        {
            "sku": "SHIRT-S",
            "variant_id": catalog.shirt_s,
            "product_id": catalog.shirt,
            "sku_id": items[1]["identity"]["sku_id"],
        },
    ]
    first = {loc["location_id"]: loc for loc in items[0]["locations"]}
    assert first[1]["total_inventory_onhand"] == 5 and first[2]["available_to_sell"] == 8
    assert first[2] == {
        "location_id": 2,
        "location_code": "WH2",
        "location_name": "Warehouse 2",
        "available_to_sell": 8,
        "total_inventory_onhand": 8,
        "location_enabled": True,
        "settings": {
            "safety_stock": 0,
            "is_in_stock": True,
            "warning_level": 0,
            "bin_picking_number": "",
        },
    }
    assert first[3]["location_enabled"] is False
    by_variant = await api.get(
        "/inventory/items", {"variant_id:in": f"{catalog.shirt_m},{catalog.simple_base}"}
    )
    assert [i["identity"]["sku"] for i in by_variant.json["data"]] == ["SIMPLE-1", "SHIRT-M"]
    by_product = await api.get(
        "/inventory/items", {"product_id:in": str(catalog.shirt), "location_id:in": "2"}
    )
    assert [[loc["location_id"] for loc in i["locations"]] for i in by_product.json["data"]] == [
        [2],
        [2],
    ]
    everything = await api.get("/inventory/items", {"limit": "5000"})
    assert everything.json["meta"]["pagination"]["per_page"] == 1000
    assert (
        everything.json["meta"]["pagination"]["total"] == 3
    )  # the untracked gift card is not an item


async def test_locations(api: Client) -> None:
    async def ids(params: Mapping[str, str] | None = None) -> list[int]:
        return [loc["id"] for loc in (await api.get("/inventory/locations", params)).json["data"]]

    assert await ids() == [1, 2, 3]
    assert await ids({"is_default": "true"}) == [1]
    assert await ids({"is_active": "false"}) == [3]
    assert await ids({"location_id:in": "1,3"}) == [1, 3]
    assert await ids({"location_code:in": "WH2"}) == [2]
    location = (await api.get("/inventory/locations", {"location_id:in": "2"})).json["data"][0]
    assert {k: location[k] for k in ("id", "code", "label", "enabled", "type_id")} == {
        "id": 2,
        "code": "WH2",
        "label": "Warehouse 2",
        "enabled": True,
        "type_id": "PHYSICAL",
    }
    assert {
        "managed_by_external_source",
        "address",
        "operating_hours",
        "storefront_visibility",
    } <= set(location)


# --------------------------------------------------------------------------- absolute adjustments


async def test_absolute_adjustment_applies_every_item(
    api: Client, store: SimStore, catalog: Catalog
) -> None:
    reply = await api.adjust(
        [
            {"location_id": 1, "quantity": 7, "product_id": catalog.simple},
            {"location_id": 2, "quantity": 4, "variant_id": catalog.shirt_s},
            {"location_id": 1, "quantity": 9, "sku": "SHIRT-M"},
            {"location_id": 1, "quantity": MAX_QUANTITY, "sku": "SIMPLE-1"},
        ]
    )
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
    transaction_id = reply.json["transaction_id"]
    assert uuid.UUID(transaction_id).version == 4
    assert store.level("SIMPLE-1") == MAX_QUANTITY
    assert store.level_of("variant", catalog.shirt_s, 2) == 4 and store.level("SHIRT-S") == 3
    assert store.level("SHIRT-M") == 9
    assert store.adjustments == [
        {
            "reason": "test",
            "items": store.request_log[-1].body["items"],
            "transaction_id": transaction_id,
        }
    ]
    shirt = (await api.get("/catalog/products", {"id:in": str(catalog.shirt)})).json["data"][0]
    assert shirt["inventory_level"] == 3 + 9  # the catalogue shows location 1 only


def _bad_items(catalog: Catalog) -> dict[str, tuple[dict[str, Any], str]]:
    """Name -> (bad item, expected 422 title fragment)."""
    return {
        "unknown location": (
            {"location_id": 99, "quantity": 1, "product_id": catalog.simple},
            "Location not found, identities: [99]",
        ),
        "disabled location": (
            {"location_id": 3, "quantity": 1, "product_id": catalog.simple},
            "Location not found, identities: [3]",
        ),
        "variant of product-tracked": (
            {"location_id": 1, "quantity": 1, "variant_id": catalog.simple_base},
            f"[Item with variant_id {catalog.simple_base} is tracked by product, "
            "please update stock by product id]",
        ),
        "product of variant-tracked": (
            {"location_id": 1, "quantity": 1, "product_id": catalog.shirt},
            f"[Item with product_id {catalog.shirt} is tracked by variant",
        ),
        "untracked product": (
            {"location_id": 1, "quantity": 1, "product_id": catalog.gift},
            "is not tracked",
        ),
        "untracked sku": (
            {"location_id": 1, "quantity": 1, "sku": "GIFT"},
            "[Item with sku GIFT is not tracked",
        ),
        "hidden base variant": (
            {"location_id": 1, "quantity": 1, "variant_id": catalog.shirt_base},
            f"Invalid items, identities: [variant_id {catalog.shirt_base}]",
        ),
        "unknown variant": (
            {"location_id": 1, "quantity": 1, "variant_id": 424242},
            "Invalid items, identities: [variant_id 424242]",
        ),
        "unknown sku": (
            {"location_id": 1, "quantity": 1, "sku": "NOPE"},
            "Invalid items, identities: [sku NOPE]",
        ),
        "rejected sku": (
            {"location_id": 1, "quantity": 1, "variant_id": catalog.shirt_m},
            f"Invalid items, identities: [variant_id {catalog.shirt_m}]",
        ),
        "over the limit": (
            {"location_id": 1, "quantity": MAX_QUANTITY + 1, "sku": "SHIRT-S"},
            "Payload contains invalid fields",
        ),
        "negative": (
            {"location_id": 1, "quantity": -1, "sku": "SHIRT-S"},
            "Payload contains invalid fields",
        ),
    }


BAD_CASES = list(_bad_items(Catalog(0, 0, 0, 0, 0, 0, 0)))


@pytest.mark.parametrize("case", BAD_CASES)
async def test_absolute_adjustment_rejects_the_whole_request(
    api: Client, store: SimStore, catalog: Catalog, case: str
) -> None:
    store.reject_skus({"SHIRT-M"})
    bad, title = _bad_items(catalog)[case]
    reply = await api.adjust(
        [{"location_id": 1, "quantity": 50, "product_id": catalog.simple}, bad]
    )
    assert reply.status == 422, reply.body
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert "X-Rate-Limit-Requests-Left" in reply.headers
    body = reply.json
    assert title in body["title"]
    assert (
        body["status"] == 422
        and body["type"].startswith("https://")
        and isinstance(body["errors"], dict)
    )
    assert store.level("SIMPLE-1") == 5 and store.adjustments == []


async def test_rejection_names_every_bad_identity(
    api: Client, store: SimStore, catalog: Catalog
) -> None:
    reply = await api.adjust(
        [
            {"location_id": 1, "quantity": 1, "variant_id": 1},
            {"location_id": 1, "quantity": 1, "sku": "SHIRT-M"},
            {"location_id": 1, "quantity": 1, "product_id": 2},
        ]
    )
    assert reply.json["title"] == "Invalid items, identities: [variant_id 1, product_id 2]"
    store.reject_skus(["SHIRT-M"])
    reply = await api.adjust([{"location_id": 1, "quantity": 1, "sku": "SHIRT-M"}])
    assert reply.json["title"] == "Invalid items, identities: [sku SHIRT-M]"
    store.reject_skus([])
    assert (await api.adjust([{"location_id": 1, "quantity": 1, "sku": "SHIRT-M"}])).status == 200


async def test_adjustment_item_limit(api: Client, store: SimStore) -> None:
    products = [store.add_product(f"P{i}", f"P-{i}") for i in range(1000)]
    items = [
        {"location_id": loc, "quantity": 2, "product_id": pid} for pid in products for loc in (1, 2)
    ]
    assert (await api.adjust(items)).status == 200
    assert store.level("P-999", 2) == 2
    too_many = [*items, {"location_id": 1, "quantity": 3, "product_id": products[0]}]
    too_many[0] = {**too_many[0], "quantity": 5}
    reply = await api.adjust(too_many)
    assert reply.status == 413 and "2000" in reply.json["title"]
    assert store.level("P-0") == 2 and len(store.adjustments) == 1


# --------------------------------------------------------------------------- rate limits and faults


async def test_rate_limit_headers_and_429(
    sim: BigCommerceSim, session: aiohttp.ClientSession, checker: ResponseChecker, clock: FakeClock
) -> None:
    small = sim.add_store("small", "tok", quota=5, window_ms=1000)
    api = Client(session, sim, checker, "small", "tok")
    for n in range(5):
        reply = await api.get("/inventory/locations")
        assert reply.status == 200
        assert reply.headers["X-Rate-Limit-Requests-Left"] == str(4 - n)
        assert reply.headers["X-Rate-Limit-Requests-Quota"] == "5"
        assert reply.headers["X-Rate-Limit-Time-Window-Ms"] == "1000"
        assert reply.headers["X-Rate-Limit-Time-Reset-Ms"] == str(1000 - 125 * n)
        clock.now += 0.125
    limited = await api.get("/inventory/locations")
    assert limited.status == 429 and limited.headers["Content-Type"] == "application/problem+json"
    assert limited.json["status"] == 429
    assert limited.headers["X-Rate-Limit-Requests-Left"] == "0"
    assert limited.headers["X-Rate-Limit-Time-Reset-Ms"] == "375"
    assert limited.headers["X-Retry-After"] == "1"
    assert [r.status for r in small.request_log] == [200] * 5 + [429]
    clock.now += 0.375
    fresh = await api.get("/catalog/products")
    assert fresh.status == 200 and fresh.headers["X-Rate-Limit-Requests-Left"] == "4"
    small.quota = 10
    raised = await api.get("/catalog/products")
    assert (
        raised.headers["X-Rate-Limit-Requests-Quota"],
        raised.headers["X-Rate-Limit-Requests-Left"],
    ) == ("10", "8")


async def test_fail_next_is_scoped_to_a_path(
    api: Client, store: SimStore, catalog: Catalog
) -> None:
    store.fail_next(2, 500, path_prefix="/inventory/adjustments")
    assert (await api.get("/catalog/products")).status == 200
    item = {"location_id": 1, "quantity": 8, "product_id": catalog.simple}
    for _ in range(2):
        failed = await api.adjust([item])
        assert failed.status == 500 and failed.json["status"] == 500
        assert "X-Rate-Limit-Requests-Left" in failed.headers
        assert store.level("SIMPLE-1") == 5
    assert (await api.adjust([item])).status == 200
    assert store.level("SIMPLE-1") == 8 and len(store.adjustments) == 1


async def test_fault_429_with_and_without_rate_headers(api: Client, store: SimStore) -> None:
    store.fail_next(1, 429)
    store.fail_next(1, 429, with_rate_headers=False)
    with_headers = await api.get("/inventory/items")
    assert with_headers.status == 429
    assert (
        with_headers.headers["X-Rate-Limit-Requests-Left"] == "0"
        and "X-Retry-After" in with_headers.headers
    )
    bare = await api.get("/inventory/items")
    assert bare.status == 429
    assert not any(h.lower().startswith(("x-rate-limit", "x-retry")) for h in bare.headers)
    assert (await api.get("/inventory/items")).status == 200


async def test_garbage_next(api: Client, store: SimStore) -> None:
    store.garbage_next(1, path_prefix="/catalog")
    assert (await api.get("/inventory/locations")).status == 200
    garbage = await api.get("/catalog/variants", check=False)
    assert garbage.status == 200
    with pytest.raises(ValueError):
        json.loads(garbage.body)
    assert (await api.get("/catalog/variants")).status == 200


async def test_auth_and_unknown_stores(api: Client, sim: BigCommerceSim, store: SimStore) -> None:
    api.token = "wrong"
    denied = await api.get("/catalog/products")
    assert denied.status == 401 and denied.json["status"] == 401
    assert store.request_log[-1].status == 401
    api.token, api.store_hash = TOKEN, "no-such-store"
    assert (await api.get("/catalog/products")).status == 404


async def test_unknown_routes_and_methods(
    api: Client, sim: BigCommerceSim, store: SimStore
) -> None:
    sim.request_validator = None  # these requests are off-spec on purpose
    assert (await api.get("/catalog/brands", check=False)).status == 404
    wrong_method = await api.request("DELETE", "/inventory/items", check=False)
    assert wrong_method.status == 405 and wrong_method.headers["Allow"] == "GET"
    async with api.session.get(f"{sim.base_url}/v2/products") as resp:
        assert resp.status == 404


async def test_max_concurrent_writes(
    api: Client, sim: BigCommerceSim, store: SimStore, catalog: Catalog
) -> None:
    store.latency = 0.05
    item = {"location_id": 1, "quantity": 1, "product_id": catalog.simple}
    await asyncio.gather(*(api.adjust([item]) for _ in range(3)))
    assert store.max_concurrent_writes == 3
    other = sim.add_store("calm", "tok")
    other.latency = 0.02
    pid = other.add_product("Mug", "MUG")
    calm = Client(api.session, sim, api.check, "calm", "tok")
    for _ in range(3):
        await calm.adjust([{"location_id": 1, "quantity": 2, "product_id": pid}])
    await asyncio.gather(*(calm.get("/catalog/products") for _ in range(3)))
    assert other.max_concurrent_writes == 1


async def test_duplicate_skus(api: Client, store: SimStore) -> None:
    first = store.add_product("Mug A", "DUP", inventory_level=1)
    second = store.add_product("Mug B", "DUP", inventory_level=2)
    shirt = store.add_product("Shirt", "SHIRT", tracking="variant", variant_skus=["DUP"])
    dup_variant = store.items_for_sku("DUP")[2][1]
    assert store.items_for_sku("DUP") == [
        ("product", first),
        ("product", second),
        ("variant", dup_variant),
    ]
    assert store.level("DUP") == 1
    listed = await api.get("/catalog/products", {"sku": "DUP"})
    assert [p["id"] for p in listed.json["data"]] == [first, second]
    await api.adjust(
        [{"location_id": 1, "quantity": 6, "sku": "DUP"}]
    )  # BigCommerce resolves one item
    assert [store.level_of(kind, ident) for kind, ident in store.items_for_sku("DUP")] == [6, 2, 0]
    store.allow_duplicate_skus = False
    with pytest.raises(ValueError):
        store.add_product("Mug C", "dup")
    with pytest.raises(ValueError):
        store.add_variant(shirt, "Dup")
    with pytest.raises(ValueError):
        store.set_sku(product_id=first, sku="SHIRT")
    store.set_sku(product_id=shirt, sku="SHIRT")  # its own SKU is not a duplicate


async def test_request_log_and_counts(
    api: Client, store: SimStore, catalog: Catalog, clock: FakeClock
) -> None:
    await api.get("/catalog/products", {"sku:in": "A,B"})
    await api.get("/catalog/variants")
    clock.now += 1
    await api.adjust([{"location_id": 1, "quantity": 1, "product_id": catalog.simple}])
    assert store.request_count() == 3
    assert store.request_count("/catalog") == 2
    assert store.request_count("/inventory/adjustments", "PUT") == 1
    assert store.request_count("", "put") == 1
    products, _, write = store.request_log
    assert (products.method, products.path, products.query, products.body) == (
        "GET",
        "/catalog/products",
        [("sku:in", "A,B")],
        None,
    )
    assert (write.status, write.at, write.body["items"][0]["quantity"]) == (200, 1001.0, 1)


async def test_stores_are_independent(api: Client, sim: BigCommerceSim, store: SimStore) -> None:
    other = sim.add_store("store-b", "token-b", quota=1)
    b = Client(api.session, sim, api.check, "store-b", "token-b")
    assert (await b.get("/catalog/products")).status == 200
    assert (await b.get("/catalog/products")).status == 429
    assert (await api.get("/catalog/products")).status == 200
    b.token = TOKEN
    assert (await b.get("/catalog/products")).status == 401
    assert sim.store("store-b") is other and len(store.request_log) == 1
    with pytest.raises(ValueError):
        sim.add_store("store-b", "again")
    with pytest.raises(KeyError):
        sim.store("store-c")
