"""Postgres helpers shared by the fixtures and the tests that need a database of their own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def with_db(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (keeps the query, e.g. an embedded ``?host=…``)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@asynccontextmanager
async def empty_database(server_url: str, prefix: str = "katsyncd_t_") -> AsyncIterator[str]:
    """A new, empty (unmigrated) database on the server; dropped afterwards. Yields its URL."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_db(server_url, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def database_closed(url: str) -> AsyncIterator[None]:
    """Postgres really unavailable for the database of ``url``: new connections are refused
    and every open one is terminated; connections are allowed again on exit."""
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(with_db(url, "postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    finally:
        await admin.close()
