"""What every scenario is handed: the profile, the Postgres server, a work folder for configs
and logs, and a console for progress lines (stderr; the table goes to stdout)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from bench import profiling
from bench.pg import PgServer
from bench.profiles import Profile
from bench.report import Results
from bench.systems import System
from katsyncd.sim.quirks import Quirks


@dataclass
class Context:
    profile: Profile
    pg: PgServer
    workdir: Path
    results: Results
    console: Console = field(default_factory=lambda: Console(stderr=True))
    started: float = field(default_factory=time.monotonic)
    profile_dir: Path | None = None
    quirks: Quirks | None = None  # how the simulators play loosely documented behaviours
    run_label: str = ""  # "run 2/3" while a scenario runs several times

    def say(self, scenario: str, message: str) -> None:
        elapsed = time.monotonic() - self.started
        run = f" ({self.run_label})" if self.run_label else ""
        self.console.print(f"[dim]{elapsed:6.1f} s[/] [bold]{scenario}[/]{run}: {message}")

    def note(self, scenario: str, text: str) -> None:
        self.results.note(scenario, f"{self.run_label}: {text}" if self.run_label else text)

    @contextlib.asynccontextmanager
    async def profiled(self, system: System, label: str) -> AsyncIterator[None]:
        """py-spy on katsyncd during a measured phase, when ``--profile DIR`` asked for it."""
        if self.profile_dir is None or system.name != "katsyncd" or system.proc is None:
            yield
            return
        if not profiling.available():
            self.say(label, "--profile needs py-spy (pip install py-spy); not profiling")
            yield
            return
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        async with profiling.pyspy(system.proc.pid, self.profile_dir / f"{label}.txt"):
            yield
