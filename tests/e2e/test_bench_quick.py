"""The benchmark never rots: ``python -m bench --quick`` runs every scenario end to end (tiny
sizes, raised quotas) and prints the comparison table with a row for each of them.

Only that it runs is asserted, never a figure: targets are reported by the benchmark itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scenarios import SCENARIOS

QUICK_TIMEOUT_SECONDS = 240  # the quick run takes well under a minute; CI machines vary


@pytest.mark.e2e
@pytest.mark.timeout(QUICK_TIMEOUT_SECONDS + 30)
def test_bench_quick_runs_every_scenario(repo_root: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "quick.json"
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out_json)],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_SECONDS,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "katsyncd vs baseline" in proc.stdout
    for name in SCENARIOS:
        pattern = re.compile(rf"^\W*{name}\s", re.MULTILINE)  # first column, any box style
        assert pattern.search(proc.stdout), f"no {name} row in the table:\n{proc.stdout}"
    figures = json.loads(out_json.read_text())
    scenarios = {row["scenario"] for row in figures["rows"]}
    assert scenarios == set(SCENARIOS)
    assert not [row for row in figures["rows"] if row["metric"] == "error"]
