"""Migrations and the embedded Postgres default."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from katsyncd.db import Database, load_migrations, migrate, pending_migrations
from tests.support.pg import empty_database


async def test_migrations_apply_once_under_concurrency(pg_server_url: str) -> None:
    async with empty_database(pg_server_url) as url:
        conns = [await asyncpg.connect(url) for _ in range(3)]
        try:
            applied = await asyncio.gather(*(migrate(c) for c in conns))
            versions = [m.version for m in load_migrations()]
            assert sorted(v for a in applied for v in a) == versions  # each exactly once
            assert await pending_migrations(conns[0]) == []
            assert await migrate(conns[0]) == []  # idempotent
        finally:
            for c in conns:
                await c.close()


async def test_embedded_postgres_when_no_url(tmp_path: Path) -> None:
    db = Database(None, state_dir=tmp_path / "state")
    await db.open()
    try:
        assert await db.ping()
        async with db.pool.acquire() as conn:
            assert await pending_migrations(conn) == []
            assert await conn.fetchval("SELECT count(*) FROM item_level") == 0
    finally:
        await db.close()
    assert (tmp_path / "state" / "pgdata" / "PG_VERSION").exists()
