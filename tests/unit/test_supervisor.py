"""The supervisor's restart backoff (issue 11, finding 8): it doubles on consecutive failures
and starts afresh after a healthy run, on an injected clock."""

from __future__ import annotations

from katsyncd.restarts import (
    LOOP_ERROR_BACKOFF_CAP_SECONDS,
    LOOP_HEALTHY_SECONDS,
    RestartBackoff,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_failures_double_up_to_the_cap() -> None:
    clock = Clock()
    b = RestartBackoff(clock=clock)
    delays = []
    for _ in range(6):
        b.started()
        clock.now += 1.0  # fails a second after each restart
        delays.append(b.failed())
    assert delays == [4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert max(delays) == LOOP_ERROR_BACKOFF_CAP_SECONDS


def test_a_healthy_run_resets_the_backoff() -> None:
    clock = Clock()
    b = RestartBackoff(clock=clock)
    for _ in range(5):  # four transient errors early in the process's life, and one more
        b.started()
        clock.now += 1.0
        b.failed()
    b.started()
    clock.now += LOOP_HEALTHY_SECONDS  # then it ran fine for a while
    assert b.failed() == 4.0  # the first delay again, not 30 s
    assert b.failures == 1


def test_a_run_shorter_than_healthy_keeps_counting() -> None:
    clock = Clock()
    b = RestartBackoff(clock=clock)
    b.started()
    clock.now += 1.0
    assert b.failed() == 4.0
    b.started()
    clock.now += LOOP_HEALTHY_SECONDS - 1.0
    assert b.failed() == 8.0
