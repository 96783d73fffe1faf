"""A writer cancelled while it records a finished write (issue 11, finding 7): the record
still commits before the cancellation goes on, within RECORD_GRACE_SECONDS."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest

from katsyncd import writer as writer_mod
from katsyncd.models import WriteOutcome
from katsyncd.writer import StoreWriter


class SlowRecordWriter(StoreWriter):
    """A writer whose record waits for ``release`` (as a commit held by a lock would)."""

    def __init__(self) -> None:
        super().__init__(
            cast(Any, SimpleNamespace(name="s")),
            cast(Any, None),
            cast(Any, None),
            cast(Any, None),
            dry_run=lambda: False,
        )
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.recorded = False

    async def _record(
        self,
        rows: Sequence[asyncpg.Record],
        outcome: WriteOutcome,
        token: tuple[str, int] | None = None,
    ) -> None:
        self.entered.set()
        await self.release.wait()
        self.recorded = True


async def test_a_cancel_during_the_record_waits_for_its_commit() -> None:
    w = SlowRecordWriter()
    task = asyncio.create_task(w._record_through_cancel([], cast(WriteOutcome, None)))
    await w.entered.wait()
    assert w.recording
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.05)
    assert not done and not w.recorded  # the cancel waits for the record
    w.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert w.recorded and not w.recording


async def test_a_record_that_never_commits_is_given_up_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_mod, "RECORD_GRACE_SECONDS", 0.05)
    w = SlowRecordWriter()
    task = asyncio.create_task(w._record_through_cancel([], cast(WriteOutcome, None)))
    await w.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2.0)
    assert not w.recorded and not w.recording
