"""``katsyncd run``: the daemon, until SIGTERM/SIGINT (SIGHUP reloads the config file)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from katsyncd.cli.exit_codes import EXIT_OK, config_error
from katsyncd.config import Config, ConfigError
from katsyncd.daemon import Daemon


def run_daemon(cfg: Config, path: Path) -> int:
    """Refuse a config that loads but cannot run (e.g. no webhook token: exit 2), else run."""
    try:
        cfg.check_runnable(str(path))
    except ConfigError as exc:
        return config_error(exc)
    asyncio.run(Daemon(cfg, config_path=path).run())
    return EXIT_OK
