"""``python -m faults [--quick] [--scenario NAME ...] [--json FILE] [--markdown FILE]
[--pessimistic]``.

Runs katsyncd as a subprocess against the simulators and the suite's OWN embedded Postgres
(which it stops and freezes; the machine's Postgres is never touched), scenario by scenario,
and prints the fault table. Exit 0 when every scenario ran (a scenario that crashes gets an
error and exit 1); rows that do not hold are reported, like bench's targets, and with
``--strict`` an invariant row that does not hold also exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from bench.report import command_line, now_iso
from faults.common import Context
from faults.pg import OwnPg
from faults.profiles import PROFILES
from faults.report import Results, markdown, print_results, write_json
from faults.scenarios import SCENARIOS
from katsyncd.sim.quirks import pessimistic


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m faults", description=__doc__)
    p.add_argument("--quick", action="store_true", help="few rounds, short outages (CI)")
    p.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    p.add_argument("--json", type=Path, help="save the figures as JSON")
    p.add_argument("--markdown", type=Path, help="save the table as Markdown")
    p.add_argument("--workdir", type=Path, help="configs and daemon logs (default: temp)")
    p.add_argument("--pessimistic", action="store_true", help="simulator quirks: pessimistic()")
    p.add_argument(
        "--strict", action="store_true", help="exit 1 also when an invariant row does not hold"
    )
    return p


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def _run(args: argparse.Namespace, argv: Sequence[str]) -> Results:
    profile = PROFILES["quick" if args.quick else "full"]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="katsyncd-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = Results(
        profile.name, command_line(argv).replace(" -m bench", " -m faults", 1), now_iso(), _commit()
    )
    async with OwnPg() as pg:
        quirks = pessimistic() if args.pessimistic else None
        ctx = Context(profile, pg, workdir, results, quirks)
        ctx.say("faults", f"{profile.name} profile; own Postgres {pg.admin_url}; logs in {workdir}")
        for name in args.scenario or list(SCENARIOS):
            started = time.monotonic()
            try:
                results.rows += await SCENARIOS[name](ctx)
                results.ran.append(name)
            except Exception as exc:
                ctx.console.print(traceback.format_exc())
                results.errors[name] = f"{type(exc).__name__}: {exc!s:.300}"
            finally:
                ctx.say(name, f"done in {time.monotonic() - started:.0f} s")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    results = asyncio.run(_run(args, argv))
    results.seconds = time.monotonic() - started
    print_results(Console(width=max(140, Console().width)), results)
    if args.json:
        write_json(args.json, results)
    if args.markdown:
        args.markdown.write_text(markdown(results))
    broken = [r for r in results.rows if r.invariant and r.holds is False]
    if results.errors or (args.strict and broken):
        return 1
    return 0
