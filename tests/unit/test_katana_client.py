"""KatanaClient against aioresponses: paging, bulk filters, retries and fault injection.

The limiter runs on a jumping clock (its sleeps return at once and move time forward), so a
429 with Retry-After: 60 costs no wall-clock time; retry backoff uses a tiny base.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import structlog

from katsyncd.katana import (
    IdsLimitLowered,
    KatanaAuthError,
    KatanaClient,
    KatanaError,
    format_datetime,
    is_last_page,
    parse_datetime,
    parse_decimal,
    parse_pagination,
    parse_retry_after,
)
from katsyncd.metrics import Metrics
from katsyncd.models import InventoryRow, Priority
from katsyncd.ratelimit import KatanaLimiter
from tests.support.clocks import JumpClock
from tests.support.httpmock import HttpMock

BASE = "http://katana.test/v1"
API_KEY = "sk-test-0123456789abcdef"


def endpoint(path: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(BASE + path)}(\?.*)?$")


def pagination(**values: Any) -> dict[str, str]:
    return {"X-Pagination": json.dumps(values)}


def count(mocked: HttpMock) -> int:
    return len(mocked.sent())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def clock() -> JumpClock:
    return JumpClock()


@pytest.fixture
def limiter(clock: JumpClock) -> KatanaLimiter:
    return KatanaLimiter(600, clock=clock, wall_clock=clock.wall, sleep=clock.sleep)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def client(
    session: aiohttp.ClientSession, limiter: KatanaLimiter, metrics: Metrics
) -> KatanaClient:
    return KatanaClient(
        session,
        BASE + "/",
        API_KEY,
        limiter,
        metrics,
        max_attempts=3,
        backoff_base=0.001,
        backoff_cap=0.005,
    )


def inv_row(variant_id: int, location_id: int = 1, in_stock: Any = "7.00000") -> dict[str, Any]:
    return {
        "variant_id": variant_id,
        "location_id": location_id,
        "quantity_in_stock": in_stock,
        "quantity_committed": "2.50000",
        "quantity_expected": "0",
    }


# -- paging -------------------------------------------------------------------------------------


async def test_get_page_sends_bearer_key_and_accept(client: KatanaClient, mocked: HttpMock) -> None:
    mocked.get(endpoint("/locations"), payload={"data": [{"id": 1, "name": "Main"}]})
    rows, last = await client.get_page("/locations", [("limit", "50")], priority=Priority.POLL)
    assert rows == [{"id": 1, "name": "Main"}]
    assert last  # short page, no header
    ((_, url, kwargs),) = mocked.sent()
    assert str(url).startswith(BASE + "/locations")
    assert kwargs["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert kwargs["headers"]["Accept"] == "application/json"
    assert API_KEY not in repr(client)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            {"page": "1", "total_pages": "2", "last_page": "false"},
            {"page": "2", "last_page": "true"},
        ),
        ({"page": 1, "total_pages": 2, "last_page": False}, {"page": 2, "last_page": True}),
        ({"page": 1, "total_pages": "2"}, {"page": "2", "total_pages": 2}),
    ],
    ids=["strings", "numbers-and-bools", "pages-only"],
)
async def test_pages_follow_x_pagination(
    client: KatanaClient, mocked: HttpMock, first: dict[str, Any], second: dict[str, Any]
) -> None:
    route = endpoint("/locations")
    mocked.get(route, payload={"data": [{"id": 1, "name": "A"}]}, headers=pagination(**first))
    mocked.get(route, payload={"data": [{"id": 2, "name": "B"}]}, headers=pagination(**second))
    locations = await client.locations()
    assert [loc.id for loc in locations] == [1, 2]
    pages = [url.query.get("page") for _, url, _ in mocked.sent()]
    assert pages == ["1", "2"]
    assert all(url.query.get("limit") == "250" for _, url, _ in mocked.sent())


async def test_without_header_a_short_page_is_the_last(
    session: aiohttp.ClientSession, limiter: KatanaLimiter, mocked: HttpMock
) -> None:
    client = KatanaClient(session, BASE, API_KEY, limiter, page_size=2)
    route = endpoint("/locations")
    mocked.get(route, payload={"data": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}]})
    mocked.get(route, payload={"data": [{"id": 3, "name": "C"}]})
    assert len(await client.locations()) == 3
    assert count(mocked) == 2


async def test_without_header_an_empty_page_ends_the_sweep(
    session: aiohttp.ClientSession, limiter: KatanaLimiter, mocked: HttpMock
) -> None:
    client = KatanaClient(session, BASE, API_KEY, limiter, page_size=1)
    route = endpoint("/inventory")
    mocked.get(route, payload={"data": [inv_row(1)]})
    mocked.get(route, payload={"data": []})
    pages = [page async for page in client.all_inventory()]
    assert pages == [[InventoryRow(1, 1, Decimal("7"), Decimal("2.5"))]]
    assert count(mocked) == 2


def test_pagination_parsing_is_lenient() -> None:
    assert parse_pagination('{"total_records": "150", "last_page": "false"}') == {
        "total_records": 150,
        "total_pages": None,
        "page": None,
        "first_page": None,
        "last_page": False,
    }
    assert parse_pagination("not json")["last_page"] is None
    assert parse_pagination('["a"]')["page"] is None
    assert parse_pagination(None)["total_pages"] is None
    assert is_last_page('{"last_page": "TRUE"}', rows=250, limit=250)
    assert not is_last_page('{"last_page": 0}', rows=10, limit=250)
    assert is_last_page('{"page": "3", "total_pages": 3}', rows=250, limit=250)
    assert not is_last_page(None, rows=250, limit=250)
    assert is_last_page('{"last_page": false}', rows=0, limit=250)  # empty page: stop anyway


# -- bulk filters -------------------------------------------------------------------------------


async def test_inventory_sends_repeated_variant_ids_in_chunks(
    client: KatanaClient, mocked: HttpMock
) -> None:
    route = endpoint("/inventory")
    mocked.get(route, payload={"data": [inv_row(1), inv_row(2, 2, 3)]})
    mocked.get(route, payload={"data": [inv_row(3, in_stock=1.25), inv_row(4)]})
    mocked.get(route, payload={"data": [inv_row(5, in_stock=None)]})
    rows = await client.inventory([5, 4, 3, 2, 1, 1], ids_per_request=2)
    requested = [url.query.getall("variant_id") for _, url, _ in mocked.sent()]
    assert sorted(requested) == [["1", "2"], ["3", "4"], ["5"]]
    assert all(url.query.get("limit") == "250" for _, url, _ in mocked.sent())
    assert {r.variant_id for r in rows} == {1, 2, 3, 4, 5}  # 99 was not asked for
    by_variant = {r.variant_id: r for r in rows}
    assert by_variant[2] == InventoryRow(2, 2, Decimal(3), Decimal("2.5"))
    assert by_variant[3].in_stock == Decimal("1.25")
    assert by_variant[5].in_stock == Decimal(0)


def variant_row(variant_id: int) -> dict[str, Any]:
    stamp = "2024-01-01T00:00:00Z"
    return {
        "id": variant_id,
        "sku": f"S{variant_id}",
        "type": "product",
        "product_id": 1,
        "created_at": stamp,
        "updated_at": stamp,
        "deleted_at": None,
    }


def filter_sizes(mocked: HttpMock, param: str) -> list[int]:
    return [len(url.query.getall(param, [])) for _, url, _ in mocked.sent()]


async def test_an_ignored_id_filter_lowers_the_chunk_size_and_rereads(
    client: KatanaClient, metrics: Metrics, mocked: HttpMock
) -> None:
    route = endpoint("/inventory")
    everything = [inv_row(i) for i in range(1, 41)]  # the gateway dropped the filter
    mocked.get(route, payload={"data": everything}, headers=pagination(total_pages=1))
    mocked.get(route, payload={"data": [inv_row(i) for i in range(1, 21)]})
    mocked.get(route, payload={"data": [inv_row(i) for i in range(21, 31)]})
    with structlog.testing.capture_logs() as logs:
        rows = await client.inventory(range(1, 31))
    assert [len(r) for r in [rows]] == [30]
    assert {r.variant_id for r in rows} == set(range(1, 31))  # 31..40 never used
    assert filter_sizes(mocked, "variant_id") == [30, 20, 10]
    assert client.effective_ids_per_request == 20 and client.ids_per_request == 250
    status = client.id_filter_status()
    assert (status["configured"], status["effective"]) == (250, 20)
    (event,) = status["lowered"]
    assert (event["endpoint"], event["parameter"], event["how"]) == (
        "/inventory",
        "variant_id",
        "ignored",
    )
    warnings = [e for e in logs if e["event"] == "katana_id_filter_limited"]
    assert len(warnings) == 1 and warnings[0]["parameter"] == "variant_id"
    assert sample(metrics, "katsyncd_katana_ids_per_request") == 20
    labels = {"endpoint": "/inventory", "kind": "ignored"}
    assert sample(metrics, "katsyncd_katana_id_filter_failures_total", **labels) == 1


@pytest.mark.parametrize("status", [400, 414, 422])
async def test_a_rejected_id_filter_lowers_the_chunk_size_and_rereads(
    client: KatanaClient, metrics: Metrics, mocked: HttpMock, status: int
) -> None:
    route = endpoint("/variants")
    message = "Too many values for query parameter 'ids'" if status != 414 else "URI Too Long"
    mocked.get(route, status=status, payload={"statusCode": status, "message": message})
    mocked.get(route, payload={"data": [variant_row(i) for i in range(1, 21)]})
    mocked.get(route, payload={"data": [variant_row(i) for i in range(21, 26)]})
    with structlog.testing.capture_logs() as logs:
        pages = [p async for p in client.variants_by_ids(range(1, 26))]
    assert sorted(v.id for page in pages for v in page) == list(range(1, 26))
    assert filter_sizes(mocked, "ids") == [25, 20, 5]
    assert client.effective_ids_per_request == 20
    assert client.id_filter_status()["lowered"][0]["status"] == status
    assert len([e for e in logs if e["event"] == "katana_id_filter_limited"]) == 1
    labels = {"endpoint": "/variants", "kind": "rejected"}
    assert sample(metrics, "katsyncd_katana_id_filter_failures_total", **labels) == 1


async def test_a_4xx_not_about_the_filter_is_not_a_limit(
    client: KatanaClient, mocked: HttpMock
) -> None:
    mocked.get(endpoint("/variants"), status=400, payload={"message": "include_deleted: bad"})
    with pytest.raises(KatanaError):
        [p async for p in client.variants_by_ids(range(1, 26))]
    assert client.effective_ids_per_request == 250 and client.id_filter_status()["lowered"] == []


async def test_the_size_halves_below_twenty_and_gives_up_below_one(
    client: KatanaClient, mocked: HttpMock
) -> None:
    mocked.get(endpoint("/sales_orders"), payload={"data": [so_row(999, 1)]}, repeat=True)
    with pytest.raises(KatanaError, match="even with one id"):
        [p async for p in client.sales_orders(ids=range(1, 31))]
    assert filter_sizes(mocked, "ids") == [30, 20, 10, 5, 2, 1]


async def test_a_lower_configured_size_is_used(
    session: aiohttp.ClientSession, limiter: KatanaLimiter, mocked: HttpMock
) -> None:
    client = KatanaClient(session, BASE, API_KEY, limiter, ids_per_request=10)
    mocked.get(endpoint("/sales_orders"), payload={"data": [so_row(1, 1)]})
    mocked.get(endpoint("/sales_orders"), payload={"data": [so_row(11, 1)]})
    orders = [o async for p in client.sales_orders(ids=range(1, 16)) for o in p]
    assert filter_sizes(mocked, "ids") == [10, 5]
    assert [o.id for o in orders] == [1, 11]
    assert client.id_filter_status() == {"configured": 10, "effective": 10, "lowered": []}
    client.ids_per_request = 999  # bounded like the config key
    assert client.effective_ids_per_request == 250


async def test_inventory_sweeps_when_that_is_fewer_requests(
    client: KatanaClient, metrics: Metrics, mocked: HttpMock
) -> None:
    route = endpoint("/inventory")
    client.ids_per_request = 20
    mocked.get(
        route,
        payload={"data": [inv_row(i) for i in range(1, 251)]},
        headers=pagination(total_records=300, total_pages=2, page=1, last_page=False),
    )
    mocked.get(
        route,
        payload={"data": [inv_row(i) for i in range(251, 301)]},
        headers=pagination(total_records=300, total_pages=2, page=2, last_page=True),
    )
    rows = await client.inventory(range(1, 101))  # 5 chunks of 20, or a 2-page sweep
    assert {r.variant_id for r in rows} == set(range(1, 101))
    assert filter_sizes(mocked, "variant_id") == [0, 0]
    assert client.inventory_sweep_pages() == 2
    assert (
        sample(metrics, "katsyncd_katana_read_plans_total", endpoint="/inventory", plan="sweep")
        == 1
    )


async def test_inventory_is_planned_again_after_the_size_is_lowered(
    client: KatanaClient, mocked: HttpMock
) -> None:
    route = endpoint("/inventory")
    everything = [inv_row(i) for i in range(1, 251)]
    mocked.get(route, payload={"data": everything})  # 100 ids asked, the filter dropped
    more = pagination(total_records=300, total_pages=2, page=1, last_page=False)
    mocked.get(route, payload={"data": everything}, headers=more)
    last = pagination(total_records=300, total_pages=2, page=2, last_page=True)
    mocked.get(route, payload={"data": [inv_row(i) for i in range(251, 301)]}, headers=last)
    rows = await client.inventory(range(1, 101))  # then 5 chunks of 20, or a 2-page sweep
    assert sorted(r.variant_id for r in rows) == list(range(1, 101))
    assert filter_sizes(mocked, "variant_id") == [100, 0, 0]


async def test_inventory_can_stop_instead_of_planning_again_after_the_size_is_lowered(
    client: KatanaClient, mocked: HttpMock
) -> None:
    route = endpoint("/inventory")
    mocked.get(route, payload={"data": [inv_row(i) for i in range(1, 251)]})  # filter dropped
    with pytest.raises(IdsLimitLowered):
        await client.inventory(range(1, 101), stop_if_lowered=True)
    assert filter_sizes(mocked, "variant_id") == [100]  # no sweep, no chunks: the caller plans
    assert client.effective_ids_per_request == 20


async def test_inventory_probe_gives_up_a_long_sweep_for_id_chunks(
    client: KatanaClient, mocked: HttpMock
) -> None:
    route = endpoint("/inventory")
    client.ids_per_request = 20
    mocked.get(
        route,
        payload={"data": [inv_row(i) for i in range(1, 251)]},
        headers=pagination(total_records=5000, total_pages=20, page=1, last_page=False),
    )
    for start in range(1, 81, 20):
        mocked.get(route, payload={"data": [inv_row(i) for i in range(start, start + 20)]})
    rows = await client.inventory(range(1, 81))  # 4 chunks < a 20-page sweep
    assert {r.variant_id for r in rows} == set(range(1, 81))
    assert filter_sizes(mocked, "variant_id") == [0, 20, 20, 20, 20]
    assert client.inventory_sweep_pages() == 20


async def test_inventory_of_nothing_sends_nothing(client: KatanaClient, mocked: HttpMock) -> None:
    assert await client.inventory([]) == []
    assert count(mocked) == 0


async def test_variants_send_iso_ms_z_dates_and_parse_leniently(
    client: KatanaClient, mocked: HttpMock
) -> None:
    rows = [
        {
            "id": 11,
            "sku": "TEE-S",
            "type": "product",
            "product_id": 5,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-02T03:04:05.123+00:00",
            "deleted_at": None,
        },
        {
            "id": 12,
            "sku": None,
            "material_id": 9,
            "created_at": "2024-01-01T00:00:00.000Z",
            "updated_at": "2024-01-03T00:00:00+02:00",
            "deleted_at": "2024-01-03T00:00:00.5Z",
        },
    ]
    mocked.get(endpoint("/variants"), payload={"data": rows})
    since = datetime(2024, 1, 2, 4, 4, 5, 678_901, tzinfo=timezone(timedelta(hours=1)))
    pages = [p async for p in client.variants(updated_at_min=since)]
    ((_, url, _),) = mocked.sent()
    assert url.query["updated_at_min"] == "2024-01-02T03:04:05.678Z"
    assert url.query["include_deleted"] == "true"
    first, second = pages[0]
    assert first.sku == "TEE-S" and first.product_id == 5 and first.deleted_at is None
    assert first.updated_at == datetime(2024, 1, 2, 3, 4, 5, 123_000, tzinfo=UTC)
    assert second.sku is None and second.type == "material"
    assert second.updated_at == datetime(2024, 1, 2, 22, 0, tzinfo=UTC)
    assert second.deleted_at == datetime(2024, 1, 3, 0, 0, 0, 500_000, tzinfo=UTC)


async def test_variants_by_ids_chunk_repeated_ids(client: KatanaClient, mocked: HttpMock) -> None:
    mocked.get(endpoint("/variants"), payload={"data": []}, repeat=True)
    assert [p async for p in client.variants_by_ids(range(1, 252))] == []
    sizes = sorted(len(url.query.getall("ids")) for _, url, _ in mocked.sent())
    assert sizes == [1, 250]


def so_row(so_id: int, quantity: Any) -> dict[str, Any]:
    return {
        "id": so_id,
        "status": "NOT_SHIPPED",
        "location_id": 1,
        "ecommerce_order_type": None,
        "source": "api",
        "updated_at": "2024-05-01T10:00:00Z",
        "deleted_at": None,
        "sales_order_rows": [
            {"id": so_id * 10, "variant_id": 7, "quantity": quantity, "location_id": None}
        ],
    }


async def test_sales_orders_by_ids_are_chunked_250_per_request(
    client: KatanaClient, mocked: HttpMock
) -> None:
    route = endpoint("/sales_orders")
    mocked.get(route, payload={"data": [so_row(1, "1.00000")]})
    mocked.get(route, payload={"data": [so_row(300, 2)]})
    pages = [p async for p in client.sales_orders(ids=range(1, 301), status="NOT_SHIPPED")]
    sizes = sorted(len(url.query.getall("ids")) for _, url, _ in mocked.sent())
    assert sizes == [50, 250]
    assert all(url.query["status"] == "NOT_SHIPPED" for _, url, _ in mocked.sent())
    orders = [o for page in pages for o in page]
    assert [o.rows[0].quantity for o in orders] == [Decimal(1), Decimal(2)]
    assert orders[0].rows[0].location_id is None
    assert orders[0].ecommerce_order_type is None and orders[0].source == "api"


async def test_sales_orders_with_no_ids_send_nothing(
    client: KatanaClient, mocked: HttpMock
) -> None:
    assert [p async for p in client.sales_orders(ids=[])] == []
    assert count(mocked) == 0


async def test_inventory_movements(client: KatanaClient, mocked: HttpMock) -> None:
    row = {"id": 1, "variant_id": 2, "location_id": 3, "updated_at": "2024-05-01T10:00:00.1Z"}
    mocked.get(endpoint("/inventory_movements"), payload={"data": [row]})
    since = datetime(2024, 5, 1, tzinfo=UTC)
    (page,) = [p async for p in client.inventory_movements(updated_at_min=since)]
    assert page[0].variant_id == 2 and page[0].updated_at.microsecond == 100_000
    ((_, url, _),) = mocked.sent()
    assert url.query["updated_at_min"] == "2024-05-01T00:00:00.000Z"


async def test_sales_order_rows_since_with_deleted(client: KatanaClient, mocked: HttpMock) -> None:
    live = {
        "id": 7,
        "sales_order_id": 3,
        "variant_id": 2,
        "quantity": "1.50000",  # a decimal string here, a number elsewhere: both parse
        "location_id": None,
        "updated_at": "2024-05-01T10:00:00.100Z",
        "deleted_at": None,
    }
    gone = {**live, "id": 8, "quantity": 4, "deleted_at": "2024-05-01T10:00:01Z"}
    mocked.get(endpoint("/sales_order_rows"), payload={"data": [live, gone]})
    since = datetime(2024, 5, 1, tzinfo=UTC)
    (page,) = [p async for p in client.sales_order_rows(updated_at_min=since)]
    assert [(r.id, r.sales_order_id, r.quantity, r.deleted_at is None) for r in page] == [
        (7, 3, Decimal("1.5"), True),
        (8, 3, Decimal(4), False),
    ]
    ((_, url, _),) = mocked.sent()
    assert url.query["updated_at_min"] == "2024-05-01T00:00:00.000Z"
    assert url.query["include_deleted"] == "true"  # nested rows never show deletions


async def test_a_sales_order_row_without_its_order_fails_the_call(
    client: KatanaClient, mocked: HttpMock
) -> None:
    row = {"id": 7, "variant_id": 2, "quantity": 1, "updated_at": "2024-05-01T10:00:00Z"}
    mocked.get(endpoint("/sales_order_rows"), payload={"data": [row]})
    since = datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.raises(KatanaError, match="malformed row") as caught:
        _ = [p async for p in client.sales_order_rows(updated_at_min=since)]
    assert caught.value.endpoint == "/sales_order_rows"


async def test_a_malformed_row_fails_the_call(client: KatanaClient, mocked: HttpMock) -> None:
    mocked.get(endpoint("/inventory"), payload={"data": [{"variant_id": 1}]})
    with pytest.raises(KatanaError, match="malformed row"):
        await client.inventory([1])


# -- rate limits --------------------------------------------------------------------------------


async def test_ratelimit_headers_feed_the_limiter_and_the_gauge(
    client: KatanaClient, limiter: KatanaLimiter, metrics: Metrics, mocked: HttpMock
) -> None:
    headers = {"X-Ratelimit-Limit": "600", "X-Ratelimit-Remaining": "3", "X-Ratelimit-Reset": "1"}
    mocked.get(endpoint("/locations"), payload={"data": []}, headers=headers)
    await client.locations()
    assert limiter.available() <= 3
    assert sample(metrics, "katsyncd_katana_budget_remaining_requests") <= 3


async def test_429_pauses_the_limiter_for_retry_after_and_retries(
    client: KatanaClient, clock: JumpClock, metrics: Metrics, mocked: HttpMock
) -> None:
    route = endpoint("/inventory")
    mocked.get(route, status=429, headers={"Retry-After": "7"}, body='{"statusCode":429}')
    mocked.get(route, payload={"data": [inv_row(1)]})
    rows = await client.inventory([1])
    assert len(rows) == 1
    assert clock.now >= 7.0
    assert sample(metrics, "katsyncd_katana_rate_limited_total") == 1
    assert (
        sample(metrics, "katsyncd_katana_requests_total", endpoint="/inventory", status="429") == 1
    )
    assert (
        sample(metrics, "katsyncd_katana_requests_total", endpoint="/inventory", status="200") == 1
    )
    assert sample(metrics, "katsyncd_katana_limiter_wait_seconds_total", priority="live") >= 7.0


async def test_429_without_retry_after_pauses_sixty_seconds(
    client: KatanaClient, clock: JumpClock, mocked: HttpMock
) -> None:
    route = endpoint("/locations")
    mocked.get(route, status=429)
    mocked.get(route, payload={"data": []})
    await client.locations()
    assert clock.now >= 60.0


async def test_429s_do_not_use_up_the_attempts_for_errors(
    client: KatanaClient, mocked: HttpMock
) -> None:
    route = endpoint("/locations")
    for _ in range(4):  # more 429s than max_attempts (3)
        mocked.get(route, status=429, headers={"Retry-After": "1"})
    mocked.get(route, payload={"data": []})
    assert await client.locations() == []


def test_retry_after_parsing() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after(None) == 60.0
    assert parse_retry_after("soon") == 60.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503, "body": "upstream down"},
        {"status": 200, "body": '{"data": [{"variant_id"'},
        {"status": 200, "body": "<html>proxy error</html>"},
        {"status": 200, "payload": {"unexpected": True}},
        {"exception": TimeoutError()},
        {"exception": aiohttp.ClientConnectionError("reset by peer")},
    ],
    ids=["5xx", "truncated-json", "html", "wrong-shape", "timeout", "connection-error"],
)
async def test_transient_faults_are_retried(
    client: KatanaClient, mocked: HttpMock, fault: dict[str, Any]
) -> None:
    route = endpoint("/inventory")
    mocked.get(route, **fault)
    mocked.get(route, payload={"data": [inv_row(1)]})
    assert len(await client.inventory([1])) == 1
    assert count(mocked) == 2


async def test_persistent_5xx_gives_up_after_max_attempts(
    client: KatanaClient, metrics: Metrics, mocked: HttpMock
) -> None:
    mocked.get(endpoint("/inventory"), status=500, body="boom " * 500, repeat=True)
    with pytest.raises(KatanaError) as caught:
        await client.inventory([1])
    assert caught.value.status == 500
    assert caught.value.endpoint == "/inventory"
    assert len(caught.value.body) <= 500
    assert count(mocked) == 3
    assert (
        sample(metrics, "katsyncd_katana_requests_total", endpoint="/inventory", status="500") == 3
    )


async def test_persistent_garbage_and_timeouts_give_up(
    client: KatanaClient, metrics: Metrics, mocked: HttpMock
) -> None:
    route = endpoint("/locations")
    mocked.get(route, body="garbage")
    mocked.get(route, exception=TimeoutError())
    mocked.get(route, body="garbage")
    with pytest.raises(KatanaError):
        await client.locations()
    assert (
        sample(metrics, "katsyncd_katana_requests_total", endpoint="/locations", status="error")
        == 1
    )


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failures_are_never_retried(
    client: KatanaClient, mocked: HttpMock, status: int
) -> None:
    mocked.get(endpoint("/inventory"), status=status, body='{"name":"UnauthorizedError"}')
    with pytest.raises(KatanaAuthError) as caught:
        await client.inventory([1])
    assert caught.value.status == status
    assert count(mocked) == 1
    assert API_KEY not in str(caught.value) and API_KEY not in caught.value.body


async def test_other_4xx_fail_without_retry(client: KatanaClient, mocked: HttpMock) -> None:
    mocked.get(endpoint("/inventory"), status=422, body='{"code":"VALIDATION_FAILED"}')
    with pytest.raises(KatanaError) as caught:
        await client.inventory([1])
    assert caught.value.status == 422 and "VALIDATION_FAILED" in caught.value.body
    assert count(mocked) == 1


async def test_retry_logs_never_contain_the_api_key(client: KatanaClient, mocked: HttpMock) -> None:
    route = endpoint("/inventory")
    mocked.get(route, status=502)
    mocked.get(route, status=429, headers={"Retry-After": "1"})
    mocked.get(route, payload={"data": []})
    with structlog.testing.capture_logs() as logs:
        await client.inventory([1])
    assert {entry["event"] for entry in logs} == {
        "katana_retry",
        "katana_rate_limited",
        "katana_rate_limit_headers_missing",  # the mocked answers carry none
    }
    assert API_KEY not in repr(logs)


# -- webhooks -----------------------------------------------------------------------------------


async def test_webhook_registration_calls(client: KatanaClient, mocked: HttpMock) -> None:
    hook: dict[str, Any] = {
        "id": 4,
        "url": "https://x.test/webhooks/katana",
        "token": "73f82127d57a2cea",
    }
    mocked.get(endpoint("/webhooks"), payload={"data": [hook]})
    mocked.post(endpoint("/webhooks"), payload=hook)
    mocked.patch(endpoint("/webhooks/4"), payload={**hook, "enabled": False})
    mocked.delete(endpoint("/webhooks/4"), status=204)
    mocked.delete(endpoint("/webhooks/5"), status=404)
    assert await client.list_webhooks() == [hook]
    created = await client.create_webhook(hook["url"], ["sales_order.created"])
    assert created["token"] == "73f82127d57a2cea"
    assert (await client.update_webhook(4, enabled=False))["enabled"] is False
    await client.delete_webhook(4)
    await client.delete_webhook(5)  # already gone: fine
    calls = {method: kwargs for method, _, kwargs in mocked.sent()}
    assert calls["POST"]["json"] == {
        "url": hook["url"],
        "subscribed_events": ["sales_order.created"],
        "enabled": True,
        "description": "katsyncd",
    }
    assert calls["PATCH"]["json"] == {"enabled": False}


async def test_create_webhook_is_not_retried_after_an_ambiguous_failure(
    client: KatanaClient, mocked: HttpMock
) -> None:
    mocked.post(endpoint("/webhooks"), status=503, repeat=True)
    with pytest.raises(KatanaError):
        await client.create_webhook("https://x.test/h", ["variant.updated"])
    assert count(mocked) == 1


async def test_base_url_and_key_can_be_swapped_on_reload(
    client: KatanaClient, mocked: HttpMock
) -> None:
    client.base_url = "http://other.test/v1/"
    client.api_key = "new-key"
    mocked.get(re.compile(r"^http://other\.test/v1/locations\?.*$"), payload={"data": []})
    await client.locations()
    ((_, url, kwargs),) = mocked.sent()
    assert url.host == "other.test"
    assert kwargs["headers"]["Authorization"] == "Bearer new-key"


# -- pure parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7.00000", Decimal("7")),
        ("-1.5", Decimal("-1.5")),
        (3, Decimal(3)),
        (0.1, Decimal("0.1")),  # from the float's repr, not its binary expansion
        (None, Decimal(0)),
    ],
)
def test_parse_decimal(raw: Any, expected: Decimal) -> None:
    assert parse_decimal(raw) == expected


@pytest.mark.parametrize("raw", ["abc", "NaN", True, "Infinity"])
def test_parse_decimal_refuses_garbage(raw: Any) -> None:
    with pytest.raises(ValueError):
        parse_decimal(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "2021-04-14T10:39:40Z",
        "2021-04-14T10:39:40.000Z",
        "2021-04-14T10:39:40+00:00",
        "2021-04-14T12:39:40.000000+02:00",
        "2021-04-14T10:39:40",
    ],
)
def test_parse_datetime_is_lenient_and_returns_aware_utc(raw: str) -> None:
    parsed = parse_datetime(raw)
    assert parsed == datetime(2021, 4, 14, 10, 39, 40, tzinfo=UTC)
    assert parsed.tzinfo is UTC


def test_parse_datetime_refuses_non_strings() -> None:
    with pytest.raises(ValueError):
        parse_datetime(1618396780)


def test_format_datetime_is_utc_with_ms_and_z() -> None:
    assert format_datetime(datetime(2021, 4, 14, 10, 39, 40, 54_321)) == "2021-04-14T10:39:40.054Z"
    aware = datetime(2021, 4, 14, 12, 39, 40, tzinfo=timezone(timedelta(hours=2)))
    assert format_datetime(aware) == "2021-04-14T10:39:40.000Z"


# -- the cold start's reads ---------------------------------------------------------------------


def embedded_variant(vid: int) -> dict[str, Any]:
    stamp = "2026-01-01T00:00:00.000Z"
    return {"id": vid, "sku": f"S-{vid}", "type": "product", "product_id": 9,
            "created_at": stamp, "updated_at": stamp, "deleted_at": None}  # fmt: skip


async def test_inventory_with_variants_reads_each_row_with_its_variant(
    client: KatanaClient, mocked: HttpMock
) -> None:
    route = endpoint("/inventory")
    first = [{**inv_row(1, 2), "variant": embedded_variant(1)}]
    second = [inv_row(3, 2)]  # a gateway that left ``variant`` out
    meta = {"total_records": "2", "total_pages": "2"}
    mocked.get(route, payload={"data": first}, headers=pagination(page="1", **meta))
    mocked.get(route, payload={"data": second}, headers=pagination(page="2", **meta))
    pages = [p async for p in client.inventory_with_variants(location_id=2)]
    assert [p.extended for p in pages] == [True, False]
    assert [p.total_records for p in pages] == [2, 2]
    assert pages[0].variants[0] is not None and pages[0].variants[0].sku == "S-1"
    assert pages[1].variants == [None]
    assert pages[0].rows[0] == InventoryRow(1, 2, Decimal(7), Decimal("2.5"))
    for _, url, _ in mocked.sent():
        assert url.query.getall("extend") == ["variant"]
        assert url.query.get("location_id") == "2"
    assert client.inventory_sweep_pages() is None  # a filtered read says nothing of the whole


async def test_inventory_with_variants_refuses_a_malformed_embedded_variant(
    client: KatanaClient, mocked: HttpMock
) -> None:
    bad = {**inv_row(1), "variant": {"id": 1, "sku": "S-1"}}  # no created_at
    mocked.get(endpoint("/inventory"), payload={"data": [bad]})
    with pytest.raises(KatanaError, match="malformed row"):
        _ = [p async for p in client.inventory_with_variants()]


async def test_unfiltered_inventory_with_variants_sizes_the_sweep(
    client: KatanaClient, mocked: HttpMock
) -> None:
    payload = {"data": [{**inv_row(1), "variant": embedded_variant(1)}]}
    meta = pagination(total_records="600", total_pages="3", page="1", last_page="true")
    mocked.get(endpoint("/inventory"), payload=payload, headers=meta)
    _ = [p async for p in client.inventory_with_variants()]
    assert client.inventory_sweep_pages() == 3


async def test_count_product_variants_reads_one_row_and_the_total(
    client: KatanaClient, mocked: HttpMock
) -> None:
    route = endpoint("/variants")
    mocked.get(route, payload={"data": [embedded_variant(1)]}, headers=pagination(total_records=7))
    mocked.get(route, payload={"data": [embedded_variant(1)]})  # no X-Pagination
    before = datetime(2026, 1, 2, tzinfo=UTC)
    assert await client.count_product_variants(created_before=before) == 7
    assert await client.count_product_variants(created_before=before) is None
    _, url, _ = mocked.sent()[0]
    assert url.query.get("limit") == "1"
    assert url.query.get("type") == "product"
    assert url.query.get("include_deleted") == "false"
    assert url.query.get("created_at_max") == "2026-01-02T00:00:00.000Z"
