"""Oversell guard and safety buffer, against the running daemon and the simulators."""

from __future__ import annotations

import time

import pytest

from katsyncd.daemon import Daemon
from katsyncd.sim.world import World
from katsyncd.writer import split_for_guard
from tests.support.harness import eventually, get_json, running_daemon

pytestmark = pytest.mark.timeout(90)

DELAY = 2.0


def row(
    desired: int,
    pushed: int | None,
    age: float | None,
    checked: bool = False,
    rereading: bool = False,
) -> dict[str, object]:
    return {
        "desired": desired,
        "pushed": pushed,
        "increase_age": age,
        "guard_checked": checked,
        "rereading": rereading,
    }


async def main_status(d: Daemon, key: str, expected: int) -> bool:
    """Store "main" in ``/status`` shows ``key == expected``."""
    _, status = await get_json(d, "/status")
    return bool([s[key] for s in status["stores"] if s["name"] == "main"] == [expected])


def test_split_for_guard_rules() -> None:
    rows = [
        row(3, 5, None),  # decrease: now
        row(9, None, None),  # first write: now
        row(9, 5, 0.5),  # fresh increase: held
        row(9, 5, 5.0),  # old increase, not re-read: re-read, held
        row(9, 5, 5.0, checked=True, rereading=True),  # re-read under way: held
        row(9, 5, 5.0, checked=True),  # re-read done: now
    ]
    split = split_for_guard(rows, DELAY)  # type: ignore[arg-type]
    assert split.write == [rows[0], rows[1], rows[5]]
    assert split.recheck == [rows[3]]
    assert split.held == 3


async def test_increase_is_held_then_reread_decrease_is_not(world: World, db_url: str) -> None:
    k = world.katana
    a = k.add_location("Main", is_primary=True)
    v = k.add_product_variant("G-A", in_stock={a: 10})
    store = world.add_store(
        "main",
        ["G-A"],
        settings={"oversell_guard": True, "increase_delay_seconds": DELAY, "buffer": 1},
    )
    async with running_daemon(world, db_url):
        await eventually(lambda: store.sim.level("G-A") == 9)  # first write is not held
        k.adjust_stock(v, a, -4)
        k.emit("current_inventory.product_updated", v)
        await eventually(lambda: store.sim.level("G-A") == 5, limit=3)  # decreases go now
        k.receive_purchase_order(v, a, 20)  # +20: an increase
        started = time.monotonic()
        reads_before = k.request_count("/inventory")
        await eventually(lambda: store.sim.level("G-A") == 25, limit=15)
        assert time.monotonic() - started >= DELAY  # held at least the delay
        assert k.request_count("/inventory") > reads_before + 1  # and re-read before writing


async def test_increase_undone_during_the_hold_is_never_written(world: World, db_url: str) -> None:
    k = world.katana
    a = k.add_location("Main", is_primary=True)
    v = k.add_product_variant("G-B", in_stock={a: 10})
    store = world.add_store(
        "main", ["G-B"], settings={"oversell_guard": True, "increase_delay_seconds": DELAY}
    )
    async with running_daemon(world, db_url) as d:
        await eventually(lambda: store.sim.level("G-B") == 10)
        k.receive_purchase_order(v, a, 5)  # 15: held
        await eventually(lambda: main_status(d, "held_by_oversell_guard", 1))
        k.create_sales_order([(v, 5)], location_id=a, ecommerce_order_type="bigCommerce")  # 10
        # Desired is back at what BigCommerce has: nothing left to write, ever (a write of 15
        # would have left pushed = 15 and a backlog until 10 was written again).
        await eventually(lambda: main_status(d, "backlog", 0))
        written = [i["quantity"] for adj in store.sim.adjustments for i in adj["items"]]
        assert 15 not in written
        assert store.sim.level("G-B") == 10
