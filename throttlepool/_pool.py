"""The runner's own thread pool, and the hand-off from its threads back to an event loop.

Why not ``loop.run_in_executor``: each completion there schedules its own loop wake-up
through the self-pipe. In a prototype of the hand-off alone on a 2-core machine, that
capped no-op calls near 12-15k/s, and coalescing wake-ups (one drain per burst of
completions) gave 35-45k/s at 8 coroutines and >100k/s at 64. Through the whole runner,
see docs/benchmarks.md (21.6k/s at batch_size 8, 47.8k/s at 64).
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

    @property
    def size(self) -> int:
        """Threads started so far."""
        return len(self._threads)

    def submit(
        self, handoff: LoopHandoff, fut: asyncio.Future[Any], fn: Callable[..., Any], *args: Any
    ) -> None:
        """Run ``fn(*args)`` on a worker thread and complete ``fut`` through ``handoff``."""
        if self._closed:
            raise RuntimeError("the runner's thread pool is closed")
        self._inbox.put((handoff, fut, fn, args))
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
            handoff, fut, fn, args = job
            try:
                result = fn(*args)
            except BaseException as exc:
                handoff.complete(fut, False, exc)
            else:
                handoff.complete(fut, True, result)
            if fut.cancelled():
                with self._lock:
                    self._abandoned = max(0, self._abandoned - 1)
            del job, handoff, fut, fn, args
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
