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


# ----- leading edge ------------------------------------------------------------------------------
def test_leading_edge_reads_a_lone_first_change_within_tens_of_ms() -> None:
    c = Clock()
    d = Debouncer(2.0, 10.0, clock=c)
    d.set_leading_gate(lambda arrivals: True, leading=0.03)
    d.mark([7])
    assert d.due() == []
    assert d.due_at(7) == 100.03
    c.t += 0.01
    d.mark([7])  # what arrives within the leading window is read with it
    c.t += 0.02
    assert d.due() == [7]


def test_changes_after_a_leading_read_coalesce_on_the_trailing_edge() -> None:
    c = Clock()
    d = Debouncer(2.0, 10.0, clock=c)
    d.set_leading_gate(lambda arrivals: True, leading=0.03)
    d.mark([7])
    c.t += 0.03
    d.take(d.due())
    c.t += 0.5
    d.mark([7])  # within the quiet time of the read: waits out the debounce
    assert d.due_at(7) == c.t + 2.0
    d.take([7])
    c.t += 2.5
    d.mark([7])  # quiet for longer than the debounce since: leading edge again
    assert d.due_at(7) == c.t + 0.03


def test_leading_gate_sees_arrivals_within_the_quiet_time_and_can_refuse() -> None:
    c = Clock()
    d = Debouncer(2.0, 10.0, clock=c)
    seen: list[int] = []

    def gate(arrivals: int) -> bool:
        seen.append(arrivals)
        return arrivals <= 2

    d.set_leading_gate(gate, leading=0.03)
    d.mark([1])
    c.t += 0.5
    d.mark([2, 1])  # 1 is pending: it arrives again (counted) but is not gated again
    c.t += 0.5
    d.mark([3])
    c.t += 2.0
    d.mark([4])  # the earlier arrivals are older than the quiet time
    assert seen == [1, 2, 4, 1]
    assert d.due_at(1) == 100.03 and d.due_at(2) == 100.53
    assert d.due_at(3) == 101.0 + 2.0  # refused: a burst is batched by the debounce
    assert d.due_at(4) == c.t + 0.03


def test_without_a_gate_or_for_settled_and_backdated_marks_no_leading_edge() -> None:
    c = Clock()
    d = Debouncer(2.0, 10.0, clock=c)
    d.mark([1])
    assert d.due_at(1) == 102.0
    d.set_leading_gate(lambda arrivals: True)
    d.mark([2], first_seen=c.t - 1)  # a failed batch put back: its old timing
    assert d.due_at(2) == 102.0
    d.mark([3], settled=True)  # due at once anyway
    assert d.due_at(3) == 100.0
