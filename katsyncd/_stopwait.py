"""Stop-aware waits (a private copy: ``katsyncd.waiting`` replaces this module at merge, with
the same two functions)."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def wait_either(a: asyncio.Event, b: asyncio.Event, seconds: float | None) -> None:
    """Wait until ``a`` or ``b`` is set, or ``seconds`` pass (None: no bound)."""
    waiters = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
