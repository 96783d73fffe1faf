"""Retry-delay arithmetic. Pure functions: no I/O, no clock, randomness injected.

``backoff_delay`` is AWS's "full jitter": a uniform draw from ``[0, min(cap, base * 2**attempt)]``.
It spreads retries of many clients evenly and is what the Katana and BigCommerce clients use
after 5xx answers, timeouts and garbage bodies. ``escalating_delay`` never goes below its
exponential floor; BigCommerce asks for progressively longer waits after repeated 429s.
"""

from __future__ import annotations

import random

# 2**62 * any sane base already exceeds every cap; clamping the exponent avoids float overflow.
_MAX_EXPONENT = 62


def exponential(attempt: int, *, base: float, cap: float) -> float:
    """``min(cap, base * 2**attempt)`` for ``attempt >= 0`` (negative attempts count as 0)."""
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    return min(cap, base * (2.0**exponent))


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Full-jitter delay before retry number ``attempt`` (0 for the first retry)."""
    draw = (rng or random).uniform(0.0, 1.0)
    return exponential(attempt, base=base, cap=cap) * draw


def escalating_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> float:
    """``base * 2**attempt`` plus up to ``jitter`` of itself, capped; never below ``base``."""
    floor = exponential(attempt, base=base, cap=cap)
    return min(cap, floor * (1.0 + jitter * (rng or random).uniform(0.0, 1.0)))


def doubled(delay: float, consecutive: int, *, cap: float) -> float:
    """A server-given ``delay`` doubled for each repeat beyond the first, capped."""
    return exponential(consecutive - 1, base=delay, cap=cap)
