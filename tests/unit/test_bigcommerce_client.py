"""BigCommerceClient against aioresponses: catalogue flattening, writes, faults, 422 isolation.

The store's limiter runs on a jumping clock (its sleeps return at once and move time forward),
so rate-limit waits cost no wall-clock time; retry backoff uses a tiny base.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import structlog
from yarl import URL

from katsyncd import __version__
from katsyncd.bigcommerce import (
    ABSOLUTE_PATH,
    ISOLATION_BUDGET,
    BcAuthError,
    BcError,
    BcRejected,
    BcStoreError,
    BigCommerceClient,
    flatten_product,
)
from katsyncd.metrics import Metrics
from katsyncd.models import AbsoluteItem, BcItem
from katsyncd.ratelimit import BcLimiter
from tests.support.bcspec import make_validator
from tests.support.clocks import FixedDraw, JumpClock
from tests.support.httpmock import HttpMock, reply

API = "http://bc.test"
STORE_HASH = "abc123"
TOKEN = "bc-token-fedcba9876543210"
ROOT = f"{API}/stores/{STORE_HASH}"

TRACKED_BY_PRODUCT = (
    "[Item with variant_id 106 is tracked by product, please update stock by product id]"
)
LOCATION_NOT_FOUND = "Location not found, identities: [3,2]"
NEEDS_ABSOLUTE = (
    "Items with identity: [product_id 113] requires absolute adjustment before relative"
)


def route(path: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(ROOT + path)}(\?.*)?$")


ABSOLUTE = route(ABSOLUTE_PATH)
PRODUCTS = route("/v3/catalog/products")
ITEMS = route("/v3/inventory/items")
LOCATIONS = route("/v3/inventory/locations")


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def failures(metrics: Metrics, reason: str) -> float:
    name = "katsyncd_bigcommerce_write_failures_total"
    return sample(metrics, name, store="main", reason=reason)


def item(n: int, location_id: int = 1, kind: str = "v") -> AbsoluteItem:
    return AbsoluteItem(f"{kind}:{n}", location_id, n % 7, f"SKU-{n}")


def problem(title: str, errors: dict[str, Any] | None = None, status: int = 422) -> dict[str, Any]:
    return {"status": status, "title": title, "type": "https://x", "errors": errors or {}}


def rate_headers(left: int, reset_ms: int) -> dict[str, str]:
    return {
        "X-Rate-Limit-Requests-Left": str(left),
        "X-Rate-Limit-Time-Reset-Ms": str(reset_ms),
        "X-Rate-Limit-Requests-Quota": "150",
        "X-Rate-Limit-Time-Window-Ms": "30000",
    }


def sent_keys(body: dict[str, Any]) -> set[str]:
    return {
        f"v:{i['variant_id']}" if "variant_id" in i else f"p:{i['product_id']}"
        for i in body["items"]
    }


class FakeStore:
    """An absolute-adjustment endpoint that rejects a batch holding any bad item."""

    def __init__(self, bad: set[str], title: Callable[[set[str]], str] | None = None) -> None:
        self.bad = bad
        self.title = title
        self.batches: list[int] = []

    def __call__(self, url: URL, **kwargs: Any) -> Any:
        body = kwargs["json"]
        self.batches.append(len(body["items"]))
        hit = sent_keys(body) & self.bad
        if hit:
            title = self.title(hit) if self.title else "Payload contains invalid fields"
            return reply(422, payload=problem(title))
        return reply(200, payload={"transaction_id": f"t{len(self.batches)}"})


@pytest.fixture
def clock() -> JumpClock:
    return JumpClock()


@pytest.fixture
def limiter(clock: JumpClock) -> BcLimiter:
    return BcLimiter(clock=clock, sleep=clock.sleep, rng=FixedDraw(0.0))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def client(
    session: aiohttp.ClientSession, limiter: BcLimiter, metrics: Metrics
) -> BigCommerceClient:
    return BigCommerceClient(
        session,
        API + "/",
        STORE_HASH,
        TOKEN,
        limiter,
        metrics,
        store_name="main",
        max_attempts=3,
        backoff_base=0.001,
        backoff_cap=0.005,
    )


# -- catalogue ----------------------------------------------------------------------------------


def test_flatten_product_tracked_by_product() -> None:
    product = {
        "id": 5,
        "sku": "MUG",
        "inventory_tracking": "product",
        "base_variant_id": 50,
        "variants": [{"id": 50, "sku": "MUG", "product_id": 5}],
    }
    assert flatten_product(product) == [BcItem("MUG", 5, None, "product")]
    assert flatten_product({**product, "sku": ""}) == []


def test_flatten_product_tracked_by_variant_skips_empty_skus() -> None:
    product = {
        "id": 6,
        "sku": "TEE",
        "inventory_tracking": "variant",
        "base_variant_id": None,
        "variants": [
            {"id": 61, "sku": "TEE-S", "product_id": 6},
            {"id": 62, "sku": "", "product_id": 6},
            {"id": 63, "sku": None, "product_id": 6},
            {"id": 64, "sku": "tee-m", "product_id": 6},
        ],
    }
    assert flatten_product(product) == [
        BcItem("TEE-S", 6, 61, "variant"),
        BcItem("tee-m", 6, 64, "variant"),
    ]


def test_flatten_untracked_product_reports_each_distinct_sku() -> None:
    product = {
        "id": 7,
        "sku": "CAP",
        "inventory_tracking": "none",
        "variants": [{"id": 70, "sku": "CAP"}, {"id": 71, "sku": "CAP-RED"}],
    }
    assert flatten_product(product) == [
        BcItem("CAP", 7, None, "none"),
        BcItem("CAP-RED", 7, 71, "none"),
    ]


def test_flatten_skips_malformed_or_unknown_products() -> None:
    assert flatten_product({"sku": "X", "inventory_tracking": "product"}) == []
    assert flatten_product({"id": 1, "sku": "X", "inventory_tracking": "weird"}) == []


async def test_catalog_items_pages_with_small_responses(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    page1 = {
        "data": [{"id": 1, "sku": "A", "inventory_tracking": "product", "variants": []}],
        "meta": {"pagination": {"current_page": 1, "total_pages": 2}},
    }
    page2 = {
        "data": [
            {
                "id": 2,
                "sku": "B",
                "inventory_tracking": "variant",
                "variants": [{"id": 20, "sku": "B-1", "product_id": 2}],
            }
        ],
        "meta": {"pagination": {"current_page": 2, "total_pages": 2}},
    }
    mocked.get(PRODUCTS, payload=page1)
    mocked.get(PRODUCTS, payload=page2)
    pages = [page async for page in client.catalog_items()]
    assert pages == [[BcItem("A", 1, None, "product")], [BcItem("B-1", 2, 20, "variant")]]
    urls = [url for _, url, _ in mocked.sent()]
    assert [u.query["page"] for u in urls] == ["1", "2"]
    for u in urls:
        assert u.query["include"] == "variants"
        assert u.query["limit"] == "250"
        assert set(u.query["include_fields"].split(",")) == {
            "sku",
            "inventory_tracking",
            "base_variant_id",
        }


async def test_locations_are_paged(client: BigCommerceClient, mocked: HttpMock) -> None:
    mocked.get(LOCATIONS, payload={"data": [{"id": 1, "code": "BC-1"}], "meta": {}})
    assert await client.locations() == [{"id": 1, "code": "BC-1"}]


async def test_inventory_levels_by_variant_and_product(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    def row(ident: dict[str, int], onhand: int, location_id: int = 2) -> dict[str, Any]:
        place = {"location_id": location_id, "total_inventory_onhand": onhand}
        return {"identity": ident, "locations": [place]}

    variants = {
        "data": [
            row({"variant_id": 61, "product_id": 6}, 4),
            row({"variant_id": 64, "product_id": 6}, 9, location_id=1),  # another location
            row({"variant_id": 99, "product_id": 9}, 1),  # not asked for
        ],
        "meta": {"pagination": {"current_page": 1, "total_pages": 1}},
    }
    products = {"data": [row({"product_id": 5, "variant_id": 50}, 12)]}
    mocked.get(
        ITEMS, callback=lambda url, **kw: reply(payload=_pick(url, variants, products)), repeat=True
    )
    levels = await client.inventory_levels(
        [
            BcItem("TEE-S", 6, 61, "variant"),
            BcItem("TEE-M", 6, 64, "variant"),
            BcItem("MUG", 5, None, "product"),
            BcItem("CAP", 7, None, "none"),
        ],
        location_id=2,
    )
    assert levels == {"v:61": 4, "p:5": 12}
    queries = [dict(url.query) for _, url, _ in mocked.sent()]
    assert len(queries) == 2
    by_variant = next(q for q in queries if "variant_id:in" in q)
    by_product = next(q for q in queries if "product_id:in" in q)
    assert {"variant_id:in": "61,64", "location_id:in": "2"}.items() <= by_variant.items()
    assert {"product_id:in": "5", "location_id:in": "2"}.items() <= by_product.items()


def _pick(url: URL, variants: dict[str, Any], products: dict[str, Any]) -> dict[str, Any]:
    return variants if "variant_id:in" in url.query else products


# -- set_absolute -------------------------------------------------------------------------------


async def test_set_absolute_sends_one_put_with_headers_and_body(
    client: BigCommerceClient, metrics: Metrics, mocked: HttpMock
) -> None:
    mocked.put(ABSOLUTE, payload={"transaction_id": "tx-1"}, headers=rate_headers(100, 20_000))
    items = [item(1), AbsoluteItem("p:113", 2, 0)]
    assert await client.set_absolute(items, reason="katsyncd: test") == "tx-1"
    ((method, url, kwargs),) = mocked.sent()
    assert method == "PUT" and str(url) == ROOT + ABSOLUTE_PATH
    assert kwargs["headers"] == {
        "X-Auth-Token": TOKEN,
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": f"katsyncd/{__version__}",
    }
    assert kwargs["json"] == {
        "reason": "katsyncd: test",
        "items": [
            {"location_id": 1, "quantity": 1, "variant_id": 1},
            {"location_id": 2, "quantity": 0, "product_id": 113},
        ],
    }
    labels = {"store": "main", "endpoint": ABSOLUTE_PATH, "status": "200"}
    assert sample(metrics, "katsyncd_bigcommerce_requests_total", **labels) == 1
    assert TOKEN not in repr(client)


async def test_set_absolute_refuses_empty_and_oversized_batches(client: BigCommerceClient) -> None:
    with pytest.raises(ValueError):
        await client.set_absolute([], reason="r")
    with pytest.raises(ValueError):
        await client.set_absolute([item(i) for i in range(2001)], reason="r")


async def test_requests_validate_against_the_official_specs(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    validate = make_validator()
    mocked.put(ABSOLUTE, payload={"transaction_id": "tx"})
    mocked.get(PRODUCTS, payload={"data": []})
    mocked.get(LOCATIONS, payload={"data": []})
    mocked.get(ITEMS, payload={"data": []}, repeat=True)
    await client.set_absolute([item(1), AbsoluteItem("p:2", 1, 3)], reason="r")
    assert [p async for p in client.catalog_items()] == []
    await client.locations()
    await client.inventory_levels(
        [BcItem("A", 1, 10, "variant"), BcItem("B", 2, None, "product")], 1
    )
    assert len(mocked.sent()) == 5
    for method, url, kwargs in mocked.sent():
        body = json.dumps(kwargs["json"]).encode() if kwargs.get("json") is not None else b""
        validate(method, str(url), kwargs["headers"], body)


# -- rate limits --------------------------------------------------------------------------------


async def test_429_with_headers_waits_the_longer_of_reset_and_retry_after(
    client: BigCommerceClient,
    limiter: BcLimiter,
    clock: JumpClock,
    metrics: Metrics,
    mocked: HttpMock,
) -> None:
    limited = {**rate_headers(0, 1500), "X-Retry-After": "1"}
    mocked.put(ABSOLUTE, status=429, headers=limited, payload=problem("Too many", status=429))
    mocked.put(ABSOLUTE, payload={"transaction_id": "tx"}, headers=rate_headers(149, 30_000))
    assert await client.set_absolute([item(1)], reason="r") == "tx"
    assert clock.now == pytest.approx(1.5)
    assert sample(metrics, "katsyncd_bigcommerce_rate_limit_wait_seconds_total", store="main") == (
        pytest.approx(1.5)
    )
    assert (
        sample(
            metrics,
            "katsyncd_bigcommerce_write_failures_total",
            store="main",
            reason="rate_limited",
        )
        == 1
    )
    assert limiter.snapshot()["consecutive_429"] == 0


async def test_429_without_headers_backs_off_from_one_second(
    client: BigCommerceClient, clock: JumpClock, mocked: HttpMock
) -> None:
    mocked.put(ABSOLUTE, status=429)
    mocked.put(ABSOLUTE, status=429)
    mocked.put(ABSOLUTE, payload={"transaction_id": "tx"})
    await client.set_absolute([item(1)], reason="r")
    assert clock.now == pytest.approx(1.0 + 2.0)


async def test_consecutive_429s_do_not_count_as_attempts_but_are_capped(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    mocked.put(ABSOLUTE, status=429, headers=rate_headers(0, 10), repeat=True)
    with pytest.raises(BcError) as caught:
        await client.set_absolute([item(1)], reason="r")
    assert caught.value.status == 429
    assert len(mocked.sent()) == 20  # far more than max_attempts (3)


async def test_requests_left_at_the_floor_delays_the_next_request(
    client: BigCommerceClient, clock: JumpClock, mocked: HttpMock
) -> None:
    mocked.put(ABSOLUTE, payload={"transaction_id": "a"}, headers=rate_headers(1, 4000))
    mocked.put(ABSOLUTE, payload={"transaction_id": "b"}, headers=rate_headers(149, 30_000))
    await client.set_absolute([item(1)], reason="r")
    assert clock.now == 0.0
    await client.set_absolute([item(1)], reason="r")
    assert clock.now == pytest.approx(4.0)


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"status": 500}, "server_error"),
        ({"status": 502}, "server_error"),
        ({"status": 503, "body": "<html>maintenance</html>"}, "server_error"),
        ({"status": 504}, "server_error"),
        ({"status": 200, "body": "not json"}, "server_error"),
        ({"status": 200, "payload": {"data": []}}, "server_error"),
        ({"exception": TimeoutError()}, "timeout"),
        ({"exception": aiohttp.ClientConnectionError("reset")}, "server_error"),
    ],
    ids=["500", "502", "503", "504", "garbage", "no-transaction-id", "timeout", "connection"],
)
async def test_transient_write_faults_are_retried(
    client: BigCommerceClient,
    metrics: Metrics,
    mocked: HttpMock,
    fault: dict[str, Any],
    reason: str,
) -> None:
    mocked.put(ABSOLUTE, **fault)
    mocked.put(ABSOLUTE, payload={"transaction_id": "tx"})
    assert await client.set_absolute([item(1)], reason="r") == "tx"
    assert len(mocked.sent()) == 2
    assert failures(metrics, reason) == 1


async def test_persistent_5xx_gives_up_after_max_attempts(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    mocked.put(ABSOLUTE, status=503, repeat=True)
    with pytest.raises(BcError) as caught:
        await client.set_absolute([item(1)], reason="r")
    assert caught.value.status == 503 and caught.value.store == "main"
    assert len(mocked.sent()) == 3


@pytest.mark.parametrize("status", [501, 505, 507])
async def test_unretryable_5xx_fail_at_once(
    client: BigCommerceClient, mocked: HttpMock, status: int
) -> None:
    mocked.put(ABSOLUTE, status=status, repeat=True)
    with pytest.raises(BcError) as caught:
        await client.set_absolute([item(1)], reason="r")
    assert caught.value.status == status
    assert len(mocked.sent()) == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failures_are_never_retried(
    client: BigCommerceClient, metrics: Metrics, mocked: HttpMock, status: int
) -> None:
    mocked.put(ABSOLUTE, status=status, payload=problem("Unauthorized", status=status))
    with pytest.raises(BcAuthError) as caught:
        await client.set_absolute([item(1)], reason="r")
    assert caught.value.status == status
    assert len(mocked.sent()) == 1
    assert failures(metrics, "auth") == 1


async def test_a_422_on_a_write_is_a_rejection(
    client: BigCommerceClient, metrics: Metrics, mocked: HttpMock
) -> None:
    mocked.put(ABSOLUTE, status=422, payload=problem("Nope", status=422))
    with pytest.raises(BcRejected) as caught:
        await client.set_absolute([item(1)], reason="r")
    assert caught.value.status == 422 and caught.value.title == "Nope"
    assert len(mocked.sent()) == 1
    assert failures(metrics, "rejected") == 1


@pytest.mark.parametrize(
    ("status", "kind"), [(400, "request"), (404, "not_found"), (409, "request"), (413, "request")]
)
async def test_other_4xx_on_a_write_are_store_errors_not_rejections(
    client: BigCommerceClient, metrics: Metrics, mocked: HttpMock, status: int, kind: str
) -> None:
    mocked.put(ABSOLUTE, status=status, payload=problem("Nope", status=status), repeat=True)
    with pytest.raises(BcStoreError) as caught:
        await client.write_isolating([item(n) for n in range(2000)], reason="r")
    assert not isinstance(caught.value, BcRejected)
    assert caught.value.status == status and caught.value.title == "Nope"
    assert caught.value.kind == kind and caught.value.hint
    assert len(mocked.sent()) == 1  # no bisection, no retry
    assert failures(metrics, "request") == 1 and failures(metrics, "rejected") == 0


@pytest.mark.parametrize("title", ["Location not found", "Location not found, identities: [1]"])
async def test_a_location_not_found_for_the_whole_batch_is_a_store_error(
    client: BigCommerceClient, metrics: Metrics, mocked: HttpMock, title: str
) -> None:
    mocked.put(ABSOLUTE, status=422, payload=problem(title), repeat=True)
    with pytest.raises(BcStoreError) as caught:
        await client.write_isolating([item(n) for n in range(2000)], reason="r")
    assert caught.value.kind == "location"
    assert len(mocked.sent()) == 1
    assert failures(metrics, "location") == 1


async def test_isolating_anonymous_422s_is_bounded_and_always_makes_progress(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    bad = {f"v:{n}" for n in range(0, 2000, 50)}  # 40 bad items, 422s name none
    store = FakeStore(bad)
    mocked.put(ABSOLUTE, callback=store, repeat=True)
    left = [item(n) for n in range(2000)]
    rejected: set[str] = set()
    pushes = 0
    while left:
        before = len(store.batches)
        outcome = await client.write_isolating(left, reason="r")
        pushes += 1
        assert len(store.batches) - before <= 1 + ISOLATION_BUDGET
        assert len(outcome.unresolved) < len(left)  # every push pins or writes something
        assert not {i.item_key for i in outcome.written} & bad
        rejected |= {i.item_key for i, _ in outcome.rejected}
        left = outcome.unresolved
    assert rejected == bad
    assert pushes > 1  # the budget did cut the first push short


async def test_a_404_on_a_read_is_a_plain_error(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    mocked.get(LOCATIONS, status=404, payload=problem("Not found", status=404))
    with pytest.raises(BcError) as caught:
        await client.locations()
    assert not isinstance(caught.value, BcRejected)


async def test_logs_never_contain_the_token(client: BigCommerceClient, mocked: HttpMock) -> None:
    mocked.put(ABSOLUTE, status=502)
    mocked.put(ABSOLUTE, status=429)
    mocked.put(ABSOLUTE, payload={"transaction_id": "tx"})
    with structlog.testing.capture_logs() as logs:
        await client.set_absolute([item(1)], reason="r")
    assert {entry["event"] for entry in logs} == {
        "bigcommerce_retry",
        "bigcommerce_rate_limited",
        "bigcommerce_rate_limit_headers_missing",  # the mocked answers carry none
    }
    assert TOKEN not in repr(logs)


# -- parsing rejections -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "errors", "identities", "locations", "indexes"),
    [
        (TRACKED_BY_PRODUCT, {}, {"v:106"}, set(), set()),
        (LOCATION_NOT_FOUND, {}, set(), {2, 3}, set()),
        (NEEDS_ABSOLUTE, {}, {"p:113"}, set(), set()),
        (
            "Invalid items, identities: [variant_id 5, product_id 7]",
            {},
            {"v:5", "p:7"},
            set(),
            set(),
        ),
        ("variant_ids: [1, 2]", {}, {"v:1", "v:2"}, set(), set()),
        (
            "Payload contains invalid fields",
            {"items.3.quantity": "quantity must be between 0 and 2147483647", "items[0]": "x"},
            set(),
            set(),
            {0, 3},
        ),
        ("Something went wrong", {"reason": "too long"}, set(), set(), set()),
        ("", {"detail": "Item with product_id 9 is not tracked"}, {"p:9"}, set(), set()),
    ],
    ids=[
        "tracked-by-product",
        "location-not-found",
        "needs-absolute",
        "invalid-items",
        "plural-list",
        "indexed-errors",
        "nothing-named",
        "named-in-errors",
    ],
)
def test_rejection_parsing(
    title: str,
    errors: dict[str, Any],
    identities: set[str],
    locations: set[int],
    indexes: set[int],
) -> None:
    rejected = BcRejected("HTTP 422", status=422, title=title, store="main", errors=errors)
    assert rejected.bad_identities == identities
    assert rejected.bad_locations == locations
    assert rejected.bad_indexes == indexes
    assert rejected.errors == errors


async def test_a_422_body_becomes_a_parsed_rejection(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    mocked.put(ABSOLUTE, status=422, payload=problem(TRACKED_BY_PRODUCT))
    with pytest.raises(BcRejected) as caught:
        await client.set_absolute([item(106)], reason="r")
    assert caught.value.bad_identities == {"v:106"}
    assert caught.value.title == TRACKED_BY_PRODUCT


# -- write_isolating ----------------------------------------------------------------------------


async def test_isolating_drops_named_identities_and_resends_the_rest(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    store = FakeStore({"v:106"}, title=lambda _: TRACKED_BY_PRODUCT)
    mocked.put(ABSOLUTE, callback=store, repeat=True)
    items = [item(n) for n in (101, 106, 107, 108)] + [item(106, location_id=2)]
    outcome = await client.write_isolating(items, reason="r")
    assert store.batches == [5, 3]
    assert [i.item_key for i in outcome.written] == ["v:101", "v:107", "v:108"]
    assert outcome.rejected == [(items[1], TRACKED_BY_PRODUCT), (items[4], TRACKED_BY_PRODUCT)]
    assert outcome.transaction_ids == ["t2"]


async def test_isolating_drops_items_at_missing_locations_in_one_go(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    calls: list[set[int]] = []

    def store(url: URL, **kwargs: Any) -> Any:
        found = {i["location_id"] for i in kwargs["json"]["items"]}
        calls.append(found)
        if found & {2, 3}:
            return reply(422, payload=problem(LOCATION_NOT_FOUND))
        return reply(payload={"transaction_id": "ok"})

    mocked.put(ABSOLUTE, callback=store, repeat=True)
    items = [item(n, location_id=1 + n % 3) for n in range(30)]
    outcome = await client.write_isolating(items, reason="r")
    assert len(calls) == 2
    assert {i.location_id for i in outcome.written} == {1}
    assert len(outcome.written) == 10 and len(outcome.rejected) == 20


async def test_isolating_bisects_when_nothing_is_named(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    store = FakeStore({"v:5"})
    mocked.put(ABSOLUTE, callback=store, repeat=True)
    items = [item(n) for n in range(16)]
    outcome = await client.write_isolating(items, reason="r")
    assert outcome.rejected == [(items[5], "Payload contains invalid fields")]
    assert sorted(i.item_key for i in outcome.written) == sorted(
        i.item_key for i in items if i.item_key != "v:5"
    )
    assert len(store.batches) == 1 + 2 * int(math.log2(16))  # 16 → 8 → 4 → 2 → 1, both halves
    assert sum(store.batches[1:]) == 2 * 16 - 2  # each level resends the failing part once


async def test_isolating_many_items_stays_near_the_minimum_request_count(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    bad = {"v:17", "v:2222", "v:4000"}
    store = FakeStore(bad)
    mocked.put(ABSOLUTE, callback=store, repeat=True)
    items = [item(n) for n in range(4500)]
    outcome = await client.write_isolating(items, reason="r")
    assert {i.item_key for i, _ in outcome.rejected} == bad
    assert len(outcome.written) == 4500 - 3
    assert max(store.batches) <= 2000
    budget = math.ceil(4500 / 2000) + 2 * len(bad) * math.ceil(math.log2(2000))
    assert len(store.batches) <= budget


async def test_isolating_with_no_items_sends_nothing(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    outcome = await client.write_isolating([], reason="r")
    assert outcome.written == [] and outcome.rejected == [] and mocked.sent() == []


async def test_isolating_lets_other_errors_propagate(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    mocked.put(ABSOLUTE, status=401, repeat=True)
    with pytest.raises(BcAuthError):
        await client.write_isolating([item(1), item(2)], reason="r")


async def test_isolating_bisects_when_the_named_items_are_not_in_the_batch(
    client: BigCommerceClient, mocked: HttpMock
) -> None:
    store = FakeStore({"v:3"}, title=lambda _: "Invalid items, identities: [variant_id 999]")
    mocked.put(ABSOLUTE, callback=store, repeat=True)
    items = [item(n) for n in range(4)]
    outcome = await client.write_isolating(items, reason="r")
    assert [i for i, _ in outcome.rejected] == [items[3]]
    assert len(outcome.written) == 3
    assert len(store.batches) == 1 + 2 * 2
