"""The status page with a big catalogue (issue 13): page weight and load time of the overview
with 5,000 matched SKUs, and of a SKU page, the push history and its CSV export.

``python -m bench.ui [--skus 5000] [--runs 3]`` builds the benchmark world (store "a" sells
every SKU; "b" every other one), lets katsyncd sync it with the status pages on, then measures:

- server time and bytes of each page (aiohttp client, ``--runs`` times);
- the overview's load in headless Chromium (Debian's ``/usr/bin/chromium`` through
  Playwright): navigation start to the ``load`` event, and bytes of HTML + CSS + JS.

``python -m bench.ui --screenshots-of URL --out docs/img`` saves the screenshots of a running
daemon's pages (the README's come from ``katsyncd demo``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.pg import PgServer
from bench.world import build_world, seed_levels, skus
from katsyncd.config import build_config
from katsyncd.daemon import Daemon
from katsyncd.sim.world import free_port

CHROMIUM = os.environ.get("KATSYNCD_CHROMIUM", "/usr/bin/chromium")


def summary(label: str, values: list[float], unit: str) -> str:
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{label:<38} median {med:9.1f} {unit}  (min {lo:.1f}, max {hi:.1f}, n={len(values)})"


async def timed(runs: int, once: Callable[[], Awaitable[int]]) -> tuple[list[float], int]:
    """Milliseconds of each run, and the bytes of the last."""
    times, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        size = await once()
        times.append((time.perf_counter() - started) * 1000)
    return times, size


async def fetch_bytes(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as r:
        r.raise_for_status()
        return len(await r.read())


async def settle(daemon: Daemon, items: int, limit: float) -> float:
    """Seconds until every item has a level and nothing is left to write."""
    started = time.monotonic()
    query = (
        "SELECT count(*) FILTER (WHERE desired IS NOT DISTINCT FROM pushed), count(*)"
        " FROM item_level"
    )
    while time.monotonic() - started < limit:
        if not daemon.ready:
            await asyncio.sleep(0.1)
            continue
        right, total = await daemon.db.pool.fetchrow(query)
        if total >= items and right == total:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise SystemExit(f"not settled within {limit} s")


async def server_figures(base: str, runs: int) -> list[str]:
    out = []
    async with aiohttp.ClientSession() as s:
        for label, path in (
            ("GET / (overview)", "/"),
            ("GET /ui/live (live refresh)", "/ui/live"),
            ("GET /sku/KS-00042", "/sku/KS-00042"),
            ("GET /pushes (first 100)", "/pushes"),
            ("GET /pushes.csv (every push)", "/pushes.csv"),
        ):
            times, size = await timed(runs, lambda p=path: fetch_bytes(s, base + p))  # type: ignore[misc]
            out.append(summary(label, times, "ms") + f"  {size:,} bytes")
    return out


async def browser_figures(base: str, runs: int) -> list[str]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await (await browser.new_context()).new_page()
        weights: dict[str, int] = {}

        async def count(response: Any) -> None:
            weights[response.url] = len(await response.body())

        page.on("response", count)
        loads = []
        for _ in range(runs):
            await page.goto(base + "/", wait_until="load")
            timing = await page.evaluate(
                "(() => { const n = performance.getEntriesByType('navigation')[0];"
                " return n.loadEventEnd - n.startTime; })()"
            )
            loads.append(float(timing))
        await browser.close()
    total = sum(weights.values())
    parts = ", ".join(f"{u.rsplit('/', 1)[-1] or 'index'} {b:,}" for u, b in weights.items())
    return [
        summary("overview load in Chromium (to load event)", loads, "ms"),
        f"overview page weight: {total:,} bytes (HTML+CSS+JS: {parts})",
    ]


async def run(n: int, runs: int) -> None:
    async with PgServer() as pg:
        db_url = await pg.create_database("ui")
        world = await build_world(n, katana_rpm=10_000, bc_quota=100_000)
        try:
            seed_levels(world)
            port = free_port()
            data = world.config_data(port=port, database={"url": db_url})
            data["server"]["ui"] = True
            daemon = Daemon(build_config(data, source="<bench.ui>"))
            task = asyncio.create_task(daemon.run(install_signals=False))
            items = sum(len(s.skus) for s in world.stores)
            took = await settle(daemon, items, 600)
            await daemon.db.pool.execute(
                "INSERT INTO push_log (store, sku, item_key, location_id, old_quantity,"
                " new_quantity, reason, outcome, stale_since) SELECT 'a', sku, item_key, 1, 1,"
                " 2, 'bench', 'written', now() - interval '1 second' FROM bc_item"
            )
            matched = await daemon.db.pool.fetchval(
                "SELECT count(DISTINCT sku) FROM bc_item WHERE store = 'a'"
            )
            print(
                f"world: {n} Katana SKUs; store a: {matched} matched SKUs; synced in {took:.1f} s"
            )
            base = f"http://127.0.0.1:{port}"
            for line in await server_figures(base, runs) + await browser_figures(base, runs):
                print(line)
            daemon.request_stop()
            await task
        finally:
            await world.stop()
            await pg.drop_database(db_url)


async def screenshots(base: str, out: Path, sku: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for name, size in (("", {"width": 1280, "height": 900}), ("-phone", None)):
            ctx = await browser.new_context(viewport=size or {"width": 390, "height": 844})
            page = await ctx.new_page()
            await page.goto(base + "/", wait_until="load")
            await page.screenshot(path=str(out / f"ui-overview{name}.png"), full_page=True)
            await page.goto(f"{base}/sku/{sku}", wait_until="load")
            await page.screenshot(path=str(out / f"ui-sku{name}.png"), full_page=True)
        await browser.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.splitlines()[0])
    p.add_argument("--skus", type=int, default=5000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--screenshots-of", help="base URL of a running daemon's status pages")
    p.add_argument("--sku", default=skus(1)[0], help="the SKU page to capture")
    p.add_argument("--out", default="docs/img")
    args = p.parse_args()
    if args.screenshots_of:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        asyncio.run(screenshots(args.screenshots_of.rstrip("/"), Path(args.out), args.sku))
    else:
        asyncio.run(run(args.skus, args.runs))


if __name__ == "__main__":
    main()
