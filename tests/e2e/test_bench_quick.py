"""The benchmark never rots: ``python -m bench --quick`` runs every scenario end to end (tiny
sizes, raised quotas) and prints the comparison table with a row for each of them; with
``--runs 2`` each row is the median of the runs, with their min and max.

Only that it runs and that the aggregation is consistent are asserted, never a figure:
targets are reported by the benchmark itself.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.scenarios import SCENARIOS

QUICK_TIMEOUT_SECONDS = 240  # the quick run takes well under a minute; CI machines vary


def run_bench(repo_root: Path, out_json: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """(the printed table, the JSON figures) of ``python -m bench --quick ARGS``."""
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *args, "--json", str(out_json)],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_SECONDS,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "katsyncd vs baseline" in proc.stdout
    figures: dict[str, Any] = json.loads(out_json.read_text())
    assert not [row for row in figures["rows"] if row["metric"] == "error"]
    return proc.stdout, figures


def assert_aggregated(row: dict[str, Any], runs: int) -> None:
    """Each side's median, min and max agree with the per-run figures kept in the row."""
    assert row["runs"] == runs
    for side in ("katsyncd", "baseline"):
        values = row[f"{side}_runs"]
        assert len(values) == runs, row
        present = [v for v in values if v is not None]
        if not present:
            assert row[f"{side}_median"] is None and row[side] is None, row
            continue
        low, mid, high = row[f"{side}_min"], row[f"{side}_median"], row[f"{side}_max"]
        assert (low, mid, high) == (min(present), statistics.median(present), max(present))
        assert low <= mid <= high
        assert row[side] == mid, row  # the figure shown (and judged) is the median


@pytest.mark.e2e
@pytest.mark.timeout(QUICK_TIMEOUT_SECONDS + 30)
def test_bench_quick_runs_every_scenario(repo_root: Path, tmp_path: Path) -> None:
    table, figures = run_bench(repo_root, tmp_path / "quick.json")
    for name in SCENARIOS:
        pattern = re.compile(rf"^\W*{name}\s", re.MULTILINE)  # first column, any box style
        assert pattern.search(table), f"no {name} row in the table:\n{table}"
    scenarios = {row["scenario"] for row in figures["rows"]}
    assert scenarios == set(SCENARIOS)
    assert figures["runs"] == 1  # the quick profile's default
    for row in figures["rows"]:
        assert_aggregated(row, 1)


@pytest.mark.e2e
@pytest.mark.timeout(QUICK_TIMEOUT_SECONDS + 30)
def test_bench_runs_report_median_min_and_max(repo_root: Path, tmp_path: Path) -> None:
    args = ("--runs", "2", "--scenario", "cold", "--scenario", "footprint")
    table, figures = run_bench(repo_root, tmp_path / "runs.json", *args)
    assert "median (min, max) of 2 runs" in table
    assert figures["runs"] == 2
    assert {row["scenario"] for row in figures["rows"]} == {"cold", "footprint"}
    for row in figures["rows"]:
        assert_aggregated(row, 2)
    if any(r["katsyncd_min"] != r["katsyncd_max"] for r in figures["rows"]):
        assert "(min " in table  # a spread between the runs is shown
