"""Stop-the-world pauses of this process (the garbage collector's), as the limiter sees them.

A call is counted from its start plus its own hand-off delay (see ``AnsweredArrivals.answered``):
the client work before its bytes leave is assumed to grow with the load that delayed its
hand-off. A collection of the oldest generation breaks that: it stalls every thread for
100-200 ms in a large heap (measured under pytest) after a call has started, unseen by its
hand-off delay, so the server counts the call that much later than we do, and the call also
looks slow, which teaches a "fastest" duration that is mostly client stall. The limiter
counts a call as starting after any pause that overlapped it (its duration shortened by the
pause) and learns no fastest duration from it.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any, Protocol

#: Pauses shorter than this are the young generations' (tens of microseconds): not kept.
_NOTABLE = 0.002
_KEPT = 64


class PauseSource(Protocol):
    """Seconds this process stood still between two instants of the limiter's clock."""

    #: When the newest pause ended (-inf: none yet). Every answered call asks whether it
    #: started before that, and only then for :meth:`between`.
    last_ended: float

    def between(self, start: float, end: float) -> float: ...


class NoPauses:
    """A process that never pauses (a fake clock's world; tests feed their own source)."""

    last_ended = float("-inf")

    def between(self, start: float, end: float) -> float:
        return 0.0


class CollectorPauses:
    """The garbage collector's notable pauses, on the monotonic clock (``SYSTEM_CLOCK``).

    One hook per process (``gc.callbacks``), shared by every limiter; it keeps the last 64
    in a ring of fixed size: the hook runs in whichever thread allocates, even inside
    :meth:`between`, so the ring is only ever assigned to, never resized.
    """

    _instance: CollectorPauses | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self._began = 0.0
        self._ring: list[tuple[float, float]] = [(0.0, 0.0)] * _KEPT
        self._next = 0
        # The end of the newest pause kept: a call that started after it met none. Every
        # call asks, and walking the whole ring cost ~20-40 us per call (no-op runs).
        self.last_ended = float("-inf")
        gc.callbacks.append(self._observe)

    @classmethod
    def shared(cls) -> CollectorPauses:
        """The process's one tracker, created (and hooked in) on first use."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if phase == "start":
            self._began = now
        elif now - self._began >= _NOTABLE:
            self._ring[self._next % _KEPT] = (self._began, now)
            self._next += 1
            self.last_ended = now

    def between(self, start: float, end: float) -> float:
        if self.last_ended <= start:
            return 0.0
        # Pauses are kept in time order (the GIL runs one collection at a time): walk back
        # from the newest and stop at the first that ended before ``start``.
        ring, total = self._ring, 0.0
        newest = self._next - 1
        for k in range(newest, max(newest - _KEPT, -1), -1):
            began, ended = ring[k % _KEPT]
            if ended <= start:
                break
            overlap = min(ended, end) - max(began, start)
            if overlap > 0:
                total += overlap
        return total
