"""Adaptive pacing: when the caller gives no limit, follow the server's own budget headers.

A response that says the budget is spent (``x-ratelimit-remaining-*`` no larger than the calls
already in flight) pauses dispatch until the matching ``x-ratelimit-reset-*``; 429 hints pause
it through the retry path. So a run against a server whose limit nobody configured still
proceeds near that limit with few rejections.
"""

from __future__ import annotations

from typing import Protocol

from .hints import RateInfo
from .limiter import RateLimiter


class Pacer(Protocol):
    """Learns from each response's rate-limit information."""

    def observe(self, info: RateInfo, now: float, in_flight: int) -> None:
        """A response (or error) arrived carrying ``info``; ``in_flight`` calls are still out."""
        ...


class HeaderPacer:
    """Pauses the limiter until the server's reset time whenever its budget is exhausted."""

    def __init__(self, limiter: RateLimiter, *, reserve: int = 0) -> None:
        self.limiter = limiter
        self.reserve = reserve
        self.pauses = 0

    def observe(self, info: RateInfo, now: float, in_flight: int) -> None:
        until = now
        margin = in_flight + self.reserve
        if (info.remaining_requests is not None and info.reset_requests is not None
                and info.remaining_requests <= margin):
            until = max(until, now + info.reset_requests)
        if (info.remaining_tokens is not None and info.reset_tokens is not None
                and info.limit_tokens is not None
                and info.remaining_tokens <= info.limit_tokens * 0.02 * max(1, margin)):
            until = max(until, now + info.reset_tokens)
        if until > now:
            self.pauses += 1
            self.limiter.pause_until(until)
