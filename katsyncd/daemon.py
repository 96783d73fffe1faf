"""The composition root: builds every component from a Config (``wiring``), runs them under
one TaskGroup, reacts to signals (SIGTERM/SIGINT stop, SIGHUP reload), applies reloads and
shuts down in order. It issues no SQL and no component receives it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
import signal
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from katsyncd import logsetup, sdnotify
from katsyncd.config import Config, ConfigError, diff_config, load_config
from katsyncd.db import Database
from katsyncd.debounce import Debouncer
from katsyncd.httpapp import HttpDeps, build_app
from katsyncd.katana import KatanaClient, PageHook
from katsyncd.metrics import Metrics
from katsyncd.poller import Poller
from katsyncd.ratelimit import KatanaLimiter
from katsyncd.reconcile import ReconcileReport, ReconcileSchedule
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
    OSError,
    TimeoutError,
)
LOOP_ERROR_BACKOFF_SECONDS = 2.0
LOOP_ERROR_BACKOFF_CAP_SECONDS = 30.0
# A loop that ran this long since its last restart was healthy: its next error starts the
# backoff afresh (else after a few transient errors in a long life every later one waits 30 s).
LOOP_HEALTHY_SECONDS = 60.0


class RestartBackoff:
    """How long a supervised loop waits before its next restart (pure; injected clock).

    Doubles with each consecutive failure up to the cap; a run of ``healthy_after`` seconds
    or more between two failures resets the count."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        base: float = LOOP_ERROR_BACKOFF_SECONDS,
        cap: float = LOOP_ERROR_BACKOFF_CAP_SECONDS,
        healthy_after: float = LOOP_HEALTHY_SECONDS,
    ) -> None:
        self._clock = clock
        self._base = base
        self._cap = cap
        self._healthy_after = healthy_after
        self.failures = 0
        self._started = clock()

    def started(self) -> None:
        """The loop (re)starts now."""
        self._started = self._clock()

    def failed(self) -> float:
        """The loop failed now: the delay before restarting it."""
        if self._clock() - self._started >= self._healthy_after:
            self.failures = 0
        self.failures += 1
        return min(self._cap, self._base * 2.0 ** min(self.failures, 4))


KATANA_WINDOW_FILE = "katana-window.json"  # under database.state_dir, if that exists


def _katana_account(config: Config) -> str:
    """Which Katana account a kept window belongs to (the quota is per account)."""
    key = hashlib.sha256(config.katana.api_key_value().encode()).hexdigest()[:16]
    return f"{config.katana.base_url.rstrip('/')}#{key}"


def save_katana_window(limiter: KatanaLimiter, config: Config) -> None:
    """On the way out: keep what Katana last said of its rate window (requests left, reset),
    so the next start does not spend requests the account no longer has. Only into an
    existing ``state_dir``; a failure costs the next start at most one 429."""
    state = limiter.window_state()
    path = Path(config.database.state_dir) / KATANA_WINDOW_FILE
    if state is None or not path.parent.is_dir():
        return
    doc = {"account": _katana_account(config), "remaining": state[0], "reset": state[1]}
    try:
        path.write_text(json.dumps(doc))
    except OSError as exc:
        log.warning("katana_window_not_saved", path=str(path), error=str(exc))


def restore_katana_window(limiter: KatanaLimiter, config: Config) -> None:
    """At start: the window the previous process left, if it is this account's and current."""
    path = Path(config.database.state_dir) / KATANA_WINDOW_FILE
    try:
        doc = json.loads(path.read_text())
        if doc.get("account") != _katana_account(config):
            return
        remaining, reset = int(doc["remaining"]), float(doc["reset"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("katana_window_unreadable", path=str(path), error=str(exc))
        return
    limiter.restore(remaining, reset)
    log.info("katana_window_restored", remaining=remaining, reset=reset)


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
        self.parts: Parts | None = None
        self.http_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ----- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, install_signals: bool = True) -> None:
        """Start everything, run until stopped, then shut down in order: the listener, then
        the HTTP session and the pool."""
        if install_signals:
            self._install_signals()
        async with connect_parts(self._config, metrics=self.metrics, rng=self.rng) as parts:
            self.parts = parts
            restore_katana_window(parts.katana_limiter, self.config)
            loops = daemon_loops(parts, self.life, self.rng)
            try:
                await self._start_http(parts, loops.status.document)
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
                await self._supervise(parts, [*loops.loops, ("reload", self._reload_loop)])
            finally:
                self.life.ready = False
                if self._runner is not None:
                    await self._runner.cleanup()
                save_katana_window(parts.katana_limiter, self.config)
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
    ) -> None:
        life, config = self.life, self._config.get
        deps = HttpDeps(
            committer=parts.committer,
            ready=lambda: readiness(parts.db, life),
            status=status,
            metrics=self.metrics,
            draining=lambda: life.draining,
            webhook_token=lambda: config().katana.webhook_token_value(),
            max_body_bytes=lambda: config().server.max_body_bytes,
        )
        self._runner = web.AppRunner(
            build_app(deps),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.config.server.shutdown_timeout_seconds,
        )
        await self._runner.setup()
        host, port = self.config.server.host_port
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else port

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
        except ConfigError as exc:
            self.metrics.config_reload_ok.set(0)
            log.error("config_reload_failed", problems=exc.problems)
            sdnotify.ready()
            return False
        await self._apply_config(new)
        self.metrics.config_reload_ok.set(1)
        self.metrics.config_reload_ts.set(time.time())
        sdnotify.ready()
        return True

    async def _apply_config(self, new: Config) -> None:
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
        for name in diff.stores_rules_changed:
            await stores.recompute(name)
        for rt in stores:  # a reload is how an operator says "fixed it"
            stores.spawn_location_check(rt)
            rt.writer.retry_now.set()
        parts.reconciles.ask_switched_on(diff, new)
        log.info(
            "config_reloaded",
            added=diff.stores_added,
            removed=diff.stores_removed,
            changed=diff.stores_changed,
        )

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
