"""``katsyncd doctor`` against the simulators: all green in the optimistic reading, the filter
probe catching the pessimistic one, one broken configuration per check, GET requests only."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from katsyncd.config import build_config
from katsyncd.doctor import Probe, diagnose, filter_check, rate_limit_check, summarize_skus
from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.katana import parse_variant
from katsyncd.models import BcItem
from katsyncd.sim.quirks import KatanaQuirks, Quirks, optimistic, pessimistic
from katsyncd.sim.world import WEBHOOK_TOKEN, World, free_port
from tests.support.cli_helpers import run_cli
from tests.support.harness import write_config

pytestmark = pytest.mark.timeout(60)

N_VARIANTS = 300  # more than the 250-id probe, so an ignored filter shows on the first page
URL = "https://katsyncd.example.com/webhooks/katana"
LINE = re.compile(r"^([✓✗-]) .*? \[([\w.-]+)\]: ")
ALL_CHECKS = {
    "katana.key",
    "katana.rate_limit",
    "katana.locations",
    "katana.catalogue",
    "katana.bulk_filter",
    "katana.webhook",
    *(f"store.{s}.{c}" for s in ("main", "outlet") for c in ("token", "location", "skus")),
    *(f"store.{s}.tracking" for s in ("main", "outlet")),
}


async def make_world(quirks: Quirks, n: int = N_VARIANTS, *, main_skus: int | None = None) -> World:
    w = await World.start(katana_rpm=600, quirks=quirks)
    w.katana.populate(n, locations=2, seed=5)
    skus = [f"KS-{i:05d}" for i in range(n)]
    w.add_store("main", skus[:main_skus])
    w.add_store(
        "outlet",
        skus[::2],
        tracking="variant",
        settings={"katana_locations": ["Main warehouse"]},
        locations=[(1, "DEFAULT", "Default", True), (2, "SHOP", "Shop", False)],
    )
    w.katana.subscribe(URL, SUBSCRIBED_EVENTS, token=WEBHOOK_TOKEN)
    return w


@pytest.fixture(params=["optimistic", "pessimistic"])
async def any_world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    w = await make_world(optimistic() if request.param == "optimistic" else pessimistic())
    yield w
    await w.stop()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = await make_world(optimistic())
    yield w
    await w.stop()


def config_data(world: World) -> dict[str, Any]:
    data = world.config_data(port=free_port(), database={"url": "postgresql://h/db"})
    data["katana"]["webhook_url"] = URL
    return data


async def doctor(
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[int, dict[str, str], str]:
    """Run ``katsyncd doctor``; (exit code, check name -> mark, stdout)."""
    data = config_data(world)
    if edit is not None:
        edit(data)
    path = write_config(tmp_path / "katsyncd.toml", data)
    code = await run_cli(["doctor", *args, "--config", str(path)])
    out, err = capsys.readouterr()
    for secret in ("sim-katana-key", WEBHOOK_TOKEN, "token-main", "token-outlet"):
        assert secret not in out + err
    marks = {m[2]: m[1] for m in map(LINE.match, out.splitlines()) if m}
    return code, marks, out


def failing(marks: dict[str, str]) -> set[str]:
    return {name for name, mark in marks.items() if mark == "✗"}


def assert_gets_only(world: World) -> None:
    assert {r.method for r in world.katana.request_log} == {"GET"}
    for s in world.stores:
        assert {r.method for r in s.sim.request_log} <= {"GET"}


def printed_requests(out: str) -> dict[str, int]:
    line = next(x for x in out.splitlines() if x.startswith("Requests sent: "))
    return {m[1]: int(m[2]) for m in re.finditer(r"(Katana|BigCommerce \w+) (\d+) \(", line)}


# ----- the healthy account, both readings ------------------------------------------------------


async def test_all_checks_against_the_simulators(
    any_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, marks, out = await doctor(any_world, tmp_path, capsys)
    assert set(marks) == ALL_CHECKS
    if any_world.quirks.pessimistic:  # 20-id limit, silently ignored above: the probe sees it
        assert failing(marks) == {"katana.bulk_filter"} and code == 1
        assert "with 21 ids Katana ignored the filter" in out
        assert (
            "the filter holds for at most 20 ids" in out
        )  # found by bisection: 11, 16, 18, 19, 20
    else:
        assert failing(marks) == set() and code == 0, out
        assert "All 14 checks passed." in out
        assert "21 ids → 21 variants in 42 rows (first page); 250 ids → 250 variants" in out
    assert_gets_only(any_world)
    printed = printed_requests(out)
    probes = 2 + 5 if any_world.quirks.pessimistic else 3  # 1, 21 then bisect 1..21
    assert printed["Katana"] == any_world.katana.request_count() == 1 + 2 + probes + 1
    pages = {"main": 2, "outlet": 1}  # 300 products, 30 products (of 5 variants each)
    if not any_world.quirks.bigcommerce.include_fields_keeps_variants:
        pages["outlet"] += 1  # the variants the product list dropped, read from /catalog/variants
    for s in any_world.stores:
        assert printed[f"BigCommerce {s.name}"] == len(s.sim.request_log) == pages[s.name] + 2
    assert "S7: 0 SKUs" in out and "S8: 0 SKUs" in out


async def test_filter_rejected_above_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quirks = Quirks(KatanaQuirks(array_filter_limit=20, array_filter_over_limit="reject"))
    w = await make_world(quirks)
    try:
        code, marks, out = await doctor(w, tmp_path, capsys)
    finally:
        await w.stop()
    assert code == 1 and failing(marks) == {"katana.bulk_filter"}
    assert "Katana refused 21 ids: HTTP 400" in out and "at most 20 ids" in out
    assert_gets_only(w)


async def test_one_store_only_and_unknown_store(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, marks, _ = await doctor(world, tmp_path, capsys, "--store", "outlet")
    assert code == 0 and not any(name.startswith("store.main.") for name in marks)
    assert world.stores[0].sim.request_log == []
    path = write_config(tmp_path / "k.toml", config_data(world))
    assert await run_cli(["--config", str(path), "doctor", "--store", "nope"]) == 2
    assert "unknown store 'nope' (configured: main, outlet)" in capsys.readouterr().err


# ----- one broken configuration per check ------------------------------------------------------


def _store(data: dict[str, Any], name: str) -> dict[str, Any]:
    store: dict[str, Any] = next(s for s in data["stores"] if s["name"] == name)
    return store


def wrong_key(d: dict[str, Any]) -> None:
    d["katana"]["api_key"] = "not-the-key"


def too_fast(d: dict[str, Any]) -> None:
    d["katana"]["requests_per_minute"] = 6000


def missing_location(d: dict[str, Any]) -> None:
    _store(d, "outlet")["katana_locations"] = ["Main warehouse", "Nowhere"]


def no_url(d: dict[str, Any]) -> None:
    del d["katana"]["webhook_url"]


def other_url(d: dict[str, Any]) -> None:
    d["katana"]["webhook_url"] = "https://elsewhere.example.com/webhooks/katana"


def wrong_webhook_token(d: dict[str, Any]) -> None:
    d["katana"]["webhook_token"] = "f" * 16


def wrong_store_token(d: dict[str, Any]) -> None:
    _store(d, "main")["access_token"] = "not-the-token"


def wrong_store_hash(d: dict[str, Any]) -> None:
    _store(d, "main")["store_hash"] = "nosuchstore"


def missing_bc_location(d: dict[str, Any]) -> None:
    _store(d, "main")["location_id"] = 9


def disabled_bc_location(d: dict[str, Any]) -> None:
    _store(d, "outlet")["location_id"] = 2


BROKEN = [
    (wrong_key, "katana.key", "Katana refused the API key (HTTP 401"),
    (too_fast, "katana.rate_limit", "set [katana] requests_per_minute = 600"),
    (missing_location, "katana.locations", "store outlet: 'Nowhere'"),
    (no_url, "katana.webhook", "pass --url"),
    (other_url, "katana.webhook", "no subscription for https://elsewhere.example.com"),
    (wrong_webhook_token, "katana.webhook", "differs from the subscription's token"),
    (wrong_store_token, "store.main.token", "BigCommerce refused the token (HTTP 401"),
    (wrong_store_hash, "store.main.token", "check [[stores]] store_hash and api_base_url"),
    (missing_bc_location, "store.main.location", "location 9 does not exist"),
    (disabled_bc_location, "store.outlet.location", "location 2 (Shop) is disabled"),
]


@pytest.mark.parametrize(
    ("edit", "check", "says"), BROKEN, ids=lambda x: getattr(x, "__name__", "")
)
async def test_broken_config_fails_exactly_its_check(
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[dict[str, Any]], None],
    check: str,
    says: str,
) -> None:
    code, marks, out = await doctor(world, tmp_path, capsys, edit=edit)
    assert code == 1
    assert failing(marks) == {check}, out
    assert says in out
    fix = out.split(f"[{check}]", 1)[1].splitlines()[1]
    assert fix.startswith("    → ")  # every failure says what to do next
    assert_gets_only(world)


async def test_webhook_missing_events(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (hook,) = world.katana.webhooks.values()
    hook.subscribed_events = [e for e in hook.subscribed_events if not e.startswith("variant.")]
    code, marks, out = await doctor(world, tmp_path, capsys)
    assert code == 1 and failing(marks) == {"katana.webhook"}
    assert "events missing (variant." in out
    assert f"katsyncd webhooks register --url {URL}" in out


async def test_webhook_missing_altogether(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world.katana.webhooks.clear()
    code, marks, out = await doctor(world, tmp_path, capsys, "--url", URL)
    assert code == 1 and failing(marks) == {"katana.webhook"}
    assert f"no subscription for {URL}" in out


async def test_sku_mismatch_and_tracking_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = await make_world(optimistic(), main_skus=N_VARIANTS - 1)
    try:
        main = w.stores[0].sim
        pid = main.add_product("Not in Katana", "BC-ONLY-1", tracking="product")
        code, marks, out = await doctor(w, tmp_path, capsys)
        assert code == 1 and failing(marks) == {"store.main.skus"}
        assert "1 tracked store SKUs not in Katana" in out and "BC-ONLY-1" in out

        main.set_sku(product_id=pid, sku="KS-00001")  # S7
        main.add_product("Untracked", f"KS-{N_VARIANTS - 1:05d}", tracking="none")
        code, marks, out = await doctor(w, tmp_path, capsys)
        assert code == 1 and failing(marks) == {"store.main.tracking"}
        last = f"KS-{N_VARIANTS - 1:05d}"
        assert f"1 Katana SKUs are on store items that do not track stock: {last}" in out
        assert "S7: 1 SKUs on several store items" in out
    finally:
        await w.stop()


# ----- pure verdicts ---------------------------------------------------------------------------


def test_rate_limit_check_readings() -> None:
    ok = {"x-ratelimit-limit": "60", "X-Ratelimit-Remaining": "59", "X-RateLimit-Reset": "1"}
    assert rate_limit_check(ok, 60).ok
    assert not rate_limit_check(ok, 61).ok
    missing = rate_limit_check({"X-Ratelimit-Limit": "60"}, 60)
    assert not missing.ok and "X-Ratelimit-Remaining, X-Ratelimit-Reset" in missing.detail
    assert not rate_limit_check(None, 60).ok
    assert not rate_limit_check({**ok, "x-ratelimit-limit": "lots"}, 60).ok


def test_filter_check_readings() -> None:
    good = [Probe(1, 2, 1), Probe(21, 42, 21), Probe(250, 250, 125)]
    assert filter_check(good, 300).ok
    assert "only 30 variants" in filter_check(good[:2], 30).detail
    ignored = filter_check([Probe(1, 2, 1), Probe(21, 250, 3, 122), Probe(11, 22, 11)], 300)
    assert (
        not ignored.ok and "at most 11 ids" in ignored.detail and "rows for 122" in ignored.detail
    )
    assert filter_check(None, 0).status == "skip" and filter_check([], 0).status == "skip"


def test_summarize_skus_s7_s8_and_tracking() -> None:
    def v(i: int, sku: str, created: str, kind: str = "product") -> Any:
        row = {"id": i, "sku": sku, "type": kind, "created_at": created, "updated_at": created}
        return parse_variant(row)

    variants = [
        v(1, "A", "2024-01-01T00:00:00Z"),
        v(2, "A", "2024-02-01T00:00:00Z"),  # S8: the later one wins
        v(3, "B", "2024-01-01T00:00:00Z"),
        v(4, "C", "2024-01-01T00:00:00Z"),
        v(5, "M", "2024-01-01T00:00:00Z", "material"),  # S10: never counts
    ]
    items = [
        BcItem("A", 10, None, "product"),
        BcItem("B", 11, None, "product"),
        BcItem("B", 12, 120, "variant"),  # S7
        BcItem("C", 13, None, "none"),
        BcItem("M", 14, None, "product"),
    ]
    s = summarize_skus(variants, items)
    assert s.matched == ["A", "B"] and s.duplicates == {"A": [1, 2]} and s.winners == {"A": 2}
    assert s.fan_out == {"B": 2} and s.tracking_off == ["C"]
    assert s.unmatched_bigcommerce == ["M"] and s.unmatched_katana == []


# ----- the figure: what doctor costs on a 5,000-variant account ---------------------------------


async def test_request_budget_on_5000_variants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = await make_world(optimistic(), n=5000)
    try:
        start = time.monotonic()
        cfg = build_config(config_data(w), source="<test>")
        report = await diagnose(cfg, [cfg.store("main")], URL)
        seconds = time.monotonic() - start
    finally:
        await w.stop()
    assert report.ok, report.checks
    katana = sum(report.requests["Katana"].values())
    bc = sum(report.requests["BigCommerce main"].values())
    assert (
        katana == w.katana.request_count() == 1 + 20 + 3 + 1
    )  # locations, variants, probes, hooks
    assert bc == 20 + 1 + 1  # products, locations, one inventory read
    with capsys.disabled():
        print(f"\ndoctor, 5,000 variants: Katana {katana} GETs, BigCommerce {bc}, {seconds:.1f} s")


@pytest.mark.parametrize(
    ("prefix", "scope"),
    [
        ("/inventory/locations", "Information & settings read-only"),
        ("/inventory/items", "Inventory read-only"),
    ],
)
async def test_store_token_without_a_scope(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], prefix: str, scope: str
) -> None:
    """A token that authenticates but may not read something answers 403 there."""
    world.stores[0].sim.fail_next(1, 403, path_prefix=prefix)
    code, marks, out = await doctor(world, tmp_path, capsys)
    assert code == 1 and failing(marks) == {"store.main.token"}
    assert f"it needs the {scope} scope" in out
    assert_gets_only(world)


async def test_katana_catalogue_unreadable(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world.katana.fail_next(2, 500, path_prefix="/variants")  # doctor's client tries twice
    code, marks, out = await doctor(world, tmp_path, capsys)
    assert code == 1 and failing(marks) == {"katana.catalogue"}
    assert marks["katana.bulk_filter"] == "-" and marks["store.main.skus"] == "-"
    assert "could not read /variants" in out
