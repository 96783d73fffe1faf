"""The layer contracts of pyproject.toml ([tool.importlinter]) hold: ``lint-imports`` passes.

Pure and quick (a static import graph, no database, no socket). The contracts: rules and
models import no I/O library and nothing else of katsyncd; nor do the status pages' models
(explanation, overview); the API clients never import the
engine side; no component imports the daemon; nothing imports the CLI but ``__main__``; the
simulators stand alone; no import cycle between sibling modules, lazy imports included.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path


def test_every_import_contract_is_kept(repo_root: Path) -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")  # the venv's, as installed
    assert lint_imports.exists(), f"{lint_imports} missing: install the [test] extra"
    contracts = tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=repo_root,  # lint-imports reads ./pyproject.toml
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    # Every contract was checked (none silently skipped): "Contracts: 7 kept, 0 broken."
    assert f"Contracts: {len(contracts)} kept, 0 broken." in report, report
