"""The one ordered stream: the engine emits into a bounded channel, a consumer takes from it.

The engine (on its loop) calls ``put``/``close``/``has_space``; the outcomes arrive already
in input order (or completion order) from the engine's re-order buffer. A consumer takes them
with ``get`` from another thread (``imap``/``as_completed``, blocking) or with ``aget`` on
the engine's loop (``aimap``). ``on_space`` runs when the channel drains below half, so the
engine lets workers take new items again: memory stays bounded by ``capacity``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from ._run_engine import RunEngine
from .errors import RunStopped

_END = object()


class OutcomeChannel:
    """A bounded hand-over of outcomes from the engine to one consumer."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.on_space: Callable[[], None] = lambda: None
        self._items: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._consumer_waiting = False
        self._arrived: asyncio.Event | None = None  # an ``aget`` waits on the loop
        self._error: BaseException | None = None

    def has_space(self) -> bool:
        """False while the consumer has ``capacity`` outcomes to take."""
        return len(self._items) < self.capacity

    def put(self, item: Any) -> None:
        """Hand over one outcome (loop side)."""
        self._items.append(item)
        self._wake()

    def close(self, error: BaseException | None = None) -> None:
        """No more items; ``error`` is raised to the consumer after the last one."""
        self._error = error
        with self._cond:
            self._items.append(_END)
        self._wake(always=True)

    def _wake(self, always: bool = False) -> None:
        if self._arrived is not None:
            self._arrived.set()
        if self._consumer_waiting or always:
            with self._cond:
                self._cond.notify()

    def get(self) -> Any:
        """The next item, waiting in this thread; StopIteration at the end (or the error)."""
        items = self._items
        if not items:
            with self._cond:
                self._consumer_waiting = True
                while not items:
                    # Timed: a Ctrl-C the OS hands to another thread is only handled when
                    # this (main) thread runs Python again; an untimed wait never does.
                    self._cond.wait(0.2)
                self._consumer_waiting = False
        return self._take()

    async def aget(self) -> Any:
        """The next item, awaited on the engine's loop; StopAsyncIteration at the end."""
        while not self._items:
            self._arrived = asyncio.Event()
            await self._arrived.wait()
            self._arrived = None
        try:
            return self._take()
        except StopIteration:
            raise StopAsyncIteration from None

    def _take(self) -> Any:
        items = self._items
        item = items.popleft()
        if item is _END:
            items.appendleft(_END)
            if self._error is not None:
                raise self._error
            raise StopIteration
        if len(items) == self.capacity // 2:
            self.on_space()
        return item


async def pump(engine: RunEngine, channel: OutcomeChannel) -> None:
    """Run ``engine`` (emitting into ``channel``) and close the channel with its ending."""
    try:
        await engine.run()
    except BaseException as exc:
        channel.close(exc)
        raise
    channel.close()


async def consume(engine: RunEngine, channel: OutcomeChannel) -> AsyncIterator[Any]:
    """``aimap``'s side: run the engine on this loop and yield what it emits, in order."""
    channel.on_space = engine.notify_space
    task = asyncio.ensure_future(pump(engine, channel))
    try:
        while True:
            try:
                yield await channel.aget()
            except StopAsyncIteration:
                break
        await task  # raises the run's error, if it had one
    finally:
        if not task.done():
            engine.request_stop(RunStopped("the consumer stopped iterating"))
        await asyncio.gather(task, return_exceptions=True)  # its error is raised above
