"""throttlepool: run existing synchronous API clients fast and safely on large batches.

Everything a user needs is here::

    from throttlepool import ThreadedBatchRunner, generate_batch, batchable, Limits

Further, public by module: ``throttlepool.adapters`` (OpenAI, Anthropic, Gemini, HTTP and
function adapters), ``throttlepool.errors`` (the exception tree), ``throttlepool.limiter``
(limits and shared limiter backends), ``throttlepool.retry``, ``throttlepool.classify``,
``throttlepool.progress``, ``throttlepool.store``, ``throttlepool.cost``,
``throttlepool.batchapi``, ``throttlepool.distributed``, ``throttlepool.sim`` (the local
API simulator) and ``throttlepool.testing`` (fakes). Modules whose names start with ``_``
are internal.
"""

from __future__ import annotations

from .adapters.base import Adapter, CallResult
from .breaker import CircuitBreaker
from .bridge import gather_with_concurrency, run_async
from .classify import retry_on
from .dropins import Batchable, batchable, generate_batch
from .errors import ThrottlepoolError
from .limiter import RateLimiter
from .options import Budget, Checkpoint, Execution, Limits
from .outcome import BatchResult, Outcome, RunStats, Status
from .retry import Retry
from .runner import ThreadedBatchRunner

__version__ = "0.1.0"

__all__ = [
    "Adapter",
    "BatchResult",
    "Batchable",
    "Budget",
    "CallResult",
    "Checkpoint",
    "CircuitBreaker",
    "Execution",
    "Limits",
    "Outcome",
    "RateLimiter",
    "Retry",
    "RunStats",
    "Status",
    "ThreadedBatchRunner",
    "ThrottlepoolError",
    "batchable",
    "gather_with_concurrency",
    "generate_batch",
    "retry_on",
    "run_async",
]
