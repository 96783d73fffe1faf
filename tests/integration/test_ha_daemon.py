"""Two daemons in this process on one database: one leads, the other follows; both are ready
and say so in ``/status`` and the metrics; a follower's webhook marks are synced by the
leader; stopping the leader hands the lease to the follower."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from katsyncd.daemon import Daemon
from katsyncd.sim.world import World
from tests.support.harness import (
    converge,
    eventually,
    get_json,
    metric,
    running_daemon,
    start_world,
    stock_one_sku,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = await start_world()
    stock_one_sku(w, "SKU-1", 7)
    yield w
    await w.stop()


async def test_one_leads_one_follows_both_ready_and_the_follower_hands_work_over(
    world: World, db_url: str
) -> None:
    # No poll for an hour after the first ones and only the follower subscribed: a change
    # reaches the leader through the follower's NOTIFY, or not at all.
    async with running_daemon(
        world, db_url, subscribe=False, poll_interval_seconds=3600.0
    ) as first:
        await eventually(lambda: metric(first, "katsyncd_leader") == 1, 10)
        async with running_daemon(world, db_url, poll_interval_seconds=3600.0) as second:
            await converge(world)
            for d, role in ((first, "leader"), (second, "follower")):
                code, doc = await get_json(d, "/status")
                assert code == 200
                lead = doc["leadership"]
                assert (lead["role"], lead["holder"], lead["epoch"]) == (
                    role,
                    first.replica,
                    1,
                )
                assert lead["replica"] == d.replica and lead["expires_in"] > 0
                assert (await get_json(d, "/readyz"))[0] == 200
            assert metric(second, "katsyncd_leader") == 0
            assert len(second.variants) == 0  # a follower times nothing
            variant, location = (
                next(iter(world.katana.variants)),
                next(iter(world.katana.locations)),
            )
            world.katana.adjust_stock(variant, location, 5)  # no webhook of its own, so:
            world.katana.emit("current_inventory.product_updated", variant)  # to the follower
            await converge(world, 10)
            await _stop(first)
            await eventually(lambda: metric(second, "katsyncd_leader") == 1, 5)
            assert metric(second, "katsyncd_leader_epoch") == 2
            world.katana.adjust_stock(variant, location, -3)
            world.katana.emit("current_inventory.product_updated", variant)
            await converge(world)


async def _stop(d: Daemon) -> None:
    d.request_stop()
    await eventually(lambda: not d.ready, 30)
