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


class SystemClock:
    """The real clock: ``time.monotonic`` and real sleeps."""

    #: The builtin itself, not a method around it: a run reads the clock ~10 times per call.
    now = staticmethod(time.monotonic)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(timeout, 0.0))

    async def await_event(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await event.wait()
        except TimeoutError:
            return False
        return True


SYSTEM_CLOCK = SystemClock()
