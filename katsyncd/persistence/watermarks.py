"""Poll watermarks (``poll_watermark``): where each incremental poll resumes, and the database
clock polls compare marks with."""

from __future__ import annotations

from datetime import datetime

from katsyncd.db import Q
from katsyncd.persistence import Executor


async def get(ex: Executor, kind: str) -> datetime | None:
    """The newest ``updated_at`` the ``kind`` poll has seen, or None before its first run."""
    value: datetime | None = await ex.fetchval(Q["get_watermark"], kind)
    return value


async def advance(ex: Executor, kind: str, at: datetime) -> None:
    """Move the ``kind`` watermark to ``at`` (never backwards) and stamp the poll time."""
    await ex.execute(Q["set_watermark"], kind, at)


async def db_clock(ex: Executor) -> datetime:
    """The database's clock now (marks' ``first_marked_at`` and ``pushed_at`` use it)."""
    value: datetime = await ex.fetchval(Q["db_clock"])
    return value
