"""Run a batch on a Dask cluster: chunks on workers, one shared limiter, one driver-side writer.

The driver (driver.DaskEngine) cuts the items into chunks, keeps a bounded window of chunks
in flight, consumes them as they complete and emits the outcomes in input order; it is the
only writer of the checkpoint, the response cache and the progress display. ``run``,
``arun``, ``imap``, ``aimap`` and ``as_completed`` of a runner with ``executor="dask"`` all
drive it.
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

from collections.abc import Callable, Iterable, Sized
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Unpack

from .._engine import run_to_result
from .._executors import Executor, register_executor
from .._ledger import RunLedger, run_settings
from .._sync import run_blocking
from ..adapters import as_adapter
from ..adapters.structured import stored_value_reviver
from ..clock import SYSTEM_CLOCK
from ..errors import ConfigError, MissingExtra
from ..limiter import limiter_from_url
from ..options import RunOptions
from ..options.run import RunKwargs
from ..outcome import BatchResult, Outcome
from ..progress import make_progress
from ..store.samples import with_samples
from .chunk import ChunkConfig
from .driver import DaskEngine
from .start import DaskPlan

if TYPE_CHECKING:
    from ..runner import ThreadedBatchRunner

try:
    import distributed  # noqa: F401 - the extra this module needs
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


def run_on_dask(
    fn_or_adapter: Callable[[Any], Any] | Any,
    items: Iterable[Any],
    *,
    client: Any = None,
    chunk_size: int | None = None,
    max_chunks_in_flight: int | None = None,
    task_retries: int = 2,
    estimate: Callable[[Any], float] | None = None,
    **options: Unpack[RunKwargs],
) -> BatchResult[Any]:
    """Run ``fn(item)`` for every item on a Dask cluster under one shared rate limit.

    Give a ``client`` or a ``scheduler`` address (``"tcp://host:8786"``). Every other keyword
    is a run option, as ``ThreadedBatchRunner`` takes it: ``limiter_url`` names the shared
    limiter (``redis://host:6379/0`` or ``sqlite:///path``) that every worker admits through;
    ``rpm``/``tpm``/``limits`` are the limits of the whole cluster. ``margin`` (seconds)
    lengthens the time each admission counts, to absorb the jitter between a worker's
    admission and the API server's clock. ``batch_size`` calls run at once per chunk of
    ``chunk_size`` items; ``store`` checkpoints on the driver.
    """
    run = RunOptions.from_kwargs(**options)
    scheduler = run.execution.scheduler
    if client is None and scheduler is None:
        raise ConfigError("run_on_dask needs client= or scheduler='tcp://host:8786'")
    adapter = as_adapter(fn_or_adapter, estimate=estimate)
    plan = _plan(fn_or_adapter, adapter, run, client=client, scheduler=scheduler,
                 chunk_size=chunk_size, estimate=estimate, window=max_chunks_in_flight,
                 task_retries=task_retries, run_name=run.checkpoint.run_name)
    checkpoint = run.checkpoint
    the_store = checkpoint.open_store()
    try:
        ledger = RunLedger(clock=SYSTEM_CLOCK, identity=adapter.identity(), store=the_store,
                           retry_failed=checkpoint.retry_failed,
                           progress=make_progress(run.execution.progress, "items"),
                           total=len(items) if isinstance(items, Sized) else None,
                           revive=stored_value_reviver(adapter))
        outcomes: list[Outcome[Any]] = []
        engine = DaskEngine(plan, ledger, items, outcomes.append, ordered=True,
                            fill_remaining=True)
        return run_blocking(engine, run_to_result(engine, outcomes))
    finally:
        if checkpoint.owns_store and the_store is not None:
            the_store.close()


def _plan(fn: Any, adapter: Any, options: RunOptions, *, client: Any, scheduler: Any,
          chunk_size: int | None, estimate: Callable[[Any], float] | None,
          window: int | None, task_retries: int, run_name: str | None) -> DaskPlan:
    """How a run of ``fn`` uses the cluster; the shared limiter is checked when it starts."""
    limits = options.limits
    resolved = limits.resolved()  # a local limiter= counts too: refused without a URL
    batch_size = options.execution.batch_size
    # max_cost is one gate for the whole run: it stays with the driver, which admits items.
    workers = options.for_workers()
    workers = replace(workers, budget=replace(workers.budget, max_cost=None))
    cfg = ChunkConfig(fn, workers, estimate)
    settings = run_settings(adapter.name, adapter.identity(), batch_size, resolved,
                            options.retry, options.execution.timeout,
                            pricing=options.budget.recorded_pricing())
    budget = options.budget.gate(settings)  # an unpriced model: a ConfigError now
    return DaskPlan(
        cfg, settings, _chunk_size(chunk_size, batch_size), client=client,
        scheduler=scheduler, window=window, task_retries=task_retries, run_name=run_name,
        preflight=lambda: _check_limiter(limits.limiter_url, resolved, limits.limiter_name),
        limits=tuple((lim.amount, lim.period, lim.unit) for lim in resolved),
        budget=budget, estimate=adapter.estimate if budget is not None else None)


class DaskExecutor(Executor):
    """``ThreadedBatchRunner(..., executor="dask", scheduler=...)``: chunks of each run on a
    Dask cluster, with the runner's settings, under its shared limiter (``limiter_url``)."""

    name = "dask"
    local = False
    caps_cost = True  # the driver reserves each item's projected cost before sending it

    def __init__(self, scheduler: Any = None, connect_timeout: float = 10.0) -> None:
        self.scheduler = scheduler
        self.connect_timeout = connect_timeout  # seconds to reach the scheduler

    def engine(self, runner: ThreadedBatchRunner[Any], items: Iterable[Any],
               emit: Callable[[Outcome[Any]], None], *, ordered: bool, fill: bool,
               run_name: str | None, has_space: Callable[[], bool] | None = None
               ) -> DaskEngine:
        """The Dask driver of one run; the checkpoint, the cache and the display stay on
        this side."""
        scheduler = self.scheduler
        if scheduler is None:
            raise ConfigError("executor='dask' needs scheduler='tcp://host:8786' or a Client")
        is_address = isinstance(scheduler, str)
        options = runner.options
        plan = _plan(runner.adapter, runner.adapter, options,
                     client=None if is_address else scheduler,
                     scheduler=scheduler if is_address else None,
                     chunk_size=None, estimate=None, window=None, task_retries=2,
                     # the runner's own run name (the CLI's), as the local engine takes it
                     run_name=run_name if run_name is not None
                     else options.checkpoint.run_name)
        ledger = RunLedger(
            clock=runner.clock, identity=runner.adapter.identity(), store=runner.store,
            cache=runner.cache, retry_failed=options.checkpoint.retry_failed,
            batch_size=options.execution.batch_size,
            total=len(items) if isinstance(items, Sized) else None,
            revive=stored_value_reviver(runner.adapter))
        plan.connect_timeout = self.connect_timeout
        engine = DaskEngine(plan, ledger, items, emit, ordered=ordered, fill_remaining=fill,
                            has_space=has_space)
        # A store also gets the run's counters about once a second, for `throttlepool report`.
        execution = options.execution
        ledger.progress = with_samples(make_progress(execution.progress, execution.desc),
                                       runner.store, lambda: ledger.run_id)
        return engine


register_executor("dask", lambda scheduler=None, **options: DaskExecutor(scheduler))
