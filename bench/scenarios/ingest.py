"""ingest: how many webhooks a second the system acknowledges, and how fast, while its sync
runs. The system runs as its own process; the load generator (``bench/loadgen.py``: wrk with
a signing-free replay of pre-signed requests, or an aiohttp client) runs in another. Every
request carries a valid HMAC.

katsyncd answers 2xx only after the stale marks are committed in Postgres (group commit);
the baseline answers as soon as the event is on its in-memory queue (nothing durable).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.loadgen import pick_tool
from bench.profiles import BC_QUOTA, Ingest
from bench.report import Row, Target
from bench.systems import Baseline, Katsyncd, System
from bench.workload import webhook_bodies
from bench.world import SEED, build_world, seed_levels
from katsyncd.sim.world import WEBHOOK_TOKEN, World

NAME = "ingest"
BODIES = 10_000


async def run(ctx: Context) -> list[Row]:
    p = ctx.profile.ingest
    sync = ctx.profile.sync.as_config()
    k = await _one(ctx, Katsyncd(ctx.pg, ctx.workdir, NAME, sync=sync, log_level="warning"), p)
    b = await _one(ctx, Baseline(ctx.workdir, NAME, rpm=p.katana_rpm), p)
    ctx.note(
        NAME,
        f"load generator: {k['tool']}, {p.connections} connections, {p.seconds:g} s, "
        f"{BODIES:,} distinct signed bodies (80 % current_inventory.product_updated, 20 % "
        f"sales_order.updated) on {p.variants:,} variants; the system has its sync running "
        f"(2 stores, Katana {p.katana_rpm}/min). Baseline acks are not durable (in-memory queue).",
    )
    return _rows(k, b)


def _orders(world: World, n: int) -> list[int]:
    """Open sales orders that exist before the system starts (so nothing is announced)."""
    rng = random.Random(SEED)
    products = [v.id for v in world.katana.variants.values() if v.type == "product"]
    locations = sorted(world.katana.locations)
    return [
        world.katana.create_sales_order(
            [(rng.choice(products), 1)], location_id=rng.choice(locations)
        )
        for _ in range(n)
    ]


async def _one(ctx: Context, system: System, p: Ingest) -> dict[str, Any]:
    world = await build_world(
        p.variants, katana_rpm=p.katana_rpm, bc_quota=BC_QUOTA, quirks=ctx.quirks
    )
    try:
        so_ids = _orders(world, p.sales_orders)
        if isinstance(system, Baseline):
            seed_levels(world)
        await system.start(world, subscribe=False)
        await system.warm_up(world, 120.0)
        products = [v.id for v in world.katana.variants.values() if v.type == "product"]
        path = ctx.workdir / f"{NAME}-bodies.jsonl"
        path.write_bytes(b"\n".join(webhook_bodies(products, so_ids, BODIES)) + b"\n")
        ctx.say(NAME, f"{system.name}: load for {p.seconds:g} s")
        assert system.proc is not None
        cpu_before = system.proc.cpu_seconds() or 0.0
        async with ctx.profiled(system, NAME):
            result = await loadgen(ctx, system.port, path, p)
        result["cpu_seconds"] = (system.proc.cpu_seconds() or 0.0) - cpu_before
        ctx.say(NAME, f"{system.name}: {result['ok_per_second']:,.0f}/s, p99 {result['p99_ms']} ms")
        return result
    finally:
        await system.stop()
        await world.stop()


async def loadgen(ctx: Context, port: int, bodies: Path, p: Ingest) -> dict[str, Any]:
    args = [
        sys.executable, "-m", "bench.loadgen",
        "--url", f"http://127.0.0.1:{port}/webhooks/katana",
        "--token", WEBHOOK_TOKEN,
        "--bodies", str(bodies),
        "--seconds", str(p.seconds),
        "--connections", str(p.connections),
        "--tool", pick_tool(p.loadgen),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode}): {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def _cpu_per_1000(result: dict[str, Any]) -> float | None:
    ok = result.get("ok") or 0
    return None if not ok else 1e6 * result["cpu_seconds"] / ok


def _rows(k: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    return [
        Row(
            NAME,
            "webhooks acknowledged per second (2xx)",
            "/s",
            k["ok_per_second"],
            b["ok_per_second"],
            Target(3000, at_least=True, unit="/s"),
        ),
        Row(NAME, "ack time p50", "ms", k["p50_ms"], b["p50_ms"]),
        Row(NAME, "ack time p99", "ms", k["p99_ms"], b["p99_ms"], Target(100, unit=" ms")),
        Row(NAME, "requests answered", "", k["requests"], b["requests"]),
        Row(
            NAME,
            "CPU ms of the system's process per 1,000 acks",
            "ms",
            _cpu_per_1000(k),
            _cpu_per_1000(b),
        ),
        Row(
            NAME,
            "non-2xx answers + errors",
            "",
            k["non_2xx"] + k["errors"],
            b["non_2xx"] + b["errors"],
        ),
    ]
