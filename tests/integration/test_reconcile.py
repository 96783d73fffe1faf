"""Full reconcile: real Postgres, real HTTP to the Katana and BigCommerce simulators.

The catalogue disagrees with BigCommerce in every way the reconcile reports: levels that differ,
duplicate SKUs on both sides (S7, S8), SKUs on one side only, an untracked BigCommerce product,
a level edited by hand in BigCommerce and a Katana change that sent no webhook.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from katsyncd.cli.render import CSV_COLUMNS
from katsyncd.config import Config, build_config
from katsyncd.daemon import Daemon
from katsyncd.engine import Level
from katsyncd.katana import MAX_PAGE_SIZE
from katsyncd.models import InventoryRow, KatanaVariant, Priority
from katsyncd.reconcile import (
    RECONCILE_REASON,
    SCHEDULED,
    DiffRow,
    Duplicate,
    ReconcileReport,
    ReconcileSchedule,
    compare_skus,
    diff_levels,
    duplicates_in,
    suspect_variants,
)
from katsyncd.sim.bigcommerce import SimStore
from katsyncd.sim.quirks import Quirks
from katsyncd.sim.world import World, WorldStore, free_port
from katsyncd.wiring import build_offline
from tests.support.bcspec import make_validator
from tests.support.cli_helpers import run_cli
from tests.support.harness import (
    converge,
    eventually,
    get_json,
    running_daemon,
    start_world,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

N_VARIANTS = 300  # KS-00000 … KS-00299, two locations, plus 30 materials
SOLD = 250  # BigCommerce sells KS-00000 … KS-00249 as simple products
GROUP = [f"KS-{i:05d}" for i in range(280, 285)]  # … and these as variants of one product
UNTRACKED = ["KS-00270", "UNTRACKED-1"]
BC_ONLY = ["BC-ONLY-1", "BC-ONLY-2"]


def sku(i: int) -> str:
    return f"KS-{i:05d}"


# ----- pure parts -------------------------------------------------------------------------------


def test_compare_skus_sides_untracked_and_fan_out() -> None:
    bc = [
        ("p:1", "A", "product"),
        ("p:2", "A", "product"),
        ("v:3", "B", "variant"),
        ("p:4", "BC-ONLY", "product"),
        ("p:5", "C", "none"),
    ]
    sides = compare_skus({"A", "B", "C", "K-ONLY"}, bc)
    assert sides.matched == {"A", "B"}
    assert sides.unmatched_katana == ["K-ONLY"]  # C has a BigCommerce item, untracked
    assert sides.unmatched_bigcommerce == ["BC-ONLY"]
    assert sides.untracked == ["C"]
    assert sides.fan_out == {"A": ["p:1", "p:2"]}


def test_duplicates_list_winner_and_losers() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    winner = KatanaVariant(7, "A", "product", at, at)
    dups = duplicates_in({"A", "B"}, {"A": [3, 7, 9], "Z": [1, 2]}, {"A": winner})
    assert dups == [Duplicate("A", 7, (3, 9))]


def test_diff_levels_compares_what_katana_says_with_bigcommerce() -> None:
    levels = [Level("s", "p:1", 1, "A", 10, 5), Level("s", "p:2", 1, "B", 11, 6)]
    rows = diff_levels(levels, {("s", "p:2", 1): 8}, {"p:1": 5, "p:2": 6}, "queued")
    assert rows == [DiffRow("s", "B", "p:2", 1, 6, 8, "queued")]
    assert diff_levels(levels, {}, {}, "x")[0].bigcommerce_now is None


def test_suspects_are_contradicted_or_rowless_levels() -> None:
    row = InventoryRow(10, 1, Decimal(5), Decimal(0))
    levels = [
        Level("s", "p:1", 1, "A", 10, 5),  # as recorded: trusted
        Level("s", "p:2", 1, "B", 11, 6),  # contradicts the recorded 7
        Level("s", "p:3", 1, "C", 12, 0),  # no inventory row at all
        Level("s", "p:4", 1, "D", 10, 5),  # never recorded: trusted
    ]
    recorded = {("s", "p:1", 1): 5, ("s", "p:2", 1): 7}
    inventory = {10: [row], 11: [row]}
    assert suspect_variants(levels, recorded, inventory) == {11, 12}


def test_schedule_first_run_one_jittered_interval_after_start() -> None:
    now = [100.0]
    sched = ReconcileSchedule(clock=lambda: now[0], rng=random.Random(1))
    sched.set_interval(0)
    assert sched.take_due() is None and sched.seconds_until_due() == 60.0  # off
    sched.set_interval(1000)
    assert sched.take_due() is None and sched.seconds_until_due() == 60.0  # bounded sleep
    now[0] += 799
    assert sched.take_due() is None  # not before 0.8 x interval
    now[0] += 402
    ask = sched.take_due()
    assert ask is not None and ask.reason == SCHEDULED and ask.stores is None
    assert sched.take_due() is None
    sched.plan_next()
    now[0] += 799
    assert sched.take_due() is None  # not before 0.8 x interval


def test_schedule_asks_are_due_now_and_merge() -> None:
    now = [0.0]
    sched = ReconcileSchedule(clock=lambda: now[0])
    sched.set_interval(3600)
    sched.ask("store_switched_on", ["a"])
    sched.ask("store_switched_on", ["b"])
    sched.ask("retry", ["c"], delay=10)
    assert sched.wake.is_set()
    ask = sched.take_due()
    assert (
        ask is not None
        and ask.reason == "store_switched_on"
        and ask.stores == frozenset({"a", "b"})
    )
    now[0] = 11
    sched.ask("catch_up_gap")
    ask = sched.take_due()
    assert ask is not None and ask.reason == "catch_up_gap,retry" and ask.stores is None


# ----- the catalogue ----------------------------------------------------------------------------


@dataclass
class Catalogue:
    world: World
    store: WorldStore
    dup_old: int
    dup_new: int

    @property
    def sim(self) -> SimStore:
        return self.store.sim

    def matched(self) -> list[str]:
        return [sku(i) for i in range(SOLD)] + GROUP

    def items(self) -> dict[tuple[str, int], str]:
        """Every tracked BigCommerce item of a matched SKU -> its SKU."""
        return {it: s for s in self.matched() for it in self.sim.items_for_sku(s)}

    def expected(self, s: str) -> int:
        level = self.world.katana.expected_level(s)
        assert level is not None
        return level

    def wrong_items(self) -> dict[tuple[str, int], int]:
        """(kind, id) -> Katana's level, for every item BigCommerce does not have right."""
        out = {}
        for (kind, ident), s in self.items().items():
            if self.sim.level_of(kind, ident) != self.expected(s):
                out[(kind, ident)] = self.expected(s)
        return out

    def written(self, since: int = 0) -> list[tuple[tuple[str, int], int]]:
        """What the absolute adjustments since the ``since``-th wrote: ((kind, id), qty)."""
        out = []
        for adj in self.sim.adjustments[since:]:
            for item in adj["items"]:
                kind = "variant" if "variant_id" in item else "product"
                out.append(((kind, item[f"{kind}_id"]), item["quantity"]))
        return out

    def inventory_rows(self) -> int:
        k = self.world.katana
        return sum(1 for _, v in k.inventory_keys() if k.variants[v].deleted_at is None)

    def live_variants(self) -> int:
        return sum(1 for v in self.world.katana.variants.values() if v.deleted_at is None)


def build_catalogue(world: World) -> Catalogue:
    k = world.katana
    k.populate(N_VARIANTS, locations=2, seed=11)
    a, b = sorted(k.locations)
    dup_old = k.live_variant_for_sku(sku(10))
    assert dup_old is not None
    dup_new = k.add_product_variant(sku(10), in_stock={a: 7, b: 2})  # S8: created later, wins
    k.delete_variant(k.add_product_variant(sku(10), in_stock={a: 99}))  # deleted: not a rival
    for i in range(1, 6):
        v = k.live_variant_for_sku(sku(i))
        assert v is not None
        k.create_sales_order([(v, 2)], location_id=a)
    store = world.add_store("main", [])
    cat = Catalogue(world, store, dup_old, dup_new)
    _sell(cat)
    store.skus = cat.matched()
    return cat


def _sell(cat: Catalogue) -> None:
    """BigCommerce's side: every third level wrong, S7 fan-out, one side only, untracked."""
    sim = cat.sim
    for i in range(SOLD):
        right = cat.expected(sku(i))
        sim.add_product(f"P {i}", sku(i), inventory_level=right + 3 if i % 3 == 0 else right)
    sim.add_product("Second KS-00020", sku(20), inventory_level=0)  # S7
    group = sim.add_product("Group", "GRP-1", tracking="variant", variant_skus=GROUP)
    for n, (kind, ident) in enumerate(it for s in GROUP for it in sim.items_for_sku(s)):
        if n % 2:
            sim.set_level(kind, ident, 1, cat.expected(GROUP[n]))
    assert group
    for s in BC_ONLY:
        sim.add_product(s, s, inventory_level=4)
    for s in UNTRACKED:
        sim.add_product(s, s, tracking="none")


@pytest.fixture
def world(world: World) -> Iterator[World]:
    world.bc.request_validator = make_validator()
    yield world
    assert world.bc.spec_violations == []


def config_for(world: World, db_url: str, **sync: Any) -> Config:
    data = world.config_data(port=free_port(), database={"url": db_url}, sync=sync)
    return build_config(data, source="<test>")


async def reconcile(cfg: Config, *, dry_run: bool = False) -> ReconcileReport:
    """What ``katsyncd reconcile`` does, without the printing."""
    async with build_offline(cfg) as parts:
        return await parts.reconcile("test", dry_run=dry_run, push=True)


async def item_levels(db_url: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch("SELECT * FROM item_level ORDER BY store, item_key, location_id")
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def katana_requests(world: World) -> dict[str, int]:
    k = world.katana
    paths = ("/inventory", "/variants", "/sales_orders", "/sales_order_rows", "/locations")
    counts = {p: k.request_count(p) for p in paths}
    counts["total"] = k.request_count()
    return counts


# ----- CLI-style reconcile: compute, push what differs, record it ---------------------------------


async def test_reconcile_fixes_exactly_what_differs_and_reports_it(
    world: World, db_url: str
) -> None:
    cat = build_catalogue(world)
    wrong = cat.wrong_items()
    assert 80 < len(wrong) < 150  # many, but far from all
    report = await reconcile(config_for(world, db_url))

    assert sorted(cat.written()) == sorted(wrong.items())  # exactly the differing ones
    assert cat.wrong_items() == {}
    assert cat.sim.level_of("product", cat.sim.items_for_sku(sku(20))[1][1]) == cat.expected(
        sku(20)
    )
    main = report.store("main")
    assert main.summary() == {
        "dry_run": False,
        "matched_skus": SOLD + len(GROUP),
        "matched_items": SOLD + 1 + len(GROUP),
        "changed": len(wrong),
        "unchanged": SOLD + 1 + len(GROUP) - len(wrong),
        "written": len(wrong),
        "rejected": 0,
        "unmatched_katana": N_VARIANTS - SOLD - 1 - len(GROUP),
        "unmatched_bigcommerce": 2,
        "untracked": 2,
        "duplicates": 1,
        "fan_out": 1,
    }
    assert main.sides.unmatched_bigcommerce == BC_ONLY
    assert main.sides.untracked == UNTRACKED
    assert "KS-00270" not in main.sides.unmatched_katana
    assert main.duplicates == [Duplicate(sku(10), cat.dup_new, (cat.dup_old,))]
    keys = [f"p:{i}" for _, i in cat.sim.items_for_sku(sku(20))]
    assert main.sides.fan_out == {sku(20): keys}

    levels = await item_levels(db_url)
    assert len(levels) == SOLD + 1 + len(GROUP)
    assert all(r["desired"] == r["pushed"] for r in levels)
    assert {r["reason"] for r in levels} == {RECONCILE_REASON}


async def test_katana_requests_are_at_the_floor(world: World, db_url: str) -> None:
    cat = build_catalogue(world)
    report = await reconcile(config_for(world, db_url))
    floor = math.ceil(cat.inventory_rows() / MAX_PAGE_SIZE)
    sweeps = {
        "/variants": math.ceil(cat.live_variants() / MAX_PAGE_SIZE),  # bootstrap
        # The open orders re-read from scratch: one sweep per open status, then what changed
        # during the sweep (orders, rows) is read once more.
        "/sales_orders": 3 + 1,
        "/sales_order_rows": 1,
        "/locations": 1,
    }
    assert floor == 3 and report.inventory_pages == floor
    assert report.sales_order_requests == 5
    assert katana_requests(world) == {"/inventory": floor, **sweeps, "total": floor + 8}


async def test_second_reconcile_changes_nothing_and_writes_nothing(
    world: World, db_url: str
) -> None:
    cat = build_catalogue(world)
    cfg = config_for(world, db_url)
    await reconcile(cfg)
    adjustments, levels, before = (
        len(cat.sim.adjustments),
        await item_levels(db_url),
        katana_requests(world),
    )

    report = await reconcile(cfg)
    assert len(cat.sim.adjustments) == adjustments
    assert await item_levels(db_url) == levels
    assert report.store("main").changed == 0 and report.reverified_variants == 0
    used = {k: v - before[k] for k, v in katana_requests(world).items()}
    # The whole inventory again, the locations, the open sales orders from scratch (one sweep
    # per open status, then the orders and rows changed meanwhile) and one incremental
    # variants sweep, which re-reads 5 s before its watermark: here the whole catalogue.
    variants = math.ceil(len(world.katana.variants) / MAX_PAGE_SIZE)
    assert used == {
        "/inventory": 3,
        "/variants": variants,
        "/sales_orders": 3 + 1,
        "/sales_order_rows": 1,
        "/locations": 1,
        "total": 9 + variants,
    }


async def test_hand_edit_and_silent_katana_change_are_repaired(world: World, db_url: str) -> None:
    cat = build_catalogue(world)
    cfg = config_for(world, db_url)
    await reconcile(cfg)
    adjustments = len(cat.sim.adjustments)
    kind, edited = cat.sim.items_for_sku(sku(42))[0]
    cat.sim.set_level(kind, edited, 1, 999)  # a merchant types a level in BigCommerce
    v = world.katana.live_variant_for_sku(sku(43))
    assert v is not None
    world.katana.adjust_stock(v, sorted(world.katana.locations)[0], 5)  # no webhook for this
    before = katana_requests(world)

    report = await reconcile(cfg)
    ((_, other),) = cat.sim.items_for_sku(sku(43))
    assert sorted(cat.written(adjustments)) == sorted(
        [((kind, edited), cat.expected(sku(42))), (("product", other), cat.expected(sku(43)))]
    )
    assert cat.wrong_items() == {}
    assert report.reverified_variants == 1  # the sweep contradicted the recorded level: re-read
    assert katana_requests(world)["/inventory"] - before["/inventory"] == 3 + 1


# ----- the command line -------------------------------------------------------------------------


async def test_cli_dry_run_writes_nothing_and_csv_has_the_diff(
    world: World,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cat = build_catalogue(world)
    wrong = cat.wrong_items()
    config = write_config(
        tmp_path / "katsyncd.toml", world.config_data(port=free_port(), database={"url": db_url})
    )
    out = tmp_path / "diff.csv"
    code = await run_cli(
        ["--config", str(config), "reconcile", "--dry-run", "--store", "main", "--output", str(out)]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert cat.sim.adjustments == [] and await item_levels(db_url) == []
    assert "Reconcile (dry run)" in printed and "differences" in printed

    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(wrong)
    for r in rows:
        kind = "variant" if r["item_key"].startswith("v:") else "product"
        ident = int(r["item_key"][2:])
        assert r["store"] == "main" and r["action"] == "would_write" and r["location_id"] == "1"
        assert int(r["katana_says"]) == wrong[(kind, ident)] == cat.expected(r["sku"])
        assert int(r["bigcommerce_now"]) == cat.sim.level_of(kind, ident)


async def test_cli_unknown_store_exits_2(
    world: World,
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world.add_store("main", [])
    config = write_config(
        tmp_path / "k.toml", world.config_data(port=free_port(), database={"url": db_url})
    )
    code = await run_cli(["--config", str(config), "reconcile", "--store", "nope"])
    assert code == 2
    assert "unknown store(s): nope (configured: main)" in capsys.readouterr().err
    assert world.katana.request_count() == 0


# ----- the daemon -------------------------------------------------------------------------------


def metric(daemon: Daemon, outcome: str) -> float:
    value = daemon.metrics.registry.get_sample_value(
        "katsyncd_reconcile_runs_total", {"outcome": outcome}
    )
    return value or 0.0


async def test_scheduled_reconcile_repairs_a_hand_edit_without_rewriting_the_rest(
    world: World, db_url: str
) -> None:
    cat = build_catalogue(world)
    async with running_daemon(world, db_url, reconcile_interval_seconds=1.0) as d:
        await converge(world)
        await eventually(lambda: metric(d, "ok") >= 1)
        adjustments = len(cat.sim.adjustments)
        kind, edited = cat.sim.items_for_sku(sku(7))[0]
        cat.sim.set_level(kind, edited, 1, 555)
        runs = metric(d, "ok")
        await eventually(lambda: cat.sim.level_of(kind, edited) == cat.expected(sku(7)))
        assert metric(d, "ok") > runs
        assert cat.written(adjustments) == [((kind, edited), cat.expected(sku(7)))]
        status, body = await get_json(d, "/status")
        assert status == 200 and body["last_reconcile"]["reason"] == SCHEDULED
        assert body["last_reconcile"]["stores"]["main"]["matched_items"] == SOLD + 1 + len(GROUP)


async def test_store_switched_on_by_reload_is_reconciled_soon(world: World, db_url: str) -> None:
    k = world.katana
    a = k.add_location("Main", is_primary=True)
    k.add_product_variant("ON-1", in_stock={a: 5})
    late = world.add_store("late", ["ON-1"], settings={"stock_sync": False})
    async with running_daemon(world, db_url) as d:
        await eventually(lambda: d._mirror_ready())
        assert d.last_reconcile is None
        new = d.config.model_copy(
            update={"stores": (d.config.stores[0].model_copy(update={"stock_sync": True}),)}
        )
        assert await d.reload(new)
        await eventually(lambda: (d.last_reconcile or {}).get("reason") == "store_switched_on")
        await eventually(lambda: late.sim.level("ON-1") == 5)


@pytest.fixture
async def any_world(quirks: Quirks) -> AsyncIterator[World]:
    """The catch-up test runs against both readings of the loosely documented behaviours."""
    w = await start_world(quirks)
    w.bc.request_validator = make_validator()
    yield w
    assert w.bc.spec_violations == []
    await w.stop()


async def test_catch_up_gap_gets_a_reconcile(any_world: World, db_url: str) -> None:
    world = any_world
    cat = build_catalogue(world)
    conn = await asyncpg.connect(db_url)
    try:
        old = datetime.now(UTC) - timedelta(days=30)
        for kind in ("variants", "sales_orders", "movements"):
            await conn.execute(
                "INSERT INTO poll_watermark (kind, updated_at) VALUES ($1, $2)", kind, old
            )
    finally:
        await conn.close()
    async with running_daemon(world, db_url, subscribe=False) as d:
        await eventually(lambda: (d.last_reconcile or {}).get("reason") == "catch_up_gap", 30)
        await converge(world)
    assert cat.wrong_items() == {}


@pytest.mark.timeout(120)
async def test_reconcile_yields_to_live_changes_and_never_gets_a_429(db_url: str) -> None:
    """Katana's quota at 30 a minute on both sides, the budget nearly spent: the reconcile
    waits for the reserve while a live change goes through, and Katana never answers 429."""
    world = await World.start(katana_rpm=30, bc_quota=150, webhook_retry_delays=(0.2, 0.5, 1.0))
    try:
        cat = build_catalogue(world)
        async with running_daemon(world, db_url, poll_interval_seconds=120.0) as d:
            await converge(world, 30)
            while d.katana_limiter.try_acquire(Priority.LIVE):
                pass  # what other apps on the account would have spent
            d.reconcile_schedule.ask("test")
            await eventually(lambda: d.katana_limiter.snapshot()["waiting_reconcile"] > 0, 30)
            v = world.katana.live_variant_for_sku(sku(3))
            assert v is not None
            world.katana.create_sales_order([(v, 4)], location_id=sorted(world.katana.locations)[0])
            await eventually(lambda: cat.sim.level(sku(3)) == cat.expected(sku(3)), 30)
            assert d.last_reconcile is None  # the live change did not wait for the reconcile
            await eventually(lambda: (d.last_reconcile or {}).get("reason") == "test", 60)
            await converge(world, 30)
            waited = d.metrics.registry.get_sample_value(
                "katsyncd_katana_limiter_wait_seconds_total", {"priority": "reconcile"}
            )
        assert waited is not None and waited > 5  # held back by the reserve
        assert [r for r in world.katana.request_log if r.status == 429] == []
    finally:
        await world.stop()
