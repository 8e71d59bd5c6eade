"""A run's stop switch and its waits: every wait a worker makes can be cut short by a stop.

Loop thread only. The engine and the attempts of each item share one :class:`RunControl`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from typing import Any

from ._pool import RunGate
from .clock import Clock
from .outcome import RunStats


class RunControl:
    """Whether the run is stopping (and why), and the waits it may interrupt."""

    def __init__(self, clock: Clock, stats: RunStats) -> None:
        self.clock = clock
        self.stats = stats
        self.stopping = False
        self.stop_reason: BaseException | None = None
        self.interrupted = False
        self._changed = asyncio.Event()  # set (and replaced) whenever waiters should re-check
        self._watchers = 0
        self._waiting: set[asyncio.Task[Any]] = set()
        self._waits: dict[object, tuple[float, str]] = {}  # shown in stats.waiting_for
        #: Lookahead's gate (see _pool.RunGate): a stop withdraws the run's queued calls.
        self.gate: RunGate | None = None

    def request_stop(self, reason: BaseException, *, interrupted: bool = False) -> None:
        """Stop dispatching; the waits in progress end at once."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        self.interrupted = self.interrupted or interrupted
        if self.gate is not None:
            self.gate.stop()
        for task in list(self._waiting):
            task.cancel()
        self.notify()

    def notify(self) -> None:
        """Something waiters watch changed (a commit, space, the breaker, the budget)."""
        if self._watchers:
            self._changed.set()
            self._changed = asyncio.Event()

    async def changed(self) -> None:
        """Return at the next ``notify``."""
        self._watchers += 1
        try:
            await self._changed.wait()
        finally:
            self._watchers -= 1

    async def pause(self, awaitable: Awaitable[Any]) -> bool:
        """Await a wait that a stop may cut short; False if the run stopped meanwhile."""
        if self.stopping:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            return False
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            await awaitable
            return not self.stopping
        except asyncio.CancelledError:
            if self.stopping and task.uncancel() == 0:
                return False
            raise
        finally:
            self._waiting.discard(task)

    async def sleep_or_change(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less when something changes meanwhile."""
        sleeper = asyncio.ensure_future(self.clock.asleep(delay))
        changed = asyncio.ensure_future(self.changed())
        try:
            await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()

    @contextlib.contextmanager
    def shown_wait(self, reason: str, until: float | None) -> Iterator[None]:
        """Show in the stats what a worker waits for: progress displays say the earliest."""
        token = object()
        self._waits[token] = (float("inf") if until is None else until, reason)
        self._show_waits()
        try:
            yield
        finally:
            del self._waits[token]
            self._show_waits()

    def _show_waits(self) -> None:
        stats = self.stats
        if not self._waits:
            stats.waiting_for = stats.waiting_until = None
            return
        until, stats.waiting_for = min(self._waits.values())
        stats.waiting_until = None if until == float("inf") else until
