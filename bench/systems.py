"""The two systems under test, each run as its own OS process like in production:
katsyncd (``python -m katsyncd --config FILE run``, a fresh Postgres database per run) and the
baseline (``python -m bench.baseline --config FILE``). The simulators stay in the bench process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.baseline import BaselineConfig, StoreTarget
from bench.pg import PgServer
from bench.world import Counts, Oracle
from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.sim.world import KATANA_KEY, WEBHOOK_TOKEN, World, free_port

STOP_TIMEOUT_SECONDS = 25.0
READY_TIMEOUT_SECONDS = 90.0


# ----- TOML (katsyncd's config format; the values here are simple) ----------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _toml_table(header: str, table: Mapping[str, Any]) -> list[str]:
    lines = [header]
    lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return [*lines, ""]


def to_toml(data: Mapping[str, Any]) -> str:
    """Top-level tables and arrays of tables of scalars: all katsyncd's config needs."""
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines += _toml_table(f"[{key}]", value)
        else:
            for item in value:
                lines += _toml_table(f"[[{key}]]", item)
    return "\n".join(lines)


# ----- processes --------------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process we started (and only ever signal by its own pid)."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def status_kib(self, key: str) -> int | None:
        """A ``/proc/<pid>/status`` figure in KiB (VmRSS, VmHWM)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process has used so far."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> int | None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        return self.process.returncode


async def spawn(name: str, args: list[str], log_path: Path, port: int) -> Proc:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *args, stdout=log, stderr=asyncio.subprocess.STDOUT, env=env
        )
    return Proc(name, process, port, log_path)


async def get_json(port: int, path: str, *, seconds: float = 5.0) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{port}{path}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as s,
        s.get(url) as resp,
    ):
        body = await resp.json(content_type=None)
        return resp.status, body


async def wait_http_ok(proc: Proc, path: str, *, limit: float = READY_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.process.returncode is not None:
            raise RuntimeError(
                f"{proc.name} exited ({proc.process.returncode}):\n{proc.log_tail()}"
            )
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            status, _ = await get_json(proc.port, path, seconds=2.0)
            if status == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready within {limit:.0f} s:\n{proc.log_tail()}")


# ----- the systems ----------------------------------------------------------------------------


@dataclass
class WarmUp:
    """Start-up work done before a measurement (reported separately, never counted in it)."""

    seconds: float | None = None
    katana_requests: int = 0
    bc_requests: dict[str, int] = field(default_factory=dict)


class System:
    """Common shape: ``start`` (process up, webhooks subscribed), ``warm_up``, ``stop``."""

    name = ""
    proc: Proc | None = None

    async def start(self, world: World, *, subscribe: bool = True) -> None:
        raise NotImplementedError

    async def warm_up(self, world: World, cap: float) -> WarmUp:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    @property
    def port(self) -> int:
        assert self.proc is not None
        return self.proc.port


class Katsyncd(System):
    name = "katsyncd"

    def __init__(
        self,
        pg: PgServer,
        workdir: Path,
        label: str,
        *,
        sync: Mapping[str, Any],
        rpm: int | None = None,
        log_level: str = "info",
    ) -> None:
        self.pg = pg
        self.workdir = workdir
        self.label = label
        self.sync = dict(sync)
        self.rpm = rpm
        self.log_level = log_level
        self.db_url: str | None = None
        self.started_at = 0.0

    async def start(self, world: World, *, subscribe: bool = True) -> None:
        self.db_url = await self.pg.create_database(self.label)
        port = free_port()
        data = world.config_data(
            port=port, database={"url": self.db_url}, rpm=self.rpm, sync=self.sync
        )
        data["log"] = {"level": self.log_level, "format": "json"}
        path = self.workdir / f"{self.label}-katsyncd.toml"
        path.write_text(to_toml(data))
        if subscribe:
            world.subscribe(port, SUBSCRIBED_EVENTS)
        self.started_at = time.monotonic()
        args = [sys.executable, "-m", "katsyncd", "--config", str(path), "run"]
        self.proc = await spawn("katsyncd", args, self.workdir / f"{self.label}-katsyncd.log", port)
        await wait_http_ok(self.proc, "/readyz")

    async def warm_up(self, world: World, cap: float) -> WarmUp:
        """Initial catalogue sync: until every store is right (they start at 0) and idle."""
        took = await Oracle(world).wait(cap, poll=0.5)
        await self.wait_idle(cap)
        used = Counts.take(world)  # a fresh world: everything so far is warm-up
        seconds = None if took is None else time.monotonic() - self.started_at
        return WarmUp(seconds, used.katana, used.bc)

    async def wait_idle(self, cap: float) -> bool:
        """/status says nothing is pending: no stale variants, no store backlog."""
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline:
            _, st = await get_json(self.port, "/status")
            pending = st["stale_variants_pending"] + st["stale_sales_orders_pending"]
            if pending == 0 and all(s["backlog"] == 0 for s in st["stores"]):
                return True
            await asyncio.sleep(0.5)
        return False

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop()
        if self.db_url is not None:
            await self.pg.drop_database(self.db_url)
            self.db_url = None


class Baseline(System):
    name = "baseline"

    def __init__(
        self,
        workdir: Path,
        label: str,
        *,
        rpm: int,
        initial_sync: bool = False,
        initial_sync_max_skus: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.label = label
        self.rpm = rpm
        self.initial_sync = initial_sync
        self.initial_sync_max_skus = initial_sync_max_skus
        self.started_at = 0.0

    def config(self, world: World, port: int) -> BaselineConfig:
        stores = tuple(
            StoreTarget(
                s.name, world.bc_url, s.hash, s.token, int(s.settings.get("location_id", 1))
            )
            for s in world.stores
        )
        return BaselineConfig(
            listen_host="127.0.0.1",
            listen_port=port,
            katana_url=world.katana_url,
            katana_key=KATANA_KEY,
            webhook_token=WEBHOOK_TOKEN,
            katana_rpm=self.rpm,
            stores=stores,
            initial_sync=self.initial_sync,
            initial_sync_max_skus=self.initial_sync_max_skus,
        )

    async def start(self, world: World, *, subscribe: bool = True) -> None:
        port = free_port()
        path = self.workdir / f"{self.label}-baseline.json"
        path.write_text(json.dumps(self.config(world, port).as_dict()))
        if subscribe:
            world.subscribe(port, SUBSCRIBED_EVENTS)
        self.started_at = time.monotonic()
        args = [sys.executable, "-m", "bench.baseline", "--config", str(path)]
        self.proc = await spawn("baseline", args, self.workdir / f"{self.label}-baseline.log", port)
        await wait_http_ok(self.proc, "/healthz")

    async def warm_up(self, world: World, cap: float) -> WarmUp:
        """The baseline has no start-up sync: its stores are seeded with correct levels."""
        return WarmUp(seconds=None)

    async def status(self) -> dict[str, Any]:
        _, body = await get_json(self.port, "/status")
        result: dict[str, Any] = body
        return result

    async def wait_initial_sync(self, cap: float) -> float | None:
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline:
            st = await self.status()
            if st["initial_sync"] == "done":
                return time.monotonic() - self.started_at
            await asyncio.sleep(0.25)
        return None

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop()
