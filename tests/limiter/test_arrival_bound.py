"""A call counts from the latest instant the server may have stamped it (issue 16 item 1).

Counted from its start plus the margin's floor alone, a call whose way up took longer than
the floor (tens of ms now and then on a loaded machine) leaves our window while the server
still counts it. Its answer bounds its arrival: it spent the fastest call's duration at least
on the server and on the way back. A call without an answer a whole window on counts from
now until it answers. Fake clock; calls are not their thread's first.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from throttlepool.limiter import Permit, RateLimiter
from throttlepool.limiter.limits import build_limits
from throttlepool.limiter.sliding import SlidingWindowLog
from throttlepool.limiter.ticket import Ticket
from throttlepool.testing import FakeClock

FLOOR = 0.02


def _start(limiter: RateLimiter) -> tuple[Permit, float]:
    permit = limiter.acquire()
    return permit, limiter.call_started(permit)


def _end(limiter: RateLimiter, call: tuple[Permit, float]) -> None:
    limiter.call_ended(*call, first_on_thread=False)


def test_a_call_slow_on_its_way_up_counts_from_where_its_answer_bounds_its_arrival() -> None:
    """Two calls start at 0: one answers in 0.10 s (the fastest), one in 0.25 s, so the server
    may have stamped the second as late as 0.15 s. Counted from 0 both would leave the 2/s
    window at 1.02 s and two new calls there would put three in the server's window
    (0.05, 1.05]; the second slot must wait until 0.15 + 1 + floor."""
    clock = FakeClock()
    limiter = RateLimiter("2/second", margin=FLOOR, clock=clock)
    fast, slow = _start(limiter), _start(limiter)
    clock.set(0.10)
    _end(limiter, fast)
    clock.set(0.25)
    _end(limiter, slow)
    clock.set(1.05)
    assert limiter.try_acquire() is not None  # the fast call's slot
    assert limiter.try_acquire() is None
    assert abs(limiter.reserve().admit_at - (0.15 + 1.0 + FLOOR)) < 1e-9


def test_a_call_open_for_a_whole_window_counts_from_now_until_it_answers() -> None:
    """A 0.1 s call shows the fastest; the next, started at 1.02 s, has no answer at 2.5 s:
    it may still be on its way, so nothing more goes (counted from its start it would have
    left the 1/s window at 2.04 s). Answered at 2.7 s after 1.68 s, it counts from
    1.02 + 1.58 = 2.6 s."""
    clock = FakeClock()
    limiter = RateLimiter("1/second", margin=FLOOR, clock=clock)
    fast = _start(limiter)
    clock.set(0.1)
    _end(limiter, fast)
    clock.set(1.0 + FLOOR)
    slow = _start(limiter)
    clock.set(2.5)
    assert limiter.try_acquire() is None
    clock.set(2.7)
    _end(limiter, slow)
    clock.set(2.6 + 1.0 + FLOOR / 2)
    assert limiter.try_acquire() is None
    clock.set(2.6 + 1.0 + FLOOR)
    assert limiter.try_acquire() is not None


def test_a_limiter_without_limits_never_holds_an_open_call() -> None:
    """No window at all (a run with no limit configured yet): an open call has nothing to be
    held in, and the next admission must not spin holding it (it did, forever)."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    first = _start(limiter)
    clock.set(0.5)
    second = _start(limiter)  # holds open calls first: the first is still open
    assert second[0].admit_at <= 0.5
    _end(limiter, first)
    _end(limiter, second)


class _SlowHold(SlidingWindowLog):
    """A shared store whose hold waits ``wait`` seconds (an SQLite write queued behind
    other processes' transactions on the file's lock)."""

    def __init__(self, clock: FakeClock, wait: float) -> None:
        super().__init__(build_limits(["1/second"]), margin=FLOOR)
        self.clock, self.wait = clock, wait

    def hold(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        self.clock.advance(self.wait)
        return super().hold(ticket, now)


def test_a_call_starts_when_the_shared_store_has_taken_its_hold() -> None:
    """Under load an SQLite hold waited tens of ms for the file's lock before the call could
    leave; counted from before that wait, the call left our window that much before the
    server's (429s at a 20 ms floor beside CPU burners). A 0.1 s call shows the fastest; the
    next is granted at 1.02 s, its hold takes 0.08 s, so it starts at 1.10 s and may reach
    the server then: its slot frees at 1.10 + 1 + floor at the earliest, not 1.02 + 1."""
    clock = FakeClock()
    store = _SlowHold(clock, 0.0)
    limiter = RateLimiter(backend=store, margin=FLOOR, clock=clock)
    fast = _start(limiter)
    clock.set(0.1)
    _end(limiter, fast)
    clock.set(1.0 + FLOOR)
    store.wait = 0.08
    permit, started = _start(limiter)
    assert abs(started - 1.10) < 1e-9
    clock.set(1.20)  # answered after 0.1 s: the fastest duration, so it arrived at its start
    _end(limiter, (permit, started))
    clock.set(2.05)
    assert limiter.try_acquire() is None
    assert limiter.reserve().admit_at >= 1.10 + 1.0 + FLOOR - 1e-9


class _Paused:
    """The process stood still over ``span`` (a collection of the oldest generation)."""

    def __init__(self, began: float, ended: float) -> None:
        self.span = (began, ended)
        self.last_ended = ended

    def between(self, start: float, end: float) -> float:
        return max(0.0, min(self.span[1], end) - max(self.span[0], start))


def test_a_pause_during_a_call_delays_its_count_and_teaches_no_fastest_duration() -> None:
    """A 150 ms collection stalled a warm call after its start (unseen by its hand-off
    delay): the server stamped it 184 ms after our start, 19 ms before its answer, and as
    the fastest call it placed every thread's first call back to its start, 70-170 ms before
    the server counted them (one 429 in 6 runs of test_pacing's known limit). The paused
    call counts from its start plus the pause, and the first call stays at its answer."""
    clock = FakeClock()
    limiter = RateLimiter("2/second", margin=FLOOR, clock=clock)
    limiter.pauses = _Paused(0.01, 0.16)
    first = limiter.acquire()
    s1 = limiter.call_started(first, first_on_thread=True)
    warm = _start(limiter)
    clock.set(0.20)
    _end(limiter, warm)
    assert limiter.margin.fastest is None  # the paused duration taught nothing
    assert warm[0].admit_at >= 0.15 - 1e-9  # from its start (0) plus the pause (0.15)
    clock.set(0.25)
    limiter.call_ended(first, s1, first_on_thread=True)
    assert abs(first.admit_at - 0.25) < 1e-9  # still counted from its answer


def test_a_stalled_warm_call_places_no_call_early_once_a_faster_call_answers() -> None:
    """Figures from a captured 429 beside CPU burners: a thread's first call starts at 0, the
    server counts it at 0.065 s and it answers at 0.09 s; the first warm call starts at 0.03 s
    but its thread is descheduled 50 ms before the send (no hand-off delay shows it): counted
    at 0.08 s, answered at 0.12 s. As the fastest call (0.09 s) it places the first call at its
    start, 65 ms before the server's count, and bounds itself at its start, 50 ms early. The
    next warm call takes 0.03 s: the server's time plus the way back is at most that, so both
    move later to their answers less 0.03 s (0.06 s and 0.09 s), before their entries leave
    the window (counted from 0 the next slot would open at 1.02 s, a fourth call in the
    server's window (0.065, 1.065])."""
    clock = FakeClock()
    limiter = RateLimiter("3/second", margin=FLOOR, clock=clock)
    first = limiter.acquire()
    s1 = limiter.call_started(first, first_on_thread=True)
    clock.set(0.03)
    stalled = _start(limiter)
    clock.set(0.09)
    limiter.call_ended(first, s1, first_on_thread=True)
    clock.set(0.12)
    _end(limiter, stalled)
    fast = _start(limiter)
    clock.set(0.15)
    _end(limiter, fast)
    assert first.admit_at >= 0.06 - 1e-9
    assert stalled[0].admit_at >= 0.09 - 1e-9
    assert limiter.reserve().admit_at >= 0.06 + 1.0 + FLOOR - 1e-9


def test_falls_of_the_fastest_duration_below_a_millisecond_do_not_re_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no floor (``RateLimiter``'s default margin) a quarter of the floor is 0: every
    new fastest duration, each 10 us below the last, walked and restamped every answered call
    in the window, so 300 calls cost tens of thousands of restamps (a no-op loop spent 500 us
    per item there). Falls under a millisecond are below any stamp's error and re-bound
    nothing; the first re-bound after a millisecond's fall still moves them."""
    restamps = 0
    original = SlidingWindowLog.restamp

    def counting(self: SlidingWindowLog, *args: object, **kwargs: object) -> object:
        nonlocal restamps
        restamps += 1
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SlidingWindowLog, "restamp", counting)
    clock = FakeClock()
    limiter = RateLimiter("100000/minute", clock=clock)
    calls = 300
    for i in range(calls):
        call = _start(limiter)
        clock.advance(0.01 - i * 1e-5)
        _end(limiter, call)
    assert restamps < 4 * calls
