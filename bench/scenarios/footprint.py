"""footprint: memory and disk with ``variants`` mirrored variants. katsyncd cold-starts on the
catalogue (one store selling every SKU, quotas raised so it takes seconds) and, once every SKU
is right and nothing is pending, the daemon process's resident memory (``VmRSS``, and the
high-water mark ``VmHWM``) and its database's ``pg_database_size`` are read. The baseline is
measured after its initial sync has read the same whole inventory (it has no database).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.context import Context
from bench.pg import database_size, table_counts
from bench.profiles import Footprint
from bench.report import Row, Target
from bench.systems import Baseline, Katsyncd, Proc
from bench.world import Oracle, build_world

NAME = "footprint"
MIB = 1024 * 1024


@dataclass
class Footprints:
    rss_mib: float | None = None
    peak_mib: float | None = None
    db_mib: float | None = None
    tables: dict[str, int] = field(default_factory=dict)
    right: float = 0.0


def _memory(proc: Proc, out: Footprints) -> None:
    rss, hwm = proc.status_kib("VmRSS"), proc.status_kib("VmHWM")
    out.rss_mib = None if rss is None else rss / 1024
    out.peak_mib = None if hwm is None else hwm / 1024


async def run(ctx: Context) -> list[Row]:
    p = ctx.profile.footprint
    k = await _katsyncd(ctx, p)
    b = await _baseline(ctx, p)
    ctx.note(
        NAME,
        f"{p.variants:,} variants, one store selling every SKU; katsyncd tables: {k.tables}. "
        "RSS is the daemon process alone (Postgres is separate, its size is the database row).",
    )
    return [
        Row(NAME, "daemon RSS (VmRSS)", "MiB", k.rss_mib, b.rss_mib, Target(200, unit=" MiB")),
        Row(NAME, "daemon peak RSS (VmHWM)", "MiB", k.peak_mib, b.peak_mib),
        Row(NAME, "Postgres database size", "MiB", k.db_mib, None, baseline_note="no database"),
        Row(NAME, "SKUs right at the end", "%", 100.0 * k.right, None),
    ]


async def _katsyncd(ctx: Context, p: Footprint) -> Footprints:
    world = await build_world(
        p.variants, katana_rpm=p.katana_rpm, bc_quota=p.bc_quota, stores=1, quirks=ctx.quirks
    )
    system = Katsyncd(
        ctx.pg, ctx.workdir, NAME, sync=ctx.profile.sync.as_config(), rpm=p.katana_rpm,
        log_level="warning",
    )  # fmt: skip
    out = Footprints()
    try:
        ctx.say(NAME, f"katsyncd: mirroring {p.variants:,} variants")
        await system.start(world, subscribe=False)
        oracle = Oracle(world)
        await oracle.wait(p.cap_seconds, poll=2.0)
        await system.wait_idle(p.cap_seconds)
        assert system.proc is not None and system.db_url is not None
        _memory(system.proc, out)
        out.right = oracle.fraction_right()
        out.db_mib = await database_size(system.db_url) / MIB
        out.tables = await table_counts(
            system.db_url, ["katana_variant", "bc_item", "item_level", "push_log"]
        )
        ctx.say(NAME, f"katsyncd: RSS {out.rss_mib:.0f} MiB, database {out.db_mib:.0f} MiB")
        return out
    finally:
        await system.stop()
        await world.stop()


async def _baseline(ctx: Context, p: Footprint) -> Footprints:
    world = await build_world(
        p.variants, katana_rpm=p.katana_rpm, bc_quota=p.bc_quota, stores=1, quirks=ctx.quirks
    )
    system = Baseline(
        ctx.workdir, NAME, rpm=p.katana_rpm, initial_sync=True,
        initial_sync_max_skus=p.baseline_max_skus,
    )  # fmt: skip
    out = Footprints()
    try:
        await system.start(world, subscribe=False)
        await system.wait_initial_sync(p.cap_seconds)
        assert system.proc is not None
        _memory(system.proc, out)
        return out
    finally:
        await system.stop()
        await world.stop()
