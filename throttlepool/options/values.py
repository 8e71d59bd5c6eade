"""The options of a run, grouped into value objects that explain themselves.

* :class:`Limits`: how fast (requests and tokens per window, or a shared limiter).
* :class:`~throttlepool.retry.Retry`: how often a failed item is tried again (reused as is).
* :class:`Checkpoint`: what is kept (the store, the run's name, the answer cache).
* :class:`Execution`: how the work runs (calls in flight, timeouts, executor, progress).
* :class:`Budget`: how much it may cost (``max_cost`` and the prices of a run).

Each is frozen and checks its fields when built, naming the field in the ConfigError, so a
bad value is refused before a runner, a Dask driver or a worker chunk ever sees it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .._executors import Executor, executor_named
from ..breaker import CircuitBreaker
from ..clock import SYSTEM_CLOCK, Clock
from ..cost import BATCH as BATCH  # the modes a Budget takes, re-exported for the table
from ..cost import ONLINE as ONLINE
from ..cost import Pricing, RunBudget
from ..errors import ConfigError
from ..limiter import (
    Limit,
    LimitSpec,
    RateLimiter,
    build_limits,
    counts_tokens,
    limiter_from_url,
)
from ..progress import ProgressSpec
from ..store import open_cache, open_store
from ..store.base import Cache, Store
from .parse import checked, non_negative_float, positive_float, positive_int

#: Calls in flight by default everywhere (runner, CLI, drop-ins, Dask chunks): enough to keep
#: a 500 requests/minute limit busy at about 1 s latency; raise it for higher limits.
DEFAULT_BATCH_SIZE = 8

BreakerSpec = CircuitBreaker | int | bool | None


def _optional(name: str, parse: Any, value: Any) -> Any:
    return None if value is None else checked(name, parse, value)


@dataclass(frozen=True)
class Limits:
    """How fast calls may go: ``Limits(rpm=500, tpm=200_000)``.

    ``rpm``/``tpm``/``rps`` and ``limits=["500/minute", "200000 tokens/minute"]`` (exact
    sliding windows) add up; ``safety`` scales them all (0.9 keeps 10% in reserve).
    ``limiter_url`` (``redis://host:6379/0``, ``sqlite:///path``) shares them with other
    processes and machines under ``limiter_name``; ``limiter`` is a ready RateLimiter, shared
    by whoever holds it, instead of any of those. ``margin`` (seconds) lengthens the time each
    admission counts, to absorb the jitter between our clock and the server's (None: adaptive).
    """

    rpm: float | None = None
    tpm: float | None = None
    rps: float | None = None
    itpm: float | None = None  # input tokens per minute (Anthropic's ITPM)
    otpm: float | None = None  # output tokens per minute (OTPM)
    limits: tuple[LimitSpec, ...] = ()
    safety: float = 1.0
    margin: float | None = None
    limiter: RateLimiter | None = None
    limiter_url: str | None = None
    limiter_name: str = "default"

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "rps", "itpm", "otpm"):
            object.__setattr__(self, name, _optional(name, positive_float, getattr(self, name)))
        specs: Any = self.limits
        if specs is None:
            specs = ()
        elif isinstance(specs, str | Limit):
            specs = (specs,)
        object.__setattr__(self, "limits", tuple(specs))
        safety = checked("safety", positive_float, self.safety)
        if safety > 1:
            raise ConfigError(f"safety: expected a factor in (0, 1], got {self.safety!r}")
        object.__setattr__(self, "margin", _optional("margin", non_negative_float, self.margin))
        if self.limiter is not None and (self.rpm or self.tpm or self.rps or self.itpm
                                         or self.otpm or self.limits):
            raise ConfigError("give either limiter= or rpm/tpm/rps/itpm/otpm/limits, not both")
        if self.limiter is not None and self.limiter_url is not None:
            raise ConfigError("give either limiter= or limiter_url=, not both")
        self.resolved()  # a bad limit string is refused now, naming the text

    def resolved(self) -> list[Limit]:
        """Every limit as a :class:`Limit`, the shorthands included, scaled by ``safety``."""
        if self.limiter is not None:
            return list(self.limiter.limits)
        return build_limits(self.limits, rpm=self.rpm, tpm=self.tpm, rps=self.rps,
                            itpm=self.itpm, otpm=self.otpm, safety=self.safety)

    @property
    def token_limited(self) -> bool:
        """Whether any limit counts tokens (calls then need an estimate of their size)."""
        return counts_tokens(self.resolved())

    def build(self, clock: Clock | None = None) -> RateLimiter:
        """The limiter these options describe: the given one, a shared one or a local one."""
        if self.limiter is not None:
            return self.limiter
        clock = clock or SYSTEM_CLOCK
        if self.limiter_url is not None:
            return limiter_from_url(self.limiter_url, self.resolved(), clock=clock,
                                    margin=self.margin, name=self.limiter_name)
        return RateLimiter(*self.resolved(), clock=clock, margin=self.margin)


@dataclass(frozen=True)
class Checkpoint:
    """What is kept: ``Checkpoint("runs.db", run_name="v2")``.

    ``store`` is a path, a URL or a Store (None: nothing is kept); a rerun with the same
    ``run_name`` resumes, calling failed items again unless ``retry_failed`` is False.
    ``cache`` reuses answers to identical requests (True: in the store's file; a path; a
    Cache), for ``cache_ttl`` seconds (None: for ever).
    """

    store: Any = None
    run_name: str | None = None
    retry_failed: bool = True
    cache: Any = False
    cache_ttl: float | None = None

    def __post_init__(self) -> None:
        if self.run_name is not None and (not isinstance(self.run_name, str)
                                          or not self.run_name.strip()):
            raise ConfigError(f"run_name: expected a non-empty string, got {self.run_name!r}")
        if not isinstance(self.retry_failed, bool):
            raise ConfigError(f"retry_failed: expected true or false, got {self.retry_failed!r}")
        object.__setattr__(self, "cache_ttl",
                           _optional("cache_ttl", positive_float, self.cache_ttl))

    @property
    def owns_store(self) -> bool:
        """Whether opening makes a new Store (which its opener must close)."""
        return self.store is not None and self.store is not False and not isinstance(
            self.store, Store)

    @property
    def owns_cache(self) -> bool:
        """Whether opening makes a new Cache (which its opener must close)."""
        return self.cache is not None and self.cache is not False and not isinstance(
            self.cache, Cache)

    def open_store(self) -> Store | None:
        """The Store (opened from a path or URL when one was given), or None."""
        return None if self.store is None or self.store is False else open_store(self.store)

    def open_cache(self, store: Store | None) -> Cache | None:
        """The answer cache, in ``store``'s file when ``cache`` is True."""
        return open_cache(self.cache, store, self.cache_ttl)


@dataclass(frozen=True)
class Execution:
    """How the work runs: ``Execution(batch_size=16, timeout=30)``.

    ``batch_size`` calls at most are in flight; one call may take ``timeout`` seconds and the
    whole run ``deadline`` seconds. ``breaker`` stops calling a failing endpoint for a while
    (True: 10 failures in a row; N; a CircuitBreaker; False). ``executor`` is "threads" or
    "dask" (with ``scheduler``, an address or a Client). ``progress`` is True, a sink or a
    callback; ``seed`` fixes the retry jitter; ``window`` bounds the outcomes held for
    ordering (None: 64 per call in flight, at least 4096); ``adaptive`` paces by the
    server's rate headers (None: on); ``clock`` replaces the system clock (tests).
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    timeout: float | None = None
    deadline: float | None = None
    breaker: BreakerSpec = True
    executor: str | Executor = "threads"
    scheduler: Any = None
    progress: ProgressSpec = None
    desc: str = "items"
    seed: int | None = None
    window: int | None = None
    adaptive: bool | None = None
    clock: Clock | None = None

    def __post_init__(self) -> None:
        checked("batch_size", positive_int, self.batch_size)
        if not isinstance(self.batch_size, int):
            raise ConfigError(f"batch_size: expected an integer, got {self.batch_size!r}")
        for name in ("timeout", "deadline"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float)
                                          and not isinstance(value, bool) and value > 0
                                          and not math.isnan(value)):
                raise ConfigError(f"{name}: expected a positive number of seconds, "
                                  f"got {value!r}")
        if self.window is not None:
            checked("window", positive_int, self.window)
        if not isinstance(self.breaker, CircuitBreaker | bool | int | None):
            raise ConfigError(f"breaker: expected True, False, a failure count or a "
                              f"CircuitBreaker, got {self.breaker!r}")
        if not isinstance(self.executor, str | Executor):
            raise ConfigError(f"executor: expected 'threads', 'dask' or an Executor, "
                              f"got {self.executor!r}")

    @property
    def window_size(self) -> int:
        """Outcomes held at most for in-order delivery."""
        return self.window or max(4096, 64 * self.batch_size)

    def make_executor(self) -> Executor:
        """The executor object (a name is looked up, with ``scheduler``)."""
        if isinstance(self.executor, Executor):
            return self.executor
        return executor_named(self.executor, scheduler=self.scheduler)

    def make_breaker(self, clock: Clock) -> CircuitBreaker | None:
        """The circuit breaker ``breaker`` asks for, on ``clock``."""
        spec = self.breaker
        if spec is None or spec is False:
            return None
        if spec is True:
            return CircuitBreaker(threshold=10, reset_after=5.0, max_reset_after=60.0,
                                  clock=clock)
        if isinstance(spec, CircuitBreaker):
            return spec
        return CircuitBreaker(threshold=int(spec), reset_after=5.0, clock=clock)


@dataclass(frozen=True)
class Budget:
    """How much a run may cost: ``Budget(max_cost=5.0)`` (USD).

    ``price_in``/``price_out`` (USD per million tokens) replace the price table's for this
    run; ``mode="batch"`` prices at a provider's batch discount (and runs through its batch
    API where one is wired). All None: costs are shown where known and never capped.
    """

    max_cost: float | None = None
    price_in: float | None = None
    price_out: float | None = None
    mode: str = ONLINE

    def __post_init__(self) -> None:
        for name in ("max_cost", "price_in", "price_out"):
            object.__setattr__(self, name,
                               _optional(name, non_negative_float, getattr(self, name)))
        if self.mode not in (ONLINE, BATCH):
            raise ConfigError(f"mode: expected {ONLINE!r} or {BATCH!r}, got {self.mode!r}")

    @property
    def capped(self) -> bool:
        """Whether admissions must reserve their projected cost."""
        return self.max_cost is not None

    def recorded_pricing(self) -> Pricing | None:
        """What the checkpoint records about prices (``run_settings(pricing=)``): None while
        the table's online prices hold, so a run without overrides records none."""
        if self.price_in is None and self.price_out is None and self.mode == ONLINE:
            return None
        return Pricing(price_in=self.price_in, price_out=self.price_out, mode=self.mode)

    def gate(self, settings: Mapping[str, Any]) -> RunBudget | None:
        """A fresh ``max_cost`` gate for one run recorded with ``settings`` (None: no cap);
        a ConfigError, before any call, when the run's model has no price."""
        if self.max_cost is None:
            return None
        return RunBudget(Pricing.from_settings(settings), self.max_cost)


def field_names(cls: type) -> tuple[str, ...]:
    """The keyword names a value object takes."""
    return tuple(f.name for f in fields(cls))
