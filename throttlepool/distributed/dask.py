"""Run a batch on a Dask cluster: chunks on workers, one shared limiter, one driver-side writer.

The driver cuts the items into chunks, keeps a bounded window of chunks in flight
(``client.submit(run_chunk, ...)``), consumes them as they complete and re-orders the
outcomes by index. It is the only writer of the checkpoint and the progress display.
Workers run the ordinary threaded runner over each chunk under the shared limiter named by
``limiter_url`` (Redis for several machines, SQLite for one host), so the whole cluster
stays within one API key's budget.

A worker that dies mid-chunk has the whole chunk rerun elsewhere by Dask: calls it had
already made are paid twice (keep chunks small), but every item is recorded exactly once.
If the shared limiter becomes unreachable, dispatch stops, the outcomes that arrived are
checkpointed and :class:`~throttlepool.errors.LimiterUnavailable` is raised; run again with
the same ``run_name`` to resume.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

from ..clock import SYSTEM_CLOCK
from ..errors import ConfigError, LimiterUnavailable, MissingExtra, NotAttempted, RunStopped
from ..limiter import LimitSpec, build_limits, limiter_from_url
from ..outcome import BatchResult, Outcome, RunStats, Source, Status
from ..progress import ProgressSpec, make_progress
from ..retry import Retry
from ..store.base import Store
from ..store.keys import item_key
from .chunk import ChunkConfig, ChunkResult, run_chunk

try:
    from distributed import Client, as_completed
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtra("distributed", "dask") from exc

MIN_CHUNK, MAX_CHUNK = 20, 200


def _chunk_size(requested: int | None, batch_size: int) -> int:
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"chunk_size must be a positive integer, got {requested!r}")
        return requested
    return max(MIN_CHUNK, min(MAX_CHUNK, 4 * batch_size))


def _check_limiter(url: str | None, limits: list[Any], name: str) -> None:
    """Refuse per-process limits on a cluster, and fail fast if the shared one is down."""
    if url is None:
        if limits:
            raise ConfigError(
                "limits on a Dask cluster need a shared limiter: pass limiter_url="
                "'redis://host:6379/0' (several machines) or 'sqlite:///path' (one host)")
        return
    if url.startswith("memory:"):
        raise ConfigError(
            "memory:// limits are per process and would multiply the budget by the number "
            "of workers; use limiter_url='redis://...' or 'sqlite:///path'")
    probe = limiter_from_url(url, limits, name=name)
    ping = getattr(probe.backend, "ping", None)
    if ping is not None:
        ping()  # raises LimiterUnavailable with the URL in the message
    close = getattr(probe.backend, "close", None)
    if close is not None:
        close()


class _Run:
    """The driver state of one distributed run."""

    def __init__(self, items: Iterable[Any], cfg: ChunkConfig, identity: dict[str, Any],
                 store: Store | None, run_name: str | None, settings: dict[str, Any],
                 chunk_size: int, progress: ProgressSpec, retry_failed: bool) -> None:
        self.cfg, self.identity, self.store = cfg, identity, store
        self.chunk_size = chunk_size
        self.retry_failed = retry_failed
        self.stats = RunStats(total=len(items) if isinstance(items, Sized) else None)
        self._items: Iterator[tuple[int, Any]] = enumerate(items)
        self.outcomes: dict[int, Outcome[Any]] = {}
        self.waiting: dict[int, tuple[Any, str | None]] = {}  # index -> (item, key) in flight
        self.exhausted = False
        self.progress = make_progress(progress, "items")
        self.run_id = store.begin_run(run_name, settings) if store is not None else None
        self.stats.started = SYSTEM_CLOCK.now()
        if self.progress is not None:
            self.progress.start(self.stats.total, self.stats)

    def next_chunk(self) -> list[tuple[int, Any]]:
        """The next items to call; items already checkpointed are delivered from the store."""
        chunk: list[tuple[int, Any]] = []
        while len(chunk) < self.chunk_size:
            try:
                index, item = next(self._items)
            except StopIteration:
                self.exhausted = True
                break
            key = None
            if self.store is not None and self.run_id is not None:
                key = item_key(self.identity, item)
                prior = self.store.prior(self.run_id, index, key)
                if prior is not None and (prior.status is Status.OK or not self.retry_failed):
                    prior.item, prior.source, prior.key = item, Source.CHECKPOINT, key
                    self.stats.from_checkpoint += 1
                    self.deliver(prior, record=False)
                    continue
            self.waiting[index] = (item, key)
            chunk.append((index, item))
        return chunk

    def deliver(self, outcome: Outcome[Any], *, record: bool = True) -> None:
        if outcome.index in self.outcomes:
            return  # a rerun chunk's duplicate: each item is recorded once
        self.outcomes[outcome.index] = outcome
        stats = self.stats
        if outcome.status is Status.OK:
            stats.done += 1
            if outcome.usage is not None:
                stats.input_tokens += outcome.usage.input_tokens
                stats.output_tokens += outcome.usage.output_tokens
        elif outcome.status is Status.FAILED:
            stats.failed += 1
        else:
            stats.not_attempted += 1
        stats.wall_time = SYSTEM_CLOCK.now() - stats.started
        if (record and outcome.status is not Status.NOT_ATTEMPTED and self.store is not None
                and self.run_id is not None):
            self.store.record(self.run_id, outcome)
        if self.progress is not None:
            self.progress.update(stats, outcome)

    def accept(self, result: ChunkResult) -> None:
        stats = self.stats
        stats.calls += result.calls
        stats.retries += result.retries
        stats.rate_limited += result.rate_limited
        stats.rate_limit_wait += result.rate_limit_wait
        for r in result.items:
            if r.index not in self.waiting:
                continue
            item, key = self.waiting.pop(r.index)
            self.deliver(Outcome(r.index, item, Status(r.status), r.value, r.error, r.attempts,
                                 r.latency, r.usage, Source.CALL, key))

    def finish(self, stop: BaseException | None) -> BatchResult[Any]:
        reason = NotAttempted(f"not attempted: {stop}") if stop is not None else None
        for index in sorted(self.waiting):
            item, key = self.waiting.pop(index)
            self.deliver(Outcome(index, item, Status.NOT_ATTEMPTED, error=reason, key=key))
        if stop is not None:
            for index, item in self._items:
                self.deliver(Outcome(index, item, Status.NOT_ATTEMPTED, error=reason))
        stats = self.stats
        stats.wall_time = SYSTEM_CLOCK.now() - stats.started
        if self.store is not None and self.run_id is not None:
            self.store.finish_run(self.run_id, stats, "stopped" if stop else "completed")
            self.store.flush()
        if self.progress is not None:
            self.progress.close(stats)
        ordered = [self.outcomes[i] for i in sorted(self.outcomes)]
        return BatchResult(ordered, stats, self.run_id, stop, False)


def run_on_dask(
    fn_or_adapter: Callable[[Any], Any] | Any,
    items: Iterable[Any],
    *,
    client: Any = None,
    scheduler: str | None = None,
    limiter_url: str | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    limits: Iterable[LimitSpec] | LimitSpec | None = None,
    safety: float = 1.0,
    margin: float = 0.1,
    batch_size: int = 8,
    chunk_size: int | None = None,
    max_chunks_in_flight: int | None = None,
    store: Any = None,
    run_name: str | None = None,
    progress: ProgressSpec = None,
    retries: int | Retry | None = 3,
    timeout: float | None = None,
    estimate: Callable[[Any], float] | None = None,
    limiter_name: str = "default",
    retry_failed: bool = True,
    task_retries: int = 2,
) -> BatchResult[Any]:
    """Run ``fn(item)`` for every item on a Dask cluster under one shared rate limit.

    Give a ``client`` or a ``scheduler`` address (``"tcp://host:8786"``). ``limiter_url``
    names the shared limiter (``redis://host:6379/0`` or ``sqlite:///path``) that every
    worker admits through; ``rpm``/``tpm``/``limits`` are the limits of the whole cluster.
    ``margin`` (seconds) lengthens the time each admission counts, to absorb the jitter
    between a worker's admission and the API server's clock. ``batch_size`` calls run at
    once per chunk of ``chunk_size`` items; ``store`` checkpoints on the driver.
    """
    from ..runner import _make_adapter, _open_store

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    resolved = build_limits(limits, rpm=rpm, tpm=tpm, safety=safety)
    _check_limiter(limiter_url, resolved, limiter_name)
    adapter = _make_adapter(fn_or_adapter, estimate, None)
    size = _chunk_size(chunk_size, batch_size)
    cfg = ChunkConfig(fn_or_adapter, limiter_url, tuple(resolved), limiter_name, batch_size,
                      retries, timeout, estimate, margin=margin)
    settings = {
        "adapter": adapter.name, "identity": dict(adapter.identity()),
        "batch_size": batch_size, "limits": [str(lim) for lim in resolved],
        "attempts": Retry.of(retries).attempts, "timeout": timeout,
    }
    owns_store = store is not None and not isinstance(store, Store)
    the_store = _open_store(store)
    owns_client = client is None
    if client is None:
        if scheduler is None:
            raise ConfigError("run_on_dask needs client= or scheduler='tcp://host:8786'")
        client = Client(scheduler)  # type: ignore[no-untyped-call]
    try:
        if max_chunks_in_flight is None:
            # every worker thread busy, plus one chunk queued per worker
            nthreads = client.nthreads()
            max_chunks_in_flight = max(2, sum(nthreads.values()) + len(nthreads))
        run = _Run(items, cfg, dict(adapter.identity()), the_store, run_name, settings, size,
                   progress, retry_failed)
        return _drive(client, run, max_chunks_in_flight, task_retries)
    finally:
        if owns_client:
            client.close()
        if owns_store and the_store is not None:
            the_store.close()


def _drive(client: Any, run: _Run, window: int, task_retries: int) -> BatchResult[Any]:
    token = uuid.uuid4().hex[:12]
    numbers = itertools.count()
    pending = as_completed()  # type: ignore[no-untyped-call]
    in_flight: dict[Any, int] = {}
    stop: BaseException | None = None

    def submit() -> bool:
        chunk = run.next_chunk()
        if not chunk:
            return False
        n = next(numbers)
        fut = client.submit(run_chunk, n, chunk, run.cfg, key=f"throttlepool-{token}-{n}",
                            retries=task_retries, pure=False)
        in_flight[fut] = n
        pending.add(fut)  # type: ignore[no-untyped-call]
        return True

    try:
        while len(in_flight) < window and submit():
            pass
        for fut in pending:
            in_flight.pop(fut, None)
            try:
                result: ChunkResult = fut.result()
            except Exception as exc:  # the task failed on every try (e.g. KilledWorker)
                stop = stop or RunStopped(f"a chunk failed on the cluster: {exc!r}", exc)
                continue
            finally:
                fut.release()
            run.accept(result)
            if result.stopped is not None and stop is None:
                stop = result.stopped
            if stop is None:
                submit()
    except BaseException as exc:
        for fut in list(in_flight):
            fut.cancel()
        stop = stop or RunStopped("interrupted", exc)
        run.finish(stop)
        raise
    result_ = run.finish(stop)
    if isinstance(stop, LimiterUnavailable):
        raise LimiterUnavailable(
            f"{stop} ({result_.stats.finished} outcomes were checkpointed; rerun with the "
            "same run_name to resume)") from stop
    return result_


def run_runner_on_dask(runner: Any, items: Iterable[Any], run_name: str | None
                       ) -> BatchResult[Any]:
    """``ThreadedBatchRunner(..., executor="dask").run(items)``: the runner's settings on Dask."""
    scheduler = runner.scheduler
    client = scheduler if scheduler is not None and not isinstance(scheduler, str) else None
    if client is None and scheduler is None:
        raise ConfigError("executor='dask' needs scheduler='tcp://host:8786' or a Client")
    return run_on_dask(
        runner.adapter, items, client=client,
        scheduler=scheduler if isinstance(scheduler, str) else None,
        limiter_url=runner.limiter_url, limits=list(runner.limiter.limits),
        margin=getattr(runner.limiter.backend, "margin", 0.0),
        batch_size=runner.batch_size, store=runner.store,
        run_name=run_name if run_name is not None else runner.run_name,
        progress=runner.progress, retries=runner.retry, timeout=runner.timeout,
        retry_failed=runner.retry_failed,
    )
