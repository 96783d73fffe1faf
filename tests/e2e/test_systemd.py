"""The daemon as systemd sees it: ``katsyncd run`` as a subprocess, sd_notify on a real
NOTIFY_SOCKET, SIGHUP, SIGTERM, and a second SIGINT."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from katsyncd.sim.world import World, free_port
from tests.support.harness import (
    DaemonProcess,
    eventually,
    make_config_data,
    stock_one_sku,
    write_config,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def world(world: World) -> World:
    stock_one_sku(world, "OP-A", 3)
    return world


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
    data["log"]["level"] = "info"  # the first SIGINT's "stop_requested" line is waited for
    config = write_config(tmp_path / "katsyncd.toml", data)
    proc = DaemonProcess(config, tmp_path / "daemon.log")
    proc.start()
    try:
        await proc.wait_ready(port)
        proc.signal(signal.SIGINT)
        await eventually(lambda: "stop_requested" in proc.log.read_text())  # draining now
        proc.signal(signal.SIGINT)
        code = await proc.wait_exit(5)
        assert code != 0  # the second interrupt does not wait for the drain
    finally:
        proc.stop()
