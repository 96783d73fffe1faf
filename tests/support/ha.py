"""Several ``katsyncd run`` replicas on one database, behind a balancer, against the simulators.

``Balancer`` stands for a Kubernetes Service: Katana's webhooks go to it, it forwards each to a
replica in rotation (round robin) and counts the answers it gave Katana. A rolling update takes a
replica out of rotation before its SIGTERM, as the endpoints controller and a ``preStop`` pause
do. ``Cluster`` starts, finds and stops the replicas and checks the one-writer invariant at the
BigCommerce simulator.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.sim.world import WEBHOOK_TOKEN, World, free_port
from tests.support.harness import DaemonProcess, eventually, make_config_data, write_config

FORWARDED_HEADERS = ("Content-Type", "x-sha2-signature")


class Balancer:
    """Round robin over the replicas in rotation; ``answers`` counts the statuses Katana got."""

    def __init__(self) -> None:
        self.rotation: list[int] = []  # replica ports
        self.answers: Counter[int] = Counter()
        self.by_port: Counter[int] = Counter()
        self._turn = itertools.count()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = free_port()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks/katana", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))

    async def stop(self) -> None:
        if self._runner is not None:  # first: no request may arrive once the session is gone
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.answers.items() if not 200 <= status < 300)

    async def _forward(self, request: web.Request) -> web.Response:
        status = await self._send(request)
        self.answers[status] += 1
        return web.Response(status=status)

    async def _send(self, request: web.Request) -> int:
        if not self.rotation or self._session is None:
            return 502
        port = self.rotation[next(self._turn) % len(self.rotation)]
        self.by_port[port] += 1
        headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        url = f"http://127.0.0.1:{port}/webhooks/katana"
        try:
            async with self._session.post(url, data=await request.read(), headers=headers) as r:
                return r.status
        except (aiohttp.ClientError, TimeoutError):
            return 502


class Replica:
    def __init__(self, proc: DaemonProcess, port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def agent_tag(self) -> str:
        """What this replica's requests carry (its name in the lease and its X-Katsyncd-Replica
        header include the pid)."""
        return f"-{self.pid}-"


class Cluster:
    def __init__(self, world: World, db_url: str, tmp: Path, **ha: Any) -> None:
        self.world = world
        self.db_url = db_url
        self.tmp = tmp
        self.ha = ha
        self.balancer = Balancer()
        self.replicas: list[Replica] = []
        self.sync: dict[str, Any] = {}  # [sync] overrides for replicas started from now on
        self._n = 0

    async def start_replica(self, db_url: str | None = None, *, rotate: bool = True) -> Replica:
        port = free_port()
        data = make_config_data(
            self.world,
            db_url or self.db_url,
            port,
            **{"debounce_seconds": 0.5, "max_delay_seconds": 2.0, **self.sync},
        )
        data["ha"] = self.ha
        self._n += 1
        cfg = write_config(self.tmp / f"replica{self._n}.toml", data)
        proc = DaemonProcess(cfg, self.tmp / f"replica{self._n}.log")
        proc.start()
        replica = Replica(proc, port)
        self.replicas.append(replica)
        await proc.wait_ready(port)
        if rotate:
            self.balancer.rotation.append(port)
        return replica

    def out_of_rotation(self, replica: Replica) -> None:
        if replica.port in self.balancer.rotation:
            self.balancer.rotation.remove(replica.port)

    async def lease(self) -> tuple[str, int] | None:
        conn = await asyncpg.connect(self.db_url)
        try:
            row = await conn.fetchrow(
                "SELECT holder, epoch FROM leader_lease WHERE expires_at > now()"
            )
        finally:
            await conn.close()
        return None if row is None else (row["holder"], row["epoch"])

    async def leader(self) -> Replica | None:
        held = await self.lease()
        if held is None:
            return None
        pid = int(held[0].rsplit("-", 2)[1])
        return next((r for r in self.replicas if r.proc.proc and r.pid == pid), None)

    async def wait_leader(
        self, limit: float = 30.0, *, other_than: Replica | None = None
    ) -> Replica:
        found: list[Replica] = []

        async def check() -> bool:
            r = await self.leader()
            if r is not None and r is not other_than:
                found[:] = [r]
                return True
            return False

        await eventually(check, limit, poll=0.05)
        return found[0]

    async def pending_marks(self) -> int:
        conn = await asyncpg.connect(self.db_url)
        try:
            n: int = await conn.fetchval(
                "SELECT (SELECT count(*) FROM stale_variant)"
                " + (SELECT count(*) FROM stale_sales_order)"
            )
        finally:
            await conn.close()
        return n

    async def stable(self, limit: float = 60.0) -> None:
        """Nothing durable is left to do: no stale mark, no level still to write."""

        async def done() -> bool:
            conn = await asyncpg.connect(self.db_url)
            try:
                left = await conn.fetchval(
                    "SELECT (SELECT count(*) FROM stale_variant)"
                    " + (SELECT count(*) FROM stale_sales_order)"
                    " + (SELECT count(*) FROM item_level WHERE desired IS DISTINCT FROM pushed"
                    "    AND desired IS DISTINCT FROM failed_desired)"
                )
            finally:
                await conn.close()
            return bool(left == 0)

        await eventually(done, limit, poll=0.2)

    def max_writes_in_flight(self) -> int:
        return max(s.sim.max_concurrent_writes for s in self.world.stores)

    def writes_of(self, replica: Replica) -> list[tuple[float, float]]:
        tag = replica.agent_tag()
        return sorted(
            (w.start, w.end) for s in self.world.stores for w in s.sim.write_spans if tag in w.agent
        )

    def stop_all(self) -> None:
        for r in self.replicas:
            r.proc.stop()


@asynccontextmanager
async def cluster(world: World, db_url: str, tmp: Path, **ha: Any) -> AsyncIterator[Cluster]:
    c = Cluster(world, db_url, tmp, **ha)
    await c.balancer.start()
    world.katana.subscribe(
        f"http://127.0.0.1:{c.balancer.port}/webhooks/katana",
        SUBSCRIBED_EVENTS,
        token=WEBHOOK_TOKEN,
    )
    try:
        yield c
    finally:
        c.stop_all()
        await c.balancer.stop()


async def steady_load(
    world: World, rng: random.Random, per_second: float, stop: asyncio.Event
) -> int:
    """Katana changes at a steady rate until ``stop``; returns how many were made."""
    n, start = 0, time.monotonic()
    while not stop.is_set():
        world.katana.random_activity(rng)
        n += 1
        due = start + n / per_second
        # The scenario's pacing (changes over time), not a wait for a state.
        await asyncio.sleep(max(0.0, due - time.monotonic()))
    return n


async def burst(world: World, n: int, rng: random.Random, seconds: float) -> None:
    """n Katana changes (plus current_inventory hints) spread over ``seconds``."""
    ids = list(world.katana.variants)
    for i in range(n):
        world.katana.random_activity(rng)
        if i % 3 == 0:
            world.katana.emit("current_inventory.product_updated", rng.choice(ids))
        await asyncio.sleep(seconds / n)  # the scenario: changes spread over time, not a wait
