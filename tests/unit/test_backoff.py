"""Retry-delay arithmetic: pure functions, no loop."""

from __future__ import annotations

import random

import pytest

from katsyncd.backoff import backoff_delay, doubled, escalating_delay, exponential
from tests.support.clocks import FixedDraw


def test_exponential_doubles_from_base_and_caps() -> None:
    assert [exponential(n, base=0.5, cap=5.0) for n in range(6)] == [0.5, 1, 2, 4, 5, 5]


def test_exponential_survives_huge_and_negative_attempts() -> None:
    assert exponential(10_000, base=1.0, cap=30.0) == 30.0
    assert exponential(-3, base=1.0, cap=30.0) == 1.0


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 50])
def test_full_jitter_stays_within_zero_and_the_exponential(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = exponential(attempt, base=0.25, cap=8.0)
    draws = [backoff_delay(attempt, base=0.25, cap=8.0, rng=rng) for _ in range(200)]
    assert all(0.0 <= d <= ceiling for d in draws)
    assert max(draws) > ceiling * 0.8  # actually spreads over the range
    assert min(draws) < ceiling * 0.2


def test_full_jitter_ends_of_the_range() -> None:
    assert backoff_delay(3, base=1.0, cap=60.0, rng=FixedDraw(0.0)) == 0.0
    assert backoff_delay(3, base=1.0, cap=60.0, rng=FixedDraw(1.0)) == 8.0
    assert backoff_delay(30, base=1.0, cap=60.0, rng=FixedDraw(1.0)) == 60.0


def test_full_jitter_is_reproducible_with_a_seeded_rng() -> None:
    first = [backoff_delay(n, base=1, cap=9, rng=random.Random(7)) for n in range(5)]
    again = [backoff_delay(n, base=1, cap=9, rng=random.Random(7)) for n in range(5)]
    assert first == again


def test_escalating_delay_never_below_its_floor() -> None:
    assert escalating_delay(0, base=1.0, cap=60.0, rng=FixedDraw(0.0)) == 1.0
    assert escalating_delay(0, base=1.0, cap=60.0, rng=FixedDraw(1.0)) == 1.5
    assert escalating_delay(2, base=1.0, cap=60.0, rng=FixedDraw(0.0)) == 4.0
    assert escalating_delay(9, base=1.0, cap=60.0, rng=FixedDraw(1.0)) == 60.0


def test_doubled_doubles_per_repeat_and_caps() -> None:
    assert [doubled(1.5, n, cap=10.0) for n in (1, 2, 3, 4)] == [1.5, 3.0, 6.0, 10.0]
