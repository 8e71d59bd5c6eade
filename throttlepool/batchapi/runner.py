"""BatchApiRunner: the same items, checkpoint and outcomes as an online run, sent through a
provider's Batch API at the batch price (docs/batch.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError, RunStopped
from ..outcome import BatchResult, Outcome, RunStats, Source, Status
from ..store import SQLiteStore, open_store
from ..store.base import Store
from ..store.keys import KeyMaker
from .journal import CREATING, DONE, INTENT, SUBMITTED, UPLOADED, Chunk, Journal
from .openai_batch import (
    MAX_BYTES,
    MAX_REQUESTS,
    TERMINAL,
    BatchRequestFailed,
    OpenAIBatchClient,
    OpenAIBatchFormat,
    chunked,
    custom_id,
)

_FIND_SLACK = 600.0  # seconds: a batch's created_at vs our clock, when looking it up


class BatchesLeftRunning(RunStopped):
    """The run was interrupted; its batches go on at the provider. The message says how to
    collect their results (run again) or cancel them."""


@dataclass(frozen=True, slots=True)
class BatchView:
    """One provider batch as last polled."""

    chunk: int
    batch_id: str | None
    state: str  # the journal's: intent, uploaded, creating, submitted, done
    status: str | None  # the provider's: validating, in_progress, completed, ...
    total: int
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """What a progress display shows after each poll: batches, items, time waiting."""

    batches: list[BatchView]
    total: int
    done: int
    failed: int
    waiting: float  # seconds since this session started
    note: str | None = None  # a transient problem being retried, if any
    extra: dict[str, Any] = field(default_factory=dict)


class BatchApiRunner:
    """Runs items through the OpenAI Batch API; ``run(items)`` returns a BatchResult in input
    order, recorded in the checkpoint like an online run.

    ``adapter`` is an :class:`~throttlepool.adapters.openai.OpenAIAdapter` (chat, embeddings,
    responses or completions); its client makes the Files/Batches calls unless ``client`` is
    given. ``store`` is a path or a SQLiteStore (``:memory:`` when None: no resume). What is
    submitted is journaled in the same file before and after each upload, so running again
    after a crash or Ctrl-C finds the batches already created instead of submitting twice.
    Requests that fail retryably (5xx, 429, expired, cancelled) go into a new batch, up to
    ``attempts`` batches per item. ``progress`` gets a :class:`BatchProgress` after each poll.
    """

    def __init__(
        self,
        adapter: Any,
        *,
        store: Store | str | None = None,
        run_name: str | None = None,
        client: Any = None,
        poll_interval: float = 30.0,
        attempts: int = 3,
        retry_failed: bool = True,
        max_requests: int = MAX_REQUESTS,
        max_bytes: int = MAX_BYTES,
        pricing: Mapping[str, Any] | None = None,
        progress: Callable[[BatchProgress], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if attempts < 1 or max_requests < 1 or max_bytes < 1 or poll_interval < 0:
            raise ConfigError("attempts, max_requests and max_bytes must be >= 1 and "
                              "poll_interval >= 0")
        self.format = OpenAIBatchFormat(adapter)
        self.adapter = adapter
        # The adapter keeps the user's client (retry-free) behind its portable wrapper.
        sdk_client = client if client is not None else adapter._client.get()
        self.api = OpenAIBatchClient(sdk_client)
        self._owns_store = not isinstance(store, Store)
        opened = open_store(store if store is not None else ":memory:")
        if not isinstance(opened, SQLiteStore):
            raise ConfigError("batch mode needs a SQLite checkpoint (a path or SQLiteStore)")
        self.store = opened
        self.journal = Journal(opened.path)
        self.run_name = run_name
        self.poll_interval = poll_interval
        self.attempts = attempts
        self.retry_failed = retry_failed
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.pricing = dict(pricing or {})
        self.progress = progress
        self.clock = clock or SYSTEM_CLOCK

    def settings(self) -> dict[str, Any]:
        """What the checkpoint records about this run (no secrets)."""
        return {"adapter": self.format.provider, "identity": dict(self.adapter.identity()),
                "mode": "batch", "attempts": self.attempts,
                "pricing": {**self.pricing, "mode": "batch"}}

    # -- the run ---------------------------------------------------------------------------

    def run(self, items: Iterable[Any], *, run_name: str | None = None) -> BatchResult[Any]:
        """Submit, poll and collect every item; resumes the run called ``run_name``."""
        return _Session(self, list(items), run_name or self.run_name).run()

    def cancel(self, run_name: str) -> list[str]:
        """Ask the provider to cancel the run's unfinished batches; returns their ids.
        (Running the run again afterwards resubmits the requests they did not answer.)"""
        rows = self.store.query("SELECT id FROM runs WHERE name = ?", (run_name,))
        if not rows:
            raise ConfigError(f"no run named {run_name!r} in {self.store.path}")
        ids = []
        for chunk in self.journal.live(str(rows[0]["id"])):
            if chunk.batch_id and chunk.status not in TERMINAL:
                self.api.cancel(chunk.batch_id)
                ids.append(chunk.batch_id)
        return ids

    def close(self) -> None:
        """Close the journal and a store this runner opened."""
        self.journal.close()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> BatchApiRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Session:
    """One call of ``run``: the loop plan → submit → poll → collect, until every item has
    a final outcome."""

    def __init__(self, runner: BatchApiRunner, items: list[Any], name: str | None) -> None:
        self.r = runner
        self.items = items
        self.name = name
        self.stats = RunStats(total=len(items))
        self.outcomes: dict[int, Outcome[Any]] = {}
        self.note: str | None = None
        self.views: dict[int, BatchView] = {}

    def run(self) -> BatchResult[Any]:
        r, store = self.r, self.r.store
        self.stats.started = started = r.clock.now()
        run_id = self.run_id = store.begin_run(self.name, r.settings())
        make_key = KeyMaker(r.adapter.identity())
        self.keys = [make_key(item) for item in self.items]
        for i, key in enumerate(self.keys):
            prior = store.prior(run_id, i, key)
            if prior is not None and (prior.ok or not r.retry_failed):
                self.outcomes[i] = prior
                self.stats.from_checkpoint += 1
        try:
            while True:
                live = self._plan(r.journal.live(run_id))
                for chunk in live:
                    self._advance(chunk)
                self._report(started)
                if not r.journal.live(run_id) and len(self.outcomes) == len(self.items):
                    break
                r.clock.sleep(r.poll_interval)
        except KeyboardInterrupt:
            return self._interrupted()
        except BaseException as exc:
            store.flush()
            store.finish_run(run_id, self._final_stats(), "failed", f"{type(exc).__name__}: "
                             f"{exc}")
            raise
        store.flush()
        store.finish_run(run_id, self._final_stats(), "completed")
        return BatchResult(self._ordered(), self.stats, run_id)

    def _plan(self, live: list[Chunk]) -> list[Chunk]:
        """Journal new chunks for the items neither answered nor in a live batch."""
        busy = {i for c in live for i in c.indices}
        pending = [i for i in range(len(self.items)) if i not in self.outcomes and i not in busy]
        by_model: dict[str, list[tuple[int, bytes]]] = {}
        for i in pending:
            try:
                problem = getattr(self.r.adapter, "request_problem", lambda _: None)(
                    self.items[i])
                if problem:
                    raise ConfigError(problem)
                line = self.r.format.line(i, self.items[i])
            except (ConfigError, TypeError) as exc:
                self._record(i, Status.FAILED, error=exc, attempts=0)
                continue
            by_model.setdefault(self.r.format.model_of(self.items[i]), []).append((i, line))
        groups = [([i for i, _ in part], [custom_id(i) for i, _ in part])
                  for lines in by_model.values()
                  for part in chunked(lines, self.r.max_requests, self.r.max_bytes)]
        if groups:
            self.r.store.flush()  # failed requests above are recorded before we go on
            live = live + self.r.journal.plan(self.run_id, self.r.format.provider, groups)
        return live

    def _advance(self, chunk: Chunk) -> None:
        """Take one chunk as far as it goes now: upload, create, poll, collect."""
        r = self.r
        try:
            if chunk.state == INTENT:
                data = b"".join(r.format.line(i, self.items[i]) for i in chunk.indices)
                file_id = r.api.upload(data, f"{self.run_id}-{chunk.chunk}.jsonl")
                r.journal.update(chunk, state=UPLOADED, file_id=file_id)
            if chunk.state == CREATING:  # created, perhaps, before a crash: look it up
                found = r.api.find(self._metadata(chunk), chunk.created - _FIND_SLACK)
                if found is not None:
                    r.journal.update(chunk, state=SUBMITTED, batch_id=found.id,
                                     status=found.status)
                else:
                    chunk.state = UPLOADED
            if chunk.state == UPLOADED:
                r.journal.update(chunk, state=CREATING)
                batch = r.api.create(str(chunk.file_id), r.format.endpoint,
                                     self._metadata(chunk))
                r.journal.update(chunk, state=SUBMITTED, batch_id=batch.id, status=batch.status)
                self.stats.calls += len(chunk.indices)
            if chunk.state == SUBMITTED:
                batch = r.api.retrieve(str(chunk.batch_id))
                if batch.status != chunk.status:
                    r.journal.update(chunk, status=batch.status)
                self._view(chunk, batch)
                if batch.status in TERMINAL:
                    self._collect(chunk, batch)
            self.note = None
        except r.api.transient as exc:
            self.note = f"batch {chunk.chunk}: {type(exc).__name__}, trying again"
            self._view(chunk, None)

    def _metadata(self, chunk: Chunk) -> dict[str, str]:
        return {"throttlepool_run": self.run_id, "chunk": str(chunk.chunk)}

    def _collect(self, chunk: Chunk, batch: Any) -> None:
        """Record every answer of a finished batch; retryable failures stay unrecorded, so
        the next plan puts them in a new batch."""
        r = self.r
        rows = r.api.lines(batch.output_file_id) + r.api.lines(batch.error_file_id)
        by_id = {str(row.get("custom_id")): row for row in rows}
        tries = r.journal.submissions(self.run_id)
        why = _batch_error(batch)
        for i, cid in zip(chunk.indices, chunk.custom_ids, strict=True):
            if i in self.outcomes:
                continue  # recorded before a crash that came before this chunk was done
            row = by_id.get(cid)
            answer = r.format.result(row) if row is not None else None
            attempts = tries[i] + 1
            if answer is not None and answer.error is None:
                self._record(i, Status.OK, value=answer.value, usage=answer.usage,
                             attempts=attempts, since=chunk.created)
                continue
            error = answer.error if answer is not None and answer.error else BatchRequestFailed(
                f"no result for {cid}: batch {batch.id} ended {batch.status}{why}")
            if not error.retryable or attempts >= r.attempts:
                self._record(i, Status.FAILED, error=error, attempts=attempts)
        r.store.flush()  # the answers are durable before the chunk is marked done
        r.journal.update(chunk, state=DONE)

    def _record(self, i: int, status: Status, *, value: Any = None, usage: Any = None,
                error: BaseException | None = None, attempts: int, since: float = 0.0) -> None:
        outcome: Outcome[Any] = Outcome(
            i, self.items[i], status, value, error, attempts,
            max(0.0, time.time() - since) if since else 0.0, usage, Source.CALL, self.keys[i])
        self.r.store.record(self.run_id, outcome)  # prices it, at the batch price
        self.outcomes[i] = outcome
        if status is Status.OK:
            self.stats.done += 1
            if usage is not None:
                self.stats.input_tokens += usage.input_tokens
                self.stats.output_tokens += usage.output_tokens
            if outcome.cost is not None:
                self.stats.cost_usd += outcome.cost
            elif usage is not None:
                self.stats.cost_unknown += 1
        else:
            self.stats.failed += 1

    def _view(self, chunk: Chunk, batch: Any) -> None:
        counts = getattr(batch, "request_counts", None)
        self.views[chunk.chunk] = BatchView(
            chunk.chunk, chunk.batch_id, chunk.state, chunk.status, len(chunk.indices),
            int(getattr(counts, "completed", 0) or 0), int(getattr(counts, "failed", 0) or 0))

    def _report(self, started: float) -> None:
        if self.r.progress is None:
            return
        ok = sum(1 for o in self.outcomes.values() if o.ok)
        self.r.progress(BatchProgress(
            sorted(self.views.values(), key=lambda v: v.chunk), len(self.items), ok,
            len(self.outcomes) - ok, self.r.clock.now() - started, self.note))

    def _final_stats(self) -> RunStats:
        self.stats.wall_time = self.r.clock.now() - self.stats.started
        self.stats.not_attempted = len(self.items) - len(self.outcomes)
        return self.stats

    def _ordered(self) -> list[Outcome[Any]]:
        return [self.outcomes.get(i) or Outcome(i, item, Status.NOT_ATTEMPTED, key=self.keys[i])
                for i, item in enumerate(self.items)]

    def _interrupted(self) -> BatchResult[Any]:
        store = self.r.store
        running = [c.batch_id or f"chunk {c.chunk}" for c in self.r.journal.live(self.run_id)]
        run = self.name or self.run_id
        message = (
            f"interrupted: {len(running)} batch(es) left running at the provider "
            f"({', '.join(running[:5])}{', ...' if len(running) > 5 else ''}). Run the same "
            f"command again (run name {run!r}) to collect their results: nothing is "
            f"submitted twice. To stop them: throttlepool cancel {run} "
            f"(BatchApiRunner.cancel({run!r}))")
        store.flush()
        store.finish_run(self.run_id, self._final_stats(), "interrupted", message)
        return BatchResult(self._ordered(), self.stats, self.run_id,
                           stopped=BatchesLeftRunning(message), interrupted=True)


def _batch_error(batch: Any) -> str:
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    return "".join(f" ({e.code}: {e.message})" for e in errors[:1])
