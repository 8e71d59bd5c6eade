"""Rate limiters: an exact sliding-window log (default) and a token bucket, over one mechanism."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..clock import Clock
from .bucket import TokenBucket
from .core import Permit, RateLimiter
from .limits import (
    INPUT_TOKENS,
    ONE_REQUEST,
    OUTPUT_TOKENS,
    REQUESTS,
    TOKENS,
    Cost,
    Limit,
    LimitSpec,
    build_limits,
    counts_tokens,
)
from .margin import AdmissionMargin
from .sliding import SlidingWindowLog
from .ticket import BackendBase, LimiterBackend, Ticket
from .url import limiter_from_url

if TYPE_CHECKING:
    from .redis import RedisWindowBackend
    from .sqlite_shared import SQLiteWindowBackend


def __getattr__(name: str) -> Any:
    """Shared backends load lazily, so ``redis`` stays an optional extra."""
    if name == "SQLiteWindowBackend":
        from .sqlite_shared import SQLiteWindowBackend
        return SQLiteWindowBackend
    if name == "RedisWindowBackend":
        from .redis import RedisWindowBackend  # raises MissingExtra without redis
        return RedisWindowBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TokenBucketLimiter(RateLimiter):
    """Token bucket with burst (seed 001's ``RateLimiter(requests_per_second, burst_size)``)."""

    def __init__(
        self,
        requests_per_second: float,
        burst_size: float | None = None,
        *,
        unit: str = REQUESTS,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(backend=TokenBucket(requests_per_second, burst_size, unit), clock=clock)


__all__ = [
    "INPUT_TOKENS",
    "ONE_REQUEST",
    "OUTPUT_TOKENS",
    "REQUESTS",
    "TOKENS",
    "AdmissionMargin",
    "BackendBase",
    "Cost",
    "Limit",
    "LimitSpec",
    "LimiterBackend",
    "Permit",
    "RateLimiter",
    "RedisWindowBackend",
    "SQLiteWindowBackend",
    "SlidingWindowLog",
    "Ticket",
    "TokenBucket",
    "TokenBucketLimiter",
    "build_limits",
    "counts_tokens",
    "limiter_from_url",
]
