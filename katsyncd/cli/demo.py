"""``katsyncd demo``: everything local, no accounts.

An embedded Postgres, a Katana simulator with a few hundred products and live activity, two
BigCommerce store simulators with different settings (``katsyncd.sim.demo``), and the real
daemon syncing them, with a live view of how many SKUs are right in each store.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from katsyncd.cli.exit_codes import EXIT_FAILURE, EXIT_OK
from katsyncd.config import build_config
from katsyncd.daemon import Daemon
from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.sim.demo import activity, build_world_stores
from katsyncd.sim.quirks import optimistic, pessimistic
from katsyncd.sim.world import World, free_port

CONVERGE_TIMEOUT_SECONDS = 90.0


def view(world: World, daemon: Daemon, started: float, events: int) -> Table:
    k = world.katana
    t = Table(
        title=f"katsyncd demo — {time.monotonic() - started:4.0f} s, {events} Katana "
        f"changes, {k.request_count()} Katana requests ({k.requests_per_minute}/min)"
    )
    for col in ("store", "settings", "SKUs right", "backlog", "BC requests", "stock writes"):
        t.add_column(col)
    for s in world.stores:
        total = len(s.skus)
        right = total - len(s.wrong(k))
        backlog = daemon.metrics.store_backlog.labels(s.name)._value.get()
        t.add_row(
            s.name,
            ", ".join(f"{a}={b}" for a, b in s.settings.items()),
            f"{right}/{total} ({100 * right / max(1, total):.1f} %)",
            f"{backlog:.0f}",
            str(s.sim.request_count()),
            str(len(s.sim.adjustments)),
        )
    return t


async def run_demo(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="katsyncd-demo-"))
    console = Console()
    quirks = pessimistic() if getattr(args, "pessimistic", False) else optimistic()
    world = await World.start(katana_rpm=60, quirks=quirks)
    world.katana.populate(args.products, locations=2, seed=7)
    build_world_stores(world, args.products)
    port = free_port()
    data = world.config_data(
        port=port, database={"state_dir": str(state_dir)}, sync={"poll_interval_seconds": 15.0}
    )
    data["server"]["ui"] = True  # the status pages: the demo is the place to try them
    cfg = build_config(data, source="<demo>")
    daemon = Daemon(cfg)
    world.subscribe(port, SUBSCRIBED_EVENTS)
    stop, events = asyncio.Event(), [0]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    console.print(
        f"[bold]katsyncd demo[/]: embedded Postgres under {state_dir}; Katana sim "
        f"{world.katana_url}; BigCommerce sim {world.bc_url}; daemon on "
        f"127.0.0.1:{port} (/status, /metrics). Ctrl-C stops."
    )
    console.print(
        f"[bold]Status page[/]: http://127.0.0.1:{port}/ (push history: /pushes, "
        "one SKU: /sku/<SKU>)",
        soft_wrap=True,
    )
    if quirks.pessimistic:
        console.print(f"simulators play the pessimistic readings: {quirks}")
    daemon_task = asyncio.create_task(daemon.run(install_signals=False))
    act = asyncio.create_task(activity(world, args.events_per_second, stop, events))
    started = time.monotonic()
    ok = False
    try:
        await _watch(args, console, world, daemon, started, events, stop, daemon_task)
        stop.set()
        await act
        ok = await _converge(console, world, daemon_task)
    finally:
        stop.set()
        await act
        daemon.request_stop()
        await asyncio.gather(daemon_task, return_exceptions=True)
        await world.stop()
    _summary(console, world, events[0], time.monotonic() - started, ok)
    return EXIT_OK if ok else EXIT_FAILURE


async def _watch(
    args: argparse.Namespace,
    console: Console,
    world: World,
    daemon: Daemon,
    started: float,
    events: list[int],
    stop: asyncio.Event,
    daemon_task: asyncio.Task[None],
) -> None:
    deadline = None if args.duration is None else started + args.duration

    def done() -> bool:
        return (
            stop.is_set()
            or daemon_task.done()
            or (deadline is not None and time.monotonic() >= deadline)
        )

    if args.plain or not console.is_terminal:
        last = 0.0
        while not done():
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                console.print(view(world, daemon, started, events[0]))
            await asyncio.sleep(0.2)
        return
    with Live(
        view(world, daemon, started, events[0]), console=console, refresh_per_second=2
    ) as live:
        while not done():
            live.update(view(world, daemon, started, events[0]))
            await asyncio.sleep(0.5)


async def _converge(console: Console, world: World, daemon_task: asyncio.Task[None]) -> bool:
    """Activity stopped: wait (bounded) until every store is right."""
    if daemon_task.done():
        return False
    console.print("activity stopped; waiting for every store to converge …")
    took = await world.wait_converged(CONVERGE_TIMEOUT_SECONDS, poll=0.5)
    return took is not None


def _summary(console: Console, world: World, events: int, seconds: float, ok: bool) -> None:
    console.print(
        f"\n{events} Katana changes in {seconds:.0f} s; Katana requests used: "
        f"{world.katana.request_count()}"
    )
    for s in world.stores:
        wrong = s.wrong(world.katana)
        console.print(
            f"  store {s.name}: {len(s.skus) - len(wrong)}/{len(s.skus)} SKUs right, "
            f"{s.sim.request_count()} BigCommerce requests, "
            f"{len(s.sim.adjustments)} stock writes"
        )
        for sku, have, want in wrong[:5]:
            console.print(f"    {sku}: BigCommerce {have}, Katana says {want}")
    console.print("[green]converged[/]" if ok else "[red]did not converge[/]")
