"""What every fault scenario shares: a simulated world, katsyncd as a subprocess on the
suite's own Postgres (bench's ``spawn``/``to_toml``/``wait_http_ok`` reused), the oracle and
the accounting of repeated writes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from rich.console import Console

from bench.systems import Proc, get_json, spawn, to_toml, wait_http_ok
from faults.pg import OwnPg
from faults.profiles import Profile
from faults.report import Results
from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.sim.quirks import Quirks
from katsyncd.sim.world import WEBHOOK_TOKEN, World, WorldStore, free_port

STOCK_EVENT = "current_inventory.product_updated"
STALE_TABLES = ("stale_variant", "stale_sales_order", "stale_product", "poll_request")


@dataclass
class Context:
    profile: Profile
    pg: OwnPg
    workdir: Path
    results: Results
    quirks: Quirks | None = None
    console: Console = field(default_factory=lambda: Console(stderr=True))
    started: float = field(default_factory=time.monotonic)

    def say(self, scenario: str, message: str) -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(f"[dim]{elapsed:6.1f} s[/] [bold]{scenario}[/]: {message}")


# ----- the world -------------------------------------------------------------------------------


async def make_world(
    ctx: Context, *, stores: int = 2, katana_rpm: int | None = None, seed: int = 3
) -> World:
    """``profile.variants`` Katana variants; store "a" sells them all (tracked by product),
    "b" every other one (tracked by variant), "c" (if ``stores`` is 3) every third one.
    Katana retries webhooks quickly so a dead daemon's missed webhooks come back within
    seconds, as they would within Katana's own retry schedule."""
    p = ctx.profile
    world = await World.start(
        katana_rpm=katana_rpm or p.katana_rpm,
        bc_quota=150,
        webhook_retry_delays=(0.5, 1.0, 2.0),
        quirks=ctx.quirks,
    )
    world.katana.populate(p.variants, locations=2, seed=seed)
    skus = [f"KS-{i:05d}" for i in range(p.variants)]
    world.add_store("a", skus)
    if stores >= 2:
        world.add_store("b", skus[::2], tracking="variant", settings={"quantity": "in_stock"})
    if stores >= 3:
        world.add_store("c", skus[::3])
    for s in world.stores:
        s.sim.window_ms = 3000  # keeps BigCommerce's wait-for-reset short
    return world


def store(world: World, name: str) -> WorldStore:
    return next(s for s in world.stores if s.name == name)


def wrong_pairs(world: World, only: set[str] | None = None) -> int:
    """(store, SKU) pairs not right now, over every store or ``only`` these stores."""
    return sum(len(s.wrong(world.katana)) for s in world.stores if only is None or s.name in only)


async def wait_right(
    world: World, limit: float, *, only: set[str] | None = None, poll: float = 0.1
) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if wrong_pairs(world, only) == 0:
            return time.monotonic() - start
        await asyncio.sleep(poll)
    return None


async def activity(world: World, rng: random.Random, n: int, seconds: float) -> None:
    """``n`` random Katana operations (they emit their own webhooks) plus a stock hint every
    third one, spread over ``seconds``."""
    ids = list(world.katana.variants)
    for i in range(n):
        world.katana.random_activity(rng)
        if i % 3 == 0:
            world.katana.emit(STOCK_EVENT, rng.choice(ids))
        await asyncio.sleep(seconds / max(1, n))


def signature(body: bytes, token: str = WEBHOOK_TOKEN) -> str:
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


# ----- repeated writes -------------------------------------------------------------------------


def _key(store_name: str, item: Mapping[str, Any]) -> tuple[Any, ...]:
    ident = next((k, item[k]) for k in ("variant_id", "product_id", "sku") if k in item)
    return (store_name, *ident, item.get("location_id"))


class WriteLedger:
    """Counts items written to BigCommerce with the quantity the item already had from the
    previous write (a write katsyncd repeated because it did not record the first one)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._seen = {s.name: 0 for s in world.stores}
        self._last: dict[tuple[Any, ...], Any] = {}
        self.items = 0
        self.repeated = 0

    def take(self) -> tuple[int, int]:
        """(items written, of them repeated) since the last call."""
        items = repeated = 0
        for s in self.world.stores:
            log = s.sim.adjustments
            for adj in log[self._seen[s.name] :]:
                for item in adj.get("items", []):
                    key = _key(s.name, item)
                    items += 1
                    if self._last.get(key) == item.get("quantity"):
                        repeated += 1
                    self._last[key] = item.get("quantity")
            self._seen[s.name] = len(log)
        self.items += items
        self.repeated += repeated
        return items, repeated


# ----- katsyncd as a subprocess ----------------------------------------------------------------


class Daemon:
    """``katsyncd run`` on a fresh database of the suite's own Postgres."""

    def __init__(
        self,
        ctx: Context,
        world: World,
        label: str,
        *,
        sync: Mapping[str, Any] | None = None,
        subscribe: bool = True,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.world = world
        self.label = label
        self.sync = {
            "debounce_seconds": 0.3,
            "max_delay_seconds": 1.5,
            "poll_interval_seconds": 2.0,
            **(sync or {}),
        }
        self.subscribe = subscribe
        self.edit = edit
        self.port = free_port()
        self.db_url: str | None = None
        self.proc: Proc | None = None
        self.config_path = ctx.workdir / f"{label}-katsyncd.toml"
        self.log_path = ctx.workdir / f"{label}-katsyncd.log"
        self._subscribed = False

    def config_data(self) -> dict[str, Any]:
        assert self.db_url is not None
        data = self.world.config_data(port=self.port, database={"url": self.db_url}, sync=self.sync)
        data["log"] = {"level": "info", "format": "json"}
        if self.edit is not None:
            self.edit(data)
        return data

    def write_config(self, data: Mapping[str, Any] | None = None, text: str | None = None) -> None:
        self.config_path.write_text(
            text if text is not None else to_toml(data or self.config_data())
        )

    async def start(self, *, ready: bool = True) -> None:
        if self.db_url is None:
            self.db_url = await self.ctx.pg.create_database(self.label)
            self.write_config()
        args = [sys.executable, "-m", "katsyncd", "--config", str(self.config_path), "run"]
        self.proc = await spawn("katsyncd", args, self.log_path, self.port)
        if ready:
            await wait_http_ok(self.proc, "/readyz")
        if self.subscribe and not self._subscribed:
            self.world.subscribe(self.port, SUBSCRIBED_EVENTS)
            self._subscribed = True

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.process.returncode is None

    def send(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.process.send_signal(sig)

    async def kill9(self) -> None:
        self.send(signal.SIGKILL)
        assert self.proc is not None
        await self.proc.process.wait()

    async def sigterm(self, limit: float = 30.0) -> int | None:
        """SIGTERM, then the exit code (None: still running after ``limit``, then killed)."""
        self.send(signal.SIGTERM)
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.process.wait(), limit)
        except TimeoutError:
            await self.kill9()
            return None

    async def status(self) -> dict[str, Any]:
        _, body = await get_json(self.port, "/status")
        result: dict[str, Any] = body
        return result

    async def healthy(self) -> bool:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            code, _ = await get_json(self.port, "/healthz", seconds=3.0)
            return code == 200
        return False

    async def counts(self) -> dict[str, int]:
        """Rows of the stale-mark tables (what a webhook writes)."""
        assert self.db_url is not None
        conn = await asyncpg.connect(self.db_url)
        try:
            return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in STALE_TABLES}
        finally:
            await conn.close()

    def rss_kib(self) -> int | None:
        return None if self.proc is None else self.proc.status_kib("VmRSS")

    def log_tail(self, lines: int = 30) -> str:
        return "" if self.proc is None else self.proc.log_tail(lines)

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop()
        if self.db_url is not None:
            with contextlib.suppress(Exception):
                await self.ctx.pg.drop_database(self.db_url)
            self.db_url = None
