"""Marks re-read from Postgres (a term's start, a LISTEN reconnect, a "reload all" notice):
their stock is in question like any webhook's. Real Postgres."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from katsyncd.db import Database
from katsyncd.marks import StaleMarks
from katsyncd.metrics import Metrics
from katsyncd.persistence import marks as stored

pytestmark = pytest.mark.timeout(60)


async def test_reloaded_marks_forget_the_kept_inventory_of_their_variants(db_url: str) -> None:
    """faults ha-postgres-restart lost 3 of 14 acknowledged changes: a follower's webhooks,
    their NOTIFY missed while the leader's LISTEN reconnected, were re-read from Postgres
    (``load``) without their stock put in question, so the flush recomputed them from kept
    rows read before the change and cleared the marks."""
    database = Database(db_url)
    await database.open()
    try:
        marks = StaleMarks(lambda: database.pool, Metrics(), debounce=2.0, max_delay=10.0)
        questioned: list[int] = []

        def in_question(ids: Collection[int]) -> None:  # wiring: InventoryCache.forget
            questioned.extend(ids)

        marks.stock_in_question = in_question
        await stored.mark_variants(
            database.pool, [7, 9], "webhook:current_inventory.product_updated"
        )
        await marks.load()
        assert sorted(questioned) == [7, 9]
        assert len(marks.variants) == 2  # timed, backdated by their age
    finally:
        await database.close()
