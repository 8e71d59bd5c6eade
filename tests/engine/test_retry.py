"""The Retry policy (pure) and the retry decorator for sync and async functions."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from throttlepool.classify import ErrorKind, Verdict
from throttlepool.errors import ConfigError, RetryHintTooLong
from throttlepool.retry import AsyncRetry, Retry, retrying
from throttlepool.testing import FakeClock


class Status(Exception):
    def __init__(self, status_code: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.headers = headers or {}


TRANSIENT = Verdict(ErrorKind.TRANSIENT)


def test_of_and_validation() -> None:
    assert Retry.of(3).attempts == 4
    assert Retry.of(None).attempts == 1
    assert Retry.of(0).attempts == 1
    policy = Retry(attempts=2)
    assert Retry.of(policy) is policy
    with pytest.raises(ConfigError):
        Retry.of(-1)
    for bad in ({"attempts": 0}, {"base": -1}, {"cap": -1}, {"multiplier": 0.5},
                {"max_hint": -1}, {"hint_jitter": 2}):
        with pytest.raises(ConfigError):
            Retry(**bad)  # type: ignore[arg-type]


@settings(max_examples=200)
@given(base=st.floats(0, 5), cap=st.floats(0, 60), mult=st.floats(1, 4),
       n=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_full_jitter_backoff_bounds(base: float, cap: float, mult: float, n: int,
                                    seed: int) -> None:
    policy = Retry(attempts=100, base=base, cap=cap, multiplier=mult)
    wait = policy.backoff(n, random.Random(seed))
    assert 0.0 <= wait <= min(cap, base * mult ** (n - 1))


def test_backoff_spreads_over_the_whole_range() -> None:
    policy = Retry(base=1.0, cap=8.0)
    rng = random.Random(1)
    waits = [policy.backoff(4, rng) for _ in range(2000)]  # ceiling min(8, 1 * 2**3) = 8
    assert max(waits) <= 8.0
    assert min(waits) < 0.5 and max(waits) > 7.5  # full jitter, not equal jitter


def test_delay_gives_up_on_permanent_and_after_the_last_attempt() -> None:
    policy = Retry(attempts=3)
    rng = random.Random(0)
    assert policy.delay(1, Verdict(ErrorKind.PERMANENT), rng) is None
    assert policy.delay(1, Verdict(ErrorKind.FATAL), rng) is None
    assert policy.delay(2, TRANSIENT, rng) is not None
    assert policy.delay(3, TRANSIENT, rng) is None


@settings(max_examples=100)
@given(hint=st.floats(0, 120), jitter=st.floats(0, 1), seed=st.integers(0, 2**32))
def test_hint_wins_over_backoff_plus_bounded_jitter(hint: float, jitter: float,
                                                    seed: int) -> None:
    policy = Retry(attempts=5, base=100.0, cap=1000.0, max_hint=120.0, hint_jitter=jitter)
    wait = policy.delay(1, Verdict(ErrorKind.RATE_LIMITED, hint), random.Random(seed))
    assert wait is not None
    assert hint <= wait <= hint * (1 + jitter)


def test_hint_longer_than_max_hint_fails() -> None:
    policy = Retry(max_hint=60.0)
    with pytest.raises(RetryHintTooLong) as info:
        policy.delay(1, Verdict(ErrorKind.RATE_LIMITED, 3600.0), random.Random(0))
    assert info.value.hint == 3600.0 and info.value.maximum == 60.0


# ---- the decorator ---------------------------------------------------------------------------


def test_sync_decorator_retries_transient_with_backoff_on_fake_clock() -> None:
    clock = FakeClock()
    calls: list[float] = []

    @retrying(Retry(attempts=4, base=1.0, cap=10.0), clock=clock, rng=random.Random(3))
    def flaky(x: int) -> int:
        calls.append(clock.now())
        if len(calls) < 3:
            raise Status(503)
        return x * 2

    assert flaky(21) == 42
    assert len(calls) == 3
    assert len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 1.0 and 0 <= clock.sleeps[1] <= 2.0
    assert flaky.__name__ == "flaky"


def test_sync_decorator_honours_retry_after_and_reraises_the_last_error() -> None:
    clock = FakeClock()
    attempts = []

    @retrying(Retry(attempts=3, hint_jitter=0.0), clock=clock)
    def limited() -> None:
        attempts.append(clock.now())
        raise Status(429, {"retry-after": "7"})

    with pytest.raises(Status):
        limited()
    assert attempts == [0.0, 7.0, 14.0]
    assert clock.sleeps == [7.0, 7.0]


def test_decorator_never_retries_permanent_or_fatal() -> None:
    clock = FakeClock()
    count = 0

    @retrying(Retry(attempts=5), clock=clock)
    def bad(status: int) -> None:
        nonlocal count
        count += 1
        raise Status(status)

    for status in (400, 401, 404):
        with pytest.raises(Status):
            bad(status)
    assert count == 3
    assert clock.sleeps == []


def test_decorator_hint_too_long_raises_from_the_cause() -> None:
    @retrying(Retry(attempts=3, max_hint=10.0), clock=FakeClock())
    def limited() -> None:
        raise Status(429, {"retry-after": "3600"})

    with pytest.raises(RetryHintTooLong) as info:
        limited()
    assert isinstance(info.value.__cause__, Status)


def test_async_decorator_on_fake_clock() -> None:
    clock = FakeClock()
    seen: list[float] = []

    @retrying(Retry(attempts=3, hint_jitter=0.0), clock=clock)
    async def fetch(x: int) -> int:
        seen.append(clock.now())
        await asyncio.sleep(0)
        if len(seen) == 1:
            raise Status(429, {"retry-after-ms": "1500"})
        if len(seen) == 2:
            raise ConnectionResetError()
        return x + 1

    assert asyncio.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(1)) == 2
    assert seen[:2] == [0.0, 1.5]
    assert len(seen) == 3


def test_retry_instance_is_a_decorator_and_async_retry_alias() -> None:
    count = 0

    @Retry(attempts=2, base=0.0, cap=0.0)
    def once_flaky() -> str:
        nonlocal count
        count += 1
        if count == 1:
            raise TimeoutError
        return "ok"

    assert once_flaky() == "ok"
    policy = AsyncRetry(max_retries=3, base_delay=1.0, max_delay=5.0)
    assert (policy.attempts, policy.base, policy.cap) == (4, 1.0, 5.0)


def test_custom_classifier() -> None:
    clock = FakeClock()
    count = 0

    def classify(exc: BaseException) -> Verdict:
        return Verdict(ErrorKind.TRANSIENT) if isinstance(exc, KeyError) else Verdict(
            ErrorKind.PERMANENT)

    @retrying(Retry(attempts=3, classifier=classify, base=0.0), clock=clock)
    def lookup() -> None:
        nonlocal count
        count += 1
        raise KeyError("x")

    with pytest.raises(KeyError):
        lookup()
    assert count == 3
