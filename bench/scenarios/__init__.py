"""The scenarios, in the order they run. Each is ``async def run(ctx) -> list[Row]``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.context import Context
from bench.report import Row
from bench.scenarios import burst, cold, footprint, ingest, quiet

Scenario = Callable[[Context], Awaitable[list[Row]]]

SCENARIOS: dict[str, Scenario] = {
    **{shape.name: burst.scenario(shape) for shape in burst.SHAPES},
    "quiet": quiet.run,
    "ingest": ingest.run,
    "cold": cold.run,
    "footprint": footprint.run,
}
