"""Operability: metrics exposition (checked by promtool), health endpoints, secrets never
served. The daemon as systemd sees it (a subprocess) is in ``tests/e2e/test_systemd.py``."""

from __future__ import annotations

import asyncio
import os
import shutil
from asyncio.subprocess import PIPE, STDOUT

import aiohttp
import pytest

from katsyncd.sim.world import KATANA_KEY, WEBHOOK_TOKEN, World
from tests.support.harness import eventually, get_json, running_daemon, stock_one_sku

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def world(world: World) -> World:
    stock_one_sku(world, "OP-A", 3)
    return world


def promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.environ.get("CI") == "true":
        pytest.fail("promtool missing in CI (.ci/run installs Debian's prometheus package)")
    return found


async def get_text(port: int | None, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


PIPELINE_SERIES = (
    "katsyncd_build_info",
    "katsyncd_katana_requests_total",
    "katsyncd_bigcommerce_requests_total",
    "katsyncd_bigcommerce_items_written_total",
    "katsyncd_sync_lag_seconds_bucket",
    "katsyncd_store_last_successful_push_timestamp_seconds",
    "katsyncd_unmatched_skus",
    "katsyncd_config_last_reload_successful",
    "katsyncd_debounce_marks_total",
)


async def test_metrics_pass_promtool_and_cover_the_pipeline(world: World, db_url: str) -> None:
    async with running_daemon(world, db_url) as d:
        await eventually(lambda: world.stores[0].sim.level("OP-A") == 3)

        async def covered() -> bool:  # the per-store gauges appear at a status refresh
            status, text = await get_text(d.http_port, "/metrics")
            return status == 200 and all(name in text for name in PIPELINE_SERIES)

        await eventually(covered)
        status, text = await get_text(d.http_port, "/metrics")
    assert status == 200
    for name in PIPELINE_SERIES:
        assert name in text, name
    tool = promtool()
    if tool is None:
        # Justified skip: a developer machine may lack promtool; in CI promtool() fails instead.
        pytest.skip("promtool not installed (apt-get install prometheus); CI installs it")
    proc = await asyncio.create_subprocess_exec(
        tool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
    )
    out, _ = await proc.communicate(text.encode())
    assert proc.returncode == 0, out.decode()


async def test_health_ready_and_status_never_leak_secrets(world: World, db_url: str) -> None:
    async with running_daemon(world, db_url) as d:
        assert await get_json(d, "/healthz") == (200, {"status": "ok"})
        status, ready = await get_json(d, "/readyz")
        assert status == 200 and ready["checks"]["database"] is True
        assert ready["checks"]["migrations_pending"] == []
        bodies = [(await get_text(d.http_port, p))[1] for p in ("/readyz", "/status", "/metrics")]
    joined = "\n".join(bodies)
    assert '"stores"' in joined
    for secret in (KATANA_KEY, WEBHOOK_TOKEN, world.stores[0].token):
        assert secret not in joined
