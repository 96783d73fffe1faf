"""Exposure (issue 11 §3): off loopback, ``/status`` (and any page) needs the bearer token
from ``server.status_token_file``, or the daemon refuses to start; ``/healthz``, ``/readyz``
and ``/metrics`` stay open for probes and scrapers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from katsyncd.config import ConfigError, load_config
from katsyncd.daemon import Daemon
from katsyncd.sim.world import World, free_port
from tests.support.harness import eventually, make_config_data, stock_one_sku, write_config

pytestmark = pytest.mark.timeout(60)

TOKEN = "status-token-0123456789abcdef"


def exposed_config(world: World, db_url: str, path: Path, **server: Any) -> Path:
    data = make_config_data(world, db_url, free_port())
    data["server"] = {"listen": data["server"]["listen"].replace("127.0.0.1", "0.0.0.0"), **server}
    return write_config(path, data)


@asynccontextmanager
async def running(path: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(load_config(path), config_path=path)
    task = asyncio.create_task(daemon.run(install_signals=False))
    await eventually(lambda: daemon.ready or task.done(), 30)
    if task.done():
        task.result()
    try:
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)


async def get(d: Daemon, path: str, token: str | None = None) -> tuple[int, dict[str, str]]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{d.http_port}{path}", headers=headers) as r,
    ):
        return r.status, dict(r.headers)


async def test_off_loopback_without_a_token_the_daemon_refuses_to_start(
    world: World, db_url: str, tmp_path: Path
) -> None:
    path = exposed_config(world, db_url, tmp_path / "katsyncd.toml")
    daemon = Daemon(load_config(path), config_path=path)
    with pytest.raises(ConfigError, match=r"server\.status_token_file: required when listen"):
        await asyncio.wait_for(daemon.run(install_signals=False), 10)
    assert daemon.http_port is None  # nothing was listening, not even for a moment


async def test_status_needs_the_token_probes_and_scrapes_do_not(
    world: World, db_url: str, tmp_path: Path
) -> None:
    stock_one_sku(world, "S-1", 4)
    (tmp_path / "status-token").write_text(TOKEN + "\n")
    path = tmp_path / "katsyncd.toml"
    exposed_config(world, db_url, path, status_token_file="status-token")
    async with running(path) as d:
        for open_path in ("/healthz", "/readyz", "/metrics"):
            assert (await get(d, open_path))[0] == 200, open_path
        status, headers = await get(d, "/status")
        assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="katsyncd"'
        assert (await get(d, "/status", "wrong"))[0] == 401
        assert (await get(d, "/status", TOKEN[:-1]))[0] == 401
        assert (await get(d, "/status", TOKEN))[0] == 200
        assert (await get(d, "/no-such-page"))[0] == 401  # any page: closed by default

        # Rotation: a new token in the file is in force after a reload; the old one is not.
        (tmp_path / "status-token").write_text("rotated-token-9876543210\n")
        assert await d.reload()
        assert (await get(d, "/status", TOKEN))[0] == 401
        assert (await get(d, "/status", "rotated-token-9876543210"))[0] == 200

        # A reload that drops the token while the listener is exposed is refused.
        exposed_config(world, db_url, path)
        assert not await d.reload()
        assert d.life.reload.result == "failed"
        assert (await get(d, "/status"))[0] == 401
        assert (await get(d, "/status", "rotated-token-9876543210"))[0] == 200
