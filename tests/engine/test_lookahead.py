"""Lookahead (issue 16): more workers than threads, so calls wait in the pool's queue and a
thread goes from one call to the next without a round trip through the loop. A queued call
is not a call yet: none may start that would not have started without lookahead (after a
stop, a fatal error, a 429 the loop has not paused for, an abort), and the run's figures
count only calls made, at most ``batch_size`` of them in flight."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

import throttlepool._engine as engine_module
from throttlepool import ThreadedBatchRunner
from throttlepool._pacing import HeaderBudget
from throttlepool.hints import RateInfo
from throttlepool.limiter import Cost, RateLimiter
from throttlepool.limiter.margin import LOAD_FLOOR_MAX, LOAD_FLOOR_MIN
from throttlepool.outcome import Outcome, RunStats, Status
from throttlepool.testing import FakeClock


class APIError(Exception):
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = SimpleNamespace(status_code=status, headers=headers or {})


class Recorder:
    """A function for the runner that records when each call starts (on its thread) and
    when the scripted failure is raised, on one monotonic clock."""

    def __init__(self, fail: dict[int, BaseException], duration: float = 0.005) -> None:
        self.fail = dict(fail)
        self.duration = duration
        self.lock = threading.Lock()
        self.starts: list[tuple[float, int]] = []
        self.raised_at: float | None = None

    def __call__(self, item: int) -> int:
        with self.lock:
            self.starts.append((time.monotonic(), item))
            error = self.fail.pop(item, None)
        time.sleep(self.duration)
        if error is not None:
            with self.lock:
                self.raised_at = time.monotonic()
            raise error
        return item


class Held(Recorder):
    """Item 0 fails once item ``busy`` has started on the other thread and keeps it for
    0.3 s: the failure is raised while the pool's two threads are taken and the next items
    wait in its queue. Deterministic: no scheduling can start a queued call in between."""

    def __init__(self, error: BaseException, busy: int = 1) -> None:
        super().__init__({0: error}, duration=0.0)
        self.busy = busy
        self.other_started = threading.Event()

    def __call__(self, item: int) -> int:
        with self.lock:
            self.starts.append((time.monotonic(), item))
            error = self.fail.pop(item, None)
        if error is not None:
            assert self.other_started.wait(10)
            self.raised_at = time.monotonic()
            raise error
        if item == self.busy:
            self.other_started.set()
            time.sleep(0.3)
        return item


def test_no_call_starts_after_a_fatal_error_is_raised() -> None:
    fn = Held(APIError(401))
    with ThreadedBatchRunner(fn, batch_size=2, retries=3, progress=False) as runner:
        result = runner.run(range(40))
    assert sorted(item for _, item in fn.starts) == [0, 1]  # queued ones were withdrawn
    assert [o.status for o in result.outcomes[:2]] == [Status.FAILED, Status.OK]
    assert all(o.status is Status.NOT_ATTEMPTED for o in result.outcomes[2:])
    assert result.stats.calls == 2  # withdrawn calls are not counted as calls
    assert (result.stats.in_flight, result.stats.queued) == (0, 0)


def test_no_call_starts_while_a_429_pause_holds() -> None:
    """The 429 asks for 0.4 s: every call starting after it was raised starts when the
    pause ends (the pause starts later than the raise, so it ends later too)."""
    fn = Held(APIError(429, {"retry-after": "0.4"}))
    with ThreadedBatchRunner(fn, batch_size=2, retries=3, progress=False) as runner:
        result = runner.run(range(40))
    assert result.all_succeeded
    assert fn.raised_at is not None
    late = [(round(t - fn.raised_at, 4), item) for t, item in fn.starts
            if fn.raised_at < t < fn.raised_at + 0.4]
    assert late == []
    assert result.stats.calls == len(fn.starts) == 41


def test_a_429_in_one_run_holds_back_the_queued_calls_of_another_on_the_same_runner(
) -> None:
    """The limiter's pause is the runner's: a run's queued calls wait for another run's 429
    too (the count of failures is the pool's, not the run's). Run ``a`` is item 0 alone;
    run ``b``'s item 1000 takes the other thread, its next items wait in the queue."""
    fn = Held(APIError(429, {"retry-after": "0.4"}), busy=1000)
    with ThreadedBatchRunner(fn, batch_size=2, retries=3, progress=False) as runner:
        results: dict[str, Any] = {}

        def run(name: str, items: range) -> None:
            results[name] = runner.run(items)

        first = threading.Thread(target=run, args=("a", range(1)))
        first.start()
        while not fn.starts:  # item 0 holds one thread
            time.sleep(0.001)
        second = threading.Thread(target=run, args=("b", range(1000, 1040)))
        second.start()
        first.join(30)
        second.join(30)
    assert results["a"].all_succeeded and results["b"].all_succeeded
    assert fn.raised_at is not None
    late = [(round(t - fn.raised_at, 4), item) for t, item in fn.starts
            if fn.raised_at < t < fn.raised_at + 0.4]
    assert late == []


class _Peak:
    """A progress sink that keeps the largest in-flight and queued counts it was shown."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.queued = 0

    def start(self, total: int | None, stats: RunStats) -> None:
        pass

    def update(self, stats: RunStats, outcome: Outcome[Any] | None) -> None:
        self.in_flight = max(self.in_flight, stats.in_flight)
        self.queued = max(self.queued, stats.queued)

    def close(self, stats: RunStats) -> None:
        pass


def test_at_most_batch_size_calls_show_in_flight_the_rest_queued() -> None:
    fn = Recorder({}, duration=0.002)
    peak = _Peak()
    with ThreadedBatchRunner(fn, batch_size=4, progress=peak) as runner:
        result = runner.run(range(200))
    assert result.all_succeeded
    assert peak.in_flight == 4
    assert 0 < peak.queued <= 4 * (engine_module.LOOKAHEAD - 1)
    assert (result.stats.in_flight, result.stats.queued) == (0, 0)


@pytest.mark.parametrize("options", [
    {"lookahead": 1},
    # The runner's timer would count the wait in the queue.
    {"timeout": 60.0},
    # One call at a time: a 429's retry goes before the next item.
    {"batch_size": 1},
])
def test_where_lookahead_is_off_nothing_is_queued(
        monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]) -> None:
    options = dict(options)
    monkeypatch.setattr(engine_module, "LOOKAHEAD", options.pop("lookahead", 4))
    fn = Recorder({}, duration=0.002)
    peak = _Peak()
    with ThreadedBatchRunner(fn, **{"batch_size": 4, **options}, progress=peak) as runner:
        assert runner.run(range(100)).all_succeeded
    assert peak.queued == 0 and peak.in_flight <= 4


def test_a_call_that_waited_in_the_queue_does_not_widen_the_margin() -> None:
    """Its hand-off delay counts from when its thread became free (``ready``), not from its
    grant: 50 ms behind busy threads is not a loaded machine."""
    clock = FakeClock()
    limiter = RateLimiter("100/1s", margin=None, clock=clock)
    for _ in range(12):
        permit = limiter.acquire()
        clock.advance(0.05)  # queued behind a busy thread
        ready = clock.now() - 0.0005  # the thread was free half a millisecond ago
        started = limiter.call_started(permit, ready=ready)
        clock.advance(0.01)
        limiter.call_ended(permit, started, first_on_thread=False)
    assert limiter.margin.floor == LOAD_FLOOR_MIN


def test_through_the_runner_waiting_in_the_queue_does_not_widen_the_margin() -> None:
    """30 ms calls, 3 of every 4 waiting about that long for a thread: counted from their
    grant, the hand-off delays would push the floor to its ceiling."""
    fn = Recorder({}, duration=0.03)
    with ThreadedBatchRunner(fn, batch_size=4, limits=["1000000/minute"],
                             progress=False) as runner:
        assert runner.run(range(160)).all_succeeded
        assert runner.limiter.margin.floor < LOAD_FLOOR_MAX


@pytest.mark.parametrize("items", [[], [1]])
def test_a_run_with_fewer_items_than_threads_ends(items: list[int]) -> None:
    """Lookahead's extra workers wait for the first outcome; an empty input has none."""
    with ThreadedBatchRunner(Recorder({}, duration=0.0), batch_size=4, progress=False) as runner:
        assert runner.run(items).results == items


class Boom(BaseException):
    """Not an Exception (as gevent's Timeout, func_timeout's FunctionTimedOut)."""


@pytest.mark.parametrize("failing", ["one item", "every item"])
def test_a_base_exception_from_the_function_ends_the_run(failing: str) -> None:
    """Its failure is counted on the thread and acted on as the run ends with it: queued
    calls are not withdrawn and re-admitted for ever, nor do workers wait for an outcome."""

    def fn(item: int) -> int:
        time.sleep(0.005)
        if failing == "every item" or item == 3:
            raise Boom(item)
        return item

    raised: list[BaseException] = []
    with ThreadedBatchRunner(fn, batch_size=2, retries=1, progress=False) as runner:

        def run() -> None:
            try:
                runner.run(range(30))
            except BaseException as exc:  # what the run raised is the check
                raised.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive()
        count = runner._pool.failures
        assert count.raised == count.handled
    assert len(raised) == 1 and isinstance(raised[0], Boom)


def test_a_retry_withdrawn_by_a_stop_leaves_nothing_retrying() -> None:
    """Item 2's retry (after a 10 ms 429 pause) waits in the queue when item 1's 401 stops
    the run: withdrawn, the item ends with its 429, and no counter is left up."""
    seen: set[int] = set()
    lock = threading.Lock()

    def fn(item: int) -> int:
        with lock:
            first = item not in seen
            seen.add(item)
        if item == 2 and first:
            raise APIError(429, {"retry-after": "0.01"})
        if item == 1:
            time.sleep(0.3)
            raise APIError(401)
        time.sleep(0.1)
        return item

    with ThreadedBatchRunner(fn, batch_size=2, retries=3, progress=False) as runner:
        result = runner.run(range(40))
    stats = result.stats
    assert (stats.in_flight, stats.queued, stats.retrying) == (0, 0, 0)
    assert stats.calls == sum(o.attempts for o in result.outcomes)


def test_a_withdrawn_call_gives_the_pacer_back_no_budget_a_429_took() -> None:
    """A 429 empties the header buckets, the admitted calls' share with them; the queued
    calls it withdraws must not put their cost back on top (the server said none left)."""
    pacer = HeaderBudget()
    one = Cost(1)
    first, _ = pacer.admit(one, 0.0)
    pacer.observe(first, RateInfo(limit_requests=20, remaining_requests=19,
                                  reset_requests=3.0), 0.1)
    seqs = [pacer.admit(one, 0.2)[0] for _ in range(8)]
    assert all(seq is not None for seq in seqs)
    pacer.rate_limited(seqs[0], 0.3, 1.0)
    for seq in seqs[2:]:
        assert seq is not None
        pacer.cancel(seq, 0.3)
    assert pacer.admit(one, 0.3)[0] is None
