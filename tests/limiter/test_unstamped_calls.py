"""A warm call counted from its grant until its answer (one restamp a call, not two) while
nothing is queued in our own log: it must change no admission.

The property runs the same steps through two limiters on one fake clock: one that counts such
calls from their grant (the default), one that restamps every call at its start (``_local``
unset, as with a backend given). After every step, every reservation's admission time and
every answered call's stamp must be the same in both (an open call may count from its grant
in the first): queued reservations, open calls of every hand-off delay, first calls, long
calls held open, awaited calls (restamped after their answer), settles, cancels (of open
calls too), try_acquire, pauses and margins that widen and fall.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from throttlepool.limiter import REQUESTS, TOKENS, Cost, Limit, Permit, RateLimiter
from throttlepool.testing import FakeClock

STEP = 1 / 512  # dyadic: every sum of times is exact

limit_sets = st.lists(
    st.one_of(
        st.builds(Limit, st.integers(1, 4).map(float), st.sampled_from([0.25, 0.5, 1.0]),
                  st.just(REQUESTS)),
        st.builds(Limit, st.sampled_from([64.0, 256.0]), st.sampled_from([0.5, 1.0]),
                  st.just(TOKENS)),
    ), min_size=1, max_size=2)

step = st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 12)),   # hand-off delays around the margin
    st.tuples(st.just("advance"), st.integers(0, 300)),  # up to a window and more
    st.tuples(st.just("reserve"), st.integers(1, 64)),
    st.tuples(st.just("start"), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("start"), st.integers(0, 7), st.just(False)),
    st.tuples(st.just("end"), st.integers(0, 7)),
    st.tuples(st.just("end_awaited"), st.integers(0, 7)),  # answered, then restamped
    st.tuples(st.just("cancel_open"), st.integers(0, 7)),
    st.tuples(st.just("try"), st.integers(1, 64)),
    st.tuples(st.just("settle"), st.integers(0, 15), st.integers(0, 64)),
    st.tuples(st.just("cancel"), st.integers(0, 7)),
    st.tuples(st.just("widen"),),
    st.tuples(st.just("pause"), st.integers(1, 64)),
)


class _Run:
    """One limiter and the state of its calls, driven step by step."""

    def __init__(self, limits: list[Limit], margin: float | None, clock: FakeClock,
                 restamp_at_start: bool) -> None:
        self.limiter = RateLimiter(*limits, margin=margin, clock=clock)
        if restamp_at_start:
            self.limiter._local = None
        self.clock = clock
        self.waiting: list[Permit] = []
        self.open: list[tuple[Permit, float, bool]] = []
        self.ended: list[Permit] = []
        self.all: list[Permit] = []

    def do(self, s: tuple[object, ...]) -> None:
        lim, now = self.limiter, self.clock.now()
        kind = s[0]
        if kind == "reserve":
            permit = lim.reserve(Cost(requests=1, tokens=float(s[1])))  # type: ignore[arg-type]
            self.waiting.append(permit)
            self.all.append(permit)
        elif kind == "start":
            due = [p for p in self.waiting if lim.admitted(p)]
            if due:
                permit = due[int(s[1]) % len(due)]  # type: ignore[call-overload]
                self.waiting.remove(permit)
                first = bool(s[2])
                self.open.append((permit, lim.call_started(permit, first_on_thread=first),
                                  first))
        elif kind == "end" and self.open:
            permit, started, first = self.open.pop(int(s[1]) % len(self.open))  # type: ignore[call-overload]
            lim.call_ended(permit, started, first_on_thread=first)
            self.ended.append(permit)
        elif kind == "end_awaited" and self.open:  # an awaited call's end (_calls.py)
            permit, started, first = self.open.pop(int(s[1]) % len(self.open))  # type: ignore[call-overload]
            lim.call_ended(permit, started, first_on_thread=first)
            lim.restamp(permit)
            self.ended.append(permit)
        elif kind == "cancel_open" and self.open:
            lim.cancel(self.open.pop(int(s[1]) % len(self.open))[0])  # type: ignore[call-overload]
        elif kind == "try":
            got = lim.try_acquire(Cost(requests=1, tokens=float(s[1])))  # type: ignore[arg-type]
            if got is not None:
                self.waiting.append(got)
                self.all.append(got)
        elif kind == "settle" and self.ended:
            permit = self.ended.pop(int(s[1]) % len(self.ended))  # type: ignore[call-overload]
            lim.settle(permit, tokens=float(s[2]))  # type: ignore[arg-type]
        elif kind == "cancel" and self.waiting:
            lim.cancel(self.waiting.pop(int(s[1]) % len(self.waiting)))  # type: ignore[call-overload]
        elif kind == "widen":
            lim.widen_margin()
        elif kind == "pause":
            lim.pause_until(now + int(s[1]) * STEP)  # type: ignore[call-overload]


@settings(max_examples=400, deadline=None)
@given(limits=limit_sets, margin=st.sampled_from([None, 0.0, 1 / 128, 1 / 32]),
       steps=st.lists(step, max_size=60))
def test_counting_warm_calls_from_their_grant_while_nothing_is_queued_changes_no_admission(
        limits: list[Limit], margin: float | None, steps: list[tuple[object, ...]]) -> None:
    clock = FakeClock()
    fast = _Run(limits, margin, clock, restamp_at_start=False)
    reference = _Run(limits, margin, clock, restamp_at_start=True)
    for s in steps:
        if s[0] == "advance":
            clock.advance(int(s[1]) * STEP)  # type: ignore[call-overload]
            continue
        fast.do(s)
        reference.do(s)
        assert len(fast.all) == len(reference.all), s
        assert len(fast.open) == len(reference.open)
        open_now = {id(p) for p, _, _ in fast.open}
        for mine, theirs in zip(fast.all, reference.all, strict=True):
            if id(mine) in open_now:  # an open call may count from its grant, not its start
                assert mine.admit_at <= theirs.admit_at, s
            else:  # every reservation, and every answered call, counts alike
                assert mine.admit_at == theirs.admit_at, s


def test_a_reservation_queued_behind_a_call_counted_from_its_grant_waits_from_its_start(
        ) -> None:
    """The hand-off delay within the margin, the call counts from its grant while nothing is
    queued; the reservation that queues behind it restamps it first, and is placed a window
    after its start, not after its grant."""
    clock = FakeClock()
    limiter = RateLimiter("1/1s", margin=None, clock=clock)  # a floor of 10-20 ms
    permit = limiter.acquire()
    clock.advance(0.004)
    started = limiter.call_started(permit)
    assert permit.admit_at == 0.0  # counted from its grant: nothing queued
    queued = limiter.reserve()
    assert permit.admit_at == started
    assert queued.admit_at >= 1.004


def test_a_call_handed_off_later_than_the_margin_is_counted_from_its_start_at_once() -> None:
    """Counted from its grant, a call handed off 20 ms late would leave a 0.25 s window a
    margin (7.8 ms) after 0.25 s from its grant, 0.258, before it is held open from a window
    after its start, 0.27: a reservation at 0.26 would find room the server does not have."""
    clock = FakeClock()
    limiter = RateLimiter("1/0.25s", margin=1 / 128, clock=clock)
    permit = limiter.acquire()
    clock.advance(0.02)
    limiter.call_started(permit)
    clock.set(0.26)  # the call is still open
    assert limiter.reserve().admit_at >= 0.27


def test_a_reservation_that_queues_leaves_a_call_held_open_counted_from_its_hold() -> None:
    """Counted from its grant, a call still open a window after its start is held (counts
    from now); the reservation that then queues must not move it back to its start."""
    clock = FakeClock()
    limiter = RateLimiter("1/0.25s", margin=None, clock=clock)
    permit = limiter.acquire()
    clock.advance(0.004)
    limiter.call_started(permit)
    clock.set(0.3)  # still open: held at this step, then the reservation queues behind it
    assert limiter.reserve().admit_at >= 0.55
    assert permit.admit_at == 0.3
