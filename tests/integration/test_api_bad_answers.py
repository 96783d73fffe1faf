"""Answers not as the APIs document them (a 2xx that is not JSON, rate-limit headers
stripped): each gets a log line naming the endpoint and what was expected, counts in
``katsyncd_api_unexpected_responses_total``, and loses no stale mark (the level still arrives)."""

from __future__ import annotations

import dataclasses

import pytest
import structlog

from katsyncd.daemon import Daemon
from katsyncd.sim.world import World
from tests.support.harness import converge, eventually, running_daemon, stock_one_sku

pytestmark = pytest.mark.timeout(60)

UNEXPECTED = "katsyncd_api_unexpected_responses_total"


def unexpected(daemon: Daemon, api: str, what: str) -> float:
    """The counter summed over endpoints."""
    return sum(
        sample.value
        for family in daemon.metrics.registry.collect()
        for sample in family.samples
        if sample.name == UNEXPECTED
        and sample.labels.get("api") == api
        and sample.labels.get("what") == what
    )


async def test_garbage_bodies_are_logged_counted_and_retried(world: World, db_url: str) -> None:
    stock_one_sku(world, "BAD-1", 10)
    (variant_id,) = world.katana.variants
    (location_id,) = world.katana.locations
    store = world.stores[0].sim
    async with running_daemon(world, db_url) as d:
        await converge(world)
        with structlog.testing.capture_logs() as logs:
            world.katana.garbage_next(2, path_prefix="/inventory")
            store.garbage_next(2, path_prefix="/inventory/adjustments")
            world.katana.adjust_stock(variant_id, location_id, 5)
            await eventually(lambda: store.level("BAD-1") == 15)
            await converge(world)
        assert unexpected(d, "katana", "body") >= 1
        assert unexpected(d, "bigcommerce", "body") >= 1
    lines = {e["event"]: e for e in logs if e["event"].endswith("_unexpected_response")}
    assert set(lines) == {"katana_unexpected_response", "bigcommerce_unexpected_response"}
    for line in lines.values():
        assert line["endpoint"] and line["expected"] and line["status"] == 200


async def test_stripped_rate_limit_headers_are_logged_once_and_counted(
    world: World, db_url: str
) -> None:
    stock_one_sku(world, "HDR-1", 7)
    world.katana.quirks = dataclasses.replace(world.katana.quirks, rate_limit_headers=False)
    world.bc.quirks = dataclasses.replace(world.bc.quirks, rate_limit_headers=False)
    (variant_id,) = world.katana.variants
    (location_id,) = world.katana.locations
    with structlog.testing.capture_logs() as logs:
        async with running_daemon(world, db_url) as d:
            await converge(world)
            world.katana.adjust_stock(variant_id, location_id, -2)
            await converge(world)
            assert unexpected(d, "katana", "no_rate_limit_headers") >= 2
            assert unexpected(d, "bigcommerce", "no_rate_limit_headers") >= 1
    missing = [e for e in logs if e["event"].endswith("_rate_limit_headers_missing")]
    per_endpoint = [(e["event"], e["endpoint"]) for e in missing]
    assert len(per_endpoint) == len(set(per_endpoint)), "logged once per endpoint"
    assert {e["event"] for e in missing} == {
        "katana_rate_limit_headers_missing",
        "bigcommerce_rate_limit_headers_missing",
    }
    assert all(e["expected"].lower().startswith("x-rate") for e in missing)
