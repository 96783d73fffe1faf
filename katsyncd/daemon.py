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

import structlog
from aiohttp import web

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
from katsyncd.leadership import Notifications, parse_marks, replica_id
from katsyncd.metrics import Metrics
from katsyncd.persistence.lease import LEASE_CHANNEL
from katsyncd.poller import Poller
from katsyncd.ratelimit import KatanaLimiter
from katsyncd.reconcile import ReconcileReport, ReconcileSchedule
from katsyncd.status import Lifecycle, readiness
from katsyncd.stores import StoreRegistry, StoreRuntime, check_location, no_spawn
from katsyncd.supervise import TRANSIENT_ERRORS, Supervisor
from katsyncd.ui import web as ui_web
from katsyncd.waiting import wait_either, wait_stop
from katsyncd.wiring import ConfigRef, Parts, apply_katana_config, daemon_loops
from katsyncd.wiring import connected as connect_parts

log = structlog.get_logger(__name__)

# A reload's rule recompute that could not mark (Postgres down) is retried this often.
RECOMPUTE_RETRY_SECONDS = 0.5
RECOMPUTE_RETRY_CAP_SECONDS = 10.0
RELEASE_SECONDS = 2.0  # of the shutdown bound, kept for releasing the lease after the drain


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
        self._always: Supervisor | None = None
        self._reload_marks = asyncio.Event()  # the leader re-times every durable mark
        self.replica = replica_id()

    # ----- lifecycle ---------------------------------------------------------------------------
    async def run(self, *, install_signals: bool = True) -> None:
        """Start everything, run until stopped, then shut down in order: the listener, then
        the HTTP session and the pool."""
        problem = self.config.exposure_problem()
        if problem is not None:  # `katsyncd run` says so before; this guards every caller
            raise ConfigError([problem])
        if install_signals:
            self._install_signals()
        async with connect_parts(
            self._config, metrics=self.metrics, rng=self.rng, replica=self.replica
        ) as parts:
            self.parts = parts
            parts.marks.deactivate()  # a follower until the lease says otherwise
            restore_katana_window(parts.katana_limiter, self.config)
            restore_ids_limit(parts.katana, self.config)
            loops = daemon_loops(parts, self.life, self.rng)
            try:
                http = await self._start_http(parts, loops.status.document)
                self.life.ready = True
                self.metrics.config_reload_ok.set(1)
                self.metrics.config_reload_ts.set(time.time())
                sdnotify.ready()
                log.info(
                    "daemon_started",
                    listen=self.config.server.listen,
                    port=self.http_port,
                    stores=[s.name for s in self.config.stores],
                    ui=self.config.server.ui,
                    replica=self.replica,
                )
                await self._supervise(
                    parts,
                    [
                        *loops.always,
                        ("reload", self._reload_loop),
                        ("rules-recompute", self._recompute_loop),
                        ("http-guard", http.guard),
                    ],
                    [*loops.leading, ("marks-reload", self._marks_reload_loop)],
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
        self,
        parts: Parts,
        always: list[tuple[str, Callable[[asyncio.Event], Awaitable[None]]]],
        leading: list[tuple[str, Callable[[asyncio.Event], Awaitable[None]]]],
    ) -> None:
        """Every replica's loops for the whole run; the leader's loops once per term."""
        stop = self.stop_event
        async with asyncio.TaskGroup() as tg:
            sup = Supervisor(tg, stop, self.request_stop)
            self._always = sup
            for name, loop in always:
                _ = sup.spawn(name, functools.partial(loop, stop))
            _ = sup.spawn("leadership", functools.partial(self._leader_terms, parts, leading))
            await stop.wait()
            await sup.drain(self.config.server.shutdown_timeout_seconds)
        self._always = None

    async def _leader_terms(
        self, parts: Parts, leading: list[tuple[str, Callable[[asyncio.Event], Awaitable[None]]]]
    ) -> None:
        """Run the lease (and, each time this replica leads, the leader work) until stopped;
        a clean stop drains the leader work, then hands the lease over."""
        lead = parts.leadership
        assert lead is not None
        listener = Notifications(lambda: parts.db.url or "", self._on_notice, self._on_listening)
        async with asyncio.TaskGroup() as tg:
            _ = tg.create_task(lead.run(self.stop_event), name="lease")
            _ = tg.create_task(listener.run(self.stop_event), name="listen")
            while not self.stop_event.is_set():
                await wait_either(self.stop_event, lead.leading, None)
                if lead.leading.is_set():
                    await self._term(parts, leading)
            await lead.release()

    async def _term(
        self, parts: Parts, leading: list[tuple[str, Callable[[asyncio.Event], Awaitable[None]]]]
    ) -> None:
        """One leadership term: the durable marks timed, the leader loops and store writers
        running until the lease is lost (stopped at once) or the daemon stops (drained)."""
        lead, term_stop = parts.leadership, asyncio.Event()
        assert lead is not None
        parts.engine.inventory_cache.forget_all()  # another replica may have led meanwhile
        try:
            await parts.marks.activate()
        except TRANSIENT_ERRORS as exc:  # Postgres went away: the lease lapses, or we retry
            log.warning("leader_start_failed", error=str(exc) or type(exc).__name__)
            await wait_either(self.stop_event, lead.lost, RECOMPUTE_RETRY_SECONDS)
            return
        async with asyncio.TaskGroup() as tg:
            sup = Supervisor(tg, term_stop, self.request_stop)
            parts.stores.spawn = sup.spawn
            for name, loop in leading:
                _ = sup.spawn(name, functools.partial(loop, term_stop))
            for rt in parts.stores:
                parts.stores.start_writer(rt)
                parts.stores.spawn_location_check(rt)
            await wait_either(self.stop_event, lead.lost, None)
            parts.stores.spawn = no_spawn
            term_stop.set()
            for rt in parts.stores:
                rt.stop.set()
            if lead.lost.is_set():
                sup.cancel_all()
            else:
                # Within the daemon's own drain, leaving time to hand the lease over.
                bound = max(0.5, self.config.server.shutdown_timeout_seconds - RELEASE_SECONDS)
                await sup.drain(bound, _writer_idle(parts))
        parts.marks.deactivate()

    def _on_notice(self, channel: str, payload: str) -> None:
        """A NOTIFY from any replica: marks committed (timed if we lead), a lease let go."""
        parts = self._parts()
        lead = parts.leadership
        assert lead is not None
        if channel == LEASE_CHANNEL:
            lead.wake.set()
            return
        notice = parse_marks(payload)
        if notice is None or notice.replica == lead.holder or not parts.marks.active:
            return
        if notice.reload_all:
            self._reload_marks.set()
            return
        parts.marks.on_notice(notice.variants, notice.orders, notice.polls)

    async def _on_listening(self) -> None:
        """The LISTEN connection is (re)opened: notices may have been missed meanwhile."""
        parts = self._parts()
        assert parts.leadership is not None
        parts.leadership.wake.set()
        self._reload_marks.set()

    async def _marks_reload_loop(self, stop: asyncio.Event) -> None:
        """Leader: re-time every durable mark when notices may have been missed or were too
        many to list."""
        while not stop.is_set():
            await wait_either(stop, self._reload_marks, None)
            if self._reload_marks.is_set():
                self._reload_marks.clear()
                if self._parts().marks.active:
                    await self._parts().marks.load()

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
            pages=self._pages(parts, status),
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

    def _pages(
        self, parts: Parts, status: Callable[[], Awaitable[dict[str, Any]]]
    ) -> Callable[[web.Application], None] | None:
        """The status pages' routes, when ``[server] ui`` is on."""
        if not self.config.server.ui:
            return None
        deps = ui_web.UiDeps(pool=lambda: parts.db.pool, status=status, config=self._config.get)
        return functools.partial(ui_web.setup, deps=deps)

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


def _writer_idle(parts: Parts) -> Callable[[asyncio.Task[None]], bool]:
    """At a drain: a writer waiting (on its limiter, or backing off after an error) is
    cancelled at once, its backlog is durable. A writer with a request on the wire gets to
    finish it and record its answer (cancelling the record would roll it back and resend the
    write after a restart)."""
    stores: StoreRegistry = parts.stores

    def idle(task: asyncio.Task[None]) -> bool:
        for rt in stores:
            if rt.task is task:
                return not (rt.client.writes_in_flight > 0 or rt.writer.recording)
        return False

    return idle
