"""Item levels: what each store's items should hold (``item_level``), the writers' backlog, and
push recording (``pushed``/``failed`` plus the ``push_log`` audit rows).

``record_pushes`` is the one place a write to BigCommerce is recorded: the store writers and
the reconcile's ``--push`` both call it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from katsyncd.db import Q
from katsyncd.models import AbsoluteItem, Level, WriteOutcome
from katsyncd.persistence import Conn, Executor, lease
from katsyncd.persistence.stale import clear_variant_marks

ItemAt = tuple[str, int]  # (item_key, location_id) within one store
LevelKey = tuple[str, str, int]  # (store, item_key, location_id)


@dataclass(frozen=True, slots=True)
class Prior:
    """What ``push_log`` says an item held before a write, and why it was written."""

    quantity: int | None  # push_log.old_quantity
    reason: str  # push_log.reason
    since: datetime | None = None  # push_log.stale_since: when the change was first seen


@dataclass(frozen=True, slots=True)
class StoredLevels:
    """What ``store_levels`` changed, and per store how many levels BigCommerce already had."""

    changed: list[Level]
    already_pushed: Counter[str]


async def store_levels(
    pool: asyncpg.Pool,
    levels: Sequence[Level],
    reason: str,
    since: Mapping[str, datetime],
    gens: Mapping[int, int] | None = None,
) -> StoredLevels:
    """Record the levels that differ from what is desired now, and clear the stale marks
    (``gens``: variant id → generation) they answer, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        stored = await _changed_levels(conn, levels)
        changed = stored.changed
        if changed:
            await conn.execute(
                Q["upsert_levels"],
                [lv.store for lv in changed],
                [lv.item_key for lv in changed],
                [lv.location_id for lv in changed],
                [lv.sku for lv in changed],
                [lv.variant_id for lv in changed],
                [lv.quantity for lv in changed],
                [reason] * len(changed),
                [since.get(lv.sku) for lv in changed],
            )
        if gens:
            await clear_variant_marks(conn, gens)
    return stored


async def _changed_levels(conn: Conn, levels: Sequence[Level]) -> StoredLevels:
    """Drop levels equal to what is already desired; count those BigCommerce already has."""
    out = StoredLevels([], Counter())
    if not levels:
        return out
    current: dict[LevelKey, asyncpg.Record] = {
        (r["store"], r["item_key"], r["location_id"]): r
        for r in await conn.fetch(
            Q["levels_for"], list({lv.store for lv in levels}), [lv.item_key for lv in levels]
        )
    }
    for lv in levels:
        cur = current.get((lv.store, lv.item_key, lv.location_id))
        if cur is not None and cur["pushed"] == lv.quantity:
            out.already_pushed[lv.store] += 1
        if cur is None or cur["desired"] != lv.quantity:
            out.changed.append(lv)
    return out


async def desired_now(ex: Executor, levels: Sequence[Level]) -> dict[LevelKey, int]:
    """What is recorded as desired for these levels' items."""
    if not levels:
        return {}
    rows = await ex.fetch(
        Q["levels_for"], list({lv.store for lv in levels}), [lv.item_key for lv in levels]
    )
    return {(r["store"], r["item_key"], r["location_id"]): r["desired"] for r in rows}


async def backlog(ex: Executor, store: str, limit: int, *, dry_run: bool) -> list[asyncpg.Record]:
    """Up to ``limit`` levels of ``store`` still to write (to record, for a dry-run store);
    decreases first (see the ``backlog`` query)."""
    return await ex.fetch(Q["dry_run_backlog" if dry_run else "backlog"], store, limit)


async def mark_guard_checked(ex: Executor, store: str, item_keys: Collection[str]) -> None:
    """The oversell guard asked Katana to re-read these held increases."""
    await ex.execute(Q["guard_checked"], store, list(item_keys))


async def record_pushes(
    pool: asyncpg.Pool,
    store: str,
    outcome: WriteOutcome,
    prior: Mapping[ItemAt, Prior],
    *,
    fence: tuple[str, int] | None = None,
) -> None:
    """Record one write to BigCommerce in one transaction: ``pushed`` for the items written,
    ``failed`` for those rejected, and a ``push_log`` row each (written first, then rejected;
    ``prior`` gives each item's old quantity and reason). With ``fence`` (holder, epoch) the
    transaction first checks that lease still holds and rolls back (``LeaseLost``) if not."""
    ok, bad = outcome.written, outcome.rejected
    txn = ",".join(outcome.transaction_ids)
    async with pool.acquire() as conn, conn.transaction():
        if fence is not None:
            await lease.fence(conn, *fence)
        if ok:
            await conn.execute(
                Q["record_pushed"],
                store,
                [i.item_key for i in ok],
                [i.location_id for i in ok],
                [i.quantity for i in ok],
            )
        if bad:
            await conn.execute(
                Q["record_failed"],
                store,
                [i.item_key for i, _ in bad],
                [i.location_id for i, _ in bad],
                [i.quantity for i, _ in bad],
                [why[:500] for _, why in bad],
            )
        entries = [(i, txn, "written") for i in ok] + [(i, why[:200], "rejected") for i, why in bad]
        await _log_pushes(conn, store, entries, prior)


async def record_dry_run(
    pool: asyncpg.Pool,
    store: str,
    items: Sequence[AbsoluteItem],
    prior: Mapping[ItemAt, Prior],
) -> None:
    """A dry-run store "wrote" these items: remember them and log each as ``dry_run``."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            Q["record_dry_run"],
            store,
            [i.item_key for i in items],
            [i.location_id for i in items],
            [i.quantity for i in items],
        )
        await _log_pushes(conn, store, [(i, None, "dry_run") for i in items], prior)


async def record_observed(
    ex: Executor, store: str, location_id: int, levels: Mapping[str, int], read_at: datetime
) -> None:
    """What a reconcile saw BigCommerce holding (item key → quantity, read at ``read_at`` on
    the database clock) becomes ``pushed``, unless a push recorded after that read is newer."""
    if not levels:
        return
    keys = list(levels)
    await ex.execute(
        Q["record_observed"],
        store,
        keys,
        [location_id] * len(keys),
        [levels[k] for k in keys],
        read_at,
    )


async def _log_pushes(
    conn: Conn,
    store: str,
    entries: Sequence[tuple[AbsoluteItem, str | None, str]],
    prior: Mapping[ItemAt, Prior],
) -> None:
    if not entries:
        return
    before = [prior[(i.item_key, i.location_id)] for i, _, _ in entries]
    await conn.execute(
        Q["insert_push_log"],
        store,
        [i.sku for i, _, _ in entries],
        [i.item_key for i, _, _ in entries],
        [i.location_id for i, _, _ in entries],
        [p.quantity for p in before],
        [i.quantity for i, _, _ in entries],
        [p.reason for p in before],
        [t for _, t, _ in entries],
        [o for _, _, o in entries],
        [p.since for p in before],
    )
