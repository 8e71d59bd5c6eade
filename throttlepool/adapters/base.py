"""The adapter seam: how the runner calls one provider, and what it learns from each call."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..classify import Verdict
from ..hints import RateInfo
from ..limiter.limits import Cost
from ..outcome import Usage

V = TypeVar("V")

#: The methods every adapter has; an object with all of them is an adapter by structure.
REQUIRED = ("identity", "estimate", "call", "classify", "rate_info")


@dataclass(frozen=True, slots=True)
class CallResult(Generic[V]):
    """A successful call's value plus what the response said about usage and limits.

    ``ttft``: seconds from sending a streamed request to its first generated token (None for
    a call that was not streamed).
    """

    value: V
    usage: Usage | None = None
    rate: RateInfo | None = None
    ttft: float | None = None


class Adapter(abc.ABC, Generic[V]):
    """Wraps one client call. ``call`` runs on a worker thread; the rest are cheap and pure.

    Optional capabilities have defaults here: ``is_async`` (True: the runner awaits
    :meth:`acall` on its event loop instead of running :meth:`call` on a thread) and
    ``enforces_timeout`` (True: ``call`` honours its ``timeout`` itself, so the runner does
    not abandon the thread). An object that has the five methods without deriving from this
    class also counts as an adapter (``isinstance``); :func:`throttlepool.adapters.as_adapter`
    gives it these defaults.
    """

    name: str
    is_async: bool = False
    enforces_timeout: bool = False

    @abc.abstractmethod
    def identity(self) -> Mapping[str, Any]:
        """What makes two calls of the same item the same work (model, parameters); no secrets."""

    @abc.abstractmethod
    def estimate(self, item: Any) -> Cost:
        """The cost to reserve before the call: one request and an estimate of its tokens."""

    @abc.abstractmethod
    def call(self, item: Any, timeout: float | None) -> CallResult[V]:
        """Make one attempt. Raise the client's own exception on failure."""

    async def acall(self, item: Any, timeout: float | None) -> CallResult[V]:
        """Make one attempt on the running event loop (adapters with ``is_async``)."""
        raise NotImplementedError(f"{type(self).__name__} has no async call")

    @abc.abstractmethod
    def classify(self, exc: BaseException) -> Verdict:
        """What an exception raised by ``call`` means for the run."""

    @abc.abstractmethod
    def rate_info(self, exc: BaseException) -> RateInfo | None:
        """Rate-limit headers carried by a failed call's exception, if any."""

    def revive(self, stored: Any) -> Any:
        """A value of this adapter's calls, as the checkpoint or the answer cache stored it
        (plain JSON), made what :meth:`call` returns again; e.g. a ``schema=`` pydantic
        model's instance. The runner calls it on every value it did not get from a call (a
        resume, a cache hit, a Dask worker's answer). The default returns ``stored``."""
        return stored

    @classmethod
    def __subclasshook__(cls, other: type) -> Any:
        if cls is Adapter and all(callable(getattr(other, m, None)) for m in REQUIRED):
            return True
        return NotImplemented


class Delegating(Adapter[V]):
    """An adapter that passes everything to ``inner``; wrappers override what they change.

    The capabilities (``is_async``, ``acall``, ``enforces_timeout``) follow the inner
    adapter, so a wrapper never hides them.
    """

    def __init__(self, inner: Adapter[V]) -> None:
        self.inner = inner
        self.name = inner.name
        self.is_async = bool(getattr(inner, "is_async", False))
        self.enforces_timeout = bool(getattr(inner, "enforces_timeout", False))

    def identity(self) -> Mapping[str, Any]:
        """The inner adapter's identity."""
        return self.inner.identity()

    def estimate(self, item: Any) -> Cost:
        """The inner adapter's estimate."""
        return self.inner.estimate(item)

    def call(self, item: Any, timeout: float | None) -> CallResult[V]:
        """The inner adapter's call."""
        return self.inner.call(item, timeout)

    async def acall(self, item: Any, timeout: float | None) -> CallResult[V]:
        """The inner adapter's async call."""
        return await self.inner.acall(item, timeout)

    def classify(self, exc: BaseException) -> Verdict:
        """The inner adapter's verdict."""
        return self.inner.classify(exc)

    def rate_info(self, exc: BaseException) -> RateInfo | None:
        """The inner adapter's rate headers."""
        return self.inner.rate_info(exc)

    def revive(self, stored: Any) -> Any:
        """The inner adapter's revival (``stored`` as it is if it has none)."""
        revive = getattr(self.inner, "revive", None)
        return revive(stored) if callable(revive) else stored

    def __getattr__(self, name: str) -> Any:
        # Provider extras (params, request_problem, body...) of the inner adapter.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
