"""Operability: metrics exposition (checked by promtool), health endpoints, secrets never
served, and the daemon as systemd sees it (sd_notify, SIGHUP, SIGTERM, double SIGINT)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from katsyncd.sim.world import KATANA_KEY, WEBHOOK_TOKEN, World, free_port
from tests.harness import (
    DaemonProcess,
    eventually,
    get_json,
    make_config_data,
    running_daemon,
    write_config,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = await World.start(katana_rpm=6000, bc_quota=1000)
    a = w.katana.add_location("Main", is_primary=True)
    w.katana.add_product_variant("OP-A", in_stock={a: 3})
    w.add_store("main", ["OP-A"])
    yield w
    await w.stop()


def promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.environ.get("CI") == "true":
        pytest.fail("promtool missing in CI (.ci/run installs Debian's prometheus package)")
    return found


async def get_text(port: int | None, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


async def test_metrics_pass_promtool_and_cover_the_pipeline(world: World, db_url: str) -> None:
    async with running_daemon(world, db_url) as d:
        await eventually(lambda: world.stores[0].sim.level("OP-A") == 3)
        await asyncio.sleep(2.5)  # one status refresh for the gauges
        status, text = await get_text(d.http_port, "/metrics")
    assert status == 200
    for name in (
        "katsyncd_build_info",
        "katsyncd_katana_requests_total",
        "katsyncd_bigcommerce_requests_total",
        "katsyncd_bigcommerce_items_written_total",
        "katsyncd_sync_lag_seconds_bucket",
        "katsyncd_store_last_successful_push_timestamp_seconds",
        "katsyncd_unmatched_skus",
        "katsyncd_config_last_reload_successful",
        "katsyncd_debounce_marks_total",
    ):
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


class NotifySocket:
    """A NOTIFY_SOCKET like systemd's, collecting what the daemon says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.close()


async def test_systemd_lifecycle_ready_reload_stop(
    world: World, db_url: str, tmp_path: Path, notify: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    data = make_config_data(world, db_url, port)
    config = write_config(tmp_path / "katsyncd.toml", data)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    proc = DaemonProcess(config, tmp_path / "daemon.log")
    proc.start()
    try:
        await proc.wait_ready(port)
        await eventually(lambda: any("READY=1" in m for m in notify.drain()), 10)
        data["stores"][0]["quantity"] = "in_stock"
        data["stores"][0]["buffer"] = 1
        write_config(config, data)
        proc.signal(signal.SIGHUP)
        await eventually(lambda: any("RELOADING=1" in m for m in notify.drain()), 10)
        await eventually(lambda: world.stores[0].sim.level("OP-A") == 2, 20)
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(30) == 0
        assert any("STOPPING=1" in m for m in notify.drain())
    finally:
        proc.stop()


async def test_second_sigint_exits_at_once(world: World, db_url: str, tmp_path: Path) -> None:
    port = free_port()
    data = make_config_data(world, db_url, port)
    # A store that answers very slowly keeps the first SIGINT's drain busy for the whole bound.
    world.stores[0].sim.latency = 60.0
    data["server"]["shutdown_timeout_seconds"] = 25.0
    config = write_config(tmp_path / "katsyncd.toml", data)
    proc = DaemonProcess(config, tmp_path / "daemon.log")
    proc.start()
    try:
        await proc.wait_ready(port)
        proc.signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        proc.signal(signal.SIGINT)
        code = await proc.wait_exit(5)
        assert code != 0  # the second interrupt does not wait for the drain
    finally:
        proc.stop()
