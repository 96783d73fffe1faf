"""The leader lease (``leader_lease``): taken, renewed and released on the database clock, and
checked in the transaction that records a push (fencing). Also the NOTIFY channels replicas
talk over: marks committed by any replica, and a lease handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from katsyncd.db import Q
from katsyncd.persistence import Conn, Executor

SCOPE = "sync"  # one database serves one Katana account: one lease
MARKS_CHANNEL = "katsyncd_marks"  # payload: the marks a commit made (see katsyncd.leadership)
LEASE_CHANNEL = "katsyncd_lease"  # payload: the epoch just released
CLOSE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class LeaseLost(Exception):
    """The lease this replica wrote under is no longer its own (or about to expire)."""


@dataclass(frozen=True, slots=True)
class LeaseRow:
    holder: str
    epoch: int
    age: float  # seconds since the holder acquired it
    expires_in: float  # seconds until it expires (negative: expired)


async def acquire(ex: Executor, holder: str, ttl: float) -> int | None:
    """Take the lease if it is free or expired; the new epoch, or None (someone holds it)."""
    epoch: int | None = await ex.fetchval(Q["lease_acquire"], SCOPE, holder, ttl)
    return epoch


async def renew(ex: Executor, holder: str, epoch: int, ttl: float) -> bool:
    """Extend the lease; False if it is not this holder's in this epoch any more."""
    return await ex.fetchval(Q["lease_renew"], SCOPE, holder, epoch, ttl) is not None


async def release(conn: Conn, holder: str, epoch: int) -> bool:
    """Let the lease expire now and tell the followers (one transaction)."""
    async with conn.transaction():
        released = await conn.fetchval(Q["lease_release"], SCOPE, holder, epoch)
        if released is not None:
            await conn.execute(Q["notify"], LEASE_CHANNEL, str(epoch))
    return released is not None


async def read(ex: Executor) -> LeaseRow | None:
    row = await ex.fetchrow(Q["lease_read"], SCOPE)
    if row is None:
        return None
    return LeaseRow(row["holder"], row["epoch"], row["age"], row["expires_in"])


async def fence(conn: Conn, holder: str, epoch: int) -> None:
    """Inside a transaction: raise ``LeaseLost`` unless the lease still holds."""
    if await conn.fetchval(Q["lease_fence"], SCOPE, holder, epoch) is None:
        raise LeaseLost(f"lease epoch {epoch} no longer held by {holder}")


async def notify(ex: Executor, channel: str, payload: str) -> None:
    """NOTIFY ``channel`` (inside the caller's transaction when ``ex`` is a connection in one:
    delivered on commit)."""
    await ex.execute(Q["notify"], channel, payload)


@contextlib.asynccontextmanager
async def listening(
    url: str, channels: Sequence[str], handler: Callable[[str, str], None]
) -> AsyncIterator[asyncpg.Connection]:
    """A dedicated connection LISTENing on ``channels`` (``handler(channel, payload)``)."""
    conn = await asyncpg.connect(url, timeout=5)
    try:

        def relay(_c: object, _pid: int, channel: str, payload: object) -> None:
            handler(channel, str(payload))

        for channel in channels:
            await conn.add_listener(channel, relay)
        yield conn
    finally:
        with contextlib.suppress(*CLOSE_ERRORS):
            await asyncio.wait_for(conn.close(), timeout=2)


async def alive(conn: asyncpg.Connection, *, within: float) -> bool:
    """Whether a LISTEN connection still answers."""
    if conn.is_closed():
        return False
    try:
        await conn.fetchval(Q["ping"], timeout=within)
    except CLOSE_ERRORS:
        return False
    return True
