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
from typing import TYPE_CHECKING, Any

from ..adapters import as_adapter
from ..clock import SYSTEM_CLOCK
from ..errors import ConfigError, LimiterUnavailable, MissingExtra, RunStopped
from ..executors import Executor, register_executor
from ..ledger import Ending, RunLedger, run_settings
from ..limiter import LimitSpec, build_limits, limiter_from_url
from ..outcome import BatchResult, Outcome, Source, Status
from ..progress import ProgressSpec, make_progress
from ..retry import Retry
from ..store import open_store
from ..store.base import Store
from .chunk import ChunkConfig, ChunkResult, run_chunk

if TYPE_CHECKING:
    from ..runner import ThreadedBatchRunner

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
    """The driver state of one distributed run: what is in flight, over the run's ledger."""

    def __init__(self, items: Iterable[Any], cfg: ChunkConfig, ledger: RunLedger,
                 chunk_size: int) -> None:
        self.cfg, self.ledger, self.chunk_size = cfg, ledger, chunk_size
        self.stats = ledger.stats
        self._items: Iterator[tuple[int, Any]] = enumerate(items)
        self.outcomes: dict[int, Outcome[Any]] = {}
        self.waiting: dict[int, tuple[Any, str | None]] = {}  # index -> (item, key) in flight
        self.exhausted = False

    def next_chunk(self) -> list[tuple[int, Any]]:
        """The next items to call; items already checkpointed are delivered from the store."""
        chunk: list[tuple[int, Any]] = []
        while len(chunk) < self.chunk_size:
            try:
                index, item = next(self._items)
            except StopIteration:
                self.exhausted = True
                break
            key = self.ledger.key(item)
            known = self.ledger.known(index, item, key)
            if known is not None:
                self.deliver(known)
                continue
            self.waiting[index] = (item, key)
            chunk.append((index, item))
        return chunk

    def deliver(self, outcome: Outcome[Any]) -> None:
        self.outcomes[outcome.index] = outcome
        self.ledger.deliver(outcome)

    def accept(self, result: ChunkResult) -> None:
        """A chunk's outcomes; a rerun chunk's duplicates are dropped (each item counts once)."""
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

    def finish(self, ending: Ending) -> BatchResult[Any]:
        """Fill in what a stop left uncalled, record the ending; the run's result."""
        stop = ending.stop_reason
        for index in sorted(self.waiting):
            item, key = self.waiting.pop(index)
            self.deliver(RunLedger.not_attempted(index, item, stop, key))
        if stop is not None:
            for index, item in self._items:
                self.deliver(RunLedger.not_attempted(index, item, stop))
        ending.exhausted = True
        ending.store_error = self.ledger.problem
        self.ledger.finish(ending)
        ordered = [self.outcomes[i] for i in sorted(self.outcomes)]
        return BatchResult(ordered, self.stats, self.ledger.run_id, stop, ending.interrupted)


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
    margin: float | None = None,
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
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    resolved = build_limits(limits, rpm=rpm, tpm=tpm, safety=safety)
    _check_limiter(limiter_url, resolved, limiter_name)
    adapter = as_adapter(fn_or_adapter, estimate=estimate)
    size = _chunk_size(chunk_size, batch_size)
    cfg = ChunkConfig(fn_or_adapter, limiter_url, tuple(resolved), limiter_name, batch_size,
                      retries, timeout, estimate, margin=margin)
    retry = retries if isinstance(retries, Retry) else Retry.of(retries)
    settings = run_settings(adapter.name, adapter.identity(), batch_size, resolved, retry,
                            timeout)
    owns_store = store is not None and not isinstance(store, Store)
    the_store = open_store(store)
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
        ledger = RunLedger(clock=SYSTEM_CLOCK, identity=adapter.identity(), store=the_store,
                           retry_failed=retry_failed, progress=make_progress(progress, "items"),
                           total=len(items) if isinstance(items, Sized) else None)
        ledger.begin(run_name, settings)
        return _drive(client, _Run(items, cfg, ledger, size), max_chunks_in_flight,
                      task_retries)
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
    ending = Ending()

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

    def stop(reason: BaseException) -> None:
        ending.stop_reason = ending.stop_reason or reason

    try:
        while len(in_flight) < window and submit():
            pass
        for fut in pending:
            in_flight.pop(fut, None)
            try:
                result: ChunkResult = fut.result()
            except Exception as exc:  # the task failed on every try (e.g. KilledWorker)
                stop(RunStopped(f"a chunk failed on the cluster: {exc!r}", exc))
                continue
            finally:
                fut.release()
            run.accept(result)
            if result.stopped is not None:
                stop(result.stopped)
            if run.ledger.problem is not None:
                # Calls whose outcomes cannot be kept would be paid for again: stop paying.
                stop(RunStopped("the checkpoint cannot be written", run.ledger.problem))
            if ending.stop_reason is None:
                submit()
    except BaseException as exc:
        for fut in list(in_flight):
            fut.cancel()
        stop(RunStopped("interrupted", exc))
        ending.interrupted = isinstance(exc, KeyboardInterrupt)
        run.finish(ending)
        raise
    outcome = run.finish(ending)
    if ending.store_error is not None:
        error = run.ledger.backlog.error(ending.store_error)
        vars(error).setdefault("result", outcome)
        raise error
    if isinstance(ending.stop_reason, LimiterUnavailable):
        raise LimiterUnavailable(
            f"{ending.stop_reason} ({outcome.stats.finished} outcomes were checkpointed; "
            "rerun with the same run_name to resume)") from ending.stop_reason
    return outcome


class DaskExecutor(Executor):
    """``ThreadedBatchRunner(..., executor="dask", scheduler=...)``: chunks of each run on a
    Dask cluster, with the runner's settings, under its shared limiter (``limiter_url``)."""

    name = "dask"
    local = False

    def __init__(self, scheduler: Any = None) -> None:
        self.scheduler = scheduler

    def run(self, runner: ThreadedBatchRunner[Any], items: Iterable[Any],
            run_name: str | None) -> BatchResult[Any]:
        """Run ``items`` on the cluster; the checkpoint and the display stay on this side."""
        scheduler = self.scheduler
        if scheduler is None:
            raise ConfigError("executor='dask' needs scheduler='tcp://host:8786' or a Client")
        is_address = isinstance(scheduler, str)
        return run_on_dask(
            runner.adapter, items, client=None if is_address else scheduler,
            scheduler=scheduler if is_address else None,
            limiter_url=runner.limiter_url, limits=list(runner.limiter.limits),
            margin=runner.margin, batch_size=runner.batch_size, store=runner.store,
            run_name=run_name, progress=runner.progress, retries=runner.retry,
            timeout=runner.timeout, retry_failed=runner.retry_failed,
        )


register_executor("dask", lambda scheduler=None, **options: DaskExecutor(scheduler))
