"""The fault table: one row per figure, with what it should be and whether it is.

``invariant`` rows are what katsyncd promises today (lost = 0, 2xx-then-lost = 0, 5xx for a
fuzzed body = 0 …): the quick test asserts them. The others are reported (a target, or just a
figure) and may show a finding being fixed elsewhere."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.report import _num


@dataclass(frozen=True, slots=True)
class Expect:
    """``value <= limit`` (``at_least``: ``>=``; ``equal``: ``==``)."""

    limit: float
    at_least: bool = False
    equal: bool = False
    unit: str = ""

    def holds(self, value: float | None) -> bool:
        if value is None:
            return False
        if self.equal:
            return value == self.limit
        return value >= self.limit if self.at_least else value <= self.limit

    def text(self) -> str:
        op = "=" if self.equal else ("≥" if self.at_least else "≤")
        return f"{op} {_num(self.limit)}{self.unit}"


@dataclass(slots=True)
class Row:
    scenario: str
    metric: str
    value: float | None
    unit: str = ""
    expect: Expect | None = None
    invariant: bool = False
    note: str = ""

    @property
    def holds(self) -> bool | None:
        return None if self.expect is None else self.expect.holds(self.value)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["expect"] = None if self.expect is None else self.expect.text()
        data["holds"] = self.holds
        return data


def zero(metric: str, scenario: str, value: float | None, *, invariant: bool = True) -> Row:
    return Row(scenario, metric, value, "", Expect(0, equal=True), invariant)


@dataclass
class Results:
    profile: str
    command: str
    started: str
    commit: str
    rows: list[Row] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def note(self, scenario: str, text: str) -> None:
        self.notes.setdefault(scenario, []).append(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "command": self.command,
            "started": self.started,
            "commit": self.commit,
            "seconds": round(self.seconds, 1),
            "ran": self.ran,
            "errors": self.errors,
            "rows": [r.as_dict() for r in self.rows],
            "notes": self.notes,
        }


def _holds_text(row: Row) -> str:
    if row.holds is None:
        return ""
    if row.holds:
        return "yes"
    return "NO (invariant)" if row.invariant else "no"


def _value(row: Row) -> str:
    shown = _num(row.value) + (f" {row.unit}" if row.unit and row.value is not None else "")
    return f"{shown} ({row.note})" if row.note else shown


def table(results: Results) -> Table:
    t = Table(title=f"katsyncd faults — {results.profile} profile, {results.started}")
    for col, justify in (("scenario", "left"), ("figure", "left"), ("value", "right")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    t.add_column("expected", justify="right")
    t.add_column("holds", justify="left")
    last = None
    for r in results.rows:
        if last is not None and r.scenario != last:
            t.add_section()
        last = r.scenario
        expected = "" if r.expect is None else r.expect.text()
        t.add_row(r.scenario, r.metric, _value(r), expected, _holds_text(r))
    return t


def print_results(console: Console, results: Results) -> None:
    console.print(table(results))
    for scenario, notes in results.notes.items():
        for n in notes:
            console.print(f"[dim]{scenario}: {n}[/]")
    for scenario, err in results.errors.items():
        console.print(f"[red]{scenario}: error: {err}[/]")


def markdown(results: Results) -> str:
    lines = [
        f"Profile **{results.profile}**, commit `{results.commit}`, {results.started}, "
        f"{results.seconds:.0f} s: `{results.command}`",
        "",
        "| scenario | figure | value | expected | holds |",
        "|---|---|--:|--:|---|",
    ]
    for r in results.rows:
        expected = "" if r.expect is None else r.expect.text()
        lines.append(f"| {r.scenario} | {r.metric} | {_value(r)} | {expected} | {_holds_text(r)} |")
    for scenario, notes in results.notes.items():
        lines += ["", *(f"- {scenario}: {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def write_json(path: Path, results: Results) -> None:
    path.write_text(json.dumps(results.as_dict(), indent=2))
