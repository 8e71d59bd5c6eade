"""The pacer's bookkeeping stays bounded when the server sends no rate headers (fake time)."""

from __future__ import annotations

from throttlepool._pacing import HeaderBudget
from throttlepool.hints import RateInfo
from throttlepool.limiter import Cost, Limit

ONE = Cost(1.0)


def remembered(budget: HeaderBudget) -> float:
    """Requests the pacer still counts: answered (merged or not) and open calls."""
    return (sum(s.cost.requests for s in budget._sent.values())
            + sum(cost.requests for _, cost in budget._blind_open.values()))


def test_answered_calls_without_headers_share_entries_and_still_count_once_learned() -> None:
    # 20,000 calls at 10,000/s, none answered with headers: each kept apart for the 60 s a
    # window might yet span would be ~190 B per call (1,000,000 calls: ~190 MB).
    budget, now = HeaderBudget(), 0.0
    for _ in range(20_000):
        seq, wait = budget.admit(ONE, now)
        assert seq is not None and wait == 0
        now += 0.0001
        budget.observe(seq, None, now)
    assert len(budget._sent) <= 2.0 / 0.01 + 2  # one entry per 10 ms
    # A 429 then tells a 10 s sliding window of 30,000 (headers on errors only, as the
    # google-generativeai SDK shows them): the merged calls count in the learned window.
    seq, _ = budget.admit(ONE, now)
    assert seq is not None
    info = RateInfo(limit_requests=30_000, remaining_requests=0, reset_requests=10.0,
                    retry_after=5.0)
    budget.observe(seq, info, now)
    budget.rate_limited(seq, now, 5.0)
    assert budget.learned_limits == [Limit(30_000, 10.0)]
    # 20,000 of the 30,000 are spent until the first of them leave the window (at ~10 s).
    for _ in range(10_000):
        seq, wait = budget.admit(ONE, now)
        assert seq is not None
        budget.observe(seq, None, now)
    seq, wait = budget.admit(ONE, now)
    assert seq is None and 7.9 < wait <= 8.02


def test_calls_answered_without_headers_are_kept_the_unknown_horizon_then_forgotten() -> None:
    # No header yet: no window is known, so an answered call may count in one as long as
    # the unknown horizon (60 s) and is kept that long, however cheap the blind path is.
    budget = HeaderBudget()
    for _ in range(100):
        seq, _ = budget.admit(ONE, 0.0)
        assert seq is not None
        budget.observe(seq, None, 0.0)
    seq, _ = budget.admit(ONE, 59.9)  # also forgets what it can
    assert seq is not None
    assert remembered(budget) == 101
    # A 429 then tells a 120 s window of 101: the 100 calls answered at 0 still fill it.
    info = RateInfo(limit_requests=101, remaining_requests=0, reset_requests=120.0,
                    retry_after=60.0)
    budget.observe(seq, info, 59.9)
    budget.rate_limited(seq, 59.9, 60.0)
    assert budget.learned_limits == [Limit(101, 120.0)]
    assert budget.admit(ONE, 59.9)[0] is not None  # the 101st (the refused call no longer counts)
    assert budget.admit(ONE, 59.9)[0] is None
    # Forgotten after the horizon: a blind pacer drops them once 60 s have passed.
    blind = HeaderBudget()
    for _ in range(100):
        seq, _ = blind.admit(ONE, 0.0)
        assert seq is not None
        blind.observe(seq, None, 0.0)
    blind.admit(ONE, 60.1)
    assert remembered(blind) == 1


def test_answered_calls_held_behind_an_open_call_are_forgotten_once_it_is_answered() -> None:
    # A call open for over a minute keeps the calls answered after it was let go (records in
    # dispatch order stop at it); the first call let go after its answer forgets them.
    budget = HeaderBudget()
    slow, _ = budget.admit(ONE, 0.0)
    assert slow is not None
    for _ in range(100):
        seq, _ = budget.admit(ONE, 0.0)
        assert seq is not None
        budget.observe(seq, None, 0.0)
    seq, _ = budget.admit(ONE, 61.0)
    assert seq is not None
    assert remembered(budget) == 102  # held behind the slow call
    budget.observe(slow, None, 61.5)
    budget.observe(seq, None, 61.5)
    budget.admit(ONE, 62.0)
    assert remembered(budget) == 3  # the two answered at 61.5 and the call just let go
