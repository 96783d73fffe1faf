"""The exit codes of every ``katsyncd`` command (one place, so scripts and docs agree)."""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed (an API refused, a check did not pass, …)
EXIT_CONFIG = 2  # the configuration or the command line is wrong; nothing was attempted


def config_error(exc: Exception) -> int:
    """Say why the configuration is refused (on stderr) and return ``EXIT_CONFIG``."""
    print(f"katsyncd: invalid configuration:\n{exc}", file=sys.stderr)
    return EXIT_CONFIG
