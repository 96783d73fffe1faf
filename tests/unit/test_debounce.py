"""Debouncer timing with an injected clock."""

from __future__ import annotations

import asyncio

from katsyncd.debounce import Debouncer


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_burst_for_one_key_is_due_once_after_quiet() -> None:
    c = Clock()
    d = Debouncer(2.0, 10.0, clock=c)
    for _ in range(50):
        d.mark([7])
        c.t += 0.1
    assert d.due() == []
    c.t += 2.0
    assert d.due() == [7]
    assert len(d) == 1  # fifty marks, one pending read


def test_busy_key_is_due_by_max_delay() -> None:
    c = Clock()
    d = Debouncer(2.0, 10.0, clock=c)
    for _ in range(100):
        d.mark([1])
        c.t += 1.0  # never quiet for 2 s
        if d.due():
            break
    assert d.due() == [1]
    assert c.t - 100.0 <= 10.0 + 1e-9


def test_take_removes_and_reports_first_mark() -> None:
    c = Clock()
    d = Debouncer(1.0, 5.0, clock=c)
    d.mark([1, 2])
    c.t += 1
    d.mark([2])
    assert d.take([1, 2, 3]) == {1: 100.0, 2: 100.0}
    assert len(d) == 0


def test_backdated_marks_are_due_at_once() -> None:
    c = Clock()
    d = Debouncer(2.0, 10.0, clock=c)
    d.mark([5], first_seen=c.t - 60)
    assert d.due_at(5) <= c.t  # max_delay already passed: due now, not 2 s from now
    assert d.due() == [5]


async def test_wait_due_wakes_on_mark_and_on_stop() -> None:
    d = Debouncer(0.01, 0.05)
    stop = asyncio.Event()
    waiter = asyncio.create_task(d.wait_due(stop))
    for _ in range(5):  # let the waiter run until it blocks (no timer: nothing is marked)
        await asyncio.sleep(0)
    assert not waiter.done()
    d.mark([1])
    assert await asyncio.wait_for(waiter, 1.0) is True
    d.take([1])
    waiter2 = asyncio.create_task(d.wait_due(stop))
    stop.set()
    assert await asyncio.wait_for(waiter2, 1.0) is False


def test_settled_marks_are_due_at_once_but_bursts_still_wait() -> None:
    c = Clock()
    d = Debouncer(2.0, 10.0, clock=c)
    d.mark([1], settled=True)
    d.mark([2])
    assert d.due() == [1]
    d.mark([1])  # a new event after the settled mark restarts the quiet time
    assert d.due() == []
