"""katsyncd's subscription to Katana webhooks: how one compares with what katsyncd needs.

Pure; used by ``katsyncd doctor``'s webhook check and by ``katsyncd webhooks``. The events
themselves are ``katsyncd.ingest.SUBSCRIBED_EVENTS`` (what the receiver understands).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from katsyncd.ingest import SUBSCRIBED_EVENTS

Webhook = Mapping[str, Any]


def events_of(hook: Webhook) -> list[str]:
    """A subscription's events (an empty list if Katana sent something else)."""
    events = hook.get("subscribed_events")
    return [str(e) for e in events] if isinstance(events, list) else []


def mismatch(hook: Webhook) -> str | None:
    """Pure: why a subscription does not deliver exactly what katsyncd needs (None: it does)."""
    have, want = set(events_of(hook)), set(SUBSCRIBED_EVENTS)
    problems = []
    if hook.get("enabled") is not True:
        problems.append("disabled")
    if want - have:
        problems.append(f"{len(want - have)} events missing")
    if have - want:
        problems.append(f"{len(have - want)} events extra")
    return ", ".join(problems) or None
