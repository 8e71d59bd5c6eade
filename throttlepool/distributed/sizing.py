"""How many items a Dask chunk takes: small enough under a request limit that the chunks in
flight hold only a few seconds of the limit's admissions (so a Ctrl-C stops soon, a killed
driver loses little, and outcomes reach the driver steadily), large otherwise (fewer tasks).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..limiter.limits import REQUESTS

AHEAD = 2.0  # seconds of a binding request limit's admissions dispatched beyond the calls'


def request_rate(limits: Iterable[tuple[float, float, str]]) -> float | None:
    """The tightest request limit, in calls a second; None when no request limit binds."""
    rates = [amount / period for amount, period, unit in limits
             if unit == REQUESTS and period > 0]
    return min(rates) if rates else None


def chunk_items(rate: float | None, latency: float, window: int, largest: int) -> int:
    """A chunk's size: under a request limit, ``window`` chunks hold what the limit admits
    while a call runs (``latency`` seconds) and for ``AHEAD`` more seconds, so a stop
    leaves little dispatched and each chunk reports within about a second; else ``largest``.
    """
    if rate is None:
        return largest
    return max(1, min(largest, math.ceil(rate * (latency + AHEAD) / window)))


class Mean:
    """A running mean (of the calls' latency)."""

    def __init__(self) -> None:
        self.total, self.n = 0.0, 0

    def add(self, value: float) -> None:
        """Count ``value`` in."""
        self.total += value
        self.n += 1

    def value(self, default: float) -> float:
        """The mean, or ``default`` before any value."""
        return self.total / self.n if self.n else default
