"""Drop-ins for legacy loops: ``generate_batch`` and the ``batchable`` decorator."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, overload

from .limiter import RateLimiter, build_limits
from .outcome import BatchResult
from .runner import ThreadedBatchRunner

R = TypeVar("R")

_LIMIT_KEYS = ("rpm", "tpm", "rps", "limits", "safety")
#: The runner's, the CLI's and these helpers' one default: 8 calls in flight keep a
#: 500 requests/minute limit busy at about 1 s latency; raise it for higher limits.
DEFAULT_BATCH_SIZE = 8


def generate_batch(
    fn: Callable[[Any], R],
    items: Iterable[Any],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rpm: float | None = None,
    return_exceptions: bool = False,
    **runner_options: Any,
) -> list[R | BaseException | None]:
    """What ``[fn(x) for x in items]`` returns, computed ``batch_size`` calls at a time.

    Raises the first failure in input order, after every other item has finished, unless
    ``return_exceptions`` puts each item's exception in its place. Further options are
    :class:`ThreadedBatchRunner` arguments (``tpm=``, ``retries=``, ``store=``...).
    """
    with ThreadedBatchRunner(fn, batch_size=batch_size, rpm=rpm, **runner_options) as runner:
        result = runner.run(items)
    if not return_exceptions:
        result.raise_first()
    return [o.error if o.error is not None else o.value for o in result.outcomes]


class Batchable(Generic[R]):
    """A sync callable that still works as before and gains ``.batch`` and ``.abatch``.

    All batches of one Batchable share one rate limiter, so the budget holds across calls.
    """

    def __init__(self, fn: Callable[..., R], runner_options: dict[str, Any],
                 limiter: RateLimiter | None = None, bound_to: Any = None) -> None:
        self.fn = fn
        self.options = {k: v for k, v in runner_options.items() if k not in _LIMIT_KEYS}
        if limiter is None:
            limits = build_limits(runner_options.get("limits"), rpm=runner_options.get("rpm"),
                                  tpm=runner_options.get("tpm"), rps=runner_options.get("rps"),
                                  safety=runner_options.get("safety", 1.0))
            limiter = RateLimiter(*limits, clock=runner_options.get("clock"))
        self.limiter = limiter
        self._bound_to = bound_to
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        if self._bound_to is not None:
            return self.fn(self._bound_to, *args, **kwargs)
        return self.fn(*args, **kwargs)

    def __get__(self, obj: Any, objtype: type | None = None) -> Batchable[R]:
        if obj is None:
            return self
        return Batchable(self.fn, self.options, self.limiter, bound_to=obj)

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

    def _runner(self, unpack: bool, overrides: dict[str, Any]) -> ThreadedBatchRunner[R]:
        options = {**self.options, **overrides}
        return ThreadedBatchRunner(self._target(unpack), limiter=self.limiter, **options)

    def batch(self, items: Iterable[Any], *, unpack: bool = False, **overrides: Any
              ) -> BatchResult[R]:
        """Call for every item concurrently; ``unpack`` spreads tuples/dicts as arguments."""
        with self._runner(unpack, overrides) as runner:
            return runner.run(items)

    async def abatch(self, items: Iterable[Any], *, unpack: bool = False, **overrides: Any
                     ) -> BatchResult[R]:
        """``batch`` for async code: awaits without blocking the event loop."""
        runner = self._runner(unpack, overrides)
        try:
            return await runner.arun(items)
        finally:
            runner.close()


@overload
def batchable(fn: Callable[..., R], /) -> Batchable[R]: ...
@overload
def batchable(**runner_options: Any) -> Callable[[Callable[..., R]], Batchable[R]]: ...
def batchable(fn: Callable[..., R] | None = None, /, **runner_options: Any) -> Any:
    """Decorate (or wrap) a sync function or method: ``@batchable(batch_size=5, rpm=15)``.

    The function keeps working unchanged; ``f.batch(items)`` and ``await f.abatch(items)``
    run it over many items through a :class:`ThreadedBatchRunner`.
    """
    runner_options.setdefault("batch_size", DEFAULT_BATCH_SIZE)
    if fn is not None:
        return Batchable(fn, runner_options)
    return lambda f: Batchable(f, runner_options)
