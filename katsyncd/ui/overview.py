"""The overview page's model: per store a state a person can act on, from the ``/status``
document and the figures only the page shows (lag, SKUs right, failed items). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

RATE_WINDOW_SECONDS = 300.0  # the catch-up estimate divides the backlog by this window's rate


@dataclass(frozen=True, slots=True)
class Failed:
    sku: str
    item_key: str
    quantity: int
    reason: str


@dataclass(frozen=True, slots=True)
class StoreFigures:
    """What the page reads for a store besides the ``/status`` document."""

    matched: int = 0
    right: int = 0
    lag_p50: float | None = None
    lag_p99: float | None = None
    written_recently: int = 0  # levels written in the last RATE_WINDOW_SECONDS
    failed: tuple[Failed, ...] = ()
    unmatched_bigcommerce: int = 0


@dataclass(frozen=True, slots=True)
class StoreCard:
    name: str
    state: str  # in-sync | catching-up | error | off | dry-run
    headline: str
    advice: str | None
    backlog: int
    figures: StoreFigures
    last_push: str | None
    held: int
    unmatched_katana: int
    failed_items: int


@dataclass(frozen=True, slots=True)
class Overview:
    version: str
    ready: bool
    stores: list[StoreCard]
    budget: Mapping[str, Any]
    last_poll: datetime | None
    next_poll: datetime | None
    stale_pending: int
    notes: list[str] = field(default_factory=list)


def build(
    doc: Mapping[str, Any], figures: Mapping[str, StoreFigures], poll_interval: float
) -> Overview:
    last = _last_poll(doc)
    return Overview(
        version=str(doc.get("version", "")),
        ready=bool(doc.get("ready")),
        stores=[
            card(s, figures.get(s["name"], StoreFigures()), _to_read(doc)) for s in doc["stores"]
        ],
        budget=doc["katana"]["budget"],
        last_poll=last,
        next_poll=None if last is None else last + timedelta(seconds=poll_interval),
        stale_pending=_to_read(doc),
        notes=_notes(doc),
    )


def _to_read(doc: Mapping[str, Any]) -> int:
    """Katana changes marked but not read yet (variants and sales orders)."""
    return int(doc["stale_variants_pending"]) + int(doc["stale_sales_orders_pending"])


def _last_poll(doc: Mapping[str, Any]) -> datetime | None:
    marks = doc["katana"].get("watermarks") or {}
    times = [datetime.fromisoformat(w["polled_at"]) for w in marks.values()]
    return max(times, default=None)


def _notes(doc: Mapping[str, Any]) -> list[str]:
    notes = []
    if doc.get("draining"):
        notes.append("The daemon is stopping.")
    if doc.get("restart_required"):
        keys = ", ".join(doc["restart_required"])
        notes.append(f"Restart katsyncd to apply: {keys}.")
    if (doc.get("reload") or {}).get("result") == "failed":
        notes.append("The last config reload was refused; the previous config runs.")
    return notes


def card(s: Mapping[str, Any], f: StoreFigures, to_read: int = 0) -> StoreCard:
    """One store's card; ``to_read``: Katana changes not read yet (they may move any store)."""
    state, headline, advice = _state(s, f, to_read)
    return StoreCard(
        name=s["name"],
        state=state,
        headline=headline,
        advice=advice,
        backlog=int(s["backlog"]),
        figures=f,
        last_push=s.get("last_push"),
        held=int(s.get("held_by_oversell_guard") or 0),
        unmatched_katana=int(s.get("unmatched_skus_count") or 0),
        failed_items=int(s.get("failed_items") or 0),
    )


def _state(s: Mapping[str, Any], f: StoreFigures, to_read: int) -> tuple[str, str, str | None]:
    """(state, headline, what to do) for one store."""
    if not s["stock_sync"]:
        return "off", "Sync is off for this store", "Set stock_sync = true to sync it."
    if s["state"] == "error" and s.get("error"):
        err = s["error"]
        return "error", f"Error: {err.get('message') or err.get('kind')}", err.get("hint")
    if s["dry_run"]:
        return "dry-run", "Dry run: levels are computed and recorded, nothing is written", None
    if s["backlog"]:
        return "catching-up", f"Catching up: {_estimate(s['backlog'], f)}", None
    if to_read:
        return "catching-up", f"Catching up: {to_read} Katana changes to read", None
    return "in-sync", "In sync", None


def _estimate(backlog: int, f: StoreFigures) -> str:
    rate = f.written_recently / RATE_WINDOW_SECONDS
    if rate <= 0:
        return f"{backlog} levels to write"
    return f"{backlog} levels to write, about {duration(backlog / rate)} left"


def duration(seconds: float | None) -> str:
    """A short human duration: ``850 ms``, ``12 s``, ``4 min``, ``2.5 h``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
