"""Migrations and the embedded Postgres default."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from katsyncd.db import Database, load_migrations, load_queries, migrate, pending_migrations
from tests.conftest import _with_db


async def test_migrations_apply_once_under_concurrency(pg_server_url: str) -> None:
    name = "katsyncd_migrate_race"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        conns = [await asyncpg.connect(_with_db(pg_server_url, name)) for _ in range(3)]
        try:
            applied = await asyncio.gather(*(migrate(c) for c in conns))
            versions = [m.version for m in load_migrations()]
            assert sorted(v for a in applied for v in a) == versions  # each exactly once
            assert await pending_migrations(conns[0]) == []
            assert await migrate(conns[0]) == []  # idempotent
        finally:
            for c in conns:
                await c.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_every_named_query_is_used_somewhere() -> None:
    source = "\n".join(p.read_text() for p in Path("katsyncd").rglob("*.py"))
    unused = [n for n in load_queries() if f'"{n}"' not in source]
    assert unused == []


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
