"""The default floor follows the load the limiter observes (issue 16): small while calls are
handed off at once, wider when the hand-off delays grow, never below what a 429 widened it
to; a floor the user gave stays fixed."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from throttlepool.limiter import Permit, RateLimiter, limiter_from_url
from throttlepool.limiter.margin import (
    DEFAULT_FLOOR,
    FIRST_WIDENING,
    LOAD_FLOOR_FACTOR,
    LOAD_FLOOR_MAX,
    LOAD_FLOOR_MIN,
    LOAD_WEIGHT,
    AdmissionMargin,
)
from throttlepool.testing import FakeClock


def _calls(limiter: RateLimiter, clock: FakeClock, lag: float, n: int) -> list[Permit]:
    """``n`` warm calls, each handed off ``lag`` after its grant, answering 50 ms later."""
    permits = []
    for _ in range(n):
        permit = limiter.acquire()
        clock.set(max(clock.now(), permit.admit_at) + lag)
        started = limiter.call_started(permit)
        clock.advance(0.05)
        limiter.call_ended(permit, started, first_on_thread=False)
        permits.append(permit)
    return permits


def test_calls_handed_off_at_once_pay_the_least_floor_at_a_window_boundary() -> None:
    """Hand-off delays of 1 ms (a quiet machine): the floor falls to its least (5 ms was
    tried and saw a 429, see limiter.margin; the least is the fixed 10 ms for now)."""
    clock = FakeClock()
    limiter = RateLimiter("12/1s", margin=None, clock=clock)
    permits = _calls(limiter, clock, 0.001, 12)
    assert limiter.margin.floor == limiter.backend.margin == LOAD_FLOOR_MIN
    first_counted = permits[0].admit_at
    assert abs(limiter.reserve().admit_at - (first_counted + 1.0 + LOAD_FLOOR_MIN)) < 1e-9


def test_the_floor_widens_with_the_hand_off_delays_and_falls_a_window_after_them() -> None:
    """Hand-off delays of 8 ms (two CPU burners' typical) widen the floor to 12 ms; 40 ms
    to its ceiling. Calls handed off at once afterwards leave it there for a whole window
    (entries admitted under the load still count), then it falls back."""
    clock = FakeClock()
    limiter = RateLimiter("100/1s", margin=None, clock=clock)
    _calls(limiter, clock, 0.008, 3)
    assert abs(limiter.backend.margin - 0.012) < 1e-12
    _calls(limiter, clock, 0.04, 3)
    assert limiter.backend.margin == LOAD_FLOOR_MAX
    _calls(limiter, clock, 0.0, 3)
    assert limiter.backend.margin == LOAD_FLOOR_MAX  # the loaded entries still count
    clock.advance(1.1)
    _calls(limiter, clock, 0.0, 80)
    assert limiter.backend.margin == LOAD_FLOOR_MIN


def test_a_429_widening_wins_over_a_quiet_machine() -> None:
    clock = FakeClock()
    limiter = RateLimiter("100/1s", margin=None, clock=clock)
    _calls(limiter, clock, 0.0, 3)
    assert limiter.backend.margin == LOAD_FLOOR_MIN
    limiter.widen_margin()
    assert limiter.backend.margin == FIRST_WIDENING
    clock.advance(2.0)
    _calls(limiter, clock, 0.0, 50)
    assert limiter.backend.margin == FIRST_WIDENING
    limiter.widen_margin()
    assert limiter.backend.margin == 2 * FIRST_WIDENING  # above the load's ceiling too


def test_a_floor_the_user_gave_stays_fixed_whatever_the_hand_off_delays() -> None:
    clock = FakeClock()
    limiter = RateLimiter("100/1s", margin=0.01, clock=clock)
    _calls(limiter, clock, 0.0, 5)
    assert limiter.backend.margin == 0.01
    _calls(limiter, clock, 0.05, 5)
    assert limiter.backend.margin == 0.01
    assert not limiter.margin.follows_load


def test_an_in_memory_url_limiter_follows_the_load_unless_given_a_floor() -> None:
    assert limiter_from_url("memory://", ["12/1s"], margin=None).margin.follows_load
    assert not limiter_from_url("memory://", ["12/1s"], margin=0.01).margin.follows_load


_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 0.3)),  # (lag, seconds since the last)
        st.just("429"),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(events=_EVENTS, period=st.sampled_from([0.5, 1.0, 6.0, 60.0]))
def test_the_floor_stays_within_its_bounds_and_never_below_a_widening(
    events: list[tuple[float, float] | str], period: float,
) -> None:
    margin = AdmissionMargin([period], DEFAULT_FLOOR, follows_load=True)
    now = widened = 0.0
    for event in events:
        if event == "429":
            margin.widen()
            widened = margin.floor
        else:
            lag, gap = event
            now += gap
            margin.handed_off(lag, now)
            assert margin.floor >= LOAD_FLOOR_MIN
            assert margin.floor <= max(LOAD_FLOOR_MAX, widened)
        assert margin.floor >= widened
        assert margin.value == margin.floor


def _timed_call(limiter: RateLimiter, clock: FakeClock, lag: float, duration: float
                ) -> tuple[Permit, float]:
    permit = limiter.acquire()
    clock.set(max(clock.now(), permit.admit_at) + lag)
    started = limiter.call_started(permit)
    clock.advance(duration)
    limiter.call_ended(permit, started, first_on_thread=False)
    return permit, started


def test_a_wide_floor_leaves_no_slack_that_a_floor_falling_later_would_not_cover() -> None:
    """At a 20 ms floor, a fall of the fastest duration by 4 ms (under a quarter of it)
    still moves the calls bounded with the old fastest later: the floor may fall to its least
    before their entries leave, and 4 ms early on a 5 ms floor would leave 1 ms. (Seen
    before: a closest approach of 1.3 ms under two CPU burners.)"""
    clock = FakeClock()
    limiter = RateLimiter("100/1s", margin=None, clock=clock)
    _timed_call(limiter, clock, 0.04, 0.2)  # a loaded hand-off: the floor widens
    assert limiter.backend.margin == LOAD_FLOOR_MAX
    a, a_start = _timed_call(limiter, clock, 0.0, 0.1)  # the fastest: 0.1 s
    assert abs(a.admit_at - a_start) < 1e-12
    _timed_call(limiter, clock, 0.0, 0.096)  # the server takes 4 ms less at least
    assert abs(a.admit_at - (a_start + 0.004)) < 1e-9


_QUIET_EVENTS = st.lists(
    st.one_of(
        # Mostly hand-off delays around the quiet threshold (6.7 ms), some loaded ones.
        st.tuples(st.one_of(st.floats(0.0, 0.008), st.floats(0.0, 0.05)), st.floats(0.0, 2.0)),
        st.just("429"),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(events=_QUIET_EVENTS, period=st.sampled_from([0.5, 1.0, 6.0]))
def test_the_floor_is_the_rule_applied_to_every_delay_fed(
    events: list[tuple[float, float] | str], period: float,
) -> None:
    """The floor equals its rule recomputed from every delay fed: the factor times the
    largest average within the longest window (plus the largest floor), in 1 ms steps,
    within its bounds, never below a widening. (The quiet case skips the work.)"""
    margin = AdmissionMargin([period], DEFAULT_FLOOR, follows_load=True)
    horizon = period + LOAD_FLOOR_MAX
    averages: list[tuple[float, float]] = []
    now = widened = 0.0
    load = -1.0
    for event in events:
        if event == "429":
            margin.widen()
            widened = margin.floor
            continue
        lag, gap = event
        now += gap
        load = lag if load < 0 else load + LOAD_WEIGHT * (lag - load)
        averages.append((now, load))
        margin.handed_off(lag, now)
        peak = max(a for t, a in averages if t >= now - horizon)
        steps = math.ceil(LOAD_FLOOR_FACTOR * peak / 0.001 - 1e-6)
        rule = max(min(max(steps * 0.001, LOAD_FLOOR_MIN), LOAD_FLOOR_MAX), widened)
        assert margin.floor == rule
