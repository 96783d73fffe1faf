"""``katsyncd check-config``: the config file is valid; show it with its secrets redacted."""

from __future__ import annotations

import json
from pathlib import Path

from katsyncd.cli.exit_codes import EXIT_OK
from katsyncd.config import Config


def run_check_config(cfg: Config, path: Path) -> int:
    """Loading ``cfg`` already validated it (an invalid file never gets here: exit 2)."""
    print(f"{path}: OK")
    print(json.dumps(cfg.redacted(), indent=2, default=str))
    return EXIT_OK
