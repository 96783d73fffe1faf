"""ConnectionGuard (httpapp): which connections a sweep closes (pure: fake connections, an
injected clock)."""

from __future__ import annotations

from katsyncd.httpapp import ConnectionGuard


class FakeConn:
    def __init__(self) -> None:
        self.closed = False

    def force_close(self) -> None:
        self.closed = True


def test_a_connection_without_a_request_is_closed_after_the_header_timeout() -> None:
    guard = ConnectionGuard(header_timeout=10.0)
    a, b = FakeConn(), FakeConn()
    assert guard.sweep([a], now=100.0) == 0  # first seen now
    assert guard.sweep([a, b], now=105.0) == 0
    assert guard.sweep([a, b], now=110.0) == 1 and (a.closed, b.closed) == (True, False)
    assert guard.sweep([b], now=115.0) == 1 and b.closed
    assert guard.closed == 2


def test_a_request_in_progress_keeps_its_connection_and_its_end_restarts_the_clock() -> None:
    guard = ConnectionGuard(header_timeout=10.0)
    conn = FakeConn()
    guard.sweep([conn], now=0.0)
    guard._busy[conn] = 1  # what the middleware records while a handler runs
    assert guard.sweep([conn], now=50.0) == 0 and not conn.closed
    del guard._busy[conn]
    guard._idle_since[conn] = 50.0  # the middleware, when the answer is given
    assert guard.sweep([conn], now=59.0) == 0
    assert guard.sweep([conn], now=60.0) == 1 and conn.closed


def test_connections_that_went_away_are_forgotten() -> None:
    guard = ConnectionGuard(header_timeout=1.0)
    conns = [FakeConn() for _ in range(5)]
    guard.sweep(conns, now=0.0)
    guard.sweep([], now=0.5)
    assert guard._idle_since == {}
