"""``katsyncd reconcile [--store NAME] [--dry-run] [--output FILE.csv]``: one full reconcile,
the differences written to BigCommerce here (stores whose writes are enabled) and reported."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from rich.console import Console

from katsyncd.bigcommerce import BcError
from katsyncd.cli.exit_codes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from katsyncd.cli.render import page_progress, render_reconcile, stdout_console, write_csv
from katsyncd.cli.wiring import offline
from katsyncd.config import Config
from katsyncd.katana import KatanaError
from katsyncd.reconcile import ReconcileReport


async def run_reconcile_cli(cfg: Config, args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(args.store or cfg.store_names))
    unknown = [n for n in names if n not in cfg.store_names]
    if unknown or not names:
        print(_unknown_stores_message(unknown, cfg.store_names), file=sys.stderr)
        return EXIT_CONFIG
    console = stdout_console()
    try:
        report = await _reconcile_once(cfg, names, dry_run=args.dry_run, console=console)
    except (KatanaError, BcError, OSError, asyncpg.PostgresError) as exc:
        print(f"katsyncd: reconcile failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    render_reconcile(console, report)
    if args.output:
        rows = write_csv(Path(args.output), report.diff())
        console.print(f"Differences written to {args.output} ({rows} rows).")
    return EXIT_OK


def _unknown_stores_message(unknown: Sequence[str], known: Sequence[str]) -> str:
    if not known:
        return "katsyncd: no stores are configured ([[stores]] in the config file)"
    return f"katsyncd: unknown store(s): {', '.join(unknown)} (configured: {', '.join(known)})"


async def _reconcile_once(
    cfg: Config, names: Sequence[str], *, dry_run: bool, console: Console
) -> ReconcileReport:
    """The daemon's components, built the same way, used for one reconcile and closed."""
    async with offline(cfg) as parts:
        with page_progress(console) as on_page:
            return await parts.reconcile("cli", names, dry_run=dry_run, push=True, on_page=on_page)
