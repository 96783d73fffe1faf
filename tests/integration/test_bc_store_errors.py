"""BigCommerce write errors and the catalogue index (issue 8, parts 4 and 5).

The simulator (real HTTP, every request validated against the official specs) plays both
readings of the two loosely documented behaviours: 4xx answers that name no item
(``errors_name_items=False``) and ``include_fields`` dropping embedded variants
(``include_fields_keeps_variants=False``). The client and the daemon must be right in both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from katsyncd.bigcommerce import (
    ISOLATION_BUDGET,
    BcRejected,
    BcStoreError,
    BigCommerceClient,
)
from katsyncd.metrics import Metrics
from katsyncd.models import AbsoluteItem, BcItem
from katsyncd.ratelimit import BcLimiter
from katsyncd.sim.bigcommerce import WRITE_ERROR_TITLES, BigCommerceSim, SimStore
from katsyncd.sim.quirks import BigCommerceQuirks, Quirks
from katsyncd.sim.world import World
from tests.support.bcspec import make_validator, spec_checked
from tests.support.harness import (
    eventually,
    get_json,
    make_config_data,
    metric,
    running_daemon,
    start_world,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

TOKEN = "token-x"
HASH = "hx"
ABSOLUTE = "/inventory/adjustments"
READINGS = {
    "optimistic": BigCommerceQuirks(),
    "pessimistic": BigCommerceQuirks(include_fields_keeps_variants=False, errors_name_items=False),
}
STATUS_KINDS = {400: "request", 401: "auth", 403: "auth", 404: "not_found", 409: "request"}
STATUS_KINDS[413] = "request"


@pytest.fixture(params=sorted(READINGS))
def quirks(request: pytest.FixtureRequest) -> BigCommerceQuirks:
    return READINGS[request.param]


@pytest.fixture
async def sim(quirks: BigCommerceQuirks) -> AsyncIterator[BigCommerceSim]:
    async with spec_checked(BigCommerceSim(quirks=quirks)) as simulator:
        yield simulator


@pytest.fixture
def store(sim: BigCommerceSim) -> SimStore:
    return sim.add_store(
        HASH,
        TOKEN,
        quota=100_000,
        locations=((1, "DEFAULT", "Default", True), (2, "OLD", "Old", False)),
    )


@pytest.fixture
async def client(sim: BigCommerceSim, store: SimStore) -> AsyncIterator[BigCommerceClient]:
    async with aiohttp.ClientSession() as session:
        yield BigCommerceClient(
            session,
            sim.base_url,
            HASH,
            TOKEN,
            BcLimiter(),
            Metrics(),
            store_name="main",
            max_attempts=2,
            backoff_base=0.001,
            backoff_cap=0.005,
        )


def seed(store: SimStore, n: int) -> list[AbsoluteItem]:
    """n simple products tracked by product; the absolute items that set them to 7."""
    ids = [store.add_product(f"P{i}", f"SKU-{i:05d}") for i in range(n)]
    return [AbsoluteItem(f"p:{pid}", 1, 7, f"SKU-{i:05d}") for i, pid in enumerate(ids)]


# --------------------------------------------------------------------------- simulator


async def test_sim_answers_writes_with_a_given_4xx_until_told_otherwise(
    client: BigCommerceClient, store: SimStore
) -> None:
    items = seed(store, 3)
    store.answer_writes(403)
    with pytest.raises(BcStoreError) as caught:
        await client.set_absolute(items, reason="r")
    assert caught.value.status == 403 and caught.value.title == WRITE_ERROR_TITLES[403]
    assert await client.locations()  # reads are unaffected
    store.answer_writes(None)
    await client.set_absolute(items, reason="r")
    assert store.level("SKU-00000") == 7
    with pytest.raises(ValueError, match="4xx"):
        store.answer_writes(500)


async def test_sim_errors_name_items_only_in_the_optimistic_reading(
    sim: BigCommerceSim, client: BigCommerceClient, store: SimStore
) -> None:
    items = seed(store, 3)
    store.reject_skus(["SKU-00001"])
    with pytest.raises(BcRejected) as caught:
        await client.set_absolute(items, reason="r")
    title = caught.value.title
    if sim.quirks.errors_name_items:
        assert title == f"Invalid items, identities: [product_id {items[1].item_key[2:]}]"
    else:
        assert title == "Invalid items"
    bad_quantity = [{"product_id": 100, "location_id": 1, "quantity": -1}]
    async with (
        aiohttp.ClientSession() as s,
        s.put(
            f"{sim.base_url}/stores/{HASH}/v3{ABSOLUTE}/absolute",
            json={"items": bad_quantity},
            headers={"X-Auth-Token": TOKEN, "Accept": "application/json"},
        ) as r,
    ):
        body = await r.json(content_type=None)
    assert r.status == 422 and body["title"] == "Payload contains invalid fields"
    assert bool(body["errors"]) == sim.quirks.errors_name_items


async def test_sim_include_fields_keeps_or_drops_embedded_variants(
    sim: BigCommerceSim, store: SimStore
) -> None:
    store.add_product("Shirt", "SHIRT", tracking="variant", variant_skus=["SHIRT-S"])
    url = f"{sim.base_url}/stores/{HASH}/v3/catalog/products"
    headers = {"X-Auth-Token": TOKEN, "Accept": "application/json"}
    async with aiohttp.ClientSession() as s:
        async with s.get(url, params={"include": "variants"}, headers=headers) as r:
            whole = (await r.json())["data"][0]
        params = {"include": "variants", "include_fields": "sku,inventory_tracking"}
        async with s.get(url, params=params, headers=headers) as r:
            narrow = (await r.json())["data"][0]
    assert [v["sku"] for v in whole["variants"]] == ["SHIRT-S"]  # no include_fields: always
    assert ("variants" in narrow) == sim.quirks.include_fields_keeps_variants
    assert set(narrow) - {"variants"} == {"id", "sku", "inventory_tracking"}


async def test_sim_product_tracked_by_product_with_options_follows_the_spec(
    sim: BigCommerceSim, store: SimStore
) -> None:
    pid = store.add_product("Mug", "MUG", tracking="product", variant_skus=["MUG-RED", "MUG-BLU"])
    url = f"{sim.base_url}/stores/{HASH}/v3/catalog/products"
    headers = {"X-Auth-Token": TOKEN, "Accept": "application/json"}
    async with (
        aiohttp.ClientSession() as s,
        s.get(url, params={"include": "variants"}, headers=headers) as r,
    ):
        product = (await r.json())["data"][0]
    # products with options: base_variant_id null, the option variants listed, stock on the
    # product (the variants show none)
    assert (product["id"], product["sku"], product["base_variant_id"]) == (pid, "MUG", None)
    assert product["inventory_tracking"] == "product"
    assert [v["sku"] for v in product["variants"]] == ["MUG-RED", "MUG-BLU"]
    assert store.items_for_sku("MUG") == [("product", pid)]
    assert store.items_for_sku("MUG-RED") == []


# --------------------------------------------------------------------------- client


@pytest.mark.parametrize("status", sorted(STATUS_KINDS))
async def test_a_store_wide_4xx_on_2000_items_costs_one_request(
    client: BigCommerceClient, store: SimStore, status: int
) -> None:
    items = seed(store, 2000)
    store.answer_writes(status)
    with pytest.raises(BcStoreError) as caught:
        await client.write_isolating(items, reason="r")
    assert caught.value.kind == STATUS_KINDS[status]
    assert store.request_count(ABSOLUTE) == 1


async def test_a_disabled_or_missing_location_on_2000_items_costs_one_request(
    client: BigCommerceClient, store: SimStore
) -> None:
    items = seed(store, 2000)
    for location_id in (2, 9):  # disabled, missing
        at = [AbsoluteItem(i.item_key, location_id, i.quantity, i.sku) for i in items]
        with pytest.raises(BcStoreError) as caught:
            await client.write_isolating(at, reason="r")
        assert caught.value.kind == "location"
    assert store.request_count(ABSOLUTE) == 2


async def test_a_422_naming_items_still_isolates_them(
    sim: BigCommerceSim, client: BigCommerceClient, store: SimStore
) -> None:
    items = seed(store, 2000)
    bad = {"SKU-00017", "SKU-01500"}
    store.reject_skus(bad)
    left, rejected, pushes = items, set(), 0
    while left:
        outcome = await client.write_isolating(left, reason="r")
        rejected |= {i.sku for i, _ in outcome.rejected}
        left, pushes = outcome.unresolved, pushes + 1
    assert rejected == bad
    assert all(store.level(i.sku) == 7 for i in items if i.sku not in bad)
    requests = store.request_count(ABSOLUTE)
    if sim.quirks.errors_name_items:
        assert (pushes, requests) == (1, 2)  # named: one resend without them
    else:
        assert requests <= pushes * (1 + ISOLATION_BUDGET) and requests <= 2 * 2 * 11 + 2


# --------------------------------------------------------------------------- catalogue index


async def test_catalogue_index_is_the_same_in_both_include_fields_readings(
    sim: BigCommerceSim, client: BigCommerceClient, store: SimStore
) -> None:
    simple = store.add_product("Simple", "SIMPLE", tracking="product")
    mug = store.add_product("Mug", "MUG", tracking="product", variant_skus=["MUG-R", "MUG-B"])
    shirt = store.add_product("Shirt", "SHIRT", tracking="variant", variant_skus=["S-S", "S-M"])
    plain = store.add_product("Plain", "PLAIN-V", tracking="variant")
    gift = store.add_product("Gift", "GIFT", tracking="none", variant_skus=["GIFT-A"])
    for n in range(300):  # a second page of products
        store.add_product(f"Filler {n}", f"F-{n:04d}", tracking="variant", variant_skus=[f"FV{n}"])
    items = [i async for page in client.catalog_items() for i in page]
    by_sku = {i.sku: i for i in items}
    variants = [ident for s in ("S-S", "S-M") for _, ident in store.items_for_sku(s)]
    assert by_sku["SIMPLE"] == BcItem("SIMPLE", simple, None, "product")
    assert by_sku["MUG"] == BcItem("MUG", mug, None, "product")  # the product is the item
    assert "MUG-R" not in by_sku and "MUG-B" not in by_sku
    assert by_sku["S-S"] == BcItem("S-S", shirt, variants[0], "variant")
    assert by_sku["S-M"] == BcItem("S-M", shirt, variants[1], "variant")
    assert "SHIRT" not in by_sku  # the hidden base variant of a product with options
    assert by_sku["PLAIN-V"] == BcItem("PLAIN-V", plain, store.base_variant_id(plain), "variant")
    assert {by_sku["GIFT"].tracking, by_sku["GIFT-A"].tracking} == {"none"}
    assert by_sku["GIFT-A"].product_id == gift
    assert len(items) == 1 + 1 + 2 + 1 + 2 + 300
    variant_reads = store.request_count("/catalog/variants")
    product_reads = store.request_count("/catalog/products")
    if sim.quirks.include_fields_keeps_variants:
        assert variant_reads == 0
    else:
        assert 1 <= variant_reads <= product_reads  # one per page of products


# --------------------------------------------------------------------------- daemon


@pytest.fixture
async def world(quirks: BigCommerceQuirks) -> AsyncIterator[World]:
    w = await start_world(Quirks(bigcommerce=quirks))
    w.bc.request_validator = make_validator()
    yield w
    assert w.bc.spec_violations == []
    await w.stop()


def store_status(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in body["stores"] if s["name"] == name)


async def test_a_store_answering_403_shows_an_error_and_recovers_without_delaying_others(
    world: World, db_url: str
) -> None:
    k = world.katana
    a = k.add_location("Main", is_primary=True)
    skus = [f"ERR-{i:03d}" for i in range(40)]
    for n, sku in enumerate(skus):
        k.add_product_variant(sku, in_stock={a: n + 1})
    bad = world.add_store("bad", skus)
    good = world.add_store("good", skus)
    bad.sim.answer_writes(403)
    async with running_daemon(world, db_url) as d:
        # all levels computed (both stores' in the same transactions) and written to "good"
        await eventually(lambda: all(good.sim.level(s) == n + 1 for n, s in enumerate(skus)))
        await eventually(lambda: d.stores["bad"].writer.error_state is not None)
        _, body = await get_json(d, "/status")
        st = store_status(body, "bad")
        assert st["state"] == "error" and st["error"]["kind"] == "auth"
        assert st["error"]["status"] == 403 and "store_inventory" in st["error"]["hint"]
        assert st["backlog"] == 40  # durable: nothing was marked failed or dropped
        assert st["failed_items"] == 0
        assert store_status(body, "good")["state"] == "ok"
        assert metric(d, "katsyncd_store_error", store="bad", kind="auth") == 1
        assert bad.sim.request_count(ABSOLUTE) <= 8  # one per backoff; bisecting 40 costs ~80
        k.adjust_stock(k.live_variant_for_sku(skus[0]) or 0, a, 5)  # others keep syncing
        await eventually(lambda: good.sim.level(skus[0]) == 6)
        bad.sim.answer_writes(None)  # the merchant fixes the token's scopes ...
        assert await d.reload(d.config)  # ... and the operator reloads: retry now
        await eventually(lambda: bad.sim.level(skus[-1]) == 40)
        await eventually(lambda: d.stores["bad"].writer.error_state is None)
        assert metric(d, "katsyncd_store_error", store="bad", kind="auth") == 0
        _, body = await get_json(d, "/status")
        assert store_status(body, "bad")["state"] == "ok"
        assert store_status(body, "bad")["error"] is None


@pytest.mark.parametrize("problem", ["disabled", "missing"])
async def test_location_check_at_start_and_on_reload(
    world: World, db_url: str, tmp_path: Any, problem: str
) -> None:
    k = world.katana
    a = k.add_location("Main", is_primary=True)
    k.add_product_variant("LOC-1", in_stock={a: 4})
    locations = ((1, "DEFAULT", "Default", True), (2, "WH2", "Warehouse 2", problem != "disabled"))
    configured = 2 if problem == "disabled" else 7
    shop = world.add_store(
        "shop", ["LOC-1"], settings={"location_id": configured}, locations=locations
    )
    async with running_daemon(world, db_url, config_path=tmp_path / "k.toml") as d:
        rt = d.stores["shop"]
        await eventually(lambda: rt.writer.error_state is not None)
        assert shop.sim.request_count("/inventory/locations") >= 1  # checked at start
        # writes are still attempted (and classified "location" too): check the check itself
        await d.check_location(rt)
        state = rt.writer.error_state
        assert state is not None and state.kind == "location"
        assert state.endpoint == "/v3/inventory/locations"
        expected = "is disabled" if problem == "disabled" else "does not exist"
        assert state.message == f"location {configured} {expected}"
        _, body = await get_json(d, "/status")
        assert store_status(body, "shop")["error"]["kind"] == "location"
        assert metric(d, "katsyncd_store_error", store="shop", kind="location") == 1
        assert shop.sim.request_count("/inventory/locations") >= 1
        # the operator points the store at the default location and reloads
        shop.settings["location_id"] = 1
        assert d.http_port is not None
        data = make_config_data(world, db_url, d.http_port)
        write_config(tmp_path / "k.toml", data)
        assert await d.reload()
        await eventually(lambda: d.stores["shop"].writer.error_state is None)
        await eventually(lambda: shop.sim.level("LOC-1") == 4)
