"""ThreadedBatchRunner: order, concurrency, retries and hints, per-item errors, breaker, streams.

Logic runs on a FakeClock wherever the runner's clock decides (limiter, backoff, breaker);
the only real waits are the per-call timeout test, which must outlast a real thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from throttlepool import ThreadedBatchRunner
from throttlepool.breaker import BreakerState, CircuitBreaker
from throttlepool.errors import CallTimeout, ConfigError, RetryHintTooLong
from throttlepool.outcome import BatchResult, RunStats, Source, Status
from throttlepool.retry import Retry
from throttlepool.testing import ConcurrencySpy, FakeClock, FakeStore, ScriptedCallable


class APIError(Exception):
    """Like an SDK's status error: ``status_code`` and ``response.headers``."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = SimpleNamespace(status_code=status, headers=headers or {})


def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    """Poll a condition another thread makes true (a synchronisation, not a timing check)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


def run_in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


# ---- order and concurrency -----------------------------------------------------------------


def test_results_keep_input_order_when_completion_order_differs() -> None:
    n = 8
    finished: list[int] = []
    lock = threading.Lock()
    others_done = threading.Event()

    def fn(i: int) -> int:
        if i == 0:
            assert others_done.wait(20)  # item 0 finishes last
        else:
            # Later items finish first: each waits for its successor.
            wait_until(lambda: i == n - 1 or (i + 1) in finished)
        with lock:
            finished.append(i)
            if len(finished) == n - 1:
                others_done.set()
        return i * 10

    with ThreadedBatchRunner(fn, batch_size=n, progress=False) as runner:
        result = runner.run(range(n))
    assert finished == [7, 6, 5, 4, 3, 2, 1, 0]
    assert result.results == [i * 10 for i in range(n)]
    assert [o.index for o in result.outcomes] == list(range(n))
    assert [o.item for o in result.outcomes] == list(range(n))
    assert result.all_succeeded and result.success_count == n and result.error_count == 0


def test_concurrency_never_above_batch_size() -> None:
    gate = threading.Event()
    spy = ConcurrencySpy(gate=gate)
    runner = ThreadedBatchRunner(spy, batch_size=4, progress=False)
    t, box = run_in_thread(lambda: runner.run(range(50)))
    wait_until(lambda: spy.current == 4)
    time.sleep(0.05)  # give a fifth call every chance to (wrongly) start
    assert spy.current == 4
    gate.set()
    t.join(30)
    runner.close()
    assert box["value"].results == list(range(50))
    assert spy.peak == 4
    assert spy.total == 50


def test_sixty_four_threads_when_asked_for_sixty_four() -> None:
    gate = threading.Event()
    spy = ConcurrencySpy(gate=gate)
    runner = ThreadedBatchRunner(spy, batch_size=64, progress=False)
    t, box = run_in_thread(lambda: runner.run(range(64)))
    wait_until(lambda: spy.current == 64)
    gate.set()
    t.join(30)
    runner.close()
    assert spy.peak == 64
    assert len(spy.threads) == 64  # not capped at the default executor's min(32, cpu + 4)
    assert threading.get_ident() not in spy.threads
    assert box["value"].all_succeeded


def test_bad_configuration() -> None:
    for bad in ({"batch_size": 0}, {"batch_size": 2.5}, {"timeout": 0}, {"deadline": -1}):
        with pytest.raises(ConfigError):
            ThreadedBatchRunner(lambda x: x, **bad)
    with pytest.raises(ConfigError):
        ThreadedBatchRunner(42)  # type: ignore[arg-type]


# ---- retries, hints, per-item errors -------------------------------------------------------


def test_429_with_retry_after_pauses_all_dispatch_then_retries() -> None:
    clock = FakeClock()
    calls: list[tuple[int, float]] = []
    fn = ScriptedCallable(
        {3: [APIError(429, {"retry-after": "7"}), "three"]},
        default=lambda i: i,
        on_call=lambda item, attempt: calls.append((item, clock.now())),
    )
    runner = ThreadedBatchRunner(fn, batch_size=1, retries=3, clock=clock, seed=7,
                                 progress=False)
    result = runner.run(range(6))
    runner.close()
    assert result.results == [0, 1, 2, "three", 4, 5]
    first_429 = next(t for item, t in calls if item == 3)
    after = [(item, t) for item, t in calls if t > first_429 or (item, t) == (3, first_429)]
    retry_time = [t for item, t in calls if item == 3][1]
    assert first_429 + 7.0 <= retry_time <= first_429 + 7.0 * 1.1
    assert runner.limiter.backend.paused_until == retry_time  # type: ignore[attr-defined]
    # Nothing was dispatched during the pause.
    assert all(t >= retry_time for item, t in after if (item, t) != (3, first_429))
    assert [item for item, _ in calls] == [0, 1, 2, 3, 3, 4, 5]
    s = result.stats
    assert (s.calls, s.retries, s.rate_limited) == (7, 1, 1)
    assert result.outcomes[3].attempts == 2
    assert s.rate_limit_wait >= 7.0


def test_429_pause_holds_back_the_other_workers_too() -> None:
    clock = FakeClock()
    calls: list[tuple[int, int, float]] = []
    fn = ScriptedCallable(
        {0: [APIError(429, {"retry-after": "30"}), "zero"]},
        on_call=lambda item, attempt: calls.append((item, attempt, clock.now())),
    )
    # One worker: the others are dispatched only after the 429 is seen.
    runner = ThreadedBatchRunner(fn, batch_size=1, retries=2, clock=clock, seed=1,
                                 progress=False)
    result = runner.run(range(4))
    runner.close()
    assert result.all_succeeded
    assert all(t >= 30.0 for item, attempt, t in calls if (item, attempt) != (0, 0))


def test_503_without_hint_backs_off_with_full_jitter_under_the_cap() -> None:
    clock = FakeClock()
    fn = ScriptedCallable({"x": [APIError(503)] * 4 + ["ok"]})
    policy = Retry(attempts=6, base=1.0, cap=3.0)
    runner = ThreadedBatchRunner(fn, batch_size=1, retry=policy, clock=clock, seed=3,
                                 breaker=False, progress=False)
    result = runner.run(["x"])
    runner.close()
    assert result.results == ["ok"]
    assert result.outcomes[0].attempts == 5
    assert len(clock.sleeps) == 4
    for n, slept in enumerate(clock.sleeps, start=1):
        assert 0.0 <= slept <= min(3.0, 1.0 * 2 ** (n - 1))
    assert result.stats.retries == 4 and result.stats.rate_limited == 0


def test_retries_exhausted_keep_the_last_error() -> None:
    clock = FakeClock()
    fn = ScriptedCallable({"x": [APIError(503)]})
    runner = ThreadedBatchRunner(fn, retries=2, clock=clock, breaker=False, progress=False)
    result = runner.run(["x", "y"])
    runner.close()
    out = result.outcomes[0]
    assert out.status is Status.FAILED and out.attempts == 3
    assert isinstance(out.error, APIError) and out.error.status_code == 503
    assert result.results == [None, "y"]


def test_errors_stay_per_item() -> None:
    clock = FakeClock()
    fn = ScriptedCallable({2: [ValueError("bad input")], 5: [KeyError("k")]})
    runner = ThreadedBatchRunner(fn, batch_size=3, retries=3, clock=clock, progress=False)
    result = runner.run(range(8))
    runner.close()
    assert result.results == [0, 1, None, 3, 4, None, 6, 7]
    assert isinstance(result.errors[2], ValueError) and isinstance(result.errors[5], KeyError)
    assert [e is None for e in result.errors] == [True, True, False, True, True, False, True,
                                                  True]
    assert result.success_count == 6 and result.error_count == 2 and not result.all_succeeded
    assert result.get_successful() == [0, 1, 3, 4, 6, 7]
    assert fn.attempts[2] == 1  # permanent: never retried
    assert [o.index for o in result.failed()] == [2, 5]
    assert result.stopped is None
    with pytest.raises(ValueError):
        result.raise_first()
    assert "6 ok, 2 failed of 8" in result.summary()


def test_hint_longer_than_max_hint_fails_the_item() -> None:
    clock = FakeClock()
    fn = ScriptedCallable({1: [APIError(429, {"retry-after": "3600"})]})
    runner = ThreadedBatchRunner(fn, retry=Retry(attempts=5, max_hint=60.0), clock=clock,
                                 progress=False)
    result = runner.run(range(3))
    runner.close()
    err = result.errors[1]
    assert isinstance(err, RetryHintTooLong)
    assert err.hint == 3600.0
    assert isinstance(err.__cause__, APIError)
    assert result.results == [0, None, 2]
    assert fn.attempts[1] == 1
    assert clock.now() < 3600.0  # it did not sleep for an hour


def test_custom_classifier_is_used() -> None:
    from throttlepool.classify import ErrorKind, Verdict

    def classify(exc: BaseException) -> Verdict:
        return Verdict(ErrorKind.TRANSIENT if isinstance(exc, KeyError) else ErrorKind.PERMANENT)

    fn = ScriptedCallable({0: [KeyError("a"), "ok"]})
    runner = ThreadedBatchRunner(fn, classifier=classify, retries=2, clock=FakeClock(),
                                 progress=False)
    assert runner.run([0]).results == ["ok"]
    runner.close()


# ---- breaker ---------------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_recovers_after_a_probe() -> None:
    clock = FakeClock()
    failures_left = [5]
    calls: list[float] = []
    lock = threading.Lock()

    def fn(i: int) -> int:
        with lock:
            calls.append(clock.now())
            if failures_left[0] > 0:
                failures_left[0] -= 1
                raise APIError(503)
        return i

    breaker = CircuitBreaker(threshold=3, reset_after=10.0, clock=clock)
    runner = ThreadedBatchRunner(fn, batch_size=1, retry=Retry(attempts=10, base=0.0, cap=0.0),
                                 breaker=breaker, clock=clock, progress=False)
    result = runner.run(range(5))
    runner.close()
    assert result.results == [0, 1, 2, 3, 4]
    # Three failures at t=0 open it; the probe at 10 fails (open 20 more), the probe at 30
    # fails (open 40 more); the probe at 70 succeeds and the rest flow at once.
    assert calls[:3] == [0.0, 0.0, 0.0]
    assert calls[3] >= 10.0
    assert calls[4] >= calls[3] + 20.0
    assert calls[5] >= calls[4] + 40.0
    assert calls[5:] == [calls[5]] * (len(calls) - 5)
    assert breaker.state is BreakerState.CLOSED
    assert result.stats.breaker_trips == 3


def test_breaker_ignores_permanent_errors() -> None:
    clock = FakeClock()
    fn = ScriptedCallable({i: [ValueError()] for i in range(10)})
    breaker = CircuitBreaker(threshold=2, reset_after=10.0, clock=clock)
    runner = ThreadedBatchRunner(fn, batch_size=1, breaker=breaker, clock=clock,
                                 progress=False)
    result = runner.run(range(12))
    runner.close()
    assert result.success_count == 2
    assert breaker.trips == 0 and clock.now() == 0.0


# ---- timeouts ------------------------------------------------------------------------------


def test_per_call_timeout_raises_call_timeout_and_retries() -> None:
    release = threading.Event()
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def fn(item: str) -> str:
        with lock:
            attempts[item] = attempts.get(item, 0) + 1
            n = attempts[item]
        if item == "stuck" or (item == "slow-once" and n == 1):
            release.wait(30)  # a hung call; threads cannot be killed, the runner moves on
        return item

    runner = ThreadedBatchRunner(fn, batch_size=2, timeout=0.05,
                                 retry=Retry(attempts=2, base=0.0, cap=0.0), breaker=False,
                                 progress=False)
    try:
        result = runner.run(["slow-once", "fast", "stuck"])
    finally:
        release.set()
        runner.close()
    assert result.results == ["slow-once", "fast", None]
    assert result.outcomes[0].attempts == 2
    assert isinstance(result.errors[2], CallTimeout)
    assert isinstance(result.errors[2], TimeoutError)
    assert result.outcomes[2].attempts == 2


def test_a_cancelled_run_whose_call_the_runner_times_is_cancelled_not_timed_out() -> None:
    """The runner's timer cancels a call's future at its timeout; a cancellation of the run
    itself reaches the same future and must stay a cancellation, not become a CallTimeout
    that the run records and retries past."""
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def held(x: int) -> int:
        calls.append(x)
        started.set()
        release.wait(10)
        return x

    async def main() -> None:
        runner = ThreadedBatchRunner(held, batch_size=1, timeout=30.0, breaker=False,
                                     retry=Retry(attempts=3, base=0.0, cap=0.0), progress=False)
        task = asyncio.ensure_future(runner.arun([1, 2, 3]))
        while not started.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        try:
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            release.set()
            runner.close()

    asyncio.run(main())
    assert calls == [1]  # neither retried as a timeout nor followed by the next item


def test_a_cancelled_error_the_function_raises_is_not_taken_for_a_timeout() -> None:
    """Only the timer's cancellation is a timeout: the function's own CancelledError goes
    where it goes without a timeout, and no thread is counted as abandoned for it."""

    def fn(x: int) -> int:
        if x == 1:
            raise asyncio.CancelledError
        return x

    seen = []
    for timeout in (None, 30.0):
        runner = ThreadedBatchRunner(fn, batch_size=1, timeout=timeout, breaker=False,
                                     retry=Retry(attempts=2, base=0.0, cap=0.0), progress=False)
        with runner, pytest.raises(asyncio.CancelledError):
            runner.run([0, 1, 2])
        seen.append(runner._pool._abandoned)
    assert seen == [0, 0]


def test_a_timeout_error_the_function_raises_stays_its_own() -> None:
    """A read timeout inside the function is the function's error, reported as it is, not
    relabelled as the runner's CallTimeout (and no thread counts as abandoned for it)."""

    def fn(x: int) -> int:
        raise TimeoutError("read timed out")

    with ThreadedBatchRunner(fn, batch_size=1, timeout=30.0, breaker=False,
                             retry=Retry(attempts=1), progress=False) as runner:
        result = runner.run([0])
    error = result.errors[0]
    assert isinstance(error, TimeoutError) and not isinstance(error, CallTimeout)
    assert str(error) == "read timed out"
    assert runner._pool._abandoned == 0


def test_a_call_that_returns_in_time_leaves_no_timer_behind() -> None:
    """Each call the runner times arms one timer; a call that returns must disarm it, or a
    long run keeps every answered call's future for the whole timeout."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        with ThreadedBatchRunner(lambda x: x, batch_size=4, timeout=600.0,
                                 progress=False) as runner:
            result = await runner.arun(range(50))
        assert result.all_succeeded
        return sum(1 for h in loop._scheduled  # type: ignore[attr-defined]
                   if not h.cancelled() and h.when() > loop.time() + 300)

    assert asyncio.run(main()) == 0


# ---- event loops: run inside a loop, arun, aimap ------------------------------------------


def test_run_works_inside_a_running_event_loop() -> None:
    async def main() -> tuple[list[Any], bool]:
        loop = asyncio.get_running_loop()
        with ThreadedBatchRunner(lambda x: x + 1, batch_size=4, progress=False) as runner:
            result = runner.run(range(20))
        return result.results, asyncio.get_running_loop() is loop

    results, same_loop = asyncio.run(main())
    assert results == list(range(1, 21))
    assert same_loop


def test_arun_and_aimap() -> None:
    fn = ScriptedCallable({3: [ValueError("no")]}, default=lambda i: i * i)

    async def main() -> tuple[BatchResult[Any], list[int], list[int]]:
        runner = ThreadedBatchRunner(fn, batch_size=3, clock=FakeClock(), progress=False)
        result = await runner.arun(range(10))
        ordered = [o.index async for o in runner.aimap(range(10))]
        unordered = [o.index async for o in runner.aimap(range(10), ordered=False)]
        runner.close()
        return result, ordered, unordered

    result, ordered, unordered = asyncio.run(main())
    assert result.results == [0, 1, 4, None, 16, 25, 36, 49, 64, 81]
    assert isinstance(result.errors[3], ValueError)
    assert ordered == list(range(10))
    assert sorted(unordered) == list(range(10))


def test_aimap_consumer_stopping_early_stops_the_run() -> None:
    read = [0]

    def gen() -> Iterator[int]:
        for i in range(100_000):
            read[0] += 1
            yield i

    async def main() -> list[int]:
        runner = ThreadedBatchRunner(lambda x: x, batch_size=4, window=16, progress=False)
        got = []
        stream = runner.aimap(gen())
        async for o in stream:
            got.append(o.index)
            if len(got) == 10:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        runner.close()
        return got

    assert asyncio.run(main()) == list(range(10))
    assert read[0] < 1000


# ---- streaming: imap, as_completed ---------------------------------------------------------


def test_imap_streams_in_input_order() -> None:
    fn = ScriptedCallable({4: [ValueError("x")]})
    with ThreadedBatchRunner(fn, batch_size=4, clock=FakeClock(), progress=False) as runner:
        outs = list(runner.imap(range(30)))
    assert [o.index for o in outs] == list(range(30))
    assert [o.value for o in outs if o.ok] == [i for i in range(30) if i != 4]
    assert isinstance(outs[4].error, ValueError)


def test_a_stream_keeps_its_runner_alive_when_the_caller_keeps_only_the_stream() -> None:
    """``for o in ThreadedBatchRunner(fn).imap(items)`` holds no runner: its finaliser shut the
    thread pool while the stream still ran, and every item failed with "the runner's thread
    pool is closed"."""
    for method in ("imap", "as_completed"):
        outs = list(getattr(ThreadedBatchRunner(lambda x: x * 2, batch_size=2,
                                                progress=False), method)(range(20)))
        assert sorted(o.value for o in outs) == [2 * i for i in range(20)], method


def test_as_completed_yields_in_completion_order() -> None:
    others_done = threading.Event()
    done: list[int] = []
    lock = threading.Lock()

    def fn(i: int) -> int:
        if i == 0:
            assert others_done.wait(20)
        with lock:
            done.append(i)
            if len(done) == 5:
                others_done.set()
        return i

    with ThreadedBatchRunner(fn, batch_size=6, progress=False) as runner:
        order = [o.index for o in runner.as_completed(range(6))]
    assert order[-1] == 0
    assert sorted(order) == list(range(6))


@pytest.mark.parametrize(("n", "slow_consumer"), [(50_000, False), (3_000, True)])
def test_imap_reads_input_lazily_with_a_bounded_lead(n: int, slow_consumer: bool) -> None:
    window, batch = 32, 4
    read = [0]

    def gen() -> Iterator[int]:
        for i in range(n):
            read[0] += 1
            yield i

    consumed = 0
    max_lead = 0
    with ThreadedBatchRunner(lambda x: x, batch_size=batch, window=window,
                             progress=False) as runner:
        stream = runner.imap(gen())
        assert read[0] == 0  # nothing is read before the first next()
        for outcome in stream:
            assert outcome.index == consumed
            if slow_consumer and consumed % 50 == 0:
                time.sleep(0.005)  # back-pressure: the hand-over channel fills up
            consumed += 1
            max_lead = max(max_lead, read[0] - consumed)
    assert consumed == n
    # Input is read at most a window (re-order) plus a window (hand-over) plus the calls in
    # flight ahead of the consumer: independent of n.
    assert max_lead <= 2 * window + batch


def test_imap_stopped_early_reads_no_further() -> None:
    read = [0]

    def gen() -> Iterator[int]:
        for i in range(10**9):
            read[0] += 1
            yield i

    with ThreadedBatchRunner(lambda x: x, batch_size=4, window=16, progress=False) as runner:
        stream = runner.imap(gen())
        first = [next(stream).index for _ in range(5)]
        stream.close()  # type: ignore[attr-defined]
        at_close = read[0]
    assert first == [0, 1, 2, 3, 4]
    assert at_close < 100
    time.sleep(0.05)
    assert read[0] == at_close


# ---- stats, progress, resume --------------------------------------------------------------


def test_stats_count_calls_retries_and_rate_limits() -> None:
    clock = FakeClock()
    fn = ScriptedCallable({
        1: [APIError(429, {"retry-after-ms": "500"}), "one"],
        2: [APIError(502), APIError(502), "two"],
        3: [APIError(404)],
    })
    runner = ThreadedBatchRunner(fn, batch_size=2, retries=3, clock=clock, seed=5,
                                 progress=False)
    result = runner.run(range(5))
    runner.close()
    s = result.stats
    assert s.calls == 5 + 1 + 2
    assert s.retries == 3
    assert s.rate_limited == 1
    assert (s.done, s.failed, s.not_attempted) == (4, 1, 0)
    assert s.total == 5 and s.in_flight == 0 and s.retrying == 0
    assert s.finished == 5


def test_progress_callbacks_advance_on_completion() -> None:
    pairs: list[tuple[int, int | None]] = []
    stats_seen: list[int] = []

    def two_args(done: int, total: int | None) -> None:
        pairs.append((done, total))

    def one_arg(stats: RunStats) -> None:
        stats_seen.append(stats.finished)

    for spec in (two_args, one_arg):
        with ThreadedBatchRunner(lambda x: x, batch_size=3, progress=spec) as runner:
            runner.run(range(7))
    assert pairs == [(k, 7) for k in range(1, 8)]
    assert stats_seen == list(range(1, 8))


def test_recording_progress_sees_start_every_outcome_and_close() -> None:
    from throttlepool.testing import RecordingProgress

    sink = RecordingProgress()
    fn = ScriptedCallable({2: [ValueError()]})
    with ThreadedBatchRunner(fn, batch_size=2, progress=sink) as runner:
        runner.run(range(6))
    assert sink.started == 6
    assert sorted(sink.outcomes) == list(range(6))
    assert sink.closed
    assert sink.updates[-1]["failed"] == 1 and sink.updates[-1]["done"] == 5


def test_progress_accepts_unknown_length_inputs() -> None:
    from throttlepool.testing import RecordingProgress

    sink = RecordingProgress()
    with ThreadedBatchRunner(lambda x: x, progress=sink) as runner:
        runner.run(iter(range(3)))
    assert sink.started is None
    assert len(sink.outcomes) == 3


def test_fake_store_resume_skips_done_items() -> None:
    store = FakeStore()
    fn = ScriptedCallable({2: [ValueError("first time")], 4: [ValueError("first time")]})
    runner = ThreadedBatchRunner(fn, batch_size=2, store=store, run_name="nightly",
                                 progress=False)
    first = runner.run(range(6))
    assert first.success_count == 4
    fn.script.clear()
    fn.calls.clear()
    second = runner.run(range(6))
    runner.close()
    assert sorted(fn.calls) == [2, 4]  # only the failed ones ran again
    assert second.results == [0, 1, 2, 3, 4, 5]
    sources = [o.source for o in second.outcomes]
    assert sources.count(Source.CHECKPOINT) == 4
    assert second.stats.from_checkpoint == 4
    assert first.run_id == second.run_id
    assert store.runs[first.run_id]["status"] == "completed"


def test_fake_store_without_retry_failed_keeps_failures() -> None:
    store = FakeStore()
    fn = ScriptedCallable({1: [ValueError("bad")]})
    runner = ThreadedBatchRunner(fn, store=store, run_name="r", retry_failed=False,
                                 progress=False)
    runner.run(range(3))
    fn.calls.clear()
    again = runner.run(range(3))
    runner.close()
    assert fn.calls == []
    assert again.outcomes[1].status is Status.FAILED
