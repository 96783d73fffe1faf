"""The Katana limiter's start state (issue 11, finding 8): a restarted process does not
assume the account's window is empty. It starts with ``initial_tokens``, adopts the first
X-Ratelimit-Remaining, and can resume the window the previous process left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from katsyncd.config import Config, build_config
from katsyncd.models import Priority
from katsyncd.ratelimit import KatanaLimiter
from tests.support.clocks import WALL_EPOCH, JumpClock


def _limiter(clock: JumpClock, **kwargs: float) -> KatanaLimiter:
    return KatanaLimiter(60, clock=clock, wall_clock=clock.wall, sleep=clock.sleep, **kwargs)


def _burst(limiter: KatanaLimiter) -> int:
    n = 0
    while limiter.try_acquire(Priority.LIVE):
        n += 1
    return n


def test_without_initial_tokens_the_bucket_starts_full() -> None:
    assert _burst(_limiter(JumpClock())) == 60


def test_a_conservative_start_sends_one_then_adopts_what_katana_says_is_left() -> None:
    clock = JumpClock()
    lim = _limiter(clock, initial_tokens=1.0)
    assert _burst(lim) == 1  # one blind request, not a burst of 60
    lim.observe(limit=60, remaining=40, reset=WALL_EPOCH + 30)
    assert _burst(lim) == 40  # raised to what is left, once
    lim.observe(limit=60, remaining=50, reset=WALL_EPOCH + 30)
    assert _burst(lim) == 0  # later answers only ever lower it


def test_the_first_answer_discounts_the_other_requests_already_sent() -> None:
    clock = JumpClock()
    lim = _limiter(clock, initial_tokens=3.0)
    assert _burst(lim) == 3
    lim.observe(limit=60, remaining=10, reset=WALL_EPOCH + 30)
    assert _burst(lim) == 8  # 10 left after the answered one, 2 more may be in flight


def test_a_spent_window_is_kept_across_a_restart() -> None:
    clock = JumpClock()
    before = _limiter(clock)
    assert before.window_state() is None
    before.observe(limit=60, remaining=0, reset=WALL_EPOCH + 20)
    state = before.window_state()
    assert state == (0, WALL_EPOCH + 20)
    after = _limiter(clock, initial_tokens=1.0)
    after.restore(*state)
    assert after.delay_for(Priority.LIVE) == 20.0  # paused until Katana's reset
    clock.now += 20.0
    assert _burst(after) == 1


def test_a_window_state_counts_requests_granted_since_the_answer() -> None:
    clock = JumpClock()
    lim = _limiter(clock)
    lim.observe(limit=60, remaining=10, reset=WALL_EPOCH + 20)
    for _ in range(4):
        assert lim.try_acquire(Priority.LIVE)
    assert lim.window_state() == (6, WALL_EPOCH + 20)


def test_a_kept_window_whose_reset_has_passed_is_ignored() -> None:
    clock = JumpClock()
    lim = _limiter(clock, initial_tokens=1.0)
    clock.now += 100.0
    lim.restore(0, WALL_EPOCH + 50)
    assert lim.delay_for(Priority.LIVE) == 0.0


# ----- the learned ids per request, kept across a restart ----------------------------------------
class _Client:
    """The two things ``save_ids_limit`` / ``restore_ids_limit`` use of a KatanaClient."""

    def __init__(self, learned: int | None = None) -> None:
        self.learned_ids_limit = learned
        self.effective_ids_per_request = learned or 250

    def adopt_learned_ids_limit(self, limit: int) -> None:
        self.learned_ids_limit = self.effective_ids_per_request = limit


def _state_config(state_dir: Path, key: str = "k") -> Config:
    data: dict[str, Any] = {
        "katana": {"api_key": key, "webhook_token": "t"},
        "database": {"url": "postgresql://x@localhost/x", "state_dir": str(state_dir)},
        "stores": [{"name": "s", "store_hash": "h", "access_token": "a"}],
    }
    return build_config(data, env={})


def test_a_learned_ids_limit_is_kept_for_the_same_account_only(tmp_path: Path) -> None:
    from katsyncd.katana_window import restore_ids_limit, save_ids_limit

    cfg = _state_config(tmp_path)
    save_ids_limit(_Client(None), cfg)  # type: ignore[arg-type]  # nothing learned: nothing written
    assert not (tmp_path / "katana-ids.json").exists()
    save_ids_limit(_Client(20), cfg)  # type: ignore[arg-type]
    fresh = _Client()
    restore_ids_limit(fresh, cfg)  # type: ignore[arg-type]
    assert fresh.effective_ids_per_request == 20
    other = _Client()
    restore_ids_limit(other, _state_config(tmp_path, key="another"))  # type: ignore[arg-type]
    assert other.effective_ids_per_request == 250


def test_a_garbled_ids_file_is_ignored(tmp_path: Path) -> None:
    from katsyncd.katana_window import restore_ids_limit

    cfg = _state_config(tmp_path)
    for text in ("not json", '{"account": 1}', "[]"):
        (tmp_path / "katana-ids.json").write_text(text)
        client = _Client()
        restore_ids_limit(client, cfg)  # type: ignore[arg-type]
        assert client.effective_ids_per_request == 250
