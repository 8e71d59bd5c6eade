"""ThreadedBatchRunner: run a sync callable over many items, fast and within the limits."""

from __future__ import annotations

import asyncio
import random
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Generic, TypeVar

from .adapters.base import Adapter
from .adapters.function import CallableAdapter
from .breaker import CircuitBreaker
from .calls import RunConfig
from .channel import OutcomeChannel
from .classify import Classifier
from .clock import SYSTEM_CLOCK, Clock
from .engine import Engine
from .errors import ConfigError, RunStopped, StoreError
from .limiter import TOKENS, LimitSpec, RateLimiter, build_limits
from .outcome import BatchResult, Outcome
from .pacing import HeaderBudget
from .pool import WorkerPool
from .progress import ProgressSpec, make_progress
from .retry import Retry
from .store.base import Cache, Store
from .store.samples import with_samples
from .sync import StreamIterator, SyncDriver

T = TypeVar("T")
R = TypeVar("R")

BreakerSpec = CircuitBreaker | int | bool | None


def _make_adapter(fn: Any, estimate: Callable[[Any], float] | None,
                  classifier: Classifier | None) -> Adapter[Any]:
    if isinstance(fn, Adapter) and not isinstance(fn, CallableAdapter):
        return fn
    if isinstance(fn, CallableAdapter):
        return fn
    if not callable(fn):
        raise ConfigError(f"expected a callable or an adapter, got {type(fn).__name__}")
    return CallableAdapter(fn, estimate=estimate, classifier=classifier)


def _make_breaker(spec: BreakerSpec, clock: Clock) -> CircuitBreaker | None:
    if spec is None or spec is False:
        return None
    if spec is True:
        return CircuitBreaker(threshold=10, reset_after=5.0, max_reset_after=60.0, clock=clock)
    if isinstance(spec, CircuitBreaker):
        return spec
    return CircuitBreaker(threshold=int(spec), reset_after=5.0, clock=clock)


def _open_store(spec: Any) -> Store | None:
    if spec is None or spec is False:
        return None
    if isinstance(spec, Store):
        return spec
    from . import store as store_pkg

    opener = getattr(store_pkg, "open_store", None)
    if opener is None:
        raise ConfigError("no checkpoint store backend is installed in this build")
    return opener(spec)  # type: ignore[no-any-return]


def _open_cache(spec: Any, store: Store | None, ttl: float | None) -> Cache | None:
    if spec is None or spec is False:
        return None
    if isinstance(spec, Cache) and not isinstance(spec, bool):
        return spec
    from . import store as store_pkg

    opener = getattr(store_pkg, "open_cache", None)
    if opener is None:
        raise ConfigError("no response cache backend is installed in this build")
    return opener(spec, store, ttl)  # type: ignore[no-any-return]


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
        margin: float = 0.1,
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
        executor: str = "threads",
        scheduler: Any = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout!r}")
        if deadline is not None and deadline <= 0:
            raise ConfigError(f"deadline must be positive, got {deadline!r}")
        self.clock = clock or SYSTEM_CLOCK
        self.adapter = _make_adapter(fn, estimate, classifier)
        self.batch_size = batch_size
        if limiter is not None and (rpm or tpm or rps or limits):
            raise ConfigError("give either limiter= or rpm/tpm/rps/limits, not both")
        if executor not in ("threads", "dask"):
            raise ConfigError(f"executor must be 'threads' or 'dask', got {executor!r}")
        self.executor, self.scheduler, self.limiter_url = executor, scheduler, limiter_url
        if limiter is None and limiter_url is not None:  # shared by processes/machines
            from .limiter import limiter_from_url

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
        self.cache = _open_cache(cache, self.store, cache_ttl)
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
            runner_enforces_timeout=not getattr(self.adapter, "enforces_timeout", False),
            deadline=self.deadline, breaker=self.breaker, store=self.store,
            run_name=run_name if run_name is not None else self.run_name,
            retry_failed=self.retry_failed, cache=self.cache, pacer=self.pacer,
            token_limited=any(lim.unit == TOKENS for lim in self.limiter.limits),
            window=self.window, settings=self.settings(),
        )

    def settings(self) -> dict[str, Any]:
        """What a checkpoint records about this runner (no secrets)."""
        return {
            "adapter": self.adapter.name,
            "identity": dict(self.adapter.identity()),
            "batch_size": self.batch_size,
            "limits": [str(lim) for lim in self.limiter.limits],
            "attempts": self.retry.attempts,
            "timeout": self.timeout,
        }

    def _engine(self, items: Iterable[Any], emit: Callable[[Outcome[Any]], None], *,
                ordered: bool, fill: bool, run_name: str | None,
                has_space: Callable[[], bool] | None = None) -> Engine:
        # A store also gets the run's counters about once a second, for `throttlepool report`.
        progress = with_samples(make_progress(self.progress, self.desc), self.store,
                                lambda: engine.run_id)
        engine = Engine(self._config(run_name), items, emit, ordered=ordered,
                        fill_remaining=fill, progress=progress, has_space=has_space)
        return engine

    @staticmethod
    def _result(engine: Engine, outcomes: list[Outcome[Any]]) -> BatchResult[R]:
        return BatchResult(outcomes, engine.stats, engine.run_id, engine.stop_reason,
                           engine.interrupted)

    async def _collect(self, engine: Engine, outcomes: list[Outcome[Any]]) -> BatchResult[R]:
        try:
            await engine.run()
        except StoreError as exc:
            # The answers already paid for stay with the caller: ``exc.result`` holds every
            # outcome delivered (``exc.unrecorded`` those the checkpoint does not hold).
            vars(exc).setdefault("result", self._result(engine, outcomes))
            raise
        return self._result(engine, outcomes)

    # ---- async core --------------------------------------------------------------------

    async def arun(self, items: Iterable[Any], *, run_name: str | None = None
                   ) -> BatchResult[R]:
        """Run every item; the BatchResult is in input order. The async core of ``run``."""
        self._local_only("arun")
        outcomes: list[Outcome[Any]] = []
        engine = self._engine(items, outcomes.append, ordered=True, fill=True,
                              run_name=run_name)
        return await self._collect(engine, outcomes)

    async def aimap(self, items: Iterable[Any], *, ordered: bool = True,
                    run_name: str | None = None) -> AsyncIterator[Outcome[R]]:
        """Stream outcomes as an async iterator, in input order (or completion order)."""
        self._local_only("aimap")
        ready: list[Outcome[Any]] = []
        wake = asyncio.Event()

        def emit(outcome: Outcome[Any]) -> None:
            ready.append(outcome)
            wake.set()

        engine = self._engine(items, emit, ordered=ordered, fill=False, run_name=run_name,
                              has_space=lambda: len(ready) < self.window)
        task = asyncio.ensure_future(engine.run())
        try:
            while True:
                if not ready:
                    if task.done():
                        task.result()
                        return
                    wake.clear()
                    await asyncio.wait([task, asyncio.ensure_future(wake.wait())],
                                       return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch = ready[:]
                ready.clear()
                engine.notify_space()
                for outcome in batch:
                    yield outcome
        finally:
            if not task.done():
                engine.request_stop(RunStopped("the consumer stopped iterating"))
                await asyncio.gather(task, return_exceptions=True)

    # ---- sync facades ------------------------------------------------------------------

    def run(self, items: Iterable[Any], *, run_name: str | None = None) -> BatchResult[R]:
        """Run every item and wait; works with or without a running event loop (Jupyter).

        The first Ctrl-C stops dispatch and drains the calls in flight (the result says
        ``interrupted``); a second one aborts at once. When the checkpoint cannot be written
        the run stops and raises :class:`StoreError`; its ``result`` holds every outcome
        delivered and ``unrecorded`` the ones the checkpoint does not hold.
        """
        if self.executor == "dask":  # chunks on a Dask cluster under the shared limiter
            from .distributed.dask import run_runner_on_dask

            return run_runner_on_dask(self, items, run_name)
        outcomes: list[Outcome[Any]] = []
        engine_box: list[Engine] = []

        async def main() -> BatchResult[R]:
            engine = self._engine(items, outcomes.append, ordered=True, fill=True,
                                  run_name=run_name)
            engine_box.append(engine)
            return await self._collect(engine, outcomes)

        return SyncDriver(engine_box).run(main)

    def imap(self, items: Iterable[Any], *, run_name: str | None = None) -> StreamIterator:
        """Stream outcomes in input order with bounded memory; inputs are read lazily."""
        return self._stream(items, ordered=True, run_name=run_name)

    def as_completed(self, items: Iterable[Any], *, run_name: str | None = None
                     ) -> StreamIterator:
        """Stream outcomes as they finish (completion order), with bounded memory."""
        return self._stream(items, ordered=False, run_name=run_name)

    def _stream(self, items: Iterable[Any], *, ordered: bool, run_name: str | None
                ) -> StreamIterator:
        self._local_only("imap/as_completed")
        engine_box: list[Engine] = []
        loop_box: list[asyncio.AbstractEventLoop] = []
        def on_space() -> None:
            loop_box[0].call_soon_threadsafe(engine_box[0].notify_space)

        channel = OutcomeChannel(self.window, on_space)

        async def main() -> None:
            loop_box.append(asyncio.get_running_loop())
            engine = self._engine(items, channel.put, ordered=ordered, fill=False,
                                  run_name=run_name, has_space=channel.has_space)
            engine_box.append(engine)
            try:
                await engine.run()
            except BaseException as exc:
                channel.close(exc)
                raise
            channel.close()

        driver = SyncDriver(engine_box, loop_box)
        thread = threading.Thread(target=driver.run_delivering_errors, args=(main,),
                                  name="throttlepool-imap", daemon=True)
        return StreamIterator(channel, thread, driver)

    def _local_only(self, what: str) -> None:
        if self.executor != "threads":
            raise ConfigError(f"{what} runs on local threads only; with executor="
                              f"{self.executor!r} use run()")

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


class _Reclassified:
    """An adapter whose errors are classified by the caller's classifier instead."""

    def __init__(self, inner: Adapter[Any], classify: Classifier) -> None:
        self._inner = inner
        self.name = inner.name
        self.classify = classify
        self.identity = inner.identity
        self.estimate = inner.estimate
        self.call = inner.call
        self.rate_info = inner.rate_info
        self.is_async = getattr(inner, "is_async", False)
        self.acall = getattr(inner, "acall", None)
        self.enforces_timeout = getattr(inner, "enforces_timeout", False)
