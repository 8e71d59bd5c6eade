"""The async core: one run of items through adapter, limiter, retries, breaker and store.

Every public entry point (``run``, ``arun``, ``imap``, ``as_completed``, ``generate_batch``)
drives this one engine; the sync ones run it through the bridge (bridge.py).
``batch_size`` worker coroutines (times ``LOOKAHEAD``, below) each take the next item, drive
it to an outcome (attempts.py) and deliver it: the ledger (ledger.py) counts and checkpoints
it, then the engine emits it, in input order when ``ordered``. Nothing else holds items, so
memory is bounded by the workers plus the re-order window.

With a checkpoint, a worker takes a new item only while the items being worked on plus the
outcomes the store has not committed number fewer than ``batch_size`` (store/backlog.py): a
store that stops committing (locked, disk full) stops the calls at once. The run then
delivers what it has, records why in its status and raises the StoreError with the outcomes
the checkpoint does not hold.

Lookahead: where an attempt is nothing but a job for the runner's thread pool, the engine
runs ``LOOKAHEAD`` times as many workers as the pool has threads (at most ``LOOKAHEAD_MAX``
more). Calls still number at most ``batch_size`` at once; the others wait in the pool's
queue, so a thread that answers takes the next call at once instead of waiting for a round
trip through the loop. A queued call that must no longer start (a stop, a failure the loop
has not acted on) is withdrawn unstarted (_pool.RunGate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

from ._attempts import Attempts
from ._calls import Dispatcher, RunConfig
from ._control import RunControl
from ._ledger import Ending, RunLedger
from ._pool import LoopHandoff, RunGate
from ._run_engine import RunEngine
from .adapters.structured import stored_value_reviver
from .errors import RunStopped, StoreError
from .outcome import BatchResult, Outcome, RunStats, Source
from .progress import ProgressSink
from .store.base import SpendRecords

#: Workers per pool thread where lookahead applies (1: none). At batch_size 8 on 2 cores
#: run() went from 0.6 voluntary context switches per no-op item to 0.18 with 4 (the
#: bench's overhead section, which has the switches per item of each way).
LOOKAHEAD = 4
#: At most this many calls wait in the queue: a few per thread is all a small pool needs,
#: and with many threads each extra worker only costs the loop.
LOOKAHEAD_MAX = 24


class Engine:
    """Runs one batch; ``emit`` receives outcomes (in input order when ``ordered``).

    ``fill_remaining``: after a stop, the items never taken are delivered as NOT_ATTEMPTED.
    ``has_space``: False while the consumer's side is full; workers then wait for
    ``notify_space``.
    """

    def __init__(
        self,
        cfg: RunConfig,
        items: Iterable[Any],
        emit: Callable[[Outcome[Any]], None],
        *,
        ordered: bool = True,
        fill_remaining: bool = False,
        progress: ProgressSink | None = None,
        has_space: Callable[[], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self.ledger = RunLedger(
            clock=cfg.clock, identity=cfg.adapter.identity(), store=cfg.store, cache=cfg.cache,
            retry_failed=cfg.options.checkpoint.retry_failed,
            batch_size=cfg.options.execution.batch_size, progress=progress,
            total=len(items) if isinstance(items, Sized) else None, on_call=cfg.on_call,
            revive=stored_value_reviver(cfg.adapter))
        self.stats: RunStats = self.ledger.stats
        self.control = RunControl(cfg.clock, self.stats)
        self._items: Iterator[Any] = iter(items)
        self._emit = emit
        self._ordered = ordered
        self._fill = fill_remaining
        self._has_space = has_space
        self._next_index = 0
        self._emit_next = 0
        self._buffer: dict[int, Outcome[Any]] = {}
        self._ending = Ending(exhausted=False)
        self._open = 0  # items taken whose outcome is not delivered yet
        self._task: asyncio.Future[Any] | None = None
        self._abort_pending = False  # an abort that came before the run's task existed
        self._first = False  # an outcome was delivered (lookahead's workers wait for one)
        self._first_outcome = asyncio.Event()  # (bound to a loop at its first wait)
        self._breaker_trips = cfg.breaker.trips if cfg.breaker else 0

    # ---- what callers see ----------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        """The checkpoint's run id, once the run began (with a store)."""
        return self.ledger.run_id

    @property
    def stop_reason(self) -> BaseException | None:
        """Why dispatch stopped early (fatal error, interrupt, deadline), or None."""
        return self.control.stop_reason

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C (or an abort) stopped the run."""
        return self.control.interrupted

    @property
    def finished(self) -> bool:
        """True once the run's ending is recorded."""
        return self.ledger.finished

    def request_stop(self, reason: BaseException, *, interrupted: bool = False) -> None:
        """Stop dispatching; calls in flight finish and are delivered. Loop thread only."""
        self.control.request_stop(reason, interrupted=interrupted)

    def abort(self) -> None:
        """Stop now without waiting for calls in flight (a second Ctrl-C). Loop thread only.

        The run is recorded as interrupted; the answers of the abandoned calls are lost. An
        abort sent from another thread can reach the loop before ``run`` has begun (the
        callback is queued ahead of the run's first step): it is kept, and ``run`` aborts at
        its first wait.
        """
        if self._task is None:
            self._abort_pending = True
        elif not self._task.done():
            self._task.cancel()

    def notify_space(self) -> None:
        """The consumer took outcomes; workers blocked on a full output may go on."""
        self.control.notify()

    # ---- the run -------------------------------------------------------------------------

    async def run(self) -> RunStats:
        """Drive every item to an outcome (or stop); returns the run's statistics."""
        cfg, stats, ledger, ending = self.cfg, self.stats, self.ledger, self._ending
        loop = asyncio.get_running_loop()
        self._task = task = asyncio.current_task()
        if self._abort_pending and task is not None:
            task.cancel()  # taken at the gather below: recorded as aborted, no call made
        gate = self._gate()
        self.control.gate = gate
        attempts = Attempts(cfg, ledger, self.control, Dispatcher(cfg, LoopHandoff(loop), gate))
        stats.limits = tuple((lim.amount, lim.period, lim.unit) for lim in cfg.limiter.limits)
        run_id = ledger.begin(cfg.options.checkpoint.run_name, cfg.settings)
        if cfg.budget is not None and run_id is not None and isinstance(cfg.store, SpendRecords):
            cfg.budget.gate.spent += cfg.store.recorded_cost(run_id)[0]  # a resume has spent
        ledger.backlog.watch(loop, self._store_changed)
        timer = None
        execution = cfg.options.execution
        if execution.deadline is not None:
            timer = loop.call_later(
                execution.deadline, self.request_stop, RunStopped("run deadline reached"))
        count = execution.batch_size + (
            min((LOOKAHEAD - 1) * execution.batch_size, LOOKAHEAD_MAX) if gate is not None else 0)
        workers = [asyncio.create_task(self._worker(attempts, lookahead=n >= execution.batch_size))
                   for n in range(count)]
        try:
            results = await asyncio.gather(*workers, return_exceptions=True)
        except BaseException:  # cancelled (abort, a second Ctrl-C): record it on the way out
            if gate is not None:
                gate.stop()  # no queued call starts after an abort
            for w in workers:
                w.cancel()
            ending.aborted = self.control.interrupted = True
            if self.control.stop_reason is None:
                self.control.stop_reason = RunStopped("aborted")
            self._finish()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if gate is not None:
                gate.retire()
            ledger.backlog.unwatch()
        ending.crash = ending.crash or next(
            (r for r in results if isinstance(r, BaseException)), None)
        if (self._fill and self.control.stopping and ending.crash is None
                and ending.input_error is None):
            self._fill_not_attempted()
        self._finish()
        if ending.crash is not None:
            raise ending.crash
        if ending.store_error is not None:
            raise ledger.backlog.error(ending.store_error)
        if ending.input_error is not None:
            raise ending.input_error
        return stats

    def _gate(self) -> RunGate | None:
        """Lookahead's gate, where it applies (see the module docstring), else None."""
        cfg = self.cfg
        # batch_size 1 is sequential: a 429's retry must go before the next item.
        if (LOOKAHEAD <= 1 or cfg.options.execution.batch_size == 1
                # An async call's concurrency is its number of workers; a timeout the
                # runner enforces would count the wait in the queue.
                or cfg.adapter.is_async
                or (cfg.options.execution.timeout is not None and cfg.runner_enforces_timeout)
                # Queued calls' reservations would make max_cost refuse (and stop) early.
                or cfg.budget is not None):
            return None
        return RunGate(cfg.pool.failures)

    def _finish(self) -> None:
        cfg, ending = self.cfg, self._ending
        if cfg.breaker is not None:
            self.stats.breaker_trips = cfg.breaker.trips - self._breaker_trips
        ending.stop_reason = self.control.stop_reason
        ending.interrupted = self.control.interrupted
        error = self.ledger.finish(ending)
        if error is not None:
            ending.store_error = ending.store_error or error

    # ---- taking items, at the checkpoint's pace ------------------------------------------

    def _store_changed(self) -> None:
        if self.ledger.backlog.problem is not None:
            self._store_failed(self.ledger.backlog.problem)

    async def _wait_for_store(self) -> bool:
        """Wait while the checkpoint is behind (see store/backlog.py); False if it is not."""
        backlog = self.ledger.backlog
        with backlog.waiting():
            if backlog.problem is not None:
                self._store_failed(backlog.problem)
                return False
            if not backlog.behind(self._open):
                return False
            await self.control.pause(backlog.moved())
            return True

    def _store_failed(self, problem: StoreError) -> None:
        # Calls whose outcomes cannot be kept would be paid for again: stop paying.
        self._ending.store_error = self._ending.store_error or problem
        self.request_stop(RunStopped("the checkpoint cannot be written", problem))

    def _next(self) -> tuple[int, Any] | None:
        try:
            item = next(self._items)
        except StopIteration:
            self._ending.exhausted = True
            return None
        index = self._next_index
        self._next_index += 1
        return index, item

    def _fill_not_attempted(self) -> None:
        while (taken := self._next()) is not None:
            self._deliver(self.ledger.not_attempted(*taken, self.control.stop_reason))

    async def _worker(self, attempts: Attempts, lookahead: bool = False) -> None:
        control, backlog, has_space = self.control, self.ledger.backlog, self._has_space
        if lookahead and not await control.pause(self._first_outcome.wait()):
            # Until an answer came, a header pacer knows nothing of the server's budget: the
            # calls it lets go blind number batch_size, as without lookahead. (Set also when
            # a worker without lookahead ends: the input is done, or the run stops.)
            return
        # Fixed for the run; read once here, not through attribute chains for every item.
        window = self.cfg.options.execution.window_size if self._ordered else None
        process, deliver = attempts.process, self._deliver
        items, ending = self._items, self._ending
        try:
            while True:
                while not control.stopping:
                    if ((window is not None and self._next_index - self._emit_next >= window)
                            or (has_space is not None and not has_space())):
                        await control.pause(control.changed())
                    elif backlog.writer is None or not await self._wait_for_store():
                        break
                # The next item, unless the run stops or the input is done.
                if control.stopping or ending.exhausted:
                    return
                try:
                    item = next(items)
                except StopIteration:
                    ending.exhausted = True
                    return
                except Exception as exc:  # the caller's generator failed: stop, drain, raise it
                    ending.input_error = exc
                    self.request_stop(RunStopped("the input iterator raised", exc))
                    return
                index = self._next_index
                self._next_index = index + 1
                self._open += 1
                deliver(await process(index, item))
                self._open -= 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # e.g. LimiterUnavailable: the run fails; stop paying now
            self._ending.crash = self._ending.crash or exc
            self.request_stop(RunStopped(f"{type(exc).__name__}: {exc}", exc))
            raise
        finally:
            if not lookahead:  # lookahead's workers wait for no outcome from a worker gone
                self._first_outcome.set()

    # ---- delivery ------------------------------------------------------------------------

    def _deliver(self, outcome: Outcome[Any]) -> None:
        if not self._first and outcome.source is Source.CALL:
            self._first = True  # an answer: a header pacer has seen the server's budget
            self._first_outcome.set()
        refused = self.ledger.deliver(outcome)
        if refused is not None:
            self._store_failed(refused)
        if not self._ordered:
            self._emit(outcome)
            return
        if outcome.index != self._emit_next:
            self._buffer[outcome.index] = outcome
            return
        self._emit(outcome)
        self._emit_next += 1
        buffer = self._buffer
        while buffer and self._emit_next in buffer:
            self._emit(buffer.pop(self._emit_next))
            self._emit_next += 1
        self.control.notify()


async def run_to_result(engine: RunEngine, outcomes: list[Outcome[Any]]) -> BatchResult[Any]:
    """Run ``engine`` (emitting into ``outcomes``) and return its BatchResult.

    When the checkpoint cannot be written, the StoreError raised keeps the answers already
    paid for: ``exc.result`` holds every outcome delivered (``exc.unrecorded`` those the
    checkpoint does not hold).
    """

    def result() -> BatchResult[Any]:
        return BatchResult(outcomes, engine.stats, engine.run_id, engine.stop_reason,
                           engine.interrupted)

    try:
        await engine.run()
    except StoreError as exc:
        vars(exc).setdefault("result", result())
        raise
    return result()
