"""What the one-shot commands build, in one place, the way the daemon builds it.

Each function opens what a command needs and closes it when the command is done. ``offline``
is the daemon's own set of components without its loops or listener, built by the same
``katsyncd.wiring`` the daemon builds through.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Protocol

import aiohttp

from katsyncd import __version__
from katsyncd.config import Config
from katsyncd.db import Database
from katsyncd.katana import KatanaClient, PageHook
from katsyncd.ratelimit import KatanaLimiter
from katsyncd.reconcile import ReconcileReport
from katsyncd.wiring import build_offline


class OneShot(Protocol):
    """What one-shot commands use of the wired components."""

    async def reconcile(
        self,
        reason: str,
        stores: Collection[str] | None = None,
        *,
        dry_run: bool = False,
        push: bool = False,
        on_page: PageHook | None = None,
    ) -> ReconcileReport: ...


@contextlib.asynccontextmanager
async def offline(cfg: Config) -> AsyncIterator[OneShot]:
    """The daemon's components built from ``cfg`` and connected (database migrated, clients,
    engine, poller, stores with their locations), with no loop or listener running."""
    async with build_offline(cfg) as parts:
        yield parts


@contextlib.asynccontextmanager
async def database(cfg: Config) -> AsyncIterator[Database]:
    """The database pool, opened without applying migrations (``katsyncd migrate`` does)."""
    db = Database(cfg.database.url, state_dir=Path(cfg.database.state_dir))
    await db.open(run_migrations=False)
    try:
        yield db
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def katana_client(cfg: Config) -> AsyncIterator[KatanaClient]:
    """A Katana client on its own session, paced by ``[katana] requests_per_minute`` and
    ``max_share``."""
    k = cfg.katana
    headers = {"User-Agent": f"katsyncd/{__version__}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        limiter = KatanaLimiter(k.requests_per_minute, share=k.max_share)
        yield KatanaClient(
            session, k.base_url, k.api_key_value(), limiter, timeout=k.timeout_seconds
        )
