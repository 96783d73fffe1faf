"""Committed-drift scenario: sales-order rows edited without touching their order.

``python -m bench.committed_drift --db-url postgresql://postgres@127.0.0.1:5432/postgres``

Starts the real daemon against the simulators (polls every ``--poll`` seconds) with open
orders an hour old (so no poll's overlap re-reads them by chance) and one new order, waits until
BigCommerce is right, then makes ``--edits`` row edits that leave their orders alone (quantity
changed, row moved to another variant, row deleted, in turn; no webhook, as in Katana) and
reports how many SKUs BigCommerce has wrong after two poll intervals, under both readings of
``KatanaQuirks.row_edits_bump_order``. Each run gets a fresh, migrated database on the server
at ``--db-url``, dropped afterwards. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid

import asyncpg
import structlog

from katsyncd.db import migrate
from katsyncd.sim.quirks import KatanaQuirks, Quirks
from katsyncd.sim.world import World
from tests.support.harness import running_daemon


async def _fresh_db(admin_url: str) -> tuple[str, str]:
    name = f"katsyncd_drift_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return name, url


async def _drop_db(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def scenario(admin_url: str, *, skus: int, edits: int, poll: float, bump: bool) -> str:
    quirks = Quirks(katana=KatanaQuirks(row_edits_bump_order=bump))
    world = await World.start(katana_rpm=6000, bc_quota=1000, quirks=quirks)
    name, url = await _fresh_db(admin_url)
    try:
        k = world.katana
        real_clock = k._clock
        k._clock = lambda: real_clock() - 3600.0  # the orders are an hour old...
        main = k.add_location("Main", is_primary=True)
        names = [f"DRIFT-{i:03d}" for i in range(skus)]
        variants = [k.add_product_variant(s, in_stock={main: 100}) for s in names]
        rows = []
        for i in range(edits):
            v = variants[i % skus]
            so = k.create_sales_order([(v, 2)], location_id=main, ecommerce_order_type="shopify")
            rows.append(k.sales_orders[so].rows[0].id)
        k._clock = real_clock
        other = k.add_product_variant("DRIFT-OTHER", in_stock={main: 100})
        k.create_sales_order([(other, 1)], location_id=main)  # ...and one is new
        world.add_store("main", [*names, "DRIFT-OTHER"])
        async with running_daemon(world, url, poll_interval_seconds=poll):
            took = await world.wait_converged(60, poll=0.05)
            assert took is not None, f"never converged: {world.wrong()}"
            for i, row in enumerate(rows):
                if i % 3 == 0:
                    k.set_sales_order_row_quantity(row, 5)
                elif i % 3 == 1:
                    k.move_sales_order_row(row, variants[(i + 1) % skus])
                else:
                    k.delete_sales_order_row(row)
            started = time.monotonic()
            right_at: float | None = None
            while time.monotonic() - started < 2 * poll:  # a fixed time: what is measured
                if right_at is None and world.converged():
                    right_at = time.monotonic() - started
                await asyncio.sleep(0.05)
            wrong = len(world.wrong()["main"])
            if right_at is None and await world.wait_converged(30, poll=0.05) is not None:
                right_at = time.monotonic() - started
        after = "not within 30 s" if right_at is None else f"{right_at:.1f} s"
        return (
            f"row_edits_bump_order={bump!s:5}: {edits} row edits over {skus} SKUs -> "
            f"{wrong} SKUs wrong after 2 poll intervals ({2 * poll:.0f} s); all right after: "
            f"{after}"
        )
    finally:
        await world.stop()
        await _drop_db(admin_url, name)


async def main_async(args: argparse.Namespace) -> None:
    for bump in (True, False):
        line = await scenario(
            args.db_url, skus=args.skus, edits=args.edits, poll=args.poll, bump=bump
        )
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True, help="a Postgres server URL (admin rights)")
    parser.add_argument("--skus", type=int, default=30)
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--poll", type=float, default=2.0, help="poll interval, seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
