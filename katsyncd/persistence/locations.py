"""Katana's locations, mirrored: the last list read, for when Katana cannot be reached."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from katsyncd.db import Q
from katsyncd.models import KatanaLocation


async def replace_locations(pool: asyncpg.Pool, locations: Sequence[KatanaLocation]) -> None:
    await pool.execute(
        Q["replace_locations"], [loc.id for loc in locations], [loc.name for loc in locations]
    )


async def all_locations(pool: asyncpg.Pool) -> list[KatanaLocation]:
    return [KatanaLocation(r["id"], r["name"]) for r in await pool.fetch(Q["all_locations"])]
