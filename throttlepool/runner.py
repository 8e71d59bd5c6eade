"""ThreadedBatchRunner: run a sync callable over many items, fast and within the limits."""

from __future__ import annotations

import random
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Generic, TypeVar

from .adapters import as_adapter
from .adapters.base import Adapter, Delegating
from .breaker import CircuitBreaker
from .calls import RunConfig
from .channel import OutcomeChannel, consume
from .classify import Classifier, Verdict
from .clock import SYSTEM_CLOCK, Clock
from .engine import Engine, run_to_result
from .errors import ConfigError, StoreError
from .executors import Executor, executor_named
from .ledger import run_settings
from .limiter import TOKENS, LimitSpec, RateLimiter, build_limits, limiter_from_url
from .outcome import BatchResult, Outcome
from .pacing import HeaderBudget
from .pool import WorkerPool
from .progress import ProgressSpec, make_progress
from .retry import Retry
from .run_engine import RunEngine
from .store import open_cache, open_store
from .store.base import Cache, Store
from .store.samples import with_samples
from .sync import StreamIterator

T = TypeVar("T")
R = TypeVar("R")

BreakerSpec = CircuitBreaker | int | bool | None


def _make_breaker(spec: BreakerSpec, clock: Clock) -> CircuitBreaker | None:
    if spec is None or spec is False:
        return None
    if spec is True:
        return CircuitBreaker(threshold=10, reset_after=5.0, max_reset_after=60.0, clock=clock)
    if isinstance(spec, CircuitBreaker):
        return spec
    return CircuitBreaker(threshold=int(spec), reset_after=5.0, clock=clock)


def _open_store(spec: Any) -> Store | None:
    return None if spec is None or spec is False else open_store(spec)


class ThreadedBatchRunner(Generic[R]):
    """Runs ``fn(item)`` for many items on its own thread pool, under a rate limiter.

    ``batch_size`` calls at most are in flight. Limits come from ``rpm``/``tpm``/``rps`` or
    ``limits=["500/minute", "200000 tokens/minute"]`` (exact sliding windows), or a shared
    ``limiter``. Each admission counts for ``margin`` seconds beyond its window, so jitter
    between our decision and the server's clock cannot push a window over. Failed attempts
    retry by ``retries``/``retry`` (full-jitter backoff; server hints win and a 429 pauses all
    dispatch). Results keep input order.
    """

    def __init__(
        self,
        fn: Callable[[Any], R] | Adapter[R],
        *,
        batch_size: int = 8,
        rpm: float | None = None,
        tpm: float | None = None,
        rps: float | None = None,
        limits: Iterable[LimitSpec] | LimitSpec | None = None,
        safety: float = 1.0,
        margin: float | None = None,
        limiter: RateLimiter | None = None,
        limiter_url: str | None = None,
        retries: int | Retry | None = 3,
        retry: Retry | None = None,
        classifier: Classifier | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
        breaker: BreakerSpec = True,
        progress: ProgressSpec = None,
        store: Any = None,
        run_name: str | None = None,
        retry_failed: bool = True,
        cache: Any = False,
        cache_ttl: float | None = None,
        estimate: Callable[[Any], float] | None = None,
        adaptive: bool | None = None,
        window: int | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
        desc: str = "items",
        executor: str | Executor = "threads",
        scheduler: Any = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout!r}")
        if deadline is not None and deadline <= 0:
            raise ConfigError(f"deadline must be positive, got {deadline!r}")
        self.clock = clock or SYSTEM_CLOCK
        self.adapter = as_adapter(fn, estimate=estimate, classifier=classifier)
        self.batch_size = batch_size
        if limiter is not None and (rpm or tpm or rps or limits):
            raise ConfigError("give either limiter= or rpm/tpm/rps/limits, not both")
        self.executor = (executor if isinstance(executor, Executor)
                         else executor_named(executor, scheduler=scheduler))
        self.scheduler, self.limiter_url, self.margin = scheduler, limiter_url, margin
        if limiter is None and limiter_url is not None:  # shared by processes/machines
            limiter = limiter_from_url(limiter_url, build_limits(
                limits, rpm=rpm, tpm=tpm, rps=rps, safety=safety), clock=self.clock, margin=margin)
        self.limiter = limiter or RateLimiter(
            *build_limits(limits, rpm=rpm, tpm=tpm, rps=rps, safety=safety), clock=self.clock,
            margin=margin,
        )
        self.retry = retry or Retry.of(retries)
        self._classify = classifier or self.retry.classifier
        self.timeout = timeout
        self.deadline = deadline
        self.breaker = _make_breaker(breaker, self.clock)
        self.progress = progress
        self.desc = desc
        self._owns_store = store is not None and not isinstance(store, Store)
        self.store = _open_store(store)
        self.run_name = run_name
        self.retry_failed = retry_failed
        self._owns_cache = cache is not None and cache is not False and not isinstance(
            cache, Cache)
        self.cache = open_cache(cache, self.store, cache_ttl)
        # Headers can only tighten a configured limit, so pacing by them is always safe.
        self.adaptive = True if adaptive is None else adaptive
        self.pacer = HeaderBudget() if self.adaptive else None
        self.window = window or max(4096, 64 * batch_size)
        self._rng = random.Random(seed)
        self._pool = WorkerPool(batch_size)
        self._finalizer = weakref.finalize(self, self._pool.shutdown, False)

    # ---- configuration of one run ------------------------------------------------------

    def _config(self, run_name: str | None) -> RunConfig:
        adapter = self.adapter
        if self._classify is not None:
            adapter = _Reclassified(adapter, self._classify)
        return RunConfig(
            adapter=adapter, batch_size=self.batch_size, limiter=self.limiter,
            retry=self.retry, pool=self._pool, clock=self.clock, rng=self._rng,
            timeout=self.timeout,
            runner_enforces_timeout=not self.adapter.enforces_timeout,
            deadline=self.deadline, breaker=self.breaker, store=self.store,
            run_name=run_name if run_name is not None else self.run_name,
            retry_failed=self.retry_failed, cache=self.cache, pacer=self.pacer,
            token_limited=any(lim.unit == TOKENS for lim in self.limiter.limits),
            window=self.window, settings=self.settings(),
        )

    def settings(self) -> dict[str, Any]:
        """What a checkpoint records about this runner (no secrets)."""
        return run_settings(self.adapter.name, self.adapter.identity(), self.batch_size,
                            self.limiter.limits, self.retry, self.timeout)

    def engine(self, items: Iterable[Any], emit: Callable[[Outcome[Any]], None], *,
               ordered: bool, fill: bool, run_name: str | None,
               has_space: Callable[[], bool] | None = None) -> RunEngine:
        """The engine of one run with this runner's settings, on its executor."""
        return self.executor.engine(self, items, emit, ordered=ordered, fill=fill,
                                    run_name=run_name, has_space=has_space)

    def local_engine(self, items: Iterable[Any], emit: Callable[[Outcome[Any]], None], *,
                     ordered: bool, fill: bool, run_name: str | None,
                     has_space: Callable[[], bool] | None = None) -> Engine:
        """The engine of one local run with this runner's settings (for executors)."""
        # A store also gets the run's counters about once a second, for `throttlepool report`.
        progress = with_samples(make_progress(self.progress, self.desc), self.store,
                                lambda: engine.run_id)
        engine = Engine(self._config(run_name), items, emit, ordered=ordered,
                        fill_remaining=fill, progress=progress, has_space=has_space)
        return engine

    # ---- async core --------------------------------------------------------------------

    async def arun(self, items: Iterable[Any], *, run_name: str | None = None
                   ) -> BatchResult[R]:
        """Run every item; the BatchResult is in input order. The async core of ``run``; on
        any executor (a Dask run is driven from this loop)."""
        outcomes: list[Outcome[Any]] = []
        engine = self.engine(items, outcomes.append, ordered=True, fill=True,
                             run_name=run_name)
        return await run_to_result(engine, outcomes)

    async def aimap(self, items: Iterable[Any], *, ordered: bool = True,
                    run_name: str | None = None) -> AsyncIterator[Outcome[R]]:
        """Stream outcomes as an async iterator, in input order (or completion order)."""
        channel = OutcomeChannel(self.window)
        engine = self.engine(items, channel.put, ordered=ordered, fill=False,
                             run_name=run_name, has_space=channel.has_space)
        async for outcome in consume(engine, channel):
            yield outcome

    # ---- sync facades ------------------------------------------------------------------

    def run(self, items: Iterable[Any], *, run_name: str | None = None) -> BatchResult[R]:
        """Run every item and wait; works with or without a running event loop (Jupyter).

        The first Ctrl-C stops dispatch and drains the calls in flight (the result says
        ``interrupted``); a second one aborts at once. When the checkpoint cannot be written
        the run stops and raises :class:`StoreError`; its ``result`` holds every outcome
        delivered and ``unrecorded`` the ones the checkpoint does not hold.
        """
        name = run_name if run_name is not None else self.run_name
        return self.executor.run(self, items, name)

    def imap(self, items: Iterable[Any], *, run_name: str | None = None) -> StreamIterator:
        """Stream outcomes in input order with bounded memory; inputs are read lazily."""
        return self._stream(items, ordered=True, run_name=run_name)

    def as_completed(self, items: Iterable[Any], *, run_name: str | None = None
                     ) -> StreamIterator:
        """Stream outcomes as they finish (completion order), with bounded memory."""
        return self._stream(items, ordered=False, run_name=run_name)

    def _stream(self, items: Iterable[Any], *, ordered: bool, run_name: str | None
                ) -> StreamIterator:
        channel = OutcomeChannel(self.window)
        engine = self.engine(items, channel.put, ordered=ordered, fill=False,
                             run_name=run_name, has_space=channel.has_space)
        return StreamIterator(engine, channel)

    # ---- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the thread pool and close a store this runner opened."""
        self._finalizer()
        close_cache = getattr(self.cache, "close", None)
        if self._owns_cache and close_cache is not None:
            close_cache()  # before the store: a cache in the store's file flushes through it
        if self.store is not None and self._owns_store:
            self.store.close()

    def __enter__(self) -> ThreadedBatchRunner[R]:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.close()
        except StoreError:
            if exc is None:
                raise
            # The run's own error (which lists what is not recorded) says more: keep it.


class _Reclassified(Delegating[Any]):
    """An adapter whose errors are classified by the caller's classifier instead."""

    def __init__(self, inner: Adapter[Any], classify: Classifier) -> None:
        super().__init__(inner)
        self._classifier = classify

    def classify(self, exc: BaseException) -> Verdict:
        """The caller's verdict."""
        return self._classifier(exc)
