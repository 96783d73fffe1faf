"""The Katana simulator's rate window, in both readings of Katana's undocumented window."""

from __future__ import annotations

from katsyncd.sim.katana_http import RateWindow
from tests.support.clocks import JumpClock


def at_1000() -> JumpClock:
    clock = JumpClock()
    clock.now = 1000.0
    return clock


def test_a_sliding_window_frees_each_request_60_s_after_it() -> None:
    clock = at_1000()
    window = RateWindow(clock)
    assert window.admit(2)
    clock.now += 10
    assert window.admit(2)
    assert not window.admit(2)
    assert window.retry_after(2) == 50  # the first leaves at 1060
    clock.now = 1060.0
    assert window.admit(2) and not window.admit(2)  # one freed, the second still counts
    assert window.headers(2)["X-Ratelimit-Reset"] == str(1070 * 1000)


def test_a_fixed_window_frees_every_request_together_at_its_end() -> None:
    clock = at_1000()
    window = RateWindow(clock, fixed=lambda: True)
    assert window.admit(2)
    clock.now += 10
    assert window.admit(2)
    assert not window.admit(2)
    assert window.retry_after(2) == 50
    assert window.headers(2)["X-Ratelimit-Reset"] == str(1060 * 1000)
    clock.now = 1059.9
    assert not window.admit(2)  # the second request still counts, the first too
    clock.now = 1060.0
    assert window.admit(2) and window.admit(2)  # both freed at once: a new window
    assert window.headers(2)["X-Ratelimit-Reset"] == str(1120 * 1000)


def test_spent_quota_starts_a_fixed_window_in_the_past() -> None:
    clock = at_1000()
    window = RateWindow(clock, fixed=lambda: True)
    window.spend(59, seconds_ago=54.0)
    assert window.admit(60) and not window.admit(60)
    assert window.retry_after(60) == 6
