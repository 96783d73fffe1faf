"""Running ``katsyncd …`` (``katsyncd.cli.main``) from an async test."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import structlog

from katsyncd import cli


async def run_cli(argv: Sequence[str]) -> int:
    """``katsyncd argv…`` in a thread with its own event loop, so simulators serving on the
    test's loop keep answering. ``main`` configures logging for the process (to the stream the
    test captures); the session's configuration is put back afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return await asyncio.to_thread(cli.main, list(argv))
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
