"""A Hypothesis property of input/output token limits (ITPM/OTPM) on every backend: any
sequence of reserve, settle and cancel keeps each window of each kind at or under its limit,
admits exactly what fits, and the backend's own sums equal a simple model's.

The memory log runs on the fake clock, so time moves too (entries leave their windows). The
SQLite and Redis backends read the wall clock (SQLite's ``time.time()`` under its write lock,
Redis's ``TIME``) and ignore the limiter's; their windows are an hour long here, so nothing
leaves them during an example and the property is the budget arithmetic within one window,
which holds whatever the time. Amounts are integers, so every sum is exact.

Limit sets may repeat a unit and period (``100 output tokens/hour`` and ``80 output
tokens/hour``): each call counts once in both, as every backend must.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from _services import RedisServer, redis_server  # noqa: F401 - fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttlepool.errors import CostExceedsLimit
from throttlepool.limiter import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    REQUESTS,
    TOKENS,
    Cost,
    Limit,
    LimiterBackend,
    RedisWindowBackend,
    SlidingWindowLog,
    SQLiteWindowBackend,
    Ticket,
)
from throttlepool.testing import FakeClock

HOUR = 3600.0
GRID = 1 / 16  # the memory log's time steps: dyadic, so window edges are exact

limit_sets = st.lists(
    st.builds(Limit, st.integers(20, 300).map(float), st.sampled_from([HOUR, 2 * HOUR]),
              st.sampled_from([INPUT_TOKENS, OUTPUT_TOKENS, TOKENS, REQUESTS])),
    min_size=2, max_size=4,
).filter(lambda lims: {lim.unit for lim in lims} >= {INPUT_TOKENS, OUTPUT_TOKENS})

steps = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 120), st.integers(0, 120)),
    st.tuples(st.just("reserve"), st.integers(0, 40), st.integers(0, 40)),
    st.tuples(st.just("fill"), st.integers(0, 1), st.integers(0, 1)),  # the room left, +0/+1
    st.tuples(st.just("settle"), st.integers(0, 63), st.integers(0, 100)),
    st.tuples(st.just("cancel"), st.integers(0, 63), st.just(0)),
    st.tuples(st.just("advance"), st.integers(1, 64), st.just(0)),
), max_size=30)


@dataclass
class Held:
    """An admitted ticket and when (on the model's clock) it was admitted."""

    ticket: Ticket
    at: float


def _cap(limits: list[Limit], unit: str) -> float:
    return min(lim.amount for lim in limits if lim.unit == unit)


def _counted(live: list[Held], limit: Limit, now: float) -> float:
    """What the model counts in ``limit``'s window ending at ``now``: the units of each
    admission still inside it (``[at, at + period)``)."""
    return sum(h.ticket.cost.of(limit.unit) for h in live if now < h.at + limit.period)


def _usage(backend: LimiterBackend, now: float) -> list[float]:
    if isinstance(backend, SlidingWindowLog):
        return [amount for _, amount in backend.usage(now)]
    assert isinstance(backend, (SQLiteWindowBackend, RedisWindowBackend))
    return [amount for _, amount in backend.usage()]


def _try_reserve(backend: LimiterBackend, cost: Cost, now: float) -> Ticket | None:
    """Admit ``cost`` now or reserve nothing (RateLimiter.try_acquire, without its
    calibration of prompt estimates, which would change the cost the model sees)."""
    ticket = backend.reserve(cost, now)
    if ticket.provisional:
        return None
    if ticket.admit_at > now:  # the memory log queued it for later
        backend.cancel(ticket, now)
        return None
    return ticket


def check_property(backend: LimiterBackend, limits: list[Limit],
                   ops: list[tuple[str, int, int]], anthropic: bool, clock: FakeClock,
                   time_moves: bool) -> None:
    """Run ``ops`` on ``backend``; after each, it agrees with the model."""
    live: list[Held] = []
    for kind, a, b in ops:
        now = clock.now()
        if kind == "advance":
            if time_moves:
                clock.advance(a * GRID * 16 * 60)  # up to an hour: entries leave windows
        elif kind in ("reserve", "fill"):
            if kind == "fill":  # exactly the room left in the tightest window of each kind
                prompt, out = (min(x.amount - _counted(live, x, now) for x in limits
                                   if x.unit == unit) + extra
                               for unit, extra in ((INPUT_TOKENS, a), (OUTPUT_TOKENS, b)))
            else:
                prompt = float(int(_cap(limits, INPUT_TOKENS) * a // 100))
                out = float(int(_cap(limits, OUTPUT_TOKENS) * b // 100))
            # Anthropic charges output as generated; OpenAI reserves max_tokens as output.
            cost = (Cost(1.0, prompt + out, output_tokens=out) if anthropic
                    else Cost(1.0, prompt + out, out))
            if any(cost.of(x.unit) > x.amount for x in limits):
                with pytest.raises(CostExceedsLimit):  # could never fit: refused at once
                    backend.reserve(cost, now)
                continue
            fits = all(_counted(live, x, now) + cost.of(x.unit) <= x.amount for x in limits)
            ticket = _try_reserve(backend, cost, now)
            assert (ticket is not None) == fits, (cost, [(x, _counted(live, x, now))
                                                         for x in limits])
            if ticket is not None:
                live.append(Held(ticket, now))
        elif kind == "settle" and live:
            held = live[a % len(live)]
            estimate = held.ticket.cost
            # The server's count of each kind is at most what was reserved for it.
            backend.settle(held.ticket, estimate.settled(
                float(int(estimate.of(INPUT_TOKENS) * b // 100)),
                float(int(estimate.of(OUTPUT_TOKENS) * b // 100))), now)
        elif kind == "cancel" and live:
            backend.cancel(live.pop(a % len(live)).ticket, now)
        now = clock.now()
        model = [_counted(live, x, now) for x in limits]
        assert all(m <= x.amount for m, x in zip(model, limits, strict=True)), (model, limits)
        assert _usage(backend, now) == pytest.approx(model, abs=1e-6), (limits, model)


PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(limits=limit_sets, ops=steps, anthropic=st.booleans())
def test_memory_log_io_windows(limits: list[Limit], ops: list[tuple[str, int, int]],
                               anthropic: bool) -> None:
    check_property(SlidingWindowLog(limits), limits, ops, anthropic, FakeClock(1000.0),
                   time_moves=True)


def _shared(make: Callable[[str], LimiterBackend], limits: list[Limit],
            ops: list[tuple[str, int, int]], anthropic: bool) -> None:
    backend = make(uuid.uuid4().hex[:12])  # a budget of its own for each example
    try:
        check_property(backend, limits, ops, anthropic, FakeClock(1000.0), time_moves=False)
    finally:
        backend.close()


@PROPERTY
@given(limits=limit_sets, ops=steps, anthropic=st.booleans())
def test_sqlite_backend_io_windows(tmp_path: Path, limits: list[Limit],
                                  ops: list[tuple[str, int, int]], anthropic: bool) -> None:
    _shared(lambda name: SQLiteWindowBackend(tmp_path / "shared.sqlite", limits, name),
            limits, ops, anthropic)


@PROPERTY
@given(limits=limit_sets, ops=steps, anthropic=st.booleans())
def test_redis_backend_io_windows(redis_server: RedisServer,  # noqa: F811 - fixture
                                  limits: list[Limit], ops: list[tuple[str, int, int]],
                                  anthropic: bool) -> None:
    _shared(lambda name: RedisWindowBackend(redis_server.url, limits, f"throttlepool:{name}"),
            limits, ops, anthropic)


def test_redis_counts_a_repeated_unit_and_period_once(
        redis_server: RedisServer) -> None:  # noqa: F811 - fixture
    """Two limits of one unit and period share one window, counted once: the whole 80 of
    the tighter one is usable, and a second process with the limits in the other order
    (or only one of them) shares that window."""
    key = f"throttlepool:{uuid.uuid4().hex}"
    limits = [Limit(100.0, HOUR, OUTPUT_TOKENS), Limit(80.0, HOUR, OUTPUT_TOKENS)]
    backend = RedisWindowBackend(redis_server.url, limits, key)
    other = RedisWindowBackend(redis_server.url, limits[::-1], key)
    alone = RedisWindowBackend(redis_server.url, limits[:1], key)
    try:
        assert _try_reserve(backend, Cost(1.0, 60.0, output_tokens=60.0), 0.0) is not None
        assert [used for _, used in backend.usage()] == [60.0, 60.0]
        assert _try_reserve(other, Cost(1.0, 20.0, output_tokens=20.0), 0.0) is not None
        assert _try_reserve(backend, Cost(1.0, 1.0, output_tokens=1.0), 0.0) is None
        assert [used for _, used in alone.usage()] == [80.0]
    finally:
        for b in (backend, other, alone):
            b.close()
