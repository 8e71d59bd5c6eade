"""The circuit breaker's states on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from throttlepool.breaker import BreakerState, CircuitBreaker, CircuitOpenError
from throttlepool.errors import ConfigError
from throttlepool.testing import FakeClock


def test_opens_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=3, reset_after=10.0, clock=clock)
    for _ in range(2):
        assert b.admit() == 0.0
        b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.record_success()  # a success resets the count: failures must be consecutive
    for _ in range(2):
        b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert b.trips == 1
    assert b.admit() == 10.0
    clock.advance(4.0)
    assert b.admit() == 6.0


def test_half_open_lets_one_probe_and_success_closes() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=1, reset_after=5.0, clock=clock)
    b.record_failure()
    clock.advance(5.0)
    assert b.admit() == 0.0  # the probe
    assert b.state is BreakerState.HALF_OPEN
    assert b.admit() is None  # nobody else while the probe is out
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.admit() == 0.0 and b.admit() == 0.0


def test_failed_probe_reopens_for_twice_as_long_up_to_the_cap() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=1, reset_after=5.0, max_reset_after=12.0, clock=clock)
    b.record_failure()
    opens = []
    for _ in range(4):
        wait = b.admit()
        assert wait is not None and wait > 0
        opens.append(wait)
        clock.advance(wait)
        assert b.admit() == 0.0
        b.record_failure()
    assert opens == [5.0, 10.0, 12.0, 12.0]
    clock.advance(12.0)
    assert b.admit() == 0.0
    b.record_success()
    b.record_failure()
    assert b.admit() == 5.0  # success reset the open time


def test_neutral_outcome_frees_the_probe_slot() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=1, reset_after=1.0, clock=clock)
    b.record_failure()
    clock.advance(1.0)
    assert b.admit() == 0.0
    assert b.admit() is None
    b.record_neutral()
    assert b.admit() == 0.0


def test_call_and_acall_raise_while_open() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=2, reset_after=3.0, clock=clock)

    def boom() -> None:
        raise ConnectionError("down")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            b.call(boom)
    with pytest.raises(CircuitOpenError):
        b.call(lambda: 1)
    clock.advance(3.0)
    assert b.call(lambda: 7) == 7
    assert b.state is BreakerState.CLOSED

    async def ok() -> int:
        return 5

    async def fail() -> int:
        raise ConnectionError

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await b.acall(fail)
        with pytest.raises(CircuitOpenError):
            await b.acall(ok)
        clock.advance(3.0)
        assert await b.acall(ok) == 5

    asyncio.run(main())


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        CircuitBreaker(threshold=0)
    with pytest.raises(ConfigError):
        CircuitBreaker(reset_after=0)
