"""The runner's own thread pool, and the hand-off from its threads back to an event loop.

Why not ``loop.run_in_executor``: each completion there schedules its own loop wake-up
through the self-pipe. In a prototype of the hand-off alone on a 2-core machine, that
capped no-op calls near 12-15k/s, and coalescing wake-ups (one drain per burst of
completions) gave 35-45k/s at 8 coroutines and >100k/s at 64. Through the whole runner:
docs/benchmarks.md, the overhead section.

Lookahead: a run may submit more jobs than the pool has threads, so a thread that finishes
a call takes the next one at once instead of waiting for a round trip through the loop (on
a 2-core machine each round trip wakes a thread on the other, idle CPU). A queued job is
not yet a call: a :class:`RunGate` withdraws it (``NotStarted``) when the run stops or when
a call failed in a way the loop has not acted on yet (a 429's pause, the breaker, a fatal
error), so no call starts that would not have started without lookahead.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any

_STOP = object()
_pool_ids = itertools.count(1)


class NotStarted(Exception):
    """A queued job was withdrawn before it started (see :class:`RunGate`): no call made."""


class FailureCount:
    """The runner's count of failed gated jobs, and of those its runs have acted on.

    Shared by every run on one pool: a 429 in one run pauses the limiter they share, so
    it holds back the queued jobs of all of them. Changed under ``lock`` (threads raise,
    loops handle, possibly several loops)."""

    __slots__ = ("handled", "lock", "raised")

    def __init__(self) -> None:
        self.raised = 0
        self.handled = 0
        self.lock = threading.Lock()


class RunGate:
    """Whether one run's queued jobs may still start.

    A job carries ``count.handled`` as it was when it was admitted, and starts only if
    ``count.raised`` still equals it (every failure raised before it starts was acted on
    before it was admitted), the run is not stopping and the job was not cancelled. A run's
    failures left unhandled when it ends (an abort) are written off by :meth:`retire`, so
    they hold back no other run."""

    __slots__ = ("count", "handled", "raised", "retired", "stopped")

    def __init__(self, count: FailureCount) -> None:
        self.count = count
        self.raised = 0  # this run's share of count.raised ...
        self.handled = 0  # ... and of count.handled
        self.stopped = False
        self.retired = False

    def failed(self) -> None:
        """A job of this run raised (worker thread, before the loop can see it)."""
        count = self.count
        with count.lock:
            if not self.retired:
                self.raised += 1
                count.raised += 1

    def acted_on(self) -> None:
        """The loop has acted on one of this run's failures (pause, breaker, stop)."""
        count = self.count
        with count.lock:
            if not self.retired:
                self.handled += 1
                count.handled += 1

    def stop(self) -> None:
        """No queued job of this run starts any more."""
        self.stopped = True

    def retire(self) -> None:
        """The run ended: its failures never acted on no longer hold back other runs."""
        count = self.count
        with count.lock:
            if not self.retired:
                self.retired = self.stopped = True
                count.handled += self.raised - self.handled


class LoopHandoff:
    """Delivers results computed on worker threads to futures of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._done: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self._waking = False

    def complete(self, fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
        """Called on a worker thread; wakes the loop at most once per burst."""
        self._done.append((fut, ok, value))
        if not self._waking:
            self._waking = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                pass  # the loop closed (second Ctrl-C); nobody waits for this result

    def _drain(self) -> None:
        self._waking = False
        done = self._done
        while done:
            fut, ok, value = done.popleft()
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)


class WorkerPool:
    """Up to ``max_workers`` daemon threads, started only when no thread is idle.

    Calls abandoned by a timeout keep their thread busy (threads cannot be killed), so the
    pool may run that many extra threads to keep ``max_workers`` calls possible.
    """

    def __init__(self, max_workers: int, name: str = "throttlepool") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.name = f"{name}-{next(_pool_ids)}"
        self._inbox: SimpleQueue[Any] = SimpleQueue()
        # One token per idle thread; SimpleQueue is C-level, cheaper than threading.Semaphore.
        self._idle: SimpleQueue[None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._abandoned = 0
        self._lock = threading.Lock()
        self._closed = False
        #: Failures of gated jobs, for every run's :class:`RunGate` on this pool.
        self.failures = FailureCount()

    @property
    def size(self) -> int:
        """Threads started so far."""
        return len(self._threads)

    def submit(
        self, handoff: LoopHandoff, fut: asyncio.Future[Any], fn: Callable[..., Any], *args: Any
    ) -> None:
        """Run ``fn(*args)`` on a worker thread and complete ``fut`` through ``handoff``."""
        self.submit_gated(None, handoff, fut, fn, *args)

    def submit_gated(
        self, gate: RunGate | None, handoff: LoopHandoff, fut: asyncio.Future[Any],
        fn: Callable[..., Any], *args: Any
    ) -> None:
        """As :meth:`submit`, for a job that may wait in the queue behind a busy thread: it
        starts only if ``gate`` still allows it then, else ``fut`` gets :class:`NotStarted`."""
        if self._closed:
            raise RuntimeError("the runner's thread pool is closed")
        admitted = gate.count.handled if gate is not None else 0
        self._inbox.put((handoff, fut, fn, args, gate, admitted))
        try:
            self._idle.get_nowait()
            return
        except Empty:
            pass
        with self._lock:
            if len(self._threads) < self.max_workers + self._abandoned:
                t = threading.Thread(
                    target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(t)
                t.start()

    def abandon(self, fut: asyncio.Future[Any]) -> None:
        """A timed-out call's future was given up; allow one extra thread until it returns."""
        with self._lock:
            self._abandoned += 1

    def _work(self) -> None:
        get = self._inbox.get
        while True:
            job = get()
            if job is _STOP:
                return
            handoff, fut, fn, args, gate, admitted = job
            if gate is not None and (gate.count.raised != admitted or gate.stopped
                                     or fut.cancelled()):
                handoff.complete(fut, False, NotStarted())
                del job, handoff, fut, fn, args, gate
                self._idle.put(None)
                continue
            try:
                result = fn(*args)
            except BaseException as exc:
                if gate is not None:
                    gate.failed()  # before the loop sees it: queued jobs wait for it
                handoff.complete(fut, False, exc)
            else:
                handoff.complete(fut, True, result)
            if fut.cancelled():
                with self._lock:
                    self._abandoned = max(0, self._abandoned - 1)
            del job, handoff, fut, fn, args, gate
            self._idle.put(None)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the threads after their current call; ``wait`` joins them."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._inbox.put(_STOP)
        if wait:
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join()
