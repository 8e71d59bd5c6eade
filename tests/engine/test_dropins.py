"""Drop-ins: generate_batch, batchable, gather_with_concurrency, run_async."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from throttlepool import batchable, generate_batch
from throttlepool.bridge import gather_with_concurrency, in_running_loop, run_async
from throttlepool.limiter import RateLimiter
from throttlepool.testing import ConcurrencySpy, FakeClock, ScriptedCallable

# ---- generate_batch --------------------------------------------------------------------------


def test_generate_batch_equals_the_list_comprehension() -> None:
    def fn(x: int) -> str:
        return f"<{x * 3}>"

    items = list(range(57))
    assert generate_batch(fn, items, batch_size=5) == [fn(x) for x in items]
    assert generate_batch(fn, iter(items), batch_size=1) == [fn(x) for x in items]
    assert generate_batch(fn, [], batch_size=5) == []


def test_generate_batch_raises_the_first_failure_in_input_order_after_the_rest() -> None:
    finished: list[int] = []
    lock = threading.Lock()
    second_failure_raised = threading.Event()

    def fn(x: int) -> int:
        if x == 7:
            second_failure_raised.set()
            raise KeyError("later item fails first")
        if x == 3:
            assert second_failure_raised.wait(20)
            raise ValueError("first in input order")
        with lock:
            finished.append(x)
        return x

    with pytest.raises(ValueError, match="first in input order"):
        generate_batch(fn, range(12), batch_size=12, retries=0)
    assert sorted(finished) == [i for i in range(12) if i not in (3, 7)]


def test_generate_batch_return_exceptions_in_place() -> None:
    fn = ScriptedCallable({1: [ValueError("one")], 3: [TypeError("three")]})
    out = generate_batch(fn, range(5), return_exceptions=True, retries=0)
    assert out[0] == 0 and out[2] == 2 and out[4] == 4
    assert isinstance(out[1], ValueError) and isinstance(out[3], TypeError)


def test_generate_batch_is_bounded_by_batch_size() -> None:
    spy = ConcurrencySpy()
    assert generate_batch(spy, range(60), batch_size=3) == list(range(60))
    assert 1 <= spy.peak <= 3


def test_generate_batch_rate_limited_on_a_fake_clock() -> None:
    # One worker: on a FakeClock concurrent waiters would each advance time by their wait.
    clock = FakeClock()
    calls: list[float] = []
    fn = ScriptedCallable(on_call=lambda item, attempt: calls.append(clock.now()))
    out = generate_batch(fn, range(30), batch_size=1, rpm=15, clock=clock, margin=0.0)
    assert out == list(range(30))
    assert calls == [0.0] * 15 + [60.0] * 15  # 15 per minute, exactly, no phantom burst


# ---- batchable -------------------------------------------------------------------------------


def test_batchable_function_keeps_working_and_gains_batch() -> None:
    @batchable(batch_size=4)
    def double(x: int) -> int:
        """Double it."""
        return 2 * x

    assert double(21) == 42
    assert double.__name__ == "double" and double.__doc__ == "Double it."
    result = double.batch(range(10))
    assert result.results == [2 * x for x in range(10)]
    assert asyncio.run(double.abatch(range(5))).results == [0, 2, 4, 6, 8]


def test_batchable_without_arguments_and_unpack() -> None:
    @batchable
    def add(a: int, b: int = 0) -> int:
        return a + b

    assert add(1, 2) == 3
    assert add.batch([(1, 2), (3, 4)], unpack=True).results == [3, 7]
    assert add.batch([{"a": 1, "b": 5}], unpack=True).results == [6]
    assert add.batch([1, 2]).results == [1, 2]


def test_batchable_on_methods() -> None:
    class Client:
        def __init__(self, prefix: str) -> None:
            self.prefix = prefix

        @batchable(batch_size=3)
        def call(self, x: int) -> str:
            return f"{self.prefix}{x}"

    a, b = Client("a"), Client("b")
    assert a.call(1) == "a1"
    assert a.call.batch([1, 2, 3]).results == ["a1", "a2", "a3"]
    assert b.call.batch([4]).results == ["b4"]
    assert asyncio.run(b.call.abatch([5, 6])).results == ["b5", "b6"]
    assert Client.call(a, 9) == "a9"


def test_batchable_shares_one_limiter_across_batches() -> None:
    clock = FakeClock()

    @batchable(batch_size=2, rpm=4, clock=clock, margin=0.0)
    def ping(x: int) -> int:
        return x

    assert isinstance(ping.limiter, RateLimiter)
    ping.batch(range(4))
    assert clock.now() == 0.0  # the first four fit in the first minute
    ping.batch(range(4))
    assert clock.now() == 60.0  # the budget held across the two batches

    class C:
        @batchable(rpm=1, clock=clock)
        def m(self, x: int) -> int:
            return x

    c1, c2 = C(), C()
    assert c1.m.limiter is c2.m.limiter  # one budget for the method, whichever instance


# ---- gather_with_concurrency -----------------------------------------------------------------


def test_gather_with_concurrency_is_bounded_ordered_and_lazy() -> None:
    running = 0
    peak = 0
    created = 0

    async def job(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * ((7 * i) % 5))  # finish out of order
        running -= 1
        return i * i

    def jobs() -> Iterator[Coroutine[Any, Any, int]]:
        nonlocal created
        for i in range(40):
            created += 1
            assert running <= 3
            yield job(i)

    out = asyncio.run(gather_with_concurrency(jobs(), 3))
    assert out == [i * i for i in range(40)]
    assert peak == 3


def test_gather_with_concurrency_creates_coroutines_lazily() -> None:
    created = 0
    finished = 0

    async def job(i: int) -> int:
        nonlocal finished
        await asyncio.sleep(0)
        finished += 1
        return i

    def jobs() -> Iterator[Coroutine[Any, Any, int]]:
        nonlocal created
        for i in range(100):
            created += 1
            assert created - finished <= 4 + 1  # never more than the bound ahead
            yield job(i)

    assert asyncio.run(gather_with_concurrency(jobs(), 4)) == list(range(100))


def test_gather_with_concurrency_errors() -> None:
    async def ok(i: int) -> int:
        return i

    async def bad() -> int:
        raise ValueError("bad")

    with pytest.raises(ValueError):
        asyncio.run(gather_with_concurrency([ok(1), bad(), ok(3)], 2))
    out = asyncio.run(gather_with_concurrency([ok(1), bad(), ok(3)], 2, return_exceptions=True))
    assert out[0] == 1 and isinstance(out[1], ValueError) and out[2] == 3
    with pytest.raises(ValueError):
        asyncio.run(gather_with_concurrency([], 0))


# ---- run_async -------------------------------------------------------------------------------


async def answer(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def test_run_async_without_a_running_loop() -> None:
    assert not in_running_loop()
    assert run_async(answer(41)) == 42


def test_run_async_inside_a_running_loop_leaves_that_loop_alone() -> None:
    async def main() -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        value = run_async(answer(1))  # sync code called from async code (Jupyter)
        return value, asyncio.get_running_loop() is loop

    assert asyncio.run(main()) == (2, True)


def test_run_async_propagates_exceptions() -> None:
    async def boom() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        run_async(boom())

    async def main() -> None:
        with pytest.raises(KeyError):
            run_async(boom())

    asyncio.run(main())
