"""The drop-ins take the runner's options once: checked when decorated, one limiter (local or
shared through ``limiter_url``) for every batch, overrides applied per batch, the value
objects accepted as the runner accepts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from throttlepool import batchable, generate_batch
from throttlepool.errors import ConfigError
from throttlepool.testing import FakeClock


def test_batchable_refuses_a_bad_option_when_decorated() -> None:
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        batchable(batchsize=3)
    with pytest.raises(ConfigError, match="rpm"):
        batchable(rpm=-1)(str)


def test_batchables_share_a_limit_through_its_url(tmp_path: Path) -> None:
    """Two functions decorated with the same limiter_url count against one limit."""
    clock, url = FakeClock(), f"sqlite:///{tmp_path / 'limit.db'}"

    @batchable(batch_size=1, rps=2, limiter_url=url, clock=clock, margin=0.0)
    def first(x: int) -> int:
        return x

    @batchable(batch_size=1, rps=2, limiter_url=url, clock=clock, margin=0.0)
    def second(x: int) -> int:
        return x

    assert first.batch(range(2)).all_succeeded
    assert clock.now() == 0.0
    assert second.batch(range(2)).all_succeeded
    assert clock.now() >= 1.0  # the second's calls waited for the first's second
    limiter = second.limiter
    attempts = []

    def flaky(x: int) -> int:
        attempts.append(x)
        raise ConnectionError("reset")

    second.fn = flaky
    result = second.batch([7], retries=2)  # an override for this batch only
    assert attempts == [7, 7, 7] and not result.all_succeeded
    assert second.limiter is limiter
    with pytest.raises(ConfigError, match="not both"):
        second.batch([1], rps=10)  # the limit is the shared limiter's


def test_generate_batch_takes_the_objects_too() -> None:
    from throttlepool.options import Execution

    assert generate_batch(str, range(5), execution=Execution(batch_size=2)) == [
        "0", "1", "2", "3", "4"]
