"""The composition root: builds every component from a Config (``wiring``), runs them under
one TaskGroup, reacts to signals (SIGTERM/SIGINT stop, SIGHUP reload), applies reloads and
shuts down in order. It issues no SQL and no component receives it.
"""

from __future__ import annotations

import asyncio
import functools
import random
import signal
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from katsyncd import logsetup, sdnotify
from katsyncd.backoff import exponential
from katsyncd.config import Config, ConfigError, diff_config, load_config
from katsyncd.db import Database
from katsyncd.debounce import Debouncer
from katsyncd.httpapp import HttpDeps, HttpServer, start_server
from katsyncd.katana import KatanaClient, PageHook
from katsyncd.katana_window import (
    restore_ids_limit,
    restore_katana_window,
    save_ids_limit,
    save_katana_window,
)
from katsyncd.metrics import Metrics
from katsyncd.poller import Poller
from katsyncd.ratelimit import KatanaLimiter
from katsyncd.reconcile import ReconcileReport, ReconcileSchedule
from katsyncd.restarts import RestartBackoff
from katsyncd.status import Lifecycle, readiness
from katsyncd.stores import StoreRuntime, check_location
from katsyncd.waiting import wait_either, wait_stop
from katsyncd.wiring import ConfigRef, Parts, apply_katana_config, daemon_loops
from katsyncd.wiring import connected as connect_parts

log = structlog.get_logger(__name__)

# Infrastructure errors a loop survives (Postgres restarting, a network blip).
TRANSIENT_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection terminated mid-statement (Postgres restart)
    OSError,
    TimeoutError,
)
# A reload's rule recompute that could not mark (Postgres down) is retried this often.
RECOMPUTE_RETRY_SECONDS = 0.5
RECOMPUTE_RETRY_CAP_SECONDS = 10.0


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = ConfigRef(config)
        self.boot_config = config  # what the listener and the pool were built from
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.rng = rng or random.Random()
        self.life = Lifecycle()
        self.stop_event = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.recompute_wake = asyncio.Event()  # a reload left a rule recompute pending
        self.parts: Parts | None = None
        self.http_port: int | None = None
        self._http: HttpServer | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ----- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, install_signals: bool = True) -> None:
        """Start everything, run until stopped, then shut down in order: the listener, then
        the HTTP session and the pool."""
        problem = self.config.exposure_problem()
        if problem is not None:  # `katsyncd run` says so before; this guards every caller
            raise ConfigError([problem])
        if install_signals:
            self._install_signals()
        async with connect_parts(self._config, metrics=self.metrics, rng=self.rng) as parts:
            self.parts = parts
            restore_katana_window(parts.katana_limiter, self.config)
            restore_ids_limit(parts.katana, self.config)
            loops = daemon_loops(parts, self.life, self.rng)
            try:
                http = await self._start_http(parts, loops.status.document)
                await parts.marks.load()
                self.life.ready = True
                self.metrics.config_reload_ok.set(1)
                self.metrics.config_reload_ts.set(time.time())
                sdnotify.ready()
                log.info(
                    "daemon_started",
                    listen=self.config.server.listen,
                    port=self.http_port,
                    stores=[s.name for s in self.config.stores],
                )
                await self._supervise(
                    parts,
                    [
                        *loops.loops,
                        ("reload", self._reload_loop),
                        ("rules-recompute", self._recompute_loop),
                        ("http-guard", http.guard),
                    ],
                )
            finally:
                self.life.ready = False
                if self._http is not None:
                    await self._http.close()
                save_katana_window(parts.katana_limiter, self.config)
                save_ids_limit(parts.katana, self.config)
        log.info("daemon_stopped")

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)

    def _on_sigint(self) -> None:
        if self.stop_event.is_set():
            log.warning("second_interrupt_exiting_now")
            raise SystemExit(130)
        self.request_stop()

    def request_stop(self) -> None:
        if not self.stop_event.is_set():
            log.info("stop_requested")
            self.life.draining = True
            sdnotify.stopping()
        self.stop_event.set()

    async def _supervise(
        self, parts: Parts, loops: list[tuple[str, Callable[[asyncio.Event], Awaitable[None]]]]
    ) -> None:
        stop = self.stop_event
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            parts.stores.spawn = self._spawn
            for name, loop in loops:
                _ = self._spawn(name, functools.partial(loop, stop))
            for rt in parts.stores:
                parts.stores.start_writer(rt)
                parts.stores.spawn_location_check(rt)
            await stop.wait()
            for rt in parts.stores:
                rt.stop.set()
            await self._drain(parts)
        self._tg = None

    async def _drain(self, parts: Parts) -> None:
        """Finish in-flight work within the shutdown bound, then cancel what is left.

        A writer waiting (on its limiter, or backing off after an error) is cancelled at once:
        its backlog is durable. A writer with a request on the wire gets to finish it, and to
        record its answer (cancelling the record would roll it back and resend the write after
        a restart).
        """
        deadline = time.monotonic() + self.config.server.shutdown_timeout_seconds
        pending = {t for t in self._tasks if not t.done()}
        while pending and time.monotonic() < deadline:
            for rt in parts.stores:
                busy = rt.client.writes_in_flight > 0 or rt.writer.recording
                if rt.task in pending and not busy:
                    rt.task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        for t in pending:
            log.warning("shutdown_cancelling", task=t.get_name())
            t.cancel()

    def _spawn(self, name: str, fn: Callable[[], Awaitable[None]]) -> asyncio.Task[None] | None:
        """Start ``fn`` as a supervised task (None once the task group is gone)."""
        if self._tg is None:
            return None
        task = self._tg.create_task(self._supervised(name, fn), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _supervised(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Run a loop under supervision.

        Database and network outages are ridden out: the loop restarts after a backoff (the
        durable marks make that safe). Anything else is a bug: the daemon stops with a clear
        log line and systemd or Kubernetes restarts it.
        """
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
                await wait_stop(self.stop_event, delay)
                if self.stop_event.is_set():
                    return
            except Exception:
                log.exception("task_crashed", task=name)
                self.request_stop()
                raise

    async def _start_http(
        self, parts: Parts, status: Callable[[], Awaitable[dict[str, Any]]]
    ) -> HttpServer:
        life, config = self.life, self._config.get
        deps = HttpDeps(
            committer=parts.committer,
            ready=lambda: readiness(parts.db, life),
            status=status,
            metrics=self.metrics,
            draining=lambda: life.draining,
            webhook_token=lambda: config().katana.webhook_token_value(),
            max_body_bytes=lambda: config().server.max_body_bytes,
            status_token=lambda: config().server.status_token_value(),
            body_timeout_seconds=self.config.server.body_timeout_seconds,
        )
        server = self.config.server
        host, port = server.host_port
        self._http = await start_server(
            deps,
            host=host,
            port=port,
            header_timeout=server.header_timeout_seconds,
            shutdown_timeout=server.shutdown_timeout_seconds,
        )
        self.http_port = self._http.port
        return self._http

    # ----- reload ------------------------------------------------------------------------------
    async def _reload_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await wait_either(stop, self.reload_requested, None)
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                await self.reload()

    async def reload(self, new: Config | None = None) -> bool:
        """Load → validate → diff → apply. A bad file keeps the old config running."""
        sdnotify.reloading()
        try:
            if new is None:
                if self.config_path is None:
                    raise ConfigError(["no config file to reload (demo or in-memory config)"])
                new = await asyncio.to_thread(load_config, self.config_path)
            # What run refused at start is refused on reload (against the bound listener).
            source = str(self.config_path or "<config>")
            new.check_runnable(source, listen=self.boot_config.server.listen)
        except ConfigError as exc:
            self.metrics.config_reload_ok.set(0)
            state = self.life.reload
            state.result, state.at, state.problems = "failed", time.time(), exc.problems
            log.error("config_reload_failed", problems=exc.problems)
            sdnotify.ready()
            return False
        self.life.reload.problems = []
        self._reload_settled(await self._apply_config(new), reloaded=True)
        sdnotify.ready()
        return True

    def _reload_settled(self, pending: list[str], *, reloaded: bool) -> None:
        """Say what the reload did: applied, or in force with a rule recompute pending (the
        metric stays 0 until the pending recompute is marked, then the timestamp moves)."""
        state = self.life.reload
        state.pending_recompute = pending
        self.metrics.config_reload_pending.set(len(pending))
        if not reloaded and state.result != "pending":
            return  # a later reload failed (or none happened): its result stands
        if pending:
            state.result, state.at = "pending", time.time()
            self.metrics.config_reload_ok.set(0)
            self.recompute_wake.set()
            log.warning("config_reload_pending", stores=pending)
            return
        state.result, state.at = "applied", time.time()
        self.metrics.config_reload_ok.set(1)
        self.metrics.config_reload_ts.set(state.at)

    async def _recompute_loop(self, stop: asyncio.Event) -> None:
        """Retry a reload's pending rule recompute until it is marked (no second SIGHUP)."""
        stores, attempt = self._parts().stores, 0
        while not stop.is_set():
            if not stores.pending_recompute:
                attempt = 0
                await wait_either(stop, self.recompute_wake, None)
                self.recompute_wake.clear()
                continue
            delay = exponential(
                attempt, base=RECOMPUTE_RETRY_SECONDS, cap=RECOMPUTE_RETRY_CAP_SECONDS
            )
            if await wait_stop(stop, delay):
                return
            attempt += 1
            self._reload_settled(await stores.recompute_pending(), reloaded=False)

    async def _apply_config(self, new: Config) -> list[str]:
        """Swap in ``new`` and apply the difference; returns the stores whose rule recompute
        is still pending (Postgres unavailable: the retry loop takes it from there)."""
        assert self.parts is not None
        parts, stores = self.parts, self.parts.stores
        diff = diff_config(self.config, new)
        old, self._config.value = self.config, new
        self.life.restart_required = diff_config(self.boot_config, new).restart_required
        if self.life.restart_required:
            log.warning("config_needs_restart", keys=self.life.restart_required)
        if diff.katana_changed:
            apply_katana_config(parts, new)
        if diff.log_changed:
            logsetup.configure(new.log.level, new.log.format)
        parts.marks.configure(new.sync.debounce_seconds, new.sync.max_delay_seconds)
        for name in diff.stores_removed:
            stores.remove(name)
        for name in diff.stores_added:
            rt = stores.add(new.store(name))
            stores.apply_rules(rt)
            stores.start_writer(rt)
        for name in set(diff.stores_changed) - set(diff.stores_added):
            stores.reconfigure(name, new.store(name), old.store(name))
        pending = await stores.recompute_pending(diff.stores_rules_changed)
        for rt in stores:  # a reload is how an operator says "fixed it"
            stores.spawn_location_check(rt)
            rt.writer.retry_now.set()
        parts.reconciles.ask_switched_on(diff, new)
        log.info(
            "config_reloaded",
            added=diff.stores_added,
            removed=diff.stores_removed,
            changed=diff.stores_changed,
            recompute_pending=pending,
        )
        return pending

    # ----- what operators, tests and one-shot commands read --------------------------------------
    @property
    def config(self) -> Config:
        return self._config.value

    @property
    def ready(self) -> bool:
        return self.life.ready

    @property
    def draining(self) -> bool:
        return self.life.draining

    @property
    def restart_required(self) -> list[str]:
        return self.life.restart_required

    def _parts(self) -> Parts:
        if self.parts is None:
            raise RuntimeError("the daemon's components are built by run() or offline()")
        return self.parts

    @property
    def db(self) -> Database:
        return self._parts().db

    @property
    def katana(self) -> KatanaClient:
        return self._parts().katana

    @property
    def katana_limiter(self) -> KatanaLimiter:
        return self._parts().katana_limiter

    @property
    def poller(self) -> Poller:
        return self._parts().poller

    @property
    def stores(self) -> dict[str, StoreRuntime]:
        return self._parts().stores.by_name

    @property
    def variants(self) -> Debouncer:
        return self._parts().marks.variants

    @property
    def last_reconcile(self) -> dict[str, Any] | None:
        return self._parts().reconciles.last

    @property
    def reconcile_schedule(self) -> ReconcileSchedule:
        return self._parts().reconciles.schedule

    def _mirror_ready(self) -> bool:
        return self._parts().mirror_ready()

    async def check_location(self, rt: StoreRuntime) -> None:
        await check_location(rt)

    async def reconcile(
        self,
        reason: str,
        stores: Collection[str] | None = None,
        *,
        dry_run: bool = False,
        push: bool = False,
        on_page: PageHook | None = None,
    ) -> ReconcileReport:
        return await self._parts().reconcile(
            reason, stores, dry_run=dry_run, push=push, on_page=on_page
        )
