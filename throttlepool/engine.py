"""The async core: one run of items through adapter, limiter, retries, breaker and store.

Every public entry point (``run``, ``arun``, ``imap``, ``as_completed``, ``generate_batch``)
drives this one engine; the sync ones run it on an event loop of their own.
``batch_size`` worker coroutines each take the next item, wait for the limiter, hand the
call to the runner's thread pool and deliver the outcome; nothing else holds items, so
memory is bounded by ``batch_size`` plus the re-order window.

With a checkpoint, a worker takes a new item only while the items being worked on plus the
outcomes the store has not committed number fewer than ``batch_size`` (store/backlog.py): a
store that stops committing (locked, disk full) stops the calls at once. The run then
delivers what it has, records why in its status and raises the StoreError with the outcomes
the checkpoint does not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

from .adapters.base import CallResult
from .calls import Dispatcher, RunConfig
from .classify import ErrorKind, Verdict
from .errors import NotAttempted, RetryHintTooLong, RunStopped, StoreError
from .limiter import Cost, Permit
from .outcome import Outcome, RunStats, Source, Status
from .pool import LoopHandoff
from .progress import ProgressSink
from .progress_line import BREAKER, RATE_LIMIT, SERVER_429, SERVER_BUDGET
from .store.backlog import Backlog, finish_run
from .store.keys import KeyMaker


class Engine:
    """Runs one batch; ``emit`` receives outcomes (in input order when ``ordered``)."""

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
        self.stats = RunStats(total=len(items) if isinstance(items, Sized) else None)
        self.run_id: str | None = None
        self.stop_reason: BaseException | None = None
        self.interrupted = False
        self._items: Iterator[Any] = iter(items)
        self._emit = emit
        self._ordered = ordered
        self._fill = fill_remaining
        self._progress = progress
        self._has_space = has_space
        self._next_index = 0
        self._emit_next = 0
        self._buffer: dict[int, Outcome[Any]] = {}
        self._exhausted = False
        self._input_error: BaseException | None = None
        self._stopping = False
        self._changed = asyncio.Event()  # set (and replaced) whenever waiters should re-check
        self._waiting: set[asyncio.Task[Any]] = set()
        self._watchers = 0
        self._key = (KeyMaker(cfg.adapter.identity())
                     if cfg.store is not None or cfg.cache is not None else None)
        self._store_error: StoreError | None = None
        self._backlog = Backlog(cfg.store, cfg.batch_size)
        self._open = 0  # items taken whose outcome is not delivered yet
        self._crash: BaseException | None = None
        self._aborted = False
        self.finished = False
        self._task: asyncio.Future[Any] | None = None
        self._breaker_trips = cfg.breaker.trips if cfg.breaker else 0
        self._dispatch: Dispatcher  # bound to the running loop in run()
        self._waits: dict[object, tuple[float, str]] = {}  # shown in stats.waiting_for
        self._server_pause = float("-inf")  # clock time a server's 429 asked us to wait to

    # ---- control -------------------------------------------------------------------------

    def request_stop(self, reason: BaseException, *, interrupted: bool = False) -> None:
        """Stop dispatching; calls in flight finish and are delivered. Loop thread only."""
        if self._stopping:
            return
        self._stopping = True
        self.stop_reason = reason
        self.interrupted = self.interrupted or interrupted
        for task in list(self._waiting):
            task.cancel()
        self._notify()

    def abort(self) -> None:
        """Stop now without waiting for calls in flight (a second Ctrl-C). Loop thread only.

        The run is recorded as interrupted; the answers of the abandoned calls are lost.
        """
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def notify_space(self) -> None:
        """The consumer took outcomes; workers blocked on a full output may go on."""
        self._notify()

    def _notify(self) -> None:
        if self._watchers:
            self._changed.set()
            self._changed = asyncio.Event()

    async def _wait_changed(self) -> None:
        self._watchers += 1
        try:
            await self._changed.wait()
        finally:
            self._watchers -= 1

    async def _pause(self, awaitable: Any) -> bool:
        """Await a wait that a stop may cut short; False if the run stopped meanwhile."""
        if self._stopping:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            return False
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            await awaitable
            return not self._stopping
        except asyncio.CancelledError:
            if self._stopping and task.uncancel() == 0:
                return False
            raise
        finally:
            self._waiting.discard(task)

    # ---- the run -------------------------------------------------------------------------

    async def run(self) -> RunStats:
        """Drive every item to an outcome (or stop); returns the run's statistics."""
        cfg, stats = self.cfg, self.stats
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._dispatch = Dispatcher(cfg, LoopHandoff(loop))
        stats.started = cfg.clock.now()
        stats.limits = tuple((lim.amount, lim.period, lim.unit) for lim in cfg.limiter.limits)
        if cfg.store is not None:
            self.run_id = cfg.store.begin_run(cfg.run_name, cfg.settings)
        self._backlog.watch(loop, self._store_changed)
        if self._progress is not None:
            self._progress.start(stats.total, stats)
        timer = None
        if cfg.deadline is not None:
            timer = asyncio.get_running_loop().call_later(
                cfg.deadline, self.request_stop, RunStopped("run deadline reached")
            )
        workers = [asyncio.create_task(self._worker()) for _ in range(cfg.batch_size)]
        try:
            results = await asyncio.gather(*workers, return_exceptions=True)
        except BaseException:  # cancelled (abort, a second Ctrl-C): record it on the way out
            for w in workers:
                w.cancel()
            self._aborted = self.interrupted = True
            if self.stop_reason is None:
                self.stop_reason = RunStopped("aborted")
            self._finish(None)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._backlog.unwatch()
        crash = self._crash or next((r for r in results if isinstance(r, BaseException)), None)
        if self._fill and self._stopping and crash is None and self._input_error is None:
            self._fill_not_attempted()
        self._finish(crash)
        if crash is not None:
            raise crash
        if self._store_error is not None:
            raise self._backlog.error(self._store_error)
        if self._input_error is not None:
            raise self._input_error
        return stats

    def _finish(self, crash: BaseException | None) -> None:
        cfg, stats = self.cfg, self.stats
        stats.wall_time = cfg.clock.now() - stats.started
        if cfg.breaker is not None:
            stats.breaker_trips = cfg.breaker.trips - self._breaker_trips
        if cfg.store is not None and self.run_id is not None:
            try:
                finish_run(cfg.store, self.run_id, stats, *self._final_status(crash))
                if self._backlog.problem is None:  # else the writer may retry for long
                    cfg.store.flush()
            except StoreError as exc:
                self._store_error = self._store_error or exc
        if self._progress is not None:
            self._progress.close(stats)
        self.finished = True

    def _final_status(self, crash: BaseException | None) -> tuple[str, str | None]:
        """The run's recorded status, and why when it is not ``completed``."""
        if self._aborted:
            return "interrupted", "aborted before the calls in flight finished"
        if crash is not None:
            return "failed", f"{type(crash).__name__}: {crash}"
        if self._store_error is not None:
            return "failed", f"the checkpoint cannot be written: {self._store_error}"
        if self._input_error is not None:
            error = self._input_error
            return "failed", f"the input iterator raised {type(error).__name__}: {error}"
        if self.interrupted:
            return "interrupted", "interrupted (Ctrl-C); the calls in flight were finished"
        # Filling in NOT_ATTEMPTED outcomes exhausts the input too: count them.
        if self._stopping and (self.stats.not_attempted or not self._exhausted):
            return "stopped", str(self.stop_reason)
        return "completed", None

    # ---- the checkpoint's pace -----------------------------------------------------------

    def _store_changed(self) -> None:
        if self._backlog.problem is not None:
            self._store_failed(self._backlog.problem)

    async def _wait_for_store(self) -> bool:
        """Wait while the checkpoint is behind (see store/backlog.py); False if it is not."""
        backlog = self._backlog
        with backlog.waiting():
            if backlog.problem is not None:
                self._store_failed(backlog.problem)
                return False
            if not backlog.behind(self._open):
                return False
            await self._pause(backlog.moved())
            return True

    def _store_failed(self, problem: StoreError) -> None:
        # Calls whose outcomes cannot be kept would be paid for again: stop paying.
        self._store_error = self._store_error or problem
        self.request_stop(RunStopped("the checkpoint cannot be written", problem))

    def _take(self) -> tuple[int, Any] | None:
        if self._stopping or self._exhausted:
            return None
        try:
            item = next(self._items)
        except StopIteration:
            self._exhausted = True
            return None
        except Exception as exc:  # the caller's generator failed: stop, drain, then raise it
            self._input_error = exc
            self.request_stop(RunStopped("the input iterator raised", exc))
            return None
        index = self._next_index
        self._next_index += 1
        return index, item

    def _fill_not_attempted(self) -> None:
        reason = NotAttempted(f"not attempted: {self.stop_reason}")
        while not self._exhausted:
            taken = self._take_after_stop()
            if taken is None:
                break
            self._deliver(Outcome(taken[0], taken[1], Status.NOT_ATTEMPTED, error=reason))

    def _take_after_stop(self) -> tuple[int, Any] | None:
        try:
            item = next(self._items)
        except StopIteration:
            self._exhausted = True
            return None
        index = self._next_index
        self._next_index += 1
        return index, item

    async def _worker(self) -> None:
        try:
            while True:
                while not self._stopping:
                    if ((self._ordered and self._next_index - self._emit_next >= self.cfg.window)
                            or (self._has_space is not None and not self._has_space())):
                        await self._pause(self._wait_changed())
                    elif self._backlog.writer is None or not await self._wait_for_store():
                        break
                taken = self._take()
                if taken is None:
                    return
                self._open += 1
                self._deliver(await self._process(*taken))
                self._open -= 1
        except Exception as exc:  # e.g. LimiterUnavailable: the run fails; stop paying now
            self._crash = self._crash or exc
            self.request_stop(RunStopped(f"{type(exc).__name__}: {exc}", exc))
            raise

    # ---- one item ------------------------------------------------------------------------

    def _from_store(self, index: int, item: Any, key: str) -> Outcome[Any] | None:
        cfg = self.cfg
        if cfg.store is not None and self.run_id is not None:
            prior = cfg.store.prior(self.run_id, index, key)
            if prior is not None and (prior.status is Status.OK or not cfg.retry_failed):
                prior.item, prior.source, prior.key = item, Source.CHECKPOINT, key
                self.stats.from_checkpoint += 1
                return prior
        if cfg.cache is not None:
            hit, value = cfg.cache.get(key)
            if hit:
                self.stats.cache_hits += 1
                return Outcome(index, item, Status.OK, value, source=Source.CACHE, key=key)
        return None

    async def _process(self, index: int, item: Any) -> Outcome[Any]:
        cfg, stats, clock = self.cfg, self.stats, self.cfg.clock
        key = None
        if cfg.store is not None or cfg.cache is not None:
            assert self._key is not None
            key = self._key(item)
            known = self._from_store(index, item, key)
            if known is not None:
                return known
        adapter, limiter = cfg.adapter, cfg.limiter
        cost = adapter.estimate(item)
        attempts = 0
        first_start = 0.0
        last_error: BaseException | None = None
        while True:
            if cfg.breaker is not None and not await self._breaker_gate():
                return self._unfinished(index, item, attempts, last_error, key)
            admission = await self._admit(cost)
            if admission is None:
                return self._unfinished(index, item, attempts, last_error, key)
            permit, seq = admission
            if attempts:
                stats.retrying -= 1
            else:
                first_start = clock.now()
            attempts += 1
            stats.calls += 1
            stats.in_flight += 1
            try:
                result: CallResult[Any] = await self._dispatch.call(item, permit)
            except Exception as exc:
                stats.in_flight -= 1
                last_error = exc
                verdict = cfg.adapter.classify(exc)
                if permit is not None and verdict.kind is ErrorKind.RATE_LIMITED:
                    # The server refused it unprocessed and did not count it: neither do we.
                    limiter.cancel(permit)
                delay = self._after_failure(exc, verdict, attempts, seq)
                if delay is None or isinstance(delay, BaseException):
                    error = delay if isinstance(delay, BaseException) else exc
                    return Outcome(index, item, Status.FAILED, None, error, attempts,
                                   clock.now() - first_start, key=key)
                stats.retries += 1
                stats.retrying += 1
                if delay > 0 and not await self._pause(clock.asleep(delay)):
                    stats.retrying -= 1
                    return self._unfinished(index, item, attempts, last_error, key)
                continue
            stats.in_flight -= 1
            if cfg.breaker is not None:
                cfg.breaker.record_success()
                self._notify()
            usage = result.usage
            if usage is not None:
                stats.input_tokens += usage.input_tokens
                stats.output_tokens += usage.output_tokens
                if cfg.token_limited and permit is not None:
                    charged = (usage.input_tokens + cost.output if cost.output
                               else usage.total_tokens)
                    limiter.settle(permit, Cost(cost.requests, float(charged), cost.output))
            if cfg.pacer is not None and seq is not None:
                cfg.pacer.observe(seq, result.rate, clock.now())
                self._notify()
            if cfg.cache is not None and key is not None:
                cfg.cache.put(key, result.value)
            return Outcome(index, item, Status.OK, result.value, None, attempts,
                           clock.now() - first_start, usage, Source.CALL, key)

    def _after_failure(
        self, exc: BaseException, verdict: Verdict, attempts: int, seq: int | None
    ) -> float | BaseException | None:
        """Seconds until the retry, None to fail with ``exc``, or the error to fail with."""
        cfg, stats = self.cfg, self.stats
        if cfg.pacer is not None and seq is not None:
            cfg.pacer.observe(seq, cfg.adapter.rate_info(exc), cfg.clock.now())
            if verdict.kind is ErrorKind.RATE_LIMITED:
                cfg.pacer.rate_limited(seq, cfg.clock.now(), verdict.retry_after)
            self._notify()
        if cfg.breaker is not None:
            if verdict.kind is ErrorKind.TRANSIENT:
                cfg.breaker.record_failure()
            else:
                cfg.breaker.record_neutral()
            self._notify()
        if verdict.kind is ErrorKind.RATE_LIMITED:
            stats.rate_limited += 1
            if cfg.limiter.limits:
                # A 429 despite our own limit: the server's clock sees more jitter than the
                # margin allows for. Widen it; the headers may only ever tighten a limit.
                cfg.limiter.widen_margin()
        unreachable = cfg.reachability.observe_failure(exc, verdict)
        if unreachable is not None:  # no call ever reached the server: a wrong URL, not a blip
            self.request_stop(unreachable)
            return None
        if verdict.kind is ErrorKind.FATAL:
            self.request_stop(RunStopped(f"stopped by a fatal error: {verdict.reason}", exc))
            return None
        try:
            delay = cfg.retry.delay(attempts, verdict, cfg.rng)
        except RetryHintTooLong as too_long:
            too_long.__cause__ = exc
            return too_long
        if delay is not None and verdict.kind is ErrorKind.RATE_LIMITED:
            # One worker's 429 holds back every dispatch, not just its own retry.
            cfg.limiter.pause_until(cfg.clock.now() + delay)
            self._server_pause = max(self._server_pause, cfg.clock.now() + delay)
            stats.rate_limit_wait += delay
            return 0.0
        return delay

    async def _admit(self, cost: Cost) -> tuple[Permit | None, int | None] | None:
        """Wait until both our limiter and the server's budget (as its headers tell) admit
        ``cost``, at the same instant; None if the run stopped meanwhile.

        The pacer is asked only once the limiter admits, and the permit goes back while the
        pacer makes us wait: a grant held through a long 429 pause would be spent twice.
        """
        limiter, pacer, clock = self.cfg.limiter, self.cfg.pacer, self.cfg.clock
        while True:
            permit = None
            if not limiter.unrestricted():
                permit = limiter.reserve(cost)
                reason = SERVER_429 if permit.admit_at <= self._server_pause else RATE_LIMIT
                with self._shown_wait(reason, permit.admit_at):
                    admitted = limiter.admitted(permit) or await self._pause(
                        limiter.wait_async(permit))
                if not admitted:
                    limiter.cancel(permit)
                    return None
                if self._stopping:
                    limiter.cancel(permit)
                    return None
            if pacer is None:
                return permit, None
            seq, wait = pacer.admit(cost, clock.now())
            if seq is not None:
                return permit, seq
            if permit is not None:
                limiter.cancel(permit)
            # Each answer re-syncs the budget, so the wait ends early when one arrives.
            with self._shown_wait(SERVER_BUDGET, clock.now() + wait):
                if not await self._pause(self._sleep_or_change(wait)):
                    return None

    async def _sleep_or_change(self, delay: float) -> None:
        sleeper = asyncio.ensure_future(self.cfg.clock.asleep(delay))
        changed = asyncio.ensure_future(self._wait_changed())
        try:
            await asyncio.wait({sleeper, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            changed.cancel()

    async def _breaker_gate(self) -> bool:
        breaker = self.cfg.breaker
        assert breaker is not None
        while True:
            wait = breaker.admit()
            if wait == 0:
                return True
            if self._stopping:
                return False
            pending = self.cfg.clock.asleep(wait) if wait is not None else self._wait_changed()
            until = self.cfg.clock.now() + wait if wait is not None else None
            with self._shown_wait(BREAKER, until):
                if not await self._pause(pending):
                    return False

    @contextlib.contextmanager
    def _shown_wait(self, reason: str, until: float | None) -> Iterator[None]:
        """Show in the stats what a worker waits for: progress displays say the earliest."""
        token = object()
        self._waits[token] = (float("inf") if until is None else until, reason)
        self._show_waits()
        try:
            yield
        finally:
            del self._waits[token]
            self._show_waits()

    def _show_waits(self) -> None:
        stats = self.stats
        if not self._waits:
            stats.waiting_for = stats.waiting_until = None
            return
        until, stats.waiting_for = min(self._waits.values())
        stats.waiting_until = None if until == float("inf") else until

    def _unfinished(
        self, index: int, item: Any, attempts: int, error: BaseException | None, key: str | None
    ) -> Outcome[Any]:
        if attempts and error is not None:
            return Outcome(index, item, Status.FAILED, None, error, attempts, key=key)
        reason = NotAttempted(f"not attempted: {self.stop_reason}")
        return Outcome(index, item, Status.NOT_ATTEMPTED, None, reason, 0, key=key)

    # ---- delivery ------------------------------------------------------------------------

    def _deliver(self, outcome: Outcome[Any]) -> None:
        cfg, stats = self.cfg, self.stats
        status = outcome.status
        if status is Status.OK:
            stats.done += 1
        elif status is Status.FAILED:
            stats.failed += 1
        else:
            stats.not_attempted += 1
        stats.wall_time = cfg.clock.now() - stats.started
        if (cfg.store is not None and self.run_id is not None
                and status is not Status.NOT_ATTEMPTED and outcome.source is not Source.CHECKPOINT):
            # Even after a failure: a writer that is only retrying may still keep it.
            try:
                cfg.store.record(self.run_id, outcome)
            except StoreError as exc:
                self._backlog.refused(outcome)
                self._store_failed(exc)
            else:
                self._backlog.accepted(outcome)
        if self._progress is not None:
            self._progress.update(stats, outcome)
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
        self._notify()
