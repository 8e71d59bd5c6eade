"""Test doubles for the seams: a fake clock, scripted callables, a concurrency spy, fakes.

Shipped with the package so users can test code built on throttlepool without a network,
without sleeping and without timing tolerances.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from .outcome import Outcome, RunStats


class FakeClock:
    """A clock that only moves when told to, or when something sleeps on it.

    ``sleep(s)`` advances time by ``s`` at once and records it, so code that waits finishes
    instantly while every decision still sees consistent, monotonic time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds

    def set(self, when: float) -> None:
        """Jump to ``when`` (not earlier than now)."""
        with self._lock:
            if when < self._now:
                raise ValueError("a clock cannot go backwards")
            self._now = when

    def sleep(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        self.sleep(timeout)
        return event.is_set()

    async def await_event(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        await self.asleep(timeout)
        return event.is_set()


Step = Any  # a value to return, or an exception instance / class to raise


class ScriptedCallable:
    """Returns or raises per item and attempt, from a script.

    ``script`` maps an item (or ``key(item)``) to a sequence of steps, one per attempt; the
    last step repeats. A step that is an exception (instance or class) is raised; anything
    else is returned. Items without a script return ``default(item)`` (identity by default).
    """

    def __init__(
        self,
        script: Mapping[Hashable, Sequence[Step]] | None = None,
        *,
        default: Callable[[Any], Any] = lambda item: item,
        key: Callable[[Any], Hashable] = lambda item: item,
        on_call: Callable[[Any, int], None] | None = None,
    ) -> None:
        self.script = dict(script or {})
        self.default = default
        self.key = key
        self.on_call = on_call
        self.calls: list[Any] = []
        self.attempts: defaultdict[Hashable, int] = defaultdict(int)
        self._lock = threading.Lock()

    def __call__(self, item: Any) -> Any:
        k = self.key(item)
        with self._lock:
            attempt = self.attempts[k]
            self.attempts[k] += 1
            self.calls.append(item)
        if self.on_call is not None:
            self.on_call(item, attempt)
        steps = self.script.get(k)
        if not steps:
            return self.default(item)
        step = steps[min(attempt, len(steps) - 1)]
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, type) and issubclass(step, BaseException):
            raise step()
        return step


class ConcurrencySpy:
    """Wraps a callable and records how many calls ran at once (``peak``).

    ``gate`` (a threading.Event) makes each call wait until it is set, so tests can hold
    calls in flight deterministically.
    """

    def __init__(
        self, fn: Callable[[Any], Any] = lambda item: item, gate: threading.Event | None = None
    ) -> None:
        self.fn = fn
        self.gate = gate
        self.current = 0
        self.peak = 0
        self.total = 0
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, item: Any) -> Any:
        with self._lock:
            self.current += 1
            self.total += 1
            self.peak = max(self.peak, self.current)
            self.threads.add(threading.get_ident())
        try:
            if self.gate is not None:
                self.gate.wait()
            return self.fn(item)
        finally:
            with self._lock:
                self.current -= 1


class RecordingProgress:
    """A progress sink that records every event it receives."""

    def __init__(self) -> None:
        self.started: int | str | None = "never"
        self.updates: list[dict[str, Any]] = []
        self.outcomes: list[int] = []
        self.closed = False

    def start(self, total: int | None, stats: RunStats) -> None:
        self.started = total

    def update(self, stats: RunStats, outcome: Outcome[Any] | None) -> None:
        self.updates.append(stats.as_dict())
        if outcome is not None:
            self.outcomes.append(outcome.index)

    def close(self, stats: RunStats) -> None:
        self.closed = True


class FakeStore:
    """An in-memory :class:`~throttlepool.store.base.Store` that keeps everything it is given."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.items: dict[str, dict[int, Outcome[Any]]] = {}
        self.flushes = 0
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()

    def begin_run(self, name: str | None, settings: Mapping[str, Any]) -> str:
        with self._lock:
            if name is not None and name in self._names:
                return self._names[name]
            run_id = f"run-{len(self.runs) + 1}"
            self.runs[run_id] = {"name": name, "settings": dict(settings), "status": "running"}
            self.items[run_id] = {}
            if name is not None:
                self._names[name] = run_id
            return run_id

    def prior(self, run_id: str, index: int, key: str) -> Outcome[Any] | None:
        from .errors import CheckpointMismatch

        found = self.items.get(run_id, {}).get(index)
        if found is None:
            return None
        if found.key != key:
            raise CheckpointMismatch(f"item {index} differs from the checkpointed input")
        return found

    def record(self, run_id: str, outcome: Outcome[Any]) -> None:
        with self._lock:
            self.items[run_id][outcome.index] = outcome

    def finish_run(self, run_id: str, stats: RunStats, status: str) -> None:
        self.runs[run_id].update(status=status, stats=stats.as_dict())

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.flush()
