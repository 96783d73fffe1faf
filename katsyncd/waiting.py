"""Stop-aware waiting: the one way a loop pauses without delaying shutdown.

A loop never bare-sleeps: it waits on its stop event (and, when something can wake it early,
on a second event) with a timeout. Both helpers leave no task behind, even when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set, whichever is first; True if ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    return stop.is_set()


async def wait_either(a: asyncio.Event, b: asyncio.Event, seconds: float | None) -> None:
    """Wait until ``a`` or ``b`` is set, or ``seconds`` have passed (None: no time bound)."""
    waiters = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
