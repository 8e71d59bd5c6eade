"""The margin that follows the observed delay between a grant and the server's count
(issue 16 item 1): small on a quiet machine, wider under load and after a 429, and a
thread's first call does not cost a whole latency."""

from __future__ import annotations

import heapq
import random
from pathlib import Path

import pytest
from _server_models import most_in_window
from hypothesis import example, given, settings
from hypothesis import strategies as st

from throttlepool import ThreadedBatchRunner
from throttlepool.limiter import Limit, Permit, RateLimiter, limiter_from_url
from throttlepool.limiter.margin import DEFAULT_FLOOR, LOAD_FLOOR_MIN, SHARED_FLOOR
from throttlepool.testing import FakeClock


def test_a_runner_on_a_quiet_machine_counts_each_admission_a_few_ms_past_its_window() -> None:
    runner = ThreadedBatchRunner(lambda x: x, rps=10, progress=False)
    assert runner.limiter.backend.margin == DEFAULT_FLOOR  # was a fixed 100 ms



def test_an_in_process_limiter_pays_10_ms_at_each_window_boundary() -> None:
    """The in-process floor is 10 ms (it was 20 ms, which the 1 s benchmark paid at each of
    its 9 window boundaries: the arrival bound was measured to miss 1.4 ms at most under two
    CPU burners, see limiter.margin): the call after a full window waits 10 ms past it."""
    clock = FakeClock()
    limiter = RateLimiter("12/1s", margin=None, clock=clock)
    for _ in range(12):
        assert limiter.acquire().admit_at == 0.0
    assert abs(limiter.reserve().admit_at - 1.01) < 1e-12
    in_memory = limiter_from_url("memory://", ["12/1s"], margin=None)
    assert in_memory.margin.floor == in_memory.backend.margin == 0.01


def test_processes_sharing_through_sqlite_keep_the_shared_floor(tmp_path: Path) -> None:
    """SQLite holds open calls and counts each answered call from its own arrival bound, as
    the in-process log and Redis do, through a write to the file: it keeps the 20 ms floor
    measured for shared budgets (it had 100 ms from when it counted a call from its start
    only, which cost every window boundary of shared-1s that long)."""
    on_file = limiter_from_url(f"sqlite:///{tmp_path}/l.sqlite", ["10/second"], margin=None)
    assert on_file.margin.floor == on_file.backend.margin == SHARED_FLOOR == 0.02


def test_processes_sharing_through_redis_keep_the_shared_floor() -> None:
    """Redis counts each call from its own arrival bound, as the in-process log does, through
    a round trip: it keeps the 20 ms floor measured for shared budgets (it had 100 ms, which
    cost every window boundary of shared-1s that long)."""
    pytest.importorskip("redis")
    on_redis = limiter_from_url("redis://127.0.0.1:1/0", ["10/second"], margin=None)
    assert on_redis.margin.floor == on_redis.backend.margin == SHARED_FLOOR == 0.02


def _call(limiter: RateLimiter, clock: FakeClock, lag: float, duration: float) -> Permit:
    permit = limiter.acquire()
    clock.advance(lag)
    started = limiter.call_started(permit)
    clock.advance(duration)
    limiter.call_ended(permit, started, first_on_thread=False)
    return permit


def test_a_late_hand_off_lengthens_its_own_entry_only_and_a_429_widens_the_floor() -> None:
    """A call handed off 30 ms late counts from its start plus those 30 ms (its client work
    before the server grew with them); the call after it, handed off at once, counts from
    its start: the margin stays the floor (it was floor + the largest recent hand-off delay,
    which every entry paid at every window boundary). (A fixed floor: the default one follows
    the hand-off delays, see test_margin_load.)"""
    clock = FakeClock()
    limiter = RateLimiter("2/1s", margin=DEFAULT_FLOOR, clock=clock)
    late = _call(limiter, clock, lag=0.03, duration=0.1)
    assert abs(late.admit_at - 0.06) < 1e-12  # started at 0.03, + its own 30 ms
    prompt = _call(limiter, clock, lag=0.0, duration=0.1)
    assert abs(prompt.admit_at - 0.13) < 1e-12
    assert limiter.backend.margin == DEFAULT_FLOOR
    assert abs(limiter.reserve().admit_at - (0.06 + 1.0 + DEFAULT_FLOOR)) < 1e-12
    limiter.widen_margin()  # a 429 despite it: the floor doubles
    assert abs(limiter.backend.margin - 2 * DEFAULT_FLOOR) < 1e-12


def test_a_first_call_is_placed_past_the_fastest_calls_own_hand_off_delay() -> None:
    """A first call's bound (its answer less the fastest call's duration) leaves out the
    fastest call's own way to the server, which its hand-off delay widens: the first call
    counts from start + extra delay + that hand-off delay (the margin no longer carries the
    largest recent delay, which covered it)."""
    clock = FakeClock()
    limiter = RateLimiter("3/1s", margin=None, clock=clock)
    first = limiter.acquire()
    s1 = limiter.call_started(first, first_on_thread=True)
    clock.set(0.3)
    limiter.call_ended(first, s1, first_on_thread=True)
    _call(limiter, clock, lag=0.04, duration=0.1)  # the fastest warm call, handed off late
    assert abs(first.admit_at - (0.2 + 0.04)) < 1e-12


def test_a_threads_first_call_counts_from_its_start_plus_its_extra_delay() -> None:
    """Two first calls take 0.25 s and 0.30 s, a warm call 0.10 s: the server takes at most
    0.10 s after its count, so the first calls count from 0.15 s and 0.20 s, not from their
    answers (0.25 s, 0.30 s), and the next admission comes 0.1 s sooner."""
    clock = FakeClock()
    limiter = RateLimiter("3/second", margin=0.0, clock=clock)
    a, b = limiter.acquire(), limiter.acquire()
    sa = limiter.call_started(a, first_on_thread=True)
    sb = limiter.call_started(b, first_on_thread=True)
    clock.set(0.25)
    limiter.call_ended(a, sa, first_on_thread=True)
    c = limiter.acquire()  # the thread of a, now warm
    sc = limiter.call_started(c)
    clock.set(0.30)
    limiter.call_ended(b, sb, first_on_thread=True)
    clock.set(0.35)
    limiter.call_ended(c, sc, first_on_thread=False)
    d = limiter.reserve()
    assert abs(d.admit_at - 1.15) < 1e-9


def _run_model(limit: int, window: float, slots: int, server_time: float,
               server_jitter: float, lags: tuple[float, float], shift_at: int,
               max_cold: float, seed: int) -> int:
    """A model of the engine; returns the most calls the server counted in one window.

    ``slots`` worker threads each reserve when free. A call starts a random hand-off delay
    (lag) after its grant, up to ``lags[0]`` for the first ``shift_at`` calls and ``lags[1]``
    after (the machine's load changes); the client's unobserved work before and after the
    server (send plus way back) is at most the least floor plus its lag (the same load
    slows both); a thread's first call spends up to ``max_cold`` more connecting before the
    server counts it. The server stamps a call on arrival, in an exact sliding window, and
    spends ``server_time`` plus up to ``server_jitter`` on it before answering. (A first call
    still open a whole window after it started is not covered: see
    RateLimiter._hold_open_calls.)"""
    rng = random.Random(seed)
    clock = FakeClock()
    limiter = RateLimiter(Limit(limit, window), margin=None, clock=clock)
    arrivals: list[float] = []
    events: list[tuple[float, int, str, int]] = []  # (time, order, kind, slot)
    order = calls = 0
    state: dict[int, tuple[Permit, float, bool]] = {}
    warm: set[int] = set()
    remaining = 4 * limit + 3

    def reserve(slot: int) -> None:
        nonlocal order, remaining
        if remaining <= 0:
            return
        remaining -= 1
        permit = limiter.reserve()
        order += 1
        heapq.heappush(events, (permit.admit_at, order, "grant", slot))
        state[slot] = (permit, 0.0, False)

    for slot in range(slots):
        reserve(slot)
    waiting: set[int] = set(state)
    lag_of: dict[int, float] = {}

    def grant_admitted() -> None:  # the limiter wakes a waiter whose time moved earlier
        nonlocal order, calls
        for slot in sorted(waiting):
            permit = state[slot][0]
            if limiter.admitted(permit):
                waiting.discard(slot)
                lag_of[slot] = rng.uniform(0.0, lags[0] if calls < shift_at else lags[1])
                calls += 1
                order += 1
                heapq.heappush(events, (clock.now() + lag_of[slot], order, "start", slot))

    while events:
        at, _, kind, slot = heapq.heappop(events)
        clock.set(max(at, clock.now()))
        permit, _, _ = state[slot]
        if kind == "grant":
            if slot in waiting and not limiter.admitted(permit):  # moved later meanwhile
                order += 1
                heapq.heappush(events, (permit.admit_at, order, "grant", slot))
        elif kind == "start":
            first = slot not in warm
            started = limiter.call_started(permit, first_on_thread=first)
            # The floor follows the load down to its least (limiter.margin): the unobserved
            # work is at most that plus the call's own hand-off delay (measured: 1.4 ms).
            unobserved = rng.uniform(0.0, LOAD_FLOOR_MIN + lag_of[slot])
            send = rng.uniform(0.0, unobserved)
            cold = rng.uniform(0.0, max_cold) if first else 0.0
            arrivals.append(started + cold + send)
            state[slot] = (permit, started, first)
            order += 1
            server = server_time + rng.uniform(0.0, server_jitter)
            heapq.heappush(events, (started + cold + unobserved + server, order, "end", slot))
        else:
            _, started, first = state[slot]
            limiter.call_ended(permit, started, first_on_thread=first)
            warm.add(slot)
            if remaining > 0:
                waiting.add(slot)
            reserve(slot)
        grant_admitted()
    return most_in_window(arrivals, window)


_LAGS = st.tuples(st.floats(0.0, 0.2), st.floats(0.0, 0.2))


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 12),
    window=st.sampled_from([1.0, 2.0, 6.0]),
    slots=st.integers(1, 8),
    server_time=st.floats(0.01, 0.3),
    server_jitter=st.floats(0.0, 0.3),
    lags=_LAGS,
    shift_at=st.integers(0, 40),
    seed=st.integers(0, 2**16),
)
# Found by hypothesis before each call counted from its start plus its own hand-off delay:
# the margin's observed term was capped at 5 % of the window (50 ms here), and a call
# handed off 0.1 s late left our window before the server's.
@example(limit=1, window=1.0, slots=5, server_time=0.25, server_jitter=0.0,
         lags=(0.0, 0.125), shift_at=0, seed=1021)
# Found against a margin of the floor plus the fastest call's hand-off delay (branch wt-p16b):
# with the server's time varying by 0.25 s the answer bound alone let a window over.
@example(limit=3, window=1.0, slots=2, server_time=0.25, server_jitter=0.25,
         lags=(0.125, 0.0), shift_at=1, seed=318)
def test_the_server_never_counts_more_than_the_limit_whatever_its_time_and_our_load(
    limit: int, window: float, slots: int, server_time: float, server_jitter: float,
    lags: tuple[float, float], shift_at: int, seed: int,
) -> None:
    """Threads with no connecting to do: the server's time varies by up to 0.3 s and the
    hand-off delays shift from one range to another mid-run; no window ever holds more than
    the limit."""
    assert _run_model(limit, window, slots, server_time, server_jitter, lags, shift_at,
                      0.0, seed) <= limit


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 12),
    window=st.sampled_from([1.0, 2.0, 6.0]),  # a first call answers within its window
    slots=st.integers(1, 8),
    server_time=st.floats(0.01, 0.3),
    server_jitter=st.floats(0.0, LOAD_FLOOR_MIN / 2),
    lags=_LAGS,
    shift_at=st.integers(0, 40),
    max_cold=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
# Found by hypothesis before the fastest call's hand-off delay placed first calls later (the
# margin no longer carries the largest recent delay).
@example(limit=2, window=1.0, slots=1, server_time=0.25, server_jitter=0.0,
         lags=(0.125, 0.0), shift_at=2, max_cold=0.5, seed=1)
@example(limit=4, window=1.0, slots=8, server_time=0.25, server_jitter=0.0,
         lags=(0.0, 0.1875), shift_at=0, max_cold=0.5, seed=560)
def test_the_server_never_counts_more_than_the_limit_with_cold_first_calls(
    limit: int, window: float, slots: int, server_time: float, server_jitter: float,
    lags: tuple[float, float], shift_at: int, max_cold: float, seed: int,
) -> None:
    """A thread's first call connects for up to 0.5 s before the server sees it. Its
    arrival is bounded by its answer less the fastest call's duration, which holds while the
    server's own time varies by less than half the floor between calls (more is a known
    limit: see AnsweredArrivals.place_first_calls)."""
    assert _run_model(limit, window, slots, server_time, server_jitter, lags, shift_at,
                      max_cold, seed) <= limit
