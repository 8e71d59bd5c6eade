"""The pacer's bookkeeping stays bounded when the server sends no rate headers (fake time)."""

from __future__ import annotations

from throttlepool._pacing import HeaderBudget
from throttlepool.hints import RateInfo
from throttlepool.limiter import Cost, Limit

ONE = Cost(1.0)


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
