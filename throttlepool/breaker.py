"""Circuit breaker: after N consecutive failures stop calling, probe later, resume on success.

Pure state on an injected clock. The runner asks :meth:`CircuitBreaker.admit` before each
attempt and pauses dispatch while the circuit is open; standalone, :meth:`call` raises
:class:`CircuitOpenError` instead of calling a service that is down.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigError, ThrottlepoolError

R = TypeVar("R")


class CircuitOpenError(ThrottlepoolError):
    """The circuit is open: the service failed repeatedly and is not called until a probe."""


class BreakerState(enum.StrEnum):
    """closed: calls flow; open: no calls; half_open: one probe call decides."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures for ``reset_after`` seconds.

    Each failed probe doubles the open time, up to ``max_reset_after``.
    """

    def __init__(
        self,
        threshold: int = 5,
        reset_after: float = 10.0,
        *,
        max_reset_after: float = 120.0,
        clock: Clock | None = None,
    ) -> None:
        if threshold < 1:
            raise ConfigError(f"breaker threshold must be at least 1, got {threshold}")
        if reset_after <= 0:
            raise ConfigError(f"breaker reset_after must be positive, got {reset_after}")
        self.threshold = threshold
        self.reset_after = reset_after
        self.max_reset_after = max(max_reset_after, reset_after)
        self.clock = clock or SYSTEM_CLOCK
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.trips = 0
        self._open_for = reset_after
        self._opened_at = 0.0
        self._probe_out = False
        self._lock = threading.Lock()

    def admit(self) -> float | None:
        """0 if a call may start now, seconds to wait while open, None while a probe is out."""
        if self.state is BreakerState.CLOSED:
            return 0.0  # the common case needs no lock: a stale read only delays a trip by a call
        with self._lock:
            return self._admit_locked()

    def _admit_locked(self) -> float | None:
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN:
            remaining = self._opened_at + self._open_for - self.clock.now()
            if remaining > 0:
                return remaining
            self.state = BreakerState.HALF_OPEN
            self._probe_out = False
        if self._probe_out:
            return None
        self._probe_out = True
        return 0.0

    def record_success(self) -> None:
        """A call succeeded: close the circuit."""
        if self.state is BreakerState.CLOSED and self.failures == 0:
            return
        with self._lock:
            self.failures = 0
            self._probe_out = False
            self._open_for = self.reset_after
            self.state = BreakerState.CLOSED

    def record_failure(self) -> None:
        """A call failed in a way that says the service is unhealthy."""
        with self._lock:
            self.failures += 1
            if self.state is BreakerState.HALF_OPEN:
                self._open_for = min(self._open_for * 2, self.max_reset_after)
                self._trip()
            elif self.state is BreakerState.CLOSED and self.failures >= self.threshold:
                self._trip()

    def record_neutral(self) -> None:
        """A call ended in a way that says nothing about health; free the probe slot."""
        with self._lock:
            self._probe_out = False

    def _trip(self) -> None:
        self.state = BreakerState.OPEN
        self._opened_at = self.clock.now()
        self._probe_out = False
        self.trips += 1

    def _guard(self) -> None:
        wait = self.admit()
        if wait is None or wait > 0:
            raise CircuitOpenError(f"circuit open after {self.failures} consecutive failures")

    def call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Call ``fn`` through the breaker; raises CircuitOpenError while open."""
        self._guard()
        try:
            result = fn(*args, **kwargs)
        except Exception:
            self.record_failure()
            raise
        self.record_success()
        return result

    async def acall(self, fn: Callable[..., Awaitable[R]], *args: Any, **kwargs: Any) -> R:
        """Await ``fn`` through the breaker; raises CircuitOpenError while open."""
        self._guard()
        try:
            result = await fn(*args, **kwargs)
        except Exception:
            self.record_failure()
            raise
        self.record_success()
        return result
