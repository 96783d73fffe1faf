"""Katana answering 503, then 429, to every request for ``storm_seconds`` while changes keep
coming, with the account's real quota. Never over quota: the most requests Katana admitted
in any sliding 60 s (storm answers included) against the quota, and no quota 429 outside the
injected storms. Catch-up: storm over → every store right."""

from __future__ import annotations

import asyncio
import random
import time

from faults.common import Context, Daemon, activity, make_world, wait_right
from faults.report import Expect, Row, zero

STORM = 10**9


def _max_window(times: list[float], seconds: float = 60.0) -> int:
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] < t - seconds:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def storms(ctx: Context) -> list[Row]:
    p = ctx.profile
    name = "katana 503/429 storms"
    world = await make_world(ctx, katana_rpm=p.storm_rpm)
    daemon = Daemon(ctx, world, "storm")
    rng = random.Random(41)
    rows: list[Row] = []
    storm_windows: list[tuple[float, float]] = []
    try:
        await daemon.start()
        if await wait_right(world, 4 * p.converge_cap) is None:
            raise RuntimeError(f"initial sync did not converge:\n{daemon.log_tail()}")
        for status in (503, 429):
            world.katana.fail_next(STORM, status)
            began = time.time()
            await activity(world, rng, 20, p.storm_seconds)
            world.katana.clear_faults()
            ended = time.time()
            storm_windows.append((began, ended))
            recovered = time.monotonic()
            took = await wait_right(world, 4 * p.converge_cap)
            caught_up = None if took is None else time.monotonic() - recovered
            stormed = sum(
                1 for r in world.katana.request_log if began <= r.at <= ended and r.status == status
            )
            ctx.say(name, f"{status} storm: {stormed} answers, caught up in {caught_up}")
            rows.append(
                Row(
                    name,
                    f"{status} storm: catch-up after it ends",
                    caught_up,
                    "s",
                    note=f"{stormed} requests answered {status} during it",
                )
            )
        await asyncio.sleep(0)
        log = world.katana.request_log
        admitted = sorted(r.at for r in log if r.status != 429)
        quota_429 = sum(
            1 for r in log if r.status == 429 and not any(b <= r.at <= e for b, e in storm_windows)
        )
    finally:
        await daemon.stop()
        await world.stop()
    return [
        *rows,
        Row(
            name,
            "most requests in any 60 s",
            _max_window(admitted),
            "",
            Expect(p.storm_rpm),
            True,
            note=f"quota {p.storm_rpm}/min",
        ),
        zero("quota 429s outside the storms", name, quota_429),
    ]
