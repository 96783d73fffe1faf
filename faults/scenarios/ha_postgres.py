"""Two replicas (``[ha]``, ``tests/support/ha.py``'s cluster and balancer) on a fresh database of
the suite's OWN Postgres, a steady stream of signed webhooks through the balancer, and Postgres
stopped for ``ha_outage_seconds`` (longer than the ``ha_lease_seconds`` lease) then started
again. Only the suite's own Postgres is stopped.

As in the single-daemon "postgres stopped" scenario, Katana is not subscribed and the polls are
10 min apart: a change whose webhook got a 2xx reaches BigCommerce only through the mark that
2xx promised. The one-writer rows read the BigCommerce simulator's write spans (each names the
replica's pid); the new epoch's start is the lease row's ``acquired_at`` (its age, read on the
database clock, taken from this process's monotonic clock just before the read)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field

import asyncpg

from faults.common import Context, make_world, store, wait_right
from faults.report import Expect, Row, zero
from faults.scenarios.postgres import QUIET_POLLS, Announcer, acked_right
from katsyncd.persistence import lease
from katsyncd.sim.world import World
from tests.support.ha import Cluster, Replica

NAME = "ha: postgres restart"
LOAD_EVERY = 0.2  # a signed webhook every 0.2 s (5 a second) through the balancer
LEAD_IN = 1.0  # seconds of load before Postgres stops
TAIL = 2.0  # and after it is back


@dataclass
class Outcome:
    lease_seconds: float
    outage: float
    during: dict[int, int] = field(default_factory=dict)  # answers while Postgres was down
    answers: dict[int, int] = field(default_factory=dict)  # every answer Katana got
    acked: int = 0
    lost: int = 0
    alive: int = 0
    max_in_flight: int = 0
    old_epoch: int = 0
    new_epoch: int | None = None
    leader_after: float | None = None  # seconds from Postgres back to a leader
    converged: float | None = None  # seconds from Postgres back to every 2xx change in BC
    stranded: list[str] = field(default_factory=list)  # 2xx SKUs not yet in BC at the stop
    stranded_right: float | None = None  # seconds from Postgres back until they are
    same_leader: bool = False  # the old leader took the new epoch
    gap: float | None = None  # old epoch's last write end → new epoch's first write start
    strays: int = 0  # writes by a replica other than the holder of the epoch they fell in


async def restart(ctx: Context) -> list[Row]:
    p = ctx.profile
    world = await make_world(ctx, stores=1)
    url = await ctx.pg.create_database("hapg")
    tmp = ctx.workdir / "hapg"
    tmp.mkdir(exist_ok=True)
    c = Cluster(world, url, tmp, lease_seconds=p.ha_lease_seconds)
    c.sync = dict(QUIET_POLLS)
    await c.balancer.start()
    try:
        out = await _run(ctx, c, world)
    finally:
        await ctx.pg.start()
        c.stop_all()
        await c.balancer.stop()
        await world.stop()
        with contextlib.suppress(Exception):
            await ctx.pg.drop_database(url)
    return rows(out)


async def _run(ctx: Context, c: Cluster, world: World) -> Outcome:
    p = ctx.profile
    out = Outcome(p.ha_lease_seconds, p.ha_outage_seconds)
    old = await _two_replicas(ctx, c, world)
    out.old_epoch = (await _lease(c.db_url)).epoch
    ann = Announcer(world, c.balancer.port, random.Random(21))
    sending = asyncio.create_task(ann.run(LEAD_IN + out.outage + TAIL, LOAD_EVERY))
    await asyncio.sleep(LEAD_IN)  # the scenario's pacing: load before the outage
    back = await _outage(ctx, c, ann, out)
    stranded = asyncio.create_task(_skus_right(world, out.stranded, p.converge_cap, back))
    new = await c.wait_leader(out.lease_seconds + 30)
    out.leader_after = time.monotonic() - back
    out.same_leader = new is old
    acquired = await _acquired(c.db_url, out)
    await sending
    out.stranded_right = await stranded
    out.converged = await acked_right(ann, p.converge_cap, back)
    out.acked, out.lost = len(ann.acked), ann.lost()
    out.answers = dict(c.balancer.answers)
    out.alive = sum(1 for r in c.replicas if r.proc.proc is not None and r.proc.proc.poll() is None)
    _writes(c, old, new, acquired, out)
    ctx.say(NAME, f"answers {out.answers}, during the outage {out.during}, lost {out.lost}")
    return out


async def _two_replicas(ctx: Context, c: Cluster, world: World) -> Replica:
    await c.start_replica()
    leader = await c.wait_leader()
    await c.start_replica()
    if await wait_right(world, ctx.profile.converge_cap) is None:
        raise RuntimeError("initial sync did not converge")
    return leader


async def _outage(ctx: Context, c: Cluster, ann: Announcer, out: Outcome) -> float:
    """Stop Postgres for ``out.outage`` s; the answers Katana got meanwhile, the acknowledged
    changes not yet in BigCommerce when it stopped; when it was back."""
    before = dict(c.balancer.answers)
    out.stranded = _wrong(ann.world, ann.acked)
    await ctx.pg.stop()
    ctx.say(NAME, f"Postgres stopped for {out.outage:g} s (lease {out.lease_seconds:g} s)")
    await asyncio.sleep(out.outage)  # the outage itself
    out.during = {k: n - before.get(k, 0) for k, n in c.balancer.answers.items()}
    out.during = {k: n for k, n in out.during.items() if n}
    await ctx.pg.start()
    return time.monotonic()


def _wrong(world: World, skus: list[str]) -> list[str]:
    a = store(world, "a")
    return [sku for sku in skus if a.sim.level(sku, 1) != a.expected(world.katana, sku)]


async def _skus_right(world: World, skus: list[str], limit: float, since: float) -> float | None:
    """Seconds from ``since`` until every one of ``skus`` is right in store "a"."""
    while time.monotonic() - since < limit:
        if not _wrong(world, skus):
            return time.monotonic() - since
        await asyncio.sleep(0.1)  # polling the simulator's levels: there is no event to await
    return None


async def _lease(url: str) -> lease.LeaseRow:
    conn = await asyncpg.connect(url)
    try:
        row = await lease.read(conn)
    finally:
        await conn.close()
    assert row is not None, "no lease row"
    return row


async def _acquired(url: str, out: Outcome) -> float:
    """This process's monotonic time at which the current epoch was acquired."""
    now = time.monotonic()
    row = await _lease(url)
    out.new_epoch = row.epoch
    return now - row.age


def _writes(c: Cluster, old: Replica, new: Replica, acquired: float, out: Outcome) -> None:
    out.max_in_flight = c.max_writes_in_flight()
    before = [end for start, end in c.writes_of(old) if start < acquired]
    after = [start for start, _ in c.writes_of(new) if start >= acquired]
    if before and after:
        out.gap = min(after) - max(before)
    out.strays = sum(
        1
        for r in c.replicas
        for start, _ in c.writes_of(r)
        if (r is not old and start < acquired) or (r is not new and start >= acquired)
    )


def _during_note(during: dict[int, int]) -> str:
    ok = sum(n for s, n in during.items() if 200 <= s < 300)
    other = sum(n for s, n in during.items() if not 200 <= s < 300 and s != 503)
    return f"{ok} 2xx, {during.get(503, 0)} 503, {other} other"


def rows(o: Outcome) -> list[Row]:
    lapses = o.outage > o.lease_seconds
    odd = sum(n for s, n in o.answers.items() if not 200 <= s < 300 and s != 503)
    who = "the same replica" if o.same_leader else "the other replica"
    epoch_note = f"epoch {o.old_epoch} → {o.new_epoch}, taken by {who}"
    return [
        Row(NAME, "webhooks answered while Postgres was down", sum(o.during.values()),
            note=_during_note(o.during)),
        Row(NAME, "answered 503 while Postgres was down", o.during.get(503, 0), "",
            Expect(1, at_least=True), True),
        zero("answers neither 2xx nor 503 (whole run)", NAME, odd),
        zero("2xx-then-lost", NAME, o.lost),
        Row(NAME, "replicas still running", o.alive, "", Expect(2, equal=True), True),
        Row(NAME, "max writes in flight per store", o.max_in_flight, "", Expect(1), True),
        Row(NAME, "old epoch's last write end → new epoch's first write", o.gap, "s",
            Expect(0, at_least=True, unit=" s"), True, note=epoch_note),
        zero("writes by a replica not holding that epoch's lease", NAME, o.strays),
        Row(NAME, "new epoch after the outage" if lapses else "lease kept (same epoch)",
            float(o.new_epoch is not None and (o.new_epoch > o.old_epoch) == lapses), "",
            Expect(1, equal=True), True,
            note=f"outage {o.outage:g} s, lease {o.lease_seconds:g} s; {epoch_note}"),
        Row(NAME, "a leader again after Postgres is back", o.leader_after, "s",
            Expect(o.lease_seconds + 5, unit=" s"), True),
        Row(NAME, "acknowledged changes not yet in BigCommerce when Postgres stopped",
            len(o.stranded)),
        Row(NAME, "… all of them in BigCommerce, after Postgres is back", o.stranded_right, "s"),
        Row(NAME, "every 2xx change in BigCommerce, after Postgres is back", o.converged, "s",
            note=f"{o.acked} changes acknowledged; the load ran {TAIL:g} s past the restart"),
    ]  # fmt: skip
