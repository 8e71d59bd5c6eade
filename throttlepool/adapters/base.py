"""The adapter seam: how the runner calls one provider, and what it learns from each call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from ..classify import Verdict
from ..hints import RateInfo
from ..limiter.limits import Cost
from ..outcome import Usage

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CallResult(Generic[V]):
    """A successful call's value plus what the response said about usage and limits."""

    value: V
    usage: Usage | None = None
    rate: RateInfo | None = None


@runtime_checkable
class Adapter(Protocol[V]):
    """Wraps one client call. ``call`` runs on a worker thread; the rest are cheap and pure."""

    name: str

    def identity(self) -> Mapping[str, Any]:
        """What makes two calls of the same item the same work (model, parameters); no secrets."""
        ...

    def estimate(self, item: Any) -> Cost:
        """The cost to reserve before the call: one request and an estimate of its tokens."""
        ...

    def call(self, item: Any, timeout: float | None) -> CallResult[V]:
        """Make one attempt. Raise the client's own exception on failure."""
        ...

    def classify(self, exc: BaseException) -> Verdict:
        """What an exception raised by ``call`` means for the run."""
        ...

    def rate_info(self, exc: BaseException) -> RateInfo | None:
        """Rate-limit headers carried by a failed call's exception, if any."""
        ...
