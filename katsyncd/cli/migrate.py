"""``katsyncd migrate``: apply pending database migrations and exit (``run`` also does)."""

from __future__ import annotations

from katsyncd.cli.exit_codes import EXIT_OK
from katsyncd.cli.wiring import database
from katsyncd.config import Config
from katsyncd.db import migrate


async def run_migrate(cfg: Config) -> int:
    async with database(cfg) as db, db.pool.acquire() as conn:
        applied = await migrate(conn)
    print(f"migrations applied: {applied or 'none (up to date)'}")
    return EXIT_OK
