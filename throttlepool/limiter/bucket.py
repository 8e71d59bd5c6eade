"""Token bucket with burst: ``rate`` units per second refill a bucket of ``burst`` units.

Smoother than a sliding window (no full-window burst after idling) but its guarantee is
``burst + rate * t`` over any interval t, not "at most L per window". Reservations are
scheduled ahead (a theoretical arrival time past now is the FIFO queue), so waits are
computed, never polled, and tokens are taken at admission time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from ..errors import ConfigError, CostExceedsLimit
from .limits import REQUESTS, Cost, Limit
from .ticket import BackendBase, Ticket, replace_in_order

_EPSILON = 1e-9


class TokenBucket(BackendBase):
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
        self._start_full = start_full
        # GCRA form of the bucket: the level at time t is burst - max(0, tat - t) * rate, so
        # tokens are taken at admission time (a pause cannot stack up a burst behind it).
        self._tat: float | None = None
        self._pending: deque[Ticket] = deque()
        self._last_admit = float("-inf")
        self._paused_until = float("-inf")

    def _base(self, now: float) -> float:
        if self._tat is None:
            self._tat = now if self._start_full else now + self.burst / self.rate
        return self._tat

    def _place(self, ticket: Ticket, now: float) -> None:
        w = ticket.cost.of(self.unit)
        tat = self._base(now)
        ticket.handle = tat  # the bucket before this ticket, to undo it when rescheduling
        ready = tat - (self.burst - w) / self.rate
        if ready - now <= _EPSILON:  # float drift of summed w/rate terms, not a real wait
            ready = now
        t = max(now, ready, self._last_admit, self._paused_until)
        ticket.admit_at = t
        self._tat = max(tat, t) + w / self.rate
        self._last_admit = t
        if t > now:
            self._pending.append(ticket)

    def reserve(self, cost: Cost, now: float) -> Ticket:
        w = cost.of(self.unit)
        if w > self.burst:
            raise CostExceedsLimit(w, f"token bucket of burst {self.burst:g}")
        ticket = Ticket(cost, now)
        self._place(ticket, now)
        return ticket

    def _unqueue(self, now: float) -> list[Ticket]:
        """Take the not-yet-admitted tickets out, rewinding the bucket to before them."""
        pending = self._pending
        while pending and pending[0].admit_at <= now:
            pending.popleft()
        queued = list(pending)
        pending.clear()
        if queued:
            self._tat = queued[0].handle
            self._last_admit = now
        return queued

    def _adjust(self, delta: float, admitted_at: float, now: float) -> None:
        """Charge (delta > 0) or refund (delta < 0) units of a ticket admitted at ``admitted_at``.

        A refund credits only what refill cannot already have restored since then: the
        bucket may have been full meanwhile, and refill above the burst is lost.
        """
        tat = self._base(now)
        if delta > 0:
            self._tat = max(tat, now) + delta / self.rate
        elif delta < 0 and tat > now:
            credit = min(-delta / self.rate, admitted_at - delta / self.rate - now)
            if credit > 0:
                self._tat = max(now, tat - credit)

    def _replace(self, queued: list[Ticket], now: float) -> list[Ticket]:
        return replace_in_order(queued, self._place, now)

    def settle(self, ticket: Ticket, actual: Cost, now: float) -> Iterable[Ticket]:
        queued = self._unqueue(now)
        if ticket not in queued:  # a queued ticket is simply re-placed with its new cost
            self._adjust(actual.of(self.unit) - ticket.cost.of(self.unit), ticket.admit_at, now)
        ticket.cost = actual
        return self._replace(queued, now)

    def cancel(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        queued = self._unqueue(now)
        if ticket in queued:
            queued.remove(ticket)
        else:
            self._adjust(-ticket.cost.of(self.unit), ticket.admit_at, now)
        return self._replace(queued, now)

    def pause_until(self, until: float, now: float) -> Iterable[Ticket]:
        if until <= self._paused_until:
            return []
        self._paused_until = until
        return self._replace(self._unqueue(now), now)
