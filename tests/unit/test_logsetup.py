"""Repeated warnings are rate-limited (issue 11, finding 8: ~60 a second during a database
outage): the same event at most once per LOG_REPEAT_SECONDS, with a suppressed count."""

from __future__ import annotations

import io
import json
from typing import Any

import structlog

from katsyncd import logsetup
from katsyncd.logsetup import LOG_REPEAT_SECONDS, RepeatLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _through(limiter: RepeatLimiter, **event: Any) -> dict[str, Any] | None:
    try:
        return dict(limiter(None, "warning", dict(event)))
    except structlog.DropEvent:
        return None


def test_a_storm_of_one_warning_is_written_once_per_window_with_a_count() -> None:
    clock = Clock()
    lim = RepeatLimiter(10.0, clock)
    written = []
    for _ in range(600):  # 60 a second for 10 s
        out = _through(lim, event="webhook_not_durable", level="warning", error="x")
        if out is not None:
            written.append(out)
        clock.now += 1 / 60
    out = _through(lim, event="webhook_not_durable", level="warning", error="x")
    assert out is not None and out["suppressed"] == 599  # all but the first
    assert len(written) == 1 and "suppressed" not in written[0]


def test_distinct_events_stores_and_info_lines_are_not_merged() -> None:
    lim = RepeatLimiter(10.0, Clock())
    assert _through(lim, event="store_write_failed", level="warning", store="a")
    assert _through(lim, event="store_write_failed", level="warning", store="b")
    assert _through(lim, event="flush_failed", level="warning")
    assert _through(lim, event="store_item_rejected", level="warning", store="a", sku="X")
    assert _through(lim, event="store_item_rejected", level="warning", store="a", sku="Y")
    assert _through(lim, event="store_write_failed", level="warning", store="a") is None
    for _ in range(5):
        assert _through(lim, event="poll_done", level="info")


def test_configured_logging_limits_repeats() -> None:
    stream = io.StringIO()
    logsetup.configure("info", "json", stream)
    try:
        log = structlog.get_logger("t")
        for _ in range(100):
            log.warning("group_commit_failed", error="connection refused")
        log.info("poll_done")
        log.info("poll_done")
    finally:
        structlog.reset_defaults()
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["group_commit_failed", "poll_done", "poll_done"]
    assert LOG_REPEAT_SECONDS >= 1.0
