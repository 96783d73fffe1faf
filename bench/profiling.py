"""Optional sampling profiles of the katsyncd process during a measured phase (``--profile
DIR``), with py-spy (``pip install py-spy``; it attaches to the running process by pid).

Each phase leaves ``DIR/<label>.txt`` (collapsed stacks, flamegraph.pl/speedscope input)
and ``DIR/<label>-top.txt``: the functions where most samples were on CPU (self) and the ones
most often on the stack (inclusive), which is what docs/PERFORMANCE.md quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

SAMPLE_RATE_HZ = 100
# Frames every sample passes through (interpreter start-up, the event loop's own run loop):
# left out of the inclusive list so it shows where the time actually goes.
WRAPPER_FRAMES = (
    "<frozen runpy>",
    "__main__.py",
    "katsyncd/cli/__init__.py",
    "katsyncd/cli/run.py",
    "asyncio/runners.py",
    "run_until_complete",
    "run_forever",
    "_run_once",
    "Handle._run",
    "Daemon._supervised",
)


def executable() -> str | None:
    """py-spy from PATH, else next to this interpreter (a venv's bin/)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def available() -> bool:
    return executable() is not None


@contextlib.asynccontextmanager
async def pyspy(pid: int, out: Path) -> AsyncIterator[None]:
    """Record ``pid`` while the block runs; write the top frames next to the raw stacks."""
    exe = executable()
    assert exe is not None, "check profiling.available() first"
    proc = await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
        "--rate", str(SAMPLE_RATE_HZ), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        await proc.wait()
        await asyncio.to_thread(write_top, out)


def write_top(raw_path: Path) -> None:
    """``<raw>-top.txt`` next to the collapsed stacks (nothing if py-spy wrote none)."""
    if raw_path.exists():
        top = raw_path.with_name(raw_path.stem + "-top.txt")
        top.write_text(render_top(*top_frames(raw_path.read_text())))


def top_frames(raw: str, n: int = 15) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, self counts, inclusive counts) from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            if not any(w in frame for w in WRAPPER_FRAMES):
                inclusive[frame] += int(count)
    return total, own.most_common(n), inclusive.most_common(n)


def render_top(total: int, own: list[tuple[str, int]], inclusive: list[tuple[str, int]]) -> str:
    lines = [f"{total} samples at {SAMPLE_RATE_HZ} Hz (idle excluded)", "", "self (on CPU):"]
    lines += [f"  {100 * c / max(1, total):5.1f} %  {f}" for f, c in own]
    lines += ["", "inclusive (on the stack; event-loop plumbing left out):"]
    lines += [f"  {100 * c / max(1, total):5.1f} %  {f}" for f, c in inclusive]
    return "\n".join(lines) + "\n"
