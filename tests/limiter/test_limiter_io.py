"""Input and output token limits (ITPM/OTPM): parsing, the exact log against a brute force
with three unit kinds, settling per kind, and calibrated prompt estimates (no knife-edge).

Times and periods are dyadic (see test_limiter_props), so a violation is a real one.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from throttlepool.errors import ConfigError
from throttlepool.limiter import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REQUESTS,
    TOKENS,
    Cost,
    Limit,
    Permit,
    RateLimiter,
    build_limits,
)
from throttlepool.options.values import Limits
from throttlepool.testing import FakeClock

GRID = 1 / 16
DELTA = GRID / 2
PERIODS = [0.5, 1.0, 2.0, 4.0]


def test_input_and_output_limits_parse_and_print() -> None:
    assert Limit.parse("400000 input tokens/minute") == Limit(400_000, 60.0, INPUT_TOKENS)
    assert Limit.parse("80000 output tokens/minute") == Limit(80_000, 60.0, OUTPUT_TOKENS)
    assert Limit.parse("5 input-tokens per 2s") == Limit(5, 2.0, INPUT_TOKENS)
    for text in ("400000 input tokens/minute", "80000 output tokens/minute"):
        assert Limit.parse(str(Limit.parse(text))) == Limit.parse(text)
    with pytest.raises(ConfigError, match="goes with tokens"):
        Limit.parse("5 input/minute")
    assert build_limits(itpm=400_000, otpm=80_000) == [
        Limit(400_000, 60.0, INPUT_TOKENS), Limit(80_000, 60.0, OUTPUT_TOKENS)]
    with pytest.raises(ConfigError, match="otpm"):
        build_limits(otpm=0)
    limits = Limits(itpm=1000, otpm=100)
    assert limits.token_limited
    assert [str(lim) for lim in limits.resolved()] == ["1000 input tokens/60s",
                                                       "100 output tokens/60s"]


def test_a_cost_counts_each_kind_apart_and_settles_to_the_usage() -> None:
    openai = Cost(1.0, 30 + 40, 40)  # max_tokens charged whatever the reply (OpenAI)
    assert (openai.of(TOKENS), openai.of(INPUT_TOKENS), openai.of(OUTPUT_TOKENS)) == (70, 30, 40)
    done = openai.settled(28, 5)
    assert (done.of(TOKENS), done.of(INPUT_TOKENS), done.of(OUTPUT_TOKENS)) == (68, 28, 5)
    anthropic = Cost(1.0, 30 + 40, output_tokens=40)  # output charged as generated
    assert (anthropic.of(INPUT_TOKENS), anthropic.of(OUTPUT_TOKENS)) == (30, 40)
    done = anthropic.settled(28, 5)
    assert (done.of(TOKENS), done.of(INPUT_TOKENS), done.of(OUTPUT_TOKENS)) == (33, 28, 5)
    assert done.of(REQUESTS) == 1.0


# ---- the exact log with three unit kinds, against a brute force ------------------------------

kinds = st.sampled_from([REQUESTS, INPUT_TOKENS, OUTPUT_TOKENS])
limit_sets = st.lists(
    st.builds(lambda unit, amount, period: Limit(amount if unit != REQUESTS else amount / 25,
                                                 period, unit),
              kinds, st.sampled_from([100.0, 200.0]), st.sampled_from(PERIODS)),
    min_size=1, max_size=4,
).filter(lambda lims: {lim.unit for lim in lims} >= {INPUT_TOKENS, OUTPUT_TOKENS})

ops = st.lists(st.one_of(
    st.tuples(st.just("advance"), st.integers(0, 48), st.just(0)),
    st.tuples(st.just("reserve"), st.integers(0, 100), st.integers(0, 100)),
    st.tuples(st.just("settle"), st.integers(0, 63), st.integers(0, 100)),
    st.tuples(st.just("cancel"), st.integers(0, 63), st.just(0)),
), max_size=40)


@dataclass
class Rec:
    order: int
    permit: Permit


def _counted(live: list[Rec], limit: Limit, at: float, before: int | None = None) -> float:
    """Units of ``limit`` the brute force counts in the window that contains ``at``."""
    return sum(r.permit.cost.of(limit.unit) for r in live
               if (before is None or r.order < before)
               and r.permit.admit_at <= at < r.permit.admit_at + limit.period)


@settings(max_examples=300, deadline=None)
@given(limits=limit_sets, steps=ops, anthropic=st.booleans())
def test_the_log_keeps_every_window_of_every_kind_and_admits_as_early_as_it_can(
        limits: list[Limit], steps: list[tuple[str, int, int]], anthropic: bool) -> None:
    clock = FakeClock(1000.0)
    lim = RateLimiter(*limits, clock=clock)
    cap = {unit: min((x.amount for x in limits if x.unit == unit), default=0.0)
           for unit in (INPUT_TOKENS, OUTPUT_TOKENS)}
    live: list[Rec] = []
    for n, (kind, a, b) in enumerate(steps):
        if kind == "advance":
            clock.advance(a * GRID)
        elif kind == "reserve":
            prompt = float(int(cap[INPUT_TOKENS] * a // 100))
            out = float(int(cap[OUTPUT_TOKENS] * b // 100))
            cost = (Cost(1.0, prompt + out, output_tokens=out) if anthropic
                    else Cost(1.0, prompt + out, out))
            rec = Rec(n, lim.reserve(cost))
            live.append(rec)
            t = rec.permit.admit_at
            floor = max([clock.now(), *(r.permit.admit_at for r in live[:-1])])
            assert t >= floor, "FIFO broken"
            if t > floor:  # waiting: some limit must have refused it a moment earlier
                assert any(_counted(live, x, t - DELTA, before=n) + rec.permit.cost.of(x.unit)
                           > x.amount for x in limits), "admitted later than it had to be"
        elif kind == "settle" and live:
            rec = live[a % len(live)]
            estimate = rec.permit.cost
            # The server's count of each kind is at most what was reserved for it.
            lim.settle(rec.permit, estimate.settled(
                float(int(estimate.of(INPUT_TOKENS) * b // 100)),
                float(int(estimate.of(OUTPUT_TOKENS) * b // 100))))
        elif kind == "cancel" and live:
            lim.cancel(live.pop(a % len(live)).permit)
        for rec in live:  # every window of every kind, as the brute force counts it
            for x in limits:
                assert _counted(live, x, rec.permit.admit_at) <= x.amount, (x, rec.permit)


# ---- calibrated prompt estimates: a token above the charge loses no window -----------------

def test_an_estimate_a_token_above_the_charge_does_not_cost_a_window() -> None:
    """The server charges 60 a call (14 prompt + 46 reserved output) and admits 16 a window
    of 960; the client estimates the prompt at 15. Settled as the calls answer, the 16th call
    of each window still fits: the log learns that the prompts were over-estimated."""
    clock = FakeClock(0.0)
    lim = RateLimiter("960 tokens/2s", clock=clock)
    estimate = Cost(1.0, 15 + 46, 46)
    admitted: list[float] = []
    answers: list[tuple[float, int, Permit]] = []  # a heap: 8 calls in flight at most

    def answer_next() -> None:
        at, _, permit = heapq.heappop(answers)
        clock.advance(max(0.0, at - clock.now()))
        lim.settle(permit, estimate.settled(14, 15))  # a refund may move a waiter earlier

    for n in range(48):
        if len(answers) == 8:
            answer_next()
        permit = lim.reserve(estimate)
        while answers and answers[0][0] < permit.admit_at:
            answer_next()
        clock.advance(max(0.0, permit.admit_at - clock.now()))
        admitted.append(permit.admit_at)
        heapq.heappush(answers, (permit.admit_at + 0.1, n, permit))
    per_window = [sum(1 for t in admitted if w * 2.0 <= t < (w + 1) * 2.0) for w in range(3)]
    assert per_window == [16, 16, 16]


def test_under_estimates_are_corrected_from_the_first_settlement() -> None:
    clock = FakeClock(0.0)
    lim = RateLimiter("1000 input tokens/1s", clock=clock)
    first = lim.reserve(Cost(1.0, 100.0))
    lim.settle(first, Cost(1.0, 100.0).settled(110, 0))
    assert lim.reserve(Cost(1.0, 100.0)).cost.of(INPUT_TOKENS) == 110
    # Over-estimates count only once several settlements agree.
    lim = RateLimiter("1000 input tokens/1s", clock=clock)
    for expected in (100, 100, 100, 100, 90):
        permit = lim.reserve(Cost(1.0, 100.0))
        assert permit.cost.of(INPUT_TOKENS) == expected
        lim.settle(permit, Cost(1.0, 100.0).settled(90, 0))
