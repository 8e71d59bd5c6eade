"""throttlepool: run existing synchronous API clients fast and safely on large batches.

The main entry points::

    from throttlepool import ThreadedBatchRunner, generate_batch, batchable, RateLimiter
"""

from __future__ import annotations

from .adapters.base import Adapter, CallResult
from .adapters.function import CallableAdapter
from .breaker import BreakerState, CircuitBreaker, CircuitOpenError
from .bridge import gather_with_concurrency, run_async
from .classify import ErrorKind, Verdict, default_classifier, retry_on
from .clock import Clock, SystemClock
from .dropins import Batchable, batchable, generate_batch
from .errors import (
    CallTimeout,
    CheckpointMismatch,
    ConfigError,
    CostExceedsLimit,
    InputError,
    ItemError,
    LimiterUnavailable,
    MissingExtra,
    NotAttempted,
    RetryHintTooLong,
    RunStopped,
    StoreError,
    ThrottlepoolError,
)
from .hints import RateInfo
from .limiter import Cost, Limit, RateLimiter, TokenBucketLimiter
from .outcome import BatchResult, Outcome, RunStats, Source, Status, Usage
from .progress import CallbackProgress, ProgressSink, TqdmProgress
from .retry import AsyncRetry, Retry, retrying
from .runner import ThreadedBatchRunner

__version__ = "0.1.0"

__all__ = [
    "Adapter",
    "AsyncRetry",
    "BatchResult",
    "Batchable",
    "BreakerState",
    "CallResult",
    "CallTimeout",
    "CallableAdapter",
    "CallbackProgress",
    "CheckpointMismatch",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConfigError",
    "Cost",
    "CostExceedsLimit",
    "ErrorKind",
    "InputError",
    "ItemError",
    "Limit",
    "LimiterUnavailable",
    "MissingExtra",
    "NotAttempted",
    "Outcome",
    "ProgressSink",
    "RateInfo",
    "RateLimiter",
    "Retry",
    "RetryHintTooLong",
    "RunStats",
    "RunStopped",
    "Source",
    "Status",
    "StoreError",
    "SystemClock",
    "ThreadedBatchRunner",
    "ThrottlepoolError",
    "TokenBucketLimiter",
    "TqdmProgress",
    "Usage",
    "Verdict",
    "batchable",
    "default_classifier",
    "gather_with_concurrency",
    "generate_batch",
    "retry_on",
    "retrying",
    "run_async",
]
