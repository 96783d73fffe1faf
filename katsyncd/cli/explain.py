"""``katsyncd explain SKU [--store NAME]``: why a SKU shows the level it shows, in each store,
from what the daemon recorded (the same model as the status page's ``/sku/{sku}``)."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from katsyncd.cli.exit_codes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from katsyncd.cli.wiring import database
from katsyncd.config import Config
from katsyncd.db import pending_migrations
from katsyncd.ui.explain import explain
from katsyncd.ui.reads import load_inputs
from katsyncd.ui.terminal import render


async def run_explain(cfg: Config, args: argparse.Namespace) -> int:
    stores = list(cfg.stores)
    if args.store is not None:
        stores = [s for s in stores if s.name == args.store]
        if not stores:
            known = ", ".join(cfg.store_names) or "none configured"
            print(f"katsyncd: unknown store {args.store!r} (stores: {known})", file=sys.stderr)
            return EXIT_CONFIG
    async with database(cfg) as db:
        async with db.pool.acquire() as conn:
            pending = await pending_migrations(conn)
        if pending:
            print(
                f"katsyncd: migrations {pending} not applied: run `katsyncd migrate`",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        inputs = await load_inputs(db.pool, stores, args.sku)
    render(explain(inputs), Console(highlight=False))
    return EXIT_OK
