"""The window property under real concurrency: 8 threads (and asyncio tasks) on one limiter.

Real clock, short periods. Assertions are on admission decisions (``admit_at``) and counts,
never on how long anything took.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from throttlepool.limiter import (
    REQUESTS,
    TOKENS,
    BackendBase,
    Cost,
    Limit,
    Permit,
    RateLimiter,
    SlidingWindowLog,
    Ticket,
)


class RecordingBackend(BackendBase):
    """A sliding-window backend that remembers every reservation, in decision order."""

    def __init__(self, limits: Sequence[Limit]) -> None:
        self.inner = SlidingWindowLog(limits)
        self.limits = self.inner.limits
        self.reserved: list[Ticket] = []
        self.cancelled: set[int] = set()

    @property
    def paused_until(self) -> float:
        return self.inner.paused_until

    def reserve(self, cost: Cost, now: float) -> Ticket:
        ticket = self.inner.reserve(cost, now)
        self.reserved.append(ticket)  # called under the limiter's lock: decision order
        return ticket

    def settle(self, ticket: Ticket, actual: Cost, now: float) -> Iterable[Ticket]:
        return self.inner.settle(ticket, actual, now)

    def cancel(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        self.cancelled.add(id(ticket))
        return self.inner.cancel(ticket, now)

    def pause_until(self, until: float, now: float) -> Iterable[Ticket]:
        return self.inner.pause_until(until, now)


def max_in_any_window(admissions: list[tuple[float, float]], period: float) -> float:
    """Largest total weight admitted in any half-open window [t, t + period)."""
    admissions = sorted(admissions)
    best = 0.0
    for i, (start, _) in enumerate(admissions):
        total = 0.0
        for t, w in admissions[i:]:
            if t >= start + period:
                break
            total += w
        best = max(best, total)
    return best


def check(backend: RecordingBackend, permits: list[Permit]) -> None:
    live = [t for t in backend.reserved if id(t) not in backend.cancelled]
    assert len(live) == len(permits)
    admits = [t.admit_at for t in live]
    assert admits == sorted(admits), "admissions overtook each other (FIFO broken)"
    for limit in backend.limits:
        pairs = [(p.admit_at, p.cost.of(limit.unit)) for p in permits]
        assert max_in_any_window(pairs, limit.period) <= limit.amount, limit


def hammer(limiter: RateLimiter, costs_per_thread: list[list[Cost]]) -> list[Permit]:
    permits: list[Permit] = []
    lock = threading.Lock()
    start = threading.Barrier(len(costs_per_thread))
    errors: list[BaseException] = []

    def work(costs: list[Cost]) -> None:
        try:
            start.wait()
            for cost in costs:
                permit = limiter.acquire(cost)
                returned = time.monotonic()
                assert returned >= permit.admit_at, "acquire returned before admission"
                with lock:
                    permits.append(permit)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in costs_per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return permits


def test_eight_threads_never_overfill_any_window() -> None:
    backend = RecordingBackend([Limit(10, 0.2), Limit(25, 0.5)])
    limiter = RateLimiter(backend=backend)
    permits = hammer(limiter, [[Cost()] * 8 for _ in range(8)])
    assert len(permits) == 64
    check(backend, permits)
    # The limiter is exact, not merely safe: some window is actually full.
    pairs = [(p.admit_at, 1.0) for p in permits]
    assert max_in_any_window(pairs, 0.5) == 25


def test_eight_threads_weighted_tokens_with_settle() -> None:
    backend = RecordingBackend([Limit(400, 0.2, TOKENS), Limit(30, 0.2, REQUESTS)])
    limiter = RateLimiter(backend=backend)
    permits: list[Permit] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def work(k: int) -> None:
        start.wait()
        for j in range(6):
            permit = limiter.acquire(Cost(tokens=150))
            limiter.settle(permit, tokens=float(20 + (k * 7 + j * 13) % 120))
            with lock:
                permits.append(permit)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(permits) == 48
    # Settles here only refund (actual < estimate), so the final costs obey every window.
    check(backend, permits)


@settings(max_examples=4, deadline=None)
@given(
    amount=st.integers(2, 8),
    costs=st.lists(st.lists(st.integers(1, 3), min_size=2, max_size=5), min_size=8, max_size=8),
)
def test_threads_property_generated_costs(amount: int, costs: list[list[int]]) -> None:
    backend = RecordingBackend([Limit(float(max(amount, 3)), 0.1), Limit(24, 0.1, TOKENS)])
    limiter = RateLimiter(backend=backend)
    per_thread = [[Cost(1.0, float(c * 4)) for c in row] for row in costs]
    permits = hammer(limiter, per_thread)
    check(backend, permits)


def test_threads_and_asyncio_tasks_share_one_limiter() -> None:
    backend = RecordingBackend([Limit(8, 0.2)])
    limiter = RateLimiter(backend=backend)
    permits: list[Permit] = []
    lock = threading.Lock()

    def thread_work() -> None:
        for _ in range(6):
            with limiter as permit:
                assert time.monotonic() >= permit.admit_at
                with lock:
                    permits.append(permit)

    async def task_work() -> None:
        for _ in range(6):
            async with limiter as permit:
                assert time.monotonic() >= permit.admit_at
                with lock:
                    permits.append(permit)

    async def tasks() -> None:
        await asyncio.gather(*(task_work() for _ in range(4)))

    threads = [threading.Thread(target=thread_work) for _ in range(4)]
    threads.append(threading.Thread(target=asyncio.run, args=(tasks(),)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(permits) == 48
    check(backend, permits)


def test_cancelled_waiters_free_their_slots_under_contention() -> None:
    backend = RecordingBackend([Limit(4, 0.2)])
    limiter = RateLimiter(backend=backend)
    permits: list[Permit] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for j in range(5):
            if (k + j) % 3 == 0:
                permit = limiter.try_acquire()
                if permit is None:
                    continue
            else:
                permit = limiter.reserve()
                if j % 2:
                    limiter.cancel(permit)  # withdrawn before its call
                    continue
                limiter.wait(permit)
            with lock:
                permits.append(permit)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # try_acquire refusals cancel internally and are counted by the recorder too.
    check(backend, permits)
