"""``katsyncd doctor [--store NAME] [--url URL]``: read-only checks of the configuration against
the live APIs (``katsyncd.doctor``), printed one line per check."""

from __future__ import annotations

import argparse
import sys

from katsyncd.cli.exit_codes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from katsyncd.cli.render import render_doctor, stdout_console
from katsyncd.config import Config
from katsyncd.doctor import diagnose


async def run_doctor_cli(cfg: Config, args: argparse.Namespace) -> int:
    """Exit 0 when every check passes, 1 otherwise, 2 for an unknown store."""
    if args.store is not None and args.store not in cfg.store_names:
        known = ", ".join(cfg.store_names) or "none"
        print(f"katsyncd: unknown store {args.store!r} (configured: {known})", file=sys.stderr)
        return EXIT_CONFIG
    stores = [s for s in cfg.stores if args.store in (None, s.name)]
    url = args.url or cfg.katana.webhook_url
    report = await diagnose(cfg, stores, url)
    render_doctor(stdout_console(), report)
    return EXIT_OK if report.ok else EXIT_FAILURE
