"""The leader lease's state machine on an injected clock: when a leader renews, when it must
step down, what a writer may start, and the marks notice a follower sends the leader.

``Leadership`` runs against an in-memory lease table with the SQL's semantics (acquire only
when expired, renew only in the holder's epoch, on the table's clock); the SQL itself is tested
against Postgres in tests/integration/test_lease_pg.py."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest

from katsyncd.leadership import (
    MAX_PAYLOAD_BYTES,
    MIN_WRITE_SECONDS,
    Fence,
    Leadership,
    LeaseLost,
    LeaseState,
    marks_payload,
    parse_marks,
)
from katsyncd.metrics import Metrics
from katsyncd.persistence import lease as stored_lease
from katsyncd.persistence.lease import LeaseRow
from tests.support.clocks import JumpClock

pytestmark = pytest.mark.unit


# ----- LeaseState and Fence ---------------------------------------------------------------------


def test_deadline_is_the_send_time_plus_the_lease_minus_the_margin() -> None:
    clock = JumpClock()
    state = LeaseState("a", 10.0, clock)
    clock.now = 5.0
    term = state.gained(3, sent_at=4.0)
    assert (term.epoch, term.deadline) == (3, 4.0 + 10.0 - 2.0)
    assert state.renew_every == pytest.approx(10 / 3)
    clock.now = 11.9
    assert not state.expired()
    clock.now = 12.0
    assert state.expired()


def test_a_renewal_moves_the_deadline_from_when_it_was_sent_never_back() -> None:
    clock = JumpClock()
    state = LeaseState("a", 9.0, clock)
    term = state.gained(1, sent_at=0.0)
    state.renewed(sent_at=3.0)
    assert term.deadline == pytest.approx(3.0 + 9.0 - 1.8)
    state.renewed(sent_at=1.0)  # a late answer to an older renewal
    assert term.deadline == pytest.approx(3.0 + 9.0 - 1.8)


def test_next_wake_is_the_renewal_interval_but_never_past_the_deadline() -> None:
    clock = JumpClock()
    state = LeaseState("a", 9.0, clock)
    state.gained(1, sent_at=0.0)  # deadline 7.2
    assert state.next_wake(last_attempt=0.0) == pytest.approx(3.0)
    clock.now = 6.0
    assert state.next_wake(last_attempt=6.0) == pytest.approx(1.2)


async def test_the_fence_refuses_a_write_without_the_lease_or_too_close_to_its_end() -> None:
    clock = JumpClock()
    state = LeaseState("a", 10.0, clock)
    fence = Fence(state)
    with pytest.raises(LeaseLost):
        fence.token()
    state.gained(7, sent_at=0.0)
    assert fence.token() == ("a", 7)
    clock.now = 8.0 - MIN_WRITE_SECONDS + 0.01
    with pytest.raises(LeaseLost, match="no write starts"):
        async with fence.guard():
            pass
    clock.now = 8.0
    with pytest.raises(LeaseLost):
        fence.token()


async def test_the_fence_cuts_a_write_at_the_deadline() -> None:
    state = LeaseState("a", 10.0)  # the real monotonic clock: asyncio.timeout runs on it
    term = state.gained(2, sent_at=asyncio.get_running_loop().time())
    term.deadline = asyncio.get_running_loop().time() + MIN_WRITE_SECONDS + 0.4
    with pytest.raises(LeaseLost, match="cut a write short"):
        async with state_fence(state).guard():
            await asyncio.Event().wait()  # a write that never answers


async def test_a_renewal_during_a_write_moves_its_cut_off() -> None:
    loop = asyncio.get_running_loop()
    state = LeaseState("a", 10.0)
    term = state.gained(2, sent_at=loop.time())
    term.deadline = loop.time() + MIN_WRITE_SECONDS + 0.4
    fence = Fence(state)
    async with fence.guard() as token:
        state.renewed(sent_at=loop.time())  # deadline now 8 s away
        fence.extend()
        await asyncio.sleep(MIN_WRITE_SECONDS + 0.5)  # a slow write, past the old deadline
    assert token == ("a", 2)


def state_fence(state: LeaseState) -> Fence:
    return Fence(state)


# ----- marks notices ----------------------------------------------------------------------------


def test_a_marks_notice_round_trips() -> None:
    notice = parse_marks(marks_payload("r1", [1, 2], [9], ["variants"]))
    assert notice is not None
    assert (notice.replica, notice.variants, notice.orders, notice.polls) == (
        "r1",
        [1, 2],
        [9],
        ["variants"],
    )
    assert not notice.reload_all


def test_too_many_marks_for_one_notice_ask_for_a_reload() -> None:
    payload = marks_payload("r1", list(range(10**9, 10**9 + 2000)), [], [])
    assert len(payload) <= MAX_PAYLOAD_BYTES
    notice = parse_marks(payload)
    assert notice is not None and notice.reload_all and notice.variants == []


@pytest.mark.parametrize(
    "payload", ["", "not json", "[]", json.dumps({"v": [1]}), '{"r":1,"v":"x"}']
)
def test_an_unreadable_notice_is_ignored(payload: str) -> None:
    assert parse_marks(payload) is None


# ----- Leadership against an in-memory lease table ----------------------------------------------


@dataclass
class Row:
    holder: str
    epoch: int
    acquired: float
    expires: float


class FakeLease:
    """``persistence.lease`` with the SQL's rules, on the test clock (``down``: unreachable)."""

    def __init__(self, clock: JumpClock) -> None:
        self.clock = clock
        self.row: Row | None = None
        self.down = False

    def _up(self) -> None:
        if self.down:
            raise OSError("connection refused")

    async def acquire(self, _pool: Any, holder: str, ttl: float) -> int | None:
        self._up()
        now = self.clock()
        if self.row is not None and self.row.expires > now:
            return None
        epoch = 1 if self.row is None else self.row.epoch + 1
        self.row = Row(holder, epoch, now, now + ttl)
        return epoch

    async def renew(self, _pool: Any, holder: str, epoch: int, ttl: float) -> bool:
        self._up()
        r, now = self.row, self.clock()
        if r is None or (r.holder, r.epoch) != (holder, epoch) or r.expires <= now:
            return False
        r.expires = now + ttl
        return True

    async def read(self, _pool: Any) -> LeaseRow | None:
        self._up()
        r, now = self.row, self.clock()
        return None if r is None else LeaseRow(r.holder, r.epoch, now - r.acquired, r.expires - now)


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> tuple[JumpClock, FakeLease]:
    clock = JumpClock()
    fake = FakeLease(clock)
    for name in ("acquire", "renew", "read"):
        monkeypatch.setattr(stored_lease, name, getattr(fake, name))
    return clock, fake


def replica(name: str, clock: JumpClock, ttl: float = 9.0) -> Leadership:
    return Leadership(lambda: None, name, ttl, Metrics(), clock=clock)  # type: ignore[arg-type,return-value]


async def test_a_free_lease_is_taken_and_a_held_one_is_not(
    table: tuple[JumpClock, FakeLease],
) -> None:
    clock, _ = table
    a, b = replica("a", clock), replica("b", clock)
    await a._follow(asyncio.Event())
    assert a.leading.is_set() and a.state.term is not None and a.state.term.epoch == 1
    stop = asyncio.Event()
    stop.set()  # one attempt, no wait
    await b._follow(stop)
    assert not b.leading.is_set()
    assert b._follow_wait() == pytest.approx(3.0)  # renew_every, the lease has 9 s left


async def test_a_leader_that_cannot_renew_steps_down_at_its_deadline(
    table: tuple[JumpClock, FakeLease],
) -> None:
    clock, fake = table
    a = replica("a", clock)
    await a._follow(asyncio.Event())  # epoch 1 at t=0: deadline 7.2, expiry 9
    fake.down = True
    clock.now = 7.0
    await a._keep_once()
    assert a.leading.is_set()  # still before the deadline: keeps trying
    clock.now = 7.2
    await a._keep_once()
    assert not a.leading.is_set() and a.lost.is_set()
    assert clock.now < fake.row.expires  # type: ignore[union-attr]  # stopped before expiry


async def test_a_leader_whose_lease_was_taken_steps_down_at_once(
    table: tuple[JumpClock, FakeLease],
) -> None:
    clock, _ = table
    a, b = replica("a", clock), replica("b", clock)
    await a._follow(asyncio.Event())
    clock.now = 9.5  # a paused past its expiry (say, a stopped VM)
    await b._follow(asyncio.Event())
    assert b.state.term is not None and b.state.term.epoch == 2
    await a._keep_once()
    assert not a.leading.is_set() and a.lost.is_set()


async def test_renewals_keep_the_lease_and_the_term(table: tuple[JumpClock, FakeLease]) -> None:
    clock, _ = table
    a = replica("a", clock)
    await a._follow(asyncio.Event())
    for t in (3.0, 6.0, 9.0, 12.0, 15.0):
        clock.now = t
        await a._keep_once()
    assert a.leading.is_set() and a.state.term is not None and a.state.term.epoch == 1
    assert a.state.term.deadline == pytest.approx(15.0 + 9.0 - 1.8)


async def test_a_follower_retries_when_the_seen_lease_expires(
    table: tuple[JumpClock, FakeLease],
) -> None:
    clock, _ = table
    a, b = replica("a", clock), replica("b", clock)
    await a._follow(asyncio.Event())
    clock.now = 8.0
    stop = asyncio.Event()
    stop.set()
    await b._follow(stop)
    assert b._follow_wait() == pytest.approx(1.05)  # expiry at 9, plus a beat
