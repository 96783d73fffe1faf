"""``katsyncd explain``: the explanation model in a terminal (rich). Every value is passed as
``Text`` (never as markup), so a SKU such as ``[red]x`` prints as it is."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from katsyncd.ui.explain import Explanation, PushRow, StoreExplanation, qty


def render(exp: Explanation, console: Console) -> None:
    console.print(Text.assemble(("SKU ", "bold"), (exp.sku, "bold cyan")))
    for note in exp.notes:
        console.print(Text(f"! {note}", style="yellow"))
    console.print(_variants(exp))
    if exp.stock_read_at is not None:
        console.print(Text(f"Stock as read from Katana at {_when(exp.stock_read_at)} UTC."))
    for store in exp.stores:
        console.print(_store(store))
    console.print(_pushes(exp.pushes))


def _table(title: str, *columns: str) -> Table:
    table = Table(title=Text(title, style="bold"), title_justify="left", expand=False)
    for col in columns:
        table.add_column(col)
    return table


def _row(table: Table, *cells: object) -> None:
    table.add_row(*(Text("—" if c is None else str(c)) for c in cells))


def _when(at: datetime | None) -> str:
    return "—" if at is None else f"{at:%Y-%m-%d %H:%M:%S}"


def _variants(exp: Explanation) -> Table:
    t = _table("Katana variants with this SKU (S8)", "variant", "type", "created", "", "why")
    for line in exp.variants:
        v = line.variant
        mark = "winner" if line.winner else ""
        _row(t, v.id, v.type, _when(v.created_at), mark, line.why)
    return t


def _store(s: StoreExplanation) -> RenderableType:
    head = Text.assemble(("Store ", "bold"), (s.name, "bold cyan"), f"  ({s.mode}, {s.quantity})")
    parts: list[RenderableType] = [head, _locations(s), _orders(s)]
    parts.append(Text("\n".join(s.steps) or "no level: no live winner", style="green"))
    if s.level is not None:
        parts.append(Text.assemble(f"Level for {s.name}: ", (str(s.level), "bold")))
    parts.append(_items(s))
    return Group(*parts)


def _locations(s: StoreExplanation) -> Table:
    t = _table("In stock per Katana location (S12)", "location", "in stock", "counts")
    for ln in s.locations:
        _row(t, ln.location, qty(ln.in_stock), "yes" if ln.counts else "no")
    return t


def _orders(s: StoreExplanation) -> Table:
    t = _table("Sales-order rows (S4, S5)", "order", "status", "location", "qty", "counts", "why")
    for o in s.orders:
        _row(t, o.order, o.status, o.location, qty(o.quantity), "yes" if o.counts else "no", o.why)
    return t


def _items(s: StoreExplanation) -> Table:
    t = _table("BigCommerce items (S7)", "item", "desired", "BigCommerce has", "source", "state")
    for it in s.items:
        reason = it.item.failed_reason if it.state == "failed" else None
        state = it.state if reason is None else f"{it.state}: {reason}"
        _row(t, it.item.item_key, it.item.desired, it.bigcommerce, it.source, state)
    return t


def _pushes(pushes: Iterable[PushRow]) -> Table:
    t = _table("Last pushes", "at", "store", "item", "before → after", "cause", "outcome")
    for p in pushes:
        change = f"{'—' if p.old_quantity is None else p.old_quantity} → {p.new_quantity}"
        _row(t, _when(p.at), p.store, p.item_key, change, p.reason, p.outcome)
    return t
