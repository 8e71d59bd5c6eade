"""Waiting for a reservation, by a thread or an asyncio task, on the limiter's clock.

:class:`Waiting` is the limiter's side that waits: ``acquire``/``aacquire``, ``wait``/
``wait_async`` and the context managers, written once over the locked steps the limiter
provides (``reserve``, ``admitted``, ``_check``, ``cancel``). A waiter whose time moves earlier
(a refund, a cancelled reservation) is woken by :func:`wake` instead of sleeping out its wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ..clock import Clock
from .limits import ONE_REQUEST, Cost
from .ticket import Ticket

Permit = Ticket


def wake(tickets: Iterable[Ticket]) -> None:
    """Wake the waiter of each ticket (its admission time moved earlier)."""
    for ticket in tickets:
        waker = ticket.waker
        if waker is None:
            continue
        if isinstance(waker, threading.Event):
            waker.set()
        else:
            loop, event = waker
            loop.call_soon_threadsafe(event.set)


class Waiting:
    """Blocking and awaiting waits over a limiter's locked steps (see the module's doc)."""

    __slots__ = ()
    clock: Clock

    def reserve(self, cost: Cost = ONE_REQUEST) -> Permit:
        """Record a reservation without waiting (the limiter's)."""
        raise NotImplementedError

    def admitted(self, permit: Permit) -> bool:
        """True when ``permit`` may proceed now (the limiter's)."""
        raise NotImplementedError

    def cancel(self, permit: Permit) -> None:
        """Withdraw a reservation (the limiter's)."""
        raise NotImplementedError

    def _check(self, permit: Permit) -> float:
        raise NotImplementedError

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
