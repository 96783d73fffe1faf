"""kill -9 and SIGTERM at random points of a burst of Katana activity.

Per round: activity runs, the daemon is killed (``kill -9``) or stopped (SIGTERM) at a random
moment of it, restarted, and must converge. ``lost``: (store, SKU) pairs still wrong when the
round's cap ran out. ``repeated``: items written to BigCommerce with the quantity the previous
write had already put there (a write done but not recorded before the process died), counted
from the signal to the end of the round; the same count while the process is running, before
the signal, is reported as a control."""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import time

from faults.common import (
    Context,
    Daemon,
    WriteLedger,
    activity,
    make_world,
    wait_right,
    wrong_pairs,
)
from faults.report import Expect, Row, zero


async def kill9(ctx: Context) -> list[Row]:
    return await _rounds(ctx, "kill -9", signal.SIGKILL)


async def sigterm(ctx: Context) -> list[Row]:
    return await _rounds(ctx, "SIGTERM", signal.SIGTERM)


async def _rounds(ctx: Context, name: str, sig: int) -> list[Row]:
    p = ctx.profile
    world = await make_world(ctx)
    daemon = Daemon(ctx, world, name.replace(" ", "").replace("-", ""))
    rng = random.Random(11 if sig == signal.SIGKILL else 12)
    converge_s: list[float] = []
    ready_s: list[float] = []
    lost = repeated = repeated_alive = rounds_converged = bad_exits = 0
    try:
        await daemon.start()
        if await wait_right(world, p.converge_cap) is None:
            raise RuntimeError(f"initial sync did not converge:\n{daemon.log_tail()}")
        ledger = WriteLedger(world)
        ledger.take()
        for i in range(p.kills):
            burst = asyncio.create_task(activity(world, rng, 60, 2.0))
            await asyncio.sleep(rng.uniform(0.05, 2.0))  # the random point of the kill
            repeated_alive += ledger.take()[1]  # repeats before any signal: not the kill's
            if sig == signal.SIGKILL:
                await daemon.kill9()
            else:
                code = await daemon.sigterm()
                bad_exits += code != 0
            await burst
            restarted = time.monotonic()
            await daemon.start()
            ready_s.append(time.monotonic() - restarted)
            took = await wait_right(world, p.converge_cap)
            if took is not None:
                took = time.monotonic() - restarted
            _, again = ledger.take()
            repeated += again
            if took is None:
                lost += wrong_pairs(world)
                wrong = {k: v[:3] for k, v in world.wrong().items() if v}
                ctx.say(name, f"still wrong (store: sku, has, Katana says): {wrong}")
                st = await daemon.status()
                pending = {k: v for k, v in st.items() if "pending" in k}
                backlog = {s["name"]: s.get("backlog") for s in st.get("stores", [])}
                ctx.say(name, f"/status: {pending}, backlog {backlog}")
                ctx.results.note(
                    name, f"round {i + 1} not converged: {wrong}; {pending}, backlog {backlog}"
                )
            else:
                rounds_converged += 1
                converge_s.append(took)
            ctx.say(
                name,
                f"round {i + 1}/{p.kills}: converged in "
                f"{'—' if took is None else f'{took:.1f} s'}, repeated items {again}",
            )
        started = time.monotonic()
        await daemon.stop()
        ctx.say(name, f"stopped in {time.monotonic() - started:.1f} s")
    finally:
        await daemon.stop()
        await world.stop()
    rows = [
        Row(name, "rounds converged", rounds_converged, "", Expect(p.kills, equal=True), True),
        Row(name, "restart to /readyz, max", max(ready_s) if ready_s else None, "s"),
        Row(
            name,
            "converge after restart (from the new process), median",
            statistics.median(converge_s) if converge_s else None,
            "s",
        ),
        Row(name, "converge after restart, max", max(converge_s) if converge_s else None, "s"),
        zero("items lost (wrong at the cap)", name, lost),
        Row(
            name,
            "repeated items while running, before any signal",
            repeated_alive,
            "",
            note="control: no process died",
        ),
    ]
    if sig == signal.SIGKILL:
        rows.append(
            Row(
                name,
                "repeated items, total",
                repeated,
                "",
                note=f"{repeated / max(1, p.kills):.1f} per kill",
            )
        )
    else:
        rows.append(zero("repeated items", name, repeated))
        rows.append(zero("exits not 0", name, bad_exits))
    return rows
