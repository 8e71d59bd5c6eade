"""ThreadedBatchRunner: run a sync callable over many items, fast and within the limits."""

from __future__ import annotations

import random
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Generic, TypeVar, Unpack

from ._calls import RunConfig
from ._channel import OutcomeChannel, consume
from ._engine import Engine, run_to_result
from ._ledger import run_settings
from ._pacing import HeaderBudget
from ._pool import WorkerPool
from ._run_engine import RunEngine
from ._sync import StreamIterator
from .adapters import as_adapter
from .adapters.base import Adapter, Delegating
from .classify import Classifier, Verdict
from .clock import SYSTEM_CLOCK
from .errors import ConfigError, StoreError
from .options import RunOptions
from .options.run import RunKwargs
from .outcome import BatchResult, Outcome
from .progress import make_progress
from .retry import Retry
from .store.samples import with_samples

T = TypeVar("T")
R = TypeVar("R")


class ThreadedBatchRunner(Generic[R]):
    """Runs ``fn(item)`` for many items on its own thread pool, under a rate limiter.

    ``fn`` is a callable or an :class:`~throttlepool.adapters.base.Adapter`; ``estimate``
    sizes an item for token limits, ``classifier`` overrides how its errors are classified.
    Every other keyword is a run option (:class:`~throttlepool.options.RunOptions`), given as
    its value object or as the everyday shorthands, which set that object's field:

    * ``limits=Limits(...)``: ``rpm``, ``tpm``, ``rps``, ``limits=["500/minute",
      "200000 tokens/minute"]`` (exact sliding windows), ``safety``, ``margin``, a shared
      ``limiter`` or ``limiter_url``/``limiter_name``.
    * ``retry=Retry(...)``: or ``retries=N`` (full-jitter backoff; server hints win and a 429
      pauses all dispatch).
    * ``checkpoint=Checkpoint(...)``: ``store``, ``run_name``, ``retry_failed``, ``cache``,
      ``cache_ttl``.
    * ``execution=Execution(...)``: ``batch_size`` (calls in flight, default 8), ``timeout``,
      ``deadline``, ``breaker``, ``executor``/``scheduler``, ``progress``, ``desc``, ``seed``,
      ``window``, ``adaptive``, ``clock``.
    * ``budget=Budget(...)``: ``max_cost`` (USD; the run stops as ``budget reached``),
      ``price_in``/``price_out`` (USD per million tokens), ``mode``.

    Results keep input order. Each bad value is refused by name (ConfigError) before any call.
    """

    def __init__(self, fn: Callable[[Any], R] | Adapter[R], *,
                 estimate: Callable[[Any], float] | None = None,
                 classifier: Classifier | None = None,
                 **options: Unpack[RunKwargs]) -> None:
        self.options = RunOptions.from_kwargs(**options)
        execution, checkpoint = self.options.execution, self.options.checkpoint
        self.clock = execution.clock or SYSTEM_CLOCK
        self.adapter = as_adapter(fn, estimate=estimate, classifier=classifier)
        self.executor = execution.make_executor()
        self.limiter = self.options.limits.build(self.clock)
        if self.options.budget.capped:
            if not self.executor.caps_cost:
                raise ConfigError(f"max_cost is not supported with executor="
                                  f"{self.executor.name!r} yet; run it on threads")
            self.options.budget.gate(self.settings())  # an unpriced model: refused now
        self._classify = classifier or self.options.retry.classifier
        self.breaker = execution.make_breaker(self.clock)
        # Headers can only tighten a configured limit, so pacing by them is always safe; a
        # window they show that a configured limit already covers is left to the limiter.
        self.pacer = (HeaderBudget(self.limiter.limits, self.limiter.pauses)
                      if execution.adaptive in (None, True) else None)
        self.store = checkpoint.open_store()
        self.cache = checkpoint.open_cache(self.store)
        self._rng = random.Random(execution.seed)
        self._pool = WorkerPool(execution.batch_size)
        #: Called with an item's index just before its call is sent, on the thread sending
        #: it (a Dask worker announces its calls to the driver so).
        self.call_observer: Callable[[int], None] | None = None
        self._finalizer = weakref.finalize(self, self._pool.shutdown, False)

    # ---- the options most read, by their everyday names --------------------------------

    @property
    def batch_size(self) -> int:
        """Calls in flight at most."""
        return self.options.execution.batch_size

    @property
    def retry(self) -> Retry:
        """The retry policy."""
        return self.options.retry

    # ---- configuration of one run ------------------------------------------------------

    def _config(self, run_name: str | None) -> RunConfig:
        adapter = self.adapter
        if self._classify is not None:
            adapter = _Reclassified(adapter, self._classify)
        options = self.options if run_name is None else self.options.updated(run_name=run_name)
        settings = self.settings()
        return RunConfig(
            options=options, adapter=adapter, limiter=self.limiter, pool=self._pool,
            clock=self.clock, rng=self._rng, breaker=self.breaker, store=self.store,
            cache=self.cache, pacer=self.pacer, settings=settings,
            budget=options.budget.gate(settings), on_call=self.call_observer,
        )

    def settings(self) -> dict[str, Any]:
        """What a checkpoint records about this runner (no secrets)."""
        return run_settings(self.adapter.name, self.adapter.identity(), self.batch_size,
                            self.limiter.limits, self.retry, self.options.execution.timeout,
                            pricing=self.options.budget.recorded_pricing())

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
        execution = self.options.execution
        progress = with_samples(make_progress(execution.progress, execution.desc), self.store,
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
        channel = OutcomeChannel(self.options.execution.window_size)
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
        name = run_name if run_name is not None else self.options.checkpoint.run_name
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
        channel = OutcomeChannel(self.options.execution.window_size)
        engine = self.engine(items, channel.put, ordered=ordered, fill=False,
                             run_name=run_name, has_space=channel.has_space)
        return StreamIterator(engine, channel, owner=self)

    # ---- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the thread pool and close a store this runner opened."""
        self._finalizer()
        close_cache = getattr(self.cache, "close", None)
        if self.options.checkpoint.owns_cache and close_cache is not None:
            close_cache()  # before the store: a cache in the store's file flushes through it
        if self.store is not None and self.options.checkpoint.owns_store:
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
