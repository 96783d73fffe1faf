"""``python -m bench [--quick] [--runs N] [--scenario NAME ...] [--json FILE] [--markdown FILE]
[--pessimistic] [--array-filter-limit N [--array-filter-over-limit ignore|reject]]``.

Runs each scenario ``--runs`` times (default 3 for the full profile, 1 for ``--quick``), one
after another, prints the comparison table (rich: the median of the runs with their min and
max) and exits 0 when every run of every scenario ran, whatever the figures: targets are
reported, not asserted (judged on the median). A run that crashes gets an ``error`` row and
the exit status is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from bench.context import Context
from bench.pg import PgServer
from bench.profiles import PROFILES
from bench.report import (
    Results,
    Row,
    aggregate,
    command_line,
    machine,
    markdown,
    now_iso,
    print_results,
    write_json,
)
from bench.scenarios import SCENARIOS
from katsyncd.sim.quirks import Quirks, pessimistic

FULL_RUNS = 3  # one run is not a figure: the spread between runs is reported too
QUICK_RUNS = 1  # --quick runs in the test suite


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes, raised quotas (CI)")
    p.add_argument(
        "--runs",
        type=_positive,
        metavar="N",
        help="run each scenario N times; the table shows median, min and max "
        "(default: 3, or 1 with --quick)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    p.add_argument("--json", type=Path, help="save the figures as JSON")
    p.add_argument("--markdown", type=Path, help="save the table as Markdown")
    p.add_argument("--database-url", help="Postgres server (default: env, local, embedded)")
    p.add_argument("--workdir", type=Path, help="configs and logs (default: a temp folder)")
    p.add_argument("--profile", type=Path, help="py-spy katsyncd's measured phases into DIR")
    p.add_argument(
        "--pessimistic",
        action="store_true",
        help="simulators play every loosely documented behaviour the unhelpful way "
        "(katsyncd.sim.quirks.pessimistic())",
    )
    p.add_argument(
        "--array-filter-limit",
        type=int,
        metavar="N",
        help="Katana simulator honours at most N repeated values per array filter",
    )
    p.add_argument(
        "--array-filter-over-limit",
        choices=["ignore", "reject"],
        help="above the limit: drop the filter silently (default) or answer 400",
    )
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _runs(args: argparse.Namespace) -> int:
    if args.runs is not None:
        return int(args.runs)
    return QUICK_RUNS if args.quick else FULL_RUNS


def _quirks(args: argparse.Namespace) -> Quirks | None:
    """The simulators' quirks asked for on the command line (None: the optimistic default)."""
    quirks = pessimistic() if args.pessimistic else Quirks()
    katana = quirks.katana
    if args.array_filter_limit is not None:
        katana = replace(katana, array_filter_limit=args.array_filter_limit)
    if args.array_filter_over_limit is not None:
        katana = replace(katana, array_filter_over_limit=args.array_filter_over_limit)
    quirks = replace(quirks, katana=katana)
    return quirks if quirks.pessimistic else None


async def _run(args: argparse.Namespace, argv: Sequence[str]) -> tuple[Results, bool]:
    profile = PROFILES["quick" if args.quick else "full"]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="katsyncd-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runs = _runs(args)
    results = Results(profile.name, command_line(argv), now_iso(), machine(), runs=runs)
    ok = True
    async with PgServer(args.database_url) as pg:
        quirks = _quirks(args)
        ctx = Context(profile, pg, workdir, results, profile_dir=args.profile, quirks=quirks)
        ctx.say("bench", f"{profile.name} profile; Postgres: {pg.kind}; logs in {workdir}")
        if quirks is not None:
            ctx.say("bench", f"simulator quirks: {quirks}")
        for name in args.scenario or list(SCENARIOS):
            ok &= await _scenario(ctx, name, runs)
    return results, ok


async def _scenario(ctx: Context, name: str, runs: int) -> bool:
    """Run one scenario ``runs`` times; add its rows aggregated over the runs."""
    each: list[list[Row]] = []
    ok = True
    for run in range(1, runs + 1):
        ctx.run_label = f"run {run}/{runs}" if runs > 1 else ""
        rows, ran = await _one_run(ctx, name)
        each.append(rows)
        ok &= ran
    ctx.run_label = ""
    ctx.results.add(aggregate(each))
    return ok


async def _one_run(ctx: Context, name: str) -> tuple[list[Row], bool]:
    started = time.monotonic()
    try:
        return await SCENARIOS[name](ctx), True
    except Exception as exc:
        ctx.console.print(traceback.format_exc())
        ctx.note(name, f"error: {type(exc).__name__}: {exc}")
        return [Row(name, "error", "", None, None, note=f"{type(exc).__name__}: {exc}")], False
    finally:
        ctx.say(name, f"done in {time.monotonic() - started:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    results, ok = asyncio.run(_run(args, argv))
    results.seconds = time.monotonic() - started
    print_results(Console(width=max(160, Console().width)), results)
    if args.json:
        write_json(args.json, results)
    if args.markdown:
        args.markdown.write_text(markdown(results))
    return 0 if ok else 1
