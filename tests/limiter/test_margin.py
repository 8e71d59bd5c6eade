"""The margin that follows the observed delay between a grant and the server's count
(issue 16 item 1): small on a quiet machine, wider under load and after a 429, and a
thread's first call does not cost a whole latency."""

from __future__ import annotations

import heapq
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from throttlepool import ThreadedBatchRunner
from throttlepool.limiter import Limit, Permit, RateLimiter
from throttlepool.limiter.margin import DEFAULT_FLOOR
from throttlepool.testing import FakeClock


def test_a_runner_on_a_quiet_machine_counts_each_admission_a_few_ms_past_its_window() -> None:
    runner = ThreadedBatchRunner(lambda x: x, rps=10, progress=False)
    assert runner.limiter.backend.margin == DEFAULT_FLOOR  # was a fixed 100 ms


def test_the_margin_widens_with_the_observed_hand_off_delay_and_after_a_429() -> None:
    clock = FakeClock()
    limiter = RateLimiter("200/2s", margin=None, clock=clock)  # ceiling: 5 % of 2 s
    permit = limiter.acquire()
    clock.advance(0.03)  # the worker thread started the call 30 ms after the grant
    limiter.call_started(permit)
    assert abs(limiter.backend.margin - (DEFAULT_FLOOR + 0.03)) < 1e-12
    limiter.widen_margin()  # a 429 despite it: the floor doubles
    assert abs(limiter.backend.margin - (2 * DEFAULT_FLOOR + 0.03)) < 1e-12


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


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 12),
    window=st.sampled_from([1.0, 2.0, 6.0]),  # a first call answers within its window
    slots=st.integers(1, 8),
    server_time=st.floats(0.01, 0.3),
    max_lag=st.floats(0.0, 0.02),
    max_cold=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_the_server_never_counts_more_than_the_limit_in_any_window(
    limit: int, window: float, slots: int, server_time: float, max_lag: float,
    max_cold: float, seed: int,
) -> None:
    """A model of the engine: ``slots`` worker threads, each reserving when it is free. A
    call starts a random hand-off delay (lag) after its grant; the client's unobserved work
    before and after the server (send plus way back) is at most the floor plus that lag (the
    same load slows both); a thread's first call spends up to ``max_cold`` more connecting
    before the server counts it. The server counts each call on arrival in an exact sliding
    window: it never holds more than the limit. (A first call still open a whole window
    after it started is not covered: see RateLimiter._hold_open_first_calls.)"""
    rng = random.Random(seed)
    clock = FakeClock()
    limiter = RateLimiter(Limit(limit, window), margin=None, clock=clock)
    arrivals: list[float] = []
    events: list[tuple[float, int, str, int]] = []  # (time, order, kind, slot)
    order = 0
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
    lags: dict[int, float] = {}

    def grant_admitted() -> None:  # the limiter wakes a waiter whose time moved earlier
        nonlocal order
        for slot in sorted(waiting):
            permit = state[slot][0]
            if limiter.admitted(permit):
                waiting.discard(slot)
                lags[slot] = rng.uniform(0.0, max_lag)
                order += 1
                heapq.heappush(events, (clock.now() + lags[slot], order, "start", slot))

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
            unobserved = rng.uniform(0.0, DEFAULT_FLOOR + lags[slot])
            send = rng.uniform(0.0, unobserved)
            cold = rng.uniform(0.0, max_cold) if first else 0.0
            arrivals.append(started + cold + send)
            state[slot] = (permit, started, first)
            order += 1
            end = started + cold + unobserved + server_time
            heapq.heappush(events, (end, order, "end", slot))
        else:
            _, started, first = state[slot]
            limiter.call_ended(permit, started, first_on_thread=first)
            warm.add(slot)
            if remaining > 0:
                waiting.add(slot)
            reserve(slot)
        grant_admitted()
    assert _max_in_window(arrivals, window) <= limit
