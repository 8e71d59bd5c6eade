"""How far a run's checkpoint is behind its calls: a run never pays for calls it cannot keep.

The engine takes a new item only while the items it is working on plus the outcomes its
store has accepted but not committed number fewer than ``batch_size``. So at any moment at
most ``batch_size`` calls have been made whose outcomes are not committed: that bounds what
a ``kill -9`` makes a resumed run call again, and what a store that stops committing
(locked by another process, disk full) lets the run pay for before it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import StoreError
from ..outcome import Outcome, RunStats, Source
from .base import Store
from .redact import redact_text
from .writer import Writer

_REASON_CHARS = 1000


class Backlog:
    """One run's outcomes that its store accepted and has not committed yet.

    Behind a :class:`Writer` an outcome counts until its group commits (groups commit in
    order, so ticket *n* is committed once ``writer.rows >= n``). A store without a writer
    is taken to have committed an outcome when ``record`` returns. ``lost`` holds outcomes
    the store refused. Loop thread only, except the writer's call into ``watch``'s listener.
    """

    def __init__(self, store: Store | None, limit: int) -> None:
        writer = getattr(store, "writer", None)
        self.writer = writer if isinstance(writer, Writer) else None
        self.limit = limit
        self.lost: list[Outcome[Any]] = []
        self._queued: deque[tuple[int, Outcome[Any]]] = deque()
        self._moved = asyncio.Event()  # set (and replaced) after a group commits
        self._waiters = 0  # read by the writer thread
        self._listener: Callable[[], None] | None = None

    # ---- bookkeeping ---------------------------------------------------------------------

    def accepted(self, outcome: Outcome[Any]) -> None:
        """``outcome`` was just handed to the store."""
        if self.writer is not None:
            self._queued.append((self.writer.accepted, outcome))

    def refused(self, outcome: Outcome[Any]) -> None:
        """``outcome`` could not be handed to the store."""
        self.lost.append(outcome)

    def __len__(self) -> int:
        queued = self._queued
        if queued and self.writer is not None:
            committed = self.writer.rows
            while queued and queued[0][0] <= committed:
                queued.popleft()
        return len(queued)

    def unrecorded(self) -> list[Outcome[Any]]:
        """Outcomes not in the store (refused, or accepted and not committed), by index."""
        len(self)
        return sorted([*self.lost, *(o for _, o in self._queued)], key=lambda o: o.index)

    # ---- pacing --------------------------------------------------------------------------

    @property
    def problem(self) -> StoreError | None:
        """Why the store is not committing (a failed write, maybe being retried)."""
        return self.writer.problem if self.writer is not None else None

    def watch(self, loop: asyncio.AbstractEventLoop, changed: Callable[[], None]) -> None:
        """Have ``changed()`` run on ``loop`` after a commit someone waits for, or a failure."""
        writer = self.writer
        if writer is None:
            return

        def listener() -> None:  # on the writer thread, after ``writer.rows`` moved
            if not self._waiters and writer.problem is None:
                return  # nobody waits (a waiter counts itself before it reads ``rows``)
            with contextlib.suppress(RuntimeError):  # a closed loop: the run is over
                loop.call_soon_threadsafe(self._changed, changed)

        self._listener = listener
        writer.subscribe(listener)

    def unwatch(self) -> None:
        """Stop listening to the writer."""
        if self.writer is not None and self._listener is not None:
            self.writer.unsubscribe(self._listener)
            self._listener = None

    def _changed(self, changed: Callable[[], None]) -> None:
        self._moved.set()
        self._moved = asyncio.Event()
        changed()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Count a waiter; enter it *before* asking ``behind`` so no commit goes unseen."""
        self._waiters += 1
        try:
            yield
        finally:
            self._waiters -= 1

    def behind(self, open_items: int) -> bool:
        """True when a new call must wait for a commit; wakes the writer then."""
        writer = self.writer
        if writer is None or writer.problem is not None:
            return False
        if open_items + len(self) < self.limit:
            return False
        writer.kick()
        return True

    def moved(self) -> Any:
        """An awaitable that ends at the next announced commit."""
        return self._moved.wait()

    # ---- reporting -----------------------------------------------------------------------

    def error(self, problem: StoreError) -> StoreError:
        """``problem``, saying which delivered outcomes the checkpoint does not hold; they
        are on its ``unrecorded`` attribute."""
        lost = self.unrecorded()
        answers = sum(1 for o in lost if o.source is Source.CALL and o.attempts)
        text = (f"{problem}. Dispatch stopped at once; {len(lost)} outcomes of this run "
                f"({answers} of them answers of calls) are not recorded in the checkpoint: "
                "they were delivered (the results, --output) and are on this error's "
                "`unrecorded`" if lost else
                f"{problem}. Dispatch stopped at once; every outcome delivered so far is "
                "recorded")
        try:
            error = type(problem)(text)
        except TypeError:
            error = StoreError(text)
        error.__cause__ = problem
        vars(error).update(unrecorded=lost)
        return error


def finish_run(store: Store, run_id: str, stats: RunStats, status: str,
               reason: str | None) -> None:
    """``store.finish_run`` with the reason (redacted, capped) if the store takes one."""
    if reason is None or not _takes_reason(store.finish_run):
        store.finish_run(run_id, stats, status)
    else:
        store.finish_run(run_id, stats, status, reason=redact_text(reason)[:_REASON_CHARS])


def _takes_reason(method: Callable[..., Any]) -> bool:
    # Stores written against the protocol before ``reason`` existed do not take it.
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "reason" or p.kind is p.VAR_KEYWORD for p in params)
