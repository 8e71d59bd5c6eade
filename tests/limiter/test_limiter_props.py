"""Hypothesis properties of the limiters on a fake clock, checked against a brute-force model.

Times, periods and rates are dyadic (multiples of 1/16 s, powers of two), so every sum the
limiter computes is exact and a violation found here is a real one, not float noise.
Windows are half-open: an admission at t counts in [t, t + period).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from throttlepool.errors import CostExceedsLimit
from throttlepool.limiter import (
    REQUESTS,
    TOKENS,
    Cost,
    Limit,
    Permit,
    RateLimiter,
    SlidingWindowLog,
    TokenBucketLimiter,
)
from throttlepool.testing import FakeClock

GRID = 1 / 16
DELTA = GRID / 2  # strictly between two grid points
PERIODS = [0.5, 1.0, 2.0, 4.0]

request_limits = st.builds(
    Limit, st.integers(1, 6).map(float), st.sampled_from(PERIODS), st.just(REQUESTS)
)
token_limits = st.builds(
    Limit, st.sampled_from([64.0, 100.0, 250.0, 1000.0]), st.sampled_from(PERIODS),
    st.just(TOKENS),
)
limit_sets = st.tuples(
    st.lists(request_limits, min_size=0, max_size=2),
    st.lists(token_limits, min_size=0, max_size=2),
).map(lambda pair: pair[0] + pair[1]).filter(bool)

op = st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 48)),
    st.tuples(st.just("reserve"), st.integers(0, 100)),
    st.tuples(st.just("reserve"), st.integers(0, 100)),
    st.tuples(st.just("settle"), st.integers(0, 63), st.integers(0, 100)),
    st.tuples(st.just("cancel"), st.integers(0, 63)),
    st.tuples(st.just("pause"), st.integers(0, 48)),
)


@dataclass
class Rec:
    order: int
    permit: Permit
    cost: Cost


class Model:
    """The live reservations in FIFO order and the checks every state must pass."""

    def __init__(self, limits: list[Limit], clock: FakeClock) -> None:
        self.limits = limits
        self.clock = clock
        self.lim = RateLimiter(*limits, clock=clock)
        self.live: list[Rec] = []
        self.paused = float("-inf")
        self.orders = 0
        tokens = [lim.amount for lim in limits if lim.unit == TOKENS]
        self.max_tokens = min(tokens) if tokens else 0.0

    def tokens(self, pct: int) -> float:
        return float(int(self.max_tokens * pct // 100))

    # -- the brute-force view --------------------------------------------------------------

    def load(self, limit: Limit, at: float, before: Rec | None = None) -> float:
        """Units of ``limit`` admitted in the window that contains time ``at``."""
        total = 0.0
        for rec in self.live:
            if before is not None and rec.order >= before.order:
                break
            a = rec.permit.admit_at
            if a <= at < a + limit.period:
                total += rec.cost.of(limit.unit)
        return total

    def weighed(self, rec: Rec) -> list[Limit]:
        """The limits rec adds to: only those can hold it back. A settle that raised an
        earlier cost may leave a window over its limit (the call was made; the log counts
        it), and an admission adding nothing to that window is not to blame for it."""
        return [limit for limit in self.limits if rec.cost.of(limit.unit) > 0]

    def check_window_of(self, rec: Rec) -> None:
        """The window ending at rec's admission holds at most the limit (current costs), in
        every limit rec adds to."""
        t = rec.permit.admit_at
        for limit in self.weighed(rec):
            used = sum(
                r.cost.of(limit.unit) for r in self.live
                if r.permit.admit_at <= t < r.permit.admit_at + limit.period
            )
            assert used <= limit.amount, (limit, t, used)

    def check_minimal(self, rec: Rec) -> None:
        """rec is admitted at the earliest time FIFO, pauses and the windows it adds to allow
        (a window it adds nothing to never delays it, even one a raise left over)."""
        t = rec.permit.admit_at
        prior = [r.permit.admit_at for r in self.live if r.order < rec.order]
        floor = max([self.clock.now(), self.paused, *prior])
        assert t >= floor
        if t == floor:
            return
        just_before = t - DELTA
        assert any(
            self.load(limit, just_before, before=rec) + rec.cost.of(limit.unit) > limit.amount
            for limit in self.weighed(rec)
        ), f"{rec.permit} could have been admitted earlier than {t}"

    def check(self, just_placed: Rec | None = None) -> None:
        now = self.clock.now()
        admits = [r.permit.admit_at for r in self.live]
        assert admits == sorted(admits), "FIFO broken"
        for rec in self.live:
            if rec.permit.admit_at > now or rec is just_placed:
                self.check_window_of(rec)
                self.check_minimal(rec)
                assert rec.permit.admit_at >= self.paused
        if self.paused <= now and not any(
            r.permit.admit_at + max(lim.period for lim in self.limits) > now for r in self.live
        ):
            probe = self.lim.try_acquire(Cost(1.0, self.max_tokens))
            assert probe is not None, "an idle limiter must admit at once"
            self.live.append(Rec(self.orders, probe, probe.cost))
            self.orders += 1

    # -- operations ------------------------------------------------------------------------

    def pending(self) -> list[Rec]:
        return [r for r in self.live if r.permit.admit_at > self.clock.now()]

    def apply(self, step: tuple[object, ...]) -> None:
        kind = step[0]
        before = {id(r): r.permit.admit_at for r in self.pending()}
        if kind == "advance":
            self.clock.advance(int(step[1]) * GRID)  # type: ignore[call-overload]
            self.check()
        elif kind == "reserve":
            cost = Cost(1.0, self.tokens(int(step[1])))  # type: ignore[call-overload]
            permit = self.lim.reserve(cost)
            rec = Rec(self.orders, permit, cost)
            self.orders += 1
            self.live.append(rec)
            self.check(just_placed=rec)
        elif kind == "settle" and self.live:
            rec = self.live[int(step[1]) % len(self.live)]  # type: ignore[call-overload]
            new = Cost(1.0, self.tokens(int(step[2])))  # type: ignore[call-overload]
            old = rec.cost
            self.lim.settle(rec.permit, new)
            rec.cost = new
            self.check()
            if new.tokens <= old.tokens:  # a refund never moves anyone later
                for r in self.pending():
                    assert r.permit.admit_at <= before.get(id(r), r.permit.admit_at)
        elif kind == "cancel" and self.live:
            rec = self.live.pop(int(step[1]) % len(self.live))  # type: ignore[call-overload]
            self.lim.cancel(rec.permit)
            self.check()
            for r in self.pending():
                assert r.permit.admit_at <= before.get(id(r), r.permit.admit_at)
        elif kind == "pause":
            until = self.clock.now() + int(step[1]) * GRID  # type: ignore[call-overload]
            self.lim.pause_until(until)
            self.paused = max(self.paused, until)
            self.check()
            for r in self.pending():
                assert r.permit.admit_at >= self.paused

    def check_final_windows_without_charges(self) -> None:
        """With no upward settle, every window of every limit, ever, holds at most the limit."""
        for rec in self.live:
            s = rec.permit.admit_at
            for limit in self.limits:
                assert self.load(limit, s) <= limit.amount


@settings(max_examples=300, deadline=None)
@given(limits=limit_sets, ops=st.lists(op, max_size=40), start=st.integers(0, 10**6))
# A settle that raises a cost pushes its window over; a later admission of no tokens
# is not to blame for that window (it adds nothing to it).
@example(limits=[Limit(64.0, 0.5, TOKENS)],
         ops=[("advance", 0), ("reserve", 0), ("settle", 1, 2), ("reserve", 0)], start=0)
def test_sliding_window_model(limits: list[Limit], ops: list[tuple[object, ...]],
                              start: int) -> None:
    model = Model(limits, FakeClock(start * GRID))
    for step in ops:
        model.apply(step)


@settings(max_examples=200, deadline=None)
@given(
    limits=limit_sets,
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("advance"), st.integers(0, 48)),
            st.tuples(st.just("reserve"), st.integers(0, 100)),
            st.tuples(st.just("settle"), st.integers(0, 63), st.integers(0, 100)).map(
                lambda s: ("settle_down", s[1], s[2])),
            st.tuples(st.just("cancel"), st.integers(0, 63)),
            st.tuples(st.just("pause"), st.integers(0, 48)),
        ),
        max_size=40,
    ),
)
def test_no_window_ever_over_the_limit_with_refunds_only(
        limits: list[Limit], ops: list[tuple[object, ...]]) -> None:
    model = Model(limits, FakeClock())
    for step in ops:
        if step[0] == "settle_down":
            if not model.live:
                continue
            rec = model.live[int(step[1]) % len(model.live)]  # type: ignore[call-overload]
            pct = int(step[2])  # type: ignore[call-overload]
            new_tokens = min(rec.cost.tokens, model.tokens(pct))
            step = ("settle", step[1], 0)
            new = Cost(1.0, new_tokens)
            model.lim.settle(rec.permit, new)
            rec.cost = new
            model.check()
            continue
        model.apply(step)
    model.check_final_windows_without_charges()


@settings(max_examples=100, deadline=None)
@given(
    limits=limit_sets,
    steps=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 48)), min_size=1, max_size=30),
)
def test_a_caller_who_waits_each_time_waits_between_zero_and_the_period(
        limits: list[Limit], steps: list[tuple[int, int]]) -> None:
    clock = FakeClock()
    lim = RateLimiter(*limits, clock=clock)
    tokens = min([lim.amount for lim in limits if lim.unit == TOKENS], default=0.0)
    longest = max(limit.period for limit in limits)
    last = float("-inf")
    for pct, idle in steps:
        clock.advance(idle * GRID)
        asked = clock.now()
        permit = lim.acquire(Cost(1.0, float(int(tokens * pct // 100))))
        assert permit.admit_at == clock.now()  # acquire returns exactly at admission
        assert 0.0 <= permit.admit_at - asked <= longest
        assert permit.admit_at >= last
        last = permit.admit_at


@settings(max_examples=100, deadline=None)
@given(limits=limit_sets, extra=st.integers(1, 1000), reserved=st.integers(0, 5))
def test_cost_over_a_limit_raises_at_once_and_leaves_nothing(
        limits: list[Limit], extra: int, reserved: int) -> None:
    clock = FakeClock()
    lim = RateLimiter(*limits, clock=clock)
    twin = RateLimiter(*limits, clock=clock)
    for _ in range(reserved):
        lim.reserve()
        twin.reserve()
    for limit in limits:
        too_big = (Cost(limit.amount + extra, 0.0) if limit.unit == REQUESTS
                   else Cost(1.0, limit.amount + extra))
        try:
            lim.reserve(too_big)
        except CostExceedsLimit as exc:
            assert exc.cost == limit.amount + extra
        else:
            raise AssertionError("a cost over the limit was accepted")
        assert clock.sleeps == []
    assert lim.reserve().admit_at == twin.reserve().admit_at


# ---- token bucket ----------------------------------------------------------------------------

bucket_ops = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 48)),
        st.tuples(st.just("reserve"), st.integers(1, 8)),
        st.tuples(st.just("reserve"), st.integers(1, 8)),
        st.tuples(st.just("cancel"), st.integers(0, 63)),
        st.tuples(st.just("pause"), st.integers(0, 48)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(rate=st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0]), burst=st.integers(1, 8), ops=bucket_ops)
def test_token_bucket_never_exceeds_burst_plus_rate(
        rate: float, burst: int, ops: list[tuple[str, int]]) -> None:
    clock = FakeClock()
    lim = TokenBucketLimiter(rate, burst_size=burst, clock=clock)
    live: list[tuple[Permit, float]] = []
    paused = float("-inf")
    for kind, n in ops:
        if kind == "advance":
            clock.advance(n * GRID)
        elif kind == "reserve":
            w = float(min(n, burst))
            asked = clock.now()
            p = lim.reserve(Cost(w))
            live.append((p, w))
            assert p.admit_at >= max(asked, paused)
            # Never waits longer than refilling this cost, unless held by queue or pause.
        elif kind == "cancel" and live:
            before = {id(p): p.admit_at for p, _ in live}
            p, _ = live.pop(n % len(live))
            lim.cancel(p)
            for q, _ in live:
                assert q.admit_at <= before[id(q)]
        elif kind == "pause":
            until = clock.now() + n * GRID
            lim.pause_until(until)
            paused = max(paused, until)
            for q, _ in live:
                if q.admit_at > clock.now():
                    assert q.admit_at >= paused
        admits = [p.admit_at for p, _ in live]
        assert admits == sorted(admits), "FIFO broken"
        for i, (pi, _) in enumerate(live):
            for pj, _ in live[i:]:
                span = pj.admit_at - pi.admit_at
                units = sum(w for p, w in live if pi.admit_at <= p.admit_at <= pj.admit_at)
                assert units <= burst + rate * span, (pi, pj, units)


@settings(max_examples=100, deadline=None)
@given(rate=st.sampled_from([0.5, 1.0, 2.0, 4.0]), burst=st.integers(1, 8),
       idle=st.integers(0, 64))
def test_token_bucket_full_burst_at_once_then_steady_rate(
        rate: float, burst: int, idle: int) -> None:
    clock = FakeClock(5.0)
    lim = TokenBucketLimiter(rate, burst_size=burst, clock=clock)
    first = [lim.reserve().admit_at for _ in range(burst)]
    assert first == [5.0] * burst
    nxt = [lim.reserve().admit_at for _ in range(3)]
    assert nxt == [5.0 + k / rate for k in (1, 2, 3)]
    # After idling long enough to refill, a whole burst is admitted at once again.
    clock.set(nxt[-1] + burst / rate + idle * GRID)
    again = [lim.reserve().admit_at for _ in range(burst)]
    assert again == [clock.now()] * burst


@given(
    start=st.floats(0.0, 1e7, allow_nan=False, allow_infinity=False),
    period=st.sampled_from([0.1, 0.3, 0.5, 1.0, 2.0, 7.5, 60.0]),
    amount=st.integers(1, 4),
)
def test_an_admission_at_the_boundary_is_one_the_log_itself_has_expired(
    start: float, period: float, amount: int
) -> None:
    """Monotonic-clock times are not dyadic: ``admit_at + period`` rounds, and the log must
    never hand out an instant at which, by its own expiry rule (and the server's half-open
    window), the entry it waited for still counts: amount + 1 in one window, an ulp apart."""
    log = SlidingWindowLog([Limit(float(amount), period)])
    first = [log.reserve(Cost(1.0), start) for _ in range(amount)]
    nxt = log.reserve(Cost(1.0), start)
    assert first[0].admit_at <= nxt.admit_at - period
    # At that instant the log counts only the new entry: the first ones have left.
    assert log.usage(nxt.admit_at) == [(Limit(float(amount), period), 1.0)]
