"""Postgres stopped, then frozen (SIGSTOP), for ``outage_seconds`` each, under webhooks; and a
reload (SIGHUP) during an outage. Only the suite's own Postgres is stopped or frozen.

During each outage a stream of Katana changes is announced by signed webhooks the suite sends
itself (no subscription, polls 10 min apart, each variant changed once), so a change whose
webhook got a 2xx can reach BigCommerce only through the mark that 2xx promised:
``2xx-then-lost`` counts those whose SKU is still wrong when the cap runs out after recovery.
``/readyz`` is probed every 0.25 s with a 5 s client timeout; its slowest answer is reported."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import Any

import aiohttp

from faults.common import Context, Daemon, make_world, signature, store, wait_right
from faults.report import Expect, Row, zero
from katsyncd.sim.world import World

READYZ_TIMEOUT = 5.0
QUIET_POLLS = {"poll_interval_seconds": 600.0}


def stock_body(world: World, variant_id: int) -> bytes:
    object_id, href = world.katana.inventory_event_object(variant_id)
    obj: dict[str, Any] = {"id": object_id}
    if href is not None:
        obj["href"] = f"{world.katana_url}{href}"
    payload = {
        "resource_type": "current_inventory",
        "action": "current_inventory.product_updated",
        "webhook_id": 1,
        "object": obj,
    }
    return json.dumps(payload).encode()


class Announcer:
    """Changes one fresh variant's stock and sends its signed webhook, every ``every`` s."""

    def __init__(self, world: World, port: int, rng: random.Random) -> None:
        self.world = world
        self.url = f"http://127.0.0.1:{port}/webhooks/katana"
        self.rng = rng
        sold = set(store(world, "a").skus)
        self.fresh = [
            v for v, var in world.katana.variants.items() if getattr(var, "sku", None) in sold
        ]
        rng.shuffle(self.fresh)
        self.acked: list[str] = []  # SKUs whose change got a 2xx
        self.statuses: dict[str, int] = {}

    async def run(self, seconds: float, every: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            pending: set[asyncio.Task[None]] = set()
            while time.monotonic() < deadline and self.fresh:
                pending.add(asyncio.create_task(self._one(s, self.fresh.pop())))
                await asyncio.sleep(every)
            if pending:
                await asyncio.wait(pending)

    async def _one(self, s: aiohttp.ClientSession, variant_id: int) -> None:
        loc = self.rng.choice(sorted(self.world.katana.locations))
        self.world.katana.adjust_stock(variant_id, loc, self.rng.randint(1, 9))
        sku = self.world.katana.variants[variant_id].sku
        body = stock_body(self.world, variant_id)
        key = "error"
        try:
            async with s.post(
                self.url, data=body, headers={"x-sha2-signature": signature(body)}
            ) as r:
                key = f"{r.status // 100}xx"
                if 200 <= r.status < 300 and sku is not None:
                    self.acked.append(sku)
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def lost(self) -> int:
        a = store(self.world, "a")
        return sum(
            1 for sku in self.acked if a.sim.level(sku, 1) != a.expected(self.world.katana, sku)
        )


async def probe_readyz(port: int, stop: asyncio.Event) -> list[float]:
    """Seconds each /readyz took (a timeout counts as READYZ_TIMEOUT)."""
    took: list[float] = []
    timeout = aiohttp.ClientTimeout(total=READYZ_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        while not stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                    await r.read()
            took.append(min(READYZ_TIMEOUT, time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
    return took


async def acked_right(ann: Announcer, limit: float, since: float) -> float | None:
    """Seconds from ``since`` until every 2xx-acknowledged change is in store "a"."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ann.lost() == 0:
            return time.monotonic() - since
        await asyncio.sleep(0.1)
    return None


async def outage(ctx: Context) -> list[Row]:
    p = ctx.profile
    rows: list[Row] = []
    for mode in ("stopped", "frozen"):
        name = f"postgres {mode}"
        world = await make_world(ctx, stores=1)
        daemon = Daemon(ctx, world, f"pg{mode}", sync=QUIET_POLLS, subscribe=False)
        try:
            await daemon.start()
            if await wait_right(world, p.converge_cap) is None:
                raise RuntimeError(f"initial sync did not converge:\n{daemon.log_tail()}")
            ann = Announcer(world, daemon.port, random.Random(21))
            stop = asyncio.Event()
            probe = asyncio.create_task(probe_readyz(daemon.port, stop))
            sending = asyncio.create_task(ann.run(p.outage_seconds + 4.0))
            await asyncio.sleep(1.0)
            if mode == "stopped":
                await ctx.pg.stop()
            else:
                ctx.pg.freeze()
            ctx.say(name, f"Postgres {mode} for {p.outage_seconds:g} s")
            await asyncio.sleep(p.outage_seconds)
            if mode == "stopped":
                await ctx.pg.start()
            else:
                ctx.pg.thaw()
            recovered = time.monotonic()
            await sending
            stop.set()
            readyz = await probe
            acked = set(ann.acked)
            caught_up = await acked_right(ann, p.converge_cap, recovered)
            lost = ann.lost()
            alive = daemon.alive()
            ctx.say(name, f"webhooks {ann.statuses}, lost {lost}, alive {alive}")
        finally:
            ctx.pg.thaw()
            await ctx.pg.start()
            await daemon.stop()
            await world.stop()
        answered = sum(ann.statuses.values())
        rows += [
            Row(
                name,
                "webhooks sent / 2xx / 503 / no answer",
                answered,
                note=f"{len(acked)} 2xx, {ann.statuses.get('5xx', 0)} 5xx, "
                f"{ann.statuses.get('error', 0)} none",
            ),
            zero("2xx-then-lost", name, lost),
            Row(
                name,
                "/readyz slowest answer",
                max(readyz) if readyz else None,
                "s",
                Expect(1.0, unit=" s"),
            ),
            Row(name, "acknowledged changes in BigCommerce, after recovery", caught_up, "s"),
            Row(name, "daemon still running", float(alive), "", Expect(1, equal=True), True),
        ]
    return rows


async def reload_outage(ctx: Context) -> list[Row]:
    """SIGHUP with a new buffer for store "a" while Postgres is stopped; applied after?"""
    p = ctx.profile
    name = "reload during outage"
    world = await make_world(ctx, stores=1)
    buffer = 3

    def with_buffer(data: dict[str, Any]) -> None:
        data["stores"][0]["buffer"] = buffer

    daemon = Daemon(ctx, world, "reload")
    applied = None
    try:
        await daemon.start()
        if await wait_right(world, p.converge_cap) is None:
            raise RuntimeError(f"initial sync did not converge:\n{daemon.log_tail()}")
        await ctx.pg.stop()
        daemon.edit = with_buffer
        daemon.write_config()
        store(world, "a").settings["buffer"] = buffer  # what the oracle expects from now on
        daemon.send(1)  # SIGHUP
        await asyncio.sleep(min(5.0, p.outage_seconds))
        await ctx.pg.start()
        recovered = time.monotonic()
        took = await wait_right(world, p.converge_cap)
        applied = None if took is None else time.monotonic() - recovered
        alive = daemon.alive()
        ctx.say(name, f"applied after recovery: {applied}, alive {alive}")
    finally:
        await ctx.pg.start()
        await daemon.stop()
        await world.stop()
    return [
        Row(
            name,
            "new buffer applied after recovery",
            None if applied is None else applied,
            "s",
            note="" if applied is not None else "not applied within the cap",
        ),
        Row(name, "applied", float(applied is not None), "", Expect(1, equal=True)),
        Row(name, "daemon still running", float(alive), "", Expect(1, equal=True), True),
    ]
