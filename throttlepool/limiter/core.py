"""The limiter mechanism: one lock around a backend, shared by threads and asyncio tasks.

The backend computes each reservation's admission time under the lock; waiting happens
outside it, on the injected clock, and a waiter whose time moves earlier (a refund by
``settle``, a cancelled reservation) is woken instead of sleeping out its old wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from .limits import ONE_REQUEST, Cost, Limit, LimitSpec, build_limits
from .sliding import SlidingWindowLog
from .ticket import LimiterBackend, Ticket

Permit = Ticket


def _wake(tickets: Iterable[Ticket]) -> None:
    for ticket in tickets:
        waker = ticket.waker
        if waker is None:
            continue
        if isinstance(waker, threading.Event):
            waker.set()
        else:
            loop, event = waker
            loop.call_soon_threadsafe(event.set)


class RateLimiter:
    """A rate limiter usable as ``with limiter:``, ``async with limiter:`` or ``acquire()``.

    By default an exact sliding-window log over every given limit::

        limiter = RateLimiter("500/minute", "10/second", tpm=200_000)
        with limiter:                       # one request
            call()
        permit = limiter.acquire(Cost(tokens=1200))
        limiter.settle(permit, Cost(tokens=830))   # actual usage refunds the rest

    ``margin`` (seconds) lengthens the time each admission counts: a server stamps a request
    when it arrives, a little after we decide, and the margin covers that jitter.
    """

    def __init__(
        self,
        *limits: LimitSpec,
        rpm: float | None = None,
        tpm: float | None = None,
        rps: float | None = None,
        safety: float = 1.0,
        margin: float = 0.0,
        backend: LimiterBackend | None = None,
        clock: Clock | None = None,
    ) -> None:
        if backend is not None and (limits or rpm or tpm or rps):
            raise TypeError("give either limits or a backend, not both")
        self.backend: LimiterBackend = backend or SlidingWindowLog(
            build_limits(limits, rpm=rpm, tpm=tpm, rps=rps, safety=safety), margin=margin
        )
        self.clock = clock or SYSTEM_CLOCK
        self._lock = threading.Lock()

    @property
    def limits(self) -> list[Limit]:
        """The limits this limiter enforces."""
        return list(self.backend.limits)

    def unrestricted(self) -> bool:
        """True while no limit is configured and no pause is in force: nothing to reserve."""
        return not self.backend.limits and getattr(
            self.backend, "paused_until", float("inf")) <= self.clock.now()

    def reserve(self, cost: Cost = ONE_REQUEST) -> Permit:
        """Record a reservation without waiting; ``permit.admit_at`` says when it is admitted."""
        with self._lock:
            return self.backend.reserve(cost, self.clock.now())

    def _check(self, permit: Permit) -> float:
        """Seconds until ``permit`` is admitted; re-asks the backend for a provisional one."""
        with self._lock:
            now = self.clock.now()
            if permit.provisional and permit.admit_at <= now:
                fresh = self.backend.reserve(permit.cost, now)
                permit.admit_at, permit.provisional = fresh.admit_at, fresh.provisional
                permit.handle = fresh.handle
            return permit.admit_at - now

    def acquire(self, cost: Cost = ONE_REQUEST) -> Permit:
        """Block the calling thread until ``cost`` is admitted; returns the permit."""
        permit = self.reserve(cost)
        self.wait(permit)
        return permit

    async def aacquire(self, cost: Cost = ONE_REQUEST) -> Permit:
        """Suspend the calling task until ``cost`` is admitted; returns the permit."""
        permit = self.reserve(cost)
        await self.wait_async(permit)
        return permit

    def admitted(self, permit: Permit) -> bool:
        """True when ``permit`` may proceed now (no wait needed)."""
        return not permit.provisional and permit.admit_at <= self.clock.now()

    def wait(self, permit: Permit) -> None:
        """Block until a reserved ``permit`` is admitted; if interrupted, withdraw it."""
        if self.admitted(permit):
            return
        event = threading.Event()
        with self._waiting(permit, event):
            while (delay := self._next_wait(permit, event.clear)) is not None:
                self.clock.wait(event, delay)

    async def wait_async(self, permit: Permit) -> None:
        """Suspend until a reserved ``permit`` is admitted; on cancellation it is withdrawn."""
        if self.admitted(permit):
            return
        event = asyncio.Event()
        with self._waiting(permit, (asyncio.get_running_loop(), event)):
            while (delay := self._next_wait(permit, event.clear)) is not None:
                await self.clock.await_event(event, delay)

    @contextlib.contextmanager
    def _waiting(self, permit: Permit, waker: Any) -> Iterator[None]:
        """Let rescheduling wake this waiter; withdraw the reservation if the wait fails."""
        permit.waker = waker
        try:
            yield
        except BaseException:
            self.cancel(permit)
            raise
        finally:
            permit.waker = None

    def _next_wait(self, permit: Permit, clear: Callable[[], None]) -> float | None:
        """Seconds still to wait for ``permit``, or None once it is admitted."""
        clear()  # before the check, so a wake-up that races it is not lost
        delay = self._check(permit)
        if delay <= 0 and not permit.provisional:
            return None
        return max(delay, 0.0)

    def try_acquire(self, cost: Cost = ONE_REQUEST) -> Permit | None:
        """Admit ``cost`` now if possible, else reserve nothing and return None."""
        with self._lock:
            now = self.clock.now()
            permit = self.backend.reserve(cost, now)
            if permit.admit_at <= now and not permit.provisional:
                return permit
            if not permit.provisional:
                _wake(self.backend.cancel(permit, now))
            return None

    def settle(self, permit: Permit, actual: Cost | None = None, *, tokens: float | None = None
               ) -> None:
        """Replace the reserved cost with the actual one (e.g. tokens the server counted)."""
        if actual is None:
            actual = Cost(permit.cost.requests, permit.cost.tokens if tokens is None else tokens)
        with self._lock:
            moved = self.backend.settle(permit, actual, self.clock.now())
        _wake(moved)

    def restamp(self, permit: Permit) -> None:
        """Count an admitted permit from now on (its call starts later than it was granted)."""
        restamp = getattr(self.backend, "restamp", None)
        if restamp is None or permit.provisional:
            return
        with self._lock:
            moved = restamp(permit, self.clock.now())
        _wake(moved)

    def widen_margin(self) -> None:
        """Lengthen the margin each admission counts for (after a server still said 429)."""
        widen = getattr(self.backend, "widen_margin", None)
        if widen is not None:
            with self._lock:
                widen()

    def cancel(self, permit: Permit) -> None:
        """Withdraw a reservation whose call was not made; its budget goes to the next."""
        if permit.provisional:
            return
        with self._lock:
            moved = self.backend.cancel(permit, self.clock.now())
        _wake(moved)

    def pause_until(self, until: float) -> None:
        """Admit nothing before clock time ``until`` (e.g. now + a server's Retry-After)."""
        with self._lock:
            moved = self.backend.pause_until(until, self.clock.now())
        _wake(moved)

    def pause_for(self, seconds: float) -> None:
        """Admit nothing for the next ``seconds``."""
        self.pause_until(self.clock.now() + seconds)

    def __enter__(self) -> Permit:
        return self.acquire()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def __aenter__(self) -> Permit:
        return await self.aacquire()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __repr__(self) -> str:
        return f"RateLimiter({', '.join(str(lim) for lim in self.limits)})"
