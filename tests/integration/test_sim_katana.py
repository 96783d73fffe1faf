"""The Katana simulator, driven over real HTTP with aiohttp like any client would."""

from __future__ import annotations

import asyncio
import hmac
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from multidict import CIMultiDict
from openapi_schema_validator import OAS31Validator

from katsyncd.sim.katana import KatanaSim
from katsyncd.sim.quirks import InventoryEventShape, KatanaQuirks
from tests.support.bcspec import specs_dir
from tests.support.harness import katana_signature

KEY = "test-katana-key"
T0 = 1_700_000_000.0  # a fixed epoch second for the fake clock


class FakeClock:
    """A settable clock (seconds since the epoch)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: Any
    text: str


async def call(
    client: aiohttp.ClientSession,
    sim: KatanaSim,
    method: str,
    path: str,
    params: list[tuple[str, str]] | dict[str, str] | None = None,
    *,
    body: Any = None,
    key: str | None = KEY,
) -> Reply:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    async with client.request(
        method, sim.base_url + path, params=params, json=body, headers=headers
    ) as response:
        text = await response.text()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return Reply(response.status, CIMultiDict(response.headers), parsed, text)


async def get(
    client: aiohttp.ClientSession,
    sim: KatanaSim,
    path: str,
    params: list[tuple[str, str]] | dict[str, str] | None = None,
) -> Reply:
    return await call(client, sim, "GET", path, params)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@pytest.fixture
async def sim() -> AsyncIterator[KatanaSim]:
    simulator = KatanaSim(webhook_retry_delays=(0.05, 0.05, 0.05), webhook_timeout=1.0)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
def client(session: aiohttp.ClientSession) -> aiohttp.ClientSession:
    """The shared ``session`` fixture, under the name these tests use."""
    return session


# ---------------------------------------------------------------------- a webhook receiver


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A tiny aiohttp app that records webhook POSTs and can fail the first ones."""

    fail_first: int = 0
    stall_first: int = 0
    stall_seconds: float = 0.0
    received: list[Received] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(dict(request.headers), await request.read()))
        self.arrived.set()
        if len(self.received) <= self.stall_first:
            await asyncio.sleep(self.stall_seconds)  # the scenario: a receiver that hangs
        if len(self.received) <= self.fail_first:
            return web.Response(status=503)
        return web.Response(status=200)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def wait_for(self, count: int) -> None:
        while len(self.received) < count:
            self.arrived.clear()
            await self.arrived.wait()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(item.body) for item in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    target = Receiver()
    await target.start()
    yield target
    await target.stop()


def signature_ok(token: str, item: Received) -> bool:
    expected = katana_signature(item.body, token)
    return hmac.compare_digest(item.headers["x-sha2-signature"], expected)


# ---------------------------------------------------------------------- paging and filters


async def test_pagination_header_and_pages(sim: KatanaSim, client: aiohttp.ClientSession) -> None:
    ids = sim.populate(120, seed=3)
    first = await get(client, sim, "/variants", {"type": "product"})
    assert first.status == 200
    assert [v["id"] for v in first.body["data"]] == ids[:50]
    assert json.loads(first.headers["X-Pagination"]) == {
        "total_records": "120",
        "total_pages": "3",
        "offset": "0",
        "page": "1",
        "first_page": "true",
        "last_page": "false",
    }
    last = await get(client, sim, "/variants", {"type": "product", "page": "3"})
    meta = json.loads(last.headers["X-Pagination"])
    assert [v["id"] for v in last.body["data"]] == ids[100:]
    assert (meta["offset"], meta["first_page"], meta["last_page"]) == ("100", "false", "true")
    beyond = await get(client, sim, "/variants", {"type": "product", "page": "4"})
    assert beyond.body == {"data": []}
    sim.add_product_variant("LATE")  # a change is visible to the very next page request
    again = await get(client, sim, "/variants", {"type": "product", "page": "3"})
    assert json.loads(again.headers["X-Pagination"])["total_records"] == "121"
    assert again.body["data"][-1]["sku"] == "LATE"


async def test_limit_is_capped_at_250(sim: KatanaSim, client: aiohttp.ClientSession) -> None:
    sim.populate(300)
    reply = await get(client, sim, "/variants", {"limit": "1000"})
    assert len(reply.body["data"]) == 250
    assert json.loads(reply.headers["X-Pagination"])["total_pages"] == "2"  # 330 with materials


async def test_array_params_repeated_and_bracketed(
    sim: KatanaSim, client: aiohttp.ClientSession
) -> None:
    ids = sim.populate(10)
    wanted = {ids[1], ids[4]}
    for key in ("ids", "ids[]"):
        reply = await get(client, sim, "/variants", [(key, str(i)) for i in sorted(wanted)])
        assert {v["id"] for v in reply.body["data"]} == wanted
    skus = await get(client, sim, "/variants", [("sku[]", "KS-00002"), ("sku", "KS-00003")])
    assert [v["sku"] for v in skus.body["data"]] == ["KS-00002", "KS-00003"]
    inventory = await get(client, sim, "/inventory", [("variant_id[]", str(ids[1]))])
    assert {row["variant_id"] for row in inventory.body["data"]} == {ids[1]}
    assert [row["location_id"] for row in inventory.body["data"]] == [1, 2]
    unknown = await get(client, sim, "/variants", {"no_such_filter": "x", "type": "product"})
    assert len(unknown.body["data"]) == 10  # unknown filters are ignored
    ignored = await get(client, sim, "/inventory", {"updated_at_min": "not even a date"})
    assert len(ignored.body["data"]) == 2 * 11  # /inventory has no date filters
    bad = await get(client, sim, "/variants", {"ids": "1,2"})
    assert (bad.status, bad.body["code"]) == (422, "VALIDATION_FAILED")


@pytest.mark.parametrize(
    ("path", "param"),
    [("/inventory", "variant_id"), ("/variants", "ids"), ("/sales_orders", "ids")],
)
async def test_array_filters_over_the_quirk_limit_are_dropped_or_rejected(
    sim: KatanaSim, client: aiohttp.ClientSession, path: str, param: str
) -> None:
    ids = sim.populate(30)
    if path == "/sales_orders":
        ids = [sim.create_sales_order([(v, 1)], location_id=1) for v in ids[:25]]
    key = "variant_id" if path == "/inventory" else "id"
    few = [(param, str(i)) for i in ids[:3]]
    many = [(param, str(i)) for i in ids[:21]]
    sim.quirks = KatanaQuirks(array_filter_limit=20, array_filter_over_limit="ignore")
    at_limit = await get(
        client, sim, path, [*[(param, str(i)) for i in ids[:20]], ("limit", "250")]
    )
    assert {row[key] for row in at_limit.body["data"]} == set(ids[:20])  # 20 still honoured
    dropped = await get(client, sim, path, [*many, ("limit", "250")])
    assert dropped.status == 200
    assert {row[key] for row in dropped.body["data"]} > set(ids[:21])  # rows not asked for
    bracketed = await get(client, sim, path, [(param + "[]", str(i)) for i in ids[:21]])
    assert {row[key] for row in bracketed.body["data"]} - set(ids[:21])
    sim.quirks = KatanaQuirks(array_filter_limit=20, array_filter_over_limit="reject")
    rejected = await get(client, sim, path, many)
    assert rejected.status == 400
    assert param in rejected.body["message"] and rejected.body["name"] == "BadRequest"
    still = await get(client, sim, path, few)
    assert {row[key] for row in still.body["data"]} == set(ids[:3])
    sim.quirks = KatanaQuirks()
    unlimited = await get(client, sim, path, [*many, ("limit", "250")])
    assert {row[key] for row in unlimited.body["data"]} == set(ids[:21])


async def test_updated_at_min_sees_only_later_changes(
    sim: KatanaSim, client: aiohttp.ClientSession
) -> None:
    ids = sim.populate(5)
    first = await get(client, sim, "/variants", [("ids", str(ids[0]))])
    watermark = first.body["data"][0]["updated_at"]
    sim.set_sku(ids[2], "RENAMED")
    sim.set_sku(ids[3], "RENAMED-2")
    later = await get(client, sim, "/variants", {"updated_at_min": watermark})
    stamps = [v["updated_at"] for v in later.body["data"] if v["updated_at"] > watermark]
    assert len(stamps) == 2 and stamps[0] < stamps[1]  # strictly increasing, ms apart
    after_first = await get(client, sim, "/variants", {"updated_at_min": stamps[1]})
    assert [v["sku"] for v in after_first.body["data"]] == ["RENAMED-2"]
    moment = datetime.fromisoformat(stamps[1].replace("Z", "+00:00"))
    lenient = moment.replace(microsecond=0).isoformat()  # "+00:00", no fraction
    relaxed = await get(client, sim, "/variants", {"updated_at_min": lenient})
    assert "RENAMED-2" in [v["sku"] for v in relaxed.body["data"]]
    bad = await get(client, sim, "/variants", {"updated_at_min": "yesterday"})
    assert bad.status == 422


async def test_deleted_variants_need_include_deleted(
    sim: KatanaSim, client: aiohttp.ClientSession
) -> None:
    ids = sim.populate(3)
    sim.delete_variant(ids[0])
    default = await get(client, sim, "/variants", {"type": "product"})
    assert ids[0] not in [v["id"] for v in default.body["data"]]
    everything = await get(client, sim, "/variants", {"type": "product", "include_deleted": "true"})
    deleted = [v for v in everything.body["data"] if v["id"] == ids[0]]
    assert deleted and deleted[0]["deleted_at"] is not None
    assert deleted[0]["updated_at"] == deleted[0]["deleted_at"]
    inventory = await get(client, sim, "/inventory")
    assert ids[0] not in {row["variant_id"] for row in inventory.body["data"]}
    assert (await get(client, sim, f"/variants/{ids[0]}")).status == 404
    assert (await get(client, sim, f"/variants/{ids[1]}")).body["id"] == ids[1]


async def test_archived_products_are_hidden(sim: KatanaSim, client: aiohttp.ClientSession) -> None:
    loc = sim.add_location("Main", is_primary=True)
    kept = sim.add_product_variant("KEEP", in_stock={loc: 1})
    gone = sim.add_product_variant("GONE", in_stock={loc: 1})
    sim.archive_variant(gone)
    variants = await get(client, sim, "/variants")
    assert [v["sku"] for v in variants.body["data"]] == ["KEEP"]
    inventory = await get(client, sim, "/inventory")
    assert [row["variant_id"] for row in inventory.body["data"]] == [kept]
    with_archived = await get(
        client,
        sim,
        "/variants",
        {"include_archived": "true", "extend": "product_or_material"},
    )
    archived = next(v for v in with_archived.body["data"] if v["id"] == gone)
    assert archived["product_or_material"]["archived_at"] is not None
    rows = await get(client, sim, "/inventory", {"include_archived": "true"})
    assert {row["variant_id"] for row in rows.body["data"]} == {kept, gone}


# ---------------------------------------------------------------------- inventory and stock


async def test_inventory_decimal_strings_and_mo_commitments(
    sim: KatanaSim, client: aiohttp.ClientSession
) -> None:
    loc = sim.add_location("Main", is_primary=True)
    kit = sim.add_product_variant("KIT", in_stock={loc: 0})
    part = sim.add_product_variant("PART", in_stock={loc: Decimal("7")})
    screw = sim.add_material_variant("SCREW", in_stock={loc: 100})
    sim.create_sales_order([(part, 2)], location_id=loc, ecommerce_order_type="bigCommerce")
    mo = sim.create_manufacturing_order(
        kit, 3, [(part, 1), (screw, Decimal("2.5"))], location_id=loc
    )
    rows = {r["variant_id"]: r for r in (await get(client, sim, "/inventory")).body["data"]}
    assert rows[part]["quantity_in_stock"] == "7.00000"
    assert rows[part]["quantity_committed"] == "5.00000"  # 2 on the SO + 3 as a subassembly
    assert rows[screw]["quantity_committed"] == "7.50000"
    assert rows[kit]["quantity_expected"] == "3.00000"
    assert rows[part]["quantity_missing_or_excess"] == "2.00000"
    assert sim.committed_katana(part) == 5
    assert sim.committed_for_sync(part, count_katana_orders=True) == 2
    sim.complete_manufacturing_order(mo)
    rows = {r["variant_id"]: r for r in (await get(client, sim, "/inventory")).body["data"]}
    assert rows[part]["quantity_in_stock"] == "4.00000"
    assert rows[part]["quantity_committed"] == "2.00000"
    assert rows[screw]["quantity_in_stock"] == "92.50000"
    assert (rows[kit]["quantity_in_stock"], rows[kit]["quantity_expected"]) == (
        "3.00000",
        "0.00000",
    )
    kinds = (
        await get(client, sim, "/inventory_movements", {"caused_by_resource_id": str(mo)})
    ).body
    assert {m["resource_type"] for m in kinds["data"]} == {"Production", "ProductionIngredient"}


async def test_sales_order_status_moves_stock(
    sim: KatanaSim, client: aiohttp.ClientSession
) -> None:
    main = sim.add_location("Main", is_primary=True)
    shop = sim.add_location("Shop")
    v = sim.add_product_variant("SKU-1", in_stock={main: 10, shop: 10})
    so = sim.create_sales_order([(v, 3), (v, 1)], location_id=main, row_location_ids=[None, shop])
    assert (sim.in_stock(v, [main]), sim.committed_katana(v, [main])) == (Decimal(10), Decimal(3))
    assert sim.committed_katana(v, [shop]) == 1
    sim.set_sales_order_status(so, "PACKED")
    assert (sim.in_stock(v), sim.committed_katana(v)) == (Decimal(16), Decimal(0))
    moves = (
        await get(client, sim, "/inventory_movements", {"resource_type": "SalesOrderRow"})
    ).body
    assert sorted((m["location_id"], m["quantity_change"]) for m in moves["data"]) == [
        (main, -3),
        (shop, -1),
    ]
    sim.set_sales_order_status(so, "DELIVERED")
    assert (sim.in_stock(v), sim.committed_katana(v)) == (Decimal(16), Decimal(0))
    sim.set_sales_order_status(so, "NOT_SHIPPED")
    assert (sim.in_stock(v), sim.committed_katana(v)) == (Decimal(20), Decimal(4))
    sim.set_sales_order_status(so, "PENDING")
    assert sim.committed_katana(v) == 0
    sim.set_sales_order_status(so, "NOT_SHIPPED")
    sim.update_sales_order_rows(so, [(v, 5)])
    assert sim.committed_katana(v) == 5
    order = (await get(client, sim, f"/sales_orders/{so}")).body
    assert [(r["variant_id"], r["quantity"]) for r in order["sales_order_rows"]] == [(v, 5)]
    assert (order["source"], order["ecommerce_order_type"]) == ("katana", None)
    rows = await get(
        client, sim, "/sales_order_rows", {"sales_order_ids": str(so), "include_deleted": "true"}
    )
    assert len(rows.body["data"]) == 3
    sim.delete_sales_order(so)
    assert (sim.in_stock(v), sim.committed_katana(v)) == (Decimal(20), Decimal(0))
    assert (await get(client, sim, "/sales_orders")).body["data"] == []
    deleted = await get(client, sim, "/sales_orders", {"include_deleted": "true"})
    assert deleted.body["data"][0]["deleted_at"] is not None


async def test_movements_newest_first_with_consistent_balances(
    sim: KatanaSim, client: aiohttp.ClientSession
) -> None:
    a, b = sim.add_location("A", is_primary=True), sim.add_location("B")
    v = sim.add_product_variant("MOVE", in_stock={a: 5})
    sim.adjust_stock(v, a, -2)
    sim.transfer_stock(v, a, b, 1)
    sim.receive_purchase_order(v, b, 10)
    reply = await get(client, sim, "/inventory_movements", [("variant_ids[]", str(v))])
    data = reply.body["data"]
    assert [m["id"] for m in data] == sorted((m["id"] for m in data), reverse=True)
    assert [m["resource_type"] for m in data] == [
        "PurchaseOrderRow",
        "StockTransferRow",
        "StockTransferRow",
        "StockAdjustmentRow",
        "SystemGenerated",
    ]
    assert (data[0]["balance_after"], data[0]["location_id"]) == (11, b)
    assert (sim.in_stock(v, [a]), sim.in_stock(v, [b])) == (Decimal(2), Decimal(11))


async def test_random_activity_keeps_ledger_and_inventory_consistent(
    sim: KatanaSim, client: aiohttp.ClientSession
) -> None:
    sim.populate(30, locations=3, seed=7)
    rng = random.Random(11)
    descriptions = [sim.random_activity(rng) for _ in range(300)]
    assert all(descriptions)
    ledger: dict[tuple[int, int], Decimal] = {}
    for move in sim.movements:
        key = (move.variant_id, move.location_id)
        ledger[key] = ledger.get(key, Decimal(0)) + move.quantity_change
    for (variant_id, location_id), total in ledger.items():
        assert sim.in_stock(variant_id, [location_id]) == total
    reply = await get(client, sim, "/inventory", {"limit": "250", "include_archived": "true"})
    for row in reply.body["data"]:
        variant_id, location_id = row["variant_id"], row["location_id"]
        assert Decimal(row["quantity_in_stock"]) == sim.in_stock(variant_id, [location_id])
        assert Decimal(row["quantity_committed"]) == sim.committed_katana(variant_id, [location_id])


# ---------------------------------------------------------------------- limits, auth, faults


async def test_rate_limit_sliding_window(client: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    sim = KatanaSim(requests_per_minute=5, clock=clock)
    await sim.start()
    try:
        for i in range(5):
            clock.now = T0 + i
            ok = await get(client, sim, "/locations")
            assert ok.status == 200
            assert ok.headers["X-Ratelimit-Remaining"] == str(4 - i)
        clock.now = T0 + 10.5
        limited = await get(client, sim, "/locations")
        assert limited.status == 429
        assert limited.body == {
            "statusCode": 429,
            "name": "TooManyRequests",
            "message": "Too Many Requests",
        }
        assert limited.headers["Retry-After"] == "50"  # ceil(T0 + 60 - (T0 + 10.5))
        assert limited.headers["X-Ratelimit-Limit"] == "5"
        assert limited.headers["X-Ratelimit-Remaining"] == "0"
        assert limited.headers["X-Ratelimit-Reset"] == str(int((T0 + 60) * 1000))
        assert sim.request_count("/locations") == 6
        assert sim.request_count("/locations", include_rate_limited=False) == 5
        assert sim.request_log[-1].status == 429
        clock.now = T0 + 60  # the first request leaves the window
        assert (await get(client, sim, "/locations")).status == 200
        sim.requests_per_minute = 100  # settable at runtime
        assert (await get(client, sim, "/locations")).headers["X-Ratelimit-Limit"] == "100"
    finally:
        await sim.stop()


async def test_auth_is_required(sim: KatanaSim, client: aiohttp.ClientSession) -> None:
    for key in (None, "wrong-key"):
        reply = await call(client, sim, "GET", "/variants", key=key)
        assert reply.status == 401
        assert reply.body == {
            "statusCode": 401,
            "name": "UnauthorizedError",
            "message": "Unauthorized",
        }
        assert "X-Ratelimit-Remaining" in reply.headers
    assert sim.request_log[-1].status == 401


async def test_fault_injection(sim: KatanaSim, client: aiohttp.ClientSession) -> None:
    sim.populate(2)
    sim.fail_next(2, 503, path_prefix="/inventory")
    assert (await get(client, sim, "/inventory_movements")).status == 200  # other path
    first = await get(client, sim, "/inventory")
    assert (first.status, first.body["statusCode"], first.body["name"]) == (
        503,
        503,
        "ServiceUnavailableError",
    )
    assert (await get(client, sim, "/inventory")).status == 503
    assert (await get(client, sim, "/inventory")).status == 200
    sim.garbage_next(1)
    garbage = await get(client, sim, "/variants")
    assert garbage.status == 200 and garbage.body is None and garbage.text
    assert (await get(client, sim, "/variants")).body["data"]
    sim.fail_next(1)
    assert (await get(client, sim, "/locations")).status == 500
    sim.latency = 0.05
    started = asyncio.get_running_loop().time()
    await get(client, sim, "/locations")
    assert asyncio.get_running_loop().time() - started >= 0.05


# ---------------------------------------------------------------------- webhooks


async def test_webhook_delivery_signature_and_payloads(
    sim: KatanaSim, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = "00112233aabbccdd"
    events = [
        "sales_order.created",
        "sales_order.updated",
        "sales_order.packed",
        "sales_order.deleted",
        "current_inventory.product_updated",
        "purchase_order.received",
        "manufacturing_order.done",
    ]
    hook = sim.subscribe(receiver.url, events, token=token)
    loc = sim.add_location("Main", is_primary=True)
    v = sim.add_product_variant("HOOK", in_stock={loc: 5})
    so = sim.create_sales_order([(v, 1)], location_id=loc, ecommerce_order_type="bigCommerce")
    sim.set_sales_order_status(so, "PACKED")
    sim.delete_sales_order(so)
    sim.adjust_stock(v, loc, 3)  # no webhook
    po = sim.receive_purchase_order(v, loc, 4)
    await sim.drain_webhooks(5)
    assert all(signature_ok(token, item) for item in receiver.received)
    assert all(item.headers["Content-Type"] == "application/json" for item in receiver.received)
    got = [(p["action"], p["object"]["id"]) for p in receiver.payloads()]
    assert sorted(got) == sorted(
        [
            ("sales_order.created", so),
            ("sales_order.updated", so),
            ("sales_order.packed", so),
            ("sales_order.deleted", so),
            ("purchase_order.received", po),
            ("current_inventory.product_updated", v),
        ]
    )
    by_action = {p["action"]: p for p in receiver.payloads()}
    packed = by_action["sales_order.packed"]
    assert packed == {
        "resource_type": "sales_order",
        "action": "sales_order.packed",
        "webhook_id": hook,
        "object": {"id": so, "status": "PACKED", "href": f"{sim.base_url}/sales_orders/{so}"},
    }
    assert "href" not in by_action["sales_order.deleted"]["object"]
    stock_href = by_action["current_inventory.product_updated"]["object"]["href"]
    assert stock_href == f"{sim.base_url}/variants/{v}"
    assert (await get(client, sim, f"/purchase_orders/{po}")).status == 200
    assert all(attempt.status == 200 for attempt in sim.webhook_log)


@pytest.mark.parametrize("shape", ["variant", "product", "no_href"])
async def test_current_inventory_event_shape_follows_the_quirk(
    sim: KatanaSim, receiver: Receiver, shape: InventoryEventShape
) -> None:
    sim.quirks = KatanaQuirks(inventory_event_shape=shape)
    sim.subscribe(
        receiver.url,
        ["current_inventory.product_updated", "current_inventory.material_updated"],
        token="00112233aabbccdd",
    )
    loc = sim.add_location("Main", is_primary=True)
    first = sim.add_product_variant("SHAPE-A", in_stock={loc: 5})
    product = sim.variants[first].parent_id
    second = sim.add_product_variant("SHAPE-B", product_id=product)
    material = sim.add_material_variant("SHAPE-M")
    material_id = sim.variants[material].parent_id
    assert product != first and material_id != material  # the readings are distinguishable
    sim.receive_purchase_order(second, loc, 4)  # the event the state machine sends
    sim.emit("current_inventory.material_updated", material)  # emit() takes a variant id
    await sim.drain_webhooks(5)
    objects = {p["action"]: p["object"] for p in receiver.payloads()}
    got_product = objects["current_inventory.product_updated"]
    got_material = objects["current_inventory.material_updated"]
    if shape == "variant":
        assert got_product == {"id": second, "href": f"{sim.base_url}/variants/{second}"}
        assert got_material == {"id": material, "href": f"{sim.base_url}/variants/{material}"}
    elif shape == "product":
        assert got_product == {"id": product, "href": f"{sim.base_url}/products/{product}"}
        assert got_material == {
            "id": material_id,
            "href": f"{sim.base_url}/materials/{material_id}",
        }
    else:
        assert got_product == {"id": product}
        assert got_material == {"id": material_id}


async def test_webhook_retries_then_success(sim: KatanaSim, receiver: Receiver) -> None:
    receiver.fail_first = 2
    token = "0123456789abcdef"
    sim.subscribe(receiver.url, ["sales_order.created"], token=token)
    sim.emit("sales_order.created", 42)
    await sim.drain_webhooks(5)
    assert [a.status for a in sim.webhook_log] == [503, 503, 200]
    assert [a.attempt for a in sim.webhook_log] == [0, 1, 2]
    retry_nums = [item.headers.get("X-Katana-Retry-Num") for item in receiver.received]
    assert retry_nums == [None, "1", "2"]
    assert len({item.body for item in receiver.received}) == 1  # same bytes every time
    assert all(signature_ok(token, item) for item in receiver.received)


async def test_webhook_dropped_after_three_retries_and_timeouts(receiver: Receiver) -> None:
    receiver.fail_first = 10
    receiver.stall_first, receiver.stall_seconds = 1, 0.5
    sim = KatanaSim(webhook_retry_delays=(0.02, 0.02, 0.02), webhook_timeout=0.1)
    await sim.start()
    try:
        sim.subscribe(receiver.url, ["variant.deleted"])
        sim.emit("variant.deleted", 7)
        await sim.drain_webhooks(5)
        assert [a.status for a in sim.webhook_log] == [None, 503, 503, 503]  # first timed out
        assert [a.attempt for a in sim.webhook_log] == [0, 1, 2, 3]
    finally:
        await sim.stop()


async def test_slow_receiver_does_not_block_others(receiver: Receiver) -> None:
    slow = Receiver(stall_first=1, stall_seconds=2.0)
    await slow.start()
    sim = KatanaSim(webhook_retry_delays=(), webhook_timeout=3.0)
    await sim.start()
    try:
        sim.subscribe(slow.url, ["sales_order.created"])
        sim.subscribe(receiver.url, ["sales_order.created"])
        for so_id in range(1, 21):
            sim.emit("sales_order.created", so_id)
        async with asyncio.timeout(1.5):
            await receiver.wait_for(20)
    finally:
        await sim.stop()
        await slow.stop()


async def test_drain_leaves_distant_retries_pending(receiver: Receiver) -> None:
    receiver.fail_first = 1
    sim = KatanaSim(webhook_retry_delays=(30.0,))
    await sim.start()
    try:
        sim.subscribe(receiver.url, ["product.updated"])
        sim.emit("product.updated", 1)
        await sim.drain_webhooks(0.5)  # the retry is due in 30 s: not waited for
        assert [a.status for a in sim.webhook_log] == [503]
    finally:
        await sim.stop()


async def test_webhook_subscription_crud(sim: KatanaSim, client: aiohttp.ClientSession) -> None:
    good = {"url": "https://example.com/hook", "subscribed_events": ["sales_order.created"]}
    created = await call(client, sim, "POST", "/webhooks", body=good)
    assert created.status == 200
    webhook = created.body
    assert len(webhook["token"]) == 16 and int(webhook["token"], 16) >= 0
    assert webhook["token"] == webhook["token"].lower()
    assert (webhook["enabled"], webhook["description"]) == (True, None)
    bad_bodies = [
        {**good, "secret": "x"},
        {**good, "url": "http://example.com/hook"},
        {**good, "subscribed_events": []},
        {**good, "subscribed_events": ["sales_order.exploded"]},
        {"url": good["url"]},
        {**good, "enabled": "yes"},
    ]
    for body in bad_bodies:
        rejected = await call(client, sim, "POST", "/webhooks", body=body)
        assert (rejected.status, rejected.body["code"]) == (422, "VALIDATION_FAILED"), body
    codes = (await call(client, sim, "POST", "/webhooks", body=bad_bodies[0])).body["details"]
    assert codes[0]["code"] == "additionalProperties"
    loopback = {**good, "url": "http://127.0.0.1:9/hook", "enabled": False, "description": "t"}
    second = (await call(client, sim, "POST", "/webhooks", body=loopback)).body
    listed = await get(client, sim, "/webhooks", {"enabled": "false"})
    assert [w["id"] for w in listed.body["data"]] == [second["id"]]
    patch = {"enabled": True, "subscribed_events": ["variant.updated", "variant.deleted"]}
    patched = await call(client, sim, "PATCH", f"/webhooks/{second['id']}", body=patch)
    assert (patched.body["enabled"], patched.body["url"]) == (True, loopback["url"])
    assert patched.body["subscribed_events"] == patch["subscribed_events"]
    assert patched.body["updated_at"] > second["updated_at"]
    bad_patch = await call(client, sim, "PATCH", f"/webhooks/{second['id']}", body={"x": 1})
    assert bad_patch.status == 422
    deleted = await call(client, sim, "DELETE", f"/webhooks/{webhook['id']}")
    assert deleted.status == 204
    assert (await get(client, sim, f"/webhooks/{webhook['id']}")).status == 404
    assert (await call(client, sim, "DELETE", "/webhooks/999")).status == 404
    with pytest.raises(ValueError):
        sim.subscribe("http://example.com/hook", ["sales_order.created"])
    with pytest.raises(ValueError):
        sim.subscribe("https://example.com/hook", [])


# ---------------------------------------------------------------------- oracle


def test_oracle_expected_levels() -> None:
    sim = KatanaSim(clock=FakeClock())
    main = sim.add_location("Main", is_primary=True)
    shop = sim.add_location("Shop")
    v = sim.add_product_variant("S", in_stock={main: 20, shop: Decimal("5.5")})
    kit = sim.add_product_variant("KIT")
    sim.create_sales_order([(v, 4)], location_id=main, ecommerce_order_type="bigCommerce")
    sim.create_sales_order([(v, 3)], location_id=main)  # created in Katana
    sim.create_sales_order([(v, 100)], location_id=main, status="PENDING")
    sim.create_manufacturing_order(kit, 2, [(v, 5)], location_id=main)  # S4: not counted
    assert sim.committed_katana(v) == 17
    assert sim.expected_level("S") == 18  # floor(25.5 - 7)
    assert sim.expected_level("S", count_katana_orders=False) == 21  # S5
    assert sim.expected_level("S", mode="in_stock") == 25  # S3, S11 floor
    assert sim.expected_level("S", locations=[shop]) == 5  # S12
    assert sim.expected_level("S", buffer=3, max_quantity=10) == 10
    assert sim.expected_level("S", buffer=30) == 0  # S11 clamp
    sim.adjust_stock(v, main, 10**10)
    assert sim.expected_level("S", mode="in_stock") == 2_147_483_647
    assert sim.expected_level("nope") is None
    assert sim.expected_level("s") is None  # case-sensitive


def test_oracle_sku_resolution() -> None:
    sim = KatanaSim(clock=FakeClock())
    loc = sim.add_location("Main", is_primary=True)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    old = sim.add_product_variant("DUP", in_stock={loc: 1}, created_at=base)
    new = sim.add_product_variant("DUP", in_stock={loc: 2}, created_at=base + timedelta(days=1))
    tie = sim.add_product_variant("TIE", created_at=base)
    tie2 = sim.add_product_variant("TIE", created_at=base)
    sim.add_material_variant("MAT", in_stock={loc: 9})
    assert sim.live_variant_for_sku("DUP") == new  # S8
    assert sim.live_variant_for_sku("TIE") == tie2 != tie
    assert sim.expected_level("DUP") == 2
    assert sim.expected_level("MAT") is None  # S10: materials never sync
    sim.delete_variant(new)
    assert (sim.live_variant_for_sku("DUP"), sim.expected_level("DUP")) == (old, 1)
    sim.archive_variant(old)
    assert sim.expected_level("DUP") is None  # S10: archived
    sim.set_sku(tie2, "OTHER")
    assert sim.live_variant_for_sku("TIE") == tie


def test_mutations_get_strictly_increasing_stamps() -> None:
    sim = KatanaSim(clock=FakeClock())  # the clock never moves
    loc = sim.add_location("Main")
    a = sim.add_product_variant("A", in_stock={loc: 1})
    b = sim.add_product_variant("B", in_stock={loc: 1})
    sim.set_sku(a, "A2")
    assert sim.variants[a].updated_at > sim.variants[b].updated_at > sim.variants[b].created_at - 1


# ---------------------------------------------------------------------- sales-order row edits


@pytest.mark.parametrize("bump", [True, False], ids=["row_edits_bump_order", "order_untouched"])
async def test_row_edits_show_in_sales_order_rows_and_oracle(
    bump: bool, client: aiohttp.ClientSession
) -> None:
    sim = KatanaSim(quirks=KatanaQuirks(row_edits_bump_order=bump))
    await sim.start()
    try:
        main = sim.add_location("Main", is_primary=True)
        a = sim.add_product_variant("ROW-A", in_stock={main: 20})
        b = sim.add_product_variant("ROW-B", in_stock={main: 20})
        so = sim.create_sales_order([(a, 3), (a, 2), (b, 1)], location_id=main)
        first, second, third = (r.id for r in sim.sales_orders[so].rows)
        before = (await get(client, sim, f"/sales_orders/{so}")).body["updated_at"]
        assert (sim.expected_level("ROW-A"), sim.expected_level("ROW-B")) == (15, 19)

        sim.set_sales_order_row_quantity(first, 7)
        sim.move_sales_order_row(second, b)
        sim.delete_sales_order_row(third)
        assert (sim.expected_level("ROW-A"), sim.expected_level("ROW-B")) == (13, 18)

        changed = await get(
            client,
            sim,
            "/sales_order_rows",
            {"updated_at_min": before, "include_deleted": "true", "limit": "2"},
        )
        pagination = json.loads(changed.headers["X-Pagination"])
        assert pagination["total_records"] == "3"  # each edit moved its row's updated_at
        page2 = await get(
            client,
            sim,
            "/sales_order_rows",
            {"updated_at_min": before, "include_deleted": "true", "limit": "2", "page": "2"},
        )
        rows = {r["id"]: r for r in changed.body["data"] + page2.body["data"]}
        assert all(r["updated_at"] > before and r["sales_order_id"] == so for r in rows.values())
        assert (rows[first]["variant_id"], rows[first]["quantity"]) == (a, 7)
        assert rows[second]["variant_id"] == b
        assert rows[third]["deleted_at"] is not None
        hidden = await get(client, sim, "/sales_order_rows", {"updated_at_min": before})
        assert {r["id"] for r in hidden.body["data"]} == {first, second}  # deleted: opt-in
        by_order = await get(client, sim, "/sales_order_rows", [("sales_order_ids", str(so))])
        assert len(by_order.body["data"]) == 2

        order = (await get(client, sim, f"/sales_orders/{so}")).body
        assert [r["id"] for r in order["sales_order_rows"]] == [first, second]  # nested: live only
        assert (order["updated_at"] > before) is bump
        quiet = await get(
            client, sim, "/sales_orders", {"updated_at_min": rows[third]["updated_at"]}
        )
        assert len(quiet.body["data"]) == int(bump)  # an order poll sees it only if bumped
    finally:
        await sim.stop()


def test_rows_of_shipped_orders_are_frozen() -> None:
    sim = KatanaSim(clock=FakeClock())
    main = sim.add_location("Main", is_primary=True)
    v = sim.add_product_variant("FROZEN", in_stock={main: 5})
    so = sim.create_sales_order([(v, 1)], location_id=main)
    row = sim.sales_orders[so].rows[0].id
    sim.set_sales_order_status(so, "PACKED")
    with pytest.raises(ValueError, match="frozen"):
        sim.set_sales_order_row_quantity(row, 2)
    sim.set_sales_order_status(so, "NOT_SHIPPED")
    sim.delete_sales_order_row(row)
    with pytest.raises(KeyError):
        sim.delete_sales_order_row(row)
    with pytest.raises(KeyError):
        sim.move_sales_order_row(row, v)
    assert sim.committed_katana(v) == 0


# ---------------------------------------------------------------------- /inventory?extend=variant


def katana_spec_validator(schema: str) -> Any:
    """A validator of one component schema of Katana's OpenAPI file (read where it lies,
    next to BigCommerce's: ``specs_dir()/../katana/katana-openapi.yaml``; OpenAPI 3.1)."""
    path = specs_dir().parent / "katana" / "katana-openapi.yaml"
    document = yaml.safe_load(path.read_text())
    root = {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
    return OAS31Validator(root)


@pytest.mark.parametrize(
    ("quirk", "embedded"),
    [(KatanaQuirks(), True), (KatanaQuirks(inventory_extend_with_location=False), False)],
    ids=["extend-with-location", "location-drops-extend"],
)
async def test_inventory_extend_variant_is_shaped_as_the_spec_says(
    client: aiohttp.ClientSession, quirk: KatanaQuirks, embedded: bool
) -> None:
    sim = KatanaSim(quirks=quirk)
    await sim.start()
    try:
        ids = sim.populate(30, locations=2, seed=4)
        whole = await get(client, sim, "/inventory", {"extend": "variant"})
        one = await get(client, sim, "/inventory", {"extend": "variant", "location_id": "2"})
    finally:
        await sim.stop()
    validator = katana_spec_validator("InventoryListResponse")
    for answer in (whole, one):
        assert answer.status == 200
        assert [e.message for e in validator.iter_errors(answer.body)] == []
    assert all(r["variant"]["id"] == r["variant_id"] for r in whole.body["data"])
    assert {r["variant"]["id"] for r in whole.body["data"]} >= set(ids)
    assert all(r["location_id"] == 2 for r in one.body["data"])
    assert all(("variant" in r) == embedded for r in one.body["data"])


async def test_inventory_order_within_a_location_plays_both_readings(
    client: aiohttp.ClientSession,
) -> None:
    for order, descending in (("variant_id", False), ("newest_first", True)):
        sim = KatanaSim(quirks=KatanaQuirks(inventory_order=order))
        await sim.start()
        try:
            sim.populate(30, locations=2, seed=4)
            rows = (await get(client, sim, "/inventory", {"limit": "250"})).body["data"]
        finally:
            await sim.stop()
        locations = [r["location_id"] for r in rows]
        assert locations == sorted(locations)  # the spec: oldest locations first, always
        first = [r["variant_id"] for r in rows if r["location_id"] == locations[0]]
        assert first == sorted(first, reverse=descending)
