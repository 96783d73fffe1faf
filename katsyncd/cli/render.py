"""How the commands' results look: rich tables and lines for a person, CSV for a file.

Reconcile: a progress bar for the inventory sweep (plain ``reconcile_progress`` log lines when
stdout is not a terminal), a summary table with one column per store, each store's
differences and SKU lists, and the CSV of every difference. Doctor: one line per check (✓ ✗ -)
with what to do next, and the requests it sent. Webhooks: the subscriptions table.
"""

from __future__ import annotations

import contextlib
import csv
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from katsyncd.doctor import Report, Status
from katsyncd.katana import PageHook
from katsyncd.reconcile import DiffRow, ReconcileReport, StoreReport, log_progress
from katsyncd.subscription import Webhook, events_of, mismatch

CSV_COLUMNS = (
    "store",
    "sku",
    "item_key",
    "location_id",
    "bigcommerce_now",
    "katana_says",
    "action",
)
SHOWN_DIFF_ROWS = 50  # the terminal report shows this many differences per store
SHOWN_SKUS = 20  # ... and this many SKUs of each unmatched / untracked list
MARKS: Mapping[Status, str] = {"pass": "✓", "fail": "✗", "skip": "-"}


def stdout_console() -> Console:
    """Standard output for a person; a token, URL or SKU list is never broken across lines."""
    return Console(soft_wrap=True)


# ----- reconcile -------------------------------------------------------------------------------


class RichPageProgress:
    """A progress bar with time remaining for the Katana inventory sweep (a terminal)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]Katana inventory[/bold] pages"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = self._progress.add_task("inventory", total=None)

    def __enter__(self) -> RichPageProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def __call__(self, done: int, total: int | None) -> None:
        self._progress.update(self._task, completed=done, total=total)


@contextlib.contextmanager
def page_progress(console: Console) -> Iterator[PageHook]:
    """A rich bar when stdout is a terminal, else plain ``reconcile_progress`` log lines."""
    if not sys.stdout.isatty():
        yield log_progress
        return
    with RichPageProgress(console) as bar:
        yield bar


def csv_row(r: DiffRow) -> list[str | int]:
    """One difference as a CSV row (columns ``CSV_COLUMNS``; an unknown level is empty)."""
    now = "" if r.bigcommerce_now is None else r.bigcommerce_now
    return [r.store, r.sku, r.item_key, r.location_id, now, r.katana_says, r.action]


def write_csv(path: Path, rows: Iterable[DiffRow]) -> int:
    """The differences as CSV (columns ``CSV_COLUMNS``); returns how many rows were written."""
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        for r in rows:
            out.writerow(csv_row(r))
            n += 1
    return n


def render_reconcile(console: Console, report: ReconcileReport) -> None:
    """The report for a person: a summary table, then each store's details."""
    console.print(_summary_table(report))
    for s in report.stores:
        _render_store(console, s)
    mode = "dry run: nothing was written" if report.dry_run else "done"
    console.print(
        f"Katana: {report.inventory_rows} inventory rows in {report.inventory_pages} pages, "
        f"{report.sales_orders} open sales orders in {report.sales_order_requests} requests, "
        f"{report.reverified_variants} variants re-read; {report.seconds:.1f} s ({mode})."
    )


SUMMARY_ROWS = (
    ("Matched SKUs", "matched_skus"),
    ("Matched items", "matched_items"),
    ("Changed (BigCommerce differs)", "changed"),
    ("Unchanged", "unchanged"),
    ("Written", "written"),
    ("Rejected", "rejected"),
    ("Katana SKUs not in BigCommerce", "unmatched_katana"),
    ("BigCommerce SKUs not in Katana", "unmatched_bigcommerce"),
    ("BigCommerce items not tracking stock", "untracked"),
    ("S8: SKUs on several Katana variants", "duplicates"),
    ("S7: SKUs on several BigCommerce items", "fan_out"),
)


def _summary_table(report: ReconcileReport) -> Table:
    """One column per store, one row per count (stays narrow with many counts)."""
    table = Table(title="Reconcile (dry run)" if report.dry_run else "Reconcile")
    table.add_column("")
    for s in report.stores:
        dry = s.dry_run and not report.dry_run
        table.add_column(f"{s.store} (dry run)" if dry else s.store, justify="right")
    counts = [s.summary() for s in report.stores]
    for label, key in SUMMARY_ROWS:
        table.add_row(label, *(str(c[key]) for c in counts))
    return table


def _render_store(console: Console, s: StoreReport) -> None:
    if s.diff:
        console.print(_diff_table(s))
    for d in s.duplicates:
        losers = ", ".join(map(str, d.losers))
        console.print(
            f"[{s.store}] S8 {d.sku}: variant {d.winner} wins over {losers}", markup=False
        )
    for sku, keys in s.sides.fan_out.items():
        console.print(f"[{s.store}] S7 {sku}: same level to {', '.join(keys)}", markup=False)
    _render_skus(console, s.store, "Katana SKUs not in BigCommerce", s.sides.unmatched_katana)
    _render_skus(console, s.store, "BigCommerce SKUs not in Katana", s.sides.unmatched_bigcommerce)
    _render_skus(console, s.store, "BigCommerce SKUs not tracking stock", s.sides.untracked)


def _diff_table(s: StoreReport) -> Table:
    table = Table(title=f"{s.store}: {s.changed} differences")
    for h in ("SKU", "Item", "Location", "BigCommerce now", "Katana says", "Action"):
        table.add_column(h, justify="right" if h in ("BigCommerce now", "Katana says") else "left")
    for r in s.diff[:SHOWN_DIFF_ROWS]:
        now = "?" if r.bigcommerce_now is None else str(r.bigcommerce_now)
        table.add_row(r.sku, r.item_key, str(r.location_id), now, str(r.katana_says), r.action)
    if s.changed > SHOWN_DIFF_ROWS:
        table.caption = f"… and {s.changed - SHOWN_DIFF_ROWS} more (all of them: --output FILE.csv)"
    return table


def _render_skus(console: Console, store: str, what: str, skus: Sequence[str]) -> None:
    if not skus:
        return
    shown = ", ".join(skus[:SHOWN_SKUS])
    more = f" … and {len(skus) - SHOWN_SKUS} more" if len(skus) > SHOWN_SKUS else ""
    console.print(f"[{store}] {what} ({len(skus)}): {shown}{more}", markup=False)


# ----- doctor ----------------------------------------------------------------------------------


def render_doctor(console: Console, report: Report) -> None:
    for c in report.checks:
        line = f"{MARKS[c.status]} {c.title} [{c.name}]: {c.detail}"
        console.print(line, markup=False, highlight=False)
        if c.fix:
            console.print(f"    → {c.fix}", markup=False, highlight=False)
    spent = ", ".join(
        f"{label} {sum(n.values())} ({', '.join(f'{m} {k}' for m, k in sorted(n.items()))})"
        for label, n in report.requests.items()
    )
    console.print(f"Requests sent: {spent or 'none'}", markup=False, highlight=False)
    bad = report.failing()
    if bad:
        console.print(f"{len(bad)} of {len(report.checks)} checks did not pass.", markup=False)
    else:
        console.print(f"All {len(report.checks)} checks passed.", markup=False)


# ----- webhooks --------------------------------------------------------------------------------


def webhooks_table(hooks: Sequence[Webhook]) -> Table:
    """Every subscription: id, url, enabled, number of events, whether katsyncd can use it."""
    table = Table(title="Katana webhooks")
    for h in ("ID", "URL", "Enabled", "Events", "Matches katsyncd"):
        table.add_column(h, overflow="fold")  # narrow terminal: wrap, never truncate
    for hook in sorted(hooks, key=lambda w: w.get("id") or 0):
        why = mismatch(hook)
        table.add_row(
            str(hook.get("id")),
            str(hook.get("url")),
            "yes" if hook.get("enabled") is True else "no",
            str(len(events_of(hook))),
            "yes" if why is None else f"no ({why})",
        )
    return table
