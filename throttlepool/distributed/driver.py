"""The Dask driver of one run: a :class:`~throttlepool._run_engine.RunEngine` over a cluster.

:class:`DaskEngine` cuts the items into chunks, keeps at most ``window`` chunks in flight,
delivers each chunk's outcomes through the run's ledger (checkpoint, cache, statistics,
display) and emits them in input order (or completion order). Like the local engine it is
driven by ``await run()``, so ``run``, ``arun``, ``imap``, ``aimap`` and ``as_completed``
all work on Dask. Memory is bounded: the chunks in flight, and in input order a re-order
buffer of at most ``window`` chunks' outcomes, since no item is taken more than ``window``
chunks ahead of the oldest one not yet emitted; a full consumer holds dispatch back.

Before the run begins (and so before anything is recorded) start.py connects to the cluster
and has its workers load the chunk configuration.

Under a request limit the chunks are sized so that those in flight hold a couple of
seconds of the limit's admissions beyond the calls' latency (sizing.py): outcomes arrive
steadily and a stop leaves little dispatched. An interrupt (Ctrl-C) or an abort also stops
the run's chunks on the workers (chunk.stop_session): cancelling a Dask task does not stop
its thread.

Each call a worker makes is reported to the driver as a Dask event just before it is sent
(chunk.announcer), so ``stats.calls`` counts the calls of a worker that died before its
chunk reported; ``stats.repeated_calls`` says how many of them were lost that way (the
calls of chunks the driver itself cancelled, on an abort, are counted but not as repeats).
The driver journals each announced call beside the checkpoint, with the session's event
topic; a resume after the driver itself died counts the journalled calls and those the
scheduler still holds under that topic (made after the driver died) whose items have no
recorded outcome (_journal.py).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from .._ledger import Ending, RunLedger
from ..classify import is_timeout
from ..cost.budget import Reservation
from ..errors import LimiterUnavailable, RunStopped
from ..outcome import Outcome, RunStats, Source, Status
from ..store.base import SpendRecords
from .chunk import ChunkConfig, ChunkResult, announced_calls, call_of, run_chunk, stop_session
from .sizing import Mean, chunk_items, request_rate
from .start import ClusterUnavailable as ClusterUnavailable  # the CLI's name for it
from .start import DaskPlan, connect, start


class DaskEngine:
    """Drives one run on a Dask cluster; see the module docstring."""

    def __init__(self, plan: DaskPlan, ledger: RunLedger, items: Iterable[Any],
                 emit: Callable[[Outcome[Any]], None], *, ordered: bool = True,
                 fill_remaining: bool = False, has_space: Callable[[], bool] | None = None
                 ) -> None:
        self.plan, self.ledger = plan, ledger
        self.stats: RunStats = ledger.stats
        self._items: Iterator[tuple[int, Any]] = enumerate(items)
        self._emit, self._ordered, self._fill = emit, ordered, fill_remaining
        self._has_space = has_space
        self._ending = Ending(exhausted=False)
        self._waiting: dict[int, tuple[Any, str | None]] = {}  # index -> (item, key) sent
        self._held: dict[int, Reservation] = {}  # index -> its share of max_cost
        self._buffer: dict[int, Outcome[Any]] = {}
        self._taken = 0  # items taken from the input
        self._emit_next = 0
        self._window_items = 1
        self._reported = 0  # calls the chunks' results account for
        self._announced = 0  # calls the workers announced (Dask events)
        # by chunk: a chunk's announced calls its result does not account for were made by
        # a worker that was lost, unless the driver itself cancelled the chunk
        self._announced_by: Counter[int] = Counter()
        self._reported_by: Counter[int] = Counter()
        self._cancelled: set[int] = set()
        self._stop: BaseException | None = None
        self._interrupted = False
        self._task: asyncio.Future[Any] | None = None
        self._abort_pending = False  # an abort that came before the run's task existed
        self._wake: asyncio.Event | None = None
        self._arrived: deque[Any] = deque()
        self._client: Any = None
        self._session: str | None = None  # names this run's chunks to stop them on the workers
        self._workers_stopped = False
        self._stopping = threading.Lock()
        self._sent = 0  # calls the live workers sent, as they said when the run was stopped
        self._window = 1  # chunks in flight
        self._rate: float | None = None  # the tightest request limit, calls a second
        self._latency = Mean()  # of the calls so far: how long a chunk's calls take

    # ---- what callers see (RunEngine) ----------------------------------------------------

    @property
    def run_id(self) -> str | None:
        """The checkpoint's run id, once the run began (with a store)."""
        return self.ledger.run_id

    @property
    def stop_reason(self) -> BaseException | None:
        """Why dispatch stopped early, or None."""
        return self._stop

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C (or an abort) stopped the run."""
        return self._interrupted

    @property
    def finished(self) -> bool:
        """True once the run's ending is recorded."""
        return self.ledger.finished

    def request_stop(self, reason: BaseException, *, interrupted: bool = False) -> None:
        """Submit no more chunks; the chunks in flight finish and are delivered. An
        interrupt (Ctrl-C) also has the workers take no more items: calls already admitted
        finish, the rest are not attempted, as with local threads."""
        self._stop = self._stop or reason
        self._interrupted = self._interrupted or interrupted
        if interrupted and not self._workers_stopped:
            try:
                asyncio.get_running_loop().run_in_executor(None, self._stop_workers)
            except RuntimeError:  # not on the run's loop
                self._stop_workers()
        self.notify_space()

    def _stop_workers(self) -> None:
        """Stop this run's chunks on every worker (chunk.stop_session) and count the calls
        they sent; blocking, once (a second caller waits for the first)."""
        client, session = self._client, self._session
        if client is None or session is None:
            return
        with self._stopping:
            if self._workers_stopped:
                return
            self._workers_stopped = True
            try:
                sent: dict[str, int] = client.run(stop_session, session, on_error="ignore")
            except Exception:  # a cluster going away: its chunks go with it
                return
            # Final: no worker sends a call of this run after its stop. Events still on
            # their way would count them too late, once the run's ending is recorded.
            self._sent = sum(n for n in sent.values() if isinstance(n, int))
            self.stats.calls = self._calls()

    def abort(self) -> None:
        """Stop now: the chunks in flight are cancelled and their answers lost. An abort that
        reaches the loop before ``run`` began is kept: the run then connects to nothing."""
        if self._task is None:
            self._abort_pending = True
        elif not self._task.done():
            self._task.cancel()

    def notify_space(self) -> None:
        """Wake the driver (the consumer took outcomes, or a stop was asked for)."""
        if self._wake is not None:
            self._wake.set()

    # ---- the run -------------------------------------------------------------------------

    async def run(self) -> RunStats:
        """Start on the cluster, drive every item to an outcome (or stop); the statistics."""
        plan = self.plan
        self._task = asyncio.current_task()
        self._wake = asyncio.Event()
        try:
            if self._abort_pending:
                raise asyncio.CancelledError
            client, owned = await asyncio.to_thread(connect, plan)
        except asyncio.CancelledError:
            self._mark_aborted()
            raise
        topic = f"throttlepool-calls-{uuid.uuid4().hex[:12]}"
        subscribed = False
        try:
            window = await asyncio.to_thread(start, plan, client)
            client.subscribe_topic(topic, self._announce)
            subscribed = True
            self.stats.limits = plan.limits
            run_id = self.ledger.begin(plan.run_name, plan.settings,
                                       announced=lambda name: announced_calls(client, name))
            if self.ledger.journal is not None:
                self.ledger.journal.topic(topic)
            store = self.ledger.store
            if plan.budget is not None and run_id is not None and isinstance(store, SpendRecords):
                plan.budget.gate.spent += store.recorded_cost(run_id)[0]  # a resume has spent
            self._client, self._session = client, topic
            await self._drive(client, window, replace(plan.cfg, calls_topic=topic, session=topic))
        except asyncio.CancelledError:  # also while starting; _drive recorded its own
            self._mark_aborted()
            raise
        finally:
            if subscribed:
                client.unsubscribe_topic(topic)
            if owned:
                await asyncio.to_thread(client.close)
        return self._ended()

    def _mark_aborted(self) -> None:
        # Cancelled while connecting or starting (no chunk sent, no run begun), or again
        # after _drive recorded its own abort: the same marks either way.
        self._ending.aborted = self._interrupted = True
        self._stop = self._stop or RunStopped("aborted")

    def _announce(self, event: Any) -> None:
        # On the Dask client's own thread, its only writer: no lock is needed.
        self._announced += 1
        call = call_of(event)
        if call is not None:
            chunk, index = call
            self._announced_by[chunk] += 1
            sent = self._waiting.get(index)
            self.ledger.call_started(index, sent[1] if sent is not None else None)
        self.stats.calls = self._calls()

    def _calls(self) -> int:
        # Calls an earlier session lost (ledger.begin counted them) plus this session's:
        # announced before they were made, reported by their chunk, or counted by the
        # workers when the run was stopped, whichever is more.
        return (self.stats.repeated_after_resume
                + max(self._announced, self._reported, self._sent))

    # ---- taking items --------------------------------------------------------------------

    def _room(self) -> bool:
        if self._ordered and self._taken - self._emit_next >= self._window_items:
            return False
        return self._has_space is None or self._has_space()

    def _next_chunk(self) -> list[tuple[int, Any]]:
        """The next items to call; those the checkpoint or the cache knows are delivered."""
        chunk: list[tuple[int, Any]] = []
        ledger = self.ledger
        size = chunk_items(self._rate, self._latency.value(1.0), self._window,
                           self.plan.chunk_size)
        while (len(chunk) < size and not self._ending.exhausted
               and self._stop is None and self._room()):
            try:
                index, item = next(self._items)
            except StopIteration:
                self._ending.exhausted = True
                break
            except Exception as exc:  # the caller's generator failed: stop, drain, raise it
                self._ending.input_error = exc
                self.request_stop(RunStopped("the input iterator raised", exc))
                break
            self._taken += 1
            key = ledger.key(item)
            known = ledger.known(index, item, key)
            if known is not None:
                self._deliver(known)
                continue
            self._waiting[index] = (item, key)
            if not self._reserve(index, item):
                break  # left waiting: not attempted, once the chunks in flight are back
            chunk.append((index, item))
        self.stats.in_flight = len(self._waiting)
        return chunk

    def _reserve(self, index: int, item: Any) -> bool:
        """Hold the item's projected cost under max_cost; False (and stop): it does not fit."""
        budget, estimate = self.plan.budget, self.plan.estimate
        if budget is None or estimate is None:
            return True
        held = budget.reserve(estimate(item), item)
        if held is None:
            self.request_stop(RunStopped(budget.reason()))
            return False
        self._held[index] = held
        return True

    def _settle(self, index: int, item: Any, outcome: Outcome[Any] | None) -> None:
        """The item's reservation becomes what its answer cost; given back when it was not
        billed (a failure other than a timeout, or never called)."""
        held, budget = self._held.pop(index, None), self.plan.budget
        if held is None or budget is None:
            return
        if outcome is not None and (outcome.status is Status.OK
                                    or (outcome.error is not None
                                        and is_timeout(outcome.error))):
            budget.settle(held, outcome.usage, item)
        else:
            budget.cancel(held)

    # ---- the loop ------------------------------------------------------------------------

    async def _drive(self, client: Any, window: int, cfg: ChunkConfig) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None
        token, numbers = uuid.uuid4().hex[:12], itertools.count()
        in_flight: dict[Any, int] = {}  # future -> chunk number
        self._window_items = window * self.plan.chunk_size
        self._window, self._rate = window, request_rate(self.plan.limits)

        def arrived(fut: Any) -> None:  # on the Dask client's thread
            def on_loop() -> None:
                self._arrived.append(fut)
                wake.set()
            loop.call_soon_threadsafe(on_loop)

        try:
            while True:
                while (self._stop is None and not self._ending.exhausted
                       and len(in_flight) < window and self._room()):
                    chunk = self._next_chunk()
                    if not chunk:
                        break  # the input ended, or only known items fitted: look again
                    n = next(numbers)
                    fut = client.submit(run_chunk, n, chunk, cfg, key=f"throttlepool-{token}-{n}",
                                        retries=self.plan.task_retries, pure=False)
                    in_flight[fut] = n
                    fut.add_done_callback(arrived)
                if not in_flight and (self._stop is not None or self._ending.exhausted):
                    return
                if not self._arrived:
                    wake.clear()
                    await wake.wait()
                    continue
                fut = self._arrived.popleft()
                in_flight.pop(fut, None)
                await self._collect(fut)
        except BaseException as exc:  # cancelled (abort, a second Ctrl-C), or a crash
            if in_flight:
                client.cancel(list(in_flight))  # their answers are lost
                self._cancelled.update(in_flight.values())
                # cancelling a running task does not stop its thread: stop its calls too
                self._stop_workers()
            if isinstance(exc, Exception):
                self._ending.crash = exc
                self._stop = self._stop or RunStopped(f"{type(exc).__name__}: {exc}", exc)
            else:
                self._ending.aborted = self._interrupted = True
                self._stop = self._stop or RunStopped("aborted")
            self._finish()
            raise

    async def _collect(self, fut: Any) -> None:
        try:
            result: ChunkResult = await asyncio.to_thread(fut.result)
        except Exception as exc:  # the task failed on every try (e.g. KilledWorker)
            self.request_stop(RunStopped(f"a chunk failed on the cluster: {exc!r}", exc))
            return
        finally:
            fut.release()
        self._accept(result)
        if result.stopped is not None:
            self.request_stop(result.stopped)
        if self.ledger.problem is not None:
            # Calls whose outcomes cannot be kept would be paid for again: stop paying.
            self._ending.store_error = self.ledger.problem
            self.request_stop(RunStopped("the checkpoint cannot be written", self.ledger.problem))

    def _accept(self, result: ChunkResult) -> None:
        """A chunk's outcomes; a rerun chunk's duplicates are dropped (each item counts once)."""
        stats, cache = self.stats, self.ledger.cache
        self._reported += result.calls
        self._reported_by[result.chunk] += result.calls
        stats.calls = self._calls()
        stats.retries += result.retries
        stats.rate_limited += result.rate_limited
        stats.rate_limit_wait += result.rate_limit_wait
        for r in result.items:
            if r.index not in self._waiting:
                continue
            item, key = self._waiting.pop(r.index)
            outcome = Outcome(r.index, item, Status(r.status), r.value, r.error, r.attempts,
                              r.latency, r.usage, Source.CALL, key, ttft=r.ttft,
                              ended=r.ended)
            if r.attempts:
                self._latency.add(r.latency)
            if cache is not None and key is not None and outcome.status is Status.OK:
                cache.put(key, outcome.value)
            for billed in r.billed:  # answers the worker rejected: the server billed them
                self.ledger.cost.count_billed(stats, billed, item)
                if self.plan.budget is not None:
                    self.plan.budget.charge(billed, item)
            self._settle(r.index, item, outcome)
            self._deliver(outcome)
        stats.in_flight = len(self._waiting)

    def _deliver(self, outcome: Outcome[Any]) -> None:
        self.ledger.deliver(outcome)
        if not self._ordered:
            self._emit(outcome)
            return
        self._buffer[outcome.index] = outcome
        while self._emit_next in self._buffer:
            self._emit(self._buffer.pop(self._emit_next))
            self._emit_next += 1

    # ---- the ending ----------------------------------------------------------------------

    def _finish(self) -> None:
        """Count the calls, fill in what a stop left uncalled, record the ending."""
        ending, stats = self._ending, self.stats
        stats.calls = self._calls()
        stats.repeated_calls = sum(
            max(0, announced - self._reported_by[chunk])
            for chunk, announced in self._announced_by.items() if chunk not in self._cancelled)
        if not ending.aborted and ending.crash is None:
            for index in sorted(self._waiting):  # sent, but their chunk failed for good
                item, key = self._waiting.pop(index)
                self._settle(index, item, None)
                self._deliver(RunLedger.not_attempted(index, item, self._stop, key))
            if self._fill and self._stop is not None and ending.input_error is None:
                for index, item in self._items:
                    self._deliver(RunLedger.not_attempted(index, item, self._stop))
                ending.exhausted = True
        stats.in_flight = 0
        ending.stop_reason, ending.interrupted = self._stop, self._interrupted
        ending.store_error = ending.store_error or self.ledger.problem
        error = self.ledger.finish(ending)
        ending.store_error = ending.store_error or error

    def _ended(self) -> RunStats:
        self._finish()
        ending = self._ending
        if ending.store_error is not None:
            raise self.ledger.backlog.error(ending.store_error)
        if ending.input_error is not None:
            raise ending.input_error
        if isinstance(self._stop, LimiterUnavailable):
            raise LimiterUnavailable(
                f"{self._stop} ({self.stats.finished} outcomes were checkpointed; "
                "rerun with the same run_name to resume)") from self._stop
        return self.stats
