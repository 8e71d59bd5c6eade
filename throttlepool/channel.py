"""A bounded hand-over of outcomes from the engine's loop thread to a blocking consumer."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

_END = object()


class OutcomeChannel:
    """The loop side calls ``put``/``close``/``has_space``; the consumer thread calls ``get``.

    ``on_space`` runs (on the consumer thread) when the channel drains below half, so the
    loop can let workers take new items again.
    """

    def __init__(self, capacity: int, on_space: Callable[[], None]) -> None:
        self.capacity = capacity
        self._on_space = on_space
        self._items: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._consumer_waiting = False
        self._error: BaseException | None = None

    def has_space(self) -> bool:
        return len(self._items) < self.capacity

    def put(self, item: Any) -> None:
        self._items.append(item)
        if self._consumer_waiting:
            with self._cond:
                self._cond.notify()

    def close(self, error: BaseException | None = None) -> None:
        """No more items; ``error`` is raised to the consumer after the last one."""
        self._error = error
        with self._cond:
            self._items.append(_END)
            self._cond.notify()

    def get(self) -> Any:
        """The next item; raises StopIteration at the end (or the producer's error)."""
        items = self._items
        if not items:
            with self._cond:
                self._consumer_waiting = True
                while not items:
                    # Timed: a Ctrl-C the OS hands to another thread is only handled when
                    # this (main) thread runs Python again; an untimed wait never does.
                    self._cond.wait(0.2)
                self._consumer_waiting = False
        item = items.popleft()
        if item is _END:
            items.appendleft(_END)
            if self._error is not None:
                raise self._error
            raise StopIteration
        if len(items) == self.capacity // 2:
            self._on_space()
        return item
