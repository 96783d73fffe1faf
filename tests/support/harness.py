"""Run the real daemon in-process (or as a subprocess) against a simulated world."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from katsyncd.config import build_config
from katsyncd.daemon import Daemon
from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.sim.quirks import Quirks
from katsyncd.sim.world import WEBHOOK_TOKEN, World, free_port

FAST_SYNC = {
    "debounce_seconds": 0.2,
    "max_delay_seconds": 1.0,
    "poll_interval_seconds": 1.0,
    "catalog_refresh_seconds": 3600.0,
}


FAST_RETRIES = (0.2, 0.5, 1.0)  # Katana's webhook redelivery delays, shortened for tests

Check = Callable[[], bool | Awaitable[bool]]


async def eventually(check: Check, limit: float = 15.0, poll: float = 0.05) -> None:
    """Wait (bounded) until ``check()`` is true; fail with the limit otherwise.

    ``check`` may be a coroutine function (e.g. one reading a row from Postgres)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await _holds(check):
            return
        await asyncio.sleep(poll)
    assert await _holds(check), f"condition not met within {limit} s"


async def _holds(check: Check) -> bool:
    result = check()
    return bool(await result) if inspect.isawaitable(result) else bool(result)


async def start_world(quirks: Quirks | None = None) -> World:
    """Both simulators, limits high enough not to slow a test, fast webhook retries."""
    return await World.start(
        katana_rpm=6000, bc_quota=1000, webhook_retry_delays=FAST_RETRIES, quirks=quirks
    )


async def converge(world: World, limit: float = 20.0) -> None:
    took = await world.wait_converged(limit, poll=0.05)
    assert took is not None, f"not converged within {limit} s: {world.wrong()}"


def stock_one_sku(world: World, sku: str, quantity: int, store: str = "main") -> None:
    """One primary Katana location holding ``quantity`` of ``sku``, matched by one store."""
    location = world.katana.add_location("Main", is_primary=True)
    world.katana.add_product_variant(sku, in_stock={location: quantity})
    world.add_store(store, [sku])


def make_config_data(world: World, db_url: str, port: int, **sync: Any) -> dict[str, Any]:
    return world.config_data(port=port, database={"url": db_url}, sync={**FAST_SYNC, **sync})


@asynccontextmanager
async def running_daemon(
    world: World,
    db_url: str,
    *,
    subscribe: bool = True,
    config_path: Path | None = None,
    **sync: Any,
) -> AsyncIterator[Daemon]:
    """The daemon in this process, ready and subscribed to the Katana simulator's webhooks.

    With ``config_path`` the config is written there first (so ``reload()`` re-reads it)."""
    port = free_port()
    data = make_config_data(world, db_url, port, **sync)
    if config_path is not None:
        write_config(config_path, data)
    cfg = build_config(data, source="<test>")
    daemon = Daemon(cfg, config_path=config_path)
    task = asyncio.create_task(daemon.run(install_signals=False))
    await eventually(lambda: daemon.ready or task.done(), 30)
    if task.done():
        task.result()
    if subscribe:
        world.subscribe(port, SUBSCRIBED_EVENTS)
    try:
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)


def metric(daemon: Daemon, name: str, **labels: str) -> float:
    """One sample of the daemon's Prometheus registry (0 when not exported yet)."""
    return daemon.metrics.registry.get_sample_value(name, labels) or 0.0


async def settled(daemon: Daemon) -> bool:
    """Nothing is left to do: no durable stale mark, no store with levels still to write."""
    marks = await daemon.db.pool.fetchval(
        "SELECT (SELECT count(*) FROM stale_variant) + (SELECT count(*) FROM stale_sales_order)"
        " + (SELECT count(*) FROM stale_product)"
    )
    unwritten = await daemon.db.pool.fetchval(
        "SELECT count(*) FROM item_level WHERE desired IS DISTINCT FROM pushed"
        " AND desired IS DISTINCT FROM failed_desired"
    )
    return bool(marks == 0 and unwritten == 0)


async def get_json(daemon: Daemon, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{daemon.http_port}{path}") as r,
    ):
        return r.status, await r.json(content_type=None)


def katana_signature(body: bytes, token: str = WEBHOOK_TOKEN) -> str:
    """The ``x-sha2-signature`` Katana sends with a webhook: HMAC-SHA256 of the body, hex."""
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write a config dict as TOML (the subset our configs use)."""
    lines: list[str] = []
    for section in ("server", "database", "katana", "sync", "log", "ha"):
        if section in data:
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml(v)}" for k, v in data[section].items()]
    for store in data.get("stores", []):
        lines.append("[[stores]]")
        lines += [f"{k} = {_toml(v)}" for k, v in store.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class DaemonProcess:
    """``katsyncd run`` as a subprocess (end-to-end tests: real signals, real kill -9)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "katsyncd", "--config", str(self.config), "run"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    async def wait_ready(self, port: int, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
                try:
                    async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"daemon not ready within {limit} s:\n{self.log.read_text()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    async def wait_exit(self, limit: float = 30.0) -> int:
        proc = self.proc
        assert proc is not None
        # Polling a child process: there is no event to await.
        await eventually(lambda: proc.poll() is not None, limit)
        code = proc.poll()
        assert code is not None, "daemon did not exit"
        return code

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
