"""Figures, the comparison table (rich), JSON and Markdown output, and the machine description.

Targets are reported, never asserted: a row says whether katsyncd met its target and by how
much it missed, and the benchmark still exits 0.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

Check = Callable[[float], bool]


@dataclass(frozen=True, slots=True)
class Target:
    """A target for katsyncd's figure: ``value <= limit`` (or ``>=`` when ``at_least``)."""

    limit: float
    at_least: bool = False
    unit: str = ""

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return False
        return value >= self.limit if self.at_least else value <= self.limit

    def text(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {_num(self.limit)}{self.unit}"

    def miss(self, value: float | None) -> str:
        """How far off a missed target is ("+3.2 s", "-12 %")."""
        if value is None:
            return "no value"
        if self.met(value):
            return ""
        delta = value - self.limit
        rel = f" ({100 * delta / self.limit:+.0f} %)" if self.limit else ""
        return f"{delta:+.4g}{self.unit}{rel}"


@dataclass(frozen=True, slots=True)
class Spread:
    """One figure over several runs: median, min and max of the runs that had a value."""

    median: float | None
    low: float | None
    high: float | None
    present: int  # runs with a value
    runs: int

    def as_dict(self, prefix: str) -> dict[str, float | None]:
        return {
            f"{prefix}_median": self.median,
            f"{prefix}_min": self.low,
            f"{prefix}_max": self.high,
        }


def spread(values: Sequence[float | None]) -> Spread:
    present = [v for v in values if v is not None]
    if not present:
        return Spread(None, None, None, 0, len(values))
    return Spread(statistics.median(present), min(present), max(present), len(present), len(values))


@dataclass(slots=True)
class Row:
    scenario: str
    metric: str
    unit: str
    katsyncd: float | None  # with several runs: their median
    baseline: float | None
    target: Target | None = None
    note: str = ""
    baseline_note: str = ""  # shown instead of / next to the baseline value
    katsyncd_runs: list[float | None] = field(default_factory=list)  # each run's figure
    baseline_runs: list[float | None] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.katsyncd is None or self.baseline is None or self.baseline == 0:
            return None
        return self.katsyncd / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.katsyncd)

    def spreads(self) -> tuple[Spread, Spread]:
        """(katsyncd, baseline) over the runs (one run: the figure itself)."""
        return (
            spread(self.katsyncd_runs or [self.katsyncd]),
            spread(self.baseline_runs or [self.baseline]),
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        k, b = self.spreads()
        data["runs"] = k.runs
        data["katsyncd_runs"] = self.katsyncd_runs or [self.katsyncd]
        data["baseline_runs"] = self.baseline_runs or [self.baseline]
        data |= k.as_dict("katsyncd") | b.as_dict("baseline")
        data["target"] = None if self.target is None else self.target.text()
        data["met"] = self.met
        data["miss"] = None if self.target is None else self.target.miss(self.katsyncd) or None
        data["ratio"] = self.ratio
        return data


def aggregate(runs: Sequence[Sequence[Row]]) -> list[Row]:
    """One row per (scenario, metric) over several runs of the same scenarios: the median of
    each side, every run's figure kept (a run without the row counts as no value); the
    target is judged on the median. The notes are the distinct notes of the runs."""
    keyed = [{(r.scenario, r.metric): r for r in run} for run in runs]
    keys = list(dict.fromkeys(key for run in keyed for key in run))
    return [_aggregate_row([run.get(key) for run in keyed]) for key in keys]


def _aggregate_row(rows: Sequence[Row | None]) -> Row:
    first = next(r for r in rows if r is not None)
    k = [None if r is None else r.katsyncd for r in rows]
    b = [None if r is None else r.baseline for r in rows]
    return Row(
        first.scenario,
        first.metric,
        first.unit,
        spread(k).median,
        spread(b).median,
        first.target,
        note=_distinct(r.note for r in rows if r is not None),
        baseline_note=_distinct(r.baseline_note for r in rows if r is not None),
        katsyncd_runs=k,
        baseline_runs=b,
    )


def _distinct(notes: Iterable[str]) -> str:
    return "; ".join(dict.fromkeys(n for n in notes if n))


@dataclass
class Results:
    profile: str
    command: str
    started: str
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    runs: int = 1  # each scenario ran this many times (rows: median, min, max)

    def add(self, rows: Sequence[Row]) -> None:
        self.rows.extend(rows)

    def note(self, scenario: str, text: str) -> None:
        self.notes.setdefault(scenario, []).append(text)

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "command": self.command,
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "runs": self.runs,
            "machine": self.machine,
            "rows": [r.as_dict() for r in self.rows],
            "notes": self.notes,
        }


# ----- formatting ---------------------------------------------------------------------------


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_value(value: float | None, unit: str, note: str = "", runs: Spread | None = None) -> str:
    """A figure with its unit; over several runs the median, then "(min …, max …)" when they
    differ and how many runs had none."""
    shown = _num(value) + (f" {unit}" if unit and value is not None else "")
    if runs is not None and runs.runs > 1 and value is not None:
        if _num(runs.low) != _num(runs.high):
            shown += f" (min {_num(runs.low)}, max {_num(runs.high)})"
        if runs.present < runs.runs:
            shown += f" [{runs.runs - runs.present} of {runs.runs} runs: none]"
    if note:
        return f"{shown} ({note})" if value is not None else note
    return shown


def fmt_cells(r: Row) -> tuple[str, str]:
    """The katsyncd and baseline cells of a row."""
    k, b = r.spreads()
    return fmt_value(r.katsyncd, r.unit, r.note, k), fmt_value(
        r.baseline, r.unit, r.baseline_note, b
    )


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    if ratio == 0:
        return "0"
    if ratio < 0.01:
        return f"{ratio:.4f}"
    return f"{ratio:.2f}"


def fmt_met(row: Row) -> str:
    if row.target is None:
        return ""
    if row.met:
        return "yes"
    return f"NO {row.target.miss(row.katsyncd)}"


def title(results: Results) -> str:
    runs = f", median (min, max) of {results.runs} runs" if results.runs > 1 else ""
    return f"katsyncd vs baseline — {results.profile} profile, {results.started}{runs}"


def table(results: Results) -> Table:
    t = Table(title=title(results), show_lines=False)
    for col, justify in (
        ("scenario", "left"),
        ("metric", "left"),
        ("katsyncd", "right"),
        ("baseline", "right"),
        ("katsyncd/baseline", "right"),
        ("target", "right"),
        ("met", "left"),
    ):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    last = None
    for r in results.rows:
        if last is not None and r.scenario != last:
            t.add_section()
        last = r.scenario
        t.add_row(
            r.scenario,
            r.metric,
            *fmt_cells(r),
            fmt_ratio(r.ratio),
            "" if r.target is None else r.target.text(),
            fmt_met(r),
        )
    return t


def print_results(console: Console, results: Results) -> None:
    console.print(table(results))
    for scenario, notes in results.notes.items():
        for n in notes:
            console.print(f"[dim]{scenario}: {n}[/]")


def markdown(results: Results) -> str:
    lines = [
        "| scenario | metric | katsyncd | baseline | katsyncd/baseline | target | met |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for r in results.rows:
        cells = [
            r.scenario,
            r.metric,
            *fmt_cells(r),
            fmt_ratio(r.ratio),
            "" if r.target is None else r.target.text(),
            fmt_met(r),
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    for scenario, notes in results.notes.items():
        lines.extend(f"\n- *{scenario}*: {n}" for n in notes)
    return "\n".join(lines) + "\n"


def write_json(path: Path, results: Results) -> None:
    path.write_text(json.dumps(results.as_dict(), indent=2, default=str) + "\n")


# ----- machine --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """nproc, CPU model, RAM, OS and Python: what the figures depend on."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": _ram_gib(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def command_line(argv: Sequence[str]) -> str:
    exe = Path(sys.executable)
    shown = ".venv/bin/python" if exe.parent.parent.name == ".venv" else exe.name
    return " ".join([shown, "-m", "bench", *(shlex.quote(a) for a in argv)])


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
