"""One ``BatchApiRunner.run``: plan → submit → poll → collect, until every item has a final
outcome, the budget is reached, or Ctrl-C leaves the batches running."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .._reachability import Reachability
from ..cost import RunBudget
from ..cost.budget import Reservation
from ..cost.pricing import BATCH, item_model
from ..errors import EndpointUnreachable, NotAttempted, RunStopped
from ..outcome import BatchResult, Outcome, RunStats, Source, Status
from ..store.keys import KeyMaker
from .journal import CREATING, DONE, INTENT, SUBMITTED, UPLOADED, Chunk
from .journal import at_provider as waiting_at
from .online import OnlineFallback
from .progress import BatchesLeftRunning, BatchProgress, BatchView
from .provider import REFUSED, BatchRequestFailed, BatchState, batch_line, chunked

if TYPE_CHECKING:
    from .runner import BatchApiRunner


class Session:
    """The state of one run call (see the module docstring)."""

    def __init__(self, runner: BatchApiRunner, items: list[Any], name: str | None) -> None:
        self.r = runner
        self.p = runner.provider
        self.items = items
        self.name = name
        self.stats = RunStats(total=len(items))
        self.outcomes: dict[int, Outcome[Any]] = {}
        self.note: str | None = None
        self.views: dict[int, BatchView] = {}
        self.budget: RunBudget | None = None
        self.held: dict[int, Reservation] = {}  # max_cost: items reserved, not yet settled
        self.stop_reason: str | None = None
        self.fallback_due: set[int] = set()  # batch attempts used up: the online path's
        self.run_id = ""
        self.keys: list[str] = []
        # Each step is an SDK call that has already retried its connection: two of them
        # failing to connect before any reached the server stop the run, as online.
        self.reach = Reachability(failures=2)
        self.unreachable: EndpointUnreachable | None = None
        self.priced = 0  # this session's answers with a cost
        self.estimates: dict[int, float | None] | None = None  # the progress's projection

    def run(self) -> BatchResult[Any]:
        r, store = self.r, self.r.store
        self.stats.started = started = r.clock.now()
        run_id = self.run_id = store.begin_run(self.name, r.settings())
        make_key = KeyMaker(r.adapter.identity())
        self.keys = [make_key(item) for item in self.items]
        for i, key in enumerate(self.keys):
            prior = store.prior(run_id, i, key)
            if prior is not None and (prior.ok or not r.retry_failed):
                # Counted as an online rerun counts them: in ok/failed, from the checkpoint.
                prior.item, prior.source, prior.key = self.items[i], Source.CHECKPOINT, key
                self.outcomes[i] = prior
                self.stats.from_checkpoint += 1
                if prior.ok:
                    self.stats.done += 1
                else:
                    self.stats.failed += 1
        try:
            if r.max_cost is not None:
                self.budget = RunBudget(r.pricing_of(BATCH), r.max_cost,
                                        store.recorded_cost(run_id)[0])
            while True:
                live = self._plan(r.journal.live(run_id))
                for chunk in live:
                    self._advance(chunk)
                    if self.unreachable:
                        break
                self._report(started)
                if self.unreachable:
                    break
                if not r.journal.live(run_id):
                    if self.fallback_due:
                        OnlineFallback(self).run(sorted(self.fallback_due))
                        self.fallback_due.clear()
                    if self.stop_reason or len(self.outcomes) == len(self.items):
                        break
                # Until the server has answered once, a failed step is tried again soon.
                r.clock.sleep(r.poll_interval if self.reach.reached
                              else min(r.poll_interval, 0.5))
        except KeyboardInterrupt:
            return self._interrupted()
        except BaseException as exc:
            store.flush()
            store.finish_run(run_id, self.final_stats(), "failed",
                             f"{type(exc).__name__}: {exc}")
            raise
        store.flush()
        if self.unreachable:
            store.finish_run(run_id, self.final_stats(), "stopped", str(self.unreachable))
            return BatchResult(self._ordered(), self.stats, run_id, stopped=self.unreachable)
        if self.stop_reason and len(self.outcomes) < len(self.items):
            if self.budget is not None:  # said once the batches settled: no stale reservations
                self.stop_reason = self.budget.reason()
            store.finish_run(run_id, self.final_stats(), "stopped", self.stop_reason)
            return BatchResult(self._ordered(), self.stats, run_id,
                               stopped=RunStopped(self.stop_reason))
        store.finish_run(run_id, self.final_stats(), "completed")
        return BatchResult(self._ordered(), self.stats, run_id)

    # -- planning ---------------------------------------------------------------------------

    def _plan(self, live: list[Chunk]) -> list[Chunk]:
        """Journal new chunks for the items neither answered nor in a live batch."""
        busy = {i for c in live for i in c.indices}
        if self.budget is not None:
            for i in busy:  # a resumed run's running batches count against the cap
                self.reserve(i)
        tries = self.r.journal.submissions(self.run_id)
        by_model: dict[str, list[tuple[int, bytes]]] = {}
        for i in range(len(self.items)):
            if i in self.outcomes or i in busy or i in self.fallback_due or self.stop_reason:
                continue
            if self.r.fallback and tries[i] >= self.r.attempts:
                self.fallback_due.add(i)  # the online path was due when the process died
                continue
            try:
                line = batch_line(self.r.adapter, self.p, self.p.custom_id(self.run_id, i),
                                  self.items[i])
            except REFUSED as exc:
                self.record(i, Status.FAILED, error=exc, attempts=0)
                continue
            if not self.reserve(i):
                break
            by_model.setdefault(self.p.model_of(self.items[i]), []).append((i, line))
        groups = [([i for i, _ in part], [self.p.custom_id(self.run_id, i) for i, _ in part])
                  for lines in by_model.values()
                  for part in chunked(lines, self.r.max_requests, self.r.max_bytes)]
        if groups:
            self.r.store.flush()  # failed requests above are recorded before we go on
            live = live + self.r.journal.plan(self.run_id, self.p.name, groups)
        return live

    def estimate(self, i: int, mode: str = BATCH) -> float | None:
        """Item ``i``'s projected cost at the ``mode`` price (None: unknown)."""
        item = self.items[i]
        estimate = self.r.adapter.estimate(item)
        tokens, output = float(estimate.tokens), float(estimate.output)
        return self.r.pricing_of(mode).estimate(max(0.0, tokens - output), output,
                                                item_model(item))

    def reserve(self, i: int, mode: str = BATCH) -> bool:
        """max_cost: hold the item's projected cost at the ``mode`` price; False (and the run
        stops, "budget reached") when it would pass the cap."""
        if self.budget is None or i in self.held:
            return True
        held = self.budget.gate.reserve(self.estimate(i, mode))
        if held is None:
            self.stop_reason = self.budget.reason()
            return False
        self.held[i] = held
        return True

    def release(self, i: int, usage: Any, cost: float | None) -> None:
        """The item's reservation becomes what it cost (None: it was not billed)."""
        held = self.held.pop(i, None)
        if held is not None and self.budget is not None:
            if cost is None and usage is None:
                self.budget.gate.cancel(held)
            else:
                self.budget.gate.settle(held, cost)

    # -- one chunk --------------------------------------------------------------------------

    def _advance(self, chunk: Chunk) -> None:
        """Take one chunk as far as it goes now: upload, create, poll, collect."""
        r, p = self.r, self.p
        try:
            if chunk.state == INTENT:
                file_id = p.upload(self._data(chunk), f"{self.run_id}-{chunk.chunk}.jsonl")
                r.journal.update(chunk, state=UPLOADED, file_id=file_id)
            if chunk.state == CREATING:  # created, perhaps, before a crash: look it up
                claimed = {c.batch_id for c in r.journal.chunks(self.run_id) if c.batch_id}
                found = p.find(chunk, self._tag(chunk), claimed)
                if found is not None:
                    r.journal.update(chunk, state=SUBMITTED, batch_id=found.id,
                                     status=found.status)
                else:
                    chunk.state = UPLOADED
            if chunk.state == UPLOADED:
                r.journal.update(chunk, state=CREATING)
                batch = p.create(chunk, self._data(chunk), self._tag(chunk))
                r.journal.update(chunk, state=SUBMITTED, batch_id=batch.id, status=batch.status)
                self.stats.calls += len(chunk.indices)
            if chunk.state == SUBMITTED:
                batch = p.poll(str(chunk.batch_id))
                if batch.status != chunk.status:
                    r.journal.update(chunk, status=batch.status)
                self._view(chunk, batch)
                if batch.ended:
                    self._collect(chunk, batch)
            self.note = None
            self.reach.observe_success()
        except p.transient as exc:
            self.unreachable = self.reach.observe_failure(exc, r.adapter.classify(exc))
            self.note = f"batch {chunk.chunk}: {type(exc).__name__}, trying again"
            self._view(chunk, None)

    def _data(self, chunk: Chunk) -> bytes:
        return b"".join(self.p.line(cid, self.items[i])
                        for i, cid in zip(chunk.indices, chunk.custom_ids, strict=True))

    def _tag(self, chunk: Chunk) -> dict[str, str]:
        return {"throttlepool_run": self.run_id, "chunk": str(chunk.chunk)}

    def _collect(self, chunk: Chunk, batch: BatchState) -> None:
        """Record every answer of an ended batch; retryable failures stay unrecorded, so the
        next plan puts them in a new batch (or, attempts used up, the online fallback)."""
        r = self.r
        answers = self.p.results(batch)
        tries = r.journal.submissions(self.run_id)
        for i, cid in zip(chunk.indices, chunk.custom_ids, strict=True):
            if i in self.outcomes:
                continue  # recorded before a crash that came before this chunk was done
            answer = answers.get(cid)
            attempts = tries[i] + 1
            if answer is not None and answer.error is None:
                self.record(i, Status.OK, value=answer.value, usage=answer.usage,
                            attempts=attempts, since=chunk.created)
                continue
            error = answer.error if answer is not None and answer.error else BatchRequestFailed(
                f"no result for {cid}: batch {batch.id} ended {batch.status}{batch.problem}")
            if error.retryable and attempts >= r.attempts and r.fallback:
                self.fallback_due.add(i)
            elif not error.retryable or attempts >= r.attempts:
                self.record(i, Status.FAILED, error=error, attempts=attempts)
        r.store.flush()  # the answers are durable before the chunk is marked done
        r.journal.update(chunk, state=DONE)

    def record(self, i: int, status: Status, *, value: Any = None, usage: Any = None,
               error: BaseException | None = None, attempts: int, since: float = 0.0,
               latency: float | None = None, cost: float | None = None) -> None:
        """Record item ``i``'s final outcome in the checkpoint and the run's counters."""
        if latency is None:
            latency = max(0.0, time.time() - since) if since else 0.0
        outcome: Outcome[Any] = Outcome(i, self.items[i], status, value, error, attempts,
                                        latency, usage, Source.CALL, self.keys[i], cost,
                                        ended=time.time())  # the row's time is the checkpoint's
        self.r.store.record(self.run_id, outcome)  # prices it (batch price) unless priced
        self.outcomes[i] = outcome
        self.release(i, usage if status is Status.OK else None, outcome.cost)
        if status is Status.OK:
            self.stats.done += 1
            if usage is not None:
                self.stats.input_tokens += usage.input_tokens
                self.stats.output_tokens += usage.output_tokens
            if outcome.cost is not None:
                self.stats.cost_usd += outcome.cost
                self.priced += 1
            elif usage is not None:
                self.stats.cost_unknown += 1
        else:
            self.stats.failed += 1

    # -- reporting --------------------------------------------------------------------------

    def _view(self, chunk: Chunk, batch: BatchState | None) -> None:
        self.views[chunk.chunk] = BatchView(
            chunk.chunk, chunk.batch_id, chunk.state, chunk.status, len(chunk.indices),
            batch.completed if batch else 0, batch.failed if batch else 0)

    def _report(self, started: float) -> None:
        if self.r.progress is None:
            return
        ok = sum(1 for o in self.outcomes.values() if o.ok)
        spent = self.stats.cost_usd if self.priced else None
        self.r.progress(BatchProgress(
            sorted(self.views.values(), key=lambda v: v.chunk), len(self.items), ok,
            len(self.outcomes) - ok, self.r.clock.now() - started, self.note,
            cost=spent, projected_cost=self._projected(spent),
            projected_is_bound=spent is None))

    def _projected(self, spent: float | None) -> float | None:
        """What the whole input will have cost this session (see BatchProgress)."""
        left = [i for i in range(len(self.items)) if i not in self.outcomes]
        if spent is not None:
            return spent + len(left) * spent / self.priced
        if self.estimates is None:  # once: an estimate may count tokens
            self.estimates = {i: self.estimate(i) for i in left}
        costs = [self.estimates.get(i) for i in left]
        if any(c is None for c in costs):
            return None
        return sum(c for c in costs if c is not None)

    def final_stats(self) -> RunStats:
        """The run's counters, with its wall time and the items not attempted."""
        self.stats.wall_time = self.r.clock.now() - self.stats.started
        self.stats.not_attempted = len(self.items) - len(self.outcomes)
        return self.stats

    def _ordered(self, at_provider: dict[int, str] | None = None) -> list[Outcome[Any]]:
        """Every item's outcome; one still at the provider says in which batch."""
        waiting = at_provider or {}
        return [self.outcomes.get(i) or Outcome(
            i, item, Status.NOT_ATTEMPTED, key=self.keys[i], error=NotAttempted(
                f"at the provider (batch {waiting[i]}): run again to collect the answer")
            if i in waiting else None) for i, item in enumerate(self.items)]

    def _interrupted(self) -> BatchResult[Any]:
        store = self.r.store
        # A batch runs at the provider once created (or perhaps created: a crash between
        # the create call and its answer); a chunk still being uploaded is not there.
        at_provider = {i: b for i, b in waiting_at(self.r.journal.live(self.run_id)).items()
                       if i not in self.outcomes}
        run = self.name or self.run_id
        ids = list(dict.fromkeys(at_provider.values()))
        if ids:
            message = (
                f"interrupted: {len(ids)} batch{'es' if len(ids) != 1 else ''} left running at "
                f"the provider ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}) with "
                f"{len(at_provider)} requests. Run the same command again (run name {run!r}) "
                f"to collect their results: nothing is submitted twice. To stop them: "
                f"throttlepool cancel {run}")
        else:
            message = (f"interrupted before any batch was created: nothing is at the provider;"
                       f" running run {run!r} again submits the items")
        store.flush()
        store.finish_run(self.run_id, self.final_stats(), "interrupted", message)
        return BatchResult(self._ordered(at_provider), self.stats, self.run_id,
                           stopped=BatchesLeftRunning(message, at_provider), interrupted=True)
