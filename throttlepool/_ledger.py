"""What a run records and counts, whichever executor makes its calls.

:class:`RunLedger` is the one place that looks up an item in the checkpoint (or the response
cache) before it is called, counts every delivered outcome into the run's statistics,
writes its checkpoint row, fills in the items a stop left unattempted and finishes the run
with its status. The local engine (engine.py) and the Dask driver (distributed/dask.py) both
deliver through it, so a run records, resumes and counts the same on threads or a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._journal import Announced, CallJournal
from .clock import Clock
from .cost import CostMeter, Pricing
from .errors import NotAttempted, StoreError
from .outcome import Outcome, RunStats, Source, Status
from .progress import ProgressSink
from .retry import Retry
from .store.backlog import Backlog, finish_run
from .store.base import Cache, Store
from .store.keys import KeyMaker


def run_settings(adapter_name: str, identity: Mapping[str, Any], batch_size: int,
                 limits: Iterable[object], retry: Retry, timeout: float | None,
                 pricing: Pricing | None = None) -> dict[str, Any]:
    """What a checkpoint records about a run's settings (no secrets); ``pricing`` only
    when the run overrides the price table or runs at the batch price."""
    settings: dict[str, Any] = {
        "adapter": adapter_name,
        "identity": dict(identity),
        "batch_size": batch_size,
        "limits": [str(lim) for lim in limits],
        "attempts": retry.attempts,
        "timeout": timeout,
    }
    if pricing is not None:
        settings["pricing"] = pricing.as_settings()
    return settings


@dataclass
class Ending:
    """How a run ended, as far as its recorded status goes."""

    stop_reason: BaseException | None = None  # why dispatch stopped early, if it did
    interrupted: bool = False  # Ctrl-C: the calls in flight were finished
    aborted: bool = False  # stopped without waiting for the calls in flight
    crash: BaseException | None = None
    store_error: StoreError | None = None
    input_error: BaseException | None = None
    exhausted: bool = True  # every input item was taken

    def status(self, stats: RunStats) -> tuple[str, str | None]:
        """The run's recorded status, and why when it is not ``completed``."""
        if self.aborted:
            return "interrupted", "aborted before the calls in flight finished"
        if self.crash is not None:
            return "failed", f"{type(self.crash).__name__}: {self.crash}"
        if self.store_error is not None:
            return "failed", f"the checkpoint cannot be written: {self.store_error}"
        if self.input_error is not None:
            error = self.input_error
            return "failed", f"the input iterator raised {type(error).__name__}: {error}"
        if self.interrupted:
            return "interrupted", "interrupted (Ctrl-C); the calls in flight were finished"
        # Filling in NOT_ATTEMPTED outcomes exhausts the input too: count them.
        if self.stop_reason is not None and (stats.not_attempted or not self.exhausted):
            return "stopped", str(self.stop_reason)
        return "completed", None


class RunLedger:
    """One run's statistics, checkpoint rows and progress display.

    ``begin`` opens the run in the store; ``known`` says whether an item needs a call at
    all; ``deliver`` counts, records and shows each outcome exactly once per call; ``finish``
    records the ending. ``problem`` is the first store error met; the run must stop paying
    for calls then (``backlog.error`` says what the checkpoint lacks).
    """

    def __init__(self, *, clock: Clock, identity: Mapping[str, Any], store: Store | None,
                 cache: Cache | None = None, retry_failed: bool = True, batch_size: int = 1,
                 progress: ProgressSink | None = None, total: int | None = None,
                 on_call: Callable[[int], None] | None = None,
                 revive: Callable[[Any], Any] | None = None) -> None:
        self.clock = clock
        # A value stored as JSON (a schema= model's) back as the adapter's calls return it.
        self.revive = revive
        self.store = store
        self.cache = cache
        self.retry_failed = retry_failed
        self.progress = progress
        self.stats = RunStats(total=total)
        self.run_id: str | None = None
        self.backlog = Backlog(store, batch_size)
        self.problem: StoreError | None = None
        self.finished = False
        self.cost = CostMeter(None)
        self.journal: CallJournal | None = None
        self.on_call = on_call
        self._key = KeyMaker(identity) if store is not None or cache is not None else None
        #: False when the run keeps neither checkpoint nor cache: every key is None, and no
        #: item is known without a call.
        self.keyed = self._key is not None

    def begin(self, run_name: str | None, settings: Mapping[str, Any],
              announced: Announced | None = None) -> str | None:
        """Open the run (in the store, when there is one) and start the display;
        ``announced``: the calls a Dask scheduler still holds of an earlier session."""
        self.stats.started = self.clock.now()
        self.cost = CostMeter(Pricing.from_settings(settings))
        if self.store is not None:
            self.run_id = self.store.begin_run(run_name, settings)
            self._open_journal(self.store, self.run_id, announced)
        if self.progress is not None:
            self.progress.start(self.stats.total, self.stats)
        return self.run_id

    def _open_journal(self, store: Store, run_id: str, announced: Announced | None) -> None:
        """Count the calls an earlier session made but never recorded (they are made
        again), and journal this session's calls (_journal.py says why)."""
        path = getattr(store, "path", None)
        journal = CallJournal.beside(path, run_id) if isinstance(path, str) else None
        if journal is None:
            return

        def recorded(index: int, key: str) -> bool:
            try:
                return store.prior(run_id, index, key) is not None
            except Exception:  # a changed input: that call's item is not this run's
                return True

        try:
            lost = journal.open(recorded, announced)
        except OSError:  # a read-only folder: the run goes on, its repeats uncounted
            return
        self.journal = journal
        self.stats.repeated_after_resume = lost
        self.stats.calls += lost

    def call_started(self, index: int, key: str | None) -> None:
        """Note, before it is sent, that item ``index`` is being called (any thread)."""
        if self.journal is not None:
            self.journal.started(index, key)

    def sending(self, index: int, key: str | None) -> Callable[[], None] | None:
        """What to call just before item ``index``'s call is sent (on the thread sending
        it): journal it, tell ``on_call``; None when there is neither."""
        journal, on_call = self.journal, self.on_call
        if journal is None and on_call is None:
            return None

        def sending() -> None:
            if journal is not None:
                journal.started(index, key)
            if on_call is not None:
                on_call(index)
        return sending

    def key(self, item: Any) -> str | None:
        """The item's checkpoint/cache key; None when the run keeps neither."""
        return self._key(item) if self._key is not None else None

    def known(self, index: int, item: Any, key: str | None) -> Outcome[Any] | None:
        """The item's outcome without a call: checkpointed by an earlier attempt of this run
        (failures only when ``retry_failed`` is off), or a cached answer."""
        if key is None:
            return None
        if self.store is not None and self.run_id is not None:
            prior = self.store.prior(self.run_id, index, key)
            if prior is not None and (prior.status is Status.OK or not self.retry_failed):
                prior.item, prior.source, prior.key = item, Source.CHECKPOINT, key
                self.stats.from_checkpoint += 1
                if prior.status is Status.OK and self.revive is not None:
                    prior.value = self.revive(prior.value)
                return prior
        if self.cache is not None:
            hit, value = self.cache.get(key)
            if hit:
                self.stats.cache_hits += 1
                if self.revive is not None:
                    value = self.revive(value)
                return Outcome(index, item, Status.OK, value, source=Source.CACHE, key=key)
        return None

    def deliver(self, outcome: Outcome[Any]) -> StoreError | None:
        """Count, checkpoint and show one outcome; the store's refusal, if it refused it."""
        stats, status = self.stats, outcome.status
        refused = None
        if outcome.ended is None and status is not Status.NOT_ATTEMPTED:
            # Delivered as its call ends (a Dask worker stamps its own; the checkpoint's
            # come with theirs): the checkpoint and every row of it (run -o, export) agree.
            outcome.ended = time.time()
        if outcome.usage is not None:  # only a billed call has a price to count
            self.cost.deliver(stats, outcome)  # before the store records it: the row keeps it
        if status is Status.OK:
            stats.done += 1
            usage = outcome.usage
            if usage is not None and outcome.source is Source.CALL:
                stats.input_tokens += usage.input_tokens
                stats.output_tokens += usage.output_tokens
        elif status is Status.FAILED:
            stats.failed += 1
        else:
            stats.not_attempted += 1
        stats.wall_time = self.clock.now() - stats.started
        if (self.store is not None and self.run_id is not None
                and status is not Status.NOT_ATTEMPTED and outcome.source is not Source.CHECKPOINT):
            # Even after a failure: a writer that is only retrying may still keep it.
            try:
                self.store.record(self.run_id, outcome)
            except StoreError as exc:
                self.backlog.refused(outcome)
                self.problem = self.problem or exc
                refused = exc
            else:
                self.backlog.accepted(outcome)
        if self.progress is not None:
            self.progress.update(stats, outcome)
        return refused

    @staticmethod
    def not_attempted(index: int, item: Any, stop_reason: BaseException | None,
                      key: str | None = None) -> Outcome[Any]:
        """The outcome of an item a stop left uncalled."""
        reason = NotAttempted(f"not attempted: {stop_reason}")
        return Outcome(index, item, Status.NOT_ATTEMPTED, None, reason, 0, key=key)

    def finish(self, ending: Ending) -> StoreError | None:
        """Record how the run ended and close the display; a store error meanwhile."""
        stats = self.stats
        stats.wall_time = self.clock.now() - stats.started
        error = None
        if self.store is not None and self.run_id is not None:
            status = ending.status(stats)
            if self.journal is not None:
                self.journal.close(completed=status[0] == "completed")
            try:
                finish_run(self.store, self.run_id, stats, *status)
                if self.backlog.problem is None:  # else the writer may retry for long
                    self.store.flush()
            except StoreError as exc:
                error = exc
                self.problem = self.problem or exc
        if self.progress is not None:
            self.progress.close(stats)
        self.finished = True
        return error
