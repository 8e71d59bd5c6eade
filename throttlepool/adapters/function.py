"""Any plain Python callable as an adapter."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ..classify import Classifier, Verdict, default_classifier, headers_of
from ..hints import RateInfo, rate_info_from_headers
from ..limiter.limits import ONE_REQUEST, Cost
from .base import Adapter, CallResult


def callable_name(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a callable, stable across processes."""
    target = getattr(fn, "func", fn)  # functools.partial
    module = getattr(target, "__module__", None) or type(target).__module__
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}:{qualname}"


class CallableAdapter(Adapter[Any]):
    """Calls ``fn(item)``; ``estimate(item)`` gives a token estimate when a tpm limit is set.

    ``fn`` may return a :class:`CallResult` itself to report usage and rate headers.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        estimate: Callable[[Any], float] | None = None,
        classifier: Classifier | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"expected a callable, got {type(fn).__name__}")
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        self.name = name or callable_name(fn)
        self._estimate = estimate
        self._classifier = classifier or default_classifier

    def identity(self) -> Mapping[str, Any]:
        """The callable's ``module:qualname``."""
        return {"callable": self.name}

    def estimate(self, item: Any) -> Cost:
        """One request, plus ``estimate(item)`` tokens when an estimate was given."""
        if self._estimate is None:
            return ONE_REQUEST
        return Cost(1.0, float(self._estimate(item)))

    def call(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """Call ``fn(item)`` (an async ``fn`` on a loop of its own)."""
        value = self.fn(item)
        if self.is_async:  # called from a worker thread: give the coroutine a loop of its own
            value = asyncio.run(value)
        if isinstance(value, CallResult):
            return value
        return CallResult(value)

    async def acall(self, item: Any, timeout: float | None) -> CallResult[Any]:
        """Await an async ``fn`` on the running loop (the runner does this for async fns)."""
        value = self.fn(item)
        if inspect.isawaitable(value):
            value = await value
        if isinstance(value, CallResult):
            return value
        return CallResult(value)

    def classify(self, exc: BaseException) -> Verdict:
        """The classifier given, else the default one."""
        return self._classifier(exc)

    def rate_info(self, exc: BaseException) -> RateInfo | None:
        """Rate headers found on the exception (``response.headers``...)."""
        headers = headers_of(exc)
        return rate_info_from_headers(headers) if headers else None
