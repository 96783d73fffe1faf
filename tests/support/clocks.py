"""Time and chance under the test's control: clocks a test moves by hand, fixed random draws."""

from __future__ import annotations

import asyncio
import random

WALL_EPOCH = 1_700_000_000.0  # the wall clock's reading when a test clock reads 0


class JumpClock:
    """Monotonic and wall clocks whose ``sleep`` returns at once after moving time forward."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL_EPOCH + self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class FixedDraw(random.Random):
    """A Random whose uniform(a, b) always lands at the same fraction of the range."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction
