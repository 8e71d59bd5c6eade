"""Token bucket with burst: ``rate`` units per second refill a bucket of ``burst`` units.

Smoother than a sliding window (no full-window burst after idling) but its guarantee is
``burst + rate * t`` over any interval t, not "at most L per window". Reservations may drive
the level below zero; the deficit is the FIFO queue, so waits are computed, never polled.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable

from ..errors import ConfigError, CostExceedsLimit
from .limits import REQUESTS, Cost, Limit
from .ticket import Ticket


class TokenBucket:
    """In-memory token-bucket backend for one unit (requests by default)."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        unit: str = REQUESTS,
        *,
        start_full: bool = True,
    ) -> None:
        if not rate > 0:
            raise ConfigError(f"token bucket rate must be positive, got {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        if not self.burst >= 1:
            raise ConfigError(f"token bucket burst must be at least 1, got {burst!r}")
        self.unit = unit
        self.limits = [Limit(self.burst, self.burst / self.rate, unit)]
        self._level = self.burst if start_full else 0.0
        self._stamp: float | None = None
        self._pending: deque[Ticket] = deque()
        self._last_admit = float("-inf")
        self._paused_until = float("-inf")

    def _refill(self, now: float) -> None:
        if self._stamp is None:
            self._stamp = now
        elif now > self._stamp:
            self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
            self._stamp = now

    def _place(self, ticket: Ticket, now: float) -> None:
        w = ticket.cost.of(self.unit)
        self._level -= w
        deficit_wait = -self._level / self.rate if self._level < 0 else 0.0
        t = max(now + deficit_wait, self._last_admit, self._paused_until)
        ticket.admit_at = t
        self._last_admit = t
        if t > now:
            self._pending.append(ticket)

    def reserve(self, cost: Cost, now: float) -> Ticket:
        w = cost.of(self.unit)
        if w > self.burst:
            raise CostExceedsLimit(w, f"token bucket of burst {self.burst:g}")
        self._refill(now)
        ticket = Ticket(cost, now)
        self._place(ticket, now)
        return ticket

    def _reschedule(self, now: float) -> list[Ticket]:
        pending = self._pending
        while pending and pending[0].admit_at <= now:
            pending.popleft()
        queued = list(pending)
        pending.clear()
        for ticket in queued:
            self._level += ticket.cost.of(self.unit)
        self._last_admit = now if queued else self._last_admit
        moved = []
        for ticket in queued:
            before = ticket.admit_at
            self._place(ticket, now)
            if ticket.admit_at < before:
                moved.append(ticket)
        return moved

    def settle(self, ticket: Ticket, actual: Cost, now: float) -> Iterable[Ticket]:
        self._refill(now)
        self._level = min(
            self.burst, self._level + ticket.cost.of(self.unit) - actual.of(self.unit)
        )
        ticket.cost = actual
        return self._reschedule(now)

    def cancel(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        self._refill(now)
        with contextlib.suppress(ValueError):
            self._pending.remove(ticket)
        self._level = min(self.burst, self._level + ticket.cost.of(self.unit))
        return self._reschedule(now)

    def pause_until(self, until: float, now: float) -> Iterable[Ticket]:
        if until <= self._paused_until:
            return []
        self._paused_until = until
        self._refill(now)
        return self._reschedule(now)
