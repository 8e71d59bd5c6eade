"""Limiter unit tests on a fake clock: parsing, scheduling, settle, cancel, pause, bucket."""

from __future__ import annotations

import asyncio
import threading

import pytest

from throttlepool.errors import ConfigError, CostExceedsLimit
from throttlepool.limiter import (
    REQUESTS,
    TOKENS,
    Cost,
    Limit,
    RateLimiter,
    TokenBucketLimiter,
    build_limits,
)
from throttlepool.testing import FakeClock

# ---- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount", "period", "unit"),
    [
        ("20/second", 20, 1.0, REQUESTS),
        ("500/minute", 500, 60.0, REQUESTS),
        ("1000/hour", 1000, 3600.0, REQUESTS),
        ("200000 tokens/minute", 200_000, 60.0, TOKENS),
        ("500 per minute", 500, 60.0, REQUESTS),
        ("10/5s", 10, 5.0, REQUESTS),
        ("200_000 tokens / minute", 200_000, 60.0, TOKENS),
        ("1,000 requests/day", 1000, 86400.0, REQUESTS),
        ("  15/min  ", 15, 60.0, REQUESTS),
        ("5/100ms", 5, 0.1, REQUESTS),
    ],
)
def test_limit_parse(text: str, amount: float, period: float, unit: str) -> None:
    lim = Limit.parse(text)
    assert lim.amount == amount
    assert lim.period == pytest.approx(period)
    assert lim.unit == unit


@pytest.mark.parametrize(
    "text",
    ["", "fast", "20", "20/", "/minute", "20/fortnight", "20 apples/minute", "-5/second",
     "0/second", "twenty/second", "20/second extra"],
)
def test_limit_parse_rejects_bad_strings_naming_the_text(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        Limit.parse(text)
    assert repr(text) in str(info.value) or text in str(info.value)


def test_limit_rejects_nonpositive_and_unknown_unit() -> None:
    with pytest.raises(ConfigError):
        Limit(0, 60)
    with pytest.raises(ConfigError):
        Limit(10, 0)
    with pytest.raises(ConfigError):
        Limit(10, 1, "bytes")


def test_build_limits_combines_kwargs_and_strings_with_safety() -> None:
    limits = build_limits(["10/second", Limit(5, 2.0)], rpm=500, tpm=200_000, safety=0.8)
    by = {(lim.period, lim.unit): lim.amount for lim in limits}
    assert by[(1.0, REQUESTS)] == pytest.approx(8)
    assert by[(2.0, REQUESTS)] == pytest.approx(4)
    assert by[(60.0, REQUESTS)] == pytest.approx(400)
    assert by[(60.0, TOKENS)] == pytest.approx(160_000)
    assert build_limits(None) == []
    assert build_limits("20/second") == [Limit(20, 1.0)]
    with pytest.raises(ConfigError):
        build_limits(rpm=0)
    with pytest.raises(ConfigError):
        build_limits(tpm=-1)


def test_safety_never_below_one_unit() -> None:
    (lim,) = build_limits(rpm=1, safety=0.5)
    assert lim.amount == 1


# ---- the sliding window ---------------------------------------------------------------------


def test_idle_limiter_admits_at_once_and_starts_without_history() -> None:
    clock = FakeClock(1000.0)
    lim = RateLimiter("3/second", clock=clock)
    permits = [lim.acquire() for _ in range(3)]
    assert [p.admit_at for p in permits] == [1000.0] * 3
    assert clock.sleeps == []  # no phantom burst accounting, no waiting
    fourth = lim.acquire()
    assert fourth.admit_at == 1001.0
    assert clock.now() == 1001.0


def test_schedule_ahead_is_exact_and_fifo() -> None:
    clock = FakeClock()
    lim = RateLimiter("2/second", clock=clock)
    times = [lim.reserve().admit_at for _ in range(7)]
    assert times == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0]


def test_several_limits_combine() -> None:
    clock = FakeClock()
    lim = RateLimiter("2/second", "3/10s", clock=clock)
    times = [lim.reserve().admit_at for _ in range(5)]
    assert times == [0.0, 0.0, 1.0, 10.0, 10.0]


def test_weighted_tokens_and_cost_exceeding_limit() -> None:
    clock = FakeClock()
    lim = RateLimiter(tpm=1000, rpm=100, clock=clock)
    a = lim.reserve(Cost(tokens=600))
    b = lim.reserve(Cost(tokens=500))
    assert a.admit_at == 0.0
    assert b.admit_at == 60.0
    with pytest.raises(CostExceedsLimit) as info:
        lim.reserve(Cost(tokens=1001))
    assert "1001" in str(info.value)
    assert isinstance(info.value, ConfigError)
    # The failed reservation left nothing behind.
    assert lim.reserve(Cost(tokens=400)).admit_at == 60.0


def test_cost_exceeds_limit_does_not_hang_in_acquire() -> None:
    lim = RateLimiter("5/second", clock=FakeClock())
    with pytest.raises(CostExceedsLimit):
        lim.acquire(Cost(requests=6))


def test_settle_refund_moves_a_waiter_earlier() -> None:
    clock = FakeClock()
    lim = RateLimiter(tpm=1000, clock=clock)
    a = lim.reserve(Cost(tokens=900))
    b = lim.reserve(Cost(tokens=500))
    assert b.admit_at == 60.0
    lim.settle(a, tokens=300)
    assert b.admit_at == 0.0


def test_settle_charge_pushes_later_reservations() -> None:
    clock = FakeClock()
    lim = RateLimiter(tpm=1000, clock=clock)
    a = lim.reserve(Cost(tokens=100))
    clock.advance(1)
    lim.settle(a, tokens=900)
    b = lim.reserve(Cost(tokens=200))
    assert b.admit_at == 60.0


def test_settle_adds_tokens_to_a_reservation_estimated_at_zero() -> None:
    clock = FakeClock()
    lim = RateLimiter(tpm=1000, clock=clock)
    a = lim.reserve(Cost(requests=1, tokens=0))
    lim.settle(a, tokens=800)
    assert lim.reserve(Cost(tokens=300)).admit_at == 60.0


def test_cancel_frees_budget_for_the_next() -> None:
    clock = FakeClock()
    lim = RateLimiter("1/second", clock=clock)
    a = lim.reserve()
    b = lim.reserve()
    assert b.admit_at == 1.0
    lim.cancel(a)
    assert b.admit_at == 0.0


def test_cancel_of_the_last_reservation_frees_its_slot() -> None:
    clock = FakeClock()
    lim = RateLimiter("1/second", clock=clock)
    lim.reserve()
    b = lim.reserve()
    assert b.admit_at == 1.0
    lim.cancel(b)
    c = lim.reserve()
    assert c.admit_at == 1.0
    lim.cancel(c)
    clock.advance(1.0)
    assert lim.reserve().admit_at == 1.0


def test_cancel_of_a_big_last_reservation_lets_a_small_one_in_now() -> None:
    clock = FakeClock()
    lim = RateLimiter(tpm=1000, clock=clock)
    lim.reserve(Cost(tokens=500))
    big = lim.reserve(Cost(tokens=900))
    assert big.admit_at == 60.0
    lim.cancel(big)
    assert lim.reserve(Cost(tokens=100)).admit_at == 0.0


def test_refused_try_acquire_does_not_hold_back_a_smaller_cost() -> None:
    clock = FakeClock()
    lim = RateLimiter(tpm=1000, clock=clock)
    assert lim.try_acquire(Cost(tokens=500)) is not None
    assert lim.try_acquire(Cost(tokens=900)) is None
    assert lim.reserve(Cost(tokens=100)).admit_at == 0.0


def test_failed_try_acquire_leaves_no_trace() -> None:
    clock = FakeClock()
    lim = RateLimiter("2/second", clock=clock)
    assert lim.try_acquire() is not None
    assert lim.try_acquire() is not None
    assert lim.try_acquire() is None
    clock.advance(1.0)
    # The refused attempt did not hold a slot: both new ones fit at once.
    assert lim.try_acquire() is not None
    assert lim.try_acquire() is not None


def test_try_acquire_refusal_does_not_delay_later_reservations() -> None:
    clock = FakeClock()
    lim = RateLimiter("1/second", "3/10s", clock=clock)
    lim.reserve()
    assert lim.try_acquire() is None
    clock.advance(1.0)
    assert lim.reserve().admit_at == 1.0


def test_pause_until_holds_everything_then_releases() -> None:
    clock = FakeClock()
    lim = RateLimiter("10/second", clock=clock)
    early = lim.reserve()
    assert early.admit_at == 0.0
    lim.pause_until(7.0)
    held = [lim.reserve() for _ in range(3)]
    assert all(p.admit_at == 7.0 for p in held)
    # A shorter pause never shortens a longer one.
    lim.pause_until(3.0)
    assert all(p.admit_at == 7.0 for p in held)
    lim.pause_for(0.5)
    assert lim.reserve().admit_at == 7.0


def test_pause_reschedules_pending_reservations() -> None:
    clock = FakeClock()
    lim = RateLimiter("1/second", clock=clock)
    lim.reserve()
    pending = lim.reserve()
    assert pending.admit_at == 1.0
    lim.pause_until(5.0)
    assert pending.admit_at == 5.0


def test_pause_without_limits_is_enforced() -> None:
    clock = FakeClock()
    lim = RateLimiter(clock=clock)
    assert lim.unrestricted()
    lim.pause_until(4.0)
    assert not lim.unrestricted()
    assert lim.acquire().admit_at == 4.0
    assert clock.now() == 4.0
    assert lim.unrestricted()


def test_context_managers_sync_and_async() -> None:
    clock = FakeClock()
    lim = RateLimiter("2/second", clock=clock)
    with lim as p1:
        pass
    with lim as p2:
        pass
    with lim as p3:
        pass
    assert (p1.admit_at, p2.admit_at, p3.admit_at) == (0.0, 0.0, 1.0)

    async def main() -> list[float]:
        out = []
        for _ in range(3):
            async with lim as p:
                out.append(p.admit_at)
        return out

    # p3 (at 1.0) is still in the window at 1.0: one more fits then, two at 2.0.
    assert asyncio.run(main()) == [1.0, 2.0, 2.0]
    assert clock.now() == 2.0


def test_wait_returns_when_refund_moves_the_permit_earlier() -> None:
    # Real clock, long period: the waiter is woken by the refund, not by the wait expiring.
    lim = RateLimiter(tpm=1000)
    a = lim.reserve(Cost(tokens=1000))
    b = lim.reserve(Cost(tokens=500))
    done = threading.Event()

    def waiter() -> None:
        lim.wait(b)
        done.set()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert not done.wait(0.05)
    lim.settle(a, tokens=100)
    assert done.wait(10), "refund did not wake the waiter"
    assert b.admit_at <= lim.clock.now()


def test_async_waiter_is_woken_by_cancel() -> None:
    lim = RateLimiter("1/minute")

    async def main() -> float:
        a = lim.reserve()
        b = lim.reserve()
        task = asyncio.ensure_future(lim.wait_async(b))
        await asyncio.sleep(0.01)
        assert not task.done()
        lim.cancel(a)
        await asyncio.wait_for(task, 10)
        return b.admit_at

    assert asyncio.run(main()) <= lim.clock.now()


def test_cancelled_async_wait_withdraws_the_permit() -> None:
    clock = FakeClock()
    lim = RateLimiter("1/second", clock=clock)

    async def main() -> None:
        lim.reserve()
        b = lim.reserve()
        c = lim.reserve()
        assert c.admit_at == 2.0
        event_loop_task = asyncio.ensure_future(asyncio.sleep(3600))
        event_loop_task.cancel()
        lim.cancel(b)
        assert c.admit_at == 1.0

    asyncio.run(main())


def test_repr_and_limits() -> None:
    lim = RateLimiter("500/minute", tpm=1000)
    assert len(lim.limits) == 2
    assert "500/60s" in repr(lim)
    with pytest.raises(TypeError):
        RateLimiter("1/second", backend=object())  # type: ignore[arg-type]


# ---- token bucket ---------------------------------------------------------------------------


def test_token_bucket_burst_then_rate() -> None:
    clock = FakeClock()
    lim = TokenBucketLimiter(2.0, burst_size=3, clock=clock)
    times = [lim.reserve().admit_at for _ in range(6)]
    assert times[:3] == [0.0, 0.0, 0.0]
    assert times[3:] == pytest.approx([0.5, 1.0, 1.5])


def test_token_bucket_rejects_bad_config_and_big_costs() -> None:
    with pytest.raises(ConfigError):
        TokenBucketLimiter(0)
    with pytest.raises(ConfigError):
        TokenBucketLimiter(1, burst_size=0.5)
    lim = TokenBucketLimiter(1, burst_size=2, clock=FakeClock())
    with pytest.raises(CostExceedsLimit):
        lim.reserve(Cost(requests=3))


def test_token_bucket_refills_while_idle_up_to_burst() -> None:
    clock = FakeClock()
    lim = TokenBucketLimiter(1.0, burst_size=2, clock=clock)
    for _ in range(2):
        assert lim.reserve().admit_at == 0.0
    clock.advance(100)
    times = [lim.reserve().admit_at for _ in range(3)]
    assert times == [100.0, 100.0, 101.0]


def test_token_bucket_cancel_frees_and_pause_holds() -> None:
    clock = FakeClock()
    lim = TokenBucketLimiter(1.0, burst_size=1, clock=clock)
    lim.reserve()
    b = lim.reserve()
    c = lim.reserve()
    assert (b.admit_at, c.admit_at) == (1.0, 2.0)
    lim.cancel(b)
    assert c.admit_at == 1.0
    lim.cancel(c)
    assert lim.reserve().admit_at == 1.0


def test_token_bucket_pause_does_not_create_a_burst() -> None:
    clock = FakeClock()
    lim = TokenBucketLimiter(1.0, burst_size=1, clock=clock)
    lim.pause_until(10.0)
    times = [lim.reserve().admit_at for _ in range(4)]
    # The bucket holds one token: after the pause, one at once, then one per second.
    assert times == [10.0, 11.0, 12.0, 13.0]
