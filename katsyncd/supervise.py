"""Supervision: named tasks in one TaskGroup, restarted after infrastructure errors, drained in
order at a stop.

The daemon keeps two scopes: what every replica runs for its whole life (webhook commits,
status, reloads, the lease), and one scope per leadership term (polls, flushes, reconciles,
catalogue refresh, the store writers), stopped when the term ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from katsyncd.restarts import RestartBackoff
from katsyncd.waiting import wait_stop

log = structlog.get_logger(__name__)

# Infrastructure errors a loop survives (Postgres restarting, a network blip).
TRANSIENT_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection terminated mid-statement (Postgres restart)
    OSError,
    TimeoutError,
)
DRAIN_TICK_SECONDS = 0.1


class Supervisor:
    """Starts supervised tasks in ``tg``; ``stop`` ends their retry waits; a task that crashes
    with a bug calls ``on_crash`` (the daemon stops) and re-raises."""

    def __init__(
        self, tg: asyncio.TaskGroup, stop: asyncio.Event, on_crash: Callable[[], None]
    ) -> None:
        self._tg = tg
        self._stop = stop
        self._on_crash = on_crash
        self.tasks: set[asyncio.Task[None]] = set()
        self.open = True

    def spawn(self, name: str, fn: Callable[[], Awaitable[None]]) -> asyncio.Task[None] | None:
        """Start ``fn`` as a supervised task (None once this scope is closed)."""
        if not self.open:
            return None
        task = self._tg.create_task(self._supervised(name, fn), name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _supervised(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Database and network outages are ridden out: the loop restarts after a backoff (the
        durable marks make that safe). Anything else is a bug: the daemon stops with a clear
        log line and systemd or Kubernetes restarts it."""
        backoff = RestartBackoff()
        while True:
            backoff.started()
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:
                delay = backoff.failed()
                log.warning(
                    "task_retrying", task=name, error=str(exc) or type(exc).__name__, retry_in=delay
                )
                if await wait_stop(self._stop, delay):
                    return
            except Exception:
                log.exception("task_crashed", task=name)
                self._on_crash()
                raise

    async def drain(
        self, seconds: float, cancel_now: Callable[[asyncio.Task[None]], bool] = lambda t: False
    ) -> None:
        """Wait up to ``seconds`` for the tasks to finish (``cancel_now`` picks tasks to cancel
        as soon as they may be), then cancel what is left."""
        self.open = False
        deadline = time.monotonic() + seconds
        pending = {t for t in self.tasks if not t.done()}
        while pending and time.monotonic() < deadline:
            for t in pending:
                if cancel_now(t):
                    _ = t.cancel()
            _, pending = await asyncio.wait(pending, timeout=DRAIN_TICK_SECONDS)
        for t in pending:
            log.warning("shutdown_cancelling", task=t.get_name())
            _ = t.cancel()

    def cancel_all(self) -> None:
        """The term ended without a drain (the lease is lost): stop everything now."""
        self.open = False
        for t in self.tasks:
            _ = t.cancel()
