"""Drop-ins for legacy loops: ``generate_batch`` and the ``batchable`` decorator."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, Unpack, overload

from .limiter import RateLimiter
from .options import Limits, RunOptions
from .options.run import RunKwargs
from .outcome import BatchResult
from .runner import ThreadedBatchRunner

R = TypeVar("R")


def generate_batch(
    fn: Callable[[Any], R],
    items: Iterable[Any],
    *,
    return_exceptions: bool = False,
    **runner_options: Unpack[RunKwargs],
) -> list[R | BaseException | None]:
    """What ``[fn(x) for x in items]`` returns, computed ``batch_size`` calls at a time.

    Raises the first failure in input order, after every other item has finished, unless
    ``return_exceptions`` puts each item's exception in its place. Further options are
    :class:`ThreadedBatchRunner`'s (``batch_size=``, ``rpm=``, ``retries=``, ``store=``...).
    """
    with ThreadedBatchRunner(fn, **runner_options) as runner:
        result = runner.run(items)
    if not return_exceptions:
        result.raise_first()
    return [o.error if o.error is not None else o.value for o in result.outcomes]


class Batchable(Generic[R]):
    """A sync callable that still works as before and gains ``.batch`` and ``.abatch``.

    All batches of one Batchable share one rate limiter, so the limits hold across calls
    (a method's Batchable shares it with every instance's).
    """

    def __init__(self, fn: Callable[..., R], options: RunOptions,
                 bound_to: Any = None) -> None:
        self.fn = fn
        if options.limits.limiter is None:  # built once, here: every batch then shares it
            options = options.updated(limits=Limits(limiter=options.limits.build(
                options.execution.clock)))
        self.options = options
        self._bound_to = bound_to
        functools.update_wrapper(self, fn)

    @property
    def limiter(self) -> RateLimiter:
        """The rate limiter every batch of this callable shares."""
        limiter = self.options.limits.limiter
        assert limiter is not None  # set in __init__
        return limiter

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        if self._bound_to is not None:
            return self.fn(self._bound_to, *args, **kwargs)
        return self.fn(*args, **kwargs)

    def __get__(self, obj: Any, objtype: type | None = None) -> Batchable[R]:
        if obj is None:
            return self
        return Batchable(self.fn, self.options, bound_to=obj)

    def _target(self, unpack: bool) -> Callable[[Any], R]:
        call = self.__call__
        if not unpack:
            return call

        def star(item: Any) -> R:
            if isinstance(item, dict):
                return call(**item)
            return call(*item)

        star.__qualname__ = getattr(self.fn, "__qualname__", "batchable")
        star.__module__ = getattr(self.fn, "__module__", __name__)
        return star

    def _runner(self, unpack: bool, overrides: RunKwargs) -> ThreadedBatchRunner[R]:
        return ThreadedBatchRunner(self._target(unpack),
                                   **self.options.updated(**overrides).runner_kwargs())

    def batch(self, items: Iterable[Any], *, unpack: bool = False,
              **overrides: Unpack[RunKwargs]) -> BatchResult[R]:
        """Call for every item concurrently; ``unpack`` spreads tuples/dicts as arguments."""
        with self._runner(unpack, overrides) as runner:
            return runner.run(items)

    async def abatch(self, items: Iterable[Any], *, unpack: bool = False,
                     **overrides: Unpack[RunKwargs]) -> BatchResult[R]:
        """``batch`` for async code: awaits without blocking the event loop."""
        runner = self._runner(unpack, overrides)
        try:
            return await runner.arun(items)
        finally:
            runner.close()


@overload
def batchable(fn: Callable[..., R], /) -> Batchable[R]: ...
@overload
def batchable(**runner_options: Unpack[RunKwargs]
              ) -> Callable[[Callable[..., R]], Batchable[R]]: ...
def batchable(fn: Callable[..., R] | None = None, /,
              **runner_options: Unpack[RunKwargs]) -> Any:
    """Decorate (or wrap) a sync function or method: ``@batchable(batch_size=5, rpm=15)``.

    The function keeps working unchanged; ``f.batch(items)`` and ``await f.abatch(items)``
    run it over many items through a :class:`ThreadedBatchRunner` (same options, checked
    here, before the first batch).
    """
    options = RunOptions.from_kwargs(**runner_options)
    if fn is not None:
        return Batchable(fn, options)
    return lambda f: Batchable(f, options)
