"""Input and output token limits (ITPM/OTPM) in the shared backends: each kind is charged to
its own window, none is ever over its budget, and a settlement refunds each kind apart."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _services import RedisServer, redis_server  # noqa: F401 - fixture

from throttlepool.limiter import (
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    Cost,
    RateLimiter,
    Ticket,
    limiter_from_url,
)

IN_LIMIT, OUT_LIMIT, MAX_IN, MAX_OUT = 1000, 600, 100, 60
RUN, THREADS = 2.0, 6


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/limits.sqlite#io"
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        yield f"{server.url}#{uuid.uuid4().hex[:8]}"


def _limiter(url: str, limits: list[str]) -> RateLimiter:
    base, _, name = url.partition("#")
    return limiter_from_url(base, limits, name=name)


class _Recording:
    """Logs the wall-time interval of every admitting decision with its ticket (whose cost
    becomes what it was settled to)."""

    def __init__(self, inner: Any, log: list[tuple[float, float, Ticket]]) -> None:
        self.inner, self.log = inner, log
        self.limits = inner.limits

    def reserve(self, cost: Cost, now: float) -> Ticket:
        a = time.time()
        ticket: Ticket = self.inner.reserve(cost, now)
        if not ticket.provisional:
            self.log.append((a, time.time(), ticket))
        return ticket

    def settle(self, ticket: Ticket, actual: Cost, now: float) -> Any:
        # A permit that waited was admitted by a fresh ticket (the one logged), whose handle
        # it took over: the settlement reaches the logged ticket through that handle.
        handle = ticket.handle  # a Redis handle changes as it settles
        moved = self.inner.settle(ticket, actual, now)
        for _, _, logged in list(self.log):
            if logged is not ticket and logged.handle == handle:
                logged.cost = actual
        return moved

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _peak(log: list[tuple[float, float, Ticket]], unit: str) -> float:
    """The most units of one kind (as settled) whose decisions lie inside one 1 s window."""
    entries = sorted(log, key=lambda e: e[0])
    return max(sum(e[2].cost.of(unit) for e in entries[i:] if e[1] < start + 1.0)
               for i, (start, _, _) in enumerate(entries))


def test_each_kind_has_its_own_budget_and_settles_apart(url: str) -> None:
    lim = _limiter(url, ["100 input tokens/second", "50 output tokens/second"])
    a = lim.try_acquire(Cost(1.0, 100.0 + 10.0, 10.0))  # the whole input budget
    assert a is not None
    assert lim.try_acquire(Cost(1.0, 1.0 + 1.0, 1.0)) is None  # no input left
    lim.settle(a, Cost(1.0, 110.0, 10.0).settled(60, 10))  # 40 input tokens refunded
    b = lim.try_acquire(Cost(1.0, 40.0 + 40.0, output_tokens=40.0))
    assert b is not None  # the output budget is its own: 10 + 40 <= 50
    assert lim.try_acquire(Cost(1.0, 0.0 + 1.0, 1.0)) is None  # no output left
    lim.settle(b, Cost(1.0, 80.0, output_tokens=40.0).settled(40, 5))  # 35 output refunded
    assert lim.try_acquire(Cost(1.0, 0.0 + 35.0, 35.0)) is not None
    lim.backend.close()


def test_no_window_is_ever_over_either_budget(url: str) -> None:
    """Two limiters on one budget (as two processes would be), six threads reserving random
    inputs and outputs and settling some lower: every 1 s window of each kind holds at most
    its limit, and nearly all of it (the bound is tight)."""
    limits = [f"{IN_LIMIT} input tokens/second", f"{OUT_LIMIT} output tokens/second"]
    log: list[tuple[float, float, Ticket]] = []
    limiters = [_limiter(url, limits) for _ in range(2)]
    for lim in limiters:
        lim.backend = _Recording(lim.backend, log)
    stop_at = time.time() + RUN

    def loop(i: int) -> None:
        rng, lim = random.Random(i), limiters[i % 2]
        while time.time() < stop_at:
            prompt, out = rng.randint(1, MAX_IN), rng.randint(1, MAX_OUT)
            cost = Cost(1.0, prompt + out, output_tokens=out)
            permit = lim.acquire(cost)
            if rng.random() < 0.3:
                lim.settle(permit, cost.settled(prompt, rng.randint(0, out)))

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(THREADS)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for lim in limiters:
        lim.backend.close()
    peak_in, peak_out = _peak(log, INPUT_TOKENS), _peak(log, OUTPUT_TOKENS)
    assert peak_in <= IN_LIMIT and peak_out <= OUT_LIMIT, (peak_in, peak_out)
    # The bound is tight, not vacuous: the binding kind fills its window but for one call.
    assert peak_in >= IN_LIMIT - MAX_IN or peak_out >= OUT_LIMIT - MAX_OUT, (peak_in, peak_out)


def test_an_older_sqlite_file_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the table as files made before ITPM/OTPM have it
        db.execute("CREATE TABLE admissions (id INTEGER PRIMARY KEY, bucket TEXT NOT NULL, "
                   "ts REAL NOT NULL, requests REAL NOT NULL, tokens REAL NOT NULL)")
    lim = limiter_from_url(f"sqlite:///{path}", ["10 output tokens/second"], name="old")
    assert lim.try_acquire(Cost(1.0, 10.0, output_tokens=10.0)) is not None
    assert lim.try_acquire(Cost(1.0, 1.0, output_tokens=1.0)) is None
    lim.backend.close()
