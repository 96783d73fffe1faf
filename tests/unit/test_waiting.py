"""katsyncd.waiting: stop-aware waits return on the first of their events or their timeout,
and leave no task behind (also when cancelled)."""

from __future__ import annotations

import asyncio

import pytest

from katsyncd.waiting import wait_either, wait_stop

BOUND = 5.0  # a wait that should end at once must end well within this


def leftover_tasks(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t not in before and not t.done()}


async def test_wait_stop_times_out_without_a_stop() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    started = loop.time()
    assert await wait_stop(stop, 0.02) is False
    assert loop.time() - started >= 0.015


async def test_wait_stop_returns_as_soon_as_stop_is_set() -> None:
    stop = asyncio.Event()
    waiting = asyncio.create_task(wait_stop(stop, 3600.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    stop.set()
    assert await asyncio.wait_for(waiting, BOUND) is True


@pytest.mark.parametrize("seconds", [0.0, -1.0, 3600.0])
async def test_wait_stop_with_stop_already_set_is_true_at_once(seconds: float) -> None:
    stop = asyncio.Event()
    stop.set()
    assert await asyncio.wait_for(wait_stop(stop, seconds), BOUND) is True


async def test_wait_stop_leaves_no_task_when_cancelled() -> None:
    before = set(asyncio.all_tasks())
    waiting = asyncio.create_task(wait_stop(asyncio.Event(), 3600.0))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    assert leftover_tasks(before) == set()


@pytest.mark.parametrize("which", ["a", "b"])
async def test_wait_either_returns_on_either_event(which: str) -> None:
    a, b = asyncio.Event(), asyncio.Event()
    before = set(asyncio.all_tasks())
    waiting = asyncio.create_task(wait_either(a, b, 3600.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    (a if which == "a" else b).set()
    await asyncio.wait_for(waiting, BOUND)
    await asyncio.sleep(0)
    assert leftover_tasks(before) == set()


async def test_wait_either_times_out_and_cleans_up() -> None:
    loop = asyncio.get_running_loop()
    before = set(asyncio.all_tasks())
    started = loop.time()
    await wait_either(asyncio.Event(), asyncio.Event(), 0.02)
    assert loop.time() - started >= 0.015
    await asyncio.sleep(0)
    assert leftover_tasks(before) == set()


async def test_wait_either_without_a_bound_waits_for_an_event() -> None:
    a, b = asyncio.Event(), asyncio.Event()
    waiting = asyncio.create_task(wait_either(a, b, None))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiting.done()
    b.set()
    await asyncio.wait_for(waiting, BOUND)


async def test_wait_either_leaves_no_task_when_cancelled() -> None:
    before = set(asyncio.all_tasks())
    waiting = asyncio.create_task(wait_either(asyncio.Event(), asyncio.Event(), None))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    assert leftover_tasks(before) == set()
