"""The clock seam: policies read time from a :class:`Clock`; only mechanisms sleep on it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A monotonic clock in seconds that can also sleep and wait for a wake-up."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Block until ``event`` is set or ``timeout`` passes; True if it was set."""
        ...

    async def await_event(self, event: asyncio.Event, timeout: float) -> bool:
        """Suspend until ``event`` is set or ``timeout`` passes; True if it was set."""
        ...


#: How late an event loop's timer may fire, as a share of its wait: Linux lets an epoll_wait
#: timeout slip by a thousandth (at most 100 ms) to batch wake-ups, where time.sleep and a
#: thread's timed wait slip by 50 us. Measured here: asyncio.sleep(20) woke 18.8 ms late,
#: time.sleep(20) 0.1 ms; a run's calls for a 60 s window's second minute started 58 ms
#: after their admission, and that delay then counted towards the next boundary's too.
LOOP_TIMER_SLACK = 0.001
#: A loop's timer may also fire up to its millisecond resolution late (and the selector rounds
#: a timeout up to whole milliseconds): the early wake-up leaves room for both.
LOOP_TIMER_RESOLUTION = 0.001
#: A wait this short is taken whole: its slack is about the loop's resolution.
WHOLE_WAIT = 1.0


def early_step(remaining: float) -> float | None:
    """The next wait on an event loop for a deadline ``remaining`` seconds away, or None once
    it has passed: a long wait stops short by twice the loop's slack, so even a late timer
    fires before the deadline, and the rest is waited in a short step or two."""
    if not remaining > 0.0:  # (NaN too: no wait, never a loop of them)
        return None
    if remaining <= WHOLE_WAIT:
        return remaining
    return remaining * (1.0 - 2.0 * LOOP_TIMER_SLACK) - 2.0 * LOOP_TIMER_RESOLUTION


class SystemClock:
    """The real clock: ``time.monotonic`` and real sleeps."""

    #: The builtin itself, not a method around it: a run reads the clock ~10 times per call.
    now = staticmethod(time.monotonic)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        await asyncio.sleep(early_step(seconds) or 0.0)  # the first wait yields, even at 0
        while (step := early_step(deadline - time.monotonic())) is not None:
            await asyncio.sleep(step)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(timeout, 0.0))

    async def await_event(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        deadline = time.monotonic() + timeout
        step: float | None = early_step(timeout) or 0.0  # the first wait yields, even at 0
        while step is not None:
            try:
                async with asyncio.timeout(step):
                    await event.wait()
            except TimeoutError:
                step = early_step(deadline - time.monotonic())
                continue
            return True
        return False


SYSTEM_CLOCK = SystemClock()
